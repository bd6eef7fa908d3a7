"""``python -m acestep_models generate --lm``: the 5 Hz LM plans (tests/golden/v15/lm/tiny-lm) and the tiny 1.5
DiT set (tests/golden/v15/pipeline/tiny/) renders the plan, as the official ``inference.generate_music`` does. The
plan equals the official ``LLMHandler``'s golden for the same keyword arguments and seed (and our planner called
directly); the audio has the planned duration; the parameter file written beside it replays without the LM to
the same audio, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile
import torch
from safetensors.torch import load_file

from acestep_models.__main__ import main
from acestep_models.v15 import planner as P

TESTS = Path(__file__).resolve().parents[2]
DIT = TESTS / "golden" / "v15" / "pipeline" / "tiny" / "acestep-v15-turbo"
LM_GOLDEN = TESTS / "golden" / "v15" / "lm"
GOLDEN = json.loads((LM_GOLDEN / "cases.json").read_text(encoding="utf-8"))
CASE = GOLDEN["cases"]["auto_metas_cfg"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read(path: Path) -> torch.Tensor:
    data, sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    assert sr == 48000
    return torch.from_numpy(data.T.copy())


def params_for_case() -> dict:
    """The generate parameters for which the official generate_music calls the LM with the golden case's
    keyword arguments (CFG 2 and top-p 0.9 are the GenerationParams defaults); global_seed stands for the
    official torch.manual_seed before the call."""
    kw = CASE["kwargs"]
    return {
        "captions": kw["caption"],
        "lyrics": kw["lyrics"],
        "audio_duration": float(kw["target_duration"]),
        "use_cot_caption": kw["use_cot_caption"],
        "use_cot_language": kw["use_cot_language"],
        "batch_size": 1,
        "seed": 5,
        "use_random_seed": False,
        "global_seed": CASE["seed"],
        "use_tiled_decode": False,
    }


def test_generate_with_lm_plans_renders_and_replays(tmp_path, qwen_bpe, capsys):
    params = tmp_path / "p.json"
    params.write_text(json.dumps(params_for_case()))
    out = tmp_path / "song.wav"
    lm = ["--lm", str(LM_GOLDEN / "tiny-lm"), "--lm-tokenizer", str(qwen_bpe)]
    assert main(["generate", "--checkpoint", str(DIT), *lm, "--params", str(params), "--out", str(out)]) == 0
    record = json.loads((tmp_path / "song_input_params.json").read_text(encoding="utf-8"))
    plan = record["lm_plan"]
    # the plan is the official LLMHandler's, token for token
    assert plan["metadata"] == CASE["metadata"] and plan["audio_codes"] == CASE["audio_codes"]
    # ... and our planner's called directly
    direct = P.load_planner(LM_GOLDEN / "tiny-lm", tokenizer=qwen_bpe).plan(
        **CASE["kwargs"], seed=CASE["seed"]
    )
    assert direct["metadata"] == plan["metadata"] and direct["audio_codes"] == plan["audio_codes"]
    # fed into the generation as the official generate_music does: codes -> cover, missing metas from the LM,
    # the LM's language not used (it reads "vocal_language"), the caption kept (use_cot_caption false)
    meta = CASE["metadata"]
    assert record["audio_code_string"] == CASE["audio_codes"] and record["task_type"] == "text2music"
    assert (record["bpm"], record["key_scale"], record["time_signature"]) == (
        meta["bpm"], meta["keyscale"], meta["timesignature"]
    )  # fmt: skip
    assert record["vocal_language"] == "en" != meta["language"]
    assert record["captions"] == CASE["kwargs"]["caption"] and record["audio_duration"] == 10.0
    assert record["instruction"] == "Generate audio semantic tokens based on the given conditions:"  # cover
    audio = read(out)
    codes = CASE["audio_codes"].count("<|audio_code_")
    assert codes == 50 and audio.shape == (2, codes // 5 * 48000)  # the planned 10 s
    # the official peak normalisation to -1 dBFS
    assert abs(float(audio.abs().max()) - 10 ** (-1 / 20)) < 1e-6
    assert "5 Hz LM plan: bpm: 83" in capsys.readouterr().err

    # the record replays without the LM, bit for bit
    again = tmp_path / "again.wav"
    replay = ["generate", "--checkpoint", str(DIT), "--params", str(tmp_path / "song_input_params.json")]
    assert main([*replay, "--out", str(again)]) == 0
    assert torch.equal(read(again), audio)
    assert json.loads((tmp_path / "again_input_params.json").read_text(encoding="utf-8"))["lm_plan"] == plan


def batch_params(case: dict) -> dict:
    """The generate parameters of an official inference.generate_music golden: GenerationParams under the
    handler's names, GenerationConfig's seeds as the string generate_music hands the handler."""
    p, c = case["params"], case["config"]
    return {
        "captions": p["caption"], "lyrics": p["lyrics"], "vocal_language": p["vocal_language"],
        "audio_duration": p["duration"], "use_cot_caption": p["use_cot_caption"],
        "use_cot_language": p["use_cot_language"], "batch_size": c["batch_size"],
        "seed": ",".join(str(s) for s in c["seeds"]), "use_random_seed": c["use_random_seed"],
        "global_seed": case["global_seed"],
    }  # fmt: skip


@pytest.mark.parametrize("name", ["batch_seeds", "batch_single_seed", "batch_chunks"])
def test_generate_with_lm_batch_equals_official_generate_music(tmp_path, qwen_bpe, name):
    case = GOLDEN["generate_music"][name]
    golden = load_file(str(LM_GOLDEN / "generate_music.safetensors"))
    params = tmp_path / "p.json"
    params.write_text(json.dumps(batch_params(case)))
    lm = ["--lm", str(LM_GOLDEN / "tiny-lm"), "--lm-tokenizer", str(qwen_bpe)]
    out = tmp_path / "song.wav"
    assert main(["generate", "--checkpoint", str(DIT), *lm, "--params", str(params), "--out", str(out)]) == 0
    items = range(case["config"]["batch_size"])
    records = [
        json.loads((tmp_path / f"song_{i}_input_params.json").read_text(encoding="utf-8")) for i in items
    ]
    plan = records[0]["lm_plan"]
    # the official batch plan, token for token: the metadata phase once per chunk of 8 items, then each item's
    # codes after its own seed (batch_chunks: the 9th item alone, in single mode, after its chunk's own metadata)
    assert plan["seeds"] == [s for call in case["lm_calls"] for s in call["seeds"]]
    assert plan["metadata"] == case["lm_metadata"] and plan["audio_codes"] == case["audio_codes"]
    assert all(r["audio_code_string"] == case["audio_codes"] for r in records)
    assert records[0]["bpm"] == case["lm_metadata"]["bpm"]  # the first chunk's metadata
    # the DiT's seeds: for batch_single_seed item 1's is the next python-random draw, not the LM's (official)
    assert records[0]["actual_seeds"] == case["dit_seeds"]
    stride = case["audio_stride"]
    for i in items:
        audio = read(tmp_path / f"song_{i}.wav")
        assert audio.shape == (2, case["samples"])
        ref = golden[f"{name}.audio"][i]
        assert float((audio[:, ::stride] - ref).norm() / ref.norm()) < 1e-4

    # a record replays the batch without the LM, bit for bit
    replay = ["generate", "--checkpoint", str(DIT), "--params", str(tmp_path / "song_1_input_params.json")]
    assert main([*replay, "--out", str(tmp_path / "again.wav")]) == 0
    for i in items:
        assert torch.equal(read(tmp_path / f"again_{i}.wav"), read(tmp_path / f"song_{i}.wav"))


def test_user_codes_and_cover_skip_the_lm_codes():
    lm = dict(__import__("acestep_models.v15.params", fromlist=["LM_DEFAULTS"]).LM_DEFAULTS)
    assert P.plan_kwargs({"task_type": "cover"}, lm) is None
    assert P.plan_kwargs({"task_type": "repaint"}, lm) is None
    off = {
        **lm,
        "thinking": False,
        "use_cot_metas": False,
        "use_cot_caption": False,
        "use_cot_language": False,
    }
    assert P.plan_kwargs({}, off) is None
    kw = P.plan_kwargs({"audio_code_string": "<|audio_code_1|>", "bpm": 120.7, "key_scale": " n/a "}, lm)
    assert kw["infer_type"] == "dit" and kw["user_metadata"] == {"bpm": 120}
    assert kw["top_k"] is None and kw["top_p"] == 0.9 and kw["cfg_scale"] == 2.0
    kw = P.plan_kwargs({"audio_duration": -1, "time_signature": "3"}, {**lm, "lm_top_k": 40, "lm_top_p": 1.0})
    assert kw["infer_type"] == "llm_dit" and kw["user_metadata"] == {"timesignature": "3"}
    assert kw["top_k"] == 40 and kw["top_p"] is None and kw["target_duration"] == -1
    # after the LM: user values win, missing ones come from the metadata, the caption with use_cot_caption
    p = P.apply_plan(
        {"bpm": 100, "captions": "mine", "vocal_language": "en"}, lm, "dit",
        {"bpm": 90, "keyscale": "C major", "duration": 33, "caption": "theirs", "language": "el"}, "ignored",
    )  # fmt: skip
    assert p == {"bpm": 100, "captions": "theirs", "vocal_language": "en", "key_scale": "C major",
                 "audio_duration": 33.0}  # fmt: skip


@pytest.mark.parametrize(
    "extra, argv, message",
    [
        ({}, ["--lm", "/no/such/lm"], "no such folder"),
        ({"lm_temperature": "hot"}, ["--lm", str(LM_GOLDEN / "tiny-lm")], "lm_temperature"),
        ({}, ["--lm-tokenizer", "x"], "only with --lm"),
    ],
)
def test_lm_checked_before_loading(tmp_path, capsys, extra, argv, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"batch_size": 1, **extra}))
    out = tmp_path / "o.wav"
    assert main(["generate", "--checkpoint", str(DIT), *argv, "--params", str(path), "--out", str(out)]) == 1
    assert message in capsys.readouterr().err
