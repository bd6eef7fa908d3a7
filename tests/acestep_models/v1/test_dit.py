"""The DiT and its lyric encoder against the official ACE-Step code (golden outputs from tests/golden/make_dit.py)."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import bf16_tol

from acestep_models.common import ops
from acestep_models.common.weights import build, read_json, read_safetensors
from acestep_models.v1.dit import (
    FP16_MAX,
    IGNORED_KEYS,
    ACEStepTransformer,
    DiTConfig,
)

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "golden"
TINY = GOLDEN / "tiny" / "ace_step_transformer"
IGNORE = IGNORED_KEYS
ERG_TAU = 0.01


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref.float()).norm() / ref.float().norm()).item()


def load_tiny(
    dtype: torch.dtype = torch.float32, weight_dtype: torch.dtype | None = None
) -> ACEStepTransformer:
    config = DiTConfig.from_official(read_json(TINY / "config.json"))
    sd, _ = read_safetensors(TINY / "diffusion_pytorch_model.safetensors")
    return build(ACEStepTransformer, config, sd, dtype=dtype, ignore=IGNORE, weight_dtype=weight_dtype)


@pytest.fixture(scope="module")
def model() -> ACEStepTransformer:
    return load_tiny()


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    return read_safetensors(GOLDEN / "dit" / "inputs.safetensors")[0]


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return read_safetensors(GOLDEN / "dit" / "outputs.safetensors")[0]


def conditioning(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keys = (
        "encoder_text_hidden_states",
        "text_attention_mask",
        "speaker_embeds",
        "lyric_token_idx",
        "lyric_mask",
    )
    return {k: x[k] for k in keys}


def scale_q(module, args, output):  # the official ERG hook: q scaled in place by the temperature
    output[:] *= ERG_TAU
    return output


def run_all(model: ACEStepTransformer, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our model on the golden inputs, in the same cases as make_dit.run_official."""
    out = {}
    cond = conditioning(x)
    T = x["hidden_states"].shape[-1]
    with torch.no_grad():
        out["lyric_encoder"] = model.lyric_encoder(model.lyric_embs(x["lyric_token_idx"]), x["lyric_mask"])
        states, mask = model.encode(**cond)
        out["encoder_hidden_states"], out["encoder_hidden_mask"] = states, mask
        out["output"] = model(x["hidden_states"], x["attention_mask"], timestep=x["timestep"], **cond)
        out["output_masked"] = model.decode(
            x["hidden_states"], x["frame_mask"], states, mask, x["timestep"], T
        )
        handles = [
            model.lyric_encoder.encoders[i].self_attn.linear_q.register_forward_hook(scale_q) for i in (4, 5)
        ]
        out["encoder_hidden_states_erg"] = model.encode(**cond)[0]
        [h.remove() for h in handles]
        blocks = [model.transformer_blocks[i] for i in range(15, 20)]
        handles = [b.attn.to_q.register_forward_hook(scale_q) for b in blocks]
        handles += [b.cross_attn.to_q.register_forward_hook(scale_q) for b in blocks]
        out["output_erg"] = model.decode(
            x["hidden_states"], x["attention_mask"], states, mask, x["timestep"], T
        )
        [h.remove() for h in handles]
    return out


def test_matches_official_outputs(model, inputs, ref):
    ours = run_all(model, inputs)
    errors = {k: rel_err(ours[k], ref[k]) for k in ours}
    print("relative L2 errors vs official:", {k: f"{v:.2e}" for k, v in errors.items()})
    assert ours["output"].shape == inputs["hidden_states"].shape
    assert ours["encoder_hidden_mask"].dtype == torch.float32
    assert all(e < 1e-4 for e in errors.values()), errors
    # the hooks really act (ERG changes the result), as they do in the official code
    assert rel_err(ours["output_erg"], ours["output"]) > 1e-2


def test_config_from_state_dict_matches_config_json():
    official = DiTConfig.from_official(read_json(TINY / "config.json"))
    sd, _ = read_safetensors(TINY / "diffusion_pytorch_model.safetensors")
    # the head split and RoPE base are not in any shape: the loader passes them (or the whole config) as overrides
    assert DiTConfig.from_state_dict(sd, {"attention_head_dim": official.attention_head_dim}) == official
    assert DiTConfig.from_state_dict(sd, {"num_attention_heads": official.num_attention_heads}) == official
    assert DiTConfig.from_state_dict(sd, read_json(TINY / "config.json")) == official
    assert (
        DiTConfig.from_state_dict(sd).attention_head_dim == DiTConfig().attention_head_dim
    )  # released value


def test_released_layout_matches_comfyui_all_in_one_keys():
    """The default config builds exactly the official 3.5B key set and shapes (as in ComfyUI's all-in-one file)."""
    listing = ROOT / "tests" / "golden" / "comfyui_all_in_one_keys.json"
    prefix = "model.diffusion_model."
    official = {k[len(prefix) :]: tuple(v[0]) for k, v in read_json(listing).items() if k.startswith(prefix)}
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in ACEStepTransformer(DiTConfig()).state_dict().items()}
    assert ours == {k: v for k, v in official.items() if not re.match(IGNORE, k)}
    assert {k for k in official if re.match(IGNORE, k)} == {k for k in official if k not in ours}
    meta_sd = {k: torch.empty(v, device="meta") for k, v in official.items()}
    assert DiTConfig.from_state_dict(meta_sd) == DiTConfig()


def test_missing_or_extra_keys_fail_clearly():
    config = DiTConfig.from_official(read_json(TINY / "config.json"))
    sd, _ = read_safetensors(TINY / "diffusion_pytorch_model.safetensors")
    missing = {k: v for k, v in sd.items() if k != "transformer_blocks.3.ff.point_conv.conv.weight"}
    with pytest.raises(ValueError, match=r"missing 1 .*transformer_blocks\.3\.ff\.point_conv"):
        build(ACEStepTransformer, config, missing, ignore=IGNORE)
    extra = {**sd, "transformer_blocks.0.attn.bogus.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected 1 .*attn\.bogus"):
        build(ACEStepTransformer, config, extra, ignore=IGNORE)
    # the official unused / training-only keys are only accepted when listed
    with pytest.raises(ValueError, match=r"unexpected .*(add_q_proj|projectors)"):
        build(ACEStepTransformer, config, sd)


def test_bf16_matches_official_bf16_and_stays_close_to_fp32(model, inputs, ref):
    """Loaded in bfloat16 (the GPU default), ours follows the official casts: same result as the official bf16 run."""
    x16 = {
        k: v.to(torch.bfloat16) if v.is_floating_point() and k != "timestep" else v for k, v in inputs.items()
    }
    model16 = load_tiny(torch.bfloat16)
    with torch.no_grad():
        out16 = model16(
            x16["hidden_states"], x16["attention_mask"], timestep=x16["timestep"], **conditioning(x16)
        )
        states16, _ = model16.encode(**conditioning(x16))
    assert out16.dtype == torch.bfloat16 and torch.isfinite(out16).all()
    errors = (rel_err(out16, ref["bf16_output"]), rel_err(states16, ref["bf16_encoder_hidden_states"]))
    print(f"bf16 vs official bf16: output {errors[0]:.2e}, encoder states {errors[1]:.2e}")
    assert max(errors) < bf16_tol(
        1e-2, 3e-2
    )  # an AVX2 CPU's bf16 kernels: 1.5e-2 (bf16 vs fp32: < 5e-2 below)
    assert rel_err(out16, ref["output"]) < 5e-2


@pytest.mark.parametrize("storage", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("compute", [torch.float32, torch.bfloat16])
def test_float8_weights_compute_the_dequantised_model(inputs, ref, storage, compute):
    """The low-memory mode: the matrices stored in float8 (a quarter of float32), computed in bf16 or fp32. Its only
    difference from the full model is the one rounding of those weights (ComfyUI's fp8 ``weight_dtype``)."""
    model8 = load_tiny(compute, weight_dtype=storage)
    narrow = ops.narrow_weight_keys(model8)
    assert all((p.dtype == storage) == (n in narrow) for n, p in model8.named_parameters())
    assert all(p.dtype == compute for p in model8.parameters() if p.dtype != storage)

    dequantised = load_tiny(compute)  # the same network with those weights rounded to float8 and back
    full = dict(load_tiny().named_parameters())
    with torch.no_grad():
        for name, p in dequantised.named_parameters():
            if name in narrow:
                p.copy_(full[name].to(storage).to(compute))

    x = {k: v.to(compute) if v.is_floating_point() and k != "timestep" else v for k, v in inputs.items()}
    with torch.no_grad():
        out = model8(x["hidden_states"], x["attention_mask"], timestep=x["timestep"], **conditioning(x))
        expected = dequantised(
            x["hidden_states"], x["attention_mask"], timestep=x["timestep"], **conditioning(x)
        )
    assert out.dtype == compute and torch.isfinite(out).all()
    assert rel_err(out, expected) < 1e-6
    # what the rounding costs on these random weights (20 random layers amplify it; reported, bounded loosely)
    error = rel_err(out, ref["output"])
    print(f"{storage} weights, {compute} compute vs official fp32: {error:.2e}")
    assert error < 0.5


def test_float8_storage_covers_over_99_percent_of_the_released_dit():
    with torch.device("meta"):
        released = ACEStepTransformer(DiTConfig())
    sizes = dict((n, p.numel()) for n, p in released.named_parameters())
    narrow = sum(sizes[k] for k in ops.narrow_weight_keys(released))
    assert narrow / sum(sizes.values()) > 0.99


def test_float8_storage_saturates_instead_of_making_nan():
    big = torch.tensor([1e4, -1e4, 0.5])
    assert torch.isnan(big.to(torch.float8_e4m3fn).float()).any()  # what a plain cast would do
    assert torch.equal(ops.to_storage(big, torch.float8_e4m3fn).float(), torch.tensor([448.0, -448.0, 0.5]))


def test_linear_attention_output_is_clipped_like_official(model):
    """Official quirk: the linear self-attention output is clipped to +-65504 even in float32."""
    attn = copy.deepcopy(model.transformer_blocks[0].attn)
    attn.to_out[0].bias.copy_(torch.tensor([1e6, -1e6]).repeat(model.config.inner_dim // 2))
    d = model.config.attention_head_dim
    with torch.no_grad():
        out = attn(
            torch.randn(1, 8, model.config.inner_dim), torch.ones(1, 8), (torch.ones(8, d), torch.zeros(8, d))
        )
    assert (out[..., 0::2] == FP16_MAX).all() and (out[..., 1::2] == -FP16_MAX).all()


@pytest.mark.skipif(
    not os.environ.get("ACESTEP_REF"), reason="ACESTEP_REF (official ACE-Step checkout) not set"
)
def test_live_parity_with_official(model, inputs, tmp_path):
    """Runs the official code now (ref python from ACESTEP_REF_PYTHON) on fresh inputs and compares."""
    g = torch.Generator().manual_seed(7)
    x = dict(inputs)
    x["hidden_states"] = torch.randn(x["hidden_states"].shape, generator=g)
    x["timestep"] = torch.tensor([999.0, 1.5])
    from safetensors.torch import save_file

    save_file(x, str(tmp_path / "inputs.safetensors"))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    python = os.environ.get("ACESTEP_REF_PYTHON", sys.executable)
    cmd = [
        python,
        str(GOLDEN / "make_dit.py"),
        "--live",
        str(TINY),
        str(tmp_path / "inputs.safetensors"),
        str(tmp_path / "out.safetensors"),
    ]
    subprocess.run(cmd, check=True, env=env)
    ref = read_safetensors(tmp_path / "out.safetensors")[0]
    ours = run_all(model, x)
    errors = {k: rel_err(ours[k], ref[k]) for k in ref}
    assert all(e < 1e-4 for e in errors.values()), errors
