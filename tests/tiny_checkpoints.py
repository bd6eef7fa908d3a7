"""Tiny random-weight checkpoints in every layout users have, built from the official-layout folder in
tests/golden/tiny/ (written by the official classes, see tests/golden/*/README.md).

The conversions here are the inverse of what the loader does at its edge: they write files the way ComfyUI writes
them (prefixes, torch's newer weight-norm names, the sentencepiece model as a uint8 tensor), so the tests load them
through exactly the code a user's file takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from acestep_models.common.weights import CONFIG_METADATA, read_json, read_safetensors
from acestep_models.v1.checkpoint import OFFICIAL_DIRS, OFFICIAL_WEIGHTS

TINY = Path(__file__).resolve().parent / "golden" / "tiny"
TINY_SPIECE = Path(__file__).resolve().parent / "golden" / "text_encoder" / "spiece.model"

# ComfyUI's prefixes in its all-in-one file (see tests/golden/comfyui_all_in_one_keys.json)
COMFY_PREFIX = {
    "dit": "model.diffusion_model.",
    "dcae": "vae.dcae.",
    "vocoder": "vae.vocoder.",
    "text_encoder": "text_encoders.umt5base.transformer.",
}


def official_part(part: str) -> tuple[dict[str, torch.Tensor], dict]:
    folder = TINY / OFFICIAL_DIRS[part]
    sd, _ = read_safetensors(folder / OFFICIAL_WEIGHTS[part])
    return sd, read_json(folder / "config.json")


def comfy_names(part: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official names -> ComfyUI's: its vocoder classes use torch's parametrized weight norm."""
    if part != "vocoder":
        return dict(sd)
    out = {}
    for k, v in sd.items():
        k = k.replace(".weight_g", ".parametrizations.weight.original0").replace(
            ".weight_v", ".parametrizations.weight.original1"
        )
        out[k] = v
    return out


def _spiece_tensor() -> torch.Tensor:
    return torch.frombuffer(bytearray(TINY_SPIECE.read_bytes()), dtype=torch.uint8)


def _metadata(parts) -> dict[str, str]:
    # Sizes that shapes cannot tell travel in the file's metadata (real full-size files need none).
    return {CONFIG_METADATA.format(part=p): json.dumps(official_part(p)[1]) for p in parts}


def write_all_in_one(path: Path, parts=("dit", "dcae", "vocoder", "text_encoder")) -> Path:
    """ComfyUI's ace_step_v1_3.5b.safetensors layout."""
    sd = {}
    for part in parts:
        for k, v in comfy_names(part, official_part(part)[0]).items():
            sd[COMFY_PREFIX[part] + k] = v.contiguous()
    if "text_encoder" in parts:
        sd["text_encoders.umt5base.spiece_model"] = _spiece_tensor()
        sd["text_encoders.umt5base.logit_scale"] = torch.tensor(4.6052)
    save_file(sd, str(path), metadata=_metadata(parts))
    return path


def write_split(folder: Path) -> dict[str, Path]:
    """One file per part as ComfyUI users keep them: diffusion_models/, vae/ (dcae. + vocoder.), text_encoders/."""
    paths = {
        "dit": folder / "diffusion_models" / "ace_step_dit.safetensors",
        "vae": folder / "vae" / "ace_step_vae.safetensors",
        "text_encoder": folder / "text_encoders" / "umt5_base.safetensors",
    }
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in official_part("dit")[0].items()}, str(paths["dit"]), _metadata(["dit"])
    )
    vae = {}
    for part in ("dcae", "vocoder"):
        vae.update(
            {f"{part}.{k}": v.contiguous() for k, v in comfy_names(part, official_part(part)[0]).items()}
        )
    save_file(vae, str(paths["vae"]), _metadata(["dcae", "vocoder"]))
    te = {k: v.contiguous() for k, v in official_part("text_encoder")[0].items()}
    te["spiece_model"] = _spiece_tensor()
    save_file(te, str(paths["text_encoder"]), _metadata(["text_encoder"]))
    return paths
