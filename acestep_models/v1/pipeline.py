"""One generation, as the official ``ACEStepPipeline.__call__``: parameters in, audio and latents out.

Seeds, task dispatch (text2music, retake, repaint, extend, edit, audio2audio), the source/reference audio through
the music DCAE, the diffusion loop (``sampler``), the decode, and the parameter record in the official
``*_input_params.json`` format. Audio files are not read here: the caller passes ``src_audio`` / ``ref_audio``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..common import tasks
from ..common.guidance import uses_cfg
from ..common.progress import Interrupted
from . import sampler as S
from .conditioning import Conditioning, encode_conditioning
from .lyric_tokenizer import LyricsTooLong
from .music_dcae import OUTPUT_SAMPLE_RATE, frames_for_seconds
from .params import (  # the official __call__ keywords, defaults and task names
    LYRICS_FIX,
    OFFICIAL_DEFAULTS,
    TASKS,
    ParamsError,
)
from .sampler import SamplerSettings

__all__ = [
    "OFFICIAL_DEFAULTS",
    "TASKS",
    "Conditioning",
    "GenerationResult",
    "Interrupted",
    "SamplerSettings",
    "generate",
    "make_generators",
    "parse_oss_steps",
    "parse_seeds",
]

log = logging.getLogger(__name__)

# Every keyword of the official ACEStepPipeline.__call__ (minus format, save_path, debug) with its default.
# Official keywords that do not change the result (output file handling, logging).
OUTPUT_KEYS = ("format", "save_path", "debug")
RANDOM_DURATION = (30.0, 240.0)  # official: audio_duration <= 0 draws random.uniform(30, 240)
OVERLAP_DECODE_MIN_SECONDS = 48  # official latents2audio: decode_overlap only for songs over 48 s


@dataclass
class GenerationResult:
    audio: list[torch.Tensor]  # per batch item, [2, N] float32 at 48 kHz (official latents2audio output)
    sample_rate: int  # 48000
    latents: torch.Tensor  # [B, 8, 16, T] final latents
    params: dict  # what was used, in the official *_input_params.json format


# --- seeds --------------------------------------------------------------------------------------------------------


def parse_seeds(seeds) -> int | list[int] | None:
    """Official ``set_seeds`` parsing: an int, a non-empty list of ints, "1,2,3" (ints, spaces allowed) or a digit
    string; anything else (None, "", " 7", a list with non-ints) means random seeds."""
    if isinstance(seeds, str):
        if "," in seeds:
            return [int(s) for s in seeds.split(",")]
        return int(seeds) if seeds.isdigit() else None
    if isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds):
        return list(seeds)
    if isinstance(seeds, int):
        return seeds
    return None


def make_generators(batch_size: int, seeds, device="cpu") -> tuple[list[torch.Generator], list[int]]:
    """One generator per batch item on ``device`` and the seeds used: a list gives one seed per item (its last
    one repeats), an int seeds all items alike, random seeds come from torch's global generator, as official."""
    parsed = parse_seeds(seeds)
    generators, actual = [], []
    for i in range(batch_size):
        if isinstance(parsed, int):
            seed = parsed
        elif isinstance(parsed, list):
            seed = parsed[min(i, len(parsed) - 1)]
        else:
            seed = torch.randint(0, 2**32, (1,)).item()
        generators.append(torch.Generator(device=device).manual_seed(seed))
        actual.append(seed)
    return generators, actual


def parse_oss_steps(oss_steps) -> list[int]:
    """Official: a non-empty "10, 20, 30" string; a list (as in *_input_params.json) is taken as the steps, as the
    official infer.py does by joining it."""
    if isinstance(oss_steps, str):
        return [int(s) for s in oss_steps.split(",")] if oss_steps else []
    return [int(s) for s in oss_steps] if oss_steps else []


# --- generate -----------------------------------------------------------------------------------------------------


def _encode_audio(models, audio: tuple[torch.Tensor, int], device, dtype) -> torch.Tensor:
    """Official ``infer_latents``: audio [C, N] at its rate -> latents [1, 8, 16, T] (mono repeated to stereo)."""
    wav, sample_rate = audio
    wav = torch.as_tensor(wav)
    if wav.dim() == 1:
        wav = wav[None]
    latents = models.vae.encode(wav[None].to(device=device, dtype=torch.float32), sample_rate=sample_rate)
    return latents.to(dtype)


@contextlib.contextmanager
def _lyrics_param(key: str, lyrics: str):
    """Lyrics longer than the model takes, named by their parameter (``lyrics``, ``edit_target_lyrics``)."""
    try:
        yield
    except LyricsTooLong as e:
        raise ParamsError(key, lyrics, f"{e}; {LYRICS_FIX}") from None


def generate(
    models,
    params: dict,
    *,
    src_audio: tuple[torch.Tensor, int] | None = None,
    ref_audio: tuple[torch.Tensor, int] | None = None,
    repaint_mask: torch.Tensor | None = None,
    device="cpu",
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int, int], None] | None = None,
    interrupt: Callable[[], bool] | None = None,
    src_latents: torch.Tensor | None = None,
    ref_latents: torch.Tensor | None = None,
    decode: bool = True,
    overlapped_decode: bool = False,
    batch_passes: bool = True,
) -> GenerationResult:
    """One official generation with ``models`` (``checkpoint.ACEStepModels``, already on ``device``).

    ``params``: official keyword names (missing ones take ``OFFICIAL_DEFAULTS``). ``src_audio`` / ``ref_audio``:
    (audio [C, N] float32, sample rate) for repaint/extend/edit and audio2audio (``src_latents`` /
    ``ref_latents`` [1, 8, 16, T] may be given instead). ``repaint_mask``: a latent-time mask [T] or [B, T] in
    [0, 1] (1 = regenerate) replacing the repaint range (for extend: over the extended frames).
    ``decode=False`` skips the audio; ``overlapped_decode`` is the official pipeline flag of the same name;
    ``batch_passes=False`` runs the guidance passes one by one (less memory, same result to rounding).
    """
    unknown = set(params) - set(OFFICIAL_DEFAULTS) - set(OUTPUT_KEYS)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}; expected official ACE-Step names")
    p = {**OFFICIAL_DEFAULTS, **params}
    device = torch.device(device)
    t0 = time.time()
    task = p["task"]
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    has_ref = ref_audio is not None or ref_latents is not None
    if p["audio2audio_enable"] and has_ref:  # official: the switch with a reference overrides the task
        task = "audio2audio"
    has_src = src_audio is not None or src_latents is not None
    if has_src and task not in ("repaint", "edit", "extend"):
        raise ValueError(f"source audio is used by the repaint, extend and edit tasks only, not by {task!r}")
    if not has_src and task in ("repaint", "edit", "extend"):
        raise ValueError(f"task {task!r} needs source audio (src_audio)")
    if repaint_mask is not None and task not in ("repaint", "extend"):
        raise ValueError(f"repaint_mask is used by the repaint and extend tasks only, not by {task!r}")

    lora = p["lora_name_or_path"]
    use_lora = bool(lora) and lora != "none"
    if use_lora:
        from .lora import apply_lora

        apply_lora(models.dit, lora, p["lora_weight"])
    try:
        batch_size = int(p["batch_size"])
        generators, actual_seeds = make_generators(batch_size, p["manual_seeds"], device)
        retake_generators, retake_seeds = make_generators(batch_size, p["retake_seeds"], device)
        oss_steps = parse_oss_steps(p["oss_steps"])

        prompt, lyrics = p["prompt"], p["lyrics"] or ""
        # the ERG-tag null prompt only feeds the unconditional lyric-ERG branch of text2music
        null_text = (
            p["use_erg_tag"] and p["use_erg_lyric"] and uses_cfg(p["guidance_scale"]) and task != "edit"
        )
        with _lyrics_param("lyrics", lyrics):
            cond = encode_conditioning(models, prompt, lyrics, use_erg_tag=null_text, device=device)
        cond = cond.to(device, dtype)
        duration = p["audio_duration"]
        if duration <= 0:
            duration = random.uniform(*RANDOM_DURATION)
            log.info("random audio duration: %s", duration)
        repaint_start, repaint_end = p["repaint_start"], p["repaint_end"]
        if task == "retake":  # official: a retake is a repaint of the whole duration
            repaint_start, repaint_end = 0, duration
        if src_latents is None and src_audio is not None:
            src_latents = _encode_audio(models, src_audio, device, dtype)
        if ref_latents is None and ref_audio is not None and p["audio2audio_enable"]:
            ref_latents = _encode_audio(models, ref_audio, device, dtype)
        if not p["audio2audio_enable"]:
            ref_latents = None
        t1 = time.time()

        settings = SamplerSettings(
            **{k: p[k] for k in SamplerSettings.__dataclass_fields__ if k != "oss_steps"},
            oss_steps=oss_steps,
        )
        frames = frames_for_seconds(duration)
        if (
            src_latents is not None
        ):  # the source sets the length (also when a whole-song mask makes it a retake)
            src_latents = src_latents.to(device, dtype)
            frames = src_latents.shape[-1]
        if task == "edit":
            with _lyrics_param("edit_target_lyrics", p["edit_target_lyrics"] or ""):
                target = encode_conditioning(
                    models,
                    p["edit_target_prompt"],
                    p["edit_target_lyrics"] or "",
                    use_erg_tag=False,
                    device=device,
                )
            target = target.to(device, dtype)
            job = tasks.Edit(src_latents, target, p["edit_n_min"], p["edit_n_max"], p["edit_n_avg"])
        elif task in ("retake", "repaint", "extend"):
            job = S.official_range_task(
                frames_for_seconds(repaint_start),
                frames_for_seconds(repaint_end),
                frames,
                p["retake_variance"],
                src_latents,
                repaint_mask,
                batch_size,
            )
        elif ref_latents is not None:
            job = tasks.Audio2Audio(ref_latents.to(device, dtype), p["ref_audio_strength"])
        else:
            job = tasks.Text2Music()
        latents = S.sample(
            models.dit,
            cond,
            settings,
            generators,
            job,
            frames=frames,
            retake_generators=retake_generators,  # official: edit's noise too ("more diversity")
            progress=progress,
            interrupt=interrupt,
            batch_passes=batch_passes,
        )
        t2 = time.time()
        audio = []
        if decode:
            with torch.no_grad():
                if overlapped_decode and duration > OVERLAP_DECODE_MIN_SECONDS:
                    wavs = models.vae.decode_overlap(latents, sample_rate=OUTPUT_SAMPLE_RATE)
                else:
                    wavs = models.vae.decode(latents, sample_rate=OUTPUT_SAMPLE_RATE)
            audio = [w.cpu().float() for w in wavs]
        t3 = time.time()
    finally:
        if use_lora:
            from .lora import remove_lora

            remove_lora(models.dit)

    record = {
        "format": params.get("format", "wav"),
        "lora_name_or_path": lora,
        "lora_weight": p["lora_weight"],
        "task": task,
        "prompt": prompt if task != "edit" else p["edit_target_prompt"],
        "lyrics": p["lyrics"] if task != "edit" else p["edit_target_lyrics"],
        "audio_duration": duration,
        "infer_step": p["infer_step"],
        "guidance_scale": p["guidance_scale"],
        "scheduler_type": p["scheduler_type"],
        "cfg_type": p["cfg_type"],
        "omega_scale": p["omega_scale"],
        "guidance_interval": p["guidance_interval"],
        "guidance_interval_decay": p["guidance_interval_decay"],
        "min_guidance_scale": p["min_guidance_scale"],
        "use_erg_tag": p["use_erg_tag"],
        "use_erg_lyric": p["use_erg_lyric"],
        "use_erg_diffusion": p["use_erg_diffusion"],
        "oss_steps": oss_steps,
        "timecosts": {"preprocess": t1 - t0, "diffusion": t2 - t1, "latent2audio": t3 - t2},
        "actual_seeds": actual_seeds,
        "retake_seeds": retake_seeds,
        "retake_variance": p["retake_variance"],
        "guidance_scale_text": p["guidance_scale_text"],
        "guidance_scale_lyric": p["guidance_scale_lyric"],
        "repaint_start": repaint_start,
        "repaint_end": repaint_end,
        "edit_n_min": p["edit_n_min"],
        "edit_n_max": p["edit_n_max"],
        "edit_n_avg": p["edit_n_avg"],
        "src_audio_path": p["src_audio_path"],
        "edit_target_prompt": p["edit_target_prompt"],
        "edit_target_lyrics": p["edit_target_lyrics"],
        "audio2audio_enable": p["audio2audio_enable"],
        "ref_audio_strength": p["ref_audio_strength"],
        "ref_audio_input": p["ref_audio_input"],
    }
    return GenerationResult(audio=audio, sample_rate=OUTPUT_SAMPLE_RATE, latents=latents, params=record)
