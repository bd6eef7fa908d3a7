"""``python -m acestep_models plan`` as a user runs it: the official generate_with_stop_condition keyword arguments in
a JSON file, the tiny 5 Hz LM (tests/golden/v15/lm/tiny-lm); the JSON it prints equals the official LLMHandler's
golden plan (metadata and codes), and bad parameters stop before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from acestep_models.__main__ import main

LM_GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "v15" / "lm"
CASES = json.loads((LM_GOLDEN / "cases.json").read_text(encoding="utf-8"))["cases"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def plan(tmp_path, capsys, params: dict, qwen_bpe, checkpoint=LM_GOLDEN / "tiny-lm") -> tuple[int, str, str]:
    file = tmp_path / "plan.json"
    file.write_text(json.dumps(params))
    argv = ["plan", "--checkpoint", str(checkpoint), "--params", str(file), "--lm-tokenizer", str(qwen_bpe)]
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name", ["auto_metas_cfg", "user_metas", "greedy_no_cfg", "dit_only"])
def test_plan_prints_the_official_plan(name, tmp_path, capsys, qwen_bpe):
    case = CASES[name]
    code, out, err = plan(tmp_path, capsys, {**case["kwargs"], "seed": int(case["seed"])}, qwen_bpe)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["metadata"] == case["metadata"]
    assert result["audio_codes"] == case["audio_codes"]
    assert result["seed"] == int(case["seed"])
    assert set(result["phases"]) == {ph["phase"] for ph in case["phases"]}
    for ph in case["phases"]:
        assert result["phases"][ph["phase"]] == ph["output_text"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"caption": "x", "infer_type": "llm_dit", "temprature": 0.8}, "unknown parameter(s) ['temprature']"),
        (
            {"caption": "x", "infer_type": "llm_dit", "temperature": float("nan")},
            "temperature: expected a finite",
        ),
        ({"caption": "x", "infer_type": "both"}, "infer_type: 'dit'"),
        ({"caption": "x", "infer_type": "dit", "seed": -3}, "seed: expected a whole number"),
        ({"caption": 5, "infer_type": "dit"}, "caption: expected text"),
    ],
)
def test_bad_parameters_stop_before_the_model_loads(params, message, tmp_path, capsys, qwen_bpe):
    code, out, err = plan(tmp_path, capsys, params, qwen_bpe, checkpoint=tmp_path / "no-such-lm")
    assert code == 1 and message in err, err
    assert "loaded" not in err and out == ""
