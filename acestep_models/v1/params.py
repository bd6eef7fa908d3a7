"""Generation parameters in the official ACE-Step v1 vocabulary, read and checked before any model loads.

The names and defaults are the keywords of the official ``ACEStepPipeline.__call__`` (acestep/pipeline_ace_step.py),
so a settings file carries over between the official app and this engine in both directions: ``load_params``
reads the ``*_input_params.json`` files the official app writes beside its outputs (every one in the official
``examples/`` folder loads), and the CLI writes the same format.

Values are normalised to one form: seeds and ``oss_steps`` become lists of ints (``None`` = random seeds),
numbers become ``int``/``float``, missing keys take the official default. Anything the official code would crash
on, silently ignore or turn into something else is a ``ParamsError`` naming the key and the value.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..common.guidance import CFG_TYPES
from ..common.noise import MAX_SEED
from .sampler import WINDOW_SECONDS
from .schedulers import MAX_STEPS, SCHEDULERS

# Every keyword of the official ACEStepPipeline.__call__ with its default, less format/save_path/debug (where and
# how to write files is the caller's business). Kept in the official order.
OFFICIAL_DEFAULTS: dict[str, Any] = {
    "audio_duration": 60.0,  # seconds; <= 0 draws a random length in [30, 240) (official __call__)
    "prompt": None,
    "lyrics": None,
    "infer_step": 60,
    "guidance_scale": 15.0,
    "scheduler_type": "euler",
    "cfg_type": "apg",
    "omega_scale": 10.0,
    "manual_seeds": None,
    "guidance_interval": 0.5,
    "guidance_interval_decay": 0.0,
    "min_guidance_scale": 3.0,
    "use_erg_tag": True,
    "use_erg_lyric": True,
    "use_erg_diffusion": True,
    "oss_steps": None,
    "guidance_scale_text": 0.0,
    "guidance_scale_lyric": 0.0,
    "audio2audio_enable": False,
    "ref_audio_strength": 0.5,
    "ref_audio_input": None,
    "lora_name_or_path": "none",
    "lora_weight": 1.0,
    "retake_seeds": None,
    "retake_variance": 0.5,
    "task": "text2music",
    "repaint_start": 0,
    "repaint_end": 0,
    "src_audio_path": None,
    "edit_target_prompt": None,
    "edit_target_lyrics": None,
    "edit_n_min": 0.0,
    "edit_n_max": 1.0,
    "edit_n_avg": 1,
    "batch_size": 1,
}
OFFICIAL_KEYS = tuple(OFFICIAL_DEFAULTS)

# Keys the official app writes into *_input_params.json that are records, not inputs.
INFORMATIONAL_KEYS = ("timecosts", "audio_path", "format")
SEEDS_ALIAS = "actual_seeds"  # the official file's name for the seeds it used (manual_seeds when read back)

TASKS = ("text2music", "retake", "repaint", "extend", "edit", "audio2audio")
SOURCE_TASKS = ("repaint", "extend", "edit")  # tasks that start from src_audio_path
PATH_KEYS = ("src_audio_path", "ref_audio_input")

MAX_SECONDS = WINDOW_SECONDS  # the official UI's longest song and extend's cap

# Value kinds, for JSON checking and for parsing command-line flags.
INT_KEYS = ("infer_step", "edit_n_avg", "batch_size")
FLOAT_KEYS = (
    "audio_duration", "guidance_scale", "omega_scale", "guidance_interval", "guidance_interval_decay",
    "min_guidance_scale", "guidance_scale_text", "guidance_scale_lyric", "ref_audio_strength", "lora_weight",
    "retake_variance", "repaint_start", "repaint_end", "edit_n_min", "edit_n_max",
)  # fmt: skip
BOOL_KEYS = ("use_erg_tag", "use_erg_lyric", "use_erg_diffusion", "audio2audio_enable")
SEED_KEYS = ("manual_seeds", "retake_seeds")
TEXT_KEYS = ("prompt", "lyrics", "edit_target_prompt", "edit_target_lyrics")
CHOICES = {"scheduler_type": SCHEDULERS, "cfg_type": CFG_TYPES, "task": TASKS}
UNIT_KEYS = ("guidance_interval", "guidance_interval_decay", "retake_variance", "edit_n_min", "edit_n_max")
NON_NEGATIVE_KEYS = ("guidance_scale", "min_guidance_scale", "guidance_scale_text", "guidance_scale_lyric")
# The ranges of the numbers no other rule bounds: the official UI's sliders, widened to what the ComfyUI nodes take
# (guidance up to 200, the LoRA weight within +-10). Beyond them a finite value can still overflow to inf/NaN in
# the sampler and surface as NaN audio, far from its cause.
RANGES = {
    "guidance_scale": (0.0, 200.0),
    "min_guidance_scale": (0.0, 200.0),
    "guidance_scale_text": (0.0, 200.0),
    "guidance_scale_lyric": (0.0, 200.0),
    "omega_scale": (-100.0, 100.0),
    "lora_weight": (-10.0, 10.0),
}  # (audio_duration and the repaint range are checked against the song, in _check_together)
LYRICS_KEYS = ("lyrics", "edit_target_lyrics")
LYRICS_FIX = "shorten them, or make the song in parts (task extend, then repaint)"
MAX_BATCH = 64  # as the nodes' batch_size (each item is a whole song in memory)


class ParamsError(ValueError):
    """A parameter the engine cannot run with; the one-line message names the key and its value."""

    def __init__(self, key: str, value: Any, problem: str):
        self.key, self.value = key, value
        super().__init__(f"{key}={_show(key, value)}: {problem}")


def _show(key: str, value: Any) -> str:
    text = json.dumps(str(value) if isinstance(value, Path) else value, ensure_ascii=False)
    long_text = key in TEXT_KEYS and len(text) > 60  # prompts and lyrics: the start says which
    return text[:57] + "..." if long_text else text


# --- one value at a time -----------------------------------------------------------------------------------------


def _number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ParamsError(key, v, "expected a number")
    if not math.isfinite(v):
        raise ParamsError(key, v, f"expected a finite number{_accepted(key)}")
    return v


def _accepted(key: str) -> str:
    """The values ``key`` takes, for messages (" from 0 to 200"), where one rule says it."""
    if key in UNIT_KEYS:
        return " in [0, 1]"
    if key in RANGES:
        low, high = RANGES[key]
        return f" from {low:g} to {high:g}"
    return " (0 or more)" if key in NON_NEGATIVE_KEYS else ""


def _whole(key: str, v: Any) -> int:
    v = _number(key, v)
    if v != int(v):
        raise ParamsError(key, v, "expected a whole number")
    return int(v)


def _int_list(key: str, v: Any, what: str) -> list[int]:
    """A list of ints from a list, an int or the official comma-separated string ("16, 29, 52")."""
    if isinstance(v, str):
        try:
            return [int(s) for s in v.split(",") if s.strip()]
        except ValueError:
            raise ParamsError(key, v, f"expected {what} separated by commas") from None
    items = v if isinstance(v, list) else [v]
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in items):
        raise ParamsError(key, v, f"expected {what}: a list of whole numbers or a comma-separated string")
    return list(items)


def _seeds(key: str, v: Any) -> list[int] | None:
    """None (random), or the seeds per batch item; the last one repeats for the items beyond the list (official
    set_seeds), so one seed is one seed for the whole batch."""
    if v is None:
        return None
    seeds = _int_list(key, v, "seeds")
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise ParamsError(key, v, f"seeds must be in 0..2**64-1 (got {bad[0]})")
    return seeds or None


def _value(key: str, v: Any) -> Any:
    """The normalised value of one key, checked on its own."""
    if key in INT_KEYS:
        v = _whole(key, v)
        limit = MAX_STEPS if key == "infer_step" else None
        if v < 1 or (limit and v > limit):
            raise ParamsError(key, v, f"expected 1..{limit}" if limit else "expected 1 or more")
        if key == "batch_size" and v > MAX_BATCH:
            raise ParamsError(key, v, f"expected at most {MAX_BATCH} (a batch's songs are sampled at once)")
        return v
    if key in FLOAT_KEYS:
        v = float(_number(key, v))
        if key in UNIT_KEYS and not 0.0 <= v <= 1.0:
            raise ParamsError(key, v, "expected a value in [0, 1]")
        if key in NON_NEGATIVE_KEYS and v < 0:
            raise ParamsError(key, v, "expected 0 or more")
        if key == "ref_audio_strength" and not 0.0 <= v < 1.0:
            raise ParamsError(key, v, "expected a value in [0, 1) (1 leaves no sampling step)")
        low, high = RANGES.get(key, (-math.inf, math.inf))
        if not low <= v <= high:
            raise ParamsError(key, v, f"expected a value from {low:g} to {high:g}")
        return v
    if key in BOOL_KEYS:
        if not isinstance(v, bool):
            raise ParamsError(key, v, "expected true or false")
        return v
    if key in SEED_KEYS:
        return _seeds(key, v)
    if key == "oss_steps":
        steps = [] if v is None else _int_list(key, v, "step numbers")
        bad = [s for s in steps if not 1 <= s <= MAX_STEPS]
        if bad:
            raise ParamsError(key, v, f"step numbers must be in 1..{MAX_STEPS} (got {bad[0]})")
        return steps
    if key in CHOICES:
        if v not in CHOICES[key]:
            raise ParamsError(key, v, f"expected one of {', '.join(CHOICES[key])}")
        return v
    if key in TEXT_KEYS or key == "lora_name_or_path":
        if v is not None and not isinstance(v, str):
            raise ParamsError(key, v, "expected a string")
        if key in LYRICS_KEYS and v:
            from .lyric_tokenizer import LyricsTooLong, check_length

            try:  # text too long to fit at all, before any model loads (the exact count needs the tokenizer)
                check_length(v)
            except LyricsTooLong as e:
                raise ParamsError(key, v, f"{e}; {LYRICS_FIX}") from None
        return v
    if key in PATH_KEYS:
        if v is not None and not isinstance(v, (str, os.PathLike)):
            raise ParamsError(key, v, "expected a file path or null")
        return None if v is None or str(v) == "" else str(v)
    raise AssertionError(f"no rule for official key {key}")


def parse_flag(key: str, text: str) -> Any:
    """A command-line string -> the JSON value for ``key`` (checked by ``load_params`` afterwards)."""
    if key in INT_KEYS or key in FLOAT_KEYS:
        try:
            number = float(text)
        except ValueError:
            raise ParamsError(key, text, "expected a number") from None
        return int(number) if key in INT_KEYS and number.is_integer() else number
    if key in BOOL_KEYS:
        word = text.strip().lower()
        if word in ("true", "1", "yes", "on"):
            return True
        if word in ("false", "0", "no", "off"):
            return False
        raise ParamsError(key, text, "expected true or false")
    if key in SEED_KEYS or key == "oss_steps":
        return None if text.strip().lower() in ("", "none", "random") else text
    if key in PATH_KEYS:
        return None if text.strip().lower() in ("", "none", "null") else text
    return text


# --- the whole set -----------------------------------------------------------------------------------------------


def _resolve(path: str, base: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else base / p)


def _read(source: str | os.PathLike | dict) -> tuple[dict, Path | None]:
    if isinstance(source, dict):
        return dict(source), None
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ParamsError("params", str(path), "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ParamsError("params", str(path), f"cannot read: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParamsError("params", str(path), f"not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ParamsError("params", str(path), "expected a JSON object of parameter names and values")
    return data, path.parent


def _official_names(data: dict) -> dict:
    """The official file format -> __call__ keywords: actual_seeds is manual_seeds, records are dropped."""
    data = {k: v for k, v in data.items() if k not in INFORMATIONAL_KEYS}
    if SEEDS_ALIAS in data:
        seeds = data.pop(SEEDS_ALIAS)
        if data.get("manual_seeds") is not None and _seeds("manual_seeds", data["manual_seeds"]) != _seeds(
            SEEDS_ALIAS, seeds
        ):
            raise ParamsError(SEEDS_ALIAS, seeds, "differs from manual_seeds; give one of the two")
        data["manual_seeds"] = seeds
    unknown = [k for k in data if k not in OFFICIAL_DEFAULTS]
    if unknown:
        raise ParamsError(
            unknown[0],
            data[unknown[0]],
            "unknown parameter (the official names are those of "
            "ACEStepPipeline.__call__, e.g. infer_step, guidance_scale, manual_seeds)",
        )
    return data


def _source_frames(key: str, path: str) -> int:
    """Latent frames of an audio file as the official encode makes them (44.1 kHz, padded to 4096 samples)."""
    from ..common.audio_io import audio_info
    from .music_dcae import SAMPLES_PER_FRAME, VAE_SAMPLE_RATE

    try:
        info = audio_info(path)
    except FileNotFoundError:
        raise ParamsError(key, path, "file not found") from None
    except ValueError as e:
        raise ParamsError(key, path, str(e).replace(f" {path}", "")) from None
    from ..common.audio_io import too_short, truncation

    short = too_short(info.frames, info.samplerate, truncation(info))
    if short:
        raise ParamsError(key, path, short)
    samples = math.ceil(info.frames * VAE_SAMPLE_RATE / info.samplerate)
    return math.ceil(samples / SAMPLES_PER_FRAME)


def _check_together(p: dict) -> None:
    """What the keys mean together: the task's inputs exist and its ranges fit the song."""
    from .music_dcae import (
        SAMPLES_PER_FRAME,
        VAE_SAMPLE_RATE,
        frames_for_seconds,
    )  # torchaudio: imported late

    task = p["task"]
    if p["audio2audio_enable"] and p["ref_audio_input"] is not None:
        if task not in ("text2music", "audio2audio"):
            raise ParamsError(
                "task",
                task,
                "audio2audio_enable with ref_audio_input runs audio2audio (official "
                "__call__); set task to audio2audio or turn audio2audio_enable off",
            )
        p["task"] = task = "audio2audio"  # what the official __call__ does first
    elif task == "audio2audio":
        raise ParamsError("task", task, "needs audio2audio_enable true and a ref_audio_input file")
    if task == "audio2audio":
        _source_frames("ref_audio_input", p["ref_audio_input"])
        if int((1 - p["ref_audio_strength"]) * p["infer_step"]) < 1:
            raise ParamsError(
                "ref_audio_strength",
                p["ref_audio_strength"],
                f"leaves no sampling step of infer_step={p['infer_step']} (int((1 - strength) * steps) = 0)",
            )
    if task in ("text2music", "retake", "audio2audio") and p["src_audio_path"] is not None:
        raise ParamsError(
            "src_audio_path",
            p["src_audio_path"],
            f"task {task} takes no source audio (only "
            f"{', '.join(SOURCE_TASKS)} do; the official code stops on it)",
        )
    if task in ("text2music", "retake"):  # the length of the song to make (source tasks take the source's)
        seconds = p["audio_duration"]
        if seconds > MAX_SECONDS:
            raise ParamsError(
                "audio_duration",
                seconds,
                f"longer than the {MAX_SECONDS:g} s the model supports (<= 0 means a random length)",
            )
        if seconds > 0 and frames_for_seconds(seconds) < 1:
            raise ParamsError("audio_duration", seconds, "shorter than one latent frame (0.093 s)")
    if task not in SOURCE_TASKS:
        return
    if p["src_audio_path"] is None:
        raise ParamsError("src_audio_path", None, f"task {task} needs a source audio file")
    frames = _source_frames("src_audio_path", p["src_audio_path"])
    seconds = frames * SAMPLES_PER_FRAME / VAE_SAMPLE_RATE
    start, end = p["repaint_start"], p["repaint_end"]
    start_frame, end_frame = frames_for_seconds(start), frames_for_seconds(end)
    if task == "repaint":
        if start < 0:
            raise ParamsError(
                "repaint_start", start, "before the song's start (use task extend to add audio)"
            )
        if end_frame > frames:
            raise ParamsError(
                "repaint_end", end, f"after the song's end ({seconds:.2f} s; use task extend to add audio)"
            )
        if end_frame <= start_frame:
            raise ParamsError(
                "repaint_end", end, f"not after repaint_start={start:g} (by at least one latent frame)"
            )
    elif task == "extend":
        if start_frame > 0:
            raise ParamsError(
                "repaint_start",
                start,
                "extend keeps the song: expected 0 or less (minus the seconds to add before it)",
            )
        if -start > MAX_SECONDS or end - seconds > MAX_SECONDS:
            key, value = ("repaint_start", start) if -start > MAX_SECONDS else ("repaint_end", end)
            raise ParamsError(key, value, f"extends by more than {MAX_SECONDS:g} s")
        if start_frame == 0 and end_frame <= frames:
            raise ParamsError(
                "repaint_end",
                end,
                f"nothing to extend: give repaint_start < 0 and/or repaint_end "
                f"> the song's length ({seconds:.2f} s)",
            )
    else:  # edit
        if p["edit_target_prompt"] is None:
            raise ParamsError("edit_target_prompt", None, "task edit needs the target prompt")
        if p["edit_target_lyrics"] is None:
            p["edit_target_lyrics"] = ""  # the official code takes len() of it: no lyrics is ""
        if p["edit_n_min"] > p["edit_n_max"]:
            raise ParamsError("edit_n_min", p["edit_n_min"], f"above edit_n_max={p['edit_n_max']:g}")


def load_params(
    path_or_dict: str | os.PathLike | dict,
    base_dir: str | os.PathLike | None = None,
    overrides: dict | None = None,
) -> dict:
    """Every official keyword with its value: from a JSON file (official names, or an official
    ``*_input_params.json``) or a dict, then ``overrides`` (e.g. command-line flags) on top.

    Relative audio paths in a file resolve against the file's folder (``base_dir`` for a dict, or to override it);
    relative paths in ``overrides`` against the working directory. Source and reference audio files must exist
    (their length is read to check the repaint/extend range). Raises ``ParamsError`` on the first problem.
    """
    data, folder = _read(path_or_dict)
    base = Path(base_dir) if base_dir is not None else folder
    data = _official_names(data)
    for key in PATH_KEYS:
        if isinstance(data.get(key), str) and data[key] and base is not None:
            data[key] = _resolve(data[key], base)
    lora = data.get("lora_name_or_path")
    if isinstance(lora, str) and lora != "none" and base is not None and (base / lora).exists():
        data["lora_name_or_path"] = _resolve(
            lora, base
        )  # a LoRA folder beside the file; else a repo id or path
    if overrides:
        extra = _official_names({k: v for k, v in overrides.items()})
        for key in PATH_KEYS:
            if isinstance(extra.get(key), str) and extra[key]:
                extra[key] = _resolve(extra[key], Path.cwd())
        data.update(extra)
    params = {key: _value(key, data.get(key, default)) for key, default in OFFICIAL_DEFAULTS.items()}
    for key in ("prompt", "lyrics"):
        if params[key] is None:
            params[key] = ""  # the official code needs strings here; None crashes it
    _check_together(params)
    return params


def to_official_file(params: dict, **records: Any) -> dict:
    """``params`` as the official app writes ``*_input_params.json``: ``actual_seeds`` for the seeds, plus records
    such as ``audio_path``, ``format`` and ``timecosts``; ``load_params`` reads it back to the same params."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key == "manual_seeds":
            out[SEEDS_ALIAS] = value
        elif key in OFFICIAL_DEFAULTS:
            out[key] = value
    out.update(records)
    return out


def fix_random(params: dict, batch_size: int | None = None) -> dict:
    """``params`` with its random choices made: a seed per batch item for ``manual_seeds`` and ``retake_seeds``
    (drawn as the official set_seeds does, the last given seed repeating for items beyond the list) and a length for
    ``audio_duration <= 0`` (official: uniform in [30, 240) s). Running the result again gives the same audio."""
    import random

    import torch

    p = dict(params)
    n = batch_size or p["batch_size"]
    for key in SEED_KEYS:
        seeds = p[key]
        if seeds is None:
            p[key] = torch.randint(0, 2**32, (n,)).tolist()
        else:
            p[key] = [seeds[min(i, len(seeds) - 1)] for i in range(n)]
    if p["task"] in ("text2music", "retake") and p["audio_duration"] <= 0:
        p["audio_duration"] = random.uniform(30.0, MAX_SECONDS)
    return p
