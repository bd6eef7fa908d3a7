"""ACE-Step 1.5 LoRAs and LoKrs merged into our DiT against the official code (goldens: tests/golden/make_v15_lora.py
ran the official trainer's save and the handler's load_lora / set_lora_scale / unload_lora, make_v15_lokr.py the
official LoKr trainer's inject_lokr_into_dit / save_lokr_weights and load_lokr_weights; see
tests/golden/v15/lora/README.md)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from acestep_models.common.weights import read_json, read_safetensors
from acestep_models.v15 import pipeline
from acestep_models.v15.lora import (
    Kron,
    LoRA,
    applied_loras,
    apply_lora,
    load_lora,
    lokr_patches,
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
LOKRS = LORAS / "lokr"  # make_v15_lokr.py: one folder per LoKr, as save_lokr_weights writes it
LOKR_CASES = ("official_lokr", "factor_rslora", "unbalanced", "defaults")
TOL = 1e-5  # relative L2, float32 CPU
REPO = Path(__file__).resolve().parents[3]


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


@pytest.fixture(scope="module")
def lokr_golden() -> dict[str, torch.Tensor]:
    return read_safetensors(LOKRS / "tensors.safetensors")[0]


@pytest.fixture(scope="module")
def lokr_cases() -> dict:
    return json.loads((LOKRS / "cases.json").read_text())


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
        "loha": (
            {
                "lycoris_layers_0_self_attn_q_proj.hada_w1_a": z(32, 2),
                "lycoris_layers_0_self_attn_q_proj.hada_w1_b": z(2, 32),
                "lycoris_layers_0_self_attn_q_proj.alpha": torch.tensor(1.0),
            },
            "LyCORIS LoHa adapter.*does not apply: only LoRA .* and LoKr",
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


# --- LoKr (LyCORIS), against the official inject_lokr_into_dit + load_lokr_weights ------------------------------


def lycoris_name(key: str) -> str:
    """Our weight key as the official LoKr file names the layer (LyCORIS: the decoder path, dots as _)."""
    return "lycoris_" + key[len("decoder.") : -len(".weight")].replace(".", "_")


@pytest.mark.parametrize("name", LOKR_CASES)
def test_official_lokr_at_two_multipliers_then_removed(dit, golden, lokr_golden, lokr_cases, name):
    """The official trainer's lokr_weights.safetensors, applied as the official inject_lokr_into_dit(model, config,
    multiplier) + load_lokr_weights do: the DiT output at multiplier 1 and another; the scale of every layer is the
    official module's; remove_lora gives the original weights back bit for bit."""
    before = snapshot(dit)
    base = velocity(dit, golden)
    lokr = load_lora(LOKRS / name)  # the folder save_lokr_weights wrote
    case = lokr_cases[name]
    # every Linear and Conv1d of the decoder, as LyCORIS wrapped them
    assert lokr.is_lokr and len(lokr.patches) == case["modules"] == 52
    official_scales = {module: scale for module, (scale, _) in case["layouts"].items()}
    assert {lycoris_name(k): p.scale for k, p in lokr.patches.items()} == pytest.approx(official_scales)
    try:
        for multiplier in case["multipliers"]:
            apply_lora(dit, lokr, multiplier)
            ours = velocity(dit, golden)
            err = rel(ours, lokr_golden[f"{name}.scale{multiplier}"])
            print(f"LoKr {name} at {multiplier}: relative L2 vs official {err:.2e}")
            assert err < TOL
            assert rel(ours, base) > 0.1  # the LoKr really acts
        assert applied_loras(dit) == [(name, case["multipliers"][-1])]
    finally:
        remove_lora(dit)
    assert applied_loras(dit) == [] and same_weights(dit, before)


def test_official_lokr_file_layout_and_where_it_loads_from(tmp_path, lokr_cases):
    """save_lokr_weights' file: LyCORIS keys relative to the decoder, an .alpha per layer, the LoKRConfig as metadata;
    it loads from the file, its folder (<output>/final/) and the trainer's output folder above that."""
    file = LOKRS / "official_lokr" / "lokr_weights.safetensors"
    sd, metadata = read_safetensors(file)
    assert {"lycoris_layers_0_self_attn_q_proj.lokr_w1", "lycoris_layers_0_self_attn_q_proj.lokr_w2_a",
            "lycoris_proj_in_1.lokr_t2", "lycoris_time_embed_linear_1.lokr_w1_b",
            "lycoris_layers_0_self_attn_q_proj.alpha"} <= set(sd)  # fmt: skip
    assert metadata["format"] == "lycoris" and json.loads(metadata["lokr_config"])["linear_dim"] == 2
    lokr = load_lora(file)
    assert lokr.name == "official_lokr"
    kinds = {k: p for k, p in lokr.patches.items()}
    q = kinds["decoder.layers.0.self_attn.q_proj.weight"]
    assert isinstance(q, Kron) and q.w1 is not None and q.w2_a is not None
    assert q.scale == 1.5  # alpha 3 / dim 2
    assert kinds["decoder.proj_in.1.weight"].t2 is not None  # Tucker on the convolution
    assert kinds["decoder.proj_in.1.weight"].shape == (32, 9, 2)
    # the official output folder: <output>/final/lokr_weights.safetensors
    final = tmp_path / "my_lokr" / "final"
    final.mkdir(parents=True)
    shutil.copy(file, final)
    for where in (final, final.parent):
        got = load_lora(where)
        assert got.name == "my_lokr" and got.patches.keys() == lokr.patches.keys()
    assert repr(lokr).startswith("LoRA('official_lokr': 52 LoKr layers, alpha: LoKr .alpha tensors")
    # LyCORIS saved whole w1 and w2 for every layer at the official defaults: scale 1, linear_alpha 128 unused
    defaults = load_lora(LOKRS / "defaults")
    assert json.loads(lokr_cases["defaults"]["file_metadata"]["lokr_config"])["linear_alpha"] == 128
    assert all(p.w1 is not None and p.w2 is not None and p.scale == 1.0 for p in defaults.patches.values())


def test_lokr_stacks_with_a_lora_and_comes_off_alone(dit, golden, lokr_golden):
    """A LoKr and a LoRA at once (the official LoKr under PEFT's official LoRA at 0.5); taking the LoKr off leaves
    exactly the LoRA; taking both off gives the original weights back bit for bit."""
    before = snapshot(dit)
    apply_lora(dit, OFFICIAL, 0.5)
    lora_only = snapshot(dit)
    apply_lora(dit, LOKRS / "official_lokr", 1.0)
    assert applied_loras(dit) == [("official_lora", 0.5), ("official_lokr", 1.0)]
    err = rel(velocity(dit, golden), lokr_golden["stack.official_lokr1.0_official_lora0.5"])
    print(f"LoKr + LoRA stack: relative L2 vs official {err:.2e}")
    assert err < TOL
    remove_lora(dit, "official_lokr")
    assert applied_loras(dit) == [("official_lora", 0.5)] and same_weights(dit, lora_only)
    remove_lora(dit)
    assert same_weights(dit, before)


def rewrite_lokr(sd: dict[str, torch.Tensor], paths: dict[str, str], prefix: str, underscored: bool):
    """The official LoKr file's tensors under another key layout; ``paths``: its layer names -> decoder paths."""
    out = {}
    for k, v in sd.items():
        module, kind = k.split(".")
        path = paths[module].replace(".", "_") if underscored else paths[module]
        out[f"{prefix}{path}.{kind}"] = v
    return out


def test_comfyui_key_layouts_load_lokrs_too(tmp_path):
    """The official file is ComfyUI's LyCORIS layout for ACEStep15 (lycoris_<decoder path with _>); its generic
    layouts (diffusion_model.<model path>, lora_unet_<model path with _>) and bare paths give the same layers."""
    lokr = load_lora(LOKRS / "official_lokr")
    sd = read_safetensors(LOKRS / "official_lokr" / "lokr_weights.safetensors")[0]
    paths = {lycoris_name(k): k[len("decoder.") : -len(".weight")] for k in lokr.patches}
    variants = {
        "comfy": rewrite_lokr(sd, paths, "diffusion_model.decoder.", False),
        "comfy_kohya": rewrite_lokr(sd, paths, "lora_unet_decoder_", True),
        "bare_decoder_paths": rewrite_lokr(sd, paths, "", False),
        "bare_model_paths": rewrite_lokr(sd, paths, "decoder.", False),
    }
    for name, vsd in variants.items():
        save_file(vsd, str(tmp_path / f"{name}.safetensors"))
        got = load_lora(tmp_path / f"{name}.safetensors")
        assert got.patches.keys() == lokr.patches.keys(), name
        for k, p in got.patches.items():
            assert p.scale == lokr.patches[k].scale and torch.equal(
                p.halves()[1], lokr.patches[k].halves()[1]
            )
    # without .alpha tensors the scale is the strength alone (LyCORIS and ComfyUI)
    save_file(
        {k: v for k, v in sd.items() if not k.endswith(".alpha")}, str(tmp_path / "no_alpha.safetensors")
    )
    assert {p.scale for p in load_lora(tmp_path / "no_alpha.safetensors").patches.values()} == {1.0}


def test_lokr_deltas_and_factors_for_comfyui(dit):
    """lora_deltas gives a LoKr's weight deltas, lokr_patches its factors with the whole scale folded into w1."""
    lokr = load_lora(LOKRS / "official_lokr")
    deltas, patches = lora_deltas(lokr, 0.7), lokr_patches(lokr, 0.7)
    assert deltas.keys() == patches.keys() == lokr.patches.keys()
    for key, (w1, w2, alpha, w1_a, w1_b, w2_a, w2_b, t2, dora) in patches.items():
        assert alpha is None and t2 is None and dora is None
        w1 = w1 if w1 is not None else w1_a @ w1_b
        w2 = w2 if w2 is not None else w2_a @ w2_b
        torch.testing.assert_close(torch.kron(w1, w2).reshape(deltas[key].shape), deltas[key])
    sd = snapshot(dit)
    apply_lora(dit, lokr, 0.7)
    try:
        merged = dit.state_dict()
        assert max(rel(merged[k], sd[k] + d) for k, d in deltas.items()) < 1e-6
    finally:
        remove_lora(dit)
    with pytest.raises(ValueError, match="is a LoKr.*use lokr_patches"):
        lora_patches(lokr)
    with pytest.raises(ValueError, match="is a LoRA.*use lora_patches"):
        lokr_patches(load_lora(OFFICIAL))


# ComfyUI's own LoKr adapter on our factors (lokr_patches), in a ComfyUI copy's Python: 0.3.x (build/comfyui, the
# tests' venv) and 0.20.1 (build/ComfyUI-0.20.1 in .venv20, scripts/setup_env.sh). It also loads the official file
# ComfyUI's own way (comfy.lora.load_lora with the ACEStep15 key map) for comparison.
COMFY_LOKR = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from comfy.cli_args import args
    args.cpu = True
    import torch
    import comfy.lora
    from comfy.weight_adapter.lokr import LoKrAdapter
    data = torch.load("in.pt", weights_only=True)
    strength, weights, out = data["strength"], data["weights"], {}
    for name, case in data["cases"].items():
        for key, factors in case["patches"].items():
            p = [(strength, LoKrAdapter(set(), factors), 1.0, None, None)]
            out[f"{name}/ours/{key}"] = comfy.lora.calculate_weight(p, weights[key].clone(), key)
        key_map = {"lycoris_" + k[len("decoder."):-len(".weight")].replace(".", "_"): k for k in weights}
        for key, adapter in comfy.lora.load_lora(case["file"], key_map, log_missing=False).items():
            p = [(strength, adapter, 1.0, None, None)]
            try:
                out[f"{name}/native/{key}"] = comfy.lora.calculate_weight(p, weights[key].clone(), key)
            except RuntimeError as e:  # its Tucker rebuild wants 2-D kernels
                print(f"{name}: ComfyUI's own load fails on {key}: {e}")
    torch.save(out, "out.pt")
    """
)


def comfyui_copies() -> list:
    from conftest import comfyui_root  # noqa: PLC0415

    root = comfyui_root()
    return [
        pytest.param((sys.executable, root), id="comfyui"),
        pytest.param(
            (REPO / ".venv20" / "bin" / "python", REPO / "build" / "ComfyUI-0.20.1"), id="ComfyUI-0.20.1"
        ),
    ]


@pytest.mark.parametrize("copy", comfyui_copies())
def test_comfyuis_lokr_adapter_on_lokr_patches_gives_our_merge(dit, tmp_path, copy):
    """ModelPatcher's path (comfy.lora.calculate_weight with LoKrAdapter(set(), lokr_patches(lokr, 1.0)) at
    strength 0.7) patches every layer as apply_lora(dit, lokr, 0.7) merges it. ComfyUI reading the official file
    itself agrees on every Linear layer (its kron of a convolution's factors differs: proj_in)."""
    python, root = copy
    if root is None or not (Path(root) / "comfy").is_dir() or not Path(python).exists():
        pytest.skip(f"no ComfyUI copy at {root} with {python} (scripts/setup_env.sh)")
    strength = 0.7
    weights = {k: v.clone() for k, v in dit.state_dict().items() if k.startswith("decoder.")}
    cases, ours = {}, {}
    for name in LOKR_CASES:
        lokr = load_lora(LOKRS / name)
        patches = lokr_patches(lokr, 1.0)
        cases[name] = {
            "patches": patches,
            "file": read_safetensors(LOKRS / name / "lokr_weights.safetensors")[0],
        }
        apply_lora(dit, lokr, strength)
        ours[name] = {k: v.clone() for k, v in dit.state_dict().items() if k in patches}
        remove_lora(dit)
    torch.save({"strength": strength, "weights": weights, "cases": cases}, tmp_path / "in.pt")
    run = subprocess.run([str(python), "-c", COMFY_LOKR, str(root)], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    print(run.stdout, end="")
    comfy = torch.load(tmp_path / "out.pt", weights_only=True)
    for name in LOKR_CASES:
        err = max(rel(comfy[f"{name}/ours/{k}"], v) for k, v in ours[name].items())
        native = {
            k: rel(comfy[f"{name}/native/{k}"], v)
            for k, v in ours[name].items()
            if f"{name}/native/{k}" in comfy
        }
        linear = max(e for k, e in native.items() if "proj_in" not in k)
        conv = native.get("decoder.proj_in.1.weight", "fails")
        print(
            f"{Path(root).name} {name}: LoKrAdapter(lokr_patches) {err:.1e}; its own load: Linear {linear:.1e}, ",
            end="",
        )
        print(f"proj_in {conv}")
        assert err < 1e-6
        assert len([k for k in native if "proj_in" not in k]) == 51
        assert max(e for k, e in native.items() if "proj_in" not in k) < 1e-6


def test_lokr_files_that_cannot_be_applied_fail_clearly(tmp_path):
    z = torch.zeros
    q = "lycoris_layers_0_self_attn_q_proj"
    cases = {
        "dora": (
            {f"{q}.lokr_w1": z(4, 4), f"{q}.lokr_w2": z(8, 8), f"{q}.dora_scale": z(32, 1)},
            "LoKr with weight decomposition \\(DoRA.*weight_decompose off",
        ),
        "half": (
            {f"{q}.lokr_w1": z(4, 4), f"{q}.lokr_w2_a": z(8, 2)},
            "needs lokr_w2 or both lokr_w2_a and lokr_w2_b",
        ),
        "both": (
            {
                f"{q}.lokr_w1": z(4, 4),
                f"{q}.lokr_w1_a": z(4, 1),
                f"{q}.lokr_w1_b": z(1, 4),
                f"{q}.lokr_w2": z(8, 8),
            },
            "needs lokr_w1 or both",
        ),
        "chain": (
            {f"{q}.lokr_w1": z(4, 4), f"{q}.lokr_w2_a": z(8, 2), f"{q}.lokr_w2_b": z(3, 8)},
            "lokr_w2_a \\(8, 2\\) and lokr_w2_b \\(3, 8\\) do not chain",
        ),
        "mixed": (
            {
                f"{q}.lokr_w1": z(4, 4),
                f"{q}.lokr_w2": z(8, 8),
                "lycoris_layers_0_self_attn_k_proj.lora_down.weight": z(2, 32),
                "lycoris_layers_0_self_attn_k_proj.lora_up.weight": z(16, 2),
            },
            "not LoKr tensors.*mixing LoKr with other adapters",
        ),
        "image_model": (
            {
                "lycoris_down_blocks_0_attn_to_q.lokr_w1": z(4, 4),
                "lycoris_down_blocks_0_attn_to_q.lokr_w2": z(8, 8),
            },
            "match no ACE-Step 1.5 DiT layer",
        ),
    }
    for name, (sd, message) in cases.items():
        save_file(sd, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(ValueError, match=message):
            load_lora(tmp_path / f"{name}.safetensors")
