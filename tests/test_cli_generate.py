"""``python -m acestep_models generate`` as a user runs it, on the tiny checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from acestep_models.v1.music_dcae import frames_for_seconds, samples_for_frames

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "golden" / "tiny"
PIPELINE_GOLDEN = ROOT / "tests" / "golden" / "pipeline"
SONG = {
    "prompt": "pop, synth, drums, 120 BPM",
    "lyrics": "[verse]\nLights on the river\n[chorus]\nSing it out loud",
    "audio_duration": 1.0,
    "infer_step": 60,
}


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "acestep_models", "generate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
        **kwargs,
    )


def read(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(str(path), dtype="float32")
    assert rate == 48000
    return audio  # [N, C]


def relative_l2(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def test_text2music_writes_audio_and_parameters_that_replay_it(lyric_vocab, tmp_path):
    params = tmp_path / "song.json"
    params.write_text(json.dumps(SONG))
    out = tmp_path / "take.wav"
    run = cli("--checkpoint", str(TINY), "--vocab", str(lyric_vocab), "--params", str(params), "--out", str(out),
              "--infer-step", "3", "--guidance_interval", "1.0")  # fmt: skip
    assert run.returncode == 0, run.stderr
    audio = read(out)
    assert (
        audio.shape == (samples_for_frames(frames_for_seconds(1.0)), 2)
        and np.isfinite(audio).all()
        and np.abs(audio).max() > 1e-3
    )
    assert soundfile.info(str(out)).subtype == "FLOAT"
    assert "sampling" in run.stderr and "3/3" in run.stderr  # tqdm's bar over the steps

    written = json.loads((tmp_path / "take_input_params.json").read_text(encoding="utf-8"))
    assert written["infer_step"] == 3 and written["guidance_interval"] == 1.0  # the flags won over the file
    assert written["prompt"] == SONG["prompt"] and written["audio_path"] == "take.wav"
    assert len(written["actual_seeds"]) == 1 and len(written["retake_seeds"]) == 1  # random seeds, recorded

    replay = tmp_path / "replay.wav"
    run = cli("--checkpoint", str(TINY), "--vocab", str(lyric_vocab), "--params",
              str(tmp_path / "take_input_params.json"), "--out", str(replay))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert np.array_equal(read(replay), audio)  # bit for bit


def test_a_batch_writes_one_file_per_song(lyric_vocab, tmp_path):
    out = tmp_path / "batch.flac"
    run = cli("--checkpoint", str(TINY), "--vocab", str(lyric_vocab), "--out", str(out), "--prompt", "jazz",
              "--audio-duration", "1", "--infer-step", "3", "--batch-size", "2", "--manual-seeds", "7,8")  # fmt: skip
    assert run.returncode == 0, run.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["batch_0.flac", "batch_0_input_params.json", "batch_1.flac", "batch_1_input_params.json"]
    first, second = read(tmp_path / "batch_0.flac"), read(tmp_path / "batch_1.flac")
    assert first.shape == second.shape and first.shape[1] == 2
    assert not np.array_equal(first, second)  # two seeds, two songs
    written = json.loads((tmp_path / "batch_1_input_params.json").read_text(encoding="utf-8"))
    assert (
        written["actual_seeds"] == [7, 8]
        and written["batch_size"] == 2
        and written["audio_path"] == "batch_1.flac"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--infer-step", "many"], 'error: infer_step="many": expected a number'),
        (["--task", "repaint"], "error: src_audio_path=null: task repaint needs a source audio file"),
        (
            ["--audio_duration", "900"],
            "error: audio_duration=900.0: longer than the 240 s the model supports",
        ),
        (["--scheduler-type", "ddim"], 'error: scheduler_type="ddim": expected one of euler, heun, pingpong'),
        (
            ["--params", "tests/golden/params/nowhere.json"],
            'error: params="tests/golden/params/nowhere.json": file not found',
        ),
        (
            ["--lora-name-or-path", "/no/such/lora"],
            'error: lora_name_or_path="/no/such/lora": no such folder',
        ),
    ],
)
def test_bad_parameters_fail_before_any_model_loads(args, message, tmp_path):
    out = tmp_path / "song.wav"
    # The checkpoint does not exist: reaching the model loading would report that instead.
    run = cli("--checkpoint", str(tmp_path / "no-weights"), "--out", str(out), *args)
    assert run.returncode == 1
    assert run.stderr.startswith(message) and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert run.stdout == "" and list(tmp_path.iterdir()) == []


def test_a_bad_output_name_fails_before_any_model_loads(tmp_path):
    run = cli("--checkpoint", str(tmp_path), "--out", str(tmp_path / "song.m4a"))
    assert run.returncode == 1 and run.stderr.startswith("error: --out") and "use one of .wav" in run.stderr
    run = cli("--checkpoint", str(tmp_path), "--out", str(tmp_path / "missing" / "song.wav"))
    assert run.returncode == 1 and "does not exist" in run.stderr


def test_an_official_parameter_file_is_checked_and_its_errors_name_the_file(tmp_path):
    official = ROOT / "tests" / "golden" / "params" / "examples" / "default"
    example = json.loads(next(official.glob("*.json")).read_text(encoding="utf-8"))
    example["cfg_type"] = "cfgpp"
    path = tmp_path / "broken_input_params.json"
    path.write_text(json.dumps(example))
    run = cli(
        "--checkpoint", str(tmp_path / "no-weights"), "--params", str(path), "--out", str(tmp_path / "x.wav")
    )
    assert run.returncode == 1
    assert run.stderr.strip() == f'error: {path}: cfg_type="cfgpp": expected one of apg, cfg, cfg_star'
    # A flag's value is the flag's fault, not the file's.
    run = cli("--checkpoint", str(tmp_path / "no-weights"), "--params", str(path), "--out", str(tmp_path / "x.wav"),
              "--cfg-type", "cfg", "--guidance-scale", "-1")  # fmt: skip
    assert run.stderr.strip() == "error: guidance_scale=-1.0: expected 0 or more"


def test_ctrl_c_stops_cleanly_and_writes_nothing(lyric_vocab, tmp_path):
    out = tmp_path / "long.wav"
    proc = subprocess.Popen(
        [sys.executable, "-m", "acestep_models", "generate", "--checkpoint", str(TINY), "--vocab", str(lyric_vocab),
         "--out", str(out), "--prompt", "ambient", "--audio-duration", "10", "--infer-step", "1000"],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8",
    )  # fmt: skip
    try:
        seen = ""
        deadline = time.monotonic() + 300
        while "sampling" not in seen and time.monotonic() < deadline:  # wait until the steps run
            seen += os.read(proc.stderr.fileno(), 4096).decode("utf-8", "replace")
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, seen + rest
    assert "interrupted: no output written" in rest
    assert list(tmp_path.iterdir()) == []  # no audio, no parameters, no temporary file


def pipeline_cases() -> list[str]:
    """The cases of tests/golden/make_pipeline.py whose official audio is stored (audio.safetensors)."""
    if (
        not (PIPELINE_GOLDEN / "cases.json").is_file()
        or not (PIPELINE_GOLDEN / "audio.safetensors").is_file()
    ):
        return []
    from safetensors import safe_open

    with safe_open(str(PIPELINE_GOLDEN / "audio.safetensors"), "pt") as f:
        stored = set(f.keys())
    cases = json.loads((PIPELINE_GOLDEN / "cases.json").read_text(encoding="utf-8"))
    return [name for name, case in cases.items() if name in stored and not case.get("long_src")]


@pytest.mark.parametrize("case", pipeline_cases() or [None])
def test_cli_output_equals_the_official_audio(case, lyric_vocab, tmp_path):
    """The official call's keywords as a parameter file (the seeds it drew included) through the CLI."""
    if case is None:
        pytest.skip(f"no official pipeline audio in {PIPELINE_GOLDEN} yet (tests/golden/make_pipeline.py)")
    from safetensors.torch import load_file

    record = json.loads((PIPELINE_GOLDEN / "cases.json").read_text(encoding="utf-8"))[case]
    params = {**record["kwargs"], "manual_seeds": record["official_params"]["actual_seeds"]}
    params["retake_seeds"] = record["official_params"]["retake_seeds"]
    for key in ("src_audio_path", "ref_audio_input"):  # stored relative to the golden folder
        if params.get(key):
            params[key] = str(PIPELINE_GOLDEN / params[key])
    path = tmp_path / f"{case}.json"
    path.write_text(json.dumps(params), encoding="utf-8")
    out = tmp_path / "ours.wav"
    run = cli("--checkpoint", str(TINY), "--vocab", str(lyric_vocab), "--params", str(path), "--out", str(out),
              env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert run.returncode == 0, run.stderr
    ref = load_file(str(PIPELINE_GOLDEN / "audio.safetensors"))[case]  # [B, 2, N]
    paths = [out] if ref.shape[0] == 1 else [out.with_name(f"ours_{i}.wav") for i in range(ref.shape[0])]
    for item, written in zip(ref.numpy(), paths):
        ours = read(written).T
        assert ours.shape == item.shape
        assert relative_l2(ours, item) < 1e-4


def test_float8_dit_weights_from_the_command_line(lyric_vocab, tmp_path):
    """``--dit-weight-dtype fp8_e4m3fn`` (the low-memory mode) makes what the engine makes with float8 DiT weights."""
    import torch

    from acestep_models.v1.checkpoint import load_all
    from acestep_models.v1.pipeline import generate

    song = {**SONG, "infer_step": 3, "manual_seeds": 7, "retake_seeds": 8}
    params = tmp_path / "song.json"
    params.write_text(json.dumps(song))
    outs = {}
    for storage in ("fp8_e4m3fn", "default"):
        outs[storage] = tmp_path / f"{storage}.wav"
        run = cli("--checkpoint", str(TINY), "--vocab", str(lyric_vocab), "--params", str(params),
                  "--out", str(outs[storage]), "--dit-weight-dtype", storage)  # fmt: skip
        assert run.returncode == 0, run.stderr
    models = load_all(TINY, dtype=torch.float32, vocab=lyric_vocab, dit_weight_dtype=torch.float8_e4m3fn)
    assert models.dit.transformer_blocks[0].ff.inverted_conv.conv.weight.dtype == torch.float8_e4m3fn
    expected = generate(models, song).audio[0].T.numpy()
    narrow = read(outs["fp8_e4m3fn"])
    assert relative_l2(narrow, expected) < 1e-5
    assert np.isfinite(narrow).all() and np.abs(narrow).max() > 1e-3
    assert relative_l2(narrow, read(outs["default"])) > 1e-3  # the weights really were rounded


def test_storage_choices_are_the_engines():
    from acestep_models.__main__ import STORAGE_CHOICES
    from acestep_models.common.ops import STORAGE_DTYPES

    assert STORAGE_CHOICES == ("default", *STORAGE_DTYPES)
