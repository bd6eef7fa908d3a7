"""Prompt and lyrics -> the tensors the DiT is conditioned on (the official pipeline's pre-processing in
``ACEStepPipeline.__call__``: ``get_text_embeddings``, ``get_text_embeddings_null``, ``tokenize_lyrics``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .lyric_tokenizer import MAX_LYRIC_TOKENS
from .text_encoder import encode_text, query_temperature


@dataclass
class Conditioning:
    """One prompt and its lyrics, batch 1 (the sampler repeats them per batch item, as the official pipeline)."""

    text: torch.Tensor  # [1, L, D] UMT5 last_hidden_state
    text_mask: torch.Tensor  # [1, L] long
    lyric_ids: torch.Tensor  # [1, T] long ([[0]] for empty lyrics)
    lyric_mask: torch.Tensor  # [1, T] long ([[0]] for empty lyrics)
    speaker: (
        torch.Tensor
    )  # [1, 512] zeros: the released model was trained with speaker embeddings it never got
    text_null: torch.Tensor | None = None  # [1, L, D] ERG-tag "null" text (None when use_erg_tag=False)

    def to(self, device=None, dtype: torch.dtype | None = None) -> Conditioning:
        """Floating tensors cast to ``dtype`` (when given), everything moved to ``device``."""

        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            return x.to(
                device=device, dtype=dtype if dtype is not None and x.is_floating_point() else x.dtype
            )

        return Conditioning(*(move(getattr(self, f)) for f in self.__dataclass_fields__))


@torch.no_grad()
def encode_conditioning(
    models,
    prompt: str,
    lyrics: str,
    *,
    use_erg_tag: bool = True,
    speaker: torch.Tensor | None = None,
    device=None,
) -> Conditioning:
    """``models``: ``checkpoint.ACEStepModels``. The text through UMT5 (and, with ``use_erg_tag``, again with the
    queries of blocks 8-9 scaled by 0.01: the official ERG "null" prompt), the lyrics through the official lyric
    tokenizer (at most ``MAX_LYRIC_TOKENS``: longer lyrics are a ``LyricsTooLong`` error), and a zero speaker
    embedding of the DiT's width unless ``speaker`` [1, S] is given."""
    device = next(models.text_encoder.parameters()).device if device is None else device
    # the lyrics first: lyrics longer than the model takes fail here, before any model runs
    lyric_ids, lyric_mask = models.lyric_tokenizer.lyric_ids_and_mask(lyrics or "", limit=MAX_LYRIC_TOKENS)
    prompt = prompt or ""  # official code needs a string; None would fail in its tokenizer
    text, text_mask = encode_text(models.text_encoder, models.text_tokenizer, [prompt], device)
    text_null = None
    if use_erg_tag:
        with query_temperature(models.text_encoder):
            text_null, _ = encode_text(models.text_encoder, models.text_tokenizer, [prompt], device)
    if speaker is None:
        width = models.dit.config.speaker_embedding_dim
        speaker = torch.zeros(1, width, dtype=text.dtype, device=device)
    return Conditioning(
        text=text,
        text_mask=text_mask,
        lyric_ids=lyric_ids.to(device),
        lyric_mask=lyric_mask.to(device),
        speaker=speaker.to(device),
        text_null=text_null,
    )
