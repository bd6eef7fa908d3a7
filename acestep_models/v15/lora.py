"""ACE-Step 1.5 LoRAs and LoKrs on our DiT, with the official code's semantics (commit 89031b8).

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
- LoKr (``acestep/training/lokr_utils.py``, the UI's LoKr tab): ``inject_lokr_into_dit(model, LoKRConfig)`` calls
  LyCORIS ``create_lycoris(decoder, multiplier, linear_dim, linear_alpha, algo="lokr", factor, decompose_both,
  use_tucker, use_scalar, full_matrix, bypass_mode, rs_lora, unbalanced_factorization)`` (defaults 64, 128, -1,
  the flags off) and ``apply_to()``; ``save_lokr_weights`` writes the LyCORIS state dict to
  ``<output>/final/lokr_weights.safetensors`` (checkpoints: ``<output>/checkpoints/epoch_N/``; the UI's export
  copies it to ``<export>/lokr_weights.safetensors`` or to a named .safetensors file) with keys
  ``lycoris_layers_0_self_attn_q_proj.lokr_w1`` (decoder paths, dots as ``_``), ``.alpha`` tensors and metadata
  ``{"algo": "lokr", "format": "lycoris", "lokr_config": ...}``. The handler's ``load_lora`` takes PEFT folders only;
  the official code applies a LoKr with ``inject_lokr_into_dit(model, config, multiplier)`` +
  ``load_lokr_weights(net, file)`` (LyCORIS ``load_weights``): every wrapped layer computes ``W x + multiplier *
  scale * kron(w1, w2) x``, each half whole or a low-rank pair (``w1_a @ w1_b``, ``w2_a @ w2_b``, or Tucker with
  ``lokr_t2`` on a convolution), ``scale = alpha / dim``, or 1 when both halves are whole (LyCORIS then replaces
  alpha by dim). The file's ``.alpha`` is ``alpha`` (``dim`` for whole layers), so ``alpha / r`` with ``r`` the rank
  of the file's low-rank pair, 1 without one, gives the official scale (LyCORIS's and ComfyUI's rule for files).
  The multiplier is any number (no clamp).

LoKr quirks (measured with lycoris-lora 4.1.3, tests/golden/v15/lora/README.md)
- ``target_modules`` does not choose the wrapped layers: LyCORIS matches the official target names against whole
  module paths from their start (``re.match("q_proj", "layers.0.self_attn.q_proj")``: none matches) and wraps every
  module of its default classes, so every Linear and Conv1d of the decoder (272 layers on the released DiT:
  attention, MLP, ``proj_in``, time embeddings, ``condition_embedder``); the official code then trains only the
  192 attention projections. The others are saved as LyCORIS initialised them, one factor zero (a zero delta),
  and applied like the rest.
- At the defaults every layer of the released DiT has whole w1 and w2 (2048 = 32 x 64, 1024 = 32 x 32, 6144 = 64 x 96:
  ``linear_dim`` 64 is at least half the larger factor, LyCORIS's full-matrix fallback): the scale is 1 and
  ``linear_alpha`` has no effect.
- ``rs_lora`` has no effect: LyCORIS's ``create_lycoris`` does not pass it on, so the scale stays ``alpha / dim``.
- ``use_scalar``'s scalar is folded into w1 when saving and reset to 1 when loading: the file is complete.
- ``weight_decompose`` (DoRA, ``dora_scale`` tensors) rescales each merged weight row to a learnt norm, the multiplier
  interpolating only that rescaling; that neither adds up nor stacks like the rest, so it is refused here.

LoRA quirks (noted, not copied; measured with peft 0.21.2, tests/golden/v15/lora/README.md)
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
``base_model.model.<decoder path>`` (the official layout), ``lycoris_<decoder path with _>`` (LyCORIS: the official
LoKr file), ``diffusion_model.<model path>`` and ``lora_unet_<model path with _>`` (its generic layouts; the model
path starts with ``decoder.`` / ``encoder.`` ...). It never reads ``adapter_config.json``: without ``.alpha``
tensors its scale is the strength alone, not ``strength * alpha / r``. Its own LoKr patching (``LoKrAdapter``, the
same ``alpha / r``) equals the official one on Linear layers but not on the Conv1d ``proj_in``: it takes ``kron`` of
a 2-D w1 with a 3-D w2 (the wrong product) and its Tucker rebuild raises on a 1-D kernel. We accept the same key layouts (LoRA suffixes
``lora_A``/``lora_B``, ``lora_down``/``lora_up``, ``lora.down``/``lora.up``, an optional adapter name before
``.weight``; LoKr suffixes ``lokr_w1``, ``lokr_w1_a``/``_b``, ``lokr_w2``, ``lokr_w2_a``/``_b``, ``lokr_t2``) and
bare paths (full, or relative to the decoder), with these scales:
- a PEFT folder, or ``adapter_model.safetensors`` with its ``adapter_config.json`` beside it: the official
  ``scale * alpha / r``; layers of the file that the config's ``target_modules`` list does not name are skipped,
  as PEFT never injects them;
- ``.alpha`` tensors (kohya / LyCORIS LoRA): ``scale * alpha / r``, as ComfyUI;
- a lone file without either (e.g. a renamed ``adapter_model.safetensors``): ``scale`` alone, as ComfyUI (a warning
  says that the official alpha / r is unknown then);
- a LoKr: ``scale * alpha / r`` (above; ``scale`` alone without ``.alpha``), as the official load and ComfyUI.
LoHa, OFT and DoRA files are refused with a message.

We merge ``scale * s * B @ A`` (LoKr: ``scale * s * kron(w1, w2)``) into the weights (float32, one rounding to the
weight's dtype; see ``common/lora.py``): no cost per step, and in float32 equal to the official unmerged layers to
rounding. LoRAs and LoKrs stack (the official handler holds one LoRA): each ``apply_lora`` adds one, applying one
with the same name again changes its scale in place, ``remove_lora`` takes one or all off; the weights are always
recomputed from the originals, so removing the last one gives the original weights back bit for bit, without
reloading. For ComfyUI's own patching, ``lora_patches`` gives a LoRA's factors, ``lokr_patches`` a LoKr's (in the
tuple order of ComfyUI's ``LoKrAdapter``), ``lora_deltas`` either one's weight deltas.
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
    Kron,
    LoRA,
    lora_delta,
    lora_patches,
    merge_loras,
    merged_loras,
    patch_delta,
    patch_dims,
    patch_shape,
    read_lora,
)
from ..common.weights import holdings, read_json, read_safetensors, safetensors_keys

log = logging.getLogger(__name__)

__all__ = [
    "Kron",
    "LoRA",
    "applied_loras",
    "apply_lora",
    "load_lora",
    "lokr_patches",
    "lora_delta",
    "lora_deltas",
    "lora_patches",
    "official_scale",
    "remove_lora",
]

ADAPTER_DIR = "adapter"  # the official trainer's adapter folder inside <output>/final/ (and each checkpoint)
LOKR_WEIGHT_NAME = "lokr_weights.safetensors"  # the official save_lokr_weights' file, in <output>/final/
FINAL_DIR = "final"  # the official trainers' <output>/final/
OFFICIAL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # training/configs.py LoRAConfig.target_modules
OFFICIAL_SCALE_RANGE = (0.0, 1.0)  # the handler's clamp (set_lora_scale)
WHAT = "ACE-Step 1.5 DiT"
_NOTHING = r"(?!)"  # no 1.5 layer is left unread by the official forward
_OTHER_LYCORIS = re.compile(r".*\.(hada_|oft_|boft_)")  # LoHa, OFT, BOFT
# a LoKr layer's tensors (what LyCORIS LokrModule saves; its DoRA dora_scale is refused before)
_LOKR_KEY = re.compile(r"(?P<module>.+)\.(?P<kind>lokr_w[12](_[ab])?|lokr_t2|alpha)$")
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
        f"<output>/final/{ADAPTER_DIR}/), its LoKr ({LOKR_WEIGHT_NAME}, in <output>/final/) or one .safetensors "
        "file (ComfyUI's layouts)"
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
    for folder in (path, path / FINAL_DIR):
        if (folder / LOKR_WEIGHT_NAME).is_file():
            return folder / LOKR_WEIGHT_NAME
    found = sorted(p.name for p in path.glob("*.safetensors"))
    if len(found) == 1:
        return path / found[0]
    raise FileNotFoundError(
        f"No LoRA in folder {path}: expected {layouts}; found {found or 'no .safetensors file'}."
    )


def _lora_name(file: Path) -> str:
    """The file's name, or for the official file names the folder's (``<output>`` for ``<output>/final/``)."""
    if file.name not in (PEFT_WEIGHT_NAME, LOKR_WEIGHT_NAME):
        return file.stem
    folder = file.parent
    if folder.name == ADAPTER_DIR and folder.parent.name:
        folder = folder.parent
    return folder.parent.name if folder.name == FINAL_DIR and folder.parent.name else folder.name


def _refuse_other_files(file: Path, keys: list[str]) -> None:
    """Clear errors for files that are no 1.5 DiT LoRA or LoKr: LoHa/OFT, LoKr with DoRA, model checkpoints, v1 or
    LM LoRAs."""
    other = [k for k in keys if _OTHER_LYCORIS.match(k)]
    if other:
        kind = {"hada_": "LoHa", "oft_": "OFT", "boft_": "BOFT"}[_OTHER_LYCORIS.match(other[0])[1]]
        raise ValueError(
            f"{file} is a LyCORIS {kind} adapter (e.g. {other[0]}), which this loader does not apply: only LoRA "
            "(up/down matrices, as the official LoRA trainer saves) and LoKr (lokr_w1/lokr_w2, as the official LoKr "
            "trainer saves)."
        )
    dora = [k for k in keys if k.endswith(".dora_scale")]
    if dora and any(".lokr_" in k for k in keys):
        raise ValueError(
            f"{file} is a LoKr with weight decomposition (DoRA: {dora[0]}; the official LoKr trainer's "
            "weight_decompose option), which this loader does not apply: LyCORIS rescales each merged weight row to "
            "the learnt norm (its strength scales only that rescaling), which neither adds up nor stacks like LoRAs. "
            "Train it with weight_decompose off."
        )
    lora_like = [k for k in keys if ".lora" in k or ".lokr_" in k or k.endswith(".alpha")]
    if not lora_like:
        found = holdings(keys, file, own="v15")
        if found:
            raise ValueError(
                f"{file} is an ACE-Step model checkpoint (it holds: {', '.join(found)}), not a LoRA."
            )
        return  # read_lora says what it holds
    modules = {re.split(r"\.(lora|lokr_|alpha)", k)[0] for k in lora_like}
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


def _kron(file: Path, raw: str, t: dict[str, torch.Tensor]) -> Kron:
    """One LoKr layer of a file, as LyCORIS builds it: its halves, and ``scale = alpha / r`` with ``r`` the rank of
    its low-rank pair (w2's, else w1's: both are LyCORIS's dim), 1 without ``.alpha`` or without a pair."""
    where = f"{file}: LoKr layer {raw}"
    tucker = "lokr_t2" in t
    for half, pair in (("w1", ("lokr_w1_a", "lokr_w1_b")), ("w2", ("lokr_w2_a", "lokr_w2_b"))):
        whole, has = f"lokr_{half}" in t, [k for k in pair if k in t]
        if whole == bool(has) or (has and len(has) < 2):
            held = sorted(k for k in t if k.startswith(f"lokr_{half}"))
            raise ValueError(
                f"{where} needs lokr_{half} or both {' and '.join(pair)}; it holds {held or 'neither'}"
            )
    if tucker and "lokr_w2" in t:
        raise ValueError(f"{where} has lokr_t2 (Tucker) but a whole lokr_w2")
    kron = Kron(1.0, **{k[len("lokr_") :]: v for k, v in t.items() if k.startswith("lokr_")})
    chains = []
    if kron.w1 is None:
        chains.append(("lokr_w1_a", kron.w1_a, 1, "lokr_w1_b", kron.w1_b, 0))
    if tucker:
        chains += [
            ("lokr_t2", kron.t2, 0, "lokr_w2_a", kron.w2_a, 0),
            ("lokr_t2", kron.t2, 1, "lokr_w2_b", kron.w2_b, 0),
        ]
    elif kron.w2 is None:
        chains.append(("lokr_w2_a", kron.w2_a, 1, "lokr_w2_b", kron.w2_b, 0))
    for a, ta, ia, b, tb, ib in chains:
        if ta.ndim < 2 or tb.ndim < 2 or ta.shape[ia] != tb.shape[ib]:
            raise ValueError(f"{where}: {a} {tuple(ta.shape)} and {b} {tuple(tb.shape)} do not chain")
    rank = kron.w2_b if kron.w2 is None else kron.w1_b if kron.w1 is None else None
    alpha = t.get("alpha")
    scale = float(alpha) / rank.shape[0] if alpha is not None and rank is not None else 1.0
    return replace(kron, scale=scale)


def _read_lokr(file: Path) -> LoRA:
    """A LoKr file (LyCORIS keys ``<module>.lokr_w1`` ...), its layers resolved to our model's weight keys."""
    sd, _ = read_safetensors(file)
    layers: dict[str, dict[str, torch.Tensor]] = {}
    other = []
    for k, v in sd.items():
        m = _LOKR_KEY.match(k)
        if m:
            layers.setdefault(m["module"], {})[m["kind"]] = v
        else:
            other.append(k)
    if other:
        raise ValueError(
            f"{file}: {len(other)} tensors are not LoKr tensors (lokr_w1, lokr_w1_a/b, lokr_w2, lokr_w2_a/b, lokr_t2, "
            f"alpha), e.g. {other[:3]}; a file mixing LoKr with other adapters (LoRA up/down ...) is not supported."
        )
    alone = sorted(raw for raw, t in layers.items() if not any(k.startswith("lokr_") for k in t))
    if alone:
        raise ValueError(f"{file}: {len(alone)} layers have an alpha but no LoKr tensors, e.g. {alone[:3]}")
    patches, unknown = {}, []
    for raw, t in layers.items():
        module = _module_of(raw)
        if module is None:
            unknown.append(raw)
        elif f"{module}.weight" in patches:
            raise ValueError(f"{file}: two LoKr layers for the same layer {module}")
        else:
            patches[f"{module}.weight"] = _kron(file, raw, t)
    if unknown:
        raise ValueError(
            f"{file}: {len(unknown)} of {len(layers)} LoKr layers match no {WHAT} layer, e.g. {sorted(unknown)[:3]}. "
            "Is it a LoKr for another model (another ACE-Step generation, an image model)?"
        )
    with_alpha = sum("alpha" in t for t in layers.values())
    source = (
        "LoKr .alpha tensors (alpha / r; 1 for layers without a low-rank pair)"
        if with_alpha
        else "none (LoKr without .alpha tensors: scale = weight)"
    )
    return LoRA(name=_lora_name(file), patches=dict(sorted(patches.items())), scale_source=source)


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
    """An ACE-Step 1.5 DiT LoRA or LoKr: the official LoRA trainer's PEFT folder (``adapter_config.json`` +
    ``adapter_model.safetensors``; the folder above it, holding ``adapter/``, works too), the official LoKr
    trainer's ``lokr_weights.safetensors`` (or its folder), or a single .safetensors file in the official or a
    ComfyUI key layout. Its layers are resolved to our model's state-dict keys
    (``decoder.layers.0.self_attn.q_proj.weight``); the scale at strength 1 is ``alpha / r`` where the file or its
    adapter_config.json says so (see the module docstring)."""
    file = _weights_file(Path(path))
    keys = safetensors_keys(file)
    _refuse_other_files(file, keys)
    if any(".lokr_" in k for k in keys):
        return _read_lokr(file)
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
    for key, patch in lora.patches.items():
        out, row = patch_dims(patch)
        m = re.match(r"decoder\.layers\.(\d+)\.(self_attn|cross_attn)\.(q_proj|o_proj)\.weight$", key)
        if m:
            depth = max(depth, int(m[1]) + 1)
            width = width or (row if m[3] == "q_proj" else out)
        if key not in params:
            continue
        if params[key].shape[0] != out or params[key][0].numel() != row:
            problems.append(f"{key} is {tuple(params[key].shape)}, the LoRA makes {patch_shape(patch)}")
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
    official slider is limited to [0, 1] (``official_scale``); for a LoKr it is the official ``multiplier`` of
    ``inject_lokr_into_dit`` (any number). On an error nothing changes."""
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
    """{state-dict weight key: the weight delta at ``scale``} in float32, shaped as the weight (``patch_shape``):
    ``scale * s * up @ down`` (LoRA) or ``scale * s * kron(w1, w2)`` (LoKr), for ComfyUI ``("diff", (delta,))``
    patches; ``lora_patches`` / ``lokr_patches`` give the factors instead, far smaller."""
    scale = _finite(scale)
    return {key: patch_delta(p, scale, torch.empty(patch_shape(p))) for key, p in lora.patches.items()}


def lokr_patches(lora: LoRA, scale: float = 1.0) -> dict[str, tuple]:
    """{DiT weight key: ``(w1, w2, alpha, w1_a, w1_b, w2_a, w2_b, t2, dora_scale)``}: the weights tuple of ComfyUI's
    ``comfy.weight_adapter.lokr.LoKrAdapter(loaded_keys, weights)`` (the same order in ComfyUI 0.3.x and 0.20.1),
    such that ComfyUI's patched weight at strength ``k`` is ``W + k * scale * s * kron(w1, w2)``, our merge at
    ``scale * k``.

    The layer's whole factor ``scale * s`` is folded into ``w1`` (or ``w1_a``) in float32 and ``alpha`` is None
    (ComfyUI's factor is then 1); ``w2`` and ``w2_b`` come flattened to 2-D ([b, d * prod(k)]) and a Tucker ``w2`` is
    rebuilt whole, so ``t2`` and ``dora_scale`` are None: ComfyUI's ``calculate_weight`` takes ``kron`` of a 2-D
    ``w1`` with whatever ``w2`` it holds, which for a convolution's 3-D ``w2`` (``proj_in``) is the wrong product, and
    its Tucker rebuild wants 2-D kernels. (ComfyUI 0.20.1's bypass mode, ``LoKrAdapter.h``, runs these on Linear
    layers but would want the 3-D form on a convolution: ``lora_deltas`` serves every layer.)"""
    if lora.patches and not lora.is_lokr:
        raise ValueError(f"{lora.name!r} is a LoRA (up/down matrices), not a LoKr: use lora_patches")
    scale = _finite(scale)
    out = {}
    for key, k in lora.patches.items():
        s = k.scale * scale
        w1 = k.w1.float() * s if k.w1 is not None else None
        w1_a = k.w1_a.float() * s if k.w1 is None else None
        if k.t2 is not None:
            w2, w2_a, w2_b = k.halves()[1], None, None
        else:
            w2 = k.w2.flatten(1) if k.w2 is not None else None
            w2_a, w2_b = (None, None) if k.w2 is not None else (k.w2_a, k.w2_b.flatten(1))
        out[key] = (w1, w2, None, w1_a, k.w1_b, w2_a, w2_b, None, None)
    return out
