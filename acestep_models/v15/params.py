"""ACE-Step 1.5 generation parameters from a JSON file, checked before any model loads (the command line's
``generate`` with a 1.5 checkpoint).

Names are those of the official ``AceStepHandler.generate_music`` (``pipeline.OFFICIAL_DEFAULTS``) plus
``global_seed`` (and ``track_name`` / ``complete_track_classes`` for the instruction). The official app's saved
parameter files (``inference.GenerationParams.to_dict()``: ``caption``, ``keyscale``, ``timesignature``,
``duration``, ``audio_codes``) are read too; their 5 Hz LM and post-processing fields are not part of
``generate_music`` and are reported as ignored. Relative ``src_audio`` / ``reference_audio`` paths resolve against
the file's folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import prompts
from .pipeline import EXTRA_DEFAULTS, OFFICIAL_DEFAULTS, RECORD_ONLY

# inference.GenerationParams name -> generate_music name
APP_NAMES = {
    "caption": "captions",
    "keyscale": "key_scale",
    "timesignature": "time_signature",
    "duration": "audio_duration",
    "audio_codes": "audio_code_string",
}
# inference.GenerationParams fields outside generate_music (the LM, output post-processing, bookkeeping)
APP_ONLY = (
    "instrumental", "enable_normalization", "normalization_db", "thinking", "lm_temperature", "lm_cfg_scale",
    "lm_top_k", "lm_top_p", "lm_negative_prompt", "use_cot_metas", "use_cot_caption", "use_cot_language",
    "use_constrained_decoding", "cot_bpm", "cot_keyscale", "cot_timesignature", "cot_duration",
    "cot_vocal_language", "cot_caption", "cot_lyrics", "audio_path", "format", "key", "status",
)  # fmt: skip
PATH_KEYS = ("src_audio", "reference_audio")
FLOAT_KEYS = (
    "guidance_scale", "audio_duration", "repainting_start", "repainting_end", "audio_cover_strength",
    "cover_noise_strength", "cfg_interval_start", "cfg_interval_end", "shift", "latent_shift", "latent_rescale",
)  # fmt: skip
INT_KEYS = ("inference_steps", "batch_size", "global_seed")
BOOL_KEYS = ("use_random_seed", "use_adg", "use_tiled_decode")
TEXT_KEYS = ("captions", "lyrics", "key_scale", "time_signature", "vocal_language", "audio_code_string")
# The official inference.GenerationParams fields the end-to-end path (``generate --lm``, planner.plan_generation)
# reads, with their official defaults: the 5 Hz LM's and the output peak normalisation's.
LM_DEFAULTS = {
    "thinking": True,
    "lm_temperature": 0.85,
    "lm_cfg_scale": 2.0,
    "lm_top_k": 0,
    "lm_top_p": 0.9,
    "lm_negative_prompt": "NO USER INPUT",
    "use_cot_metas": True,
    "use_cot_caption": True,
    "use_cot_language": True,
    "use_constrained_decoding": True,
    "enable_normalization": True,
    "normalization_db": -1.0,
}
LM_FLOAT_KEYS = ("lm_temperature", "lm_cfg_scale", "lm_top_p", "normalization_db")
# The official app's LoRA controls (handler ``load_lora(lora_path)`` + ``set_lora_scale(lora_scale)``), outside
# generate_music: a path or a list of paths (LoRAs stack here; the official handler holds one), and a scale or one
# per path (default 1, each clamped to the official slider's [0, 1]).
LORA_KEYS = ("lora_path", "lora_scale")
# What ``generate --lm`` records beside its output: the LM's plan (metadata, codes), so the run replays without
# the LM (and, since the plan is there, with the end-to-end path's normalisation).
PLAN_KEY = "lm_plan"


class ParamsError(ValueError):
    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def _check(key: str, value):
    if value is None:
        return None
    if key in BOOL_KEYS and not isinstance(value, bool):
        raise ParamsError(key, f"expected true or false, not {json.dumps(value)}")
    if key in INT_KEYS and (isinstance(value, bool) or not isinstance(value, int)):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ParamsError(key, f"expected a whole number, not {json.dumps(value)}")
    if key in FLOAT_KEYS and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ParamsError(key, f"expected a number, not {json.dumps(value)}")
    if key in TEXT_KEYS + PATH_KEYS and not isinstance(value, str):
        if not (key == "audio_code_string" and isinstance(value, list)):
            raise ParamsError(key, f"expected text, not {json.dumps(value)}")
    if key == "timesteps" and (
        not isinstance(value, list) or not all(isinstance(t, (int, float)) for t in value)
    ):
        raise ParamsError(key, f"expected a list of numbers, not {json.dumps(value)}")
    if key == "seed" and not isinstance(value, (int, float, str)):
        raise ParamsError(key, f'expected a number or text like "42,43", not {json.dumps(value)}')
    if key == "bpm" and not isinstance(value, (int, float, str)):
        raise ParamsError(key, f"expected a number, not {json.dumps(value)}")
    return value


def _read(source: str | Path | dict) -> tuple[dict, Path]:
    base = Path(".")
    if not isinstance(source, dict):
        path = Path(source)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ParamsError("params", f"no such file {path}") from e
        except json.JSONDecodeError as e:
            raise ParamsError("params", f"{path} is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise ParamsError("params", f"{path} must hold one JSON object")
        base = path.parent
    else:
        data = dict(source)
    return data, base


def load_params(source: str | Path | dict, notes: list[str] | None = None, with_lm: bool = False) -> dict:
    """The parameters of a JSON file (or a dict), under the ``generate_music`` names, checked. ``notes``
    collects what was ignored (``with_lm``: the LM and normalisation fields are not, see ``load_lm_params``)."""
    data, base = _read(source)
    known = set(OFFICIAL_DEFAULTS) | set(EXTRA_DEFAULTS)
    params, ignored = {}, []
    for key, value in data.items():
        name = APP_NAMES.get(key, key) if key not in known else key
        if key == PLAN_KEY or key in LORA_KEYS or (with_lm and key in LM_DEFAULTS):
            continue
        if key in APP_ONLY or key in RECORD_ONLY:
            ignored.append(key)
            continue
        if name not in known:
            raise ParamsError(key, "unknown parameter; expected an official generate_music name")
        params[name] = _check(name, value)
    for key in PATH_KEYS:
        if params.get(key):
            p = Path(params[key]).expanduser()
            params[key] = str(p if p.is_absolute() else base / p)
    p = {**OFFICIAL_DEFAULTS, **EXTRA_DEFAULTS, **params}
    if p["task_type"] not in prompts.TASK_TYPES:
        raise ParamsError("task_type", f"one of {', '.join(prompts.TASK_TYPES)}, not {p['task_type']!r}")
    if p["infer_method"] not in ("ode", "sde"):
        raise ParamsError("infer_method", f"'ode' or 'sde', not {p['infer_method']!r}")
    if p["task_type"] in ("repaint", "lego", "extract", "complete") and not p["src_audio"]:
        raise ParamsError("src_audio", f"task_type {p['task_type']!r} needs a source audio file")
    if p["batch_size"] is not None and p["batch_size"] < 1:
        raise ParamsError("batch_size", f"at least 1, not {p['batch_size']}")
    for key in PATH_KEYS:
        if p[key] and not Path(p[key]).is_file():
            raise ParamsError(key, f"no such audio file {p[key]}")
    if notes is not None and ignored:
        notes.append(f"ignored (not generate_music parameters): {', '.join(sorted(ignored))}")
    return params


def load_lm_params(source: str | Path | dict) -> tuple[dict, dict | None]:
    """(the ``LM_DEFAULTS`` fields of a JSON file or dict over their official defaults, checked; the recorded
    ``lm_plan`` or None)."""
    data, _ = _read(source)
    lm = dict(LM_DEFAULTS)
    for key in LM_DEFAULTS:
        if key not in data or data[key] is None:
            continue
        value = data[key]
        if isinstance(LM_DEFAULTS[key], bool):
            if not isinstance(value, bool):
                raise ParamsError(key, f"expected true or false, not {json.dumps(value)}")
        elif key in LM_FLOAT_KEYS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParamsError(key, f"expected a number, not {json.dumps(value)}")
            value = float(value)
        elif key == "lm_top_k":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ParamsError(key, f"expected a whole number >= 0, not {json.dumps(value)}")
        elif not isinstance(value, str):
            raise ParamsError(key, f"expected text, not {json.dumps(value)}")
        lm[key] = value
    if lm["lm_temperature"] < 0:
        raise ParamsError("lm_temperature", f"at least 0, not {lm['lm_temperature']}")
    plan = data.get(PLAN_KEY)
    if plan is not None and not (isinstance(plan, dict) and isinstance(plan.get("metadata", {}), dict)):
        raise ParamsError(PLAN_KEY, 'expected the object generate --lm records ({"metadata": ..., ...})')
    return lm, plan


def load_lora_params(source: str | Path | dict, notes: list[str] | None = None) -> list[tuple[str, float]]:
    """[(LoRA path, official scale)] from ``lora_path`` / ``lora_scale`` (relative paths against the file's folder;
    each path must exist), [] without ``lora_path``. ``notes`` hears of scales the official clamp changed."""
    from .lora import official_scale

    data, base = _read(source)
    paths, scales = data.get("lora_path"), data.get("lora_scale", 1.0)
    if paths in (None, "", []):
        if data.get("lora_scale") is not None and notes is not None:
            notes.append("ignored lora_scale: no lora_path")
        return []
    paths = [paths] if isinstance(paths, str) else paths
    if not isinstance(paths, list) or not all(isinstance(x, str) and x for x in paths):
        raise ParamsError(
            "lora_path", f"expected a LoRA folder or file, or a list of them, not {json.dumps(paths)}"
        )
    scales = scales if isinstance(scales, list) else [scales] * len(paths)
    if len(scales) != len(paths):
        raise ParamsError(
            "lora_scale", f"{len(scales)} scales for {len(paths)} LoRAs: give one per lora_path entry"
        )
    out = []
    for path, scale in zip(paths, scales):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise ParamsError("lora_scale", f"expected a number, not {json.dumps(scale)}")
        try:
            clamped = official_scale(scale)
        except ValueError as e:
            raise ParamsError("lora_scale", str(e)) from None
        if clamped != scale and notes is not None:
            notes.append(f"lora_scale {scale} clamped to {clamped} (the official slider's range is 0..1)")
        full = Path(path).expanduser()
        full = full if full.is_absolute() else base / full
        if not full.exists():
            raise ParamsError("lora_path", f"no such LoRA folder or file {full}")
        out.append((str(full), clamped))
    return out


def batch_size(params: dict) -> int:
    """The official batch: ``batch_size``, or the handler's default of 2 when it is None."""
    from .pipeline import DEFAULT_BATCH_SIZE

    b = params.get("batch_size")
    return max(1, int(b)) if b is not None else DEFAULT_BATCH_SIZE
