"""The official ACE-Step 1.5 text inputs of the DiT, as pure functions: task instructions, the metas block,
the caption prompt (``SFT_GEN_PROMPT``) and the lyric prompt, with the tokenizer limits.

Sources (official commit 89031b8): ``acestep/constants.py`` (the strings), ``core/generation/handler/``
``task_utils.generate_instruction``, ``prompt_utils`` (``_format_instruction``, ``_format_lyrics``,
``extract_caption_from_sft_format``), ``metadata_utils`` (``_build_metadata_dict``, ``_dict_to_meta_string``,
``_create_default_meta``), ``batch_prep.prepare_batch_data`` and ``handler.py`` (``generate_music``,
``_prepare_batch``). The format strings are data and are reproduced exactly, quirks included (each is named
where it happens).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

CAPTION_MAX_LENGTH = 256  # official _prepare_batch: text_tokenizer(text_prompt, ..., max_length=256)
LYRIC_MAX_LENGTH = 2048  # official _prepare_batch: text_tokenizer(lyrics_text, ..., max_length=2048)
SAMPLE_RATE = 48000  # official prepare_batch_data: duration = src samples / 48000.0
DEFAULT_DURATION = 30  # official _dict_to_meta_string: meta_dict.get("duration", ..., 30)
# official handler generate_music(vocal_language="en"); inference.py's GenerationParams default is "unknown"
DEFAULT_VOCAL_LANGUAGE = "en"

# constants.py SFT_GEN_PROMPT, a triple-quoted string: the newline after <|endoftext|> is part of it.
SFT_GEN_PROMPT = "# Instruction\n{}\n\n# Caption\n{}\n\n# Metas\n{}<|endoftext|>\n"
LYRIC_PROMPT = "# Languages\n{}\n\n# Lyric\n{}<|endoftext|>"  # prompt_utils._format_lyrics

DEFAULT_DIT_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"
TASK_INSTRUCTIONS = {  # constants.py
    "text2music": "Fill the audio semantic mask based on the given conditions:",
    "repaint": "Repaint the mask area based on the given conditions:",
    "cover": "Generate audio semantic tokens based on the given conditions:",
    "extract": "Extract the {TRACK_NAME} track from the audio:",
    "extract_default": "Extract the track from the audio:",
    "lego": "Generate the {TRACK_NAME} track based on the audio context:",
    "lego_default": "Generate the track based on the audio context:",
    "complete": "Complete the input track with {TRACK_CLASSES}:",
    "complete_default": "Complete the input track:",
}
TASK_TYPES = ("text2music", "repaint", "cover", "extract", "lego", "complete")
TASK_TYPES_TURBO = ("text2music", "repaint", "cover")
TRACK_NAMES = (
    "woodwinds", "brass", "fx", "synth", "strings", "percussion",
    "keyboard", "guitar", "bass", "drums", "backing_vocals", "vocals",
)  # fmt: skip
VALID_LANGUAGES = (
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en",
    "es", "fa", "fi", "fr", "he", "hi", "hr", "ht", "hu", "id",
    "is", "it", "ja", "ko", "la", "lt", "ms", "ne", "nl", "no",
    "pa", "pl", "pt", "ro", "ru", "sa", "sk", "sr", "sv", "sw",
    "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "yue", "zh",
    "unknown",
)  # fmt: skip


# --- Instructions -------------------------------------------------------------------------------------------------


def task_instruction(
    task_type: str, track_name: str | None = None, track_classes: Sequence[str] | None = None
) -> str:
    """``generate_instruction``: the instruction of a task. extract/lego name one track (upper-cased),
    complete lists ``track_classes`` upper-cased and joined by " | "; without them the ``*_default`` text. An
    unknown task gets the text2music instruction."""
    if task_type in ("text2music", "repaint", "cover"):
        return TASK_INSTRUCTIONS[task_type]
    if task_type in ("extract", "lego"):
        if track_name:
            return TASK_INSTRUCTIONS[task_type].format(TRACK_NAME=track_name.upper())
        return TASK_INSTRUCTIONS[f"{task_type}_default"]
    if task_type == "complete":
        if track_classes:
            return TASK_INSTRUCTIONS["complete"].format(
                TRACK_CLASSES=" | ".join(t.upper() for t in track_classes)
            )
        return TASK_INSTRUCTIONS["complete_default"]
    return TASK_INSTRUCTIONS["text2music"]


def format_instruction(instruction: str) -> str:
    """``_format_instruction``: a ':' appended unless the instruction already ends with one (no stripping, so
    "text: " becomes "text: :")."""
    return instruction if instruction.endswith(":") else instruction + ":"


def has_audio_codes(audio_codes: str | Sequence[str] | None) -> bool:
    """``generate_music._has_audio_codes``: any non-blank code string."""
    if isinstance(audio_codes, (list, tuple)):
        return any((c or "").strip() for c in audio_codes)
    return bool(audio_codes and str(audio_codes).strip())


def resolve_task(
    task_type: str, instruction: str, audio_codes: str | Sequence[str] | None = None
) -> tuple[str, str]:
    """``generate_music``'s switch: text2music with audio codes becomes cover, with the cover instruction. Any
    other task keeps its type and the caller's instruction (which the official ``generate_music`` does not
    derive from the task: its default is the text2music text)."""
    if task_type == "text2music" and has_audio_codes(audio_codes):
        return "cover", TASK_INSTRUCTIONS["cover"]
    return task_type, instruction


def is_cover(instruction: str, has_code_hint: bool = False) -> bool:
    """``_prepare_batch``'s is_cover for an item without a repaint range (a repainting item is never a
    cover)."""
    text = instruction.lower()
    return (
        "generate audio semantic tokens" in text and "based on the given conditions" in text
    ) or has_code_hint


# --- Metas --------------------------------------------------------------------------------------------------------


def target_duration(src_samples: int | None = None, audio_duration: float | None = None) -> float | None:
    """``prepare_batch_data``'s duration: the source audio's length at 48 kHz when there is one, else
    ``audio_duration`` if positive (``generate_music`` turns a non-positive one into None), else None."""
    if src_samples is not None:
        return src_samples / float(SAMPLE_RATE)
    if audio_duration is not None and float(audio_duration) > 0:
        return float(audio_duration)
    return None


def metas_dict(bpm=None, keyscale: str = "", timesignature: str = "", duration: float | None = None) -> dict:
    """``_build_metadata_dict`` as ``prepare_batch_data`` calls it. Quirks: any falsy bpm (None, 0, "") is
    "N/A"; keyscale and time signature are tested stripped but kept unstripped; the duration is ``int``
    (truncated) and absent without one (it then reads 30 seconds)."""
    d = {"bpm": bpm if bpm else "N/A", "keyscale": keyscale if keyscale.strip() else "N/A"}
    ok = timesignature.strip() and timesignature != "N/A"
    d["timesignature"] = timesignature if ok else "N/A"
    if duration is not None:
        d["duration"] = f"{int(duration)} seconds"
    return d


def metas_text(meta: dict | str | None) -> str:
    """``_parse_metas`` of one item: a string is used as it is; a dict through ``_dict_to_meta_string``
    (aliases tempo / time_signature / key / scale / length; a number of seconds is truncated with ``int``, a
    non-string duration that is not a number becomes 30 seconds); None (or anything else) the default
    block."""
    if isinstance(meta, str):
        return meta
    if not isinstance(meta, dict):
        meta = {}
    bpm = meta.get("bpm", meta.get("tempo", "N/A"))
    timesignature = meta.get("timesignature", meta.get("time_signature", "N/A"))
    keyscale = meta.get("keyscale", meta.get("key", meta.get("scale", "N/A")))
    duration = meta.get("duration", meta.get("length", DEFAULT_DURATION))
    if isinstance(duration, (int, float)):
        duration = f"{int(duration)} seconds"
    elif not isinstance(duration, str):
        duration = f"{DEFAULT_DURATION} seconds"
    return f"- bpm: {bpm}\n- timesignature: {timesignature}\n- keyscale: {keyscale}\n- duration: {duration}\n"


def metas(bpm=None, keyscale: str = "", timesignature: str = "", duration: float | None = None) -> str:
    """The metas block of the caption prompt from the user's values, e.g.
    ``"- bpm: 120\\n- timesignature: 4\\n- keyscale: C major\\n- duration: 30 seconds\\n"``; missing values
    read N/A."""
    return metas_text(metas_dict(bpm, keyscale, timesignature, duration))


# --- Prompts ------------------------------------------------------------------------------------------------------


def caption_from_sft_format(caption: str) -> str:
    """``extract_caption_from_sft_format`` (``prepare_batch_data``): a caption pasted in the SFT prompt format
    is cut down to its "# Caption" body, stripped; any other caption is kept as it is."""
    if "# Instruction" in caption and "# Caption" in caption:
        match = re.search(r"#\s*Caption\s*\n(.*?)(?:\n\s*#\s*Metas|$)", caption, re.DOTALL)
        if match:
            return match.group(1).strip()
    return caption


def caption_prompt(caption: str, metas_block: str, instruction: str = DEFAULT_DIT_INSTRUCTION) -> str:
    """The text encoder's caption input: ``SFT_GEN_PROMPT`` with the instruction (':' enforced), the caption
    and the metas block, ending ``<|endoftext|>\\n`` (the tokenizer then appends its own
    ``<|endoftext|>``)."""
    return SFT_GEN_PROMPT.format(format_instruction(instruction), caption, metas_block)


def lyric_prompt(lyrics: str, language: str = DEFAULT_VOCAL_LANGUAGE) -> str:
    """The lyric input: ``# Languages`` / ``# Lyric`` headers, ending ``<|endoftext|>``. Empty lyrics stay
    empty (no "[Instrumental]" is put in by the handler)."""
    return LYRIC_PROMPT.format(language, lyrics)


def dit_prompts(
    caption: str,
    lyrics: str,
    *,
    instruction: str = DEFAULT_DIT_INSTRUCTION,
    vocal_language: str = DEFAULT_VOCAL_LANGUAGE,
    bpm=None,
    keyscale: str = "",
    timesignature: str = "",
    duration: float | None = None,
) -> tuple[str, str]:
    """(caption prompt, lyric prompt) of one item as ``generate_music`` -> ``prepare_batch_data`` ->
    ``_prepare_batch`` build them: the caption taken out of an SFT-formatted paste, the metas from the user's
    values (``duration`` from ``target_duration``). The metas reach ``_prepare_batch`` as a string, so nothing
    in them replaces the caption or language there."""
    block = metas(bpm, keyscale, timesignature, duration)
    return caption_prompt(caption_from_sft_format(caption), block, instruction), lyric_prompt(
        lyrics, vocal_language
    )
