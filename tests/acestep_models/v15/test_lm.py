"""The 5 Hz LM and its planner against the official code's goldens (tests/golden/v15/lm/, made by
tests/golden/make_v15_lm.py with the official LLMHandler pt backend and transformers' Qwen3ForCausalLM): logits
equal, and every phase's prompts, prompt ids, generated token ids, texts and parsed outputs identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from acestep_models.v15 import checkpoint as C
from acestep_models.v15 import planner as P

LM_GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "v15" / "lm"
TINY_LM = LM_GOLDEN / "tiny-lm"
CASES = json.loads((LM_GOLDEN / "cases.json").read_text(encoding="utf-8"))
SLOW_CASES = {"cot_caption"}  # 271 caption tokens over the full 217k vocabulary: ~8 s on one core


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def planner(qwen_bpe) -> P.Planner:
    return P.load_planner(TINY_LM, tokenizer=qwen_bpe)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_logits_equal_transformers(planner):
    model, tok = planner.model, planner.tok
    g = load_file(str(LM_GOLDEN / "logits.safetensors"))
    meta = json.loads((LM_GOLDEN / "logits.json").read_text(encoding="utf-8"))
    stride = meta["stride"]
    ids, valid = tok.left_padded(meta["texts"])
    assert ids.tolist() == meta["input_ids"] and valid.long().tolist() == meta["attention_mask"]
    cache = model.new_cache(2, ids.shape[1] + len(meta["steps"]))
    every = model(ids, cache, valid=valid, all_logits=True)[..., ::stride]
    real = valid[:, :, None].expand_as(every)  # transformers' outputs at padding columns are not defined
    assert _rel(every[real], g["batch_prefill_all"][real]) < 1e-5
    assert _rel(every[:, -1], g["batch_step0"]) < 1e-5
    for i, step in enumerate(meta["steps"], start=1):
        logits = model(torch.tensor(step).view(2, 1), cache)
        assert _rel(logits[:, ::stride], g[f"batch_step{i}"]) < 1e-5
        assert torch.equal(logits.argmax(-1), g[f"batch_step{i}_argmax"])
    single = torch.tensor(meta["single_ids"])
    logits = model(single, model.new_cache(1, single.shape[1]))
    assert _rel(logits[:, ::stride], g["single_step0"]) < 1e-5


def test_loads_as_config_says(planner):
    config = planner.model.config
    assert (config.vocab_size, config.hidden_size, config.tie_word_embeddings) == (217204, 16, True)
    assert planner.model.lm_head is None
    assert planner.tok.vocab_size == 217204 and planner.tok.encode("<|audio_code_63999|>") == [151669 + 63999]
    assert planner.max_duration == CASES["max_duration"] == 240  # the official CPU tier


def test_shapes_alone_give_the_same_model(tmp_path, qwen_bpe):
    """Without config.json the sizes come from the tensor shapes (ComfyUI's single files)."""
    import shutil

    shutil.copy(TINY_LM / "model.safetensors", tmp_path / "model.safetensors")
    model, _ = C.load_lm(tmp_path / "model.safetensors", tokenizer=qwen_bpe)
    ref, _ = C.load_lm(TINY_LM, tokenizer=qwen_bpe)
    ids = torch.tensor([[151644, 872, 198, 6023]])
    assert torch.equal(model(ids, model.new_cache(1, 4)), ref(ids, ref.new_cache(1, 4)))


def _check_case(planner, name):
    case = CASES["cases"][name]
    result = planner.plan(seed=case["seed"], **case["kwargs"])
    assert set(result["phases"]) == {ph["phase"] for ph in case["phases"]}
    for ph in case["phases"]:
        ours = result["phases"][ph["phase"]]
        assert ours.prompt == ph["prompt"]
        assert ours.uncond_prompt == ph.get("uncond_prompt")
        assert ours.prompt_ids == ph["prompt_ids"]
        assert ours.max_new_tokens == ph["max_new_tokens"]
        assert ours.generated_ids == ph["generated_ids"], f"{name} {ph['phase']}: token ids differ"
        assert ours.text == ph["output_text"]
    assert result["metadata"] == case["metadata"]
    assert result["audio_codes"] == case["audio_codes"]


@pytest.mark.parametrize("name", [n for n in CASES["cases"] if n not in SLOW_CASES])
def test_plan_token_for_token(planner, name):
    _check_case(planner, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_CASES))
def test_plan_token_for_token_slow(planner, name):
    _check_case(planner, name)


def test_phase1_stops_before_think_end(planner):
    """Official quirk: the CoT text has no </think>; it ends at the EOS forced where </think> would begin."""
    text = CASES["cases"]["auto_metas_cfg"]["phases"][0]["output_text"]
    assert text.startswith("<think>\nbpm:") and text.endswith("timesignature: 3\n<|im_end|>")
    assert "</think>" not in text


def test_codes_phase_count(planner):
    """EOS blocked until int(duration * 5) codes, then forced (11.3 s -> 56 codes)."""
    for name, n in (("user_metas", 60), ("topk_topp_penalty", 56), ("auto_metas_cfg", 50)):
        codes = CASES["cases"][name]["audio_codes"]
        assert codes.count("<|audio_code_") == n


def test_progress_and_interrupt(planner):
    seen = []
    case = CASES["cases"]["greedy_no_cfg"]
    planner.plan(seed=1, **case["kwargs"], progress=lambda i, n: seen.append((i, n)))
    assert seen[-1] == (51, 51) and len(seen) > 51  # phase 1 then the 50 codes + EOS
    with pytest.raises(P.Interrupted):
        planner.plan(seed=1, **case["kwargs"], interrupt=lambda: True)


def test_parse_and_cot_format():
    text = "<think>\nbpm: 120\ncaption: A calm piece.\n  With piano.\nduration: 30\nkeyscale: G major\n</think>\n"
    meta, codes = P.parse_lm_output(text + "<|audio_code_5|><|audio_code_17|>")
    assert meta == {"bpm": 120, "caption": "A calm piece. With piano.", "duration": 30, "keyscale": "G major"}
    assert codes == "<|audio_code_5|><|audio_code_17|>"
    cot = P.format_metadata_as_cot(
        {"bpm": 120, "timesignature": "4/4", "duration": "30", "keyscale": "C minor"}
    )
    assert cot == "<think>\nbpm: 120\nduration: 30\nkeyscale: C minor\ntimesignature: 4\n</think>"
