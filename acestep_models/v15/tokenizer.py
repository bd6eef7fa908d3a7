"""The Qwen3-Embedding tokenizer of ACE-Step 1.5 (Qwen's byte-level BPE), with the official call's output.

The official handler calls ``AutoTokenizer.from_pretrained(<checkpoints>/Qwen3-Embedding-0.6B)`` one prompt at
a time (``tokenizer(text, padding="longest", truncation=True, max_length=256 or 2048)``) and right-pads the
batch itself with ``pad_token_id`` (``_pad_sequences``). That fast tokenizer is the folder's
``tokenizer.json``:
- NFC normalisation; Qwen2's split regex, then byte-level (GPT-2) bytes-to-characters; BPE with no unknown
  token;
- 26 added tokens after the 151,643 BPE tokens (``<|endoftext|>`` = 151643 ... ``</think>`` = 151668), matched
  in the raw text, so the ``<|endoftext|>`` that the prompt formats write is one token;
- a post-processor that **appends ``<|endoftext|>``** to every sequence (Qwen3-Embedding's
  ``TemplateProcessing``, ``$A <|endoftext|>``: the embedding model pools its last token). Truncation keeps
  room for it, so an item is at most ``max_length`` ids and always ends with it: a caption prompt ends
  ``... <|endoftext|> \\n <|endoftext|>``, a lyric prompt ``... <|endoftext|> <|endoftext|>``.
ComfyUI ships the same BPE as ``comfy/text_encoders/qwen25_tokenizer/{vocab,merges}`` (Qwen2.5's, whose added
tokens 151665-151668 differ from Qwen3's); ``from_vocab_merges`` builds the Qwen3-Embedding tokenizer from
those two files plus the Qwen3 added tokens and the appended ``<|endoftext|>``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

# Qwen2/2.5/3 pre-tokenizer split (tokenizer.json "pre_tokenizer" Split pattern, behaviour "isolated").
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
ENDOFTEXT = "<|endoftext|>"  # Qwen3-Embedding pad_token, and the token its post-processor appends
# Qwen3's added tokens in id order after the BPE vocabulary (151643...), with their "special" flag
# (Qwen3 tokenizer_config.json added_tokens_decoder; none is normalised or strips spaces).
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    *((t, True) for t in (
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
        "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
        "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    )),
    *((t, False) for t in (
        "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
        "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
    )),
)  # fmt: skip


def _bpe_from_vocab_merges(vocab: dict[str, int], merges: list[tuple[str, str]], append_eos: bool):
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    tok = Tokenizer(
        models.BPE(
            vocab=vocab, merges=merges, dropout=None, unk_token=None, continuing_subword_prefix="",
            end_of_word_suffix="", fuse_unk=False, byte_fallback=False,
        )
    )  # fmt: skip
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    for content, special in QWEN3_ADDED_TOKENS:  # one at a time: ids follow the vocabulary in this order
        token = AddedToken(
            content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special
        )
        (tok.add_special_tokens if special else tok.add_tokens)([token])
    post = [processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)]
    if append_eos:
        eos = tok.token_to_id(ENDOFTEXT)
        post.append(
            processors.TemplateProcessing(
                single=f"$A:0 {ENDOFTEXT}:0", pair=f"$A:0 {ENDOFTEXT}:0 $B:1 {ENDOFTEXT}:1",
                special_tokens=[(ENDOFTEXT, eos)],
            )
        )  # fmt: skip
    tok.post_processor = processors.Sequence(post)
    return tok


class Qwen3Tokenizer:
    """Token ids as the official per-prompt call gives them (``<|endoftext|>`` appended, truncated to
    ``max_length`` keeping it), and batches right-padded with the pad id as the handler pads them.

    Build it with ``from_folder`` (the official ``Qwen3-Embedding-0.6B/``: ``tokenizer.json``, what
    ``AutoTokenizer`` reads, else ``vocab.json`` + ``merges.txt``), ``from_tokenizer_json`` or
    ``from_vocab_merges`` (ComfyUI's ``qwen25_tokenizer`` files).
    """

    def __init__(self, tokenizer):
        self._tok = tokenizer  # a tokenizers.Tokenizer
        self._tok.no_padding()
        self.pad_id: int = tokenizer.token_to_id(ENDOFTEXT)
        if self.pad_id is None:
            raise ValueError(f"Qwen3 tokenizer: no {ENDOFTEXT} token (the pad token) in the vocabulary")

    @classmethod
    def from_folder(cls, folder: str | Path) -> Qwen3Tokenizer:
        folder = Path(folder)
        if (folder / "tokenizer.json").is_file():
            return cls.from_tokenizer_json(folder / "tokenizer.json")
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return cls.from_vocab_merges(folder / "vocab.json", folder / "merges.txt")
        raise FileNotFoundError(
            f"Qwen3 tokenizer: neither tokenizer.json nor vocab.json + merges.txt in {folder}"
        )

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> Qwen3Tokenizer:
        """The file as the official fast tokenizer reads it (its own post-processor decides the appended
        EOS)."""
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    @classmethod
    def from_vocab_merges(
        cls, vocab: str | Path | dict[str, int], merges: str | Path | Sequence, append_eos: bool = True
    ) -> Qwen3Tokenizer:
        """Qwen's BPE from ``vocab.json`` / ``merges.txt`` (paths or their parsed contents) with the Qwen3
        added tokens after the vocabulary and, unless ``append_eos`` is False (a plain Qwen3 LM tokenizer),
        the ``<|endoftext|>`` that Qwen3-Embedding appends. The files' own ``tokenizer_config.json`` is not
        read: ComfyUI's is Qwen2.5-VL's, with other tokens at 151665-151668."""
        if not isinstance(vocab, dict):
            vocab = json.loads(Path(vocab).read_text(encoding="utf-8"))
        if isinstance(merges, (str, Path)):
            lines = Path(merges).read_text(encoding="utf-8").splitlines()
            merges = [tuple(m.split(" ")) for m in lines if m and not m.startswith("#version")]
        return cls(_bpe_from_vocab_merges(dict(vocab), [tuple(m) for m in merges], append_eos))

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def encode(self, text: str, max_length: int) -> list[int]:
        """Ids of one text as the official call gives them: the backend truncates to ``max_length`` minus what
        the post-processor adds, then appends it (as transformers' fast tokenizer, ``truncation=True``)."""
        self._tok.enable_truncation(max_length, strategy="longest_first", direction="right")
        return self._tok.encode(text, add_special_tokens=True).ids

    def batch(
        self, texts: str | Sequence[str], max_length: int, pad_to: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids [B, L] (int64) and attention_mask [B, L] (bool): each text tokenized alone, right-padded
        with the pad id to the longest (official ``_prepare_batch`` + ``_pad_sequences``).

        ``pad_to`` pads to a given length instead, as the official non-cover prompts are padded to the length
        of the main caption batch. Like the official ``F.pad``, a negative amount crops: an item longer than
        ``pad_to`` loses its last ids (its appended ``<|endoftext|>`` first).
        """
        if isinstance(texts, str):
            texts = [texts]
        seqs = [self.encode(t, max_length) for t in texts]
        L = max(len(s) for s in seqs) if pad_to is None else pad_to
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), L), dtype=torch.bool)
        for b, s in enumerate(seqs):
            s = s[:L]
            ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[b, : len(s)] = True
        return ids, mask
