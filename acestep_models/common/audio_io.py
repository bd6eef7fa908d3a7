"""Reading and writing audio files, through soundfile (libsndfile).

Audio is a float32 tensor ``[C, N]`` (channels first, as torchaudio and the official pipeline hold it) with its
sample rate. The format follows the file name's extension. Writes go to a temporary file beside the target that
is renamed into place at the end, so an interrupted or failed write never leaves a partial file behind.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch

# extension -> (libsndfile format, subtype, write options). WAV keeps the float samples exactly; FLAC is integer
# only (24 bit is below the model's noise floor); MP3 at its highest constant bit rate (320 kbit/s).
WRITE_FORMATS = {
    ".wav": ("WAV", "FLOAT", {}),
    ".flac": ("FLAC", "PCM_24", {}),
    ".ogg": ("OGG", "VORBIS", {}),
    ".mp3": ("MP3", "MPEG_LAYER_III", {"compression_level": 0.0, "bitrate_mode": "CONSTANT"}),
}
MP3_LIBSNDFILE = "1.1.0"  # first libsndfile release with MP3 read and write
READABLE = "wav, flac, ogg, mp3 or aiff"
# The shortest audio taken as a song to work on (repaint, extend, edit, audio2audio's reference). The DCAE codes
# 4096 samples at 44.1 kHz (0.093 s) per latent frame, so this is about 5 frames: less holds no phrase to repaint,
# extend or take a style from. In practice shorter audio is a file cut short (a WAV truncated to 300 bytes reads
# as 26 samples and came out as a 0.09 s song, one frame of padding); refusing says so where the audio enters,
# which a warning in the server log would not (ComfyUI users rarely see it).
MIN_AUDIO_SECONDS = 0.5
# libsndfile's report on a WAV/AIFF whose chunk is longer than the file: "data : 352800 (should be 212)"
_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


class AudioError(ValueError):
    """An audio file that cannot be read or written, or audio that cannot be saved; the message says which."""


def _check_codec(path: Path, action: str) -> None:
    fmt = WRITE_FORMATS.get(path.suffix.lower(), (None,))[0]
    if fmt is not None and fmt not in soundfile.available_formats():
        raise AudioError(
            f"cannot {action} {path}: the installed libsndfile {soundfile.__libsndfile_version__} has no {fmt} "
            f"support (MP3 needs libsndfile >= {MP3_LIBSNDFILE}, shipped in the soundfile >= 0.12 wheels: "
            "pip install -U soundfile); or use .wav/.flac"
        )


def not_audio(path: str | os.PathLike, shown: str | None = None) -> AudioError:
    """An unreadable audio file, said in words: what the file is ("empty (0 bytes)", "a text file", "a PNG image",
    "a RIFF (WAV/AVI) file that cannot be decoded") and what was expected, instead of the readers' "Format not
    recognised" or "[Errno 1094995529] Invalid data found when processing input". ``shown``: how to name the file
    (default: its path)."""
    from .sniff import describe

    what = describe(path)
    if what.startswith("a RIFF") or what.split()[1:2] in (["FLAC"], ["Ogg"], ["MP3"], ["AIFF"], ["MP4/M4A"]):
        what += " that cannot be decoded (damaged, or cut short)"
    return AudioError(
        f"cannot read audio file {shown or path}: the file is {what}; expected an audio file ({READABLE})"
    )


def truncation(info: soundfile._SoundFileInfo) -> str:
    """For a WAV/AIFF file cut short, how much audio its header announces ("its header announces 1.00 s"); else ""."""
    m = _SHORT_CHUNK.search(info.extra_info or "")
    if not m or int(m.group(2)) >= int(m.group(1)) or info.frames <= 0:
        return ""
    frame_bytes = max(int(m.group(2)) // info.frames, 1)
    announced = int(m.group(1)) // frame_bytes / info.samplerate
    return f"the file is cut short: its header announces {announced:.2f} s"


def too_short(samples: int, rate: int, cut: str = "") -> str:
    """Why ``samples`` at ``rate`` are too short for a song (under ``MIN_AUDIO_SECONDS``), or "" when they are not;
    ``cut``: what ``truncation`` found, if anything."""
    seconds = samples / max(rate, 1)
    if seconds >= MIN_AUDIO_SECONDS:
        return ""
    return (
        f"it holds only {seconds:.3g} s of audio ({samples} samples at {rate} Hz); ACE-Step works on songs of "
        f"{MIN_AUDIO_SECONDS:g} s or more ({cut or 'audio this short is usually a file cut short'})"
    )


def audio_info(path: str | os.PathLike) -> soundfile._SoundFileInfo:
    """The file's sample rate, channels, frames and duration, without reading the samples."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"audio file not found: {p}")
    _check_codec(p, "read")
    try:
        info = soundfile.info(str(p))
    except (soundfile.LibsndfileError, RuntimeError) as e:
        raise not_audio(p) from e
    if info.frames <= 0:
        raise AudioError(f"audio file {p} is empty (no samples)")
    return info


def load_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """``(audio [C, N] float32, sample_rate)`` from a wav/flac/ogg/mp3/aiff file."""
    p = Path(path)
    audio_info(p)  # missing, unreadable and empty files get their own messages
    try:
        data, sample_rate = soundfile.read(str(p), dtype="float32", always_2d=True)  # [N, C]
    except (soundfile.LibsndfileError, RuntimeError) as e:
        raise not_audio(p) from e
    if data.shape[0] == 0:
        raise AudioError(f"audio file {p} is empty (no samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"audio file {p} holds NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sample_rate)


def save_audio(path: str | os.PathLike, audio: torch.Tensor, sample_rate: int) -> Path:
    """Write ``audio [C, N]`` (or ``[N]`` mono) to ``path``: float WAV, 24-bit FLAC, Vorbis OGG or MP3 by extension.

    Non-float formats are clipped to [-1, 1] first (libsndfile would wrap around). Returns the path written.
    """
    p = Path(path)
    spec = WRITE_FORMATS.get(p.suffix.lower())
    if spec is None:
        raise AudioError(f"cannot write {p}: unknown extension; use one of {', '.join(WRITE_FORMATS)}")
    _check_codec(p, "write")
    fmt, subtype, options = spec
    if audio.dim() == 1:
        audio = audio[None]
    if audio.dim() != 2 or audio.shape[-1] == 0:
        raise AudioError(
            f"cannot write {p}: expected audio [channels, samples], got shape {list(audio.shape)}"
        )
    data = audio.detach().float().cpu()
    if not torch.isfinite(data).all():
        raise AudioError(f"cannot write {p}: the audio has NaN or infinite samples")
    if subtype != "FLOAT":
        data = data.clamp(-1.0, 1.0)
    if not p.parent.is_dir():
        raise AudioError(f"cannot write {p}: folder {p.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".partial", dir=p.parent)
    os.close(fd)
    try:
        soundfile.write(tmp, data.T.numpy(), int(sample_rate), subtype=subtype, format=fmt, **options)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
