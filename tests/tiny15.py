"""A coherent tiny ACE-Step 1.5 checkpoint set in the official root layout (``acestep-v15-turbo/``, ``vae/``,
``Qwen3-Embedding-0.6B/``), for tests that run the parts together (the CLI's check, generation).

The parity goldens in tests/golden/v15/tiny/ were made per part by the official code, at sizes that do not fit
together (each part's own tiny widths). Here the VAE and the text encoder are those official tiny folders, and the
DiT is a seeded random-weight model built by our class at the widths they give (latent width from the VAE, text
width from the text encoder), saved as the official folder would hold it, with a ``silence_latent.pt``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from acestep_models.common.weights import read_json
from acestep_models.v15.model import AceStep15Config, AceStepConditionGenerationModel

GOLDEN_TINY = Path(__file__).resolve().parent / "golden" / "v15" / "tiny"


def write_official_root(root: Path, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for part in ("vae", "Qwen3-Embedding-0.6B"):
        shutil.copytree(GOLDEN_TINY / part, root / part, dirs_exist_ok=True)
    d = read_json(root / "vae" / "config.json")["decoder_input_channels"]
    text = read_json(root / "Qwen3-Embedding-0.6B" / "config.json")["hidden_size"]
    base = read_json(GOLDEN_TINY / "acestep-v15-turbo" / "config.json")
    config = AceStep15Config.from_official(
        {
            **base,
            "audio_acoustic_hidden_dim": d,
            "in_channels": 3 * d,
            "timbre_hidden_dim": d,
            "text_hidden_dim": text,
        }
    )
    torch.manual_seed(seed)
    model = AceStepConditionGenerationModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(
                1 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.2 * torch.randn_like(p)
            )
    folder = root / "acestep-v15-turbo"
    folder.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({**base, **dataclasses.asdict(config)}, indent=2))
    torch.save(0.5 * torch.randn(1, d, 800), folder / "silence_latent.pt")  # official file: [1, D, T]
    return root
