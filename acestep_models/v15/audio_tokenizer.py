"""The ACE-Step 1.5 audio tokenizer and detokenizer: 25 Hz latents <-> 5 Hz FSQ codes (the 5 Hz LM's vocabulary).

- ``AceStepAudioTokenizer`` (official): Linear to hidden, ``AttentionPooler`` over patches of ``pool_window_size``
  (5) frames (a learned token prepended per patch, its output taken), ``ResidualFSQ`` with levels
  [8, 8, 8, 5, 5, 5] (64,000 codes).
- ``AudioTokenDetokenizer`` (official): each 5 Hz vector repeated 5 times plus 5 learned tokens, encoder layers,
  norm, Linear to the latent width -> 25 Hz.
- ``ResidualFSQ`` is our own implementation of ``vector_quantize_pytorch.ResidualFSQ`` 1.32.0 as the official code
  builds it (``num_quantizers=1``, defaults: ``bound_hard_clamp=True``, symmetry-preserving levels), bit-equal in
  float32; it has the same two parameters (``project_in``, ``project_out``) and no buffers.
- Code strings: ``<|audio_code_N|>`` tokens as the 5 Hz LM writes them and the handler parses them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from einops import rearrange
from torch import nn

from ..common import ops
from .layers import EncoderStack

MAX_AUDIO_CODE = 63999  # official handler: parsed codes are clamped to [0, 63999] (= 8*8*8*5*5*5 - 1)
AUDIO_CODE_RE = re.compile(r"<\|audio_code_(\d+)\|>")  # official _parse_audio_code_string


def parse_codes(text: str) -> list[int]:
    """Every ``<|audio_code_N|>`` in ``text``, in order, each clamped to [0, 63999] (official handler)."""
    return [max(0, min(int(n), MAX_AUDIO_CODE)) for n in AUDIO_CODE_RE.findall(text or "")]


def codes_to_string(codes: Iterable[int] | torch.Tensor) -> str:
    """Codes (any shape; flattened) -> ``"<|audio_code_12|><|audio_code_345|>..."``, as the official
    ``convert_src_audio_to_codes`` writes them."""
    if isinstance(codes, torch.Tensor):
        codes = codes.flatten().tolist()
    return "".join(f"<|audio_code_{int(c)}|>" for c in codes)


def pad_with_silence(latents: torch.Tensor, length: int, silence_latent: torch.Tensor) -> torch.Tensor:
    """[B, T, D] cropped or padded to ``length`` frames with ``silence_latent[:, :pad]`` (official handler for
    decoded code hints; the silence latent [1, T', D] must cover the padding)."""
    if latents.shape[1] >= length:
        return latents[:, :length]
    pad = silence_latent[:, : length - latents.shape[1]].to(latents)
    return torch.cat([latents, pad.expand(latents.shape[0], -1, -1)], dim=1)


class ResidualFSQ(nn.Module):
    """Residual finite scalar quantisation (vector_quantize_pytorch 1.32.0 ``ResidualFSQ`` as built officially).

    x [..., dim] -> project_in -> soft clamp ``tanh(x / c) * c``, c = 1 + 1 / (L - 1) -> per quantizer q:
    ``z = residual / s_q``, s_q = L ** -q; symmetric levels ``floor((L - 1) (clamp(z, -1, 1) + 1) / 2 + 0.5)``,
    code ``2 / (L - 1) * level - 1``; index = sum(level * basis) -> sum of codes * s_q -> project_out.
    """

    def __init__(
        self, dim: int, levels: list[int], num_quantizers: int = 1, dtype=None, device=None, operations=None
    ):
        super().__init__()
        operations = ops.resolve(operations)
        self.levels, self.num_quantizers = list(levels), num_quantizers
        self.project_in = operations.Linear(dim, len(levels), dtype=dtype, device=device)
        self.project_out = operations.Linear(len(levels), dim, dtype=dtype, device=device)

    @property
    def codebook_size(self) -> int:
        return int(torch.tensor(self.levels).prod())

    def _levels(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        levels = torch.tensor(self.levels, dtype=torch.int32, device=device)
        basis = torch.cumprod(torch.tensor([1] + self.levels[:-1], device=device), dim=0, dtype=torch.int32)
        return levels, basis

    def _scales(self, like: torch.Tensor) -> torch.Tensor:
        # official buffer: float32 levels ** -q, cast with the model (.to(dtype))
        levels = torch.tensor(self.levels, device=like.device).float()
        return torch.stack([levels**-q for q in range(self.num_quantizers)]).to(like.dtype)

    def _quantize(self, z: torch.Tensor, levels: torch.Tensor, basis: torch.Tensor):
        """One FSQ layer (preserve_symmetry, hard clamp), in float32 as ``force_quantization_f32`` does."""
        orig_dtype = z.dtype
        if orig_dtype not in (torch.float32, torch.float64):
            z = z.float()
        steps = levels - 1
        level = torch.floor((steps * (z.clamp(-1.0, 1.0) + 1) / 2.0) + 0.5)
        codes = (2.0 / steps) * level - 1.0
        indices = (((codes + 1.0) / (2.0 / steps)) * basis).sum(dim=-1).round().to(torch.int32)
        return codes.to(orig_dtype), indices

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, N, dim] -> (quantized [B, N, dim], indices [B, N, num_quantizers] int32)."""
        x = self.project_in(x)
        levels, basis = self._levels(x.device)
        # official buffer ``1 + 1 / (L - 1)``, evaluated at creation in the default dtype (= the model dtype)
        clamp = 1 + 1 / (torch.tensor(self.levels, device=x.device) - 1).to(x.dtype)
        x = (x / clamp).tanh() * clamp
        quantized, residual, indices = 0.0, x, []
        for scale in self._scales(x):
            codes, idx = self._quantize(residual / scale, levels, basis)
            codes = codes * scale
            residual = residual - codes
            quantized = quantized + codes
            indices.append(idx)
        return self.project_out(quantized), torch.stack(indices, dim=-1)

    def get_output_from_indices(
        self, indices: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """indices [B, N, num_quantizers] (-1 = dropped) -> quantized [B, N, dim] (official method of that name).

        ``dtype``: the compute dtype (default: project_out's bias dtype, which float8 weight storage leaves
        alone). Official quirk, kept: the implicit codebook is built in the default dtype at model creation,
        which ``from_pretrained(torch_dtype=...)`` sets to the model dtype, so ``2 / (L - 1) * level - 1`` is
        evaluated in that dtype here too (in bfloat16 a few codes differ by an ulp from the ones ``forward``
        emits, which rounds float32 codes).
        """
        dtype = dtype or self.project_out.bias.dtype
        levels, basis = self._levels(indices.device)
        dropped = indices == -1
        indices = indices.masked_fill(dropped, 0).long()[..., None]  # [B, N, Q, 1]
        level = (indices // basis) % levels  # [B, N, Q, len(levels)]
        codes = level * (2.0 / (levels - 1)).to(dtype) - 1.0
        codes = codes.to(dtype).masked_fill(dropped[..., None], 0.0)
        scales = self._scales(codes)  # [Q, len(levels)]
        return self.project_out((codes * scales).sum(dim=-2))


class AttentionPooler(EncoderStack):
    """Patches [B, T', P, C] -> one vector per patch [B, T', C]: a learned token prepended, its output taken."""

    def __init__(self, config, dtype=None, device=None, operations=None):
        super().__init__(config, config.num_attention_pooler_hidden_layers, dtype, device, operations)
        operations = ops.resolve(operations)
        c = config
        self.embed_tokens = operations.Linear(c.hidden_size, c.hidden_size, dtype=dtype, device=device)
        self.special_token = nn.Parameter(torch.empty(1, 1, c.hidden_size, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        x = self.embed_tokens(x)
        x = torch.cat([self.special_token.to(x).expand(b, t, 1, -1), x], dim=2)
        x = self.run_layers(rearrange(x, "b t p c -> (b t) p c"))
        return rearrange(x[:, 0], "(b t) c -> b t c", b=b)


class AceStepAudioTokenizer(nn.Module):
    """``tokenizer`` of the official checkpoint: 25 Hz latents -> 5 Hz quantized vectors and FSQ indices."""

    def __init__(self, config, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        c = config
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.pool_window_size = c.pool_window_size
        self.audio_acoustic_proj = operations.Linear(
            c.audio_acoustic_hidden_dim, c.hidden_size, dtype=dtype, device=device
        )
        self.attention_pooler = AttentionPooler(c, **kw)
        self.quantizer = ResidualFSQ(c.fsq_dim, c.fsq_input_levels, c.fsq_input_num_quantizers, **kw)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """patches [B, T', P, D] -> (quantized [B, T', fsq_dim], indices [B, T', num_quantizers])."""
        return self.quantizer(self.attention_pooler(self.audio_acoustic_proj(patches)))

    def tokenize(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latents [B, T, D] with T a multiple of the pool window."""
        return self(rearrange(latents, "b (t p) d -> b t p d", p=self.pool_window_size))


class AudioTokenDetokenizer(EncoderStack):
    """``detokenizer`` of the official checkpoint: quantized [B, T', C] -> 25 Hz latents [B, P T', D]."""

    def __init__(self, config, dtype=None, device=None, operations=None):
        super().__init__(config, config.num_attention_pooler_hidden_layers, dtype, device, operations)
        operations = ops.resolve(operations)
        c = config
        kw = dict(dtype=dtype, device=device)
        self.pool_window_size = c.pool_window_size
        self.embed_tokens = operations.Linear(c.hidden_size, c.hidden_size, **kw)
        self.special_tokens = nn.Parameter(torch.empty(1, c.pool_window_size, c.hidden_size, **kw))
        self.proj_out = operations.Linear(c.hidden_size, c.audio_acoustic_hidden_dim, **kw)

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        b, t = quantized.shape[:2]
        x = self.embed_tokens(quantized)[:, :, None].repeat(1, 1, self.pool_window_size, 1)
        x = x + self.special_tokens.to(x).expand(b, t, -1, -1)
        x = self.proj_out(self.run_layers(rearrange(x, "b t p c -> (b t) p c")))
        return rearrange(x, "(b t) p c -> b (t p) c", b=b)
