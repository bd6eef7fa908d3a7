"""``python -m acestep_models generate`` with an ACE-Step 1.5 checkpoint: official generate_music parameters in a
JSON file, the audio equal to the official handler's (tests/golden/v15/pipeline/), the parameter file beside it
replaying the same audio."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import soundfile
import torch
from safetensors.torch import load_file

from acestep_models.__main__ import main

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "v15" / "pipeline"
sys.path.insert(0, str(GOLDEN.parents[1]))
from v15_signals import SAMPLE_RATE, source_audio  # noqa: E402

CASES = json.loads((GOLDEN / "cases.json").read_text())
DIT = GOLDEN / "tiny" / "acestep-v15-turbo"  # the official DiT folder: vae/ and the text encoder beside it
# the official trainer's export (adapter/ inside), for this DiT
LORA = GOLDEN.parent / "lora" / "official_lora"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def write_case(tmp_path: Path, name: str) -> Path:
    case = CASES["cases"][name]
    params = {**case["kwargs"], "global_seed": case["global_seed"]}
    if params.get("src_audio"):
        soundfile.write(tmp_path / "src.wav", source_audio(6.0).T.numpy(), SAMPLE_RATE, subtype="FLOAT")
        params["src_audio"] = "src.wav"  # relative to the parameter file
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params))
    return path


def read(path: Path) -> torch.Tensor:
    data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    assert sr == SAMPLE_RATE
    return torch.from_numpy(data.T.copy())


def test_generate_equals_official_and_replays(tmp_path, capsys):
    name = "turbo_repaint"
    golden = load_file(str(GOLDEN / "tensors.safetensors"))[f"{name}.audio"]
    out = tmp_path / "song.wav"
    argv = [
        "generate",
        "--checkpoint",
        str(DIT),
        "--params",
        str(write_case(tmp_path, name)),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    audio = read(out)
    assert audio.shape == (2, CASES["cases"][name]["samples"])
    assert rel(audio[None, :, :: CASES["audio_stride"]], golden) < 1e-4
    record = json.loads((tmp_path / "song_input_params.json").read_text())
    assert record["global_seed"] == CASES["cases"][name]["global_seed"] and record["task_type"] == "repaint"
    again = tmp_path / "again.wav"
    replay = ["generate", "--checkpoint", str(DIT), "--params", str(tmp_path / "song_input_params.json")]
    assert main([*replay, "--out", str(again)]) == 0
    assert torch.equal(read(again), audio)
    assert "wrote" in capsys.readouterr().out


def test_batch_writes_one_file_per_item(tmp_path):
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"captions": "x", "audio_duration": 1.0, "batch_size": 2, "seed": "1,2",
                                  "use_random_seed": False, "global_seed": 0, "use_tiled_decode": False}))  # fmt: skip
    assert (
        main(
            ["generate", "--checkpoint", str(DIT), "--params", str(params), "--out", str(tmp_path / "b.wav")]
        )
        == 0
    )
    assert (tmp_path / "b_0.wav").is_file() and (tmp_path / "b_1_input_params.json").is_file()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"task_type": "remix"}, "task_type"),
        ({"task_type": "repaint"}, "needs a source audio file"),
        ({"inference_steps": "eight"}, "whole number"),
        ({"prompt": "v1 name"}, "unknown parameter"),
        ({"task_type": "extract", "src_audio": "missing.wav"}, "no such audio file"),
        ({"lora_path": "missing_lora"}, "no such LoRA folder or file"),
        ({"lora_path": [str(LORA)], "lora_scale": [0.5, 0.5]}, "2 scales for 1 LoRAs"),
        ({"lora_path": str(LORA), "lora_scale": float("nan")}, "not finite"),
    ],
)
def test_checked_before_loading(tmp_path, capsys, params, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(params))
    assert (
        main(["generate", "--checkpoint", str(DIT), "--params", str(path), "--out", str(tmp_path / "o.wav")])
        == 1
    )
    assert message in capsys.readouterr().err


def test_refuses_v1_flags(tmp_path, capsys):
    argv = ["generate", "--checkpoint", str(DIT), "--infer-step", "27", "--out", str(tmp_path / "o.wav")]
    assert main(argv) == 1
    assert "ACE-Step v1 parameters" in capsys.readouterr().err


def test_a_lora_from_the_official_app_fields_applies_and_replays(tmp_path, capsys):
    """``lora_path`` / ``lora_scale``, the official app's LoRA controls: the song is the one the engine makes with
    ``apply_lora`` at that scale, a scale past the official slider is clamped to 1, and the record replays."""
    from acestep_models.v15.lora import apply_lora
    from acestep_models.v15.pipeline import generate, load_models

    song = {"captions": "lofi piano", "audio_duration": 2.0, "batch_size": 1, "use_random_seed": False,
            "seed": 3, "global_seed": 5}  # fmt: skip

    def cli(name: str, **lora) -> torch.Tensor:
        (tmp_path / f"{name}.json").write_text(json.dumps({**song, **lora}))
        argv = ["generate", "--checkpoint", str(DIT), "--params", str(tmp_path / f"{name}.json")]
        assert main([*argv, "--out", str(tmp_path / f"{name}.wav")]) == 0
        return read(tmp_path / f"{name}.wav")

    plain = cli("plain")
    half = cli("half", lora_path=str(LORA), lora_scale=0.5)
    models = load_models(DIT)
    apply_lora(models.dit, LORA, 0.5)
    engine = generate(models, {**song}).audio[0]
    assert torch.equal(half, engine.float()) and not torch.equal(half, plain)

    over = cli("over", lora_path=[str(LORA)], lora_scale=[1.5])
    assert "clamped to 1.0" in capsys.readouterr().err
    assert torch.equal(over, cli("full", lora_path=str(LORA)))
    record = json.loads((tmp_path / "half_input_params.json").read_text())
    assert record["lora_path"] == [str(LORA)] and record["lora_scale"] == [0.5]
    replay = ["generate", "--checkpoint", str(DIT), "--params", str(tmp_path / "half_input_params.json")]
    assert main([*replay, "--out", str(tmp_path / "again.wav")]) == 0
    assert torch.equal(read(tmp_path / "again.wav"), half)
