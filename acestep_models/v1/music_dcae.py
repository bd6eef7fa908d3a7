"""ACE-Step v1 music autoencoder: audio <-> latents [B, 8, 16, T] (official ``acestep/music_dcae/music_dcae_pipeline.py``).

encode: audio at any rate -> sinc resample to 44.1 kHz -> zero-pad to a multiple of 4096 samples -> log-mel per
channel -> scaled to [-1, 1] -> DCAE encoder -> ``(z - LATENT_SHIFT) * LATENT_SCALE``.
decode: the inverse scalings -> DCAE decoder -> mel -> vocoder once per channel at 44.1 kHz -> sinc resample to
48 kHz, as the official pipeline's ``latents2audio`` does (``MusicDCAE.decode(latents, sr=48000)``; with
``overlapped_decode`` and songs over 48 s it calls ``decode_overlap`` instead: ``MusicDCAE.decode_overlap`` here).

Long songs: ``decode`` runs the DCAE decoder in windows of 512 latent frames exactly as the official overlapped
decode does (so a song of up to 512 frames, 47.5 s, gets the one-shot result) and the vocoder in tiles whose margins
cover its receptive field, which reproduces the one-shot vocoder output: memory is bounded, and the vocoder adds no
seam. ``encode`` windows the DCAE encoder the same way.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from .autoencoder_dc import AutoencoderDC, DCAEConfig
from .vocoder import ADaMoSHiFiGAN, VocoderConfig

LATENT_SCALE = 0.1786  # official MusicDCAE.scale_factor
LATENT_SHIFT = -1.9091  # official MusicDCAE.shift_factor
MEL_MIN, MEL_MAX = -11.0, 3.0  # official MusicDCAE.min_mel_value / max_mel_value
VAE_SAMPLE_RATE = 44100  # the vocoder's and the mel front end's rate
OUTPUT_SAMPLE_RATE = 48000  # official latents2audio(sample_rate=48000)
HOP_LENGTH = 512  # audio samples per mel frame
TIME_DOWNSAMPLE = 8  # mel frames per latent frame
SAMPLES_PER_FRAME = HOP_LENGTH * TIME_DOWNSAMPLE  # 4096: encode pads the 44.1 kHz audio to a multiple of this
LATENT_SHAPE = (8, 16)  # latents [B, 8, 16, T]: channels, mel rows (ComfyUI's native ACE latents alike)

# Official decode_overlap windows (music_dcae_pipeline.py, decode_overlap).
DCAE_WINDOW = 512  # latent frames per DCAE window ...
DCAE_MARGIN = DCAE_WINDOW // 4  # ... of which this many on each inner side are context only
OVERLAP_VOCODER_WINDOW = 512  # mel frames per vocoder window
OVERLAP_VOCODER_OVERLAP = 1024  # samples cut from each inner side of a vocoder window
OVERLAP_CROSSFADE = 128  # samples of linear crossfade between vocoder windows

VOCODER_TILE = 2048  # mel frames per vocoder tile in our (seamless) tiled decode


def frames_for_seconds(seconds: float) -> int:
    """Latent frames for a duration, as the official pipeline counts them."""
    return int(seconds * VAE_SAMPLE_RATE / HOP_LENGTH / TIME_DOWNSAMPLE)


def frames_for_samples(samples: int, sample_rate: int) -> int:
    """Latent frames ``encode`` makes of ``samples`` at ``sample_rate``: resampled to 44.1 kHz, padded up."""
    return math.ceil(math.ceil(samples * VAE_SAMPLE_RATE / sample_rate) / SAMPLES_PER_FRAME)


def seconds_for_frames(frames: float) -> float:
    """The duration ``frames`` latent frames cover (one frame is about 92.9 ms)."""
    return frames * SAMPLES_PER_FRAME / VAE_SAMPLE_RATE


def samples_for_frames(frames: int, sample_rate: int = OUTPUT_SAMPLE_RATE) -> int:
    """Length of ``decode``'s output for ``frames`` latent frames: torchaudio's resampler keeps
    ``ceil(new * n / orig)`` samples, with the quotient rounded to float32 first (so 800 frames give 3566585)."""
    n = frames * SAMPLES_PER_FRAME
    g = math.gcd(VAE_SAMPLE_RATE, sample_rate)
    return math.ceil(float(torch.tensor(sample_rate // g * n / (VAE_SAMPLE_RATE // g), dtype=torch.float32)))


@functools.lru_cache(maxsize=8)
def _resampler(orig_freq: int, new_freq: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig_freq, new_freq)


def resample(audio: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Band-limited sinc resampling in float32 with torchaudio's defaults (Hann window, 6 zero crossings, rolloff
    0.99) through ``torchaudio.transforms.Resample`` as the official code: it builds the kernel in float64 before
    casting, so its result is bit-equal to the official one (``functional.resample`` differs at ~3e-6)."""
    return _resampler(int(orig_freq), int(new_freq)).to(audio.device)(audio.float())


def _tiles(n: int, window: int | None, margin: int) -> Iterator[tuple[int, int, int, int]]:
    """(start, end, keep_start, keep_end) windows over ``range(n)``: windows of ``window`` hop by
    ``window - 2 * margin`` and keep all but ``margin`` on each inner side, so the kept parts tile ``range(n)``.
    With ``window=512, margin=128`` these are exactly the official ``decode_overlap`` DCAE windows."""
    if window is None or n <= window:
        yield 0, n, 0, n
        return
    start = 0
    while True:
        end = min(start + window, n)
        keep = 0 if start == 0 else start + margin
        if end == n:
            yield start, end, keep, n
            return
        yield start, end, keep, end - margin
        start += window - 2 * margin


@dataclass
class MusicDCAEConfig:
    dcae: DCAEConfig = field(default_factory=DCAEConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)

    @classmethod
    def from_official(cls, dcae: dict, vocoder: dict) -> MusicDCAEConfig:
        """From the two official config.json files (``music_dcae_f8c8/``, ``music_vocoder/``)."""
        return cls(DCAEConfig.from_official(dcae), VocoderConfig.from_official(vocoder))

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], overrides: dict | None = None) -> MusicDCAEConfig:
        """From a state dict with ``dcae.`` and ``vocoder.`` keys (ComfyUI's all-in-one ``vae.`` part);
        ``overrides`` may hold ``{"dcae": {...}, "vocoder": {...}}``."""
        overrides = overrides or {}
        parts = {
            p: {k[len(p) + 1 :]: v for k, v in sd.items() if k.startswith(p + ".")}
            for p in ("dcae", "vocoder")
        }
        return cls(
            DCAEConfig.from_state_dict(parts["dcae"], overrides.get("dcae")),
            VocoderConfig.from_state_dict(parts["vocoder"], overrides.get("vocoder")),
        )


class MusicDCAE(nn.Module):
    """``dcae`` (AutoencoderDC) + ``vocoder`` (ADaMoSHiFiGAN): the official file layout and ComfyUI's ``vae.``."""

    def __init__(self, config: MusicDCAEConfig, dtype=None, device=None, operations=None):
        super().__init__()
        self.config = config
        self.dcae = AutoencoderDC(config.dcae, dtype=dtype, device=device, operations=operations)
        self.vocoder = ADaMoSHiFiGAN(config.vocoder, dtype=dtype, device=device, operations=operations)

    @property
    def dtype(self) -> torch.dtype:
        return self.dcae.encoder.conv_in.weight.dtype

    # --- encode -------------------------------------------------------------------------------------------------

    def mel(self, audio: torch.Tensor) -> torch.Tensor:
        """44.1 kHz audio [B, C, N] -> the DCAE's input image [B, C, 128, N // 512] in [-1, 1] (float32)."""
        mel = self.vocoder.mel_transform(audio.flatten(0, 1)).unflatten(0, audio.shape[:2])
        mel = (mel - MEL_MIN) / (MEL_MAX - MEL_MIN)
        return (mel - 0.5) / 0.5  # the official torchvision Normalize(0.5, 0.5)

    @torch.no_grad()
    def encode(
        self, audio: torch.Tensor, sample_rate: int = 48000, window: int | None = DCAE_WINDOW
    ) -> torch.Tensor:
        """Audio [B, 2, N] (or mono [B, 1, N], repeated to stereo as the official ``load_audio`` does) at
        ``sample_rate`` (48 kHz by default, as the official MusicDCAE) -> latents [B, 8, 16, ceil(N44 / 4096)]
        float32, N44 being the length at 44.1 kHz.

        ``window`` (latent frames) bounds memory on long audio: the encoder runs on windows with 1/4 window of
        context on each inner side; audio of up to ``window`` frames (47.5 s at 512) gets the official result.
        ``None`` encodes in one pass as the official code does."""
        if audio.shape[1] == 1:
            audio = audio.repeat(1, 2, 1)
        if sample_rate != VAE_SAMPLE_RATE:
            audio = resample(audio, sample_rate, VAE_SAMPLE_RATE)
        audio = F.pad(audio.float(), (0, -audio.shape[-1] % SAMPLES_PER_FRAME))
        mels = self.mel(audio)
        latents = []
        for mel in mels:  # one song at a time, as the official encode
            mel = mel[None].to(self.dtype)
            parts = [
                self.dcae.encoder(mel[..., s * TIME_DOWNSAMPLE : e * TIME_DOWNSAMPLE])[..., ks - s : ke - s]
                for s, e, ks, ke in _tiles(mel.shape[-1] // TIME_DOWNSAMPLE, window, (window or 0) // 4)
            ]
            latents.append(torch.cat(parts, -1).float())
        return (torch.cat(latents) - LATENT_SHIFT) * LATENT_SCALE

    # --- decode -------------------------------------------------------------------------------------------------

    def _denormalise(self, mel: torch.Tensor) -> torch.Tensor:
        mel = mel * 0.5 + 0.5
        return mel * (MEL_MAX - MEL_MIN) + MEL_MIN

    def decode_mel(self, latents: torch.Tensor, window: int | None = DCAE_WINDOW) -> torch.Tensor:
        """One song's latents [1, 8, 16, T] -> log-mel [1, 2, 128, 8 T] through the DCAE decoder, in the official
        ``decode_overlap`` windows (512 latent frames, 128 of context on each inner side) or, with ``window=None``,
        in one pass as the official ``decode``."""
        z = (latents / LATENT_SCALE + LATENT_SHIFT).to(self.dtype)
        parts = [
            self.dcae.decoder(z[..., s:e])[..., (ks - s) * TIME_DOWNSAMPLE : (ke - s) * TIME_DOWNSAMPLE]
            for s, e, ks, ke in _tiles(z.shape[-1], window, (window or 0) // 4)
        ]
        return self._denormalise(torch.cat(parts, -1))

    def vocode(self, mel: torch.Tensor, tile: int | None = VOCODER_TILE) -> torch.Tensor:
        """Log-mel [B, 128, T] -> 44.1 kHz audio [B, T * 512] (float32), in tiles of ``tile`` mel frames whose
        margins cover the vocoder's receptive field: the one-shot result with bounded memory."""
        margin = self.vocoder.receptive_field()
        if tile is not None and tile <= 2 * margin:
            raise ValueError(f"vocoder tile {tile} must exceed twice its receptive field ({margin} frames)")
        hop = self.vocoder.hop_length
        parts = [
            self.vocoder.decode(mel[..., s:e])[:, 0, (ks - s) * hop : (ke - s) * hop].float()
            for s, e, ks, ke in _tiles(mel.shape[-1], tile, margin)
        ]
        return torch.cat(parts, -1)

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,
        sample_rate: int = OUTPUT_SAMPLE_RATE,
        window: int | None = DCAE_WINDOW,
        vocoder_tile: int | None = VOCODER_TILE,
    ) -> torch.Tensor:
        """Latents [B, 8, 16, T] -> audio [B, 2, samples_for_frames(T)] float32 at ``sample_rate`` (48 kHz).

        With ``window=None`` this is the official ``decode`` (the DCAE decoder in one pass); the default windows
        it as ``decode_overlap`` does, which changes nothing up to 512 frames (47.5 s). The vocoder runs one
        channel at a time, as the official decode, in seamless tiles (``vocoder_tile=None``: one pass)."""
        wavs = []
        for z in latents:
            mel = self.decode_mel(z[None], window)[0]  # [2, 128, 8 T]
            wav = torch.cat([self.vocode(mel[c : c + 1], vocoder_tile) for c in range(mel.shape[0])])
            wavs.append(
                resample(wav, VAE_SAMPLE_RATE, sample_rate) if sample_rate != VAE_SAMPLE_RATE else wav
            )
        return torch.stack(wavs)

    @torch.no_grad()
    def decode_overlap(self, latents: torch.Tensor, sample_rate: int = OUTPUT_SAMPLE_RATE) -> torch.Tensor:
        """The official ``MusicDCAE.decode_overlap`` (the pipeline's ``overlapped_decode`` path for songs over
        48 s), reproduced with its quirks: vocoder windows of 512 mel frames that overlap by only 1024 samples and
        meet in a 128-sample crossfade, the last window zero-padded (log-mel 0, not silence) before vocoding, and
        the output cut to ``int(T * 4096 * sample_rate / 44100)`` samples. Latents [B, 8, 16, T] -> [B, 2, N]."""
        win, ov, cf = OVERLAP_VOCODER_WINDOW, OVERLAP_VOCODER_OVERLAP, OVERLAP_CROSSFADE
        hop = self.vocoder.hop_length
        win_audio = win * hop
        step = win_audio - 2 * ov
        wavs = []
        for z in latents:
            mel = self.decode_mel(z[None], DCAE_WINDOW)[0]  # [2, 128, M]
            frames, total = mel.shape[-1], mel.shape[-1] * hop
            fade_out, fade_in = (
                torch.linspace(1, 0, cf, device=mel.device),
                torch.linspace(0, 1, cf, device=mel.device),
            )
            out, pos = None, 0
            while pos < total and pos // hop < frames:
                block = mel[..., pos // hop : pos // hop + win]
                block = F.pad(block, (0, win - block.shape[-1]))
                new = self.vocoder.decode(block).float()  # [2, 1, win_audio]
                if out is None:
                    out = new[..., :-ov]
                else:
                    n = min(cf, out.shape[-1], new.shape[-1] - (ov - cf))
                    mix = out[..., -n:] * fade_out[:n] + new[..., ov - n : ov] * fade_in[:n]
                    last = pos + step >= total
                    out = torch.cat([out[..., :-n], mix, new[..., ov:] if last else new[..., ov:-ov]], -1)
                pos += step
            wav = out[:, 0]
            if sample_rate != VAE_SAMPLE_RATE:
                wav = resample(wav, VAE_SAMPLE_RATE, sample_rate)
            wavs.append(wav[:, : int(z.shape[-1] * SAMPLES_PER_FRAME * sample_rate / VAE_SAMPLE_RATE)])
        return torch.stack(wavs)
