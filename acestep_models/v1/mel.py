"""Log-mel front end of the ACE-Step music autoencoder (official ``acestep/music_dcae/music_log_mel.py``).

Reflect pad, |STFT| (2048 / hop 512, ``center=False``) with the official ``sqrt(re^2 + im^2 + 1e-6)``, a slaney mel
filterbank (128 bins, 40-16000 Hz at 44.1 kHz) and ``log(clamp(x, 1e-5))``. The Hann ``window`` and the filterbank
``fb`` are persistent buffers in the official vocoder file (``mel_transform.spectrogram.window``,
``mel_transform.mel_scale.fb``), so they keep those names and are loaded, not recomputed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_CLAMP = 1e-5  # official LogMelSpectrogram.compress
MAGNITUDE_EPS = 1e-6  # official LinearSpectrogram, mode "pow2_sqrt"


def _hz_to_mel_slaney(f: float) -> float:
    # Slaney's auditory toolbox scale: linear below 1 kHz, logarithmic above.
    return f / (200.0 / 3) if f < 1000.0 else 15.0 + math.log(f / 1000.0) / (math.log(6.4) / 27.0)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Slaney-scale, slaney-normalised triangular filters ``[n_freqs, n_mels]`` (what torchaudio's ``MelScale``
    builds with ``norm="slaney", mel_scale="slaney"``). Used only for a model created without weights."""
    freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    mels = torch.linspace(_hz_to_mel_slaney(f_min), _hz_to_mel_slaney(f_max), n_mels + 2)
    logstep = math.log(6.4) / 27.0
    pts = torch.where(
        mels >= 15.0, 1000.0 * torch.exp(logstep * (mels - 15.0)), mels * (200.0 / 3)
    )  # [M + 2]
    diff = pts[1:] - pts[:-1]
    slopes = pts[None, :] - freqs[:, None]  # [F, M + 2]
    fb = torch.clamp(torch.minimum(-slopes[:, :-2] / diff[:-1], slopes[:, 2:] / diff[1:]), min=0.0)
    return fb * (2.0 / (pts[2:] - pts[:-2]))[None]


class LinearSpectrogram(nn.Module):
    def __init__(
        self, n_fft: int = 2048, win_length: int = 2048, hop_length: int = 512, dtype=None, device=None
    ):
        super().__init__()
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.register_buffer("window", torch.hann_window(win_length, dtype=dtype, device=device))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y: [B, N] (or [B, 1, N]) -> magnitude [B, n_fft // 2 + 1, N // hop]."""
        if y.ndim == 3:
            y = y.squeeze(1)
        pad = self.win_length - self.hop_length
        y = F.pad(y.unsqueeze(1), (pad // 2, (pad + 1) // 2), mode="reflect").squeeze(1)
        window = self.window.to(y.device, torch.float32)
        spec = torch.stft(
            y.float(), self.n_fft, self.hop_length, self.win_length, window, center=False, return_complex=True
        )
        return torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + MAGNITUDE_EPS)


class MelScale(nn.Module):
    def __init__(self, n_freqs: int, n_mels: int, dtype=None, device=None):
        super().__init__()
        # Filled from the file (or by LogMelSpectrogram for a model created without weights).
        self.register_buffer("fb", torch.zeros(n_freqs, n_mels, dtype=dtype, device=device))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """spec: [B, F, T] -> [B, n_mels, T]."""
        return torch.matmul(spec.transpose(-1, -2), self.fb.to(spec)).transpose(-1, -2)


class LogMelSpectrogram(nn.Module):
    """Audio [B, N] at ``sample_rate`` -> log-mel [B, n_mels, N // hop_length], computed in float32."""

    def __init__(
        self,
        sample_rate: int = 44100,
        n_fft: int = 2048,
        win_length: int = 2048,
        hop_length: int = 512,
        n_mels: int = 128,
        f_min: float = 40.0,
        f_max: float = 16000.0,
        dtype=None,
        device=None,
    ):
        super().__init__()
        self.spectrogram = LinearSpectrogram(n_fft, win_length, hop_length, dtype=dtype, device=device)
        self.mel_scale = MelScale(n_fft // 2 + 1, n_mels, dtype=dtype, device=device)
        if not self.mel_scale.fb.is_meta:
            self.mel_scale.fb.copy_(mel_filterbank(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.clamp(self.mel_scale(self.spectrogram(audio)), min=LOG_CLAMP))
