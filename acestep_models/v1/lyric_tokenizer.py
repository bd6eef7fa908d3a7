"""Lyrics to the token ids the ACE-Step v1 lyric encoder reads, exactly as the official pipeline makes them.

Official ``ACEStepPipeline.tokenize_lyrics``: ``[START]``, then for each line of the lyrics (stripped) its
language (see ``language.py``; structure lines such as ``[verse]`` always English), the cleaned text
(``lyric_cleaners.py``) prefixed with ``[lang]`` and spaces spelled ``[SPACE]``, BPE-encoded with the VoiceBPE
vocabulary, and ``[SPACE]`` as the line separator; an empty line is the separator alone. Empty lyrics are fed
as ids ``[[0]]`` with mask ``[[0]]``.

The vocabulary is ComfyUI's ``comfy/text_encoders/ace_lyrics_tokenizer/vocab.json`` (the same file as the
official ``acestep/models/lyrics_utils/vocab.json``); ``find_lyric_vocab`` looks for it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from ..common.weights import host_comfy_dir as _comfy_package_dir  # (a module name the tests replace)
from .language import SUPPORTED_LANGUAGES, line_language
from .lyric_cleaners import MissingDependency, clean, dictionary_warnings

log = logging.getLogger(__name__)

START_ID = 261  # "[START]", first id of every lyric sequence (official tokenize_lyrics)
LINE_END_ID = 2  # "[SPACE]", closes every line; an empty line is this id alone
UNK_TOKEN = "[UNK]"
STRUCTURE_RE = re.compile(r"\[.*?\]")  # official structure_pattern, used with .match: a line starting "[...]"
VOCAB_NAMES = ("vocab.json", "ace_lyrics_tokenizer/vocab.json")
COMFY_VOCAB = Path("text_encoders", "ace_lyrics_tokenizer", "vocab.json")  # inside ComfyUI's comfy package
# The longest lyrics ACE-Step v1 takes, in tokens: what the official model was trained on (the official
# acestep/text2music_dataset.py cuts every lyric to lyric_token_idx[:4096], "Limit lyric context length"). The
# official pipeline passes longer lyrics on unchecked, and the lyric encoder's attention grows with the square of
# their length: 50,000 characters asked for 57.6 GB.
MAX_LYRIC_TOKENS = 4096
# Lyrics take 0.8 (Chinese) to 1.9 (English with blank lines) characters per token on the official examples and
# the parity corpus, so text of more than 4 characters per token of the limit (16,384) cannot fit: it is refused
# before it is tokenized, which would take seconds (the language detection grows with the square of a line).
MAX_CHARS_PER_TOKEN = 4


@functools.cache
def _warn_dictionaries() -> None:
    for line in dictionary_warnings():  # once per process: the first time a lyric tokenizer is made
        log.warning("ACE-Step lyrics: %s", line)


class LyricsTooLong(ValueError):
    """Lyrics longer than the model takes: the message says how long they are, the limit and where it falls."""


@dataclass
class LineReport:
    """One lyric line as the model sees it.

    ``lang`` is the language it was encoded with (None for an empty line), ``text`` the stripped line, ``ids``
    its token ids without the line separator, ``unknown`` how many of them are ``[UNK]``. ``error`` is set when
    the official pipeline would drop the line (its encoder raised); such a line contributes no ids at all.
    """

    lang: str | None
    text: str
    ids: list[int]
    unknown: int = 0
    error: str | None = None


class LyricTokenizer:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.unk_id = tokenizer.token_to_id(UNK_TOKEN)

    @classmethod
    def from_vocab(cls, path: str | Path) -> LyricTokenizer:
        path = Path(path)
        tokenizer = Tokenizer.from_file(str(path))
        problem = _vocab_problem(tokenizer)
        if problem:
            raise ValueError(f"{path} is not the ACE-Step lyric vocabulary: {problem}")
        _warn_dictionaries()
        return cls(tokenizer)

    def encode_line(self, text: str, lang: str) -> list[int]:
        """Official ``VoiceBpeTokenizer.encode``: one line's ids in ``lang``, led by its ``[lang]`` token."""
        lang = lang.split("-")[0]
        text = clean(text, lang)
        marker = "zh-cn" if lang == "zh" else lang
        return self.tokenizer.encode(f"[{marker}]{text}".replace(" ", "[SPACE]")).ids

    def analyse(self, lyrics: str) -> list[LineReport]:
        """Per line of ``lyrics``: language, ids and unknown-token count, as ``tokenize`` uses them."""
        return list(self.reports(lyrics))

    def reports(self, lyrics: str) -> Iterator[LineReport]:
        """``analyse``, one line at a time."""
        for line in lyrics.split("\n"):
            line = line.strip()
            if not line:
                yield LineReport(None, "", [])
                continue
            lang = "en" if STRUCTURE_RE.match(line) else line_language(line)
            try:
                ids = self.encode_line(line, lang)
            except MissingDependency:
                raise
            except Exception as e:  # the official pipeline prints the error and leaves the line out
                log.warning("lyric line %r (%s) cannot be tokenized and is left out: %s", line, lang, e)
                yield LineReport(lang, line, [], 0, f"{type(e).__name__}: {e}")
                continue
            yield LineReport(lang, line, ids, sum(i == self.unk_id for i in ids))

    def tokenize(self, lyrics: str, limit: int | None = None) -> list[int]:
        """The official ``tokenize_lyrics``: ``[START]`` then each line's ids and ``[SPACE]``.

        With ``limit`` (the model's: ``MAX_LYRIC_TOKENS``), longer lyrics are a ``LyricsTooLong`` error, raised as
        soon as the count passes it, and before any tokenizing for text too long to fit."""
        lines = lyrics.split("\n")
        if limit is not None:
            check_length(lyrics, limit)
        ids = [START_ID]
        for n, report in enumerate(self.reports(lyrics), 1):
            if report.error is None:
                ids += report.ids + [LINE_END_ID]
            if limit is not None and len(ids) > limit:
                raise LyricsTooLong(
                    f"the lyrics are longer than the {limit} tokens ACE-Step v1 reads (the official limit): they "
                    f"pass it at line {n} of {len(lines)} ({report.text[:40]!r})"
                )
        return ids

    def lyric_ids_and_mask(
        self, lyrics: str | None, limit: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)``, both long ``[1, T]``, as the official pipeline feeds the lyric encoder; ``limit``: as
        in ``tokenize`` (``encode_conditioning`` passes ``MAX_LYRIC_TOKENS``).

        Empty lyrics (the empty string; whitespace still counts as lyrics there) give ``[[0]]`` and ``[[0]]``.
        """
        if not lyrics:
            return torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long)
        ids = torch.tensor([self.tokenize(lyrics, limit)], dtype=torch.long)
        return ids, torch.ones_like(ids)


def check_length(lyrics: str, limit: int = MAX_LYRIC_TOKENS) -> None:
    """A ``LyricsTooLong`` error for text too long to fit in ``limit`` tokens at any rate lyrics tokenize at (see
    ``MAX_CHARS_PER_TOKEN``), without tokenizing it: cheap, for checking before anything else runs."""
    chars = sum(len(line.strip()) for line in lyrics.split("\n"))
    if chars > MAX_CHARS_PER_TOKEN * limit:
        raise LyricsTooLong(
            f"the lyrics are {chars:,} characters long; ACE-Step v1 reads at most {limit} lyric tokens (the official "
            f"limit), which no lyrics of more than {MAX_CHARS_PER_TOKEN * limit:,} characters fit in"
        )


def _vocab_problem(tokenizer: Tokenizer) -> str | None:
    expected = {"[START]": START_ID, "[SPACE]": LINE_END_ID, "[en]": SUPPORTED_LANGUAGES["en"]}
    for token, token_id in expected.items():
        if tokenizer.token_to_id(token) != token_id:
            return f"token {token} should have id {token_id}, has {tokenizer.token_to_id(token)}"
    if tokenizer.token_to_id(UNK_TOKEN) is None:
        return f"no {UNK_TOKEN} token"
    return None


def _is_lyric_vocab(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            added = {t["content"]: t["id"] for t in json.load(f).get("added_tokens", [])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False
    return added.get("[START]") == START_ID and added.get("[SPACE]") == LINE_END_ID


def find_lyric_vocab(explicit: str | Path | None = None, near: str | Path | None = None) -> Path:
    """The lyric vocabulary file: ``explicit``, else beside the checkpoint ``near``, else ComfyUI's copy.

    ``explicit`` may be the file or a folder holding it; when given it must be right (no silent fallback).
    ``near`` is a checkpoint file or folder: ``vocab.json`` or ``ace_lyrics_tokenizer/vocab.json`` next to it.
    ComfyUI's copy is found through the importable ``comfy`` package or the ``COMFYUI_PATH`` variable.
    """
    looked: list[str] = []

    def candidates(folder: Path) -> list[Path]:
        return [folder / name for name in VOCAB_NAMES]

    def pick(paths: list[Path]) -> Path | None:
        for p in paths:
            if p.is_file() and _is_lyric_vocab(p):
                return p
            looked.append(f"{p} ({'not the lyric vocabulary' if p.is_file() else 'missing'})")
        return None

    if explicit is not None:
        path = Path(explicit).expanduser()
        found = pick(candidates(path) if path.is_dir() else [path])
        if found:
            return found
        raise FileNotFoundError(f"ACE-Step lyric vocabulary not found at the path given: {'; '.join(looked)}")

    if near is not None:
        near = Path(near).expanduser()
        found = pick(candidates(near if near.is_dir() else near.parent))
        if found:
            return found

    comfy_dirs = []
    package = _comfy_package_dir()
    if package is not None:
        comfy_dirs.append(package)
    else:
        looked.append("the ComfyUI `comfy` package (not importable)")
    if os.environ.get("COMFYUI_PATH"):
        comfy_dirs.append(Path(os.environ["COMFYUI_PATH"]).expanduser() / "comfy")
    else:
        looked.append("$COMFYUI_PATH (not set)")
    found = pick([d / COMFY_VOCAB for d in comfy_dirs])
    if found:
        return found
    raise FileNotFoundError(
        "ACE-Step lyric vocabulary (vocab.json) not found; looked at: "
        + "; ".join(looked)
        + ". Pass its path explicitly (CLI: --vocab), put it next to the checkpoint, or set COMFYUI_PATH to a "
        "ComfyUI folder (it ships comfy/text_encoders/ace_lyrics_tokenizer/vocab.json)."
    )
