"""Test audio for the ACE-Step 1.5 pipeline goldens, from formulas (so no audio file is committed): the golden
script feeds it to the official handler through a patched ``torchaudio.load``, the tests to ours. float64
arithmetic, rounded once to float32: the same samples in any environment with the same torch."""

from __future__ import annotations

import math

import torch

SAMPLE_RATE = 48000


def source_audio(seconds: float = 6.0) -> torch.Tensor:
    """[2, S] float32 at 48 kHz: a decaying A-minor chord with a slow vibrato (left) and a rising chirp (right)."""
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    vib = 1 + 0.004 * torch.sin(2 * math.pi * 5 * t)
    chord = sum(torch.sin(2 * math.pi * f * vib * t) for f in (220.0, 261.63, 329.63)) / 3
    left = 0.6 * chord * torch.exp(-0.2 * t)
    right = 0.4 * torch.sin(2 * math.pi * (110 + 40 * t) * t) + 0.2 * chord
    return torch.stack([left, right]).float()


def reference_audio(seconds: float = 2.5) -> torch.Tensor:
    """[1, S] float32 at 48 kHz (mono: the handler repeats it to stereo): a plucked tone with a noise-free click."""
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    tone = torch.sin(2 * math.pi * 440 * t) * torch.exp(-3 * (t % 0.5))
    return (0.5 * tone)[None].float()
