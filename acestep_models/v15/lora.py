"""ACE-Step 1.5 LoRAs on our DiT, with the official handler's semantics (commit 89031b8).

What the official code does
- Training (``acestep/training/lora_utils.py``): PEFT ``get_peft_model(model.decoder, LoraConfig(r, lora_alpha,
  lora_dropout, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], bias="none",
  task_type=FEATURE_EXTRACTION))``: the DiT decoder only, every attention projection of every layer, self- and
  cross-attention alike (4 x 2 x 24 = 192 layers on the released DiT; the UI sets only r (default 8), alpha (16)
  and dropout). ``save_pretrained`` writes a PEFT folder, ``<output>/final/adapter/`` (checkpoints:
  ``<output>/checkpoints/epoch_N/adapter/``; the UI's export copies ``final/``, so the adapter sits in
  ``<export>/adapter/``): ``adapter_config.json`` + ``adapter_model.safetensors`` with keys
  ``base_model.model.layers.0.self_attn.q_proj.lora_A.weight`` (A [r, in], B [out, r]; paths relative to the
  decoder, no adapter name, no ``.alpha`` tensors).
- Inference (``handler/lora/lifecycle.py`` ``load_lora(path)``): ``path`` must be a folder holding
  ``adapter_config.json``; it backs the decoder's state dict up to the CPU, then
  ``model.decoder = PeftModel.from_pretrained(model.decoder, path)`` in eval mode: unmerged PEFT layers computing
  ``W x + s * B (A x)`` with ``s = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``; per module through
  ``rank_pattern`` / ``alpha_pattern``), as adapter_config.json says.
- ``set_lora_scale(x)`` (the UI slider, 0..1): ``x`` is parsed as a float, refused if not finite, **clamped to
  [0, 1]**, then every LoRA layer gets ``set_scale(adapter, x)``: ``s = x * lora_alpha / r`` (PEFT's rule, rsLoRA
  included). So the official strength multiplies alpha / r and can neither exceed 1 nor go negative.
- ``set_use_lora(False)`` disables the adapter layers (the base output, bit for bit); ``unload_lora()`` is meant to
  put the backed-up decoder back and resets the scale to 1 (but see the quirks).
- One LoRA at a time: the handler holds one PEFT adapter, named "default".
- LoKr: the official trainer also trains LyCORIS LoKr adapters (``lokr_weights.safetensors``, keys
  ``lycoris_layers_0_self_attn_q_proj.lokr_w1`` ...), but nothing at this commit loads one for generation
  (``load_lora`` wants ``adapter_config.json``). They are refused here with that said.

Official quirks (noted, not copied; measured with peft 0.21.2, tests/golden/v15/lora/README.md)
- ``unload_lora`` leaves the LoRA in: ``PeftModel.get_base_model()`` returns the decoder with PEFT's LoRA layers
  still injected, and the backup's keys (``q_proj.weight``) match none of theirs (``q_proj.base_layer.weight``),
  so ``load_state_dict(strict=False)`` restores nothing; generation goes on with the LoRA at its last scale.
- A ``load_lora`` after that (its "restore the backup first" branch restores nothing either) wraps the decoder
  again under the same adapter name: the new LoRA replaces the old one on the layers both target, and the old one
  stays on the layers only it targets. Here ``remove_lora`` restores the original weights, and LoRAs stack only
  when asked to.
- ``load_lora`` does not apply the handler's current ``lora_scale``: a LoRA loaded while the slider reads 0.5 runs
  at 1.0 until the slider moves. Here the scale is always what ``apply_lora`` is given.
- The clamp to [0, 1] is the handler's; ``apply_lora`` takes any finite scale (ComfyUI-style strengths, negative
  or above 1, extrapolate). ``official_scale`` gives the handler's parse-and-clamp for callers that want it.

ComfyUI 0.20.1 (``model_lora_keys_unet`` for ``ACEStep15``) loads single ``.safetensors`` files with keys
``base_model.model.<decoder path>`` (the official layout), ``lycoris_<decoder path with _>`` (LyCORIS),
``diffusion_model.<model path>`` and ``lora_unet_<model path with _>`` (its generic layouts; the model path starts
with ``decoder.`` / ``encoder.`` ...). It never reads ``adapter_config.json``: without ``.alpha`` tensors its scale
is the strength alone, not ``strength * alpha / r``. We accept the same key layouts (LoRA suffixes ``lora_A``/
``lora_B``, ``lora_down``/``lora_up``, ``lora.down``/``lora.up``, an optional adapter name before ``.weight``) and
bare paths (full, or relative to the decoder), with these scales:
- a PEFT folder, or ``adapter_model.safetensors`` with its ``adapter_config.json`` beside it: the official
  ``scale * alpha / r``; layers of the file that the config's ``target_modules`` list does not name are skipped,
  as PEFT never injects them;
- ``.alpha`` tensors (kohya / LyCORIS LoRA): ``scale * alpha / r``, as ComfyUI;
- a lone file without either (e.g. a renamed ``adapter_model.safetensors``): ``scale`` alone, as ComfyUI (a warning
  says that the official alpha / r is unknown then).

We merge ``scale * s * B @ A`` into the weights (float32, one rounding to the weight's dtype; see
``common/lora.py``): no cost per step, and in float32 equal to the official unmerged layers to rounding. LoRAs
stack (the official handler holds one): each ``apply_lora`` adds one, applying one with the same name again
changes its scale in place, ``remove_lora`` takes one or all off; the weights are always recomputed from the
originals, so removing the last LoRA gives the original weights back bit for bit, without reloading.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from dataclasses import replace
from pathlib import Path

import torch

from ..common.lora import (
    PEFT_CONFIG_NAME,
    PEFT_WEIGHT_NAME,
    LoRA,
    lora_delta,
    lora_patches,
    merge_loras,
    merged_loras,
    read_lora,
)
from ..common.weights import holdings, read_json, safetensors_keys

log = logging.getLogger(__name__)

__all__ = [
    "LoRA",
    "applied_loras",
    "apply_lora",
    "load_lora",
    "lora_delta",
    "lora_deltas",
    "lora_patches",
    "official_scale",
    "remove_lora",
]

ADAPTER_DIR = "adapter"  # the official trainer's adapter folder inside <output>/final/ (and each checkpoint)
OFFICIAL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # training/configs.py LoRAConfig.target_modules
OFFICIAL_SCALE_RANGE = (0.0, 1.0)  # the handler's clamp (set_lora_scale)
WHAT = "ACE-Step 1.5 DiT"
_NOTHING = r"(?!)"  # no 1.5 layer is left unread by the official forward
_LOKR = re.compile(r".*\.(lokr_|hada_|oft_|boft_)")
# (LoRA key prefix, the path it is relative to ("" = the model, "decoder" = the DiT decoder), underscored?)
_PREFIXES = (
    (
        "base_model.model.",
        "decoder",
        False,
    ),  # official PEFT save_pretrained; ComfyUI "official base model loras"
    ("lycoris_", "decoder", True),  # LyCORIS (ComfyUI)
    ("model.diffusion_model.", "", False),
    ("diffusion_model.", "", False),  # ComfyUI generic
    ("lora_unet_", "", True),  # ComfyUI generic kohya
)
_V1 = re.compile(
    r"(.*[._])?(transformer_blocks|speaker_embedder|genre_embedder|lyric_encoder[._]encoders)([._]|$)"
)
_LM = re.compile(r"(.*\.)?(model\.layers\.\d+\.|lm_head|embed_tokens$)")


def official_scale(value) -> float:
    """The official ``set_lora_scale``'s reading of a strength: a finite number, clamped to [0, 1]."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"LoRA scale {value!r} is not a number (the official slider takes 0..1)") from None
    if not math.isfinite(scale):
        raise ValueError(f"LoRA scale {value!r} is not finite (the official slider takes 0..1)")
    return max(OFFICIAL_SCALE_RANGE[0], min(OFFICIAL_SCALE_RANGE[1], scale))


# --- reading ------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _layer_templates() -> tuple[tuple[str, re.Pattern, re.Pattern], ...]:
    """(model path with ``{i}`` for a layer index, dotted regex, underscored regex) of every layer a LoRA can
    patch (Linear and Conv1d weights of the whole model), read off a small model built on meta."""
    from .model import AceStep15Config, AceStepConditionGenerationModel

    small = AceStep15Config(
        hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        head_dim=8, text_hidden_dim=8, num_lyric_encoder_hidden_layers=1, num_timbre_encoder_hidden_layers=1,
        timbre_hidden_dim=8, audio_acoustic_hidden_dim=8, in_channels=24, num_attention_pooler_hidden_layers=1,
        fsq_dim=16,
    )  # fmt: skip
    with torch.device("meta"):
        model = AceStepConditionGenerationModel(small)
    templates = {}
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor) or w.ndim < 2 or isinstance(m, torch.nn.ConvTranspose1d):
            continue  # PEFT has no LoRA for transposed convs, and nothing makes one for proj_out
        name = re.sub(r"\.layers\.\d+\.", ".layers.{i}.", name)
        templates[name] = tuple(
            re.compile(r"(\d+)".join(re.escape(p.replace(".", sep)) for p in name.split("{i}")))
            for sep in "._"
        )
    return tuple((name, dotted, under) for name, (dotted, under) in templates.items())


def _model_path(name: str, underscored: bool) -> str | None:
    for template, dotted, under in _layer_templates():
        m = (under if underscored else dotted).fullmatch(name)
        if m:
            return template.format(i=m.group(1)) if m.groups() else template
    return None


def _module_of(raw: str) -> str | None:
    """A LoRA's module name (any accepted layout) as our model's module path, or None."""
    for prefix, base, underscored in _PREFIXES:
        if raw.startswith(prefix):
            name = raw[len(prefix) :]
            return _model_path(f"{base}{'_' if underscored else '.'}{name}" if base else name, underscored)
    return _model_path(raw, False) or _model_path(f"decoder.{raw}", False)  # bare: a model or decoder path


def _weights_file(path: Path) -> Path:
    """The .safetensors file of a LoRA given as a PEFT folder, the folder above it, or the file itself."""
    layouts = (
        f"the official trainer's PEFT folder ({PEFT_CONFIG_NAME} + {PEFT_WEIGHT_NAME}, in "
        f"<output>/final/{ADAPTER_DIR}/) or one .safetensors file (ComfyUI's layouts)"
    )
    if not path.exists():
        raise FileNotFoundError(f"LoRA not found: {path}. An ACE-Step 1.5 LoRA is {layouts}.")
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise ValueError(
                f"{path}: a LoRA must be a .safetensors file (pickled .bin/.pt/.ckpt files are not loaded)."
            )
        return path
    for folder in (path, path / ADAPTER_DIR):
        if (folder / PEFT_CONFIG_NAME).is_file():
            if (folder / PEFT_WEIGHT_NAME).is_file():
                return folder / PEFT_WEIGHT_NAME
            pickled = (folder / "adapter_model.bin").is_file()
            raise FileNotFoundError(
                f"{folder} has {PEFT_CONFIG_NAME} but no {PEFT_WEIGHT_NAME}"
                + (" (only a pickled adapter_model.bin, which is not loaded)" if pickled else "")
            )
    found = sorted(p.name for p in path.glob("*.safetensors"))
    if len(found) == 1:
        return path / found[0]
    raise FileNotFoundError(
        f"No LoRA in folder {path}: expected {layouts}; found {found or 'no .safetensors file'}."
    )


def _lora_name(file: Path) -> str:
    if file.name != PEFT_WEIGHT_NAME:
        return file.stem
    folder = file.parent
    return folder.parent.name if folder.name == ADAPTER_DIR and folder.parent.name else folder.name


def _refuse_other_files(file: Path, keys: list[str]) -> None:
    """Clear errors for files that are no 1.5 DiT LoRA: LoKr/LoHa, model checkpoints, v1 or LM LoRAs."""
    lokr = [k for k in keys if _LOKR.match(k)]
    if lokr:
        kind = "LoKr" if any(".lokr_" in k for k in lokr) else "LyCORIS (LoHa/OFT)"
        raise ValueError(
            f"{file} is a {kind} adapter (e.g. {lokr[0]}), such as the official LoKr trainer saves "
            "(lokr_weights.safetensors). The official 1.5 handler cannot load LoKr for generation (its load_lora "
            "takes PEFT LoRA folders only), and neither does this loader: only plain LoRA (up/down matrices)."
        )
    lora_like = [k for k in keys if ".lora" in k or k.endswith(".alpha")]
    if not lora_like:
        found = holdings(keys, file, own="v15")
        if found:
            raise ValueError(
                f"{file} is an ACE-Step model checkpoint (it holds: {', '.join(found)}), not a LoRA."
            )
        return  # read_lora says what it holds
    modules = {re.split(r"\.(lora|alpha)", k)[0] for k in lora_like}
    v1 = sorted(m for m in modules if _V1.match(m))
    if v1 and len(v1) * 2 >= len(modules):
        raise ValueError(
            f"{file} is an ACE-Step v1 LoRA ({len(v1)} of its {len(modules)} layers are v1 DiT layers, e.g. "
            f"{v1[0]}), not one for the {WHAT}: apply it to an ACE-Step v1 model."
        )
    lm = sorted(m for m in modules if _LM.match(m) and _module_of(m) is None)
    if lm and len(lm) * 2 >= len(modules):
        raise ValueError(
            f"{file} is a LoRA for a language model (e.g. {lm[0]}: the 5 Hz LM or another Qwen-style model), "
            f"not one for the {WHAT}."
        )


def _peft_targeted(config: dict, module: str) -> bool:
    """PEFT's ``check_target_module_exists`` for a list of ``target_modules`` and ``exclude_modules`` (a module
    path relative to the decoder); other forms (a regex string, "all-linear") keep every layer of the file."""
    targets, excluded = config.get("target_modules"), config.get("exclude_modules")
    if isinstance(excluded, str) and re.fullmatch(excluded, module):
        return False
    if isinstance(excluded, (list, tuple)) and any(module == t or module.endswith(f".{t}") for t in excluded):
        return False
    if isinstance(targets, (list, tuple)):
        return any(module == t or module.endswith(f".{t}") for t in targets)
    return True


def load_lora(path: str | Path) -> LoRA:
    """An ACE-Step 1.5 DiT LoRA: the official trainer's PEFT folder (``adapter_config.json`` +
    ``adapter_model.safetensors``; the folder above it, holding ``adapter/``, works too) or a single .safetensors
    file in the official or a ComfyUI key layout. Its layers are resolved to our model's state-dict keys
    (``decoder.layers.0.self_attn.q_proj.weight``); the scale at strength 1 is ``alpha / r`` where the file or its
    adapter_config.json says so (see the module docstring)."""
    file = _weights_file(Path(path))
    _refuse_other_files(file, safetensors_keys(file))
    lora = read_lora(file, _module_of, _NOTHING, WHAT)
    lora = replace(lora, name=_lora_name(file))
    config_file = file.parent / PEFT_CONFIG_NAME
    if file.name == PEFT_WEIGHT_NAME and config_file.is_file():
        config = read_json(config_file)
        if config.get("peft_type", "LORA") != "LORA":
            raise ValueError(
                f"{config_file}: peft_type {config['peft_type']!r}; only LORA adapters are supported"
            )
        if config.get("layers_to_transform") is not None:
            raise ValueError(f"{config_file}: layers_to_transform is not supported")
        dropped = sorted(
            k[: -len(".weight")]
            for k in lora.patches
            if not (k.startswith("decoder.") and _peft_targeted(config, k[len("decoder.") : -len(".weight")]))
        )
        if dropped:
            log.warning(
                "%s: %d layers of the file are not in adapter_config.json's target_modules %s; skipped, as PEFT "
                "never injects them: %s",
                lora.name,
                len(dropped),
                json.dumps(config.get("target_modules")),
                dropped[:5],
            )
            patches = {k: v for k, v in lora.patches.items() if k[: -len(".weight")] not in dropped}
            lora = replace(lora, patches=patches, skipped=sorted(lora.skipped + dropped))
    elif lora.scale_source.startswith("none"):
        log.warning(
            "%s: no adapter_config.json beside it and no .alpha tensors, so its scale is the strength alone "
            "(ComfyUI's rule). If it is an official PEFT adapter, load its folder to get the official alpha / r.",
            lora.name,
        )
    if not lora.patches:
        raise ValueError(f"{file}: no layer of this LoRA is applied (all skipped: {lora.skipped[:3]})")
    return lora


# --- applying ----------------------------------------------------------------------------------------------------


def _width_problems(model: torch.nn.Module, lora: LoRA) -> list[str]:
    """What does not fit, in terms of the DiT's width and depth when those differ."""
    params = dict(model.named_parameters())
    config = getattr(model, "config", None)
    problems, width, depth = [], None, 0
    for key, (up, down, _) in lora.patches.items():
        m = re.match(r"decoder\.layers\.(\d+)\.(self_attn|cross_attn)\.(q_proj|o_proj)\.weight$", key)
        if m:
            depth = max(depth, int(m[1]) + 1)
            width = width or (down.shape[1] if m[3] == "q_proj" else up.shape[0])
        if key not in params:
            continue
        if params[key].shape[0] != up.shape[0] or params[key][0].numel() != down[0].numel():
            made = (up.shape[0], *down.shape[1:])
            problems.append(f"{key} is {tuple(params[key].shape)}, the LoRA makes {made}")
    missing = [k for k in lora.patches if k not in params]
    hidden = getattr(config, "hidden_size", None)
    layers = getattr(config, "num_hidden_layers", None)
    head = []
    if problems and width and hidden and width != hidden:
        head.append(f"it is for a 1.5 DiT of width {width}, this one has width {hidden}")
    if missing and layers and depth > layers:
        head.append(f"it is for a 1.5 DiT of at least {depth} layers, this one has {layers}")
    if missing:
        problems.append(f"{len(missing)} of its layers are not in this model, e.g. {missing[:2]}")
    return head + problems


def _finite(scale: float) -> float:
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"LoRA scale {scale} is not finite")
    return scale


def apply_lora(model: torch.nn.Module, lora: LoRA | str | Path, scale: float = 1.0) -> None:
    """Merge ``lora`` at ``scale`` into ``model`` (an ``AceStepConditionGenerationModel``: ``Models15.dit``) on top
    of the LoRAs applied before; a LoRA of the same name already applied gets the new scale instead (in place in
    the stack). ``lora`` may be a path (read with ``load_lora``).

    ``scale`` is the official ``set_lora_scale`` value (the layer scale is ``scale * alpha / r``), unclamped: the
    official slider is limited to [0, 1] (``official_scale``). On an error nothing changes."""
    if isinstance(lora, (str, Path)):
        lora = load_lora(lora)
    scale = _finite(scale)
    problems = _width_problems(model, lora)
    if problems:
        raise ValueError(f"LoRA {lora.name!r} does not fit this {WHAT}: " + "; ".join(problems[:4]))
    stack = merged_loras(model)
    names = [applied.name for applied, _ in stack]
    if lora.name in names:
        stack[names.index(lora.name)] = (lora, scale)
    else:
        stack.append((lora, scale))
    merge_loras(model, stack, what=WHAT)
    log.info(
        "LoRA %r applied at scale %s (%d layers); applied now: %s", lora.name, scale, len(lora.patches), names
    )


def remove_lora(model: torch.nn.Module, lora: LoRA | str | None = None) -> None:
    """Take ``lora`` (a LoRA or its name) off ``model``, or every LoRA when None; with none left the original
    weights are back bit for bit. Removing a LoRA that is not applied is a no-op."""
    name = lora.name if isinstance(lora, LoRA) else lora
    stack = [(applied, s) for applied, s in merged_loras(model) if name is not None and applied.name != name]
    merge_loras(model, stack, what=WHAT)


def applied_loras(model: torch.nn.Module) -> list[tuple[str, float]]:
    """(name, scale) of every LoRA applied to ``model``, in the order they were applied."""
    return [(lora.name, scale) for lora, scale in merged_loras(model)]


def lora_deltas(lora: LoRA, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """{state-dict weight key: ``scale * s * up @ down``} in float32, shaped as the weight (for ComfyUI ``("diff",
    (delta,))`` patches; ``lora_patches`` gives the low-rank factors instead, far smaller)."""
    out = {}
    for key, (up, down, s) in lora_patches(lora, _finite(scale)).items():
        out[key] = (s * (up.float().flatten(1) @ down.float().flatten(1))).reshape(
            up.shape[0], *down.shape[1:]
        )
    return out
