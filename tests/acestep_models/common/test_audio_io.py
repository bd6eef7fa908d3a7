"""Reading and writing audio files: [C, N] float32 tensors in, the same out, clear errors otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from acestep_models.common import audio_io
from acestep_models.common.audio_io import AudioError, load_audio, save_audio


def song(channels: int = 2, seconds: float = 0.5, rate: int = 48000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    tones = [0.5 * torch.sin(2 * torch.pi * (220 * (c + 1)) * t) for c in range(channels)]
    return torch.stack(tones).float()  # [C, N]


def test_wav_keeps_float_samples_exactly(tmp_path):
    audio = song() * 1.5  # beyond [-1, 1]: a float WAV keeps it
    path = save_audio(tmp_path / "song.wav", audio, 48000)
    assert soundfile.info(str(path)).subtype == "FLOAT"
    loaded, rate = load_audio(path)
    assert rate == 48000 and loaded.dtype == torch.float32 and loaded.shape == audio.shape
    assert torch.equal(loaded, audio)
    assert [p.name for p in tmp_path.iterdir()] == ["song.wav"]  # no temporary file left behind


@pytest.mark.parametrize(
    "ext, tolerance",
    [(".flac", 1e-6), (".ogg", 0.1), (".mp3", 0.1)],  # 24-bit FLAC; lossy codecs: the waveform, roughly
)
def test_flac_ogg_mp3_by_extension(tmp_path, ext, tolerance):
    audio = song(seconds=1.0)
    path = save_audio(tmp_path / f"song{ext}", audio, 48000)
    loaded, rate = load_audio(path)
    assert rate == 48000 and loaded.shape[0] == 2
    n = min(loaded.shape[1], audio.shape[1])
    assert abs(loaded.shape[1] - audio.shape[1]) < 0.1 * 48000
    if ext == ".flac":
        assert loaded.shape == audio.shape
        assert (loaded - audio).abs().max() < tolerance
    else:  # codec delay shifts the samples a little: compare the level, not sample by sample
        assert abs(loaded[:, :n].pow(2).mean().sqrt() - audio.pow(2).mean().sqrt()) < tolerance


def test_integer_formats_clip_instead_of_wrapping(tmp_path):
    loud = torch.full((2, 4800), 3.0)
    loaded, _ = load_audio(save_audio(tmp_path / "loud.flac", loud, 48000))
    assert loaded.min() > 0.99  # clipped to full scale, not wrapped to a negative value


def test_mono_and_other_rates(tmp_path):
    mono = song(channels=1, rate=44100)[0]  # [N]: written as one channel
    loaded, rate = load_audio(save_audio(tmp_path / "mono.wav", mono, 44100))
    assert rate == 44100 and loaded.shape == (1, mono.shape[0])


def test_missing_unreadable_and_empty_files_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="audio file not found: .*nothing.wav"):
        load_audio(tmp_path / "nothing.wav")
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    with pytest.raises(AudioError, match="cannot read audio file .*notes.wav"):
        load_audio(text)
    empty = tmp_path / "empty.wav"
    soundfile.write(str(empty), np.zeros((0, 2), np.float32), 48000, subtype="FLOAT")
    with pytest.raises(AudioError, match="empty.wav is empty"):
        load_audio(empty)


def test_nan_audio_is_refused_both_ways(tmp_path):
    bad = song()
    bad[0, 100] = float("nan")
    nan_file = tmp_path / "nan.wav"
    soundfile.write(str(nan_file), bad.T.numpy(), 48000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(nan_file)
    with pytest.raises(AudioError, match="NaN or infinite"):
        save_audio(tmp_path / "out.wav", bad, 48000)
    assert not (tmp_path / "out.wav").exists()


def test_bad_targets_are_refused(tmp_path):
    with pytest.raises(AudioError, match="unknown extension; use one of .wav, .flac, .ogg, .mp3"):
        save_audio(tmp_path / "song.m4a", song(), 48000)
    with pytest.raises(AudioError, match="folder .* does not exist"):
        save_audio(tmp_path / "missing" / "song.wav", song(), 48000)
    with pytest.raises(AudioError, match=r"expected audio \[channels, samples\]"):
        save_audio(tmp_path / "song.wav", torch.zeros(1, 2, 100), 48000)


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_write(file, *args, **kwargs):
        with open(file, "wb") as f:
            f.write(b"RIFF partial")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    monkeypatch.setattr(audio_io.soundfile, "write", broken_write)
    (tmp_path / "song.wav").write_bytes(b"the previous take")
    with pytest.raises(KeyboardInterrupt):
        save_audio(tmp_path / "song.wav", song(), 48000)
    assert [p.name for p in tmp_path.iterdir()] == ["song.wav"]
    assert (tmp_path / "song.wav").read_bytes() == b"the previous take"  # untouched


def test_libsndfile_without_mp3_gets_a_clear_message(tmp_path, monkeypatch):
    formats = {k: v for k, v in soundfile.available_formats().items() if k != "MP3"}
    monkeypatch.setattr(audio_io.soundfile, "available_formats", lambda: formats)
    with pytest.raises(AudioError, match="no MP3 support .*libsndfile >= 1.1.0"):
        save_audio(tmp_path / "song.mp3", song(), 48000)
    (tmp_path / "old.mp3").write_bytes(b"\xff\xfb")
    with pytest.raises(AudioError, match="no MP3 support"):
        load_audio(tmp_path / "old.mp3")


# --- files that are not audio, or are cut short ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, says",
    [
        (b"", "the file is empty (0 bytes)"),
        (b"hello, these are notes\n", "the file is a text file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "the file is a PNG image"),
        (b"PK\x03\x04" + bytes(64), "the file is a zip archive"),
        (
            b"RIFF\x00\x10\x00\x00WAVEjunk" + bytes(64),
            "the file is a RIFF (WAV/AVI) file that cannot be decoded",
        ),
    ],
)
def test_an_unreadable_file_says_what_it_is_and_what_was_expected(tmp_path, data, says):
    path = tmp_path / "song.wav"
    path.write_bytes(data)
    with pytest.raises(AudioError) as caught:
        load_audio(path)
    message = str(caught.value)
    assert message.startswith(f"cannot read audio file {path}: {says}")
    assert message.endswith("expected an audio file (wav, flac, ogg, mp3 or aiff)")
    assert "Format not recognised" not in message


def test_a_file_cut_short_says_how_long_it_should_be(tmp_path):
    whole = save_audio(tmp_path / "whole.wav", song(seconds=2.0), 48000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:300])
    info = audio_io.audio_info(cut)
    assert audio_io.truncation(info) == "the file is cut short: its header announces 2.00 s"
    assert audio_io.truncation(audio_io.audio_info(whole)) == ""
    short = audio_io.too_short(info.frames, info.samplerate, audio_io.truncation(info))
    assert short.startswith(
        f"it holds only {info.frames / 48000:.3g} s of audio ({info.frames} samples at 48000 Hz)"
    )
    assert short.endswith("0.5 s or more (the file is cut short: its header announces 2.00 s)")
    assert audio_io.too_short(24000, 48000) == ""  # half a second: a song's length
    assert "usually a file cut short" in audio_io.too_short(100, 48000)
