"""Reading weights and building models from them.

Models are constructed on the ``meta`` device and then take the file's tensors by assignment, so a 3.5B model
is never materialised twice and ``torch.nn``'s weight init never runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


def read_safetensors(path: str | Path) -> tuple[StateDict, dict[str, str]]:
    """All tensors of a .safetensors file (memory-mapped by safetensors) and its metadata."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = f.metadata() or {}
        return {k: f.get_tensor(k) for k in f.keys()}, metadata


def read_json(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def build(
    model_cls,
    config,
    state_dict: StateDict,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    operations=None,
    ignore_prefixes: tuple[str, ...] = (),
    name: str | None = None,
) -> torch.nn.Module:
    """``model_cls(config, dtype=, device=, operations=)`` built on meta and filled from ``state_dict``.

    Floating tensors are cast to ``dtype`` (kept as stored when None). Keys under ``ignore_prefixes`` (training-only
    parts) are dropped with a log line; any other missing or unexpected key is an error, never a silent mis-load.
    """
    name = name or model_cls.__name__
    with torch.device("meta"):
        model = model_cls(config, dtype=dtype, operations=operations)
    skipped = [k for k in state_dict if k.startswith(ignore_prefixes)] if ignore_prefixes else []
    if skipped:
        log.info("%s: skipping %d training-only tensors (%s)", name, len(skipped), ", ".join(ignore_prefixes))
    sd = {}
    for k, v in state_dict.items():
        if ignore_prefixes and k.startswith(ignore_prefixes):
            continue
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        sd[k] = v.to(device)
    result = model.load_state_dict(sd, strict=False, assign=True)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} tensors (e.g. {result.missing_keys[:5]})")
    if result.unexpected_keys:
        problems.append(f"unexpected {len(result.unexpected_keys)} tensors (e.g. {result.unexpected_keys[:5]})")
    if problems:
        raise ValueError(f"{name}: the weights do not fit this architecture: " + "; ".join(problems))
    still_meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if still_meta:
        raise RuntimeError(f"{name}: tensors left uninitialised after loading: {still_meta[:5]}")
    return model.eval().requires_grad_(False)
