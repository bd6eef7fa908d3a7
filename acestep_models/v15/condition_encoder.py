"""The ACE-Step 1.5 condition encoder (official ``AceStepConditionEncoder``): caption, lyrics and timbre packed
into one cross-attention sequence.

- caption: Qwen3-Embedding last hidden states -> ``text_projector`` (Linear, no bias);
- lyrics: Qwen3-Embedding *token embeddings* -> ``lyric_encoder`` (Linear + bidirectional Qwen3 layers + norm);
- timbre: reference latents [N, 750, D] -> ``timbre_encoder``, one vector per reference (position 0), regrouped
  per batch item by ``refer_audio_order_mask``.
Every encoder stack alternates sliding (|i - j| <= 128) and full attention by ``layer_types`` with the key
padding mask, as the official non-flash path builds them. ``pack_sequences`` then moves the valid tokens of
[lyrics, timbre] and then of [that, caption] to the front.
"""

from __future__ import annotations

import torch
from torch import nn

from ..common import ops
from .layers import EncoderStack


def pack_sequences(
    hidden1: torch.Tensor, hidden2: torch.Tensor, mask1: torch.Tensor, mask2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Official ``pack_sequences``: concatenate [B, L1, C] and [B, L2, C], then stable-sort positions by mask,
    descending, so valid tokens (in their original order) come first; new mask [B, L1 + L2] (bool) is
    ``arange < count``.
    """
    hidden = torch.cat([hidden1, hidden2], dim=1)
    mask = torch.cat([mask1, mask2], dim=1)
    order = mask.argsort(dim=1, descending=True, stable=True)
    hidden = torch.gather(hidden, 1, order[..., None].expand(-1, -1, hidden.shape[-1]))
    lengths = mask.sum(dim=1)
    new_mask = torch.arange(mask.shape[1], dtype=torch.long, device=hidden.device)[None] < lengths[:, None]
    return hidden, new_mask


def unpack_timbre(embeddings: torch.Tensor, order_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Official ``unpack_timbre_embeddings``: rows [N, C] of batch items ``order_mask`` [N] -> [B, K, C] and a
    long mask [B, K], K = the most references any item has; each item keeps its rows in packed order, zeros after.

    B is ``max(order_mask) + 1`` (an item above every listed one with no reference does not exist). The official
    one-hot matmul places rows exactly like this scatter for finite values.
    """
    n = embeddings.shape[0]
    batch = int(order_mask.max().item()) + 1
    counts = torch.bincount(order_mask, minlength=batch)
    slots = int(counts.max().item())
    starts = torch.cumsum(counts, 0) - counts
    # position of each row within its item: rank among the rows of that item, in packed order
    order = torch.argsort(order_mask * n + torch.arange(n, device=embeddings.device), stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=embeddings.device) - starts[order_mask[order]]
    flat = order_mask * slots + rank
    out = embeddings.new_zeros(batch * slots, embeddings.shape[-1]).index_copy(0, flat, embeddings)
    mask = torch.zeros(batch * slots, dtype=torch.long, device=embeddings.device).index_fill(0, flat, 1)
    return out.view(batch, slots, -1), mask.view(batch, slots)


class AceStepLyricEncoder(EncoderStack):
    """Lyric token embeddings [B, L, text_hidden_dim] with mask [B, L] -> [B, L, C]."""

    def __init__(self, config, dtype=None, device=None, operations=None):
        super().__init__(config, config.num_lyric_encoder_hidden_layers, dtype, device, operations)
        operations = ops.resolve(operations)
        self.embed_tokens = operations.Linear(
            config.text_hidden_dim, config.hidden_size, dtype=dtype, device=device
        )

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # official quirk, kept: the loop runs ``layers[:num_hidden_layers]`` (the DiT depth), i.e. all of them
        return self.run_layers(
            self.embed_tokens(inputs_embeds), attention_mask, self.config.num_hidden_layers
        )


class AceStepTimbreEncoder(EncoderStack):
    """Reference latents [N, T, timbre_hidden_dim] -> one timbre vector per reference, regrouped per item."""

    def __init__(self, config, dtype=None, device=None, operations=None):
        super().__init__(config, config.num_timbre_encoder_hidden_layers, dtype, device, operations)
        operations = ops.resolve(operations)
        self.embed_tokens = operations.Linear(
            config.timbre_hidden_dim, config.hidden_size, dtype=dtype, device=device
        )
        # Official quirk, kept: a learned special token whose prepend is commented out. It is in the checkpoint
        # but never read; the "timbre token" is the output at the first *frame*.
        self.special_token = nn.Parameter(torch.empty(1, 1, config.hidden_size, dtype=dtype, device=device))

    def forward(
        self, refer_audio_packed: torch.Tensor, refer_audio_order_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (timbre [B, K, C], mask [B, K]). No padding mask: every reference is a full 750-frame window."""
        x = self.run_layers(self.embed_tokens(refer_audio_packed), None, self.config.num_hidden_layers)
        return unpack_timbre(x[:, 0], refer_audio_order_mask)


class AceStepConditionEncoder(nn.Module):
    """``encoder`` of the official checkpoint."""

    def __init__(self, config, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.text_projector = operations.Linear(
            config.text_hidden_dim, config.hidden_size, bias=False, dtype=dtype, device=device
        )
        self.lyric_encoder = AceStepLyricEncoder(config, **kw)
        self.timbre_encoder = AceStepTimbreEncoder(config, **kw)

    def forward(
        self,
        text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        lyric_hidden_states: torch.Tensor,
        lyric_attention_mask: torch.Tensor,
        refer_audio_acoustic_hidden_states_packed: torch.Tensor,
        refer_audio_order_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> packed condition [B, Ll + K + Lt, C] and its bool mask (valid lyric, timbre, caption, then padding).

        text [B, Lt, text_hidden_dim] / lyric [B, Ll, text_hidden_dim] with masks [B, L]; references
        [N, 750, timbre_hidden_dim] with ``refer_audio_order_mask`` [N] (long, batch item of each reference).
        """
        text = self.text_projector(text_hidden_states)
        lyric = self.lyric_encoder(lyric_hidden_states, lyric_attention_mask)
        timbre, timbre_mask = self.timbre_encoder(
            refer_audio_acoustic_hidden_states_packed, refer_audio_order_mask
        )
        states, mask = pack_sequences(lyric, timbre, lyric_attention_mask, timbre_mask)
        return pack_sequences(states, text, mask, text_attention_mask)
