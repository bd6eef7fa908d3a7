"""ACE-Step v1 LoRAs on our DiT, with the official pipeline's semantics.

The official ``ACEStepPipeline.load_lora`` (pipeline_ace_step.py:1415) loads
``<folder>/pytorch_lora_weights.safetensors`` with diffusers' ``load_lora_adapter(..., prefix=None)`` and sets the
adapter weight with ``set_weights_and_activate_adapters``: PEFT LoRA layers computing ``W x + s * B (A x)``. The
files come from the official trainer's ``save_lora_adapter`` (trainer.py:613): keys are the DiT's own module names,
``transformer_blocks.0.attn.to_q.lora_A.weight`` (A: [r, in], B: [out, r]), no prefix, no ``.alpha`` tensors.

The scale ``s`` (what diffusers 0.33 does; ACE-Step requires diffusers >= 0.33):
- no alpha anywhere (every released ACE-Step v1 LoRA): ``s = weight``. diffusers builds the LoraConfig from the
  state dict with ``lora_alpha = r``, so the training config's alpha and ``use_rslora`` are NOT applied (the
  pipeline's ``with_alpha=True`` is swallowed by ``**kwargs`` and does nothing). The trainer's config json
  (e.g. zh_rap_lora_config.json: r 256, alpha 32, rsLoRA) next to the file is never read, and neither do we.
- safetensors metadata ``lora_adapter_metadata`` (written by diffusers >= 0.34's ``save_lora_adapter``, which reads
  it back as the LoraConfig): ``s = weight * lora_alpha / r`` (``/ sqrt(r)`` with ``use_rslora``), per module
  through ``alpha_pattern``, as PEFT computes it.
- a PEFT ``save_pretrained`` folder (``adapter_model.safetensors`` + ``adapter_config.json``, keys under
  ``base_model.model.``): the same, from adapter_config.json, as PEFT would load it.
- ``<module>.alpha`` tensors (kohya / ComfyUI-style files): ``s = weight * alpha / r``, as ComfyUI applies them.

We merge ``s * B @ A`` into the weights (computed in float32, one rounding to the weight's dtype), so inference
costs nothing extra; the original tensors of the patched weights are kept (on the CPU) and put back bit for bit by
``remove_lora``. In float32 this equals the official unmerged layers to rounding (~1e-7).

Key names accepted (prefix + module + LoRA suffix, with an optional PEFT adapter name before ``.weight``):
prefixes none (official), ``transformer.``, ``base_model.model.``, ``diffusion_model.``,
``model.diffusion_model.``, and kohya's ``lora_unet_`` with the module path written with underscores; suffixes
``lora_A``/``lora_B`` (PEFT), ``lora_down``/``lora_up`` (kohya), ``lora.down``/``lora.up`` (old diffusers).
LoRAs on modules the official forward never reads (the cross-attention's unused joint-attention projections, the
REPA projectors) change nothing there and are skipped with a log line, as in ``dit.IGNORED_KEYS``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import ops
from .checkpoint import read_json, read_safetensors
from .dit import IGNORED_KEYS, ACEStepTransformer, DiTConfig

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


@dataclass
class LoRA:
    """A LoRA for the ACE-Step v1 DiT, its modules resolved to our (official) state-dict keys."""

    name: str
    # DiT weight key -> (up [out, r], down [r, in], scale at adapter weight 1)
    patches: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    scale_source: str = "none (official: scale = weight)"
    skipped: list[str] = field(default_factory=list)  # modules the official forward never reads

    def __repr__(self) -> str:
        ranks = sorted({up.shape[1] for up, _, _ in self.patches.values()})
        return f"LoRA({self.name!r}: {len(self.patches)} layers, rank {ranks}, alpha: {self.scale_source})"


@dataclass
class _Applied:
    name: str
    weight: float
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


@functools.lru_cache(maxsize=1)
def _layer_templates() -> tuple[tuple[str, re.Pattern, re.Pattern], ...]:
    """(name with ``{i}`` for the block index, dotted regex, kohya underscored regex) of every DiT layer a LoRA
    can patch (Linear and Conv weights), read off a small DiT built on meta."""
    small = DiTConfig(
        num_layers=1, num_attention_heads=2, attention_head_dim=8, speaker_embedding_dim=8,
        text_embedding_dim=8, lyric_encoder_vocab_size=8, lyric_hidden_size=8, lyric_encoder_attention_heads=2,
        lyric_encoder_linear_units=8, lyric_encoder_num_blocks=1,
    )  # fmt: skip
    with torch.device("meta"):
        dit = ACEStepTransformer(small)
    templates = []
    for name, m in dit.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(m, torch.nn.Embedding) or not isinstance(w, torch.Tensor) or w.ndim < 2:
            continue
        name = re.sub(r"^(transformer_blocks|lyric_encoder\.encoders)\.0\.", r"\1.{i}.", name)
        dotted, under = (
            re.compile(r"(\d+)".join(re.escape(p.replace(".", sep)) for p in name.split("{i}")))
            for sep in "._"
        )
        templates.append((name, dotted, under))
    return tuple(templates)


def _dit_module(raw: str) -> str | None:
    """A LoRA's module name (any accepted prefix) as our DiT module path, or None if it is no DiT layer."""
    kohya = raw.startswith(KOHYA_PREFIX)
    name = raw[len(KOHYA_PREFIX) :] if kohya else _strip_prefix(raw)
    for template, dotted, under in _layer_templates():
        m = (under if kohya else dotted).fullmatch(name)
        if m:
            return template.format(i=m.group(1)) if m.groups() else template
    return None


def _strip_prefix(name: str) -> str:
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


def load_lora(path: str | Path) -> LoRA:
    """A LoRA from a folder (official: ``pytorch_lora_weights.safetensors``) or a single .safetensors file."""
    path = Path(path)
    file = _weights_file(path)
    sd, metadata = read_safetensors(file)
    name = file.parent.name if file.name in (OFFICIAL_WEIGHT_NAME, PEFT_WEIGHT_NAME) else file.stem

    if any(k.endswith("genre_embedder.weight") for k in sd):
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
        module = _dit_module(raw)
        if module is None:
            (skipped if re.match(IGNORED_KEYS, _strip_prefix(raw) + ".weight") else unknown).append(raw)
            continue
        if module in modules:
            raise ValueError(f"{file}: two LoRAs for the same layer {module}")
        modules[module] = (raw, up, down)
    if unknown:
        raise ValueError(
            f"{file}: {len(unknown)} of {len(pairs)} LoRA layers match no ACE-Step v1 DiT layer, e.g. "
            f"{sorted(unknown)[:3]}. Is it a LoRA for another model (ACE-Step 1.5, an image model)?"
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
    ...))`` patches that is ``alpha = scale * r`` at strength 1, or no alpha at strength ``scale``.
    """
    return {k: (up, down, scale * weight) for k, (up, down, scale) in lora.patches.items()}


def lora_delta(up: torch.Tensor, down: torch.Tensor, scale: float, like: torch.Tensor) -> torch.Tensor:
    """``scale * up @ down`` in float32 on ``like``'s device, shaped as ``like``."""
    up, down = up.to(like.device, torch.float32), down.to(like.device, torch.float32)
    return (scale * (up.flatten(1) @ down.flatten(1))).reshape(like.shape)


def _round(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The merged float32 weight in the weight's own dtype (float8 storage saturates instead of overflowing)."""
    return ops.to_storage(w, dtype) if dtype in ops.STORAGE_DTYPES.values() else w.to(dtype)


def applied_lora(dit: torch.nn.Module) -> tuple[str, float] | None:
    """(name, weight) of the LoRA merged into ``dit``, or None."""
    state = getattr(dit, _APPLIED, None)
    return (state.name, state.weight) if state else None


def remove_lora(dit: torch.nn.Module) -> None:
    """Put back the original weights (bit-identical); a no-op without a LoRA."""
    state = getattr(dit, _APPLIED, None)
    if state is None:
        return
    params = dict(dit.named_parameters())
    with torch.no_grad():
        for key, original in state.originals.items():
            params[key].copy_(original)
    delattr(dit, _APPLIED)


def apply_lora(dit: ACEStepTransformer, lora: LoRA | str | Path, weight: float = 1.0) -> None:
    """Merge ``lora`` at ``weight`` into ``dit``'s weights, replacing any LoRA applied before.

    ``lora`` may be a path (loaded with ``load_lora``) or ``"none"`` (the official value for no LoRA: removes it).
    Unlike the official pipeline, selecting a LoRA again after "none" always applies it (the official
    ``load_lora`` keeps its old ``lora_path`` on "none" and then skips re-loading the same LoRA and weight).
    """
    if isinstance(lora, (str, Path)):
        if str(lora) == NONE:
            remove_lora(dit)
            return
        lora = load_lora(lora)
    remove_lora(dit)
    params = dict(dit.named_parameters())
    patches = lora_patches(lora, weight)
    problems = []
    for k, (up, down, _) in patches.items():
        if k not in params:
            problems.append(f"{k} is not in this DiT")
        elif params[k].shape[0] != up.shape[0] or params[k][0].numel() != down[0].numel():
            problems.append(
                f"{k} is {tuple(params[k].shape)}, the LoRA makes {(up.shape[0], *down.shape[1:])}"
            )
    if problems:
        raise ValueError(
            f"LoRA {lora.name!r} does not fit this DiT (made for another model size?): {problems[:3]}"
        )
    originals = {}
    try:
        with torch.no_grad():
            for key, (up, down, scale) in patches.items():
                p = params[key]
                originals[key] = p.detach().to("cpu", copy=True)
                p.copy_(_round(p.float() + lora_delta(up, down, scale, p), p.dtype))
    except BaseException:
        with torch.no_grad():
            for key, original in originals.items():
                params[key].copy_(original)
        raise
    setattr(dit, _APPLIED, _Applied(lora.name, weight, originals))
