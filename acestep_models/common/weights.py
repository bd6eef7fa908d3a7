"""Reading weight files and building models from them, for every model generation.

Models are constructed on the ``meta`` device and then take the file's tensors by assignment, so a 3.5B model
is never materialised twice and ``torch.nn``'s weight init never runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from . import ops

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]


class WeightsError(ValueError):
    """A weights file that cannot be read: the message says what the file is and what was expected."""


def unreadable(path: str | Path, error: Exception | None = None) -> WeightsError:
    """Why ``path`` is not a readable .safetensors file, in words (truncated, empty, another format), instead of
    the reader's "Error while deserializing header"."""
    from .sniff import describe

    p = Path(path)
    size = p.stat().st_size if p.is_file() else 0
    with open(p, "rb") as f:
        head = f.read(9)
    if size < 8:
        reason = "it is empty (0 bytes)" if size == 0 else f"it is only {size} bytes long"
    elif head[8:9] == b"{":  # an 8-byte header length, then the JSON header: a safetensors file
        reason = _damage(p, size, int.from_bytes(head[:8], "little"), error)
    else:
        reason = f"it is not a safetensors file but {describe(p)}"
    return WeightsError(
        f"cannot read {p.name}: {reason}. A .safetensors weights file was expected; an interrupted download or "
        "copy is the usual cause: download or copy it again"
    )


def _damage(path: Path, size: int, header_len: int, error: Exception | None) -> str:
    if 8 + header_len > size:
        return f"it is truncated (its header alone needs {8 + header_len} bytes, the file has {size})"
    try:
        with open(path, "rb") as f:
            f.seek(8)
            header = json.loads(f.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        return "its header is damaged (not the JSON a safetensors file starts with)"
    if 8 + header_len + end > size:
        return f"it is truncated (its tensors need {8 + header_len + end} bytes, the file has {size})"
    return f"it is damaged ({error})" if error is not None else "it is damaged"


@contextlib.contextmanager
def _opened(path: str | Path):
    """``safe_open`` with its errors on broken files (truncated, empty, not safetensors) said in words."""
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except SafetensorError as e:
        raise unreadable(path, e) from None
    with handle as f:
        try:
            yield f
        except SafetensorError as e:
            raise unreadable(path, e) from None


def read_safetensors(path: str | Path, prefix: str = "") -> tuple[StateDict, dict[str, str]]:
    """The tensors of a .safetensors file under ``prefix`` (prefix stripped) and the file's metadata.

    Only the tensors asked for are read, so taking one part out of a 7 GB all-in-one file costs that part alone.
    A broken file (truncated, empty, another format) is a ``WeightsError`` saying so.
    """
    with _opened(path) as f:
        metadata = f.metadata() or {}
        return {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}, metadata


def safetensors_keys(path: str | Path) -> list[str]:
    with _opened(path) as f:
        return list(f.keys())


def host_comfy_dir() -> Path | None:
    """The host ComfyUI's ``comfy`` package folder (it ships tokenizer files), when ComfyUI is importable."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("comfy")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def read_tensor(path: str | Path, key: str) -> torch.Tensor:
    with _opened(path) as f:
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


# --- Where each part lives: one Layout per model generation ------------------------------------------------------
#
# Users have a generation's parts in its official Hugging Face folder (a root holding one folder per part, or the
# part's own folder), in ComfyUI's all-in-one checkpoint, or one file per part, with or without prefixes. A part is
# found by a key only it has (its "signature"); whatever stands before that key is the part's prefix.

# Metadata key under which our own (e.g. tiny test) single files carry a part's official config.json, for the
# sizes that tensor shapes cannot tell (attention head size). Real full-size files need none.
CONFIG_METADATA = "acestep.config.{part}"


@dataclass
class PartSource:
    """One part's weights, with its prefix stripped, and its config when the files carry one."""

    part: str
    state_dict: StateDict
    config: dict | None
    origin: str
    extras: dict = field(default_factory=dict)  # e.g. the folder the weights came from ("dir")
    keys: list[str] = field(default_factory=list)  # every key of the file it came from


@dataclass(frozen=True)
class Layout:
    """How one model generation's parts are stored: ``dirs`` (folder names or glob patterns inside an official
    root), ``weights`` (the official weights file in a part folder), ``signatures`` (keys only that part has);
    ``choose`` picks among several prefixes holding a signature (e.g. the text encoder beside an LM), ``convert``
    turns other layouts' key names into the official module tree."""

    generation: str
    dirs: dict[str, tuple[str, ...]]
    weights: dict[str, str]
    signatures: dict[str, tuple[str, ...]]
    choose: Callable[[str, list[str], Path], str | None] | None = None
    convert: Callable[[str, StateDict], StateDict] | None = None

    def find_prefix(self, keys: list[str], part: str, path: Path | None = None) -> str | None:
        found = sorted(
            {
                k[: -len(sig)]
                for sig in self.signatures[part]
                for k in keys
                if k == sig or k.endswith("." + sig)
            }
        )
        if len(found) > 1 and self.choose is not None:
            return self.choose(part, found, path)
        return found[0] if found else None

    def part_dir(self, d: Path, part: str) -> Path:
        """The part's folder inside an official root ``d`` (``d`` itself when it is the part's folder)."""
        for pattern in self.dirs[part]:
            hits = sorted(p for p in d.glob(pattern) if p.is_dir())
            if len(hits) > 1:
                raise ValueError(
                    f"{part}: {d} holds several {self.generation} {part} folders ({', '.join(h.name for h in hits)}); "
                    "give the folder of the one you want"
                )
            if hits:
                return hits[0]
        return d

    def weights_in_dir(self, d: Path, part: str) -> Path:
        official = d / self.weights[part]
        if official.is_file():
            return official
        files = sorted(d.glob("*.safetensors"))
        if len(files) == 1:
            return files[0]
        raise FileNotFoundError(
            f"{part}: expected {self.weights[part]} in {d} (found {[f.name for f in files] or 'no .safetensors'})"
        )


LAYOUTS: list[Layout] = []  # every generation's layout, registered by its checkpoint module
GENERATION_MODULES = (
    "v1.checkpoint",
    "v15.checkpoint",
)  # (under acestep_models) the modules that register one


def register(layout: Layout) -> Layout:
    LAYOUTS[:] = [x for x in LAYOUTS if x.generation != layout.generation] + [layout]
    return layout


def layouts() -> list[Layout]:
    """Every generation's layout (imports the generations' checkpoint modules on first use)."""
    import importlib

    package = __name__.rsplit(".", 2)[0]
    for module in GENERATION_MODULES:
        importlib.import_module(f"{package}.{module}")
    return LAYOUTS


def holdings(keys: list[str], path: Path | None = None, own: str | None = None) -> list[str]:
    """What a file holds: every registered layout's part whose signature it has, named '<generation> <part>'
    (just '<part>' for the generation ``own``)."""
    return [
        part if lay.generation == own else f"{lay.generation} {part}"
        for lay in layouts()
        for part in lay.signatures
        if lay.find_prefix(keys, part, path) is not None
    ]


def _metadata_config(meta: dict[str, str], part: str) -> dict | None:
    raw = meta.get(CONFIG_METADATA.format(part=part))
    return json.loads(raw) if raw else None


def locate(path: str | Path, part: str, layout: Layout) -> PartSource:
    """Read ``part`` from an official folder (root or the part's own folder) or from a single .safetensors file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{part}: no such file or folder: {p}")
    if p.is_dir():
        d = layout.part_dir(p, part)
        weights = layout.weights_in_dir(d, part)
        config = read_json(d / "config.json") if (d / "config.json").is_file() else None
        file, extras = weights, {"dir": d}
    elif p.suffix.lower() != ".safetensors":
        raise ValueError(
            f"{part}: {p.name} is not a .safetensors file; give the official model folder or a .safetensors file "
            "(pickled .ckpt/.bin/.pt files are not loaded, for safety)"
        )
    else:
        file, config, extras = p, None, {"dir": p.parent}
    keys = safetensors_keys(file)
    prefix = layout.find_prefix(keys, part, file)
    if prefix is None:
        found = holdings(keys, file, own=layout.generation)
        raise ValueError(
            f"{part}: {file.name} holds no {part} weights"
            + (f" (it holds: {', '.join(found)})" if found else " (it is not an ACE-Step file)")
        )
    sd, meta = read_safetensors(file, prefix)
    if layout.convert is not None:
        sd = layout.convert(part, sd)
    return PartSource(part, sd, config or _metadata_config(meta, part), str(file), extras, keys)


def generations_in(path: str | Path) -> list[str]:
    """The registered generations whose parts ``path`` (an official folder, a part folder or a .safetensors file)
    holds, in registration order."""
    p = Path(path)
    found = []
    for lay in layouts():
        for part in lay.signatures:
            try:
                if p.is_dir():
                    d = lay.part_dir(p, part)
                    file = lay.weights_in_dir(d, part)
                else:
                    file = p
                if lay.find_prefix(safetensors_keys(file), part, file) is not None:
                    found.append(lay.generation)
                    break
            except WeightsError:  # a broken file is not "no weights of this generation": say what is wrong
                raise
            except (OSError, ValueError):
                continue
    return found
