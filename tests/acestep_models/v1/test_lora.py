"""ACE-Step LoRAs merged into our DiT against the official pipeline (golden outputs from tests/golden/make_lora.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from acestep_models.common.weights import read_json, read_safetensors
from acestep_models.v1 import checkpoint
from acestep_models.v1.lora import (
    LoRA,
    applied_lora,
    apply_lora,
    load_lora,
    lora_delta,
    lora_patches,
    remove_lora,
)

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "golden"
TINY = GOLDEN / "tiny" / "ace_step_transformer"
TINY_LORA = GOLDEN / "lora" / "tiny_lora"
LORA_FILE = TINY_LORA / "pytorch_lora_weights.safetensors"
ERG_TAU = 0.01
COND = (
    "encoder_text_hidden_states",
    "text_attention_mask",
    "speaker_embeds",
    "lyric_token_idx",
    "lyric_mask",
)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref.float()).norm() / ref.float().norm()).item()


@pytest.fixture(scope="module")
def dit():
    return checkpoint.load_dit(TINY, dtype=torch.float32)


@pytest.fixture(scope="module")
def lora() -> LoRA:
    return load_lora(TINY_LORA)


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    return read_safetensors(GOLDEN / "dit" / "inputs.safetensors")[0]


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return read_safetensors(GOLDEN / "lora" / "outputs.safetensors")[0]


def scale_q(module, args, output):  # the official ERG hook
    output[:] *= ERG_TAU
    return output


def run(dit, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The DiT outputs make_lora.py keeps: forward, encoder states, and decode with ERG hooks on blocks 15-19."""
    cond = {k: x[k] for k in COND}
    with torch.no_grad():
        states, mask = dit.encode(**cond)
        out = {"encoder_hidden_states": states}
        out["output"] = dit(x["hidden_states"], x["attention_mask"], timestep=x["timestep"], **cond)
        blocks = [dit.transformer_blocks[i] for i in range(15, 20)]
        handles = [b.attn.to_q.register_forward_hook(scale_q) for b in blocks]
        handles += [b.cross_attn.to_q.register_forward_hook(scale_q) for b in blocks]
        out["output_erg"] = dit.decode(x["hidden_states"], x["attention_mask"], states, mask, x["timestep"])
        [h.remove() for h in handles]
    return out


def snapshot(dit) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in dit.state_dict().items()}


def test_official_lora_matches_official_pipeline(dit, lora, inputs, ref):
    """``ACEStepPipeline.load_lora(folder, weight)`` (PEFT layers) vs our merge, at weights 1.0 and 0.5."""
    base = run(dit, inputs)
    try:
        for w in (1.0, 0.5):
            apply_lora(dit, lora, w)
            ours = run(dit, inputs)
            errors = {k: rel_err(v, ref[f"{k}_w{w}"]) for k, v in ours.items()}
            print(f"weight {w}: relative L2 errors vs official:", {k: f"{e:.2e}" for k, e in errors.items()})
            assert all(e < 1e-4 for e in errors.values()), errors
            assert rel_err(ours["output"], base["output"]) > 0.1  # the LoRA really acts
    finally:
        remove_lora(dit)


def test_official_file_layout_and_scale(lora):
    """The official trainer's file: bare module names, lora_A/lora_B, no alpha anywhere -> scale = weight."""
    keys = list(read_safetensors(LORA_FILE)[0])
    assert "transformer_blocks.0.attn.to_q.lora_A.weight" in keys
    assert not any(k.endswith(".alpha") for k in keys)
    for key in (
        "transformer_blocks.19.attn.to_out.0.weight",
        "transformer_blocks.0.cross_attn.to_k.weight",
        "lyric_encoder.encoders.5.self_attn.linear_v.weight",
        "speaker_embedder.weight",
    ):
        assert key in lora.patches
    assert len(lora.patches) == 20 * 8 + 6 * 3 + 1  # the official zh_rap_lora_config target modules
    assert {scale for _, _, scale in lora.patches.values()} == {1.0}
    assert lora.name == "tiny_lora"
    # the folder or the file inside it give the same LoRA
    assert load_lora(LORA_FILE).patches.keys() == lora.patches.keys()


def test_remove_restores_exact_weights_and_loras_do_not_stack(dit, lora, inputs):
    before = snapshot(dit)
    apply_lora(dit, lora, 1.0)
    once = snapshot(dit)
    assert applied_lora(dit) == ("tiny_lora", 1.0)
    apply_lora(dit, lora, 1.0)  # again: replaces, does not add twice
    assert all(torch.equal(once[k], v) for k, v in dit.state_dict().items())
    apply_lora(dit, TINY_LORA, 0.5)  # another one (here by path) first removes the previous one
    half = snapshot(dit)
    remove_lora(dit)
    assert applied_lora(dit) is None
    assert all(torch.equal(before[k], v) for k, v in dit.state_dict().items())
    apply_lora(dit, lora, 0.5)
    assert all(torch.equal(half[k], v) for k, v in dit.state_dict().items())
    apply_lora(dit, "none")  # the official pipeline's "no LoRA"
    assert all(torch.equal(before[k], v) for k, v in dit.state_dict().items())
    remove_lora(dit)  # without a LoRA: nothing to do


def test_lora_on_float8_weights_rounds_the_merge_once_and_comes_off_exactly(lora):
    dit8 = checkpoint.load_dit(TINY, dtype=torch.float32, weight_dtype=torch.float8_e4m3fn)
    full = checkpoint.load_dit(TINY, dtype=torch.float32)
    before = snapshot(dit8)
    apply_lora(dit8, lora, 0.7)
    apply_lora(full, lora, 0.7)
    merged, expected = dit8.state_dict(), full.state_dict()
    for key in lora.patches:
        w = before[key].float() + lora_delta(*lora_patches(lora, 0.7)[key], before[key])
        assert merged[key].dtype == torch.float8_e4m3fn and torch.equal(
            merged[key], w.to(torch.float8_e4m3fn)
        )
        assert rel_err(merged[key], expected[key]) < 0.05  # float8's 3 mantissa bits
    remove_lora(dit8)
    assert all(torch.equal(before[k], v) for k, v in dit8.state_dict().items())


def test_lora_patches_applied_by_hand_equal_apply_lora(dit, lora):
    """What ComfyUI's ModelPatcher gets: W + scale * up @ down on the DiT's own keys."""
    patches = lora_patches(lora, 0.7)
    assert patches.keys() == lora.patches.keys()
    sd = dit.state_dict()
    by_hand = {k: sd[k] + scale * (up @ down) for k, (up, down, scale) in patches.items()}
    apply_lora(dit, lora, 0.7)
    try:
        sd = dit.state_dict()
        assert max(rel_err(sd[k], v) for k, v in by_hand.items()) < 1e-6
        assert all(scale == 0.7 for _, _, scale in patches.values())
    finally:
        remove_lora(dit)


def with_metadata(tmp_path: Path, metadata: dict) -> Path:
    sd = read_safetensors(LORA_FILE)[0]
    folder = tmp_path / "lora_with_metadata"
    folder.mkdir()
    save_file(sd, str(folder / LORA_FILE.name), metadata={"format": "pt", **metadata})
    return folder


def test_metadata_alpha_as_diffusers_034_applies_it(dit, inputs, ref, tmp_path):
    """diffusers >= 0.34 saves the LoraConfig as metadata and loads it back: rsLoRA alpha / sqrt(r) = 3 / 2."""
    config = read_json(GOLDEN / "lora" / "lora_adapter_metadata.json")
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (4, 3, True)
    lora = load_lora(with_metadata(tmp_path, {"lora_adapter_metadata": json.dumps(config)}))
    assert {scale for _, _, scale in lora.patches.values()} == {1.5}
    apply_lora(dit, lora, 1.0)
    try:
        ours = run(dit, inputs)
    finally:
        remove_lora(dit)
    errors = {k: rel_err(v, ref[f"{k}_metadata_w1.0"]) for k, v in ours.items()}
    print("metadata LoRA vs PEFT:", {k: f"{e:.2e}" for k, e in errors.items()})
    assert all(e < 1e-4 for e in errors.values()), errors
    # without rsLoRA alpha / r; alpha_pattern as PEFT matches it (module-name suffix)
    plain = {**config, "use_rslora": False, "alpha_pattern": {"speaker_embedder": 2}}
    tmp2 = tmp_path / "plain"
    tmp2.mkdir()
    lora = load_lora(with_metadata(tmp2, {"lora_adapter_metadata": json.dumps(plain)}))
    assert lora.patches["transformer_blocks.0.attn.to_q.weight"][2] == 0.75
    assert lora.patches["speaker_embedder.weight"][2] == 0.5


def rewrite(sd: dict[str, torch.Tensor], prefix: str = "", down="lora_A", up="lora_B", kohya=False):
    out = {}
    for k, v in sd.items():
        module, kind = k.rsplit(".", 2)[0], k.rsplit(".", 2)[1]
        if kohya:
            module = module.replace(".", "_")
        out[f"{prefix}{module}.{down if kind == 'lora_A' else up}.weight"] = v
    return out


def test_key_name_variants_give_the_same_patches(lora, tmp_path):
    sd = read_safetensors(LORA_FILE)[0]
    variants = {
        "transformer": rewrite(sd, "transformer."),  # diffusers pipeline save_lora_weights
        "comfy": rewrite(sd, "diffusion_model."),  # ComfyUI's generic format
        "comfy_full": rewrite(sd, "model.diffusion_model."),
        "kohya": rewrite(sd, "lora_unet_", "lora_down", "lora_up", kohya=True),
        "old_diffusers": rewrite(sd, "", "lora.down", "lora.up"),
        "adapter_name": {k.replace(".weight", ".default.weight"): v for k, v in sd.items()},
    }
    for name, vsd in variants.items():
        save_file(vsd, str(tmp_path / f"{name}.safetensors"))
        got = load_lora(tmp_path / f"{name}.safetensors")
        assert got.patches.keys() == lora.patches.keys(), name
        assert all(got.patches[k][0] is not None and got.patches[k][2] == 1.0 for k in got.patches), name
    # kohya / ComfyUI .alpha tensors: scale alpha / r
    alphas = {
        k.rsplit(".", 2)[0] + ".alpha": torch.tensor(2.0) for k in variants["kohya"] if "lora_down" in k
    }
    save_file({**variants["kohya"], **alphas}, str(tmp_path / "alpha.safetensors"))
    assert {s for _, _, s in load_lora(tmp_path / "alpha.safetensors").patches.values()} == {0.5}
    # PEFT save_pretrained folder: base_model.model. keys + adapter_config.json (non-rsLoRA: alpha / r)
    peft_dir = tmp_path / "peft"
    peft_dir.mkdir()
    save_file(rewrite(sd, "base_model.model."), str(peft_dir / "adapter_model.safetensors"))
    (peft_dir / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 16, "peft_type": "LORA"}))
    peft = load_lora(peft_dir)
    assert peft.patches.keys() == lora.patches.keys() and peft.name == "peft"
    assert {s for _, _, s in peft.patches.values()} == {4.0}
    # a LoRA on the cross-attention's unused joint-attention projection changes nothing officially: skipped
    extra = {
        "transformer_blocks.0.cross_attn.add_q_proj.lora_A.weight": torch.zeros(4, 32),
        "transformer_blocks.0.cross_attn.add_q_proj.lora_B.weight": torch.zeros(32, 4),
    }
    save_file({**sd, **extra}, str(tmp_path / "extra.safetensors"))
    got = load_lora(tmp_path / "extra.safetensors")
    assert got.patches.keys() == lora.patches.keys()
    assert got.skipped == ["transformer_blocks.0.cross_attn.add_q_proj"]


def test_wrong_files_and_keys_fail_clearly(dit, tmp_path):
    with pytest.raises(FileNotFoundError, match="LoRA not found"):
        load_lora(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="pytorch_lora_weights.safetensors"):
        load_lora(tmp_path)  # an empty folder
    (tmp_path / "lora.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.safetensors"):
        load_lora(tmp_path / "lora.ckpt")
    with pytest.raises(ValueError, match="model checkpoint, not a LoRA"):
        load_lora(TINY / "diffusion_pytorch_model.safetensors")
    cases = {
        # an ACE-Step 1.5 / LLM-style LoRA: no such layer in the v1 DiT
        "other_model": (
            {
                "layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 32),
                "layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(32, 4),
            },
            r"match no ACE-Step v1 DiT layer.*layers\.0\.self_attn\.q_proj",
        ),
        "half": ({"speaker_embedder.lora_A.weight": torch.zeros(4, 16)}, "has only its down matrix"),
        "dora": (
            {"speaker_embedder.lora_magnitude_vector": torch.zeros(32)},
            "unsupported LoRA tensors",
        ),
        "no_lora": ({"foo.bar": torch.zeros(2)}, "holds no LoRA tensors"),
    }
    for name, (sd, message) in cases.items():
        save_file(sd, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(ValueError, match=message):
            load_lora(tmp_path / f"{name}.safetensors")
    # fits the architecture but not this DiT's size: nothing is changed
    before = snapshot(dit)
    big = {
        "transformer_blocks.23.attn.to_q.lora_A.weight": torch.ones(4, 32),
        "transformer_blocks.23.attn.to_q.lora_B.weight": torch.ones(32, 4),
        "speaker_embedder.lora_A.weight": torch.ones(4, 512),
        "speaker_embedder.lora_B.weight": torch.ones(2560, 4),
    }
    save_file(big, str(tmp_path / "full_size.safetensors"))
    with pytest.raises(ValueError, match="does not fit this DiT") as error:
        apply_lora(dit, tmp_path / "full_size.safetensors")
    assert "transformer_blocks.23.attn.to_q.weight is not in this DiT" in str(error.value)
    assert "speaker_embedder.weight is (32, 16), the LoRA makes (2560, 512)" in str(error.value)
    assert applied_lora(dit) is None
    assert all(torch.equal(before[k], v) for k, v in dit.state_dict().items())


def test_bf16_merge_follows_official_bf16(lora, inputs, ref):
    """On bfloat16 weights the merge rounds once per weight; the official adds the LoRA branch in bf16."""
    dit16 = checkpoint.load_dit(TINY, dtype=torch.bfloat16)
    apply_lora(dit16, lora, 1.0)
    x16 = {
        k: v.to(torch.bfloat16) if v.is_floating_point() and k != "timestep" else v for k, v in inputs.items()
    }
    with torch.no_grad():
        out = dit16(
            x16["hidden_states"], x16["attention_mask"], timestep=x16["timestep"], **{k: x16[k] for k in COND}
        )
    errors = rel_err(out, ref["bf16_output_w1.0"]), rel_err(out, ref["output_w1.0"])
    official = rel_err(ref["bf16_output_w1.0"], ref["output_w1.0"])  # the official bf16 run vs its fp32 run
    print(
        f"bf16 merged vs official bf16 {errors[0]:.2e}, vs official fp32 {errors[1]:.2e} (official: {official:.2e})"
    )
    assert errors[0] < 5e-2  # bf16 rounding noise, not a different LoRA
    assert errors[1] < 1.5 * official  # as close to the float32 result as the official bf16 run is


def test_lora_delta_handles_conv_shapes():
    """PEFT conv LoRAs (down: conv with the kernel, up: 1x1) merge into a conv weight of the same shape."""
    up, down, weight = torch.randn(6, 2, 1), torch.randn(2, 3, 5), torch.zeros(6, 3, 5)
    delta = lora_delta(up, down, 0.5, weight)
    x = torch.randn(1, 3, 9)
    ref = 0.5 * torch.nn.functional.conv1d(torch.nn.functional.conv1d(x, down), up)
    assert torch.allclose(torch.nn.functional.conv1d(x, delta), ref, atol=1e-5)


@pytest.mark.skipif(
    not os.environ.get("ACESTEP_REF"), reason="ACESTEP_REF (official ACE-Step checkout) not set"
)
def test_live_parity_with_official_pipeline(dit, lora, inputs, tmp_path):
    """Runs ACEStepPipeline.load_lora now (ref python from ACESTEP_REF_PYTHON) on fresh inputs and compares."""
    g = torch.Generator().manual_seed(11)
    x = dict(inputs)
    x["hidden_states"] = torch.randn(x["hidden_states"].shape, generator=g)
    x["timestep"] = torch.tensor([500.0, 20.0])
    save_file(x, str(tmp_path / "inputs.safetensors"))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    python = os.environ.get("ACESTEP_REF_PYTHON", sys.executable)
    cmd = [
        python,
        str(GOLDEN / "make_lora.py"),
        "--live",
        str(TINY_LORA),
        str(tmp_path / "inputs.safetensors"),
    ]
    subprocess.run([*cmd, str(tmp_path / "out.safetensors")], check=True, env=env)
    ref = read_safetensors(tmp_path / "out.safetensors")[0]
    try:
        for w in (1.0, 0.5):
            apply_lora(dit, lora, w)
            ours = run(dit, x)
            errors = {k: rel_err(v, ref[f"{k}_w{w}"]) for k, v in ours.items()}
            assert all(e < 1e-4 for e in errors.values()), (w, errors)
    finally:
        remove_lora(dit)
