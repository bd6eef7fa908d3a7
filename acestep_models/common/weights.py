"""Reading weight files and building models from them, for every model generation.

Models are constructed on the ``meta`` device and then take the file's tensors by assignment, so a 3.5B model
is never materialised twice and ``torch.nn``'s weight init never runs.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors import safe_open

from . import ops

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


def read_safetensors(path: str | Path, prefix: str = "") -> tuple[StateDict, dict[str, str]]:
    """The tensors of a .safetensors file under ``prefix`` (prefix stripped) and the file's metadata.

    Only the tensors asked for are read, so taking one part out of a 7 GB all-in-one file costs that part alone.
    """
    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = f.metadata() or {}
        return {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}, metadata


def safetensors_keys(path: str | Path) -> list[str]:
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return list(f.keys())


def read_tensor(path: str | Path, key: str) -> torch.Tensor:
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return f.get_tensor(key)


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
    ignore: str | None = None,
    name: str | None = None,
    weight_dtype: torch.dtype | None = None,
) -> torch.nn.Module:
    """``model_cls(config, dtype=, device=, operations=)`` built on meta and filled from ``state_dict``.

    Floating tensors are cast to ``dtype`` (kept as stored when None). ``weight_dtype`` (float8) stores the matrix
    weights narrower than ``dtype``; ``operations`` must then cast per call (default ``ops.cast``). Keys matching the regex ``ignore`` (training-only
    or never-read official tensors) are dropped with a log line; any other missing or unexpected key is an error,
    never a silent mis-load.
    """
    name = name or model_cls.__name__
    if weight_dtype is not None and operations is None:
        operations = ops.cast
    with torch.device("meta"):
        model = model_cls(config, dtype=dtype, operations=operations)
    narrow = ops.narrow_weight_keys(model) if weight_dtype is not None else set()
    skip = re.compile(ignore).match if ignore else (lambda _k: False)
    skipped = [k for k in state_dict if skip(k)]
    if skipped:
        log.info("%s: skipping %d tensors the model never reads (%s)", name, len(skipped), ignore)
    sd = {}
    for k, v in state_dict.items():
        if skip(k):
            continue
        if k in narrow:
            v = ops.to_storage(v, weight_dtype)
        elif dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        sd[k] = v.to(device)
    result = model.load_state_dict(sd, strict=False, assign=True)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} tensors (e.g. {result.missing_keys[:5]})")
    if result.unexpected_keys:
        problems.append(
            f"unexpected {len(result.unexpected_keys)} tensors (e.g. {result.unexpected_keys[:5]})"
        )
    if problems:
        raise ValueError(f"{name}: the weights do not fit this architecture: " + "; ".join(problems))
    still_meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if still_meta:
        raise RuntimeError(f"{name}: tensors left uninitialised after loading: {still_meta[:5]}")
    return model.eval().requires_grad_(False)
