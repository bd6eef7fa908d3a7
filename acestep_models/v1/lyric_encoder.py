"""The ACE-Step v1 lyric encoder: a Conformer over VoiceBPE token embeddings (keys under ``lyric_encoder.``).

Only the path the official DiT runs at inference: ``ConformerEncoder(input_size=lyric_hidden_size,
static_chunk_size=0)`` with its defaults, i.e. linear input embedding, ESPnet relative positional encoding,
pre-norm blocks of relative-position self-attention + SiLU feed-forward, no macaron FF, no convolution module,
full (non-chunked) attention masked on padded keys. Module names follow the official file so that its weights
load as they are and ERG can hook ``encoders[i].self_attn.linear_q``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..common import ops

LN_EPS = 1e-5  # official LayerNorm eps throughout the encoder
POS_ENC_BASE = 10000.0  # official EspnetRelPositionalEncoding


@functools.lru_cache(maxsize=8)
def _rel_pos_table(size: int, d_model: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """ESPnet relative positional encoding for offsets size-1 .. -(size-1): [1, 2*size-1, d_model].

    Built in float32 on the CPU like the official table (then cast/moved as the official ``extend_pe`` does).
    """
    pos = torch.arange(0, size, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(POS_ENC_BASE) / d_model))
    pos_part, neg_part = torch.zeros(size, d_model), torch.zeros(size, d_model)
    pos_part[:, 0::2], pos_part[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    neg_part[:, 0::2], neg_part[:, 1::2] = torch.sin(-1 * pos * div), torch.cos(-1 * pos * div)
    table = torch.cat([pos_part.flip(0), neg_part[1:]], dim=0)[None]
    return table.to(device=device, dtype=dtype)


class LinearEmbed(nn.Module):
    def __init__(self, idim: int, odim: int, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        self.out = nn.Sequential(
            operations.Linear(idim, odim, dtype=dtype, device=device),
            operations.LayerNorm(odim, eps=LN_EPS, dtype=dtype, device=device),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.out(x)
        pos_emb = _rel_pos_table(x.shape[1], x.shape[-1], x.dtype, x.device)
        return x * math.sqrt(x.shape[-1]), pos_emb


class RelPositionMultiHeadedAttention(nn.Module):
    """Transformer-XL style attention: content term (q + u) k^T plus position term (q + v) p^T, rel-shifted."""

    def __init__(self, heads: int, dim: int, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        self.h, self.d_k = heads, dim // heads
        self.linear_q = operations.Linear(dim, dim, dtype=dtype, device=device)
        self.linear_k = operations.Linear(dim, dim, dtype=dtype, device=device)
        self.linear_v = operations.Linear(dim, dim, dtype=dtype, device=device)
        self.linear_out = operations.Linear(dim, dim, dtype=dtype, device=device)
        self.linear_pos = operations.Linear(dim, dim, bias=False, dtype=dtype, device=device)
        self.pos_bias_u = nn.Parameter(torch.empty(heads, self.d_k, dtype=dtype, device=device))
        self.pos_bias_v = nn.Parameter(torch.empty(heads, self.d_k, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        # x: [B, T, C]; key_mask: [B, 1, T] bool (True = real token); pos_emb: [1, 2T-1, C]
        T = x.shape[1]
        q = rearrange(self.linear_q(x), "b t (h d) -> b t h d", h=self.h)
        k = rearrange(self.linear_k(x), "b t (h d) -> b h t d", h=self.h)
        v = rearrange(self.linear_v(x), "b t (h d) -> b h t d", h=self.h)
        p = rearrange(self.linear_pos(pos_emb), "b n (h d) -> b h n d", h=self.h)
        q_u = (q + self.pos_bias_u.to(q)).transpose(1, 2)
        q_v = (q + self.pos_bias_v.to(q)).transpose(1, 2)
        content = q_u @ k.transpose(-2, -1)  # [B, H, T, T]
        position = q_v @ p.transpose(-2, -1)  # [B, H, T, 2T-1], column n is offset T-1-n
        # rel shift: score[i, j] takes the column of offset i - j
        idx = (T - 1) - torch.arange(T, device=x.device)[:, None] + torch.arange(T, device=x.device)[None]
        position = position.gather(-1, idx.expand(*position.shape[:2], T, T))
        scores = (content + position) / math.sqrt(self.d_k)
        masked = ~key_mask[:, None]  # [B, 1, 1, T]
        # fully masked rows give NaN in softmax and are zeroed after it, as in the official code
        attn = torch.softmax(scores.masked_fill(masked, -float("inf")), dim=-1).masked_fill(masked, 0.0)
        return self.linear_out(rearrange(attn @ v, "b h t d -> b t (h d)"))


class PositionwiseFeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        self.w_1 = operations.Linear(dim, hidden, dtype=dtype, device=device)
        self.w_2 = operations.Linear(hidden, dim, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerEncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, linear_units: int, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.self_attn = RelPositionMultiHeadedAttention(heads, dim, **kw)
        self.feed_forward = PositionwiseFeedForward(dim, linear_units, **kw)
        self.norm_ff = operations.LayerNorm(dim, eps=LN_EPS, dtype=dtype, device=device)
        self.norm_mha = operations.LayerNorm(dim, eps=LN_EPS, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, pos_emb: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), key_mask, pos_emb)
        return x + self.feed_forward(self.norm_ff(x))


class LyricEncoder(nn.Module):
    """Official ``ConformerEncoder`` at its defaults (1024 wide, 16 heads, 4096 FF units, 6 blocks)."""

    def __init__(
        self,
        input_size: int = 1024,
        output_size: int = 1024,
        attention_heads: int = 16,
        linear_units: int = 4096,
        num_blocks: int = 6,
        dtype=None,
        device=None,
        operations=None,
    ):
        super().__init__()
        operations = ops.resolve(operations)
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.embed = LinearEmbed(input_size, output_size, **kw)
        self.encoders = nn.ModuleList(
            [
                ConformerEncoderLayer(output_size, attention_heads, linear_units, **kw)
                for _ in range(num_blocks)
            ]
        )
        self.after_norm = operations.LayerNorm(output_size, eps=LN_EPS, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """x: [B, T, input_size] token embeddings; pad_mask: [B, T] (nonzero = real token) -> [B, T, output_size]."""
        key_mask = pad_mask.to(torch.bool)[:, None]  # [B, 1, T]
        x, pos_emb = self.embed(x)
        for layer in self.encoders:
            x = layer(x, key_mask, pos_emb)
        return self.after_norm(x)
