"""ACE-Step 1.5 LoRAs merged into our DiT against the official handler (goldens: tests/golden/make_v15_lora.py ran
the official trainer's save and the handler's load_lora / set_lora_scale / unload_lora; see
tests/golden/v15/lora/README.md)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from acestep_models.common.weights import read_json, read_safetensors
from acestep_models.v15 import pipeline
from acestep_models.v15.lora import (
    LoRA,
    applied_loras,
    apply_lora,
    load_lora,
    lora_deltas,
    lora_patches,
    official_scale,
    remove_lora,
)

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
ROOT15 = GOLDEN / "v15" / "pipeline" / "tiny"  # the tiny official root the official handler ran
LORAS = GOLDEN / "v15" / "lora"
OFFICIAL = LORAS / "official_lora"  # as the official trainer leaves it: official_lora/adapter/
ADAPTER = OFFICIAL / "adapter"
RSLORA = LORAS / "peft_rslora"
TOL = 1e-5  # relative L2, float32 CPU


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models() -> pipeline.Models15:
    return pipeline.load_models(ROOT15, variant="turbo")


@pytest.fixture(scope="module")
def dit(models):
    yield models.dit
    remove_lora(models.dit)


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return read_safetensors(LORAS / "tensors.safetensors")[0]


@pytest.fixture(scope="module")
def cases() -> dict:
    return json.loads((LORAS / "cases.json").read_text())


def velocity(dit, golden) -> torch.Tensor:
    x = {k[len("inputs.") :]: v for k, v in golden.items() if k.startswith("inputs.")}
    t = x["timestep"]
    with torch.no_grad():
        return dit(x["hidden_states"], t, t, x["encoder_hidden_states"], x["context_latents"])


def snapshot(dit) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in dit.state_dict().items()}


def same_weights(dit, weights: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(weights[k], v) for k, v in dit.state_dict().items())


# --- against the official handler -----------------------------------------------------------------------------


def test_official_lora_at_scales_one_and_half_then_removed(dit, golden):
    """handler.load_lora(folder) -> scale 1; set_lora_scale(0.5); remove_lora -> the original weights again."""
    before = snapshot(dit)
    base = velocity(dit, golden)
    assert rel(base, golden["base"]) < TOL
    for scale in (1.0, 0.5):
        apply_lora(dit, OFFICIAL, scale)  # the folder the trainer writes (its adapter/ inside)
        ours = velocity(dit, golden)
        err = rel(ours, golden[f"official.scale{scale}"])
        print(f"official LoRA at {scale}: relative L2 vs official {err:.2e}")
        assert err < TOL
        assert rel(ours, base) > 0.1  # the LoRA really acts
    # the same LoRA again: a new scale, not a second copy
    assert applied_loras(dit) == [("official_lora", 0.5)]
    remove_lora(dit)
    assert applied_loras(dit) == [] and same_weights(dit, before)
    assert torch.equal(velocity(dit, golden), base)


def test_official_unload_quirks_are_not_copied(dit, golden, cases):
    """The official unload_lora leaves the LoRA in (PEFT's layers stay injected, the backup's keys match none of
    theirs); a LoRA loaded after it replaces the old one only on the layers both target. Ours comes off."""
    notes = cases["notes"]
    assert notes["unload_lora_layers_left"] == 32 and notes["unloaded_equals_official_scale1.0"]
    assert torch.equal(golden["unloaded"], golden["official.scale1.0"])
    # what the official handler runs after unload_lora + load_lora(rsLoRA): the old LoRA on k_proj / o_proj
    # (which the rsLoRA does not target), the rsLoRA everywhere else
    official = load_lora(OFFICIAL)
    left = {k: v for k, v in official.patches.items() if k.endswith(("k_proj.weight", "o_proj.weight"))}
    apply_lora(dit, replace(official, name="left over", patches=left))
    apply_lora(dit, RSLORA)
    try:
        assert rel(velocity(dit, golden), golden["quirk.rslora_after_unload"]) < TOL
    finally:
        remove_lora(dit)
    assert rel(velocity(dit, golden), golden["base"]) < TOL


def test_rslora_adapter_with_alpha_pattern_and_mlp_targets(dit, golden):
    """Any PEFT LoRA folder: rank 2, rsLoRA (alpha / sqrt(r)), alpha_pattern, MLP layers too."""
    lora = load_lora(RSLORA)
    scales = {k: s for k, (_, _, s) in lora.patches.items()}
    assert scales["decoder.layers.0.self_attn.q_proj.weight"] == pytest.approx(3 / 2**0.5)
    assert scales["decoder.layers.0.mlp.down_proj.weight"] == pytest.approx(1 / 2**0.5)
    try:
        for scale in (1.0, 0.5):
            apply_lora(dit, lora, scale)
            err = rel(velocity(dit, golden), golden[f"rslora.scale{scale}"])
            print(f"rsLoRA at {scale}: relative L2 vs official {err:.2e}")
            assert err < TOL
    finally:
        remove_lora(dit)


def test_two_loras_stack_as_two_peft_adapters(dit, golden):
    """Two LoRAs at once equal PEFT with both adapters active (official 1.0 + rsLoRA 0.5); taking one off leaves
    exactly the other; taking both off gives the original weights back bit for bit."""
    before = snapshot(dit)
    apply_lora(dit, RSLORA, 0.5)
    rslora_only = snapshot(dit)
    apply_lora(dit, ADAPTER, 1.0)
    assert applied_loras(dit) == [("peft_rslora", 0.5), ("official_lora", 1.0)]
    err = rel(velocity(dit, golden), golden["stack.official1.0_rslora0.5"])
    print(f"stack: relative L2 vs PEFT {err:.2e}")
    assert err < TOL
    remove_lora(dit, "official_lora")
    assert applied_loras(dit) == [("peft_rslora", 0.5)]
    assert same_weights(dit, rslora_only)
    remove_lora(dit, "not applied")  # nothing to take off
    remove_lora(dit)
    assert applied_loras(dit) == [] and same_weights(dit, before)
    remove_lora(dit)  # without a LoRA: nothing to do


def test_generation_with_lora_equals_official_generate_music(models, golden, cases):
    """One whole generation (make_v15_pipeline's turbo text2music case) with the LoRA at 0.5 in both."""
    case = cases["generate"]
    apply_lora(models.dit, OFFICIAL, case["lora_scale"])
    try:
        m = replace(models, variant=case["variant"])
        out = pipeline.generate(m, {**case["kwargs"], "global_seed": case["global_seed"]})
    finally:
        remove_lora(models.dit)
    torch.testing.assert_close(out.noise, golden["generate.noise"], rtol=0, atol=0)
    err = rel(out.latents, golden["generate.latents"])
    audio = torch.stack(out.audio)[..., :: case["audio_stride"]]
    print(f"generation: latents {err:.2e}, audio {rel(audio, golden['generate.audio']):.2e} relative L2")
    assert err < 1e-4 and rel(audio, golden["generate.audio"]) < 1e-4


# --- files and scales ------------------------------------------------------------------------------------------


def test_official_file_layout_and_scale(cases):
    """The trainer's folder: adapter_config.json + adapter_model.safetensors, keys relative to the decoder."""
    keys = list(read_safetensors(ADAPTER / "adapter_model.safetensors")[0])
    assert "base_model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    config = read_json(ADAPTER / "adapter_config.json")
    assert (config["r"], config["lora_alpha"], sorted(config["target_modules"])) == (
        4,
        8,
        ["k_proj", "o_proj", "q_proj", "v_proj"],
    )
    lora = load_lora(OFFICIAL)  # the folder above adapter/, the adapter folder and its file: the same LoRA
    assert lora.name == "official_lora" and lora.scale_source == "adapter_config.json"
    for other in (ADAPTER, ADAPTER / "adapter_model.safetensors"):
        assert load_lora(other).patches.keys() == lora.patches.keys()
    official_layers = cases["notes"]["official_adapter_layers"]  # where the handler's PEFT put LoRA layers
    assert sorted(lora.patches) == sorted(
        f"decoder.{n.split('base_model.model.')[-1]}.weight" for n in official_layers
    )
    assert len(lora.patches) == 4 * 2 * 4  # layers x {self_attn, cross_attn} x {q, k, v, o}_proj
    assert {s for _, _, s in lora.patches.values()} == {2.0}  # alpha / r, as the handler's layers
    assert cases["notes"]["official_adapter_scaling_after_load"] == [2.0]
    assert cases["notes"]["official_adapter_scaling_at_0.5"] == [1.0]


def test_official_scale_is_the_handler_clamp(cases):
    assert official_scale(0.3) == 0.3 and official_scale("0.25") == 0.25
    assert official_scale(1.7) == 1.0 and official_scale(-2) == 0.0
    assert cases["notes"]["handler_lora_scale_after_1.7"] == 1.0
    for bad in ("abc", None, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="LoRA scale"):
            official_scale(bad)


def rewrite(sd: dict[str, torch.Tensor], prefix: str, down="lora_A", up="lora_B", underscored=False):
    """The official file's tensors under another key layout (``base_model.model.`` stripped first)."""
    out = {}
    for k, v in sd.items():
        module, kind = k[len("base_model.model.") :].rsplit(".", 2)[:2]
        if underscored:
            module = module.replace(".", "_")
        out[f"{prefix}{module}.{down if kind == 'lora_A' else up}.weight"] = v
    return out


def test_comfyui_key_layouts_give_the_same_layers(tmp_path, caplog):
    """The layouts ComfyUI 0.20.1 maps for ACEStep15 (model_lora_keys_unet), and bare paths."""
    lora = load_lora(OFFICIAL)
    sd = read_safetensors(ADAPTER / "adapter_model.safetensors")[0]
    variants = {
        "official_file_alone": sd,  # adapter_model.safetensors renamed, without adapter_config.json
        "lycoris": rewrite(sd, "lycoris_", "lora_down", "lora_up", underscored=True),
        "comfy": rewrite(sd, "diffusion_model.decoder."),
        "comfy_kohya": rewrite(sd, "lora_unet_decoder_", "lora_down", "lora_up", underscored=True),
        "bare_decoder_paths": rewrite(sd, ""),
        "bare_model_paths": rewrite(sd, "decoder."),
        "adapter_name": {k.replace(".weight", ".default.weight"): v for k, v in sd.items()},
    }
    for name, vsd in variants.items():
        save_file(vsd, str(tmp_path / f"{name}.safetensors"))
        with caplog.at_level(logging.WARNING):
            got = load_lora(tmp_path / f"{name}.safetensors")
        assert got.patches.keys() == lora.patches.keys(), name
        assert all(torch.equal(got.patches[k][0], lora.patches[k][0]) for k in got.patches), name
        # no adapter_config.json: the strength alone is the scale (ComfyUI's rule), with a warning
        assert {s for _, _, s in got.patches.values()} == {1.0}, name
    assert "official alpha / r" in caplog.text
    # kohya / LyCORIS .alpha tensors: alpha / r (ComfyUI)
    alphas = {k.split(".")[0] + ".alpha": torch.tensor(8.0) for k in variants["lycoris"] if "lora_down" in k}
    save_file({**variants["lycoris"], **alphas}, str(tmp_path / "alpha.safetensors"))
    assert {s for _, _, s in load_lora(tmp_path / "alpha.safetensors").patches.values()} == {2.0}
    # a generic ComfyUI key may patch any layer of the model, not only the decoder's
    extra = {
        "diffusion_model.encoder.lyric_encoder.layers.1.mlp.up_proj.lora_A.weight": torch.zeros(2, 32),
        "diffusion_model.encoder.lyric_encoder.layers.1.mlp.up_proj.lora_B.weight": torch.zeros(64, 2),
    }
    save_file({**variants["comfy"], **extra}, str(tmp_path / "encoder.safetensors"))
    got = load_lora(tmp_path / "encoder.safetensors")
    assert "encoder.lyric_encoder.layers.1.mlp.up_proj.weight" in got.patches


def test_file_layers_outside_target_modules_are_skipped_as_peft_does(dit, golden, cases, tmp_path):
    """adapter_config.json naming fewer target_modules than the file holds: PEFT (the handler) injects only those."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    config = read_json(ADAPTER / "adapter_config.json")
    config["target_modules"] = ["q_proj", "k_proj"]
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(
        read_safetensors(ADAPTER / "adapter_model.safetensors")[0], str(folder / "adapter_model.safetensors")
    )
    lora = load_lora(folder)
    assert len(lora.patches) == cases["notes"]["subset_lora_layers"] == 16
    assert all(k.endswith(("q_proj.weight", "k_proj.weight")) for k in lora.patches)
    assert "decoder.layers.0.cross_attn.v_proj" in lora.skipped
    apply_lora(dit, lora)
    try:
        assert rel(velocity(dit, golden), golden["subset.scale1.0"]) < TOL
    finally:
        remove_lora(dit)


def test_lora_patches_and_deltas_for_comfyui_equal_apply_lora(dit):
    """What a ComfyUI ModelPatcher gets: {our state-dict key: (up, down, scale)} or the weight deltas."""
    lora = load_lora(OFFICIAL)
    patches, deltas = lora_patches(lora, 0.7), lora_deltas(lora, 0.7)
    assert patches.keys() == deltas.keys() == lora.patches.keys()
    assert all(s == pytest.approx(1.4) for _, _, s in patches.values())  # 0.7 * alpha / r
    sd = dit.state_dict()
    by_hand = {k: sd[k] + s * (up @ down) for k, (up, down, s) in patches.items()}
    assert all(torch.allclose(sd[k] + deltas[k], v, atol=1e-6) for k, v in by_hand.items())
    apply_lora(dit, lora, 0.7)
    try:
        sd = dit.state_dict()
        assert max(rel(sd[k], v) for k, v in by_hand.items()) < 1e-6
    finally:
        remove_lora(dit)


# --- wrong files -----------------------------------------------------------------------------------------------


def test_wrong_files_fail_clearly(dit, tmp_path):
    with pytest.raises(FileNotFoundError, match="LoRA not found.*adapter_config.json"):
        load_lora(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="No LoRA in folder"):
        load_lora(tmp_path)  # an empty folder
    (tmp_path / "adapter_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.safetensors file"):
        load_lora(tmp_path / "adapter_model.bin")
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no adapter_model.safetensors.*pickled"):
        load_lora(tmp_path)
    with pytest.raises(ValueError, match="ACE-Step model checkpoint.*not a LoRA"):
        load_lora(ROOT15 / "acestep-v15-turbo" / "model.safetensors")
    with pytest.raises(ValueError, match="ACE-Step v1 LoRA.*not one for the ACE-Step 1.5 DiT"):
        load_lora(GOLDEN / "lora" / "tiny_lora")  # the v1 golden LoRA
    z = torch.zeros
    cases = {
        "lokr": (
            {
                "lycoris_layers_0_self_attn_q_proj.lokr_w1": z(4, 4),
                "lycoris_layers_0_self_attn_q_proj.lokr_w2": z(8, 8),
                "lycoris_layers_0_self_attn_q_proj.alpha": torch.tensor(1.0),
            },
            "LoKr adapter.*official 1.5 handler cannot load LoKr",
        ),
        "lm": (
            {
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": z(4, 32),
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": z(32, 4),
            },
            "LoRA for a language model",
        ),
        "other": (
            {
                "base_model.model.blocks.0.attn.qkv.lora_A.weight": z(2, 8),
                "base_model.model.blocks.0.attn.qkv.lora_B.weight": z(8, 2),
            },
            "match no ACE-Step 1.5 DiT layer",
        ),
        "half": (
            {"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": z(4, 32)},
            "only its down matrix",
        ),
        "dora": (
            {"base_model.model.layers.0.self_attn.q_proj.lora_magnitude_vector": z(32)},
            "unsupported LoRA tensors",
        ),
    }
    for name, (sd, message) in cases.items():
        save_file(sd, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(ValueError, match=message):
            load_lora(tmp_path / f"{name}.safetensors")
    # an official-layout LoRA for the released DiT (width 2048, 24 layers): nothing changes
    before = snapshot(dit)
    released = {
        "base_model.model.layers.23.self_attn.q_proj.lora_A.weight": torch.ones(4, 2048),
        "base_model.model.layers.23.self_attn.q_proj.lora_B.weight": torch.ones(2048, 4),
        "base_model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(4, 2048),
        "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.ones(2048, 4),
    }
    save_file(released, str(tmp_path / "released.safetensors"))
    apply_lora(dit, RSLORA, 0.5)
    applied = snapshot(dit)
    with pytest.raises(ValueError, match="does not fit") as error:
        apply_lora(dit, tmp_path / "released.safetensors")
    message = str(error.value)
    assert "width 2048, this one has width 32" in message and "at least 24 layers, this one has 4" in message
    assert applied_loras(dit) == [("peft_rslora", 0.5)] and same_weights(dit, applied)  # left as it was
    with pytest.raises(ValueError, match="not finite"):
        apply_lora(dit, ADAPTER, float("nan"))
    remove_lora(dit)
    assert same_weights(dit, before)


def test_repr_says_what_it_is():
    lora = load_lora(OFFICIAL)
    assert isinstance(lora, LoRA)
    assert repr(lora) == "LoRA('official_lora': 32 layers, rank [4], alpha: adapter_config.json)"
