"""ACE-Step 1.5's socket types and the model handles ComfyUI's memory manager drives (the 1.5 twins of
``nodes/common.py``'s v1 ones).

A 1.5 DiT, VAE, text encoder and LM travel on sockets of their own (``ACESTEP15_*``), so the canvas never links a
v1 part into a 1.5 node. Latents are core's 1.5 LATENT: ``{"samples": [B, 64, T] at 25 Hz, "type": "audio"}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..common import ModelHandle, OverCoreTensors, node_error

DiT15 = io.Custom("ACESTEP15_DIT")
Vae15 = io.Custom("ACESTEP15_VAE")
TextEncoder15 = io.Custom("ACESTEP15_TEXT_ENCODER")
LM15 = io.Custom("ACESTEP15_LM")
Prompt15 = io.Custom("ACESTEP15_PROMPT")
Plan15 = io.Custom("ACESTEP15_PLAN")

CATEGORY15 = "audio/ACE-Step 1.5"
FRAME_RATE = 25  # latent frames per second (48 kHz / 1920)


@dataclass
class DiT15Handle(ModelHandle):
    """The DiT with its condition encoder and FSQ tokenizer, which official sampler it was trained for
    (``variant``), and its ``silence_latent`` [1, T, D] float32 on the CPU."""

    variant: str = "turbo"
    silence: torch.Tensor | None = None

    @property
    def latent_dim(self) -> int:
        return self.model.config.audio_acoustic_hidden_dim


@dataclass
class CoreDiT15Handle(OverCoreTensors, DiT15Handle):
    """ComfyUI's own 1.5 DiT (a core MODEL from UNETLoader / Load Checkpoint) seen as ours, over the same tensors.
    ComfyUI's patcher moves and patches them (its LoRA loaders too)."""

    patch_prefix: ClassVar[str] = "diffusion_model."

    @property
    def model(self) -> torch.nn.Module:
        from ...acestep_models.v15.checkpoint import dit_over

        return self._over(self.patcher.model.diffusion_model, dit_over)


@dataclass
class Vae15Handle(ModelHandle):
    """The Oobleck VAE: 48 kHz stereo <-> latents [B, T, 64] at 25 Hz."""


@dataclass
class CoreVae15Handle(OverCoreTensors, Vae15Handle):
    """ComfyUI's own 1.5 VAE (a core VAE from VAELoader / Load Checkpoint) seen as ours, over the same tensors."""

    @property
    def model(self) -> torch.nn.Module:
        from ...acestep_models.v15.checkpoint import vae_over

        return self._over(self.patcher.model, vae_over)


@dataclass
class TextEncoder15Handle(ModelHandle):
    """Qwen3-Embedding-0.6B and its tokenizer."""

    tokenizer: object = None


@dataclass
class CoreTextEncoder15Handle(OverCoreTensors, TextEncoder15Handle):
    """The Qwen3-Embedding of ComfyUI's own 1.5 CLIP (DualCLIPLoader type ace, Load Checkpoint) seen as ours, over
    the same tensors. Loading it loads core's whole CLIP (its LM too), as core's own encode does."""

    @property
    def model(self) -> torch.nn.Module:
        from ...acestep_models.v15.checkpoint import text_encoder_over

        return self._over(self.patcher.model.qwen3_06b.transformer, text_encoder_over)


@dataclass
class LM15Handle(ModelHandle):
    """The 5 Hz LM and its tokenizer; ``planner()`` builds the decoder tables once per device type."""

    tokenizer: object = None
    _planners: dict = field(default_factory=dict)

    def planner(self):
        from ...acestep_models.v15.planner import Planner

        model = self.load()
        key = model.device.type
        if key not in self._planners:
            self._planners[key] = Planner(model, self.tokenizer)
        planner = self._planners[key]
        planner.model = model  # (a view over core's tensors is rebuilt when ComfyUI has moved them)
        return planner


@dataclass
class CoreLM15Handle(OverCoreTensors, LM15Handle):
    """The 5 Hz LM of ComfyUI's own 1.5 CLIP (``qwen3_2b`` = the 1.7B LM, or ``qwen3_4b``) seen as ours, over the
    same tensors."""

    member: str = "qwen3_2b"

    @property
    def model(self) -> torch.nn.Module:
        from ...acestep_models.v15.checkpoint import lm_over

        return self._over(getattr(self.patcher.model, self.member).transformer, lm_over)


@dataclass
class PromptText15:
    """What ACE-Step 1.5 Encode Prompt gives the sampler: the official caption, lyrics and metadata, and the text
    encoder that reads them. The sampler encodes them: the official caption prompt holds the task's instruction
    and the song's duration, which only the sampler knows."""

    text_encoder: TextEncoder15Handle
    captions: str
    lyrics: str
    vocal_language: str
    bpm: int | None
    key_scale: str
    time_signature: str


def samples15(node: str, input: str, latent, dim: int | None = None) -> torch.Tensor:
    """A 1.5 LATENT's samples [B, D, T] (core's layout), or an error saying what was connected instead."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor):
        raise node_error(node, "this is not a LATENT", "Connect an ACE-Step 1.5 latent.", input, type(latent))
    want = dim or 64
    if samples.ndim != 3 or (dim is not None and samples.shape[1] != dim):
        hint = (
            " (an ACE-Step v1 latent: use the v1 nodes)"
            if samples.ndim == 4 and samples.shape[1:3] == (8, 16)
            else ""
        )
        raise node_error(
            node,
            f"the latent has shape {list(samples.shape)}, not ACE-Step 1.5's [batch, {want}, frames]{hint}",
            "Connect ACE-Step 1.5 Empty Latent (or core's Empty Ace Step 1.5 Latent Audio).",
            input,
            "LATENT",
        )
    if samples.shape[-1] == 0:
        raise node_error(
            node, "the latent has no frames", "Give it a duration above 0 seconds.", input, "LATENT"
        )
    return samples


def as_latent15(samples: torch.Tensor) -> dict:
    """Engine latents [B, T, D] as core's 1.5 LATENT [B, D, T] (float32 on the intermediate device)."""
    return {"samples": samples.transpose(1, 2).float().to(mm.intermediate_device()), "type": "audio"}
