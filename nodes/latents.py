"""Latents and masks: empty latents of a duration, audio <-> latent through ACE-Step's music DCAE, masks over time
ranges, and padding a latent to extend a song.

Latents are ComfyUI LATENT dicts ``{"samples": [B, 8, 16, T], "type": "audio"}`` with the official scaling
(``(z - shift) * scale``), which is also what ComfyUI's native ACE nodes use (its ``ACEAudio`` latent format has
scale 1 and no shift), so these latents and ComfyUI's ``EmptyAceStepLatentAudio`` / ``VAEDecodeAudio`` mix freely.
One latent frame is 4096 samples at 44.1 kHz (about 92.9 ms). Masks are ComfyUI MASKs ``[1, 16, T]`` on the latent
grid: 1 where the sampler regenerates, 0 where it keeps the source.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..acestep_models.v1.music_dcae import (
    SAMPLES_PER_FRAME,
    VAE_SAMPLE_RATE,
    frames_for_samples,
    frames_for_seconds,
    seconds_for_frames,
)
from .common import (
    CATEGORY,
    LATENT_CHANNELS,
    LATENT_HEIGHT,
    MAX_LATENT_SECONDS,
    Vae,
    advanced,
    as_latent,
    check_audio,
    check_latent,
    checks_numbers,
    node_error,
)

OUTPUT_RATES = [48000, 44100]  # official latents2audio writes 48 kHz; 44.1 kHz is the vocoder's own rate


def _check_duration(node: str, input: str, value, seconds: float, fix: str) -> None:
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_LATENT_SECONDS:
        raise node_error(
            node,
            f"that makes a duration of {seconds:g} s; ACE-Step latents go from one frame to {MAX_LATENT_SECONDS:g} s",
            fix,
            input,
            value,
        )


class AceStepEmptyLatent(io.ComfyNode):
    TITLE = "ACE-Step Empty Latent"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulEmptyLatent",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="An empty (zero) ACE-Step latent of a duration: the seconds given, or the length of a "
            "connected audio, video, or image batch at an fps.",
            inputs=[
                io.Float.Input(
                    "seconds",
                    default=60.0,
                    min=0.1,
                    max=MAX_LATENT_SECONDS,
                    step=0.1,
                    tooltip="Duration of the song in seconds (used when no audio, video or images are connected).",
                ),
                io.Int.Input(
                    "batch_size", default=1, min=1, max=64, tooltip="How many songs to make at once."
                ),
                io.Audio.Input("audio", optional=True, tooltip="Take the duration of this audio instead."),
                io.Video.Input("video", optional=True, tooltip="Take the duration of this video instead."),
                io.Image.Input(
                    "images",
                    optional=True,
                    tooltip="Take the duration of this image batch (frames / fps) instead.",
                ),
                advanced(
                    io.Float.Input(
                        "fps",
                        default=24.0,
                        min=0.01,
                        max=1000.0,
                        step=0.01,
                        tooltip="Frames per second of the connected image batch.",
                    )
                ),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="Zeros [batch, 8, 16, frames]."),
                io.Float.Output(
                    display_name="seconds", tooltip="The duration the latent covers, in seconds."
                ),
            ],
        )

    @classmethod
    @checks_numbers
    def execute(cls, seconds: float, batch_size: int, audio=None, video=None, images=None, fps: float = 24.0):
        given = [
            name for name, v in (("audio", audio), ("video", video), ("images", images)) if v is not None
        ]
        if len(given) > 1:
            raise node_error(
                cls.TITLE, f"{' and '.join(given)} are all connected", "Connect only one of them."
            )
        if audio is not None:
            wav, rate = check_audio(cls.TITLE, "audio", audio)
            duration = wav.shape[-1] / rate
            _check_duration(cls.TITLE, "audio", "AUDIO", duration, "Trim the audio first.")
            frames = frames_for_samples(wav.shape[-1], rate)
        else:
            if video is not None:
                input, value, fix = "video", "VIDEO", "Trim the video first."
                duration = float(video.get_duration())
            elif images is not None:
                input, value, fix = "fps", fps, "Check the fps and the number of images."
                duration = images.shape[0] / fps
            else:
                input, value, fix = "seconds", seconds, f"Use 0.1 to {MAX_LATENT_SECONDS:g} seconds."
                duration = seconds
            _check_duration(cls.TITLE, input, value, duration, fix)
            frames = max(1, frames_for_seconds(duration))
        samples = torch.zeros(
            [batch_size, LATENT_CHANNELS, LATENT_HEIGHT, frames], device=mm.intermediate_device()
        )
        return io.NodeOutput(as_latent(samples), seconds_for_frames(frames))


class AceStepEncodeAudio(io.ComfyNode):
    TITLE = "ACE-Step Audio to Latent"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulEncodeAudio",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Encodes audio (any sample rate, mono or stereo) into an ACE-Step latent with the music "
            "DCAE, exactly as the official pipeline does (for repaint, extend, edit and audio-to-audio).",
            inputs=[
                io.Audio.Input("audio", tooltip="The audio to encode."),
                Vae.Input("vae", tooltip="ACE-Step's VAE (from ACE-Step Load VAE or Load Checkpoint)."),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="[batch, 8, 16, frames], ~10.77 frames/s.")
            ],
        )

    @classmethod
    def execute(cls, audio: dict, vae) -> io.NodeOutput:
        from ..acestep_models.common.audio_io import too_short

        wav, rate = check_audio(cls.TITLE, "audio", audio, max_channels=2)
        _check_duration(cls.TITLE, "audio", "AUDIO", wav.shape[-1] / rate, "Trim the audio first.")
        short = too_short(wav.shape[-1], rate)
        if short:  # (see MIN_AUDIO_SECONDS: a 0.09 s song from a truncated file helps nobody)
            raise node_error(cls.TITLE, short, "Check the file and the nodes that cut it.", "audio", "AUDIO")
        return io.NodeOutput(as_latent(vae.encode(wav, rate)))


class AceStepDecodeLatent(io.ComfyNode):
    TITLE = "ACE-Step Latent to Audio"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulDecodeLatent",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Decodes an ACE-Step latent to stereo audio (music DCAE + vocoder), as the official pipeline "
            "does, in bounded memory for long songs.",
            inputs=[
                io.Latent.Input("latent", tooltip="An ACE-Step latent [batch, 8, 16, frames]."),
                Vae.Input("vae", tooltip="ACE-Step's VAE (from ACE-Step Load VAE or Load Checkpoint)."),
                advanced(
                    io.Combo.Input(
                        "sample_rate",
                        options=[str(r) for r in OUTPUT_RATES],
                        default=str(OUTPUT_RATES[0]),
                        tooltip="48000: what the official pipeline writes. 44100: the vocoder's own rate, no resampling.",
                    )
                ),
            ],
            outputs=[io.Audio.Output(display_name="audio", tooltip="Stereo audio [batch, 2, samples].")],
        )

    @classmethod
    def execute(cls, latent: dict, vae, sample_rate: str = "48000") -> io.NodeOutput:
        samples = check_latent(cls.TITLE, "latent", latent)
        if not torch.isfinite(samples).all():
            raise node_error(
                cls.TITLE,
                "the latent holds NaN/inf values",
                "Fix the node that made it (often a dtype overflow).",
                "latent",
                "LATENT",
            )
        rate = int(sample_rate)
        return io.NodeOutput({"waveform": vae.decode(samples, rate), "sample_rate": rate})


# --- masks -----------------------------------------------------------------------------------------------------------

_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
# start: seconds, -seconds (before the song: extend it) or "end"; end: seconds, "end" or "end+seconds" (extend)
_RANGE = re.compile(
    rf"^(-?\s*(?:{_NUMBER})|end)\s*(?:-|–|:|to)\s*({_NUMBER}|end(?:\s*\+\s*(?:{_NUMBER}))?)$", re.IGNORECASE
)
RANGES_HELP = "e.g. 10-20, 35.5-end; -5-0 adds 5 s before the song, end-end+10 adds 10 s after it"


@dataclass
class Regions:
    """Time ranges on a latent of ``frames`` frames, extended by ``left``/``right`` new frames where a range reaches
    before the start or after the end. ``ranges``: (first, end) frames on the extended grid, end exclusive."""

    frames: int
    left: int
    right: int
    ranges: list[tuple[int, int]]

    @property
    def total(self) -> int:
        return self.left + self.frames + self.right


def parse_regions(node: str, input: str, text: str, frames: int) -> Regions:
    """``"10-20, 35.5-end, end-end+10"`` (seconds of a song of ``frames`` latent frames) -> :class:`Regions`.

    Seconds become frames as the official repaint counts them (``int(seconds * 44100 / 512 / 8)``, negative
    starts mirrored, as its ``repaint_start < 0`` extend); ``end`` is the last frame's end, ``end+s`` adds frames
    after it. The waveform editor writes frame-exact seconds, so what it shows is what this gives."""
    total = seconds_for_frames(frames)
    spans = []
    for part in re.split(r"[,;\n]+", text):
        part = part.strip()
        if not part:
            continue
        m = _RANGE.match(part)
        if not m:
            raise node_error(
                node,
                f"cannot read the range '{part}'",
                f"Write start-end in seconds, {RANGES_HELP}.",
                input,
                text,
            )
        start, stop = m.group(1).replace(" ", "").lower(), m.group(2).replace(" ", "").lower()
        extra = float(stop[4:] or 0) if stop.startswith("end") else None  # seconds after the end
        start_s = total if start == "end" else float(start)
        stop_s = float(stop) if extra is None else total + extra
        if stop_s <= start_s:
            raise node_error(
                node,
                f"the range '{part}' ends before it starts",
                "Write start-end, end > start.",
                input,
                text,
            )
        if extra is None and stop_s > total + seconds_for_frames(1):
            raise node_error(
                node,
                f"the range '{part}' goes past the end of the latent ({total:.2f} s)",
                "Shorten the range (or write 'end'), write end+seconds to extend the song, or make the latent "
                "longer (ACE-Step Extend Latent).",
                input,
                text,
            )
        # official: int() of a negative start rounds towards 0, as of a positive one
        first = frames if start == "end" else int(math.copysign(frames_for_seconds(abs(start_s)), start_s))
        if extra is None:  # inside the song (at least one frame: a range inside one frame regenerates it)
            first = min(first, frames - 1)
            last = min(frames, max(frames_for_seconds(stop_s), first + 1))
        else:  # new frames after the end are all regenerated, so the range covers them from the end on
            first = min(first, frames)
            last = max(frames + frames_for_seconds(extra), first + 1)
        spans.append((first, last))
    if not spans:
        raise node_error(node, "no range given", f"Write one or more ranges, {RANGES_HELP}.", input, text)
    left = max(0, -min(first for first, _ in spans))
    right = max(0, max(last for _, last in spans) - frames)
    ranges = [(first + left, last + left) for first, last in spans]
    return Regions(frames, left, right, ranges)


def parse_ranges(node: str, input: str, text: str, frames: int) -> list[tuple[int, int]]:
    """Ranges that stay inside the latent (no extension): latent frame ranges ``[(first, end), ...]``."""
    regions = parse_regions(node, input, text, frames)
    if regions.left or regions.right:
        raise node_error(
            node,
            "these ranges reach before the start or after the end of the latent",
            "Keep them inside the song, or extend it first (ACE-Step Mask from Seconds does both).",
            input,
            text,
        )
    return regions.ranges


def range_mask(frames: int, ranges: list[tuple[int, int]], soft_seconds: float) -> torch.Tensor:
    """[frames]: 1 inside the frame ranges, falling linearly to 0 over ``soft_seconds`` outside them."""
    from ..acestep_models.common.tasks import range_mask as engine_range_mask

    return engine_range_mask(frames, ranges, soft_seconds * VAE_SAMPLE_RATE / SAMPLES_PER_FRAME)


def as_mask(per_frame: torch.Tensor) -> torch.Tensor:
    """[T] -> ComfyUI MASK [1, 16, T] on the latent grid."""
    return per_frame.reshape(1, 1, -1).expand(1, LATENT_HEIGHT, -1).contiguous()


def _check_total(node: str, input: str, value, frames: int) -> None:
    if seconds_for_frames(frames) > MAX_LATENT_SECONDS:
        raise node_error(
            node,
            f"the extended latent would last {seconds_for_frames(frames):.1f} s, more than {MAX_LATENT_SECONDS:g} s",
            "Add fewer seconds.",
            input,
            value,
        )


class AceStepMaskFromSeconds(io.ComfyNode):
    TITLE = "ACE-Step Mask from Seconds"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulMaskFromSeconds",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="A time mask over a latent: 1 in the given ranges (what to regenerate, e.g. for repaint), "
            "0 elsewhere, with optional soft edges. Ranges reaching before the start (-5-0) or after the end "
            "(end-end+10) extend the song: the latent output is padded with new frames and the mask covers them. "
            "Connect the regions drawn on ACE-Step Load Audio's waveform to 'ranges'.",
            inputs=[
                io.Latent.Input("latent", tooltip="The latent the mask is for (it sets the mask's length)."),
                io.String.Input(
                    "ranges",
                    default="10-20",
                    tooltip=f"Time ranges in seconds, separated by commas: {RANGES_HELP}.",
                ),
                io.Float.Input(
                    "soft_edge",
                    default=0.0,
                    min=0.0,
                    max=60.0,
                    step=0.1,
                    tooltip="Seconds over which the mask fades from 1 to 0 outside each range (0: hard edges).",
                ),
                advanced(
                    io.Boolean.Input(
                        "invert",
                        default=False,
                        tooltip="Swap 1 and 0 over the song (keep the ranges instead); new frames stay 1.",
                    )
                ),
            ],
            outputs=[
                io.Mask.Output(display_name="mask", tooltip="[1, 16, frames], 1 = regenerate."),
                io.Latent.Output(
                    display_name="latent",
                    tooltip="The latent, padded with new (zero) frames where the ranges extend it; else unchanged.",
                ),
            ],
        )

    @classmethod
    @checks_numbers
    def execute(
        cls, latent: dict, ranges: str, soft_edge: float = 0.0, invert: bool = False
    ) -> io.NodeOutput:
        samples = check_latent(cls.TITLE, "latent", latent)
        regions = parse_regions(cls.TITLE, "ranges", ranges, samples.shape[-1])
        _check_total(cls.TITLE, "ranges", ranges, regions.total)
        per_frame = range_mask(regions.total, regions.ranges, soft_edge)
        if invert:
            song = slice(regions.left, regions.left + regions.frames)
            per_frame[song] = 1 - per_frame[song]
        if regions.left or regions.right:
            latent = as_latent(torch.nn.functional.pad(samples, (regions.left, regions.right)))
        return io.NodeOutput(as_mask(per_frame), latent)


class AceStepExtendLatent(io.ComfyNode):
    TITLE = "ACE-Step Extend Latent"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulExtendLatent",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Pads a latent with new frames before and/or after it, and gives the mask of the new part "
            "(1) against the original (0), for extending a song.",
            inputs=[
                io.Latent.Input("latent", tooltip="The song's latent (e.g. from ACE-Step Audio to Latent)."),
                io.Float.Input(
                    "left_seconds",
                    default=0.0,
                    min=0.0,
                    max=MAX_LATENT_SECONDS,
                    step=0.1,
                    tooltip="Seconds to add before.",
                ),
                io.Float.Input(
                    "right_seconds",
                    default=30.0,
                    min=0.0,
                    max=MAX_LATENT_SECONDS,
                    step=0.1,
                    tooltip="Seconds to add after.",
                ),
                advanced(
                    io.Float.Input(
                        "soft_edge",
                        default=0.0,
                        min=0.0,
                        max=60.0,
                        step=0.1,
                        tooltip="Seconds over which the mask fades into the original (0: only the new frames change).",
                    )
                ),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="The padded latent (new frames are zeros)."),
                io.Mask.Output(display_name="mask", tooltip="[1, 16, frames]: 1 on the new frames."),
            ],
        )

    @classmethod
    @checks_numbers
    def execute(cls, latent: dict, left_seconds: float, right_seconds: float, soft_edge: float = 0.0):
        samples = check_latent(cls.TITLE, "latent", latent)
        left, right = frames_for_seconds(left_seconds), frames_for_seconds(right_seconds)
        total = samples.shape[-1] + left + right
        longer = "right_seconds" if right_seconds >= left_seconds else "left_seconds"
        _check_total(cls.TITLE, longer, max(left_seconds, right_seconds), total)
        padded = torch.nn.functional.pad(samples, (left, right))
        new = [r for r in ((0, left), (total - right, total)) if r[1] > r[0]]
        return io.NodeOutput(as_latent(padded), as_mask(range_mask(total, new, soft_edge)))


NODES = [
    AceStepEmptyLatent,
    AceStepEncodeAudio,
    AceStepDecodeLatent,
    AceStepMaskFromSeconds,
    AceStepExtendLatent,
]
