"""Bad input to ``python -m acestep_models generate``, as the nodes get it in tests/e2e/test_bad_input.py: NaN and
inf, numbers out of range, files that are not audio or are cut short, broken weights and lyrics longer than the
model takes. Each is one line naming the parameter (or the file) and saying what is wrong, and nothing is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "golden" / "tiny"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "acestep_models", "generate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
    )


def one_line_error(run: subprocess.CompletedProcess, *words: str, loaded: bool = False) -> str:
    """The error line (the only line on stderr, or the one after the "loaded ..." line when ``loaded``)."""
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 + loaded and lines[-1].startswith("error: "), run.stderr
    for word in words:
        assert word in lines[-1], run.stderr
    assert "Traceback" not in run.stderr and "Errno" not in run.stderr and "SafetensorError" not in run.stderr
    return lines[-1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--guidance-scale", "nan"], "error: guidance_scale=NaN: expected a finite number from 0 to 200"),
        (["--omega-scale", "inf"], "error: omega_scale=Infinity: expected a finite number from -100 to 100"),
        (["--guidance-interval", "nan"], "error: guidance_interval=NaN: expected a finite number in [0, 1]"),
        (["--retake-variance=-inf"], "error: retake_variance=-Infinity: expected a finite number in [0, 1]"),
        (["--ref-audio-strength", "nan"], "error: ref_audio_strength=NaN: expected a finite number"),
        (["--audio-duration", "nan"], "error: audio_duration=NaN: expected a finite number"),
        (["--omega-scale", "1e9"], "error: omega_scale=1000000000.0: expected a value from -100 to 100"),
        (["--guidance-scale", "5000"], "error: guidance_scale=5000.0: expected a value from 0 to 200"),
        (["--lora-weight", "50"], "error: lora_weight=50.0: expected a value from -10 to 10"),
        (["--batch-size", "100000"], "error: batch_size=100000: expected at most 64"),
        (["--lyrics", "la " * 20000], 'error: lyrics="la la la'),
    ],
)
def test_bad_numbers_and_lyrics_fail_before_any_model_loads(args, message, tmp_path):
    # The checkpoint does not exist: reaching the model loading would report that instead.
    run = cli("--checkpoint", str(tmp_path / "no-weights"), "--out", str(tmp_path / "song.wav"), *args)
    one_line_error(run, message)
    assert run.stdout == "" and list(tmp_path.iterdir()) == []


def test_nan_in_a_parameter_file_names_the_file(tmp_path):
    params = tmp_path / "song_input_params.json"
    params.write_text(
        '{"guidance_scale": NaN, "infer_step": 3}'
    )  # Python's json (and the official app) write NaN
    run = cli(
        "--checkpoint",
        str(tmp_path / "no-weights"),
        "--params",
        str(params),
        "--out",
        str(tmp_path / "a.wav"),
    )
    one_line_error(run, f"error: {params}: guidance_scale=NaN: expected a finite number")


def tone(path: Path, seconds: float = 2.0) -> Path:
    t = np.arange(int(seconds * 44100)) / 44100
    soundfile.write(
        str(path), np.stack([np.sin(440 * t), np.sin(660 * t)], 1).astype(np.float32), 44100, subtype="FLOAT"
    )
    return path


@pytest.mark.parametrize(
    "kind, says",
    [
        ("zero", "the file is empty (0 bytes); expected an audio file (wav, flac, ogg, mp3 or aiff)"),
        ("text", "the file is a text file; expected an audio file"),
        ("png", "the file is a PNG image; expected an audio file"),
        ("truncated", "it holds only 0.00059 s of audio (26 samples at 44100 Hz)"),
    ],
)
def test_a_source_that_is_not_audio_or_cut_short_is_named(kind, says, tmp_path):
    src = tmp_path / f"{kind}.wav"
    if kind == "zero":
        src.write_bytes(b"")
    elif kind == "text":
        src.write_text("these are lyrics\n")
    elif kind == "png":
        src.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    else:
        src.write_bytes(tone(tmp_path / "whole.wav").read_bytes()[:300])
    run = cli("--checkpoint", str(tmp_path / "no-weights"), "--out", str(tmp_path / "a.wav"), "--task", "repaint",
              "--src-audio-path", str(src), "--repaint-start", "0", "--repaint-end", "1")  # fmt: skip
    message = one_line_error(run, f'error: src_audio_path="{src}"', says)
    if kind == "truncated":
        assert "its header announces 2.00 s" in message


@pytest.mark.parametrize(
    "data, says",
    [
        (b"", "it is empty (0 bytes)"),
        (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n",
            "it is not a safetensors file but a Git LFS pointer",
        ),
        (None, "it is truncated (its tensors need"),
    ],
)
def test_broken_weights_say_what_the_file_is(data, says, lyric_vocab, tmp_path):
    ckpt = tmp_path / "ace_step_v1_3.5b.safetensors"
    if data is None:  # the official text encoder's weights, cut in half
        whole = (TINY / "umt5-base" / "model.safetensors").read_bytes()
        data = whole[: len(whole) // 2]
    ckpt.write_bytes(data)
    run = cli("--checkpoint", str(ckpt), "--vocab", str(lyric_vocab), "--out", str(tmp_path / "a.wav"),
              "--audio-duration", "1")  # fmt: skip
    one_line_error(run, f"cannot read {ckpt.name}: {says}", "A .safetensors weights file was expected")


def test_lyrics_longer_than_the_model_takes_fail_before_sampling(lyric_vocab, tmp_path):
    lyrics = "[verse]\n" + "\n".join(f"line number {i} of many" for i in range(600))
    params = tmp_path / "song.json"
    params.write_text(json.dumps({"lyrics": lyrics, "audio_duration": 1.0, "infer_step": 2}))
    out = tmp_path / "a.wav"
    run = cli(
        "--checkpoint", str(TINY), "--vocab", str(lyric_vocab), "--params", str(params), "--out", str(out)
    )
    words = (
        'lyrics="[verse]\\nline number 0',
        "longer than the 4096 tokens ACE-Step v1 reads",
        "at line 179",
    )
    one_line_error(run, *words, loaded=True)
    assert not out.exists()
