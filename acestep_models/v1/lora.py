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
import re
from pathlib import Path

import torch

from ..common.lora import (
    KOHYA_PREFIX,
    NONE,
    LoRA,
    applied_lora,
    lora_delta,
    lora_patches,
    merge_lora,
    read_lora,
    remove_lora,
    strip_prefix,
)
from .dit import IGNORED_KEYS, ACEStepTransformer, DiTConfig

__all__ = ["LoRA", "applied_lora", "apply_lora", "load_lora", "lora_delta", "lora_patches", "remove_lora"]


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
    name = raw[len(KOHYA_PREFIX) :] if kohya else strip_prefix(raw)
    for template, dotted, under in _layer_templates():
        m = (under if kohya else dotted).fullmatch(name)
        if m:
            return template.format(i=m.group(1)) if m.groups() else template
    return None


def load_lora(path: str | Path) -> LoRA:
    """An ACE-Step v1 DiT LoRA from a folder (official: ``pytorch_lora_weights.safetensors``) or a single file."""
    return read_lora(path, _dit_module, IGNORED_KEYS, "ACE-Step v1 DiT")


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
    merge_lora(dit, lora, weight, what="DiT")
