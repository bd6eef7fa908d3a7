"""LoRA files and merging, for every model generation: reading PEFT / diffusers / kohya LoRA files and merging
``scale * B @ A`` into a model's weights, removable bit for bit.

Each generation resolves a LoRA's module names to its own model (``v1/lora.py``); everything else is here. The
scale rules (diffusers 0.33's, PEFT's alpha / r or rsLoRA, kohya ``.alpha`` tensors) are described in
``v1/lora.py``, whose official pipeline decides them.

A layer's patch is a LoRA's ``(up, down, scale)`` or a LoKr's ``Kron`` (LyCORIS Kronecker factors; the 1.5 loader
reads those, see ``v15/lora.py``); ``patch_delta`` makes either one's weight delta.

Merging computes in float32 with one rounding to the weight's dtype, so inference costs nothing extra; the
original tensors of the patched weights are kept (on the CPU) and put back bit for bit by ``remove_lora``.
``merge_loras`` merges a stack of LoRAs the same way: every patched weight is recomputed from its original as
``original + sum of the stack's deltas`` (float32, one rounding), so a stack depends only on its members and their
order, never on what was merged before.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import ops
from .weights import read_json, read_safetensors

log = logging.getLogger(__name__)

# diffusers LORA_WEIGHT_NAME_SAFE: the one file the official pipeline reads from a LoRA folder
OFFICIAL_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
PEFT_WEIGHT_NAME = "adapter_model.safetensors"  # PEFT save_pretrained
PEFT_CONFIG_NAME = "adapter_config.json"
METADATA_KEY = "lora_adapter_metadata"  # diffusers >= 0.34 LORA_ADAPTER_METADATA_KEY
NONE = "none"  # the official pipeline's "no LoRA" value
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.")
KOHYA_PREFIX = "lora_unet_"
_APPLIED = "_acestep_lora"  # attribute on the DiT holding the applied LoRA and the original weights

_KEY = re.compile(
    r"(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_down|lora_up|lora\.down|lora\.up)(?:\.[\w-]+)?\.weight$"
)
_DOWN = {"lora_A", "lora_down", "lora.down"}
_UNSUPPORTED = re.compile(
    r".*(lora_magnitude_vector|dora_scale|lora_B\.bias|lora_up\.bias|lora_embedding_|\.lokr_|\.hada_|\.diff(_b)?$|"
    r"\.w_norm$|\.b_norm$|\.set_weight$)"
)


@dataclass(eq=False)
class Kron:
    """A LoKr layer (LyCORIS ``LokrModule``): the weight delta is ``scale * kron(w1, w2)``, reshaped as the weight.

    Each half is whole or a low-rank pair, as LyCORIS stores them: ``w1`` [a, c] or ``w1_a @ w1_b`` ([a, r] @
    [r, c]); ``w2`` [b, d, *k] or ``w2_a @ w2_b`` ([b, r] @ [r, d * prod(k)], ``w2_b`` flat or [r, d, *k]) or, with
    ``t2`` [r, r, *k] (Tucker), ``einsum("i j ..., i p, j r -> p r ...", t2, w2_a, w2_b)`` (``w2_a`` [r, b], ``w2_b``
    [r, d]). The weight is [a * b, c * d, *k]."""

    scale: float  # the factor at adapter weight 1 (LyCORIS: alpha / dim, or 1 without a low-rank pair)
    w1: torch.Tensor | None = None
    w1_a: torch.Tensor | None = None
    w1_b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2_a: torch.Tensor | None = None
    w2_b: torch.Tensor | None = None
    t2: torch.Tensor | None = None

    def halves(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(w1 [a, c], w2 [b, d * prod(k)]), each rebuilt from its pair, in float32 on ``device``."""

        def f32(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, torch.float32)

        w1 = f32(self.w1) if self.w1 is not None else f32(self.w1_a) @ f32(self.w1_b)
        if self.w2 is not None:
            w2 = f32(self.w2).flatten(1)
        elif self.t2 is not None:  # lycoris.functional.general.rebuild_tucker
            w2 = torch.einsum("i j ..., i p, j r -> p r ...", f32(self.t2), f32(self.w2_a), f32(self.w2_b))
            w2 = w2.flatten(1)
        else:
            w2 = f32(self.w2_a) @ f32(self.w2_b).flatten(1)
        return w1, w2

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the weight it makes: [a * b, c * d, *k] (a convolution whose flat ``w2_b`` hides its kernel:
        [a * b, c * d * prod(k)])."""
        a, c = (self.w1.shape if self.w1 is not None else (self.w1_a.shape[0], self.w1_b.shape[1]))[:2]
        if self.w2 is not None:
            b, d, *k = self.w2.shape
        elif self.t2 is not None:
            b, d, k = self.w2_a.shape[1], self.w2_b.shape[1], self.t2.shape[2:]
        else:
            b, (d, *k) = self.w2_a.shape[0], self.w2_b.shape[1:]
        return (a * b, c * d, *k)

    @property
    def dims(self) -> tuple[int, int]:
        """(out, in * prod(k)): the rows and the row size of the weight it makes."""
        out, *row = self.shape
        return out, math.prod(row)

    def __repr__(self) -> str:
        parts = [f"{k}{list(t.shape)}" for k, t in vars(self).items() if isinstance(t, torch.Tensor)]
        return f"Kron(scale={self.scale:g}, {', '.join(parts)})"


# a layer's patch: a LoRA's (up [out, r], down [r, in], scale), or a LoKr
Patch = tuple[torch.Tensor, torch.Tensor, float] | Kron


@dataclass
class LoRA:
    """A LoRA (or LoKr), its modules resolved to the model's (official) state-dict keys."""

    name: str
    # weight key -> (up [out, r], down [r, in], scale at adapter weight 1), or a Kron (LoKr)
    patches: dict[str, Patch]
    scale_source: str = "none (official: scale = weight)"
    skipped: list[str] = field(default_factory=list)  # modules the official forward never reads

    @property
    def is_lokr(self) -> bool:
        return any(isinstance(p, Kron) for p in self.patches.values())

    def __repr__(self) -> str:
        if self.is_lokr:
            return f"LoRA({self.name!r}: {len(self.patches)} LoKr layers, alpha: {self.scale_source})"
        ranks = sorted({up.shape[1] for up, _, _ in self.patches.values()})
        return f"LoRA({self.name!r}: {len(self.patches)} layers, rank {ranks}, alpha: {self.scale_source})"


@dataclass
class _Applied:
    stack: list[tuple[LoRA, float]]  # the merged LoRAs and their weights, in merge order
    originals: dict[str, torch.Tensor]  # weight key -> the tensor as it was (CPU copy)


# --- reading ------------------------------------------------------------------------------------------------------


def _weights_file(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"LoRA not found: {path}. Official LoRAs are Hugging Face folders (e.g. "
            f"ACE-Step/ACE-Step-v1-chinese-rap-LoRA): download one and give the folder or its {OFFICIAL_WEIGHT_NAME}."
        )
    if path.is_dir():
        for name in (OFFICIAL_WEIGHT_NAME, PEFT_WEIGHT_NAME):
            if (path / name).is_file():
                return path / name
        found = sorted(p.name for p in path.glob("*.safetensors"))
        if len(found) == 1:
            return path / found[0]
        raise FileNotFoundError(
            f"No LoRA weights in folder {path}: expected {OFFICIAL_WEIGHT_NAME} (official layout) or "
            f"{PEFT_WEIGHT_NAME}; found {found or 'no .safetensors file'}."
        )
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path}: a LoRA must be a .safetensors file (pickled .bin/.ckpt files are not loaded)."
        )
    return path


def strip_prefix(name: str) -> str:
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _peft_scales(config: dict, modules: dict[str, int], origin: str) -> dict[str, float]:
    """PEFT's per-module scaling (LoraLayer.update_layer / set_scale) for a LoraConfig dict."""
    alpha, rslora = float(config.get("lora_alpha", 8)), bool(config.get("use_rslora", False))
    patterns = config.get("alpha_pattern") or {}
    scales = {}
    for module, r in modules.items():
        a = alpha
        for pat, value in patterns.items():  # peft.utils.other.get_pattern_key
            if re.match(rf"(.*\.)?({pat})$", module) or (pat.startswith("^") and re.match(pat, module)):
                a = float(value)
                break
        scales[module] = a / (math.sqrt(r) if rslora else r)
    log.info("LoRA scale from %s: lora_alpha %s, use_rslora %s", origin, alpha, rslora)
    return scales


def read_lora(path: str | Path, module_of: Callable[[str], str | None], ignored: str, model: str) -> LoRA:
    """A LoRA from a folder (official: ``pytorch_lora_weights.safetensors``) or a single .safetensors file, its
    layers resolved to ``model``'s weight keys by ``module_of`` (a LoRA module name, prefix stripped, -> the model's
    module path, or None); layers whose weight key matches ``ignored`` (never read by the forward) are skipped."""
    path = Path(path)
    file = _weights_file(path)
    sd, metadata = read_safetensors(file)
    name = file.parent.name if file.name in (OFFICIAL_WEIGHT_NAME, PEFT_WEIGHT_NAME) else file.stem

    if any(k.endswith("genre_embedder.weight") for k in sd):  # the ACE-Step v1 DiT's own tensor
        raise ValueError(f"{file} is an ACE-Step model checkpoint, not a LoRA.")
    unsupported = [k for k in sd if _UNSUPPORTED.match(k)]
    if unsupported:
        raise ValueError(
            f"{file}: unsupported LoRA tensors (DoRA, LoRA biases, LoKr/LoHa or full diffs), "
            f"e.g. {unsupported[:3]}; only plain LoRA (up/down matrices, optional alpha) is supported."
        )
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    alphas: dict[str, float] = {}
    other = []
    for k, v in sd.items():
        m = _KEY.match(k)
        if m:
            pairs.setdefault(m["module"], {})["down" if m["kind"] in _DOWN else "up"] = v
        elif k.endswith(".alpha") and v.numel() == 1:
            alphas[k[: -len(".alpha")]] = float(v)
        else:
            other.append(k)
    if not pairs:
        raise ValueError(
            f"{file} holds no LoRA tensors (keys like transformer_blocks.0.attn.to_q.lora_A.weight); "
            f"first keys: {list(sd)[:3]}"
        )
    if other:
        raise ValueError(f"{file}: {len(other)} tensors are not LoRA up/down/alpha tensors, e.g. {other[:3]}")

    modules, skipped, unknown = {}, [], []
    for raw, pair in pairs.items():
        if set(pair) != {"up", "down"}:
            raise ValueError(f"{file}: module {raw} has only its {'/'.join(pair)} matrix")
        up, down = pair["up"], pair["down"]
        if up.ndim < 2 or down.ndim < 2 or up.shape[1] != down.shape[0]:
            raise ValueError(f"{file}: {raw}: up {tuple(up.shape)} and down {tuple(down.shape)} do not chain")
        module = module_of(raw)
        if module is None:
            (skipped if re.match(ignored, strip_prefix(raw) + ".weight") else unknown).append(raw)
            continue
        if module in modules:
            raise ValueError(f"{file}: two LoRAs for the same layer {module}")
        modules[module] = (raw, up, down)
    if unknown:
        raise ValueError(
            f"{file}: {len(unknown)} of {len(pairs)} LoRA layers match no {model} layer, e.g. "
            f"{sorted(unknown)[:3]}. Is it a LoRA for another model (another ACE-Step generation, an image model)?"
        )
    if skipped:
        log.info(
            "%s: skipping LoRAs on %d layers the official forward never reads: %s",
            name,
            len(skipped),
            skipped,
        )

    ranks = {module: up.shape[1] for module, (_, up, _) in modules.items()}
    config_file = file.parent / PEFT_CONFIG_NAME
    if METADATA_KEY in metadata:
        source = f"safetensors metadata {METADATA_KEY}"
        scales = _peft_scales(json.loads(metadata[METADATA_KEY]), ranks, source)
    elif file.name == PEFT_WEIGHT_NAME and config_file.is_file():
        source = PEFT_CONFIG_NAME
        scales = _peft_scales(read_json(config_file), ranks, str(config_file))
    elif alphas:
        scales = {m: alphas.get(raw, ranks[m]) / ranks[m] for m, (raw, _, _) in modules.items()}
        source = ".alpha tensors"
    else:
        scales, source = dict.fromkeys(modules, 1.0), "none (official: scale = weight)"
    patches = {f"{m}.weight": (up, down, scales[m]) for m, (_, up, down) in sorted(modules.items())}
    return LoRA(name=name, patches=patches, scale_source=source, skipped=sorted(skipped))


# --- applying ----------------------------------------------------------------------------------------------------


def lora_patches(lora: LoRA, weight: float = 1.0) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{DiT weight key: (up, down, scale)}: the weight becomes ``W + scale * (up @ down)`` (reshaped for convs).

    ``scale`` is the whole factor (alpha / r, or 1, times ``weight``): for ComfyUI's ``("lora", (up, down, alpha,
    ...))`` patches that is ``alpha = scale * r`` at strength 1, or no alpha at strength ``scale``. A LoKr has no
    up/down matrices: its factors are ``v15.lora.lokr_patches``.
    """
    if lora.is_lokr:
        raise ValueError(
            f"{lora.name!r} is a LoKr (Kronecker factors, no up/down matrices): use lokr_patches"
        )
    return {k: (up, down, scale * weight) for k, (up, down, scale) in lora.patches.items()}


def lora_delta(up: torch.Tensor, down: torch.Tensor, scale: float, like: torch.Tensor) -> torch.Tensor:
    """``scale * up @ down`` in float32 on ``like``'s device, shaped as ``like``."""
    up, down = up.to(like.device, torch.float32), down.to(like.device, torch.float32)
    return (scale * (up.flatten(1) @ down.flatten(1))).reshape(like.shape)


def patch_delta(patch: Patch, weight: float, like: torch.Tensor) -> torch.Tensor:
    """A layer patch's weight delta at adapter weight ``weight``, in float32 on ``like``'s device, shaped as ``like``:
    ``weight * scale * up @ down`` (LoRA) or ``weight * scale * kron(w1, w2)`` (LoKr, as LyCORIS ``make_kron``)."""
    if isinstance(patch, Kron):
        w1, w2 = patch.halves(like.device)
        return (patch.scale * weight * torch.kron(w1, w2)).reshape(like.shape)
    up, down, scale = patch
    return lora_delta(up, down, scale * weight, like)


def patch_dims(patch: Patch) -> tuple[int, int]:
    """(out, in * prod(k)): the rows and the row size of the weight a layer patch makes."""
    if isinstance(patch, Kron):
        return patch.dims
    up, down, _ = patch
    return up.shape[0], down[0].numel()


def patch_shape(patch: Patch) -> tuple[int, ...]:
    """The weight shape a layer patch makes (see ``Kron.shape`` for a LoKr's)."""
    return patch.shape if isinstance(patch, Kron) else (patch[0].shape[0], *patch[1].shape[1:])


def _round(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The merged float32 weight in the weight's own dtype (float8 storage saturates instead of overflowing)."""
    return ops.to_storage(w, dtype) if dtype in ops.STORAGE_DTYPES.values() else w.to(dtype)


def applied_lora(model: torch.nn.Module) -> tuple[str, float] | None:
    """(name, weight) of the LoRA merged into ``model`` (the last one of a stack), or None."""
    stack = applied_loras(model)
    return stack[-1] if stack else None


def applied_loras(model: torch.nn.Module) -> list[tuple[str, float]]:
    """(name, weight) of every LoRA merged into ``model``, in merge order ([] without any)."""
    return [(lora.name, weight) for lora, weight in merged_loras(model)]


def merged_loras(model: torch.nn.Module) -> list[tuple[LoRA, float]]:
    """The (LoRA, weight) stack merged into ``model`` (as given to ``merge_loras``), [] without any."""
    state = getattr(model, _APPLIED, None)
    return list(state.stack) if state else []


def remove_lora(model: torch.nn.Module) -> None:
    """Put back the original weights (bit-identical); a no-op without a LoRA."""
    state = getattr(model, _APPLIED, None)
    if state is None:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, original in state.originals.items():
            params[key].copy_(original)
    delattr(model, _APPLIED)


def _misfits(params: dict[str, torch.nn.Parameter], lora: LoRA, what: str) -> list[str]:
    problems = []
    for k, patch in lora.patches.items():
        out, row = patch_dims(patch)
        if k not in params:
            problems.append(f"{k} is not in this {what}")
        elif params[k].shape[0] != out or params[k][0].numel() != row:
            problems.append(f"{k} is {tuple(params[k].shape)}, the LoRA makes {patch_shape(patch)}")
    return problems


def merge_lora(model: torch.nn.Module, lora: LoRA, weight: float = 1.0, what: str = "model") -> None:
    """Merge ``lora`` at ``weight`` into ``model``'s weights, replacing any LoRA merged before; on an error the
    weights are left as they were. ``what`` names the model in messages."""
    merge_loras(model, [(lora, weight)], what)


def merge_loras(model: torch.nn.Module, stack: list[tuple[LoRA, float]], what: str = "model") -> None:
    """Make ``model``'s weights ``original + sum of weight * delta`` over ``stack`` ((LoRA, weight) pairs, summed
    in order, float32, one rounding), replacing whatever was merged before; an empty stack removes every LoRA.
    On an error the weights are left as they were. ``what`` names the model in messages."""
    params = dict(model.named_parameters())
    for lora, _ in stack:
        problems = _misfits(params, lora, what)
        if problems:
            raise ValueError(
                f"LoRA {lora.name!r} does not fit this {what} (made for another model size?): {problems[:3]}"
            )
    previous = getattr(model, _APPLIED, None)
    keys = sorted({k for lora, _ in stack for k in lora.patches})
    originals = {}
    try:
        with torch.no_grad():
            remove_lora(model)
            for key in keys:
                p = params[key]
                originals[key] = p.detach().to("cpu", copy=True)
                w = p.float()
                for lora, weight in stack:
                    if key in lora.patches:
                        w = w + patch_delta(lora.patches[key], weight, p)
                p.copy_(_round(w, p.dtype))
    except BaseException:
        with torch.no_grad():
            for key, original in originals.items():
                params[key].copy_(original)
        if previous is not None:  # the stack merged before, as it was
            merge_loras(model, previous.stack, what)
        raise
    if stack:
        setattr(model, _APPLIED, _Applied(list(stack), originals))
