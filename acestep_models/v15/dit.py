"""The ACE-Step 1.5 diffusion transformer (official ``AceStepDiTModel``), in plain PyTorch.

Latents are [B, T, D] at 25 Hz. The input is ``cat(context_latents, x_t)`` (3 D channels: source latents or LM
hints, the chunk mask, the noisy latent), folded into patches of 2 frames by a Conv1d. Each layer runs AdaLN-
modulated self-attention (full or sliding by ``layer_types``), plain cross-attention to the packed condition and
an AdaLN-modulated SwiGLU MLP; a 2-row AdaLN norm and a ConvTranspose1d map back to D channels, cropped to T.
The network code is the same in the official turbo, base and sft folders (only their samplers differ).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..common import ops
from .layers import FULL, MLP, SLIDING, Attention, RMSNorm, attention_bias, rope_table

TIME_FREQ_CHANNELS = 256  # official TimestepEmbedding(in_channels=256, ...)
TIME_SCALE = 1000  # official TimestepEmbedding.scale: t in [0, 1] is embedded as t * 1000
TIME_MAX_PERIOD = 10000  # official timestep_embedding(max_period=10000)
ADALN_ROWS = 6  # shift, scale, gate (self-attention), then shift, scale, gate (MLP)


class Transpose(nn.Module):
    """[B, T, C] <-> [B, C, T]; stands where the official ``Lambda`` wrappers sit, keeping ``proj_in.1`` keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


def timestep_features(t: torch.Tensor, dim: int = TIME_FREQ_CHANNELS) -> torch.Tensor:
    """Official ``TimestepEmbedding.timestep_embedding``: t [B] -> [cos, sin] features [B, dim], float32.

    Official quirk, kept: ``t * 1000`` is computed in t's own dtype (rounded in bfloat16) before the float32 cast.
    """
    t = t * TIME_SCALE
    half = dim // 2
    freqs = torch.exp(-math.log(TIME_MAX_PERIOD) * torch.arange(half, dtype=torch.float32) / half)
    freqs = freqs.to(t.device)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedding(nn.Module):
    """t [B] -> (temb [B, C], AdaLN table [B, 6, C]): sinusoids, Linear-SiLU-Linear, then SiLU-Linear to 6 C."""

    def __init__(self, dim: int, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        kw = dict(dtype=dtype, device=device)
        self.linear_1 = operations.Linear(TIME_FREQ_CHANNELS, dim, **kw)
        self.linear_2 = operations.Linear(dim, dim, **kw)
        self.time_proj = operations.Linear(dim, dim * ADALN_ROWS, **kw)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        temb = self.linear_2(F.silu(self.linear_1(timestep_features(t).to(t.dtype))))
        return temb, self.time_proj(F.silu(temb)).unflatten(1, (ADALN_ROWS, -1))


class DiTLayer(nn.Module):
    """``AceStepDiTLayer``: AdaLN self-attention, unmodulated cross-attention, AdaLN MLP."""

    def __init__(self, config, layer_idx: int, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        okw = dict(kw, operations=operations)
        c = config
        self.layer_type = c.layer_types[layer_idx]
        self.self_attn_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, **kw)
        self.self_attn = Attention(c, **okw)
        self.cross_attn_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, **kw)
        self.cross_attn = Attention(c, **okw)
        self.mlp_norm = RMSNorm(c.hidden_size, c.rms_norm_eps, **kw)
        self.mlp = MLP(c, **okw)
        self.scale_shift_table = nn.Parameter(torch.empty(1, ADALN_ROWS, c.hidden_size, **kw))

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple,
        mask: torch.Tensor | None,
        temb: torch.Tensor,
        context_kv: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        # x: [B, S, C]; temb: [B, 6, C]; context_kv: cross-attention keys / values [B, Hkv, L, D]
        mods = self.scale_shift_table.to(temb) + temb
        shift, scale, gate, c_shift, c_scale, c_gate = mods.chunk(ADALN_ROWS, dim=1)
        h = (self.self_attn_norm(x) * (1 + scale) + shift).type_as(x)
        x = (x + self.self_attn(h, rope, mask) * gate).type_as(x)
        # cross-attention: normed but not modulated, plain residual (official)
        x = x + self.cross_attn(self.cross_attn_norm(x).type_as(x), kv=context_kv)
        h = (self.mlp_norm(x) * (1 + c_scale) + c_shift).type_as(x)
        return (x + self.mlp(h) * c_gate).type_as(x)


class AceStepDiTModel(nn.Module):
    """``decoder`` of the official checkpoint; ``forward`` is the official forward's velocity output."""

    def __init__(self, config, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        self.config = c = config
        kw = dict(dtype=dtype, device=device)
        okw = dict(kw, operations=operations)
        inner, patch = c.hidden_size, c.patch_size
        self.layers = nn.ModuleList([DiTLayer(c, i, **okw) for i in range(c.num_hidden_layers)])
        self.proj_in = nn.Sequential(
            Transpose(), operations.Conv1d(c.in_channels, inner, patch, stride=patch, **kw), Transpose()
        )
        self.time_embed = TimestepEmbedding(inner, **okw)
        self.time_embed_r = TimestepEmbedding(inner, **okw)
        self.condition_embedder = operations.Linear(inner, inner, **kw)
        self.norm_out = RMSNorm(inner, c.rms_norm_eps, **kw)
        self.proj_out = nn.Sequential(
            Transpose(),
            operations.ConvTranspose1d(inner, c.audio_acoustic_hidden_dim, patch, stride=patch, **kw),
            Transpose(),
        )
        self.scale_shift_table = nn.Parameter(torch.empty(1, 2, inner, **kw))

    def context_kv(self, encoder_hidden_states: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys/values of every layer for a packed condition [B, L, C].

        They only depend on the condition, so a sampler may compute them once per condition (what the official
        ``EncoderDecoderCache`` does; numerically the same as recomputing them each step).
        """
        context = self.condition_embedder(encoder_hidden_states)
        return [layer.cross_attn.key_value(context) for layer in self.layers]

    def self_attention_masks(self, patches: int, like: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Official quirk, kept: the DiT ignores every padding mask (its forward sets both masks to None), so only
        the sliding window remains. Masks with nothing to drop are passed as None (same attention, faster)."""
        c = self.config
        sliding = None
        if c.use_sliding_window and patches > c.sliding_window + 1:
            sliding = attention_bias(patches, like.dtype, like.device, window=c.sliding_window)
        return {FULL: None, SLIDING: sliding}

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        timestep_r: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        context_latents: torch.Tensor,
        context_kv: list | None = None,
    ) -> torch.Tensor:
        """x_t [B, T, D], t [B], r [B], packed condition [B, L, C], context [B, T, 2 D] -> velocity [B, T, D].

        The condition's padding mask is not an input: the official DiT attends to every packed position, padding
        included. ``context_kv`` (from ``context_kv()``) replaces ``encoder_hidden_states`` when given.
        """
        c = self.config
        temb_t, proj_t = self.time_embed(timestep)
        temb_r, proj_r = self.time_embed_r(timestep - timestep_r)
        temb, temb_proj = temb_t + temb_r, proj_t + proj_r

        x = torch.cat([context_latents, hidden_states], dim=-1)  # [B, T, 3 D]
        frames = x.shape[1]
        if frames % c.patch_size:
            x = F.pad(x, (0, 0, 0, c.patch_size - frames % c.patch_size))  # zeros at the end
        x = self.proj_in(x)  # [B, S, C]
        if context_kv is None:
            context_kv = self.context_kv(encoder_hidden_states)

        rope = rope_table(x.shape[1], c.head_dim, c.rope_theta, x)
        masks = self.self_attention_masks(x.shape[1], x)
        for layer, kv in zip(self.layers, context_kv):
            x = layer(x, rope, masks[layer.layer_type], temb_proj, kv)

        shift, scale = (self.scale_shift_table.to(temb) + rearrange(temb, "b c -> b 1 c")).chunk(2, dim=1)
        x = (self.norm_out(x) * (1 + scale) + shift).type_as(x)
        return self.proj_out(x)[:, :frames]
