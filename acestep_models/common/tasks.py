"""What a generation is asked to do: the official tasks as plain objects.

The command line (from the official parameters) and the nodes (from what is connected) build these; each
generation's sampler carries them out with its own official arithmetic (for v1: the 240 s window of extend,
``v1/sampler.py``). Latents are a generation's own layout with time on the last axis (v1 ``[B, 8, 16, T]``);
masks are per latent frame, ``[T]`` or ``[B, T]`` in [0, 1], 1 = regenerate.

- ``Text2Music``: a new song from noise.
- ``Retake``: a variation of the whole song (the official "repaint of the whole duration").
- ``Repaint``: regenerate the masked frames of ``source`` (soft mask values blend per frame).
- ``Extend``: ``source`` with ``left``/``right`` new frames regenerated around it.
- ``Audio2Audio``: a new song starting part-way from the noised ``reference``.
- ``Edit``: the official flow-edit of ``source`` from its own conditioning towards ``target``.

ACE-Step 1.5 adds (``v15/pipeline.py`` carries them out from the source audio, with the official handler's
arithmetic; ``Repaint`` there is the official repaint window in seconds, outpainting past either end included):

- ``Cover``: a new song on the semantics of a source song (its FSQ round trip) or of 5 Hz audio codes.
- ``Extract``: one track (stem) of the source, e.g. the vocals.
- ``Lego``: a new track generated into a window of the source, on the source's context.
- ``Complete``: the source completed with the named tracks.
Extract, lego and complete are for base models (official: the UI offers them only there).

``from_mask`` reads a mask over a latent the way the nodes offer it: all ones is a retake, exactly the zero frames
padded around a song is an extend, anything else a repaint.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Text2Music:
    name = "text2music"


@dataclass(frozen=True)
class Retake:
    variance: float  # how far the noise moves towards the retake noise (official retake_variance)
    name = "retake"


@dataclass(frozen=True)
class Repaint:
    source: torch.Tensor  # latents of the song
    mask: torch.Tensor  # [T] or [B, T], 1 = regenerate
    variance: float
    name = "repaint"


@dataclass(frozen=True)
class Extend:
    source: torch.Tensor  # latents of the song, without the new frames
    left: int  # new frames before the song
    right: int  # new frames after it
    variance: float
    mask: torch.Tensor | None = None  # [T'] or [B, T'] over the extended latent; None: 1 on the new frames
    name = "extend"


@dataclass(frozen=True)
class Audio2Audio:
    reference: torch.Tensor  # latents of the song to start from
    strength: float  # how much of the reference is kept (official ref_audio_strength)
    name = "audio2audio"


@dataclass(frozen=True)
class Edit:
    source: torch.Tensor  # latents of the song ([1, ...]: one song)
    target: object  # the generation's conditioning to edit towards
    n_min: float = 0.0  # share of the steps skipped
    n_max: float = 1.0  # share after which the target is sampled freely
    n_avg: int = 1  # noise draws averaged per edit step
    name = "edit"


@dataclass(frozen=True)
class Cover:
    """1.5: a new song on the source's semantics (or on ``codes``, the 5 Hz LM's audio codes)."""

    strength: float = 1.0  # share of the steps on the cover condition (official audio_cover_strength)
    noise_strength: float = 0.0  # how close the start is to the source (official cover_noise_strength)
    codes: str = ""  # "<|audio_code_N|>..." (official audio_code_string); used instead of the source audio
    name = "cover"


@dataclass(frozen=True)
class Extract:
    """1.5 (base models): one track of the source."""

    track: str | None = None  # one of prompts.TRACK_NAMES ("vocals", "drums", ...); None: "the track"
    name = "extract"


@dataclass(frozen=True)
class Lego:
    """1.5 (base models): a new ``track`` generated in the window [start, end) s of the source."""

    track: str | None = None
    start: float = 0.0  # seconds (official repainting_start)
    end: float | None = None  # seconds; None: the end of the source (official repainting_end)
    name = "lego"


@dataclass(frozen=True)
class Complete:
    """1.5 (base models): the source completed with ``tracks``."""

    tracks: tuple[str, ...] = ()
    name = "complete"


Task = Text2Music | Retake | Repaint | Extend | Audio2Audio | Edit | Cover | Extract | Lego | Complete
TEXT2MUSIC = Text2Music()
SOURCE_TASKS = (Repaint, Extend, Edit)  # the tasks that start from a song's latents


def range_mask(frames: int, ranges: list[tuple[int, int]], soft_frames: float = 0.0) -> torch.Tensor:
    """[frames]: 1 inside the frame ranges ``[(first, end), ...]`` (end exclusive), falling linearly to 0 over
    ``soft_frames`` outside them."""
    idx = torch.arange(frames, dtype=torch.float32)
    mask = torch.zeros(frames)
    for first, end in ranges:
        dist = torch.clamp(torch.maximum(first - idx, idx - (end - 1)), min=0)
        mask = torch.maximum(
            mask, (1 - dist / soft_frames).clamp(0, 1) if soft_frames > 0 else (dist == 0).float()
        )
    return mask


def _run_length(ones: torch.Tensor) -> int:
    return int(torch.cumprod(ones.int(), 0).sum())


def padding_marked(mask: torch.Tensor, latents: torch.Tensor) -> tuple[int, int] | None:
    """(frames added before, after) when the per-frame ``mask`` ([T] or [B, T], equal rows) marks exactly zero
    frames padded around a song in ``latents`` [..., T] (what extending a latent makes), else None."""
    if mask.ndim == 2:
        if not (mask == mask[:1]).all():
            return None
        mask = mask[0]
    if not ((mask == 0) | (mask == 1)).all():
        return None  # soft edges: a repaint over the padded latent
    ones = mask == 1
    frames = len(ones)
    left, right = _run_length(ones), _run_length(ones.flip(0))
    if left + right == 0 or left + right >= frames or ones[left : frames - right].any():
        return None
    added = torch.cat([latents[..., :left], latents[..., frames - right :]], dim=-1)
    if added.any() or not latents[..., left : frames - right].any():
        return None  # song material under the mask (or no song at all): a repaint
    return left, right


def from_mask(latents: torch.Tensor, mask: torch.Tensor, variance: float) -> Retake | Repaint | Extend:
    """The task a per-frame ``mask`` [T] or [B, T] over ``latents`` [B, ..., T] asks for: all ones a retake (the
    official "vary the whole song"), exactly the zero frames padded around a song an extend, else a repaint."""
    if bool((mask == 1).all()):
        return Retake(variance)
    added = padding_marked(mask, latents)
    if added is None:
        return Repaint(latents, mask, variance)
    left, right = added
    return Extend(latents[..., left : latents.shape[-1] - right], left, right, variance)


def to(task: Task, device, dtype: torch.dtype) -> Task:
    """``task`` with its latents on ``device`` in ``dtype`` (masks keep their values: only moved), ready for a
    sampler whose model runs there."""
    changes = {}
    for name in ("source", "reference"):
        latents = getattr(task, name, None)
        if latents is not None:
            changes[name] = latents.to(device, dtype)
    if getattr(task, "mask", None) is not None:
        changes["mask"] = torch.as_tensor(task.mask).to(device)
    if isinstance(task, Edit):
        changes["target"] = task.target.to(device, dtype)
    return replace(task, **changes) if changes else task
