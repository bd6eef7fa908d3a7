"""One ACE-Step 1.5 generation, as the official ``AceStepHandler.generate_music`` (commit 89031b8): its keyword
arguments in, audio and latents out.

The handler's path, step by step (``handler.py`` and ``core/generation/handler/``): seeds (``prepare_seeds``),
the reference and source audio (``process_reference_audio`` / ``process_src_audio``), the target audio and
repaint window (``prepare_padding_info``: outpainting pads the source), the batch (``_prepare_batch``: VAE
latents or decoded audio codes, the 128-frame minimum padded with the silence latent, chunk masks, cover flags,
source latents with the repaint window silenced, LM hints, prompts), the embeddings (``preprocess_batch``), the
sampler (``sampler.sample`` = the model's ``generate_audio``) and the decode (latent shift/rescale, tiled decode,
anti-clipping). Audio files are not read here: the caller passes (audio [C, S], sample rate).

Randomness, drawn in the official order:
- ``seed`` (with ``use_random_seed=False``): one CPU ``torch.Generator`` per item for the starting noise.
- ``global_seed`` stands for the official *global* RNGs: Python's ``random`` (random seeds of unseeded items,
  ``random.uniform(10, 120)`` durations, the reference segment offsets) and torch's (every VAE
  ``latent_dist.sample()``, the SDE renoise). Both come from generators seeded with it, so
  ``random.seed(g); torch.manual_seed(g)`` before the official call gives the same output as ``global_seed=g``.
  None draws one (recorded in the result's params).

Deliberate differences (named where they happen): a missing ``instruction`` is the official instruction of
``task_type`` (the official UI's; ``generate_music`` itself would default to the text2music one), extract / lego /
complete refuse turbo and sft models (the official UI offers them only for base models; the handler runs them),
ADG works for batches (the official one fails for batch > 1), a reference audio shared by all items is VAE-encoded
once on any device (the official cache hits on the CPU only).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..common import tasks
from ..common.progress import Interrupt, Interrupted, Progress
from . import prompts
from .sampler import VARIANTS, Condition, SamplerSettings, sample

__all__ = [
    "OFFICIAL_DEFAULTS",
    "GenerationResult",
    "Interrupted",
    "Models15",
    "generate",
    "load_models",
    "prepare_seeds",
    "seed_noise",
]

SAMPLE_RATE = 48000
FRAME_SAMPLES = 1920  # official handler: latent frames = samples // 1920 (25 Hz)
MIN_FRAMES = 128  # official _prepare_batch: max(128, longest item)
REFERENCE_FRAMES = 750  # official infer_refer_latent: silence_latent[:, :750] for "no reference"
REFERENCE_SECONDS, SEGMENT_SECONDS = 30, 10  # official process_reference_audio
RANDOM_DURATION = (10.0, 120.0)  # official prepare_padding_info: random.uniform(10.0, 120.0)
MAX_SEED = 2**32 - 1  # official random.randint(0, 2**32 - 1)
SILENCE_THRESHOLD = 1e-6  # official is_silence
DEFAULT_BATCH_SIZE = 2  # official AceStepHandler.batch_size, used when batch_size is None
BASE_ONLY_TASKS = ("extract", "lego", "complete")  # official TASK_TYPES_BASE minus TASK_TYPES_TURBO

# The keyword arguments of the official generate_music (minus progress) with their defaults.
OFFICIAL_DEFAULTS = {
    "captions": "",
    "lyrics": "",
    "bpm": None,
    "key_scale": "",
    "time_signature": "",
    "vocal_language": "en",
    "inference_steps": 8,
    "guidance_scale": 7.0,
    "use_random_seed": True,
    "seed": -1,
    "reference_audio": None,
    "audio_duration": None,
    "batch_size": None,
    "src_audio": None,
    "audio_code_string": "",
    "repainting_start": 0.0,
    "repainting_end": None,
    "instruction": None,  # None: the official instruction of task_type (see the module docstring)
    "audio_cover_strength": 1.0,
    "cover_noise_strength": 0.0,
    "task_type": "text2music",
    "use_adg": False,
    "cfg_interval_start": 0.0,
    "cfg_interval_end": 1.0,
    "shift": 1.0,
    "infer_method": "ode",
    "use_tiled_decode": True,
    "timesteps": None,
    "latent_shift": 0.0,
    "latent_rescale": 1.0,
}
# Ours: the official global RNG (see above), and what the official UI turns into the instruction.
EXTRA_DEFAULTS = {"global_seed": None, "track_name": None, "complete_track_classes": None}
# What a result's params record adds for the reader (ignored when the record is replayed).
RECORD_ONLY = ("actual_seeds", "time_costs")


@dataclass
class Models15:
    """What a 1.5 generation needs: the DiT (``AceStepConditionGenerationModel``), the Oobleck VAE, the
    Qwen3-Embedding text encoder and its tokenizer, the DiT's ``silence_latent`` [1, T, D] and which official
    sampler the DiT was trained for (``variant``: turbo, base or sft)."""

    dit: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    silence_latent: torch.Tensor
    variant: str = "turbo"


@dataclass
class GenerationResult:
    audio: list[torch.Tensor]  # per item [2, T * 1920] float32 at 48 kHz (after the official anti-clipping)
    sample_rate: int
    latents: torch.Tensor  # [B, T, D] final latents (before latent_shift / latent_rescale)
    noise: torch.Tensor  # [B, T, D] the starting noise
    params: dict  # the official keyword arguments that replay this exactly (seeds and global_seed filled in)


# --- models ---------------------------------------------------------------------------------------------------------


def detect_variant(path: str | Path) -> str:
    """turbo, base or sft for a DiT: the official ``config.json`` (``is_turbo``, ``model_version``), else the
    folder or file name (official checkpoint names ``acestep-v15-{turbo,base,sft}...``); turbo otherwise."""
    from .checkpoint import locate_part

    src = locate_part(path, "dit")
    config = src.config or {}
    names = [
        str(config.get("model_version", "")).lower(),
        Path(str(src.origin)).name.lower(),
        str(path).lower(),
    ]
    if config.get("is_turbo"):
        return "turbo"
    for name in names:
        for variant in ("sft", "base", "turbo"):
            if variant in name:
                return variant
    return "turbo"


def official_root(path: str | Path) -> Path:
    """Where an official DiT's neighbours (``vae/``, ``Qwen3-Embedding-0.6B/``) are: the folder above a DiT part
    folder (config.json + model.safetensors), else ``path`` itself (a root, or an all-in-one file)."""
    p = Path(path)
    is_dit_folder = p.is_dir() and (p / "model.safetensors").is_file() and not (p / "vae").is_dir()
    return p.parent if is_dit_folder else p


def load_models(
    path: str | Path, variant: str | None = None, device="cpu", dtype: torch.dtype = torch.float32
) -> Models15:
    """Every part from an official root (``acestep-v15-*/``, ``vae/``, ``Qwen3-Embedding-0.6B/``), a DiT folder
    with those beside it, or ComfyUI's all-in-one file. ``variant`` overrides ``detect_variant``."""
    from . import checkpoint as C

    p = Path(path)
    root = official_root(p)
    dit = C.load_dit(p, dtype=dtype, device=device).eval()
    silence = C.load_silence_latent(p)
    if silence is None:
        raise FileNotFoundError(
            f"ACE-Step 1.5: no {C.SILENCE_LATENT} beside the DiT in {path} (the official DiT folder holds it)"
        )
    vae = C.load_vae(root, dtype=dtype, device=device).eval()
    text_encoder, tokenizer = C.load_text_encoder(root, dtype=dtype, device=device)
    variant = variant or detect_variant(p)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    return Models15(dit, vae, text_encoder.eval(), tokenizer, silence.to(device, dtype), variant)


# --- seeds and noise ------------------------------------------------------------------------------------------------


def prepare_seeds(batch_size: int, seed, use_random_seed: bool, rng: random.Random) -> list[int]:
    """Official ``prepare_seeds``: random seeds from ``rng`` (the official Python global RNG) for
    ``use_random_seed``, for -1 / "" / unparsable entries and for items beyond the list. Official quirk, kept: a
    single non-negative seed with a batch seeds item 0 only; the other items get random seeds."""
    if use_random_seed:
        return [rng.randint(0, MAX_SEED) for _ in range(batch_size)]
    try:
        if isinstance(seed, str):
            seeds = []
            for s in (s.strip() for s in seed.split(",")):
                try:
                    seeds.append(-1 if s in ("-1", "") else int(float(s)))
                except (ValueError, TypeError):
                    seeds.append(-1)
        elif seed is None or (isinstance(seed, (int, float)) and seed < 0):
            seeds = [-1] * batch_size
        elif isinstance(seed, (int, float)):
            seeds = [int(seed)]
        else:
            seeds = [-1] * batch_size
        single = len(seeds) == 1 and seeds[0] != -1
        out = []
        for i in range(batch_size):
            s = seeds[i] if i < len(seeds) else -1
            out.append(rng.randint(0, MAX_SEED) if (single and i > 0) or s == -1 else int(s))
        return out
    except (TypeError, ValueError, OverflowError):  # official fallback: all random
        return [rng.randint(0, MAX_SEED) for _ in range(batch_size)]


def seed_noise(seeds: list[int], frames: int, dim: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Official ``prepare_noise`` for a seed list: ``randn(1, T, D)`` per item from
    ``torch.Generator().manual_seed(seed)``, drawn on the CPU (the official references run there; a GPU run would
    draw from CUDA generators) and moved to ``device``."""
    parts = [
        torch.randn(1, frames, dim, generator=torch.Generator("cpu").manual_seed(int(s)), dtype=dtype)
        for s in seeds
    ]
    return torch.cat(parts).to(device)


# --- audio ----------------------------------------------------------------------------------------------------------


def to_stereo_48k(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Official ``_normalize_audio_to_stereo_48k``: [C, S] (or [S]) -> [2, S'] float32: mono repeated, channels
    beyond 2 dropped, torchaudio's default ``Resample`` to 48 kHz, clamped to [-1, 1]."""
    audio = torch.as_tensor(audio).float()
    if audio.dim() == 1:
        audio = audio[None]
    if audio.shape[0] == 1:
        audio = torch.cat([audio, audio], dim=0)
    audio = audio[:2]
    if sample_rate != SAMPLE_RATE:
        import torchaudio

        audio = torchaudio.transforms.Resample(sample_rate, SAMPLE_RATE)(audio)
    return torch.clamp(audio, -1.0, 1.0)


def is_silence(audio: torch.Tensor) -> bool:
    return bool(torch.all(audio.abs() < SILENCE_THRESHOLD))


def reference_segments(audio: torch.Tensor, rng: random.Random) -> torch.Tensor | None:
    """Official ``process_reference_audio`` after loading: None when silent; else repeated to at least 30 s and
    three 10 s segments taken at ``rng.randint`` offsets in the front, middle and back thirds -> [2, 30 s]."""
    if is_silence(audio):
        return None
    target, segment = REFERENCE_SECONDS * SAMPLE_RATE, SEGMENT_SECONDS * SAMPLE_RATE
    if audio.shape[-1] < target:
        audio = audio.repeat(1, math.ceil(target / audio.shape[-1]))
    total = audio.shape[-1]
    third = total // 3
    front = rng.randint(0, max(0, third - segment))
    middle = third + rng.randint(0, max(0, third - segment))
    back = 2 * third + rng.randint(0, max(0, (total - 2 * third) - segment))
    return torch.cat([audio[:, s : s + segment] for s in (front, middle, back)], dim=-1)


def normalize_peak(audio: torch.Tensor, target_db: float = -1.0) -> torch.Tensor:
    """Official ``audio_utils.normalize_audio`` (the end-to-end ``inference.generate_music``'s
    ``enable_normalization``): the clip scaled to a peak of ``target_db`` dBFS; near silence (peak < 1e-6) as
    is."""
    peak = torch.max(torch.abs(audio))
    if peak < 1e-6:
        return audio
    return audio.clone() * (10 ** (target_db / 20.0) / peak)


def target_wav(duration: float) -> torch.Tensor:
    """Official ``create_target_wavs``: zeros [2, int(max(0.1, round(duration, 1)) * 48000)]."""
    return torch.zeros(2, int(max(0.1, round(duration, 1)) * SAMPLE_RATE))


# --- parameters -----------------------------------------------------------------------------------------------------


def _has_codes(codes) -> bool:
    if isinstance(codes, list):
        return any((c or "").strip() for c in codes)
    return bool(codes and str(codes).strip())


def resolve_params(params: dict) -> dict:
    """``params`` over the official defaults; unknown names are an error (they would be silently ignored)."""
    known = set(OFFICIAL_DEFAULTS) | set(EXTRA_DEFAULTS)
    params = {k: v for k, v in params.items() if k not in RECORD_ONLY}
    unknown = set(params) - known
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)}; expected the official generate_music names"
        )
    p = {**OFFICIAL_DEFAULTS, **EXTRA_DEFAULTS, **params}
    if p["task_type"] not in prompts.TASK_TYPES:
        raise ValueError(f"task_type must be one of {prompts.TASK_TYPES}, not {p['task_type']!r}")
    if p["infer_method"] not in ("ode", "sde"):
        raise ValueError(f"infer_method must be 'ode' or 'sde', not {p['infer_method']!r}")
    return p


def _normalize_hints(codes, batch_size: int) -> list[str | None]:
    """Official ``_normalize_audio_code_hints``."""
    if isinstance(codes, str):
        hints = [codes] * batch_size
    elif len(codes) == 1 and batch_size > 1:
        hints = list(codes) * batch_size
    else:
        hints = (list(codes[:batch_size]) + [None] * batch_size)[:batch_size]
    return [h if isinstance(h, str) and h.strip() else None for h in hints]


def task_params(task) -> dict:
    """The official ``generate_music`` parameters of a ``common.tasks`` object (what the nodes build): task type,
    instruction and the task's own knobs. Repaint windows are given as parameters (``repainting_start/end``)."""
    if isinstance(task, tasks.Text2Music):
        return {"task_type": "text2music", "instruction": prompts.task_instruction("text2music")}
    if isinstance(task, tasks.Cover):
        return {
            "task_type": "cover",
            "instruction": prompts.task_instruction("cover"),
            "audio_cover_strength": task.strength,
            "cover_noise_strength": task.noise_strength,
            "audio_code_string": task.codes,
        }
    if isinstance(task, tasks.Extract):
        return {"task_type": "extract", "instruction": prompts.task_instruction("extract", task.track)}
    if isinstance(task, tasks.Lego):
        return {
            "task_type": "lego",
            "instruction": prompts.task_instruction("lego", task.track),
            "repainting_start": task.start,
            "repainting_end": task.end,
        }
    if isinstance(task, tasks.Complete):
        return {
            "task_type": "complete",
            "instruction": prompts.task_instruction("complete", track_classes=list(task.tracks)),
        }
    raise ValueError(f"ACE-Step 1.5 does not run the {getattr(task, 'name', task)!r} task object")


# --- generate -------------------------------------------------------------------------------------------------------


def _padding(src, duration, start, end, is_repaint_or_lego, is_cover, batch, rng):
    """Official ``prepare_padding_info``: per-item target wavs (stacked, right-padded) and the repaint window in
    seconds of the (outpainting-padded) target, or (None, None) outside repaint / lego."""
    wavs, left = [], 0.0
    for _ in range(batch):
        if src is not None:
            if is_repaint_or_lego and not is_cover:
                src_dur = src.shape[-1] / float(SAMPLE_RATE)
                actual_end = src_dur if end is None or end < 0 else end
                left = max(0, -start) if start is not None else 0
                right = max(0, actual_end - src_dur)
                lf, rf = int(left * SAMPLE_RATE), int(right * SAMPLE_RATE)
                wavs.append(F.pad(src, (lf, rf)) if lf > 0 or rf > 0 else src)
            else:
                wavs.append(src)
        elif duration is not None and float(duration) > 0:
            wavs.append(target_wav(float(duration)))
        else:
            wavs.append(target_wav(rng.uniform(*RANDOM_DURATION)))
    longest = max(w.shape[-1] for w in wavs)
    wavs = torch.stack([F.pad(w, (0, longest - w.shape[-1])) for w in wavs])
    if not is_repaint_or_lego:
        return wavs, None, None
    starts = None if start is None else [start + (left if src is not None else 0)] * batch
    if src is not None:
        src_dur = src.shape[-1] / float(SAMPLE_RATE)
        ends = [(src_dur if end is None or end < 0 else end) + left] * batch
    else:
        ends = None if end is None or end < 0 else [end] * batch
    return wavs, starts, ends


@torch.no_grad()
def generate(
    models: Models15,
    params: dict,
    *,
    src_audio: tuple[torch.Tensor, int] | None = None,
    reference_audio: tuple[torch.Tensor, int] | None = None,
    progress: Progress | None = None,
    interrupt: Interrupt | None = None,
    decode: bool = True,
    rng: random.Random | None = None,
) -> GenerationResult:
    """One official ``generate_music`` call with ``models`` (on their device). ``params``: its keyword names
    (plus ``global_seed``, ``track_name``, ``complete_track_classes``); ``src_audio`` / ``reference_audio``:
    (audio [C, S] float, sample rate), standing for the files the official ``src_audio`` / ``reference_audio``
    name (their path values in ``params`` are only recorded). ``rng``: the official Python global RNG where the
    caller drew from it first (``planner.lm_seeds``); default ``random.Random(global_seed)``."""
    p = resolve_params(params)
    t0 = time.time()
    dit, vae, silence = models.dit, models.vae, models.silence_latent
    device, dtype = silence.device, dit.dtype
    task_type, codes = p["task_type"], p["audio_code_string"] or ""
    instruction = p["instruction"]
    if instruction is None:  # deliberate: the instruction the official UI derives from the task
        instruction = prompts.task_instruction(task_type, p["track_name"], p["complete_track_classes"])
    has_codes = _has_codes(codes)
    if task_type == "text2music" and has_codes:  # official: codes turn text2music into cover
        task_type, instruction = "cover", prompts.TASK_INSTRUCTIONS["cover"]
    if task_type in BASE_ONLY_TASKS and models.variant != "base":
        raise ValueError(
            f"task_type {task_type!r} needs a base model (acestep-v15-base); the {models.variant} model offers "
            f"text2music, repaint and cover only (official TASK_TYPES_TURBO)"
        )
    global_seed = p["global_seed"]
    if global_seed is None:
        global_seed = random.SystemRandom().randint(0, MAX_SEED)
    py = rng if rng is not None else random.Random(int(global_seed))  # official: Python's global RNG
    tg = torch.Generator("cpu").manual_seed(int(global_seed))  # official: torch's global RNG

    batch = max(1, int(p["batch_size"]) if p["batch_size"] is not None else DEFAULT_BATCH_SIZE)
    seeds = prepare_seeds(batch, p["seed"], p["use_random_seed"], py)
    duration = p["audio_duration"]
    if duration is not None and float(duration) <= 0:
        duration = None
    rep_start, rep_end = p["repainting_start"], p["repainting_end"]
    if rep_end is not None and float(rep_end) < 0:
        rep_end = None

    ref = None
    if reference_audio is not None:
        ref = reference_segments(to_stereo_48k(*reference_audio), py)
    src = None
    if src_audio is not None and not has_codes:  # official: codes win over the source audio
        src = to_stereo_48k(*src_audio)

    is_repaint_or_lego = task_type in ("repaint", "lego")
    is_cover_task = task_type == "cover" or has_codes
    calc_duration = prompts.target_duration(src.shape[-1] if src is not None else None, duration)
    metas = prompts.metas_text(
        prompts.metas_dict(p["bpm"], p["key_scale"], p["time_signature"], calc_duration)
    )
    wavs, starts, ends = _padding(
        src, duration, rep_start, rep_end, is_repaint_or_lego, is_cover_task, batch, py
    )

    # --- _prepare_batch: target latents ---
    hints_str = _normalize_hints(codes if has_codes else "", batch)
    wav_list = [wavs[i].clone() for i in range(batch)]
    latents, cached_wav, cached_latent = [], None, None
    for i in range(batch):
        if hints_str[i]:
            decoded = dit.codes_to_latents(hints_str[i])
            if decoded is not None:
                latents.append(decoded[0])
                wav_list[i] = torch.zeros(2, max(1, decoded.shape[1] * FRAME_SAMPLES))
                continue
        wav = wav_list[i]
        if is_silence(wav):
            latents.append(silence[0, : wav.shape[-1] // FRAME_SAMPLES])
        elif cached_wav is not None and cached_wav.shape == wav.shape and torch.equal(cached_wav, wav):
            latents.append(cached_latent.clone())  # official _cached_latent: identical items encode once
        else:
            z = vae.audio_to_latents(wav[None].to(vae.device), generator=tg)[0].to(device, dtype)
            cached_wav, cached_latent = wav, z
            latents.append(z)
    longest = max(w.shape[-1] for w in wav_list)
    wavs = torch.stack([F.pad(w, (0, longest - w.shape[-1])) for w in wav_list])
    frames = max(MIN_FRAMES, max(z.shape[0] for z in latents))
    target = torch.stack(
        [torch.cat([z, silence[0, : frames - z.shape[0]]]) if z.shape[0] < frames else z for z in latents]
    )

    # --- chunk masks, cover flags ---
    masks, is_covers, windows = [], [], {}
    for i in range(batch):
        window = None
        if starts is not None and ends is not None:
            s = starts[i] if starts[i] is not None else 0.0
            e = ends[i]
            if e is not None and e > s:
                pad = max(0, -s)
                a = int((s + pad) * SAMPLE_RATE // FRAME_SAMPLES)
                b = int((e + pad) * SAMPLE_RATE // FRAME_SAMPLES)
                a = max(0, min(a, frames - 1))
                b = max(a + 1, min(b, frames))
                window = (a, b)
        mask = torch.zeros(frames, dtype=torch.bool) if window else torch.ones(frames, dtype=torch.bool)
        if window:
            mask[window[0] : window[1]] = True
            windows[i] = window
            is_covers.append(False)  # a repainting item is never a cover
        else:
            is_covers.append(prompts.is_cover(instruction, hints_str[i] is not None))
        masks.append(mask)
    chunk = torch.stack(masks).to(device)
    is_covers = torch.tensor(is_covers, dtype=torch.bool, device=device)

    # --- source latents: the target, its repaint window silenced; silence without audio ---
    silence_t = silence[0, :frames]
    srcs = []
    for i in range(batch):
        if hints_str[i] is not None or wavs[i].abs().sum() > SILENCE_THRESHOLD:
            z = target[i].clone()
            if i in windows:
                a, b = windows[i]
                z[a:b] = silence_t[a:b]
            srcs.append(z)
        else:
            srcs.append(silence_t.clone())
    src_latents = torch.stack(srcs).to(dtype)

    hints = None
    if any(h is not None for h in hints_str):
        rows = []
        for h in hints_str:
            z = dit.codes_to_latents(h) if h is not None else None
            if z is None:
                rows.append(silence_t)
                continue
            if z.shape[1] < frames:
                z = torch.cat([z, silence[:, : frames - z.shape[1]].to(z)], dim=1)
            rows.append(z[0, :frames])
        hints = torch.stack(rows).to(dtype)

    # --- prompts and embeddings ---
    caption = prompts.caption_from_sft_format(p["captions"] or "")
    caption_text = prompts.caption_prompt(caption, metas, instruction)
    lyric_text = prompts.lyric_prompt(p["lyrics"] or "", p["vocal_language"])
    tok = models.tokenizer
    text_ids, text_mask = tok.batch([caption_text] * batch, prompts.CAPTION_MAX_LENGTH)
    lyric_ids, lyric_mask = tok.batch([lyric_text] * batch, prompts.LYRIC_MAX_LENGTH)
    enc_device = models.text_encoder.device
    text_h = models.text_encoder.encode(text_ids.to(enc_device)).to(device, dtype)
    lyric_h = models.text_encoder.embed(lyric_ids.to(enc_device)).to(device, dtype)
    text_mask, lyric_mask = text_mask.to(device), lyric_mask.to(device)

    # --- timbre references (official infer_refer_latent) ---
    if ref is None:
        refs = silence[:, :REFERENCE_FRAMES].expand(batch, -1, -1)
    else:  # one tensor shared by every item: encoded once
        z = vae.audio_to_latents(ref[None].to(vae.device), generator=tg).to(device, dtype)
        refs = z.expand(batch, -1, -1)
    order = torch.arange(batch, device=device)
    chunk_masks = chunk[..., None].repeat(1, 1, target.shape[-1])

    states, _, context = dit.prepare_condition(
        text_h, text_mask, lyric_h, lyric_mask, refs.to(dtype), order, src_latents, chunk_masks, is_covers,
        silence, precomputed_lm_hints_25Hz=hints,
    )  # fmt: skip
    non_cover = None
    if p["audio_cover_strength"] < 1.0:
        nc_text = prompts.caption_prompt(caption, metas, prompts.DEFAULT_DIT_INSTRUCTION)
        nc_ids, nc_mask = tok.batch([nc_text] * batch, prompts.CAPTION_MAX_LENGTH, pad_to=text_ids.shape[1])
        nc_h = models.text_encoder.encode(nc_ids.to(enc_device)).to(device, dtype)
        sil = silence[:, :frames].expand(batch, -1, -1).to(dtype)
        nc_states, _, nc_context = dit.prepare_condition(
            nc_h, nc_mask.to(device), lyric_h, lyric_mask, refs.to(dtype), order, sil, chunk_masks,
            torch.zeros_like(is_covers), silence,
        )  # fmt: skip
        non_cover = Condition(nc_states, nc_context)

    # --- sample ---
    noise = seed_noise(seeds, frames, target.shape[-1], device, dtype)
    settings = SamplerSettings(
        variant=models.variant,
        inference_steps=int(p["inference_steps"]),
        guidance_scale=float(p["guidance_scale"]),
        shift=float(p["shift"]),
        timesteps=p["timesteps"],
        infer_method=p["infer_method"],
        use_adg=bool(p["use_adg"]),
        cfg_interval_start=float(p["cfg_interval_start"]),
        cfg_interval_end=float(p["cfg_interval_end"]),
        audio_cover_strength=float(p["audio_cover_strength"]),
        cover_noise_strength=float(p["cover_noise_strength"]),
    )
    t1 = time.time()
    out = sample(
        dit, Condition(states, context), noise, settings, src_latents=src_latents, non_cover=non_cover,
        renoise_generator=tg, progress=progress, interrupt=interrupt,
    )  # fmt: skip
    t2 = time.time()
    if not torch.isfinite(out).all():
        raise RuntimeError("generation produced NaN or Inf latents (official check); try float32")
    if out.numel() > 0 and out.abs().sum() == 0:
        raise RuntimeError("generation produced zero latents (official check)")

    audio = []
    if decode:
        wav = vae.latents_to_audio(
            out, float(p["latent_rescale"]), float(p["latent_shift"]), tiled=bool(p["use_tiled_decode"])
        )
        audio = [w.cpu() for w in wav]
    record = {k: p[k] for k in OFFICIAL_DEFAULTS}
    # The seed and use_random_seed stay as given: with global_seed they replay every draw (the random seeds, the
    # random durations after them); actual_seeds is the official seed_value_for_ui, for the reader.
    record.update(
        instruction=instruction,
        global_seed=int(global_seed),
        batch_size=batch,
        actual_seeds=", ".join(str(s) for s in seeds),
        time_costs={"preprocess": t1 - t0, "diffusion": t2 - t1, "decode": time.time() - t2},
    )
    for k in ("track_name", "complete_track_classes"):
        if p[k] is not None:
            record[k] = p[k]
    return GenerationResult(audio, SAMPLE_RATE, out, noise, record)
