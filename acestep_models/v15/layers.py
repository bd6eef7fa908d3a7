"""Qwen3-style building blocks shared by the ACE-Step 1.5 DiT, condition encoder and audio tokenizer.

Official counterparts (``acestep/models/*/modeling_acestep_v15_*.py`` at 89031b8, which import them from
transformers' Qwen3): ``Qwen3RMSNorm``, ``Qwen3RotaryEmbedding`` + ``apply_rotary_pos_emb``, ``AceStepAttention``
(GQA with RMSNorm on q and k, SDPA as the official handler loads it), ``Qwen3MLP`` (SwiGLU),
``AceStepEncoderLayer`` and ``create_4d_mask`` (bidirectional, optional sliding window, key padding).

Every layer takes ``dtype``, ``device`` and ``operations`` (see ``common/ops.py``) so ComfyUI can cast, offload and
quantise the matrices. ``config`` is the model's ``AceStep15Config`` (duck-typed: sizes are read off it).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ..common import ops

FULL, SLIDING = "full_attention", "sliding_attention"  # official ``config.layer_types`` entries


class RMSNorm(nn.Module):
    """``Qwen3RMSNorm``: statistics in float32, normalised value cast back, then scaled.

    The weight is cast to the input (ComfyUI style); the official ``weight * x`` promotes instead, which is the
    same whenever the model is in one dtype (the official handler always casts the whole model).
    """

    def __init__(self, dim: int, eps: float, dtype=None, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dtype=dtype, device=device))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight.to(x) * h.to(x.dtype)


@functools.lru_cache(maxsize=16)
def _rope_table(
    length: int, dim: int, theta: float, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    # Qwen3RotaryEmbedding, default rope type: inv_freq built on the CPU in float32 as its __init__ does. It is a
    # floating buffer, so the official handler's ``model.to(dtype)`` rounds it to the model dtype (bfloat16 on
    # GPU); the forward then multiplies in float32.
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    inv_freq = inv_freq.to(dtype).to(device).float()
    freqs = inv_freq[None, :] * torch.arange(length, device=device).float()[:, None]
    emb = torch.cat([freqs, freqs], dim=-1)  # [L, D], half-split layout
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rope_table(length: int, dim: int, theta: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [L, D] for positions 0..L-1, in ``like``'s dtype (official: cast to the hidden-states dtype)."""
    return _rope_table(length, dim, float(theta), like.dtype, like.device)


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x [B, H, L, D] rotated in its own dtype (``apply_rotary_pos_emb`` with ``rotate_half``)."""
    cos, sin = rope
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def attention_bias(
    length: int,
    dtype: torch.dtype,
    device: torch.device,
    padding: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Official ``create_4d_mask(..., is_causal=False)``: additive [B or 1, 1, L, L], 0 keeps, finfo.min drops.

    ``window``: keys with ``|i - j| <= window`` (inclusive, both directions). ``padding`` [B, L] (nonzero = real)
    masks keys only, so padded queries still attend to the real keys.
    """
    idx = torch.arange(length, device=device)
    keep = torch.ones(length, length, dtype=torch.bool, device=device)
    if window is not None:
        keep = keep & ((idx[:, None] - idx[None, :]).abs() <= window)
    keep = keep[None, None]
    if padding is not None:
        keep = keep & padding.view(padding.shape[0], 1, 1, length).to(torch.bool)
    return torch.full(keep.shape, torch.finfo(dtype).min, dtype=dtype, device=device).masked_fill_(keep, 0.0)


def layer_masks(
    config, length: int, dtype: torch.dtype, device: torch.device, padding: torch.Tensor | None = None
) -> dict[str, torch.Tensor | None]:
    """The two masks an official encoder stack builds (non-flash path), keyed by ``layer_types`` entry.

    Official quirk, kept: without ``use_sliding_window`` the sliding layers get no mask at all, not even padding.
    """
    sliding = None
    if config.use_sliding_window:
        sliding = attention_bias(length, dtype, device, padding, config.sliding_window)
    return {FULL: attention_bias(length, dtype, device, padding), SLIDING: sliding}


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, Hkv, L, D] -> [B, Hkv * groups, L, D], each KV head serving ``groups`` consecutive query heads."""
    if groups == 1:
        return x
    b, h, l, d = x.shape
    return x[:, :, None].expand(b, h, groups, l, d).reshape(b, h * groups, l, d)


class Attention(nn.Module):
    """``AceStepAttention``: q/k/v/o projections, per-head RMSNorm on q and k, GQA, scaled-dot-product attention.

    Self-attention applies RoPE to q and k; cross-attention (``context`` given) has no RoPE. The sliding window is
    entirely in the mask the caller passes (as in the official SDPA/eager paths).
    """

    def __init__(self, config, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        c = config
        self.heads, self.kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        kw = dict(bias=c.attention_bias, dtype=dtype, device=device)
        self.q_proj = operations.Linear(c.hidden_size, self.heads * self.head_dim, **kw)
        self.k_proj = operations.Linear(c.hidden_size, self.kv_heads * self.head_dim, **kw)
        self.v_proj = operations.Linear(c.hidden_size, self.kv_heads * self.head_dim, **kw)
        self.o_proj = operations.Linear(self.heads * self.head_dim, c.hidden_size, **kw)
        self.q_norm = RMSNorm(self.head_dim, c.rms_norm_eps, dtype=dtype, device=device)
        self.k_norm = RMSNorm(self.head_dim, c.rms_norm_eps, dtype=dtype, device=device)

    def key_value(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """source [B, L, C] -> normalised keys and values [B, Hkv, L, D] (before RoPE)."""
        shape = (*source.shape[:-1], self.kv_heads, self.head_dim)
        k = self.k_norm(self.k_proj(source).view(shape)).transpose(1, 2)
        v = self.v_proj(source).view(shape).transpose(1, 2)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x [B, S, C]; ``context`` [B, L, C] for cross-attention, or its precomputed ``kv``; mask additive."""
        q = self.q_norm(self.q_proj(x).view(*x.shape[:-1], self.heads, self.head_dim)).transpose(1, 2)
        if kv is not None:
            k, v = kv
        else:
            k, v = self.key_value(x if context is None else context)
        if context is None and kv is None and rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        groups = self.heads // self.kv_heads
        # transformers' sdpa_attention_forward: repeated KV heads, contiguous q/k/v, scale head_dim ** -0.5
        out = F.scaled_dot_product_attention(
            q.contiguous(),
            repeat_kv(k, groups).contiguous(),
            repeat_kv(v, groups).contiguous(),
            attn_mask=mask,
            scale=self.head_dim**-0.5,
        )
        return self.o_proj(out.transpose(1, 2).reshape(*x.shape[:-1], -1))


class MLP(nn.Module):
    """``Qwen3MLP``: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, config, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        kw = dict(bias=False, dtype=dtype, device=device)
        self.gate_proj = operations.Linear(config.hidden_size, config.intermediate_size, **kw)
        self.up_proj = operations.Linear(config.hidden_size, config.intermediate_size, **kw)
        self.down_proj = operations.Linear(config.intermediate_size, config.hidden_size, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class EncoderLayer(nn.Module):
    """``AceStepEncoderLayer``: pre-norm bidirectional self-attention and MLP, plain residuals."""

    def __init__(self, config, layer_idx: int, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.layer_type = config.layer_types[layer_idx]
        self.self_attn = Attention(config, operations=operations, **kw)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        self.mlp = MLP(config, operations=operations, **kw)

    def forward(self, x: torch.Tensor, rope: tuple, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class EncoderStack(nn.Module):
    """The part every official encoder repeats: layers over RoPE positions 0..L-1 with full / sliding masks
    (plus key padding), then the final ``norm``. Subclasses add their input/output projections."""

    def __init__(self, config, num_layers: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.config = config
        kw = dict(dtype=dtype, device=device)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **kw)
        self.layers = nn.ModuleList(
            [EncoderLayer(config, i, operations=operations, **kw) for i in range(num_layers)]
        )

    def run_layers(
        self, x: torch.Tensor, padding: torch.Tensor | None = None, layers: int | None = None
    ) -> torch.Tensor:
        """x [B, L, C] -> normed [B, L, C]; ``layers`` limits how many layers run (official slicing quirks)."""
        c = self.config
        masks = layer_masks(c, x.shape[1], x.dtype, x.device, padding)
        rope = rope_table(x.shape[1], c.head_dim, c.rope_theta, x)
        for layer in self.layers[:layers]:
            x = layer(x, rope, masks[layer.layer_type])
        return self.norm(x)
