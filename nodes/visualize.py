"""Pictures of audio: a waveform or a log-mel spectrogram of any AUDIO as a ComfyUI IMAGE, so a song can drive image
and video graphs (as a conditioning picture, an overlay, a cover) or be shown in a report.

Images are ComfyUI IMAGEs ``[B, H, W, 3]`` float32 in [0, 1], one per song in the audio batch, time running left to
right over the whole song.
"""

from __future__ import annotations

import math

import comfy.model_management as mm
import torch
import torch.nn.functional as F
from comfy_api.latest import io

from .common import CATEGORY, advanced, check_audio

MODES = ["waveform", "spectrogram"]

# The palette of the waveform on our nodes (js/waveform_draw.js), so pictures and the editor look alike.
BACKGROUND = (0.075, 0.086, 0.106)
PEAK_COLOR = (0.204, 0.541, 0.725)  # min..max of each column
RMS_COLOR = (0.561, 0.839, 0.988)  # +-RMS of each column
MIDLINE_COLOR = (0.22, 0.25, 0.30)

# Spectrogram: 128 mel bands (as the ACE-Step DCAE's front end) over 80 dB, in a magma-like colour map.
N_MELS, F_MIN, F_MAX, TOP_DB = 128, 20.0, 16000.0, 80.0
COLORMAP = [  # (r, g, b) at evenly spaced levels from silent to loudest
    (0.001, 0.000, 0.014),
    (0.112, 0.065, 0.276),
    (0.316, 0.071, 0.485),
    (0.513, 0.148, 0.508),
    (0.716, 0.215, 0.475),
    (0.904, 0.318, 0.388),
    (0.989, 0.535, 0.382),
    (0.996, 0.765, 0.544),
    (0.987, 0.991, 0.750),
]


def _paint(shape_hw: tuple[int, int], layers: list[tuple[torch.Tensor, tuple]]) -> torch.Tensor:
    """[H, W, 3]: the background, then each (mask [H, W], colour) on top."""
    image = torch.tensor(BACKGROUND).expand(*shape_hw, 3).clone()
    for mask, color in layers:
        image[mask] = torch.tensor(color)
    return image


def waveform_image(wav: torch.Tensor, width: int, height: int, normalize: bool = True) -> torch.Tensor:
    """wav [C, N] -> [height, width, 3]: per pixel column the min..max of the samples it covers (all channels)
    and, brighter, +-their RMS; amplitude 1 (or the loudest peak, ``normalize``) reaches the top."""
    if wav.shape[-1] < 2 * width:  # short audio: at least two samples per column
        wav = F.interpolate(wav[None], size=2 * width, mode="linear", align_corners=True)[0]
    n = wav.shape[-1]
    column = torch.arange(n) * width // n  # [N] -> pixel column
    lo = torch.full((width,), math.inf).scatter_reduce(0, column, wav.amin(0), "amin")
    hi = torch.full((width,), -math.inf).scatter_reduce(0, column, wav.amax(0), "amax")
    power = torch.zeros(width).scatter_add(0, column, wav.pow(2).mean(0))
    rms = (power / torch.bincount(column, minlength=width).clamp(min=1)).sqrt()
    peak = float(torch.maximum(hi.abs(), lo.abs()).max())
    scale = 0.95 / peak if normalize and peak > 0 else 1.0
    lo, hi, rms = lo * scale, hi * scale, rms * scale
    # amplitude at each row's centre, +1 at the top; half a pixel of slack so quiet parts still show a line
    v = (1 - (2 * torch.arange(height, dtype=torch.float32) + 1) / height)[:, None]  # [H, 1]
    px = 1.0 / height
    body = (v >= lo - px) & (v <= hi + px)
    core = body & (v.abs() <= rms + px)
    mid = (v.abs() <= px) & ~body
    return _paint((height, width), [(mid, MIDLINE_COLOR), (body, PEAK_COLOR), (core, RMS_COLOR)])


def spectrogram_image(wav: torch.Tensor, rate: int, width: int, height: int) -> torch.Tensor:
    """wav [C, N] -> [height, width, 3]: the mono mix's log-mel spectrogram (low notes at the bottom), the loudest
    point white-yellow and 80 dB below it black."""
    from ..acestep_models.v1.mel import mel_filterbank

    mono = wav.mean(0)
    n_fft = 2048 if rate >= 32000 else 1024
    if mono.shape[-1] < n_fft:
        mono = F.pad(mono, (0, n_fft - mono.shape[-1]))
    hop = max(n_fft // 4, mono.shape[-1] // (4 * width))  # a few STFT frames per column, bounded memory
    window = torch.hann_window(n_fft)
    power = torch.stft(mono, n_fft, hop, window=window, center=True, return_complex=True).abs().pow(2)
    fb = mel_filterbank(n_fft // 2 + 1, F_MIN, min(F_MAX, rate / 2), N_MELS, rate)  # [freqs, mels]
    db = 10 * torch.log10((fb.T @ power).clamp(min=1e-10))  # [mels, frames]
    level = ((db - db.max() + TOP_DB) / TOP_DB).clamp(0, 1)
    level = F.interpolate(
        level.flip(0)[None, None], size=(height, width), mode="bilinear", align_corners=False
    )
    return colorize(level[0, 0].clamp(0, 1))


def colorize(level: torch.Tensor) -> torch.Tensor:
    """[H, W] in [0, 1] -> [H, W, 3] through :data:`COLORMAP` (linear between its levels)."""
    cmap = torch.tensor(COLORMAP)
    pos = level * (len(COLORMAP) - 1)
    below = pos.floor().long().clamp(max=len(COLORMAP) - 2)
    frac = (pos - below)[..., None]
    return cmap[below] * (1 - frac) + cmap[below + 1] * frac


class AceStepAudioToImage(io.ComfyNode):
    TITLE = "ACE-Step Audio to Image"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulAudioToImage",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Draws any audio as a picture: its waveform, or its log-mel spectrogram (time left to right, "
            "low notes at the bottom). One image per song in the batch, for image/video graphs and reports.",
            inputs=[
                io.Audio.Input("audio", tooltip="The audio to draw (any sample rate, mono or stereo)."),
                io.Combo.Input(
                    "mode",
                    options=MODES,
                    default="waveform",
                    tooltip="waveform: loudness over time (peaks and RMS). spectrogram: which frequencies sound "
                    "when (128 mel bands, 80 dB).",
                ),
                io.Int.Input(
                    "width", default=1024, min=16, max=8192, step=8, tooltip="Image width in pixels (time)."
                ),
                io.Int.Input(
                    "height",
                    default=256,
                    min=16,
                    max=4096,
                    step=8,
                    tooltip="Image height in pixels (amplitude or frequency).",
                ),
                advanced(
                    io.Boolean.Input(
                        "normalize",
                        default=True,
                        tooltip="Waveform: scale the loudest peak to the image height (off: full scale = 1.0).",
                    )
                ),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="[batch, height, width, 3] in [0, 1].")],
        )

    @classmethod
    def execute(
        cls, audio: dict, mode: str = "waveform", width: int = 1024, height: int = 256, normalize: bool = True
    ) -> io.NodeOutput:
        wav, rate = check_audio(cls.TITLE, "audio", audio)
        images = []
        for song in wav.cpu():
            mm.throw_exception_if_processing_interrupted()
            if mode == "spectrogram":
                images.append(spectrogram_image(song, rate, width, height))
            else:
                images.append(waveform_image(song, width, height, normalize))
        return io.NodeOutput(torch.stack(images).to(mm.intermediate_device()))


NODES = [AceStepAudioToImage]
