"""Golden fixtures for ACE-Step LoRAs, produced by the OFFICIAL trainer and pipeline code paths.

    ACESTEP_REF=/work/ref/ACE-Step CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 \
        /work/venvs/ref/bin/python tests/golden/make_lora.py

Writes
- tests/golden/lora/tiny_lora/pytorch_lora_weights.safetensors: a rank-4 LoRA for the tiny DiT
  (tests/golden/tiny/ace_step_transformer), made as the official ``trainer.py`` makes one: ``LoraConfig`` from the
  official ``config/zh_rap_lora_config.json`` (its target modules and ``use_rslora``, rank and alpha made small),
  ``add_adapter`` on the DiT, then ``save_lora_adapter`` (diffusers 0.33.1). Every LoRA matrix is redrawn from a
  seeded generator (PEFT initialises lora_B to zero, which would hide bugs).
- tests/golden/lora/lora_adapter_metadata.json: the adapter's ``LoraConfig`` as diffusers >= 0.34 embeds it in
  the safetensors metadata (key ``lora_adapter_metadata``) when it saves a LoRA;
- tests/golden/lora/outputs.safetensors: the tiny DiT on tests/golden/dit/inputs.safetensors with the LoRA applied
  by the official ``ACEStepPipeline.load_lora`` (called on a stand-in pipeline object) at weights 1.0 and 0.5, in
  float32 and (weight 1.0) bfloat16; and with the metadata-carrying file loaded the way diffusers >= 0.34 loads it
  (``LoraConfig(**metadata)`` injected by PEFT).

``--live FOLDER INPUTS DEST`` only runs the official pipeline path on a LoRA folder (for the live parity test).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

REF = os.environ.get("ACESTEP_REF")
if not REF:
    sys.exit(
        "make_lora.py: set ACESTEP_REF to a checkout of the official ACE-Step repository (commit d612523)"
    )
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_dit  # noqa: E402  (puts ACESTEP_REF on sys.path, one thread)
import torch  # noqa: E402
from acestep.pipeline_ace_step import ACEStepPipeline  # noqa: E402
from diffusers.utils.peft_utils import set_weights_and_activate_adapters  # noqa: E402
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

torch.set_float32_matmul_precision("highest")  # importing the official pipeline sets "high"

TINY_DIR = HERE / "tiny" / "ace_step_transformer"
OUT_DIR = HERE / "lora"
LORA_DIR = OUT_DIR / "tiny_lora"
SEED_LORA = 4321
WEIGHTS = (1.0, 0.5)
TINY_RANK, TINY_ALPHA = 4, 3  # official zh_rap_lora_config.json: r 256, lora_alpha 32 (and use_rslora true)
LORA_B_STD = 0.1  # the LoRA changes each patched weight by ~0.2 of its size at scale 1
TRAINER_ADAPTER = "lora_adapter"  # trainer.py Pipeline(adapter_name=...) default
KEPT = ("output", "encoder_hidden_states", "output_erg")  # of make_dit.run_official's outputs


def trainer_lora_config() -> LoraConfig:
    official = json.loads((Path(REF) / "config" / "zh_rap_lora_config.json").read_text())
    return LoraConfig(**{**official, "r": TINY_RANK, "lora_alpha": TINY_ALPHA})


def randomise_lora(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if ".lora_A." in name:  # [r, in]
            v = torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5
        elif ".lora_B." in name:  # [out, r]
            v = LORA_B_STD * torch.randn(p.shape, generator=g)
        else:
            continue
        with torch.no_grad():
            p.copy_(v)


def make_lora() -> dict:
    """Train-side: add the adapter as trainer.py does, randomise it, save it as trainer.on_save_checkpoint does."""
    model = make_dit.load_official(TINY_DIR)
    config = trainer_lora_config()
    model.add_adapter(adapter_config=config, adapter_name=TRAINER_ADAPTER)
    randomise_lora(model, SEED_LORA)
    LORA_DIR.mkdir(parents=True, exist_ok=True)
    model.save_lora_adapter(str(LORA_DIR), adapter_name=TRAINER_ADAPTER)
    # what diffusers >= 0.34 adds to the file's metadata (peft_config.to_dict(), sets as lists)
    meta = config.to_dict()
    return {k: sorted(v) if isinstance(v, set) else v for k, v in meta.items()}


def pipeline_stand_in(model: torch.nn.Module) -> SimpleNamespace:
    """The attributes ``ACEStepPipeline.load_lora`` reads, around an official DiT."""
    return SimpleNamespace(ace_step_transformer=model, lora_path="none", lora_weight=1, checkpoint_dir=None)


def run(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = make_dit.run_official(model, inputs)
    return {k: out[k] for k in KEPT}


def official_pipeline_outputs(folder: Path, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official ``ACEStepPipeline.load_lora`` at each weight, then "none"; outputs keyed ``{name}_w{weight}``."""
    model = make_dit.load_official(TINY_DIR)
    base = run(model, inputs)
    pipe = pipeline_stand_in(model)
    outputs = {}
    for w in WEIGHTS:  # a new weight for the same LoRA: the official code unloads and loads it again
        ACEStepPipeline.load_lora(pipe, str(folder), w)
        outputs.update({f"{k}_w{w}": v for k, v in run(model, inputs).items()})
    ACEStepPipeline.load_lora(pipe, "none", 1.0)
    unloaded = run(model, inputs)
    assert all(torch.equal(unloaded[k], base[k]) for k in base), "unload did not restore the base model"
    return outputs


def peft_metadata_outputs(
    folder: Path, meta: dict, inputs: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """diffusers >= 0.34 ``load_lora_adapter`` on a file with ``lora_adapter_metadata``: LoraConfig(**metadata)."""
    model = make_dit.load_official(TINY_DIR)
    config = LoraConfig(**meta)
    inject_adapter_in_model(config, model, adapter_name="ace_step_lora")
    result = set_peft_model_state_dict(
        model, load_file(str(folder / "pytorch_lora_weights.safetensors")), "ace_step_lora"
    )
    assert not [k for k in result.unexpected_keys if "lora_" in k], result.unexpected_keys
    set_weights_and_activate_adapters(model, ["ace_step_lora"], [1.0])
    return {f"{k}_metadata_w1.0": v for k, v in run(model, inputs).items()}


def main() -> None:
    meta = make_lora()
    (OUT_DIR / "lora_adapter_metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    inputs = load_file(str(HERE / "dit" / "inputs.safetensors"))
    outputs = official_pipeline_outputs(LORA_DIR, inputs)
    outputs.update(peft_metadata_outputs(LORA_DIR, meta, inputs))

    # bf16 weights with the LoRA loaded on top, as the pipeline does on GPU
    model = make_dit.load_official(TINY_DIR).to(torch.bfloat16)
    ACEStepPipeline.load_lora(pipeline_stand_in(model), str(LORA_DIR), 1.0)
    outputs["bf16_output_w1.0"] = make_dit.run_official(model, make_dit.to_bf16(inputs))["output"]

    base = load_file(str(HERE / "dit" / "outputs.safetensors"))["output"]
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(OUT_DIR / "outputs.safetensors"))
    for k, v in outputs.items():
        change = f"{((v.float() - base).norm() / base.norm()).item():.3g}" if v.shape == base.shape else "-"
        print(f"{k:36s} {tuple(v.shape)} rms {v.float().pow(2).mean().sqrt():.4g}, vs no LoRA {change}")


def live(folder: Path, inputs: Path, dest: Path) -> None:
    save_file(official_pipeline_outputs(folder, load_file(str(inputs))), str(dest))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--live", nargs=3, metavar=("FOLDER", "INPUTS", "DEST"), help="run official code only")
    args = ap.parse_args()
    if args.live:
        live(*map(Path, args.live))
    else:
        main()
