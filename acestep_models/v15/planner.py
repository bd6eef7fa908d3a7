"""The 5 Hz LM planner of ACE-Step 1.5: the official two-phase ``LLMHandler.generate_with_stop_condition`` (``pt``
backend, commit 89031b8) on our ``lm.Qwen3ForCausalLM``.

Phase 1 (chain of thought) writes the song's metadata under the official constrained decoder
(``MetadataConstrainedLogitsProcessor``, re-implemented here as ``MetadataFSM``), phase 2 writes 5 audio codes per
second after that metadata. Both run the official sampling step: CFG on a left-padded ``[cond, uncond]`` batch
(float32 ``uncond + s * (cond - uncond)``), the constrained decoder, the repetition penalty (only if != 1), top-k,
top-p (on the untempered logits, keeping the first token over p), ``/ temperature``, softmax and
``torch.multinomial`` (argmax at temperature 0). The official code draws from torch's *global* RNG after the
caller's ``torch.manual_seed(seed)``; here a ``torch.Generator`` on the LM's device seeded with ``seed`` is drawn
the same way (one ``multinomial`` over the full vocabulary per token, phase 1 then phase 2), so on the CPU the
tokens are the official ones, token for token.

Speed (named where it happens): the prompt is one forward pass (both CFG rows at once, one batch); the KV cache
(``lm.KVCache``) is allocated for what the phase can write (``Planner.cache_columns``): the codes phase with a
target duration exactly its prompt + ``int(duration * 5)`` codes, at once (the EOS it forces after them is never
fed back); the CoT phase (official budget 4,032 tokens, some 30-300 used) ``CACHE_START`` columns past its
prompt, doubled when a caption runs longer. The codes phase keeps its mask and stop rule on the device: the
official rule ("EOS blocked until ``int(duration * 5)`` codes, then forced") fixes the number of steps in
advance, so no token is read back to the host until the phase ends, and its sampling reads nothing back either
(top-k / top-p mask in place; the draw is ``torch.multinomial``'s own algorithm written out, without its two
validity reads). On a CUDA device with the LM's weights resident, the codes phase's one-token forward is one CUDA
graph, captured at its first token and replayed for every other (``lm.CudaGraphStep``: the step attends over the
whole preallocated cache with the columns past its own masked, its column a device tensor; ``Planner.step``).
Phase 1 (tens of tokens) runs the decoder on the host, as the official one.

Official quirks reproduced:
- phase 1 never writes ``</think>``: with ``stop_at_reasoning`` the decoder forces EOS as soon as the ``</think>``
  fixed string begins, so the CoT text ends ``...timesignature: N\\n<|im_end|>`` and ``parse_lm_output`` reads it
  without its closing tag;
- the codes phase's length comes from the caller's ``target_duration`` only: the duration the CoT writes is not
  used (an all-auto call without ``target_duration`` decodes codes until EOS or ``max_new_tokens``);
- ``max_new_tokens`` of the codes phase is ``int(clamp(target_duration, 10, max_duration) * 5) + 10`` (capped at
  4032) while the decoder's target is ``int(target_duration * 5)``: a target above the tier's ``max_duration``
  is cut at the token limit without EOS;
- the language field is the top-1 of the valid first tokens (argmax of the CFG logits), not sampled;
- after a newline in the caption, an unindented top token opens the ``caption_ending`` window where every token is
  allowed (audio codes too) until one holds a ``:``; an unknown field name there moves on to ``duration``;
- left padding keeps its column positions (the official loop passes no ``position_ids``).

Batch mode (``Planner.plan(seeds=...)``, ``plan_generation(seeds=...)``) is the official pt backend's: the metadata
phase once, then the items' codes phases one after another on the same prompt, each after re-seeding the RNG with
the item's seed (the official code runs them one by one, so do we: one batched pass could change the float
rounding of the logits with the number of rows, and with it, now and then, a token).

Deliberate differences: ``use_constrained_decoding=False`` without CFG runs this loop without the decoder (the
official one calls transformers' ``generate`` with its own warper order and defaults); the ``vllm`` / ``mlx``
backends are not reproduced (they sample differently).
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..common.progress import Interrupt, Interrupted, Progress, check_interrupt
from .lm import CudaGraphStep, StaticStep

log = logging.getLogger(__name__)

# --- Official constants (acestep/constants.py, constrained_logits_processor.py, llm_inference.py) ---------------

DEFAULT_LM_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
DEFAULT_NEGATIVE_PROMPT = "NO USER INPUT"
VALID_LANGUAGES = (
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr", "he", "hi", "hr", "ht",
    "hu", "id", "is", "it", "ja", "ko", "la", "lt", "ms", "ne", "nl", "no", "pa", "pl", "pt", "ro", "ru", "sa",
    "sk", "sr", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "yue", "zh", "unknown",
)  # fmt: skip
KEYSCALE_NOTES = ("A", "B", "C", "D", "E", "F", "G")
KEYSCALE_ACCIDENTALS = ("", "#", "b", "♯", "♭")
KEYSCALE_MODES = ("major", "minor")
BPM_MIN, BPM_MAX = 30, 300
DURATION_MIN, DURATION_MAX = 10, 600
CPU_MAX_DURATION = 240  # official gpu_config "tier1" (CPU): max_duration_with_lm
VALID_TIME_SIGNATURES = (2, 3, 4, 6)
MAX_AUDIO_CODE = 63999  # codebook size 64000: codes above are never allowed
AUDIO_CODE_BASE = 151669  # id of <|audio_code_0|> (after Qwen3's 151,669 tokens)
AUDIO_CODE_TOKENS = 65535  # <|audio_code_0|> ... <|audio_code_65534|> in the official LM tokenizer
CAPTION_MAX_TOKENS = 512
MAX_MODEL_LEN = 4096  # official LLMHandler.max_model_len; max_new_tokens <= it - 64
CODES_PER_SECOND = 5
# KV-cache columns past the prompt a phase of unknown length starts with (a CoT: ~30 tokens, ~300 with a caption)
CACHE_START = 256
STEPS = ("auto", "eager", "static", "graph")  # the codes phase's decode step (Planner.step)
ENDOFTEXT, IM_END = "<|endoftext|>", "<|im_end|>"
THINK, THINK_END = "<think>", "</think>"
FIELD_ORDER = ("bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature")
CODE_RE = re.compile(r"<\|audio_code_\d+\|>")


# --- Tokenizer ----------------------------------------------------------------------------------------------------


class LMTokenizer:
    """The 5 Hz LM tokenizer as the official ``AutoTokenizer`` call uses it: Qwen3's BPE and added tokens, then
    the 65,535 ``<|audio_code_N|>`` tokens; nothing appended on encode; ``<|im_end|>`` is EOS, ``<|endoftext|>``
    the pad."""

    def __init__(self, tokenizer):
        self._tok = tokenizer  # a tokenizers.Tokenizer
        self._tok.no_padding()
        self._tok.no_truncation()
        self.eos_id = tokenizer.token_to_id(IM_END)
        self.pad_id = tokenizer.token_to_id(ENDOFTEXT)
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self._decoded: dict[int, str] = {}

    @classmethod
    def from_folder(cls, folder: str | Path) -> LMTokenizer:
        """``tokenizer.json`` of an official LM folder."""
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(Path(folder) / "tokenizer.json")))

    @classmethod
    def from_vocab_merges(cls, vocab, merges) -> LMTokenizer:
        """Qwen's ``vocab.json`` + ``merges.txt`` (ComfyUI's ``qwen25_tokenizer``) with Qwen3's added tokens and
        the audio-code tokens, as the official LM's tokenizer lays them out."""
        from tokenizers import AddedToken

        from .tokenizer import Qwen3Tokenizer

        tok = Qwen3Tokenizer.from_vocab_merges(vocab, merges, append_eos=False)._tok
        tok.add_tokens(
            [
                AddedToken(
                    f"<|audio_code_{i}|>", single_word=False, lstrip=False, rstrip=False, normalized=False
                )
                for i in range(AUDIO_CODE_TOKENS)
            ]
        )
        if tok.token_to_id("<|audio_code_0|>") != AUDIO_CODE_BASE:
            raise ValueError("5 Hz LM tokenizer: the audio-code tokens do not start at id 151669")
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def piece(self, token_id: int) -> str:
        """``decode([token_id])``, cached."""
        s = self._decoded.get(token_id)
        if s is None:
            s = self._decoded[token_id] = self.decode([token_id])
        return s

    def left_padded(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, L] left-padded with the pad id and the mask of real tokens (the official CFG batch)."""
        seqs = [self.encode(t) for t in texts]
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        valid = torch.zeros((len(seqs), L), dtype=torch.bool)
        for b, s in enumerate(seqs):
            if s:
                ids[b, L - len(s) :] = torch.tensor(s)
                valid[b, L - len(s) :] = True
        return ids, valid


# --- Prompts (the Qwen3 chat template as the official calls render it) -------------------------------------------


def _system() -> str:
    return f"<|im_start|>system\n# Instruction\n{DEFAULT_LM_INSTRUCTION}\n\n<|im_end|>\n"


def _has_negative(negative_prompt: str | None) -> bool:
    return bool(
        negative_prompt and negative_prompt.strip() and negative_prompt.strip() != DEFAULT_NEGATIVE_PROMPT
    )


def cot_prompt(
    caption: str, lyrics: str, negative: bool = False, negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
):
    """Official ``build_formatted_prompt`` (phase 1): ``add_generation_prompt=True``. The unconditional prompt
    drops the caption, or puts a meaningful negative prompt in its place."""
    if not negative:
        user = f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"
    elif _has_negative(negative_prompt):
        user = f"# Caption\n{negative_prompt}\n\n# Lyric\n{lyrics}\n"
    else:
        user = f"# Lyric\n{lyrics}\n"
    return f"{_system()}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def codes_prompt(
    caption: str,
    lyrics: str,
    cot_text: str,
    negative: bool = False,
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
) -> str:
    """Official ``build_formatted_prompt_with_cot`` (phase 2): the CoT as the assistant message, which the Qwen3
    template splits at ``</think>`` into its reasoning and content and renders ``<think>\\n{reasoning}\\n</think>
    \\n\\n{content}<|im_end|>\\n``. The unconditional prompt has the empty CoT ``<think>\\n</think>``."""
    if negative:
        cot_text = "<think>\n</think>"
        caption = negative_prompt if _has_negative(negative_prompt) else caption
    user = f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"
    content, reasoning = cot_text, ""
    if THINK_END in cot_text:
        content = cot_text.split(THINK_END)[-1].lstrip("\n")
        reasoning = cot_text.split(THINK_END)[0].rstrip("\n").split(THINK)[-1].lstrip("\n")
    assistant = (
        f"<|im_start|>assistant\n<think>\n{reasoning.strip(chr(10))}\n</think>\n\n{content.lstrip(chr(10))}"
    )
    text = f"{_system()}<|im_start|>user\n{user}<|im_end|>\n{assistant}<|im_end|>\n"
    return text if text.endswith("\n") else text + "\n"


def format_metadata_as_cot(metadata: dict) -> str:
    """Official ``_format_metadata_as_cot``: sorted YAML of the known fields; ``"x/4"`` -> ``"x"`` and digit
    strings -> ints."""
    import yaml

    items = {}
    for key in ("bpm", "caption", "duration", "keyscale", "language", "timesignature"):
        value = metadata.get(key)
        if value is None:
            continue
        if key == "timesignature" and value.endswith("/4"):
            value = value.split("/")[0]
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        items[key] = value
    body = yaml.dump(items, allow_unicode=True, sort_keys=True).strip() if items else ""
    return f"<think>\n{body}\n</think>"


def postprocess_caption(caption: str) -> str:
    """Official ``postprocess_caption``: YAML continuation lines joined with single spaces."""
    if not caption:
        return caption
    return " ".join(line.strip() for line in caption.split("\n") if line.strip())


def parse_lm_output(text: str) -> tuple[dict, str]:
    """Official ``parse_lm_output``: (metadata from the reasoning's ``key: value`` lines, every audio code token
    joined)."""
    codes = "".join(CODE_RE.findall(text))
    reasoning = None
    for pattern in (r"<think>(.*?)</think>", r"<reasoning>(.*?)</reasoning>"):
        m = re.search(pattern, text, re.DOTALL)
        if m:
            reasoning = m.group(1).strip()
            break
    if not reasoning:
        reasoning = (text.split("<|audio_code_")[0] if "<|audio_code_" in text else text).strip()
    metadata: dict = {}
    key, lines = None, []

    def save():
        nonlocal key, lines
        if key and lines:
            value = "\n".join(lines)
            if key in ("bpm", "duration"):
                try:
                    metadata[key] = int(value.strip())
                except ValueError:
                    metadata[key] = value.strip()
            elif key == "caption":
                metadata[key] = postprocess_caption(value)
            elif key in ("genres", "keyscale", "language", "timesignature"):
                metadata[key] = value.strip()
        key, lines = None, []

    for line in reasoning.split("\n") if reasoning else []:
        if line.strip().startswith("<"):
            continue
        if line and not line[0].isspace() and ":" in line:
            save()
            name, first = line.split(":", 1)
            key = name.strip().lower()
            if first.strip():
                lines.append(first)
        elif line.startswith((" ", "\t")) and key:
            lines.append(line)
    save()
    return metadata, codes


def has_all_metas(user_metadata: dict | None) -> bool:
    """Official ``has_all_metas``: the keys bpm, keyscale, timesignature and duration are present."""
    return bool(user_metadata) and all(
        k in user_metadata for k in ("bpm", "keyscale", "timesignature", "duration")
    )


# --- The constrained decoder ------------------------------------------------------------------------------------

_NAME_STATES = {f: f"{f}_name" for f in FIELD_ORDER}
_VALUE_STATES = {f: f"{f}_value" for f in FIELD_ORDER}
_FIXED = {
    "think_tag": THINK,
    "newline_after_think": "\n",
    **{f"{f}_name": f"{f}:" for f in FIELD_ORDER},
    "think_end_tag": THINK_END,
}
CODES, COMPLETED = "codes_generation", "completed"


class DecoderTables:
    """What the official processor precomputes from the tokenizer (once per tokenizer and ``max_duration``):
    the prefix trees of valid values (token-id tuples -> allowed next ids, keyed after the ``field:`` tokens of
    ``"field: value"``), the digit and newline ids, the audio-code id range and the fixed-string tokens."""

    def __init__(self, tok: LMTokenizer, max_duration: int):
        self.tok = tok
        self.vocab_size = tok.vocab_size
        self.newline = tok.encode("\n")[-1]
        self.backtick = tok.encode("`")[-1]
        self.eos = tok.eos_id
        self.digits = {d: tok.encode(str(d))[-1] for d in range(10)}
        self.think_end = tok.encode(THINK_END)
        keyscales = {
            f"{n}{a} {m}" for n in KEYSCALE_NOTES for a in KEYSCALE_ACCIDENTALS for m in KEYSCALE_MODES
        }
        self.trees = {
            "bpm": self._tree("bpm", [str(v) for v in range(BPM_MIN, BPM_MAX + 1)]),
            "duration": self._tree("duration", [str(v) for v in range(DURATION_MIN, max_duration + 1)]),
            "timesignature": self._tree("timesignature", [str(v) for v in VALID_TIME_SIGNATURES]),
            "keyscale": self._tree("keyscale", keyscales, first_is_note=True),
            "language": self._tree("language", list(VALID_LANGUAGES)),
        }
        self.code_ids = self._audio_code_ids()
        self._fixed: dict[str, int] = {}

    def _tree(self, name: str, values, first_is_note: bool = False) -> dict[tuple, set]:
        context = self.tok.encode(f"{name}:")
        tree: dict[tuple, set] = {}
        for value in values:
            full = self.tok.encode(f"{name}: {value}")
            if full[: len(context)] != context:
                continue
            ids = full[len(context) :]
            if not ids:
                continue
            if first_is_note:
                first = self.tok.piece(ids[0]).lstrip()
                if first and first[0].upper() not in "ABCDEFG":  # official: an empty first piece passes
                    continue
            for i in range(len(ids) + 1):
                allowed = tree.setdefault(tuple(ids[:i]), set())
                allowed.add(ids[i] if i < len(ids) else self.newline)
        return tree

    def _audio_code_ids(self) -> torch.Tensor:
        """Ids whose text is ``<|audio_code_N|>`` with N <= 63999 (the official scan of the vocabulary, done
        on the known id range)."""
        ids = []
        for i in range(AUDIO_CODE_BASE, min(self.vocab_size, AUDIO_CODE_BASE + AUDIO_CODE_TOKENS)):
            m = re.fullmatch(r"<\|audio_code_(\d+)\|>", self.tok.piece(i))
            if m and int(m.group(1)) <= MAX_AUDIO_CODE:
                ids.append(i)
        return torch.tensor(ids, dtype=torch.long)

    def fixed_token(self, remaining: str) -> int:
        """The official ``_get_allowed_tokens_for_fixed_string``: the longest prefix of ``remaining`` that is
        one token (a single character always is, in a byte-level BPE)."""
        hit = self._fixed.get(remaining)
        if hit is None:
            for end in range(len(remaining), 0, -1):
                ids = self.tok.encode(remaining[:end])
                if len(ids) == 1:
                    hit = ids[0]
                    break
            else:
                raise ValueError(f"5 Hz LM decoder: no token starts {remaining!r}")
            self._fixed[remaining] = hit
        return hit


def _whitelist(scores: torch.Tensor, allowed) -> torch.Tensor:
    """scores [1, V]: -inf everywhere but ``allowed`` (kept as they were)."""
    if not allowed:
        return scores.fill_(float("-inf"))
    idx = torch.tensor(list(allowed), dtype=torch.long, device=scores.device)
    kept = scores[0, idx].clone()
    scores.fill_(float("-inf"))
    scores[0, idx] = kept
    return scores


@dataclass
class MetadataFSM:
    """The official constrained decoder for one generation (``reset`` + the ``set_*`` calls of
    ``_setup_constrained_processor``): ``process(scores)`` masks the logits of the next token, ``update(token)``
    advances on the token drawn. Genres are always skipped by the official calls and are not implemented."""

    tables: DecoderTables
    phase: str = "cot"
    user_metadata: dict = field(default_factory=dict)
    stop_at_reasoning: bool = False
    skip_caption: bool = False
    skip_language: bool = False
    target_duration: float | None = None
    prompt_has_think_end: bool = False
    state: str = "think_tag"
    position: int = 0
    value: str = ""
    value_ids: list = field(default_factory=list)
    caption_after_newline: bool = False
    caption_tokens: int = 0
    caption_ending: bool = False
    pending_name: str = ""
    queue: list = field(default_factory=list)
    queue_field: str | None = None
    codes_count: int = 0

    @property
    def target_codes(self) -> int | None:
        d = self.target_duration
        return int(d * CODES_PER_SECOND) if d is not None and d > 0 else None

    def _skipped(self, name: str) -> bool:
        return (
            name == "genres"
            or (name == "caption" and self.skip_caption)
            or (name == "language" and self.skip_language)
        )

    def _next_field(self, name: str) -> str:
        for f in FIELD_ORDER[FIELD_ORDER.index(name) + 1 :]:
            if not self._skipped(f):
                return _NAME_STATES[f]
        return "think_end_tag"

    def _next_state(self, state: str) -> str | None:
        if state == "think_tag":
            return "newline_after_think"
        if state == "newline_after_think":
            return _NAME_STATES["bpm"]
        if state == "think_end_tag":
            return CODES
        if state == CODES:
            return COMPLETED
        name, _, kind = state.rpartition("_")
        if name in FIELD_ORDER and not self._skipped(name):
            return _VALUE_STATES[name] if kind == "name" else self._next_field(name)
        return None  # a skipped field's states have no transition (as the official map)

    def _enter(self, state: str) -> None:
        self.state, self.position, self.value, self.value_ids = state, 0, "", []
        self.caption_after_newline, self.caption_tokens = False, 0
        self.caption_ending, self.pending_name = False, ""

    def _advance(self) -> None:
        nxt = self._next_state(self.state)
        if nxt is not None:
            self._enter(nxt)

    # -- masking -----------------------------------------------------------------------------------------------

    def process(self, scores: torch.Tensor) -> torch.Tensor:
        """scores [1, V] float32 -> masked scores (in place where the official code is)."""
        t = self.tables
        if self.state == COMPLETED:
            return scores
        if self.phase == "codes" and self.state == "think_tag" and self.prompt_has_think_end:
            self.state, self.codes_count = CODES, 0
        if self.state == CODES:
            scores = scores + codes_mask(t, scores.device)
            target = self.target_codes
            if target is not None:
                if self.codes_count < target:
                    scores[:, t.eos] = float("-inf")
                else:
                    eos = scores[:, t.eos].clone()
                    scores.fill_(float("-inf"))
                    scores[:, t.eos] = eos
            return scores
        return self._process_metadata(scores)

    def _inject(self, scores: torch.Tensor, name: str) -> torch.Tensor | None:
        value = self.user_metadata.get(name)
        if value is None or self.queue:
            return None
        ids = self.tables.tok.encode(f" {value}\n")
        if not ids:
            return None
        self.queue, self.queue_field = ids, name
        return _whitelist(scores, [ids[0]])

    def _process_metadata(self, scores: torch.Tensor) -> torch.Tensor:
        t = self.tables
        if self.queue:
            return _whitelist(scores, [self.queue[0]])
        state = self.state
        if state in _FIXED:
            fixed = _FIXED[state]
            remaining = fixed[self.position :]
            if remaining:
                if state == "think_end_tag" and self.stop_at_reasoning and len(remaining) <= 10:
                    return _whitelist(scores, [t.eos])  # official: EOS as soon as </think> would start
                return _whitelist(scores, [t.fixed_token(remaining)])
            if state == "think_end_tag" and self.stop_at_reasoning:
                return _whitelist(scores, [t.eos])
            self._advance()
            if self.state in _FIXED:
                return scores
            return self._process_metadata(scores.zero_())
        name = state[: -len("_value")] if state.endswith("_value") else None
        if name in ("bpm", "duration", "timesignature", "keyscale", "language") and not self.value_ids:
            injected = self._inject(scores, name)
            if injected is not None:
                return injected
        if name == "caption":
            return self._process_caption(scores)
        if name == "duration" and self.target_duration is not None:
            target = str(int(self.target_duration))
            if len(self.value) < len(target):
                return _whitelist(scores, [t.digits[int(target[len(self.value)])]])
            return _whitelist(scores, [t.newline])
        if name in ("bpm", "duration"):
            allowed = list(t.trees[name].get(tuple(self.value_ids), ()))
            return _whitelist(scores, allowed)
        if name == "language" and not self.value_ids:
            candidates = list(t.trees["language"].get((), ()))
            if not candidates:
                return _whitelist(scores, [t.newline])
            best = int(torch.argmax(scores[0, torch.tensor(candidates, device=scores.device)]))
            return _whitelist(scores, [candidates[best]])  # official: top-1, not sampled
        if name in ("keyscale", "language", "timesignature"):
            here = t.trees[name].get(tuple(self.value_ids))
            if here is not None and t.newline in here:
                return _whitelist(scores, [t.newline])
            allowed = list(here or ())
            if not allowed and name != "timesignature":
                return _whitelist(scores, [t.newline])
            return _whitelist(scores, allowed)
        return scores

    def _process_caption(self, scores: torch.Tensor) -> torch.Tensor:
        t = self.tables
        if self.user_metadata.get("caption") is not None and not self.queue and not self.value:
            injected = self._inject(scores, "caption")
            if injected is not None:
                return injected
        if self.caption_after_newline:
            top = t.tok.piece(int(torch.argmax(scores[0])))
            self.caption_after_newline = False
            if top and top[0] not in " \t":  # an unindented line: the next field's name, written freely
                self.caption_ending, self.pending_name = True, ""
                return scores
        if self.caption_ending:
            return scores
        scores[0, t.backtick] = float("-inf")
        scores = scores + caption_mask(t, scores.device)
        if self.caption_tokens >= CAPTION_MAX_TOKENS:
            return _whitelist(scores, [t.newline])
        return scores

    # -- state update ------------------------------------------------------------------------------------------

    def update(self, token: int) -> None:
        t = self.tables
        if self.state == COMPLETED:
            return
        if self.state == CODES:
            self.codes_count += 1
            return
        if self.queue:
            self.queue.pop(0)
            if not self.queue:
                name, self.queue_field = self.queue_field, None
                self.state, self.position, self.value, self.value_ids = self._next_field(name), 0, "", []
            return
        piece = t.tok.piece(token)
        state = self.state
        if state in _FIXED:
            self.position += len(piece)
            if self.position >= len(_FIXED[state]):
                if state == "think_end_tag" and self.stop_at_reasoning:
                    self.state, self.position, self.value, self.value_ids = COMPLETED, 0, "", []
                else:
                    self._advance()
        elif state in ("bpm_value", "duration_value", "timesignature_value"):
            if token == t.newline:
                self._advance()
            else:
                self.value_ids.append(token)
                if piece.strip().isdigit():
                    self.value += piece.strip()
        elif state in ("keyscale_value", "language_value"):
            if token == t.newline:
                self._advance()
            else:
                self.value_ids.append(token)
                self.value += piece
        elif state == "caption_value":
            self.caption_tokens += 1
            self.value += piece
            self.caption_after_newline = "\n" in piece
            if self.caption_ending:
                self.pending_name += piece
                if ":" in piece:
                    name = self.pending_name.strip().rstrip(":").strip().lower()
                    if name in ("duration", "genres", "keyscale", "language", "timesignature"):
                        self.state, self.position, self.value, self.value_ids = _VALUE_STATES[name], 0, "", []
                        self.caption_ending, self.pending_name = False, ""
                    else:  # official: an unknown name moves on to the next field
                        self.caption_ending, self.pending_name = False, ""
                        self._advance()


_MASKS: dict[tuple, torch.Tensor] = {}


def codes_mask(t: DecoderTables, device) -> torch.Tensor:
    """[1, V] float32: 0 at the valid audio codes and EOS, -inf elsewhere (official ``non_audio_code_mask``)."""
    key = ("codes", id(t), str(device))
    if key not in _MASKS:
        m = torch.full((1, t.vocab_size), float("-inf"))
        m[0, t.code_ids] = 0.0
        m[0, t.eos] = 0.0
        _MASKS[key] = m.to(device)
    return _MASKS[key]


def caption_mask(t: DecoderTables, device) -> torch.Tensor:
    """[1, V] float32: -inf at the valid audio codes (official ``audio_code_mask``)."""
    key = ("caption", id(t), str(device))
    if key not in _MASKS:
        m = torch.zeros((1, t.vocab_size))
        m[0, t.code_ids] = float("-inf")
        _MASKS[key] = m.to(device)
    return _MASKS[key]


# --- Sampling (the official order) -------------------------------------------------------------------------------


def repetition_penalty(scores: torch.Tensor, ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' ``RepetitionPenaltyLogitsProcessor``: every id seen so far (prompt included)."""
    s = torch.gather(scores, 1, ids)
    s = torch.where(s < 0, s * penalty, s / penalty)
    return scores.scatter(1, ids, s)


def top_k_filter(scores: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """transformers' ``TopKLogitsWarper``, in place (``masked_fill_``: a boolean index would read back)."""
    if top_k is not None and top_k > 0:
        scores.masked_fill_(scores < torch.topk(scores, top_k)[0][..., -1, None], float("-inf"))
    return scores


def top_p_filter(scores: torch.Tensor, top_p: float | None) -> torch.Tensor:
    """The official top-p: on the untempered scores, keeping the first token over ``top_p``; in place."""
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(scores, descending=True)
        cum = torch.cumsum(torch.softmax(sorted_logits.float(), dim=-1), dim=-1)
        remove = cum > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        scores.masked_fill_(remove.scatter(1, sorted_idx, remove), float("-inf"))
    return scores


def sample(
    scores: torch.Tensor, temperature: float, generator: torch.Generator | None, checked: bool = True
) -> torch.Tensor:
    """[1, V] -> [1] token: softmax(scores / T) through ``torch.multinomial`` (argmax at T <= 0).

    ``checked=False`` draws without reading anything back: ``torch.multinomial(probs, 1)`` is, in ATen
    (``multinomial`` in ``Distributions.cpp``), two host reads that check ``probs`` (finite, >= 0, not all 0),
    then ``argmax(probs / q)`` with ``q = empty_like(probs).exponential_(1, generator)``; that second part is
    written out here, so the token and the generator's state are the same (tests/acestep_models/v15/
    test_lm.py draws both ways). For the codes phase, whose mask always leaves codes to draw."""
    if temperature > 0:
        probs = torch.softmax(scores.float() / temperature, dim=-1)
        if checked:
            return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        q = torch.empty_like(probs).exponential_(1, generator=generator)
        return torch.argmax(probs / q, dim=-1)
    return torch.argmax(scores, dim=-1)


@dataclass
class Sampling:
    temperature: float = 0.85
    cfg_scale: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0


# --- The decoding loops -----------------------------------------------------------------------------------------


@dataclass
class PhaseOutput:
    prompt: str
    uncond_prompt: str | None
    prompt_ids: list  # [rows][L]
    generated_ids: list
    text: str
    max_new_tokens: int
    seconds: float = 0.0


class Planner:
    """The 5 Hz LM (``lm.Qwen3ForCausalLM``) with its tokenizer and the decoder tables; ``plan(**kwargs)`` is
    one official ``generate_with_stop_condition`` call. ``max_duration``: the official GPU tier's
    ``max_duration_with_lm`` (240 s on the CPU; None: 240 on the CPU, else the top tier's 600)."""

    def __init__(
        self, model, tokenizer: LMTokenizer, max_duration: int | None = None, step: str = "auto"
    ):  # fmt: skip
        self.model, self.tok = model, tokenizer
        if step not in STEPS:
            raise ValueError(f"5 Hz LM: step must be one of {STEPS}, not {step!r}")
        self.step = step
        if max_duration is None:
            max_duration = CPU_MAX_DURATION if model.device.type == "cpu" else DURATION_MAX
        self.max_duration = int(max_duration)
        if tokenizer.vocab_size != model.config.vocab_size:
            raise ValueError(
                f"5 Hz LM: the tokenizer has {tokenizer.vocab_size} tokens, the model {model.config.vocab_size}"
            )
        self.tables = DecoderTables(tokenizer, self.max_duration)

    # -- budget --

    def max_new_tokens(self, target_duration: float | None, phase: str) -> int:
        """Official ``_compute_max_new_tokens`` (the pt backend: fallback 4096, capped at 4096 - 64)."""
        if target_duration is not None and target_duration > 0:
            eff = max(DURATION_MIN, min(min(self.max_duration, DURATION_MAX), target_duration))
            n = int(eff * CODES_PER_SECOND) + (10 if phase == "codes" else 500)
        else:
            n = 4096
        return min(n, MAX_MODEL_LEN - 64)

    @staticmethod
    def codes_steps(fsm: MetadataFSM, max_new_tokens: int) -> int:
        """Tokens the codes-only loop draws: ``int(duration * 5)`` codes and the EOS the decoder then forces,
        within the budget (a target above the tier's max duration is cut at ``max_new_tokens``, without EOS);
        without a target duration, the budget (EOS may end it sooner)."""
        target = fsm.target_codes
        return max_new_tokens if target is None else min(max_new_tokens, target + 1)

    def cache_columns(
        self, prompt_len: int, max_new_tokens: int, codes: MetadataFSM | None
    ) -> tuple[int, int]:
        """(the most KV-cache columns a phase can write, the columns allocated at its start). ``codes``: the
        decoder of a codes-only phase. Every token drawn but the last is fed back, so a codes phase with a target
        duration writes exactly its prompt + ``codes_steps - 1`` columns, allocated at once; a phase of
        unknown length (the CoT, or codes without a target or without the decoder) may write its whole budget
        and starts with ``CACHE_START`` columns past its prompt (``lm.KVCache`` doubles them when full)."""
        if codes is not None and codes.target_codes is not None:
            n = prompt_len + self.codes_steps(codes, max_new_tokens) - 1
            return n, n
        return prompt_len + max_new_tokens, prompt_len + min(max_new_tokens, CACHE_START)

    # -- one phase --

    @torch.no_grad()
    def run_phase(
        self,
        prompt: str,
        uncond_prompt: str | None,
        sampling: Sampling,
        fsm: MetadataFSM | None,
        max_new_tokens: int,
        generator: torch.Generator | None,
        progress: Progress | None = None,
        interrupt: Interrupt | None = None,
    ) -> PhaseOutput:
        t0 = time.perf_counter()
        model, device = self.model, self.model.device
        cfg = sampling.cfg_scale > 1.0 and uncond_prompt is not None
        texts = [prompt, uncond_prompt] if cfg else [prompt]
        ids, valid = self.tok.left_padded(texts)
        B, L = ids.shape
        if fsm is not None:
            seq = ids[0].tolist()
            fsm.prompt_has_think_end = any(
                seq[i : i + len(self.tables.think_end)] == self.tables.think_end for i in range(len(seq))
            )
        codes_only = fsm is not None and fsm.phase == "codes" and fsm.prompt_has_think_end
        most, now = self.cache_columns(L, max_new_tokens, fsm if codes_only else None)
        cache = model.new_cache(B, most, initial=now)
        ids_d, valid_d = ids.to(device), valid.to(device)
        # the cond row's ids (prompt, then the tokens drawn), on the device: what the repetition penalty reads
        row = torch.empty((1, L + max_new_tokens), dtype=torch.long, device=device)
        row[:, :L] = ids_d[:1]
        logits = model(ids_d, cache, valid=valid_d)  # one pass over the whole prompt (both rows)
        if codes_only:
            generated = self._codes_loop(logits, cache, row, L, sampling, fsm, max_new_tokens, generator,
                                         progress, interrupt)  # fmt: skip
        else:
            generated = self._host_loop(logits, cache, row, L, sampling, fsm, max_new_tokens, generator,
                                        progress, interrupt)  # fmt: skip
        text = self.tok.decode(generated)
        return PhaseOutput(prompt, uncond_prompt if cfg else None, ids.tolist(), generated, text, max_new_tokens,
                           time.perf_counter() - t0)  # fmt: skip

    def _guided(self, logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
        if logits.shape[0] == 2:
            u = logits[1:2].float()
            return u + sampling.cfg_scale * (logits[0:1].float() - u)
        return logits

    def _after_fsm(self, scores, row, n, sampling, generator, checked=True):
        if sampling.repetition_penalty != 1.0:
            scores = repetition_penalty(scores, row[:, :n], sampling.repetition_penalty)
        scores = top_k_filter(scores, sampling.top_k)
        scores = top_p_filter(scores, sampling.top_p)
        return sample(scores, sampling.temperature, generator, checked=checked)

    def _step(self, token: torch.Tensor, cache, B: int) -> torch.Tensor:
        return self.model(token.view(1, 1).expand(B, 1), cache)

    def _codes_stepper(self, cache, B: int):
        """The codes phase's one-token step: one CUDA graph per token where the LM is on a CUDA device with every
        weight there (not streamed by a host) and the cache is allocated whole (a target duration); else the
        forward as it is. ``step``: "auto", "eager", "static" (the graph's step without the graph, any device)."""
        mode = self.step
        if mode == "auto":
            model = self.model
            resident = all(t.device == cache.device for t in (*model.parameters(), *model.buffers()))
            mode = (
                "graph"
                if cache.device.type == "cuda" and resident and cache.capacity == cache.max_len
                else "eager"
            )
        eager = lambda token: self._step(token, cache, B)  # noqa: E731
        if mode == "static":
            return StaticStep(self.model, cache)
        if mode != "graph":
            return eager
        state = {"step": None}

        def first_graph_then_eager_if_it_fails(token):
            if state["step"] is None:
                try:
                    graph = CudaGraphStep(self.model, cache)
                    logits = graph(token)
                    state["step"] = graph
                    return logits
                # a GPU, driver or layer set the capture does not work with: decode eagerly
                except Exception as e:
                    log.warning(
                        "5 Hz LM: no CUDA graph for the codes phase (%s: %s); decoding eagerly",
                        type(e).__name__,
                        e,
                    )
                    state["step"] = eager
            return state["step"](token)

        return first_graph_then_eager_if_it_fails

    def _host_loop(self, logits, cache, row, L, sampling, fsm, max_new, generator, progress, interrupt):
        """Phase 1: the decoder reads each token on the host (as the official one)."""
        B = logits.shape[0]
        stops = {self.tok.eos_id, self.tok.pad_id}
        out = []
        for i in range(max_new):
            check_interrupt(interrupt)
            scores = self._guided(logits, sampling)
            if fsm is not None:
                scores = fsm.process(scores)
            token = self._after_fsm(scores, row, L + i, sampling, generator)
            tid = int(token)
            if fsm is not None:
                fsm.update(tid)
            out.append(tid)
            row[0, L + i] = token[0]
            if progress is not None:
                progress(i + 1, max_new)
            if tid in stops:
                break
            logits = self._step(token, cache, B)
        return out

    def _codes_loop(self, logits, cache, row, L, sampling, fsm, max_new, generator, progress, interrupt):
        """Phase 2: codes only. The mask is a device tensor and the stop rule a count: EOS is blocked for the
        first ``target_codes`` steps and forced at step ``target_codes``, so the number of steps is known and no
        token comes back to the host before the end. Without a target, EOS may come any time: the loop reads
        the tokens back every ``CHECK_EVERY`` steps and cuts at the first EOS (the draws after it are never
        used). Per step nothing is read back and nothing is built from host data: the masks exist before the
        loop, they are added in place, and the draw skips ``torch.multinomial``'s checks (``sample``)."""
        B, device = logits.shape[0], logits.device
        t = self.tables
        mask = codes_mask(t, device)
        target = fsm.target_codes
        steps = self.codes_steps(fsm, max_new)
        only_eos = torch.full_like(mask, float("-inf"))  # official: keep EOS's own score, -inf elsewhere
        only_eos[0, t.eos] = 0.0
        block_eos = mask.clone()
        block_eos[0, t.eos] = float("-inf")
        CHECK_EVERY = 64
        step = self._codes_stepper(cache, B)
        for i in range(steps):
            check_interrupt(interrupt)
            scores = self._guided(
                logits, sampling
            )  # a fresh [1, V] or the step's own logits: masked in place
            scores.add_(mask if target is None else block_eos if i < target else only_eos)
            token = self._after_fsm(scores, row, L + i, sampling, generator, checked=False)
            row[:, L + i] = token
            if progress is not None:
                progress(i + 1, steps)
            if target is None and (i + 1) % CHECK_EVERY == 0:
                if bool((row[0, L : L + i + 1] == t.eos).any()):
                    break
            if i + 1 < steps:
                logits = step(token)
        fsm.codes_count += steps
        generated = row[0, L : L + steps].tolist()
        if target is None and t.eos in generated:
            generated = generated[: generated.index(t.eos) + 1]
        return generated

    # -- the official entry --

    def plan(
        self,
        caption: str,
        lyrics: str,
        infer_type: str,
        temperature: float = 0.85,
        cfg_scale: float = 1.0,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        use_constrained_decoding: bool = True,
        target_duration: float | None = None,
        user_metadata: dict | None = None,
        use_cot_metas: bool = True,
        use_cot_caption: bool = True,
        use_cot_language: bool = True,
        seed: int | None = None,
        seeds: list[int] | None = None,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        interrupt: Interrupt | None = None,
        **ignored,
    ) -> dict:
        """Official ``generate_with_stop_condition``: ``{"metadata", "audio_codes", "cot_text", "phases"}``.
        ``seed`` seeds a generator on the LM's device (the official ``torch.manual_seed(seed)`` before the call);
        or pass ``generator``.

        Batch mode (``seeds``: two or more, the official ``batch_size=len(seeds), seeds=seeds``), as the official
        pt backend runs it: the metadata phase once (from ``generator``, unseeded by ``seeds``), then one codes
        phase per item, one after another, each after ``manual_seed(seeds[i])`` of the generator (the official
        per-item ``torch.manual_seed``) on the same prompt; ``metadata`` (the same for every item) and
        ``audio_codes`` are lists, the phases ``cot``, ``codes_0``, ``codes_1``, ... One seed or none is single
        mode (the official ``batch_size=1`` ignores ``seeds``)."""
        infer_type = (infer_type or "").strip().lower()
        if infer_type not in ("dit", "llm_dit"):
            raise ValueError(f"infer_type must be 'dit' or 'llm_dit', not {infer_type!r}")
        if generator is None:
            generator = torch.Generator(self.model.device)
            generator.manual_seed(int(seed) if seed is not None else torch.seed())
        batch = list(seeds) if seeds is not None and len(seeds) > 1 else None
        sampling = Sampling(temperature, cfg_scale, top_k, top_p, repetition_penalty)
        phases: dict[str, PhaseOutput] = {}
        if not has_all_metas(user_metadata) and use_cot_metas:
            fsm = None
            if use_constrained_decoding:
                fsm = MetadataFSM(
                    self.tables, phase="cot", user_metadata=dict(user_metadata or {}), stop_at_reasoning=True,
                    skip_caption=not use_cot_caption, skip_language=not use_cot_language,
                )  # fmt: skip
            out = self.run_phase(
                cot_prompt(caption, lyrics),
                cot_prompt(caption, lyrics, negative=True, negative_prompt=negative_prompt),
                sampling, fsm, self.max_new_tokens(None, "cot"), generator, progress, interrupt,
            )  # fmt: skip
            phases["cot"] = out
            metadata, _ = parse_lm_output(out.text)
        else:
            metadata = {k: v for k, v in (user_metadata or {}).items() if v is not None}
        if infer_type == "dit":
            if batch is None:
                return {"metadata": metadata, "audio_codes": "", "phases": phases}
            return {"metadata": [dict(metadata) for _ in batch], "audio_codes": [""] * len(batch),
                    "phases": phases}  # fmt: skip
        cot_text = format_metadata_as_cot(metadata)
        codes = []
        for i, item_seed in enumerate(batch or [None]):
            if item_seed is not None:  # official batch mode: torch.manual_seed(seeds[i]) before item i
                generator.manual_seed(int(item_seed))
            # a fresh decoder per item (the official processor's reset); the batch items' calls are the single
            # mode's codes call (no user metadata, caption and language skipped: the CoT is in the prompt)
            fsm = None
            if use_constrained_decoding:
                fsm = MetadataFSM(
                    self.tables, phase="codes", skip_caption=True, skip_language=True,
                    target_duration=target_duration,
                )  # fmt: skip
            out = self.run_phase(
                codes_prompt(caption, lyrics, cot_text),
                codes_prompt(caption, lyrics, cot_text, negative=True, negative_prompt=negative_prompt),
                sampling, fsm, self.max_new_tokens(target_duration, "codes"), generator, progress, interrupt,
            )  # fmt: skip
            phases["codes" if batch is None else f"codes_{i}"] = out
            codes.append(parse_lm_output(out.text)[1])
        if batch is None:
            return {"metadata": metadata, "audio_codes": codes[0], "phases": phases, "cot_text": cot_text}
        return {"metadata": [dict(metadata) for _ in batch], "audio_codes": codes, "phases": phases,
                "cot_text": cot_text}  # fmt: skip


# --- The LM half of the official end-to-end inference.generate_music ------------------------------------------

SKIP_LM_TASKS = ("cover", "repaint")  # official: these tasks never run the LM


def _user_metadata(p: dict) -> dict | None:
    """Official: the user's bpm / keyscale / timesignature / duration as the LM's ``user_metadata`` (bpm and
    duration as ints; "N/A", empty and non-positive values left out)."""
    meta: dict = {}
    try:
        if p.get("bpm") is not None and float(p["bpm"]) > 0:
            meta["bpm"] = int(float(p["bpm"]))
    except (TypeError, ValueError):
        pass
    for ours, theirs in (("key_scale", "keyscale"), ("time_signature", "timesignature")):
        value = (p.get(ours) or "").strip()
        if value and value.lower() != "n/a":
            meta[theirs] = value
    try:
        if p.get("audio_duration") is not None and float(p["audio_duration"]) > 0:
            meta["duration"] = int(float(p["audio_duration"]))
    except (TypeError, ValueError):
        pass
    return meta or None


def plan_kwargs(params: dict, lm: dict) -> dict | None:
    """The ``generate_with_stop_condition`` keyword arguments the official ``inference.generate_music`` passes
    for ``params`` (``generate_music`` names over ``pipeline.OFFICIAL_DEFAULTS``) and ``lm`` (the
    ``inference.GenerationParams`` LM fields, ``params.LM_DEFAULTS``); None where it runs no LM (task cover or
    repaint, or thinking and every use_cot_* off)."""
    if params.get("task_type", "text2music") in SKIP_LM_TASKS:
        return None
    if not (lm["thinking"] or lm["use_cot_caption"] or lm["use_cot_language"] or lm["use_cot_metas"]):
        return None
    codes = params.get("audio_code_string") or ""
    user_codes = (
        any((c or "").strip() for c in codes) if isinstance(codes, list) else bool(str(codes).strip())
    )
    top_k, top_p = lm["lm_top_k"], lm["lm_top_p"]
    return {
        "caption": params.get("captions") or "",
        "lyrics": params.get("lyrics") or "",
        "infer_type": "llm_dit" if not user_codes and lm["thinking"] else "dit",
        "temperature": lm["lm_temperature"],
        "cfg_scale": lm["lm_cfg_scale"],
        "negative_prompt": lm["lm_negative_prompt"],
        "top_k": None if not top_k else int(top_k),
        "top_p": None if not top_p or top_p >= 1.0 else top_p,
        "target_duration": params.get("audio_duration"),
        "user_metadata": _user_metadata(params),
        "use_cot_caption": lm["use_cot_caption"],
        "use_cot_language": lm["use_cot_language"],
        "use_cot_metas": lm["use_cot_metas"],
        "use_constrained_decoding": lm["use_constrained_decoding"],
    }


def apply_plan(params: dict, lm: dict, infer_type: str, metadata: dict, codes: str | list[str]) -> dict:
    """``params`` as the official ``inference.generate_music`` hands them to the DiT after the LM: the codes (for
    ``llm_dit``), the missing bpm / key / time signature / duration from the LM's metadata, the LM caption with
    ``use_cot_caption``. Official quirk kept: with ``use_cot_language`` it reads ``metadata["vocal_language"]``,
    which ``parse_lm_output`` never writes (it writes ``language``), so the user's ``vocal_language`` stays."""
    p = dict(params)
    if infer_type == "llm_dit":
        p["audio_code_string"] = codes
    if metadata:
        if p.get("bpm") is None and metadata.get("bpm") and metadata["bpm"] not in ("N/A", ""):
            try:
                p["bpm"] = int(metadata["bpm"])
            except (TypeError, ValueError):
                pass
        if not p.get("key_scale") and metadata.get("keyscale") and metadata["keyscale"] != "N/A":
            p["key_scale"] = metadata["keyscale"]
        if (
            not p.get("time_signature")
            and metadata.get("timesignature")
            and metadata["timesignature"] != "N/A"
        ):
            p["time_signature"] = metadata["timesignature"]
        duration = p.get("audio_duration")
        if duration is None or float(duration) <= 0:
            value = metadata.get("duration", -1)
            if value not in ("N/A", ""):
                try:
                    p["audio_duration"] = float(value)
                except (TypeError, ValueError):
                    pass
    if lm["use_cot_caption"] and "caption" in metadata:
        p["captions"] = metadata["caption"]
    if lm["use_cot_language"] and "vocal_language" in metadata:  # never (the quirk above)
        p["vocal_language"] = metadata["vocal_language"]
    return p


LM_BATCH_CHUNK_SIZE = 8  # official GenerationConfig.lm_batch_chunk_size: items per LM call


def lm_seeds(params: dict, global_seed: int) -> tuple[list[int], random.Random]:
    """Official ``inference.generate_music`` with batch > 1: its own ``dit_handler.prepare_seeds`` call, made before
    the handler's, with the Python global RNG that ``global_seed`` stands for: (the items' seeds, which seed the
    LM's codes phases, the RNG after it, from which the handler's ``prepare_seeds`` draws again: pass it to
    ``pipeline.generate(rng=...)``). Official quirk: an item with a random seed (``use_random_seed``, -1, or the
    items after a single seed) gets one seed in the LM and the next draw in the DiT."""
    from .pipeline import DEFAULT_BATCH_SIZE, OFFICIAL_DEFAULTS, prepare_seeds

    p = {**OFFICIAL_DEFAULTS, **params}
    batch = p["batch_size"] if p["batch_size"] is not None else DEFAULT_BATCH_SIZE
    rng = random.Random(int(global_seed))
    return prepare_seeds(max(1, int(batch)), p["seed"], p["use_random_seed"], rng), rng


def plan_generation(
    planner: Planner, params: dict, lm: dict, seed: int, progress: Progress | None = None,
    interrupt: Interrupt | None = None, seeds: list[int] | None = None,
) -> tuple[dict, dict | None]:  # fmt: skip
    """The LM half of the official ``inference.generate_music``: (the DiT's ``generate_music`` parameters, the plan
    ``{"infer_type", "metadata", "audio_codes", "cot_text", "time_costs"}`` or None where no LM runs). ``seed``
    seeds the LM's sampling: official runs draw from torch's global RNG unseeded, which ``global_seed`` stands for
    here (deliberate: a generator of its own, so the DiT's own global-RNG draws, SDE renoising and VAE sampling,
    do not follow the LM's; with the turbo ODE on codes there are none).

    ``seeds`` (batch > 1: ``lm_seeds``): the official batch mode. The items go to the LM in chunks of
    ``LM_BATCH_CHUNK_SIZE``, one ``generate_with_stop_condition(batch_size=len(chunk), seeds=chunk)`` each (see
    ``Planner.plan``), all drawing from the one generator (the official global RNG, re-seeded per item); the DiT
    gets every item's codes (a list) and the first chunk's metadata; the plan records ``seeds`` too. Official
    quirks: each chunk writes its own metadata (and its items' codes follow it) but only the first chunk's reach
    the DiT; a last chunk of one item runs in single mode, not re-seeded."""
    kwargs = plan_kwargs(params, lm)
    if kwargs is None:
        return dict(params), None
    if seeds is None or len(seeds) < 2:
        out = planner.plan(**kwargs, seed=seed, progress=progress, interrupt=interrupt)
        metadata, codes = out["metadata"], out["audio_codes"]
        plan = {
            "infer_type": kwargs["infer_type"],
            "metadata": metadata,
            "audio_codes": codes,
            "cot_text": out.get("cot_text", ""),
            "time_costs": {f"{k}_time": v.seconds for k, v in out["phases"].items()},
        }
        return apply_plan(params, lm, kwargs["infer_type"], metadata, codes), plan
    generator = torch.Generator(planner.model.device).manual_seed(int(seed))
    chunks = [seeds[i : i + LM_BATCH_CHUNK_SIZE] for i in range(0, len(seeds), LM_BATCH_CHUNK_SIZE)]
    metadata, cot_text, codes, times = None, "", [], {}
    for chunk in chunks:
        out = planner.plan(**kwargs, seeds=chunk, generator=generator, progress=progress, interrupt=interrupt)
        one = len(chunk) == 1  # single mode: a dict and a string
        if metadata is None:
            metadata, cot_text = (out["metadata"] if one else out["metadata"][0]), out.get("cot_text", "")
        codes += [out["audio_codes"]] if one else out["audio_codes"]
        for k, v in out["phases"].items():
            key = f"{k.split('_')[0]}_time"  # cot, codes (per item: codes_0, codes_1, ...)
            times[key] = times.get(key, 0.0) + v.seconds
    plan = {"infer_type": kwargs["infer_type"], "metadata": metadata, "audio_codes": codes, "cot_text": cot_text,
            "seeds": [int(s) for s in seeds], "time_costs": times}  # fmt: skip
    return apply_plan(params, lm, kwargs["infer_type"], metadata, codes), plan


def load_planner(
    path: str | Path, device="cpu", dtype: torch.dtype = torch.float32, tokenizer: str | Path | None = None,
    max_duration: int | None = None, operations=None,
) -> Planner:  # fmt: skip
    """The planner from an official ``acestep-5Hz-lm-*`` folder (or a single LM file; see checkpoint.load_lm)."""
    from . import checkpoint as C

    model, tok = C.load_lm(path, dtype=dtype, device=device, tokenizer=tokenizer, operations=operations)
    return Planner(model, tok, max_duration=max_duration)


__all__ = [
    "Interrupted",
    "LMTokenizer",
    "MetadataFSM",
    "Planner",
    "cot_prompt",
    "codes_prompt",
    "format_metadata_as_cot",
    "lm_seeds",
    "load_planner",
    "parse_lm_output",
    "plan_generation",
]
