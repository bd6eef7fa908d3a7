"""What a file is, from its first bytes: for error messages that say what a file is not and what it looks like.

A reader that fails (libsndfile, ffmpeg, safetensors) says "Format not recognised" or "Error while deserializing
header"; users need "this .wav is empty (0 bytes)" or "this .safetensors file is a zip archive (a PyTorch
pickle?)". Only the first bytes are read.
"""

from __future__ import annotations

import os
from pathlib import Path

HEAD_BYTES = 64

# leading bytes -> what a file holding them is (checked in order)
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"RIFF", "a RIFF (WAV/AVI) file"),
    (b"fLaC", "a FLAC file"),
    (b"OggS", "an Ogg file"),
    (b"ID3", "an MP3 file"),
    (b"FORM", "an AIFF file"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a zip archive (a PyTorch .pt/.ckpt pickle, or an archive)"),
    (b"\x80\x02", "a Python pickle"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x1aE\xdf\xa3", "a Matroska/WebM file"),
    (b"<!DOCTYPE html", "an HTML page (a download that saved the web page instead of the file?)"),
    (b"<html", "an HTML page (a download that saved the web page instead of the file?)"),
)


def describe(path: str | os.PathLike) -> str:
    """What ``path`` is, as words that follow "the file is": "empty (0 bytes)", "a PNG image", "a text file", ...

    ``version https://git-lfs...`` text is a Git LFS pointer (the repository was cloned without its large files)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if size == 0:
        return "empty (0 bytes)"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file itself (run `git lfs pull` where it was cloned)"
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return "an MP4/M4A file"
    if _mpeg_frame(head):
        return "an MP3 file"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if _is_text(head):
        return "a text file"
    return f"binary data of no known format ({size} bytes)"


VIDEO = ("an MP4/M4A file", "a Matroska/WebM file", "a RIFF (WAV/AVI) file")


def _mpeg_frame(head: bytes) -> bool:
    """An MPEG audio frame header (an MP3 without ID3 tag): 11 sync bits, then no reserved version, layer,
    bit rate or sample rate."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:  # (a multi-byte character cut at the end of the head still reads as text)
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)
