"""``python -m acestep_models plan`` as a user runs it: the official generate_with_stop_condition keyword arguments in
a JSON file, the tiny 5 Hz LM (tests/golden/v15/lm/tiny-lm); the JSON it prints equals the official LLMHandler's
golden plan (metadata and codes), in batch mode too (batch_size and seeds: lists, one per item, as the official batch
call returns them), and bad parameters stop before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from acestep_models.__main__ import main

LM_GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "v15" / "lm"
GOLDEN = json.loads((LM_GOLDEN / "cases.json").read_text(encoding="utf-8"))
CASES = GOLDEN["cases"]
BATCH = GOLDEN["batch"]  # the official generate_with_stop_condition(batch_size=..., seeds=...)


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


@pytest.mark.parametrize("name", sorted(BATCH))
def test_plan_prints_the_official_batch_plan(name, tmp_path, capsys, qwen_bpe):
    """Batch mode: what the official batch call returns (metadata and audio_codes, lists of one per item), token
    for token; the metadata phase once, the items' codes phases after torch.manual_seed(seeds[i])."""
    case = BATCH[name]
    kwargs = case["kwargs"]
    code, out, err = plan(tmp_path, capsys, {**kwargs, "seed": int(case["seed"])}, qwen_bpe)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    n = kwargs["batch_size"]
    assert result["metadata"] == case["metadata"] and len(result["metadata"]) == n
    assert result["audio_codes"] == case["audio_codes"] and len(result["audio_codes"]) == n
    assert [c.count("<|audio_code_") for c in result["audio_codes"]] == case["codes_counts"]
    assert result["seeds"] == kwargs["seeds"][:n] and result["seed"] == int(case["seed"])
    texts = [ph["output_text"] for ph in case["phases"] if ph["phase"] == "codes"]
    expected = {f"codes_{i}": text for i, text in enumerate(texts)}
    expected.update((ph["phase"], ph["output_text"]) for ph in case["phases"] if ph["phase"] == "cot")
    assert result["phases"] == expected and len(texts) == n


def test_plan_pads_missing_seeds(tmp_path, capsys, qwen_bpe):
    """The official batch mode draws the missing seeds (random.randint(0, 2**32 - 1)); they are printed."""
    case = BATCH["two_seeds"]
    params = {**case["kwargs"], "seeds": case["kwargs"]["seeds"][:1], "seed": int(case["seed"])}
    code, out, err = plan(tmp_path, capsys, params, qwen_bpe)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert len(result["seeds"]) == 2 and result["seeds"][0] == case["kwargs"]["seeds"][0]
    assert 0 <= result["seeds"][1] < 2**32
    assert result["metadata"] == case["metadata"]  # the metadata phase does not depend on the items' seeds
    assert result["audio_codes"][0] == case["audio_codes"][0] and len(result["audio_codes"]) == 2


def test_batch_size_one_is_the_single_mode(tmp_path, capsys, qwen_bpe):
    """batch_size 1: the official single mode, which ignores seeds; the output is the single call's."""
    case = CASES["user_metas"]
    params = {**case["kwargs"], "seed": int(case["seed"]), "batch_size": 1, "seeds": [99, 98]}
    code, out, err = plan(tmp_path, capsys, params, qwen_bpe)
    assert code == 0, err
    assert "seeds ignored" in err
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result) == {"metadata", "audio_codes", "cot_text", "phases", "seed"}
    assert result["metadata"] == case["metadata"] and result["audio_codes"] == case["audio_codes"]


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
        ({"caption": "x", "infer_type": "dit", "batch_size": -2}, "batch_size: expected a whole number"),
        ({"caption": "x", "infer_type": "dit", "batch_size": 2, "seeds": 7}, "seeds: expected a list"),
        ({"caption": "x", "infer_type": "dit", "batch_size": 2, "seeds": [7, 1.5]}, "seeds: expected a list"),
    ],
)
def test_bad_parameters_stop_before_the_model_loads(params, message, tmp_path, capsys, qwen_bpe):
    code, out, err = plan(tmp_path, capsys, params, qwen_bpe, checkpoint=tmp_path / "no-such-lm")
    assert code == 1 and message in err, err
    assert "loaded" not in err and out == ""
