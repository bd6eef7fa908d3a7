"""Golden fixtures for ACE-Step 1.5 LoRAs, from the OFFICIAL code (commit 89031b8): adapters made by the official
trainer's ``inject_lora_into_dit`` / ``save_lora_weights`` and applied by the official handler's ``load_lora`` /
``set_lora_scale`` / ``set_use_lora`` / ``unload_lora`` (PEFT layers on the DiT decoder).

    /work/ref15/venv/bin/python -m pip install --target /work/peft_overlay --no-deps peft==0.21.2
    CUDA_VISIBLE_DEVICES="" PYTHONPATH=/work/ref15/ACE-Step-1.5:/work/peft_overlay OMP_NUM_THREADS=1 \\
        /work/ref15/venv/bin/python tests/golden/make_v15_lora.py

(peft is an official requirement, ``peft>=0.18.0``, that the reference venv lacks.)

Uses the tiny official root of tests/golden/v15/pipeline/tiny/ (make_v15_pipeline.py) through the same handler
stand-in. Writes tests/golden/v15/lora/: ``official_lora/adapter/`` and ``peft_rslora/`` (the adapters),
``tensors.safetensors`` (inputs and official outputs) and ``cases.json``; see tests/golden/v15/lora/README.md.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

torch.set_num_threads(1)
torch.set_float32_matmul_precision("highest")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_v15_pipeline as pipe  # noqa: E402  (the tiny root's handler stand-in and generation cases)
from acestep.training.configs import LoRAConfig  # noqa: E402
from acestep.training.lora_utils import inject_lora_into_dit, save_lora_weights  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_float32_matmul_precision("highest")  # in case an official import changed it

OUT = HERE / "v15" / "lora"
OFFICIAL = OUT / "official_lora"  # save_lora_weights(model, OFFICIAL) writes OFFICIAL / "adapter"
RSLORA = OUT / "peft_rslora"
SEED_LORA, SEED_RSLORA, SEED_INPUTS = 15_0101, 15_0102, 15_0103
GENERATE_CASE = "turbo_text2music"  # make_v15_pipeline's 3 s turbo case, 8 steps
GENERATE_SCALE = 0.5
SUBSET_TARGETS = ["q_proj", "k_proj"]


def randomise_lora(model: torch.nn.Module, seed: int) -> None:
    """Every LoRA matrix redrawn (PEFT starts lora_B at zero, which would hide bugs): A normal / sqrt(in),
    B 0.3 * normal, in sorted-name order."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if "lora_A" in name:
            v = torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5
        elif "lora_B" in name:
            v = 0.3 * torch.randn(p.shape, generator=g)
        else:
            continue
        with torch.no_grad():
            p.copy_(v)


def make_official_lora() -> Path:
    """A LoRA as the official trainer makes one (LoRATrainer: inject_lora_into_dit, then save_lora_weights), with
    r 4 / alpha 8 (UI defaults 8 / 16: the same alpha / r = 2) and the official target modules."""
    model = pipe.make_handler("turbo").model
    config = LoRAConfig(r=4, alpha=8, dropout=0.1)  # dropout: off at inference (eval mode)
    assert config.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    model, info = inject_lora_into_dit(model, config)
    randomise_lora(model.decoder, SEED_LORA)
    if OFFICIAL.exists():
        shutil.rmtree(OFFICIAL)
    path = Path(save_lora_weights(model, str(OFFICIAL)))
    assert path == OFFICIAL / "adapter", path
    print(f"official LoRA: {info['trainable_params']} parameters -> {path}")
    return path


def make_rslora() -> Path:
    """A PEFT adapter beyond the trainer's settings: rank 2, rsLoRA (scale alpha / sqrt(r)), an alpha_pattern, and
    MLP targets too (any PEFT LoRA folder goes through the official load_lora)."""
    model = pipe.make_handler("turbo").model
    config = LoraConfig(
        r=2,
        lora_alpha=3,
        use_rslora=True,
        target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"],
        alpha_pattern={"down_proj": 1.0},
        lora_dropout=0.0,
        bias="none",
    )
    decoder = get_peft_model(model.decoder, config)
    randomise_lora(decoder, SEED_RSLORA)
    if RSLORA.exists():
        shutil.rmtree(RSLORA)
    decoder.save_pretrained(str(RSLORA))
    return RSLORA


def make_inputs() -> dict[str, torch.Tensor]:
    """Decoder inputs: 301 frames (151 patches > 129: the sliding window bites), 20 condition tokens."""
    g = torch.Generator().manual_seed(SEED_INPUTS)
    B, T, D, C = 2, 301, pipe.D, pipe.DIT_CONFIG["hidden_size"]
    return dict(
        hidden_states=torch.randn(B, T, D, generator=g),
        context_latents=torch.randn(B, T, 2 * D, generator=g),
        encoder_hidden_states=torch.randn(B, 20, C, generator=g),
        timestep=torch.tensor([1.0, 0.3]),
    )


def velocity(decoder, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """The official decoder call (as in generate_audio, without the step cache)."""
    with torch.no_grad():
        return decoder(
            hidden_states=x["hidden_states"],
            timestep=x["timestep"],
            timestep_r=x["timestep"],
            attention_mask=torch.ones(x["hidden_states"].shape[:2]),
            encoder_hidden_states=x["encoder_hidden_states"],
            encoder_attention_mask=torch.ones(x["encoder_hidden_states"].shape[:2]),
            context_latents=x["context_latents"],
            use_cache=False,
        )[0].contiguous()


def scalings(decoder, adapter: str = "default") -> list[float]:
    return sorted(
        {
            round(m.scaling[adapter], 9)
            for m in decoder.modules()
            if isinstance(m, LoraLayer) and adapter in m.scaling
        }
    )


def check(message: str, result: str) -> None:
    print(f"{message}: {result}")
    if not result.startswith("✅"):
        raise RuntimeError(f"{message}: {result}")


def main() -> None:
    import torchaudio

    torchaudio.load = pipe.fake_load
    official = make_official_lora()
    rslora = make_rslora()
    x = make_inputs()
    out: dict[str, torch.Tensor] = {f"inputs.{k}": v for k, v in x.items()}
    notes: dict[str, object] = {}

    h = pipe.make_handler("turbo")
    base = velocity(h.model.decoder, x)
    out["base"] = base
    check("load_lora", h.load_lora(str(official)))
    notes["official_adapter_scaling_after_load"] = scalings(h.model.decoder)
    notes["official_adapter_layers"] = sorted(
        n for n, m in h.model.decoder.named_modules() if isinstance(m, LoraLayer)
    )
    out["official.scale1.0"] = velocity(h.model.decoder, x)
    check("set_lora_scale(0.5)", h.set_lora_scale(0.5))
    notes["official_adapter_scaling_at_0.5"] = scalings(h.model.decoder)
    out["official.scale0.5"] = velocity(h.model.decoder, x)
    check("set_lora_scale(1.7)", h.set_lora_scale(1.7))  # clamped to 1
    notes["handler_lora_scale_after_1.7"] = h.lora_scale
    assert torch.equal(velocity(h.model.decoder, x), out["official.scale1.0"])
    check("set_use_lora(False)", h.set_use_lora(False))
    notes["disabled_equals_base"] = bool(torch.equal(velocity(h.model.decoder, x), base))
    check("set_use_lora(True)", h.set_use_lora(True))
    check("unload_lora", h.unload_lora())
    # Official quirk: unload_lora does not take the LoRA off. get_base_model() returns the decoder with PEFT's
    # LoRA layers still injected, and the backup's keys (q_proj.weight) miss their new names
    # (q_proj.base_layer.weight), so load_state_dict(strict=False) restores nothing.
    out["unloaded"] = velocity(h.model.decoder, x)
    notes["unload_decoder_class"] = type(h.model.decoder).__name__
    notes["unload_lora_layers_left"] = sum(isinstance(m, LoraLayer) for m in h.model.decoder.modules())
    notes["unloaded_equals_base_bitwise"] = bool(torch.equal(out["unloaded"], base))
    notes["unloaded_equals_official_scale1.0"] = bool(torch.equal(out["unloaded"], out["official.scale1.0"]))
    # ... and a LoRA loaded after that (the handler's "restore the backup first" branch) lands on top of it
    check("load_lora(rslora) after unload_lora", h.load_lora(str(rslora)))
    out["quirk.rslora_after_unload"] = velocity(h.model.decoder, x)
    notes["rslora_after_unload_decoder_class"] = type(h.model.decoder).__name__

    hr = pipe.make_handler("turbo")  # a fresh handler for a clean rsLoRA reference
    check("load_lora(rslora)", hr.load_lora(str(rslora)))
    notes["rslora_scaling_after_load"] = scalings(hr.model.decoder)
    out["rslora.scale1.0"] = velocity(hr.model.decoder, x)
    check("set_lora_scale(0.5)", hr.set_lora_scale(0.5))
    notes["rslora_scaling_at_0.5"] = scalings(hr.model.decoder)
    out["rslora.scale0.5"] = velocity(hr.model.decoder, x)

    # adapter_config.json naming fewer target_modules than the file holds: PEFT injects only those, and the file's
    # other tensors are left unread
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "subset"
        subset.mkdir()
        shutil.copy(official / "adapter_model.safetensors", subset)
        config = json.loads((official / "adapter_config.json").read_text())
        config["target_modules"] = SUBSET_TARGETS
        (subset / "adapter_config.json").write_text(json.dumps(config))
        hs = pipe.make_handler("turbo")
        check("load_lora(subset)", hs.load_lora(str(subset)))
        out["subset.scale1.0"] = velocity(hs.model.decoder, x)
        notes["subset_lora_layers"] = sum(isinstance(m, LoraLayer) for m in hs.model.decoder.modules())

    # Two adapters at once (the handler holds one; PEFT itself stacks): official 1.0 + rslora 0.5
    h2 = pipe.make_handler("turbo")
    stacked = PeftModel.from_pretrained(h2.model.decoder, str(official), adapter_name="official")
    stacked.load_adapter(str(rslora), adapter_name="rslora")
    stacked.base_model.set_adapter(["official", "rslora"])
    for m in stacked.modules():
        if isinstance(m, LoraLayer):
            m.set_scale("rslora", 0.5)
    stacked.eval()
    out["stack.official1.0_rslora0.5"] = velocity(stacked, x)
    for m in stacked.modules():
        if isinstance(m, LoraLayer):
            m.set_scale("rslora", 1.0)
    both = velocity(stacked, x)
    quirk = out["quirk.rslora_after_unload"]
    notes["rslora_after_unload_rel_l2_to"] = {
        name: float((quirk - ref).norm() / ref.norm())
        for name, ref in (
            ("official1.0+rslora1.0", both),
            ("rslora1.0", out["rslora.scale1.0"]),
            ("official1.0", out["official.scale1.0"]),
        )
    }

    # One whole generation with the LoRA at 0.5 (handler.generate_music through the PEFT decoder)
    variant, kwargs, global_seed = pipe.CASES[GENERATE_CASE]
    h3 = pipe.make_handler(variant)
    check("load_lora", h3.load_lora(str(official)))
    check("set_lora_scale", h3.set_lora_scale(GENERATE_SCALE))
    gen, info = pipe.run_case({variant: h3}, variant, kwargs, global_seed)
    for k in ("noise", "latents", "audio"):
        out[f"generate.{k}"] = gen[k]
    cases = {
        "generate": {
            "case": GENERATE_CASE,
            "variant": variant,
            "global_seed": global_seed,
            "kwargs": kwargs,
            "lora_scale": GENERATE_SCALE,
            "audio_stride": pipe.AUDIO_STRIDE,
            **info,
        },
        "notes": notes,
    }
    save_file(out, str(OUT / "tensors.safetensors"))
    (OUT / "cases.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
    for k, v in out.items():
        if not k.startswith("inputs."):
            rel = ((v - base).norm() / base.norm()).item() if v.shape == base.shape else float("nan")
            print(f"{k:34s} {tuple(v.shape)} rel. change vs base {rel:.3f}")
    print(json.dumps(notes, indent=1)[:3000])


if __name__ == "__main__":
    main()
