"""``python -m acestep_models`` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
LYRICS = ROOT / "tests" / "golden" / "lyrics"
OFFICIAL = json.loads((LYRICS / "official_ids.json").read_text(encoding="utf-8"))


def cli(*args: str, unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-m", "acestep_models", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=300,
    )


def test_tokenize_lyrics_prints_the_official_ids(lyric_vocab, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    files = [
        "tests/golden/lyrics/corpus/mixed.txt",
        "tests/golden/lyrics/examples/default_20250426074413.txt",
    ]
    run = cli("tokenize-lyrics", "--vocab", str(lyric_vocab), *files, str(empty))
    assert run.returncode == 0, run.stderr
    out = [json.loads(line) for line in run.stdout.splitlines()]
    assert [o["file"] for o in out] == [*files, str(empty)]
    for o, rel in zip(out, ["corpus/mixed.txt", "examples/default_20250426074413.txt"]):
        assert o["ids"] == OFFICIAL["files"][rel]["ids"]
        for line, official in zip(o["lines"], OFFICIAL["files"][rel]["lines"], strict=True):
            assert line["ids"] + [2] == official["ids"]  # each line's ids, then the separator
        assert all(set(line) == {"lang", "text", "ids", "unknown"} for line in o["lines"])
    mixed = out[0]["lines"]
    assert mixed[0] == {"lang": "en", "text": "[verse]", "ids": [259, 6683], "unknown": 0}
    assert mixed[1]["lang"] == "zh" and mixed[1]["text"] == "Yo, 这是来自深渊的怒吼"
    # Empty lyrics: the pipeline feeds a single 0 (with mask 0).
    assert out[2]["ids"] == [0] and out[2]["lines"] == [{"lang": None, "text": "", "ids": [], "unknown": 0}]


def test_missing_file_is_a_one_line_error(lyric_vocab):
    run = cli("tokenize-lyrics", "--vocab", str(lyric_vocab), "no/such/lyrics.txt")
    assert run.returncode != 0 and run.stdout == ""
    assert run.stderr.strip() == "error: lyrics file not found: no/such/lyrics.txt"


def test_vocab_not_found_says_where_it_looked(tmp_path):
    lyrics = tmp_path / "song.txt"
    lyrics.write_text("hello")
    run = cli("tokenize-lyrics", "--vocab", str(tmp_path / "missing.json"), str(lyrics))
    assert run.returncode != 0 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and "missing.json (missing)" in run.stderr

    run = cli("tokenize-lyrics", str(lyrics), unset=("COMFYUI_PATH",))  # no ComfyUI around
    assert run.returncode != 0 and len(run.stderr.strip().splitlines()) == 1
    assert "$COMFYUI_PATH (not set)" in run.stderr and "--vocab" in run.stderr


def test_check_loads_every_part_and_writes_audio(lyric_vocab, tmp_path):
    import soundfile

    from tiny_checkpoints import write_all_in_one

    for checkpoint in (ROOT / "tests" / "golden" / "tiny", write_all_in_one(tmp_path / "aio.safetensors")):
        out = tmp_path / "check.wav"
        run = cli("check", str(checkpoint), "--vocab", str(lyric_vocab), "--seconds", "3", "--out", str(out))
        assert run.returncode == 0, run.stderr
        assert "one DiT pass over 3 s (32 latent frames)" in run.stdout
        audio, rate = soundfile.read(out)
        assert rate == 48000 and audio.shape == (142664, 2)  # 32 frames x 4096 samples at 44.1 kHz, at 48 kHz
        assert abs(audio).max() > 0 and not (abs(audio) == float("inf")).any()


def test_check_without_weights_says_which_files_go_where(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "acestep_models", "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "ACESTEP_CHECKPOINT": ""},
        timeout=120,
    )
    assert run.returncode == 2
    for expected in (
        "models/ACE-Step-v1-3.5B/",
        "music_dcae_f8c8/",
        "umt5-base/",
        "ace_step_v1_3.5b.safetensors",
    ):
        assert expected in run.stderr


def test_check_recognises_ace_step_15_and_runs_every_part(tmp_path):
    import soundfile
    from tiny15 import write_official_root

    root = write_official_root(tmp_path / "Ace-Step1.5")
    out = tmp_path / "check15.wav"
    run = cli("check", str(root), "--seconds", "2", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "one DiT pass over 2 s (50 latent frames)" in run.stdout  # 25 Hz
    audio, rate = soundfile.read(out)
    assert rate == 48000 and audio.shape == (50 * 1920, 2)
    assert abs(audio).max() > 0 and abs(audio).max() <= 1.0  # the official anti-clipping


@pytest.mark.parametrize("generation", ["v1", "1.5"])
def test_check_with_song_makes_a_song_at_the_official_settings(generation, lyric_vocab, tmp_path):
    """The quickstart's last step: after the check, a whole song (all the official steps), timed."""
    import soundfile
    from tiny15 import write_official_root

    from acestep_models.v1.music_dcae import frames_for_seconds, samples_for_frames

    if generation == "v1":
        checkpoint, extra = ROOT / "tests" / "golden" / "tiny", ["--vocab", str(lyric_vocab)]
        samples = samples_for_frames(frames_for_seconds(1.0))
    else:
        checkpoint, extra = write_official_root(tmp_path / "Ace-Step1.5"), []
        samples = 128 * 1920  # the official handler's shortest song: 128 latent frames
    song = tmp_path / "song.wav"
    run = cli("check", str(checkpoint), *extra, "--seconds", "1", "--out", str(tmp_path / "check.wav"),
              "--song", "1", "--song-out", str(song))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "made a 1 s song in " in run.stdout and str(song) in run.stdout
    audio, rate = soundfile.read(song)
    assert rate == 48000 and audio.shape == (samples, 2)
    assert abs(audio).max() > 1e-3 and not (abs(audio) == float("inf")).any()
    params = json.loads(song.with_name("song_input_params.json").read_text())
    steps = params.get("infer_step", params.get("inference_steps"))
    assert steps == (60 if generation == "v1" else 8)  # the official defaults


def test_split_writes_one_file_per_part_that_loads_as_the_original(lyric_vocab, tmp_path):
    """``split`` makes the files of workflows/text2music_split_loaders.json from the official folder or the
    all-in-one file; each loads to the same weights, and nothing is overwritten."""
    from acestep_models.v1 import checkpoint as C
    from tiny_checkpoints import write_all_in_one

    official = ROOT / "tests" / "golden" / "tiny"
    for source in (official, write_all_in_one(tmp_path / "aio.safetensors")):
        models = tmp_path / f"models_{source.name}"
        run = cli("split", str(source), "--models", str(models))
        assert run.returncode == 0, run.stderr
        dit, vae, te = (models / rel for rel in C.SPLIT_FILES.values())
        assert "ace_step_dit.safetensors" in run.stdout and dit.is_file() and vae.is_file() and te.is_file()
        pairs = [
            (C.load_dit(dit), C.load_dit(official)),
            (C.load_music_dcae(vae), C.load_music_dcae(official)),
        ]
        for ours, ref in pairs:
            a, b = ours.state_dict(), ref.state_dict()
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        (encoder, tokenizer), (ref, ref_tokenizer) = C.load_text_encoder(te), C.load_text_encoder(official)
        assert all(torch.equal(v, ref.state_dict()[k]) for k, v in encoder.state_dict().items())
        assert tokenizer.encode("pop, synth, 120 BPM") == ref_tokenizer.encode("pop, synth, 120 BPM")
        again = cli("split", str(source), "--models", str(models))
        assert again.returncode == 1 and "not overwriting" in again.stderr
