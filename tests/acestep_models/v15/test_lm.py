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


# --- what a phase allocates and reads back (issue 13) ------------------------------------------------------------


def _plan_recording_caches(planner, monkeypatch, case: dict) -> tuple[dict, list]:
    caches = []
    new_cache = planner.model.new_cache

    def recording(*args, **kwargs):
        caches.append(new_cache(*args, **kwargs))
        return caches[-1]

    monkeypatch.setattr(planner.model, "new_cache", recording)
    return planner.plan(seed=case["seed"], **case["kwargs"]), caches


def _assert_golden(result: dict, case: dict) -> None:
    for ph in case["phases"]:
        assert result["phases"][ph["phase"]].generated_ids == ph["generated_ids"], ph["phase"]
    assert (result["metadata"], result["audio_codes"]) == (case["metadata"], case["audio_codes"])


def test_kv_cache_sized_to_the_phase(planner, monkeypatch):
    """A 10 s plan: the codes phase's cache is its prompt + 50 codes (the EOS drawn after them is never fed
    back), not the 4,032-token budget, and the phase fills it to the last column; the CoT starts 256 columns
    past its prompt. The tokens are the golden ones."""
    case = CASES["cases"]["auto_metas_cfg"]
    result, (cot, codes) = _plan_recording_caches(planner, monkeypatch, case)
    _assert_golden(result, case)
    cot_golden, codes_golden = case["phases"]
    prompt = len(codes_golden["prompt_ids"][0])
    assert codes.capacity == codes.max_len == prompt + 10 * 5
    assert codes.length == codes.capacity  # the phase reached its bound
    assert codes.k[0].shape[2] == prompt + 50 and len(codes_golden["generated_ids"]) == 51
    cot_prompt = len(cot_golden["prompt_ids"][0])
    assert cot.max_len == cot_prompt + cot_golden["max_new_tokens"] == cot_prompt + 4032
    assert cot.capacity == cot_prompt + P.CACHE_START
    assert cot.length == cot_prompt + len(cot_golden["generated_ids"]) - 1


def test_kv_cache_grows_without_changing_a_token(planner, monkeypatch):
    """A CoT that outgrows its first allocation (here 4 columns past the prompt) doubles the cache and still
    draws the golden tokens; at the LM level, logits through a cache grown at every step equal those through
    one allocated at once, bit for bit."""
    monkeypatch.setattr(P, "CACHE_START", 4)
    case = CASES["cases"]["auto_metas_cfg"]
    result, (cot, _) = _plan_recording_caches(planner, monkeypatch, case)
    _assert_golden(result, case)
    prompt = len(case["phases"][0]["prompt_ids"][0])
    assert cot.capacity == 2 * (prompt + 4) and cot.length > prompt + 4

    model, tok = planner.model, planner.tok
    meta = json.loads((LM_GOLDEN / "logits.json").read_text(encoding="utf-8"))
    ids, valid = tok.left_padded(meta["texts"])
    n = ids.shape[1] + len(meta["steps"])
    whole, grown = model.new_cache(2, n), model.new_cache(2, n, initial=ids.shape[1])
    assert torch.equal(model(ids, whole, valid=valid), model(ids, grown, valid=valid))
    for step in meta["steps"]:
        step = torch.tensor(step).view(2, 1)
        assert torch.equal(model(step, whole), model(step, grown))
    assert grown.capacity == n and grown.length == n


def test_codes_draw_is_torch_multinomial():
    """The codes phase's draw without host reads (``sample(checked=False)``) picks the token torch.multinomial
    picks and leaves the generator where it leaves it."""
    for trial in range(40):
        g = torch.Generator().manual_seed(trial)
        scores = torch.randn(1, 217204, generator=g) * (1 + trial % 5)
        if trial % 2:
            scores = P.top_p_filter(scores, 0.9)
        a, b = torch.Generator().manual_seed(100 + trial), torch.Generator().manual_seed(100 + trial)
        assert torch.equal(P.sample(scores, 0.85, a), P.sample(scores, 0.85, b, checked=False))
        assert torch.equal(a.get_state(), b.get_state())


def test_codes_phase_reads_nothing_back_per_token(planner):
    """The ops that make a GPU wait for the host (a read-back: ``.item()``, ``bool()``, ``nonzero``, a boolean
    index, ``multinomial``'s checks) seen in codes-only plans of 60 and 75 codes, CFG, top-k, top-p and the
    repetition penalty on: as many in both (the prompt's padding check, the read of the codes at the end)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    reads = {aten._local_scalar_dense, aten.is_nonzero, aten.nonzero, aten.multinomial, aten.equal,
             aten.masked_select}  # fmt: skip

    class CountReads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            bool_index = func.overloadpacket in (aten.index, aten.index_put, aten.index_put_) and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]
            )
            self.count += func.overloadpacket in reads or bool_index
            return func(*args, **(kwargs or {}))

    kwargs = dict(CASES["cases"]["user_metas"]["kwargs"], top_k=50, repetition_penalty=1.1)
    counts = []
    for seconds in (12, 15):
        with CountReads() as mode:
            out = planner.plan(seed=3, **dict(kwargs, target_duration=seconds))
        assert out["audio_codes"].count("<|audio_code_") == seconds * 5 and set(out["phases"]) == {"codes"}
        counts.append(mode.count)
    assert counts[0] == counts[1] <= 2, counts


@pytest.fixture(scope="module")
def static_planner(planner) -> P.Planner:
    """The same LM and tokenizer, its codes phase stepped by ``lm.StaticStep``: the step a CUDA graph captures."""
    return P.Planner(planner.model, planner.tok, step="static")


@pytest.mark.parametrize("name", ["user_metas", "greedy_no_cfg", "topk_topp_penalty", "negative_prompt_cfg"])
def test_the_cuda_graphs_step_plans_the_official_tokens(static_planner, name):
    """The codes phase through the static step (the whole cache attended, masked past the column; the column a
    device tensor) gives the official plan token for token, CFG's padded rows included."""
    _check_case(static_planner, name)


def test_the_cuda_graphs_step_is_one_fixed_sequence_of_ops(static_planner):
    """What CUDA graphs need of the step they capture once and replay for every token: the same ops on the same
    shapes with the same host arguments at every token after the warm-up (nothing of the step's column reaches an op
    as a host number), nothing read back, and its logits those of the plain forward to float rounding."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from acestep_models.v15 import lm

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            def show(a):
                if isinstance(a, torch.Tensor):
                    return ("T", tuple(a.shape), a.dtype)
                if isinstance(a, (list, tuple)):
                    return tuple(show(x) for x in a)
                if isinstance(a, dict):
                    return tuple((k, show(v)) for k, v in a.items())
                return a

            self.ops.append((str(func), show(args), show(kwargs or {})))
            return func(*args, **(kwargs or {}))

    model, tok = static_planner.model, static_planner.tok
    ids, valid = tok.left_padded(["a prompt for the codes", "NO USER INPUT"])  # CFG's two rows, one padded
    steps = []
    cache = model.new_cache(2, ids.shape[1] + 8)
    plain = model.new_cache(2, ids.shape[1] + 8)
    model(ids, cache, valid=valid)
    model(ids, plain, valid=valid)
    step = lm.StaticStep(model, cache)
    worst = 0.0
    for token in (11, 4242, 151700, 7, 99):
        t = torch.tensor([token])
        step._feed(t)
        with Record() as rec:
            logits = model.static_step(step.ids, step.position, cache)
        cache.length += 1
        steps.append(rec.ops)
        worst = max(worst, _rel(logits, model(t.view(1, 1).expand(2, 1), plain)))
    # the first step (CudaGraphStep's warm-up, outside the graph) also makes the step's column table
    assert all(ops == steps[1] for ops in steps[2:]) and len(steps[0]) == len(steps[1]) + 1
    reads = ("_local_scalar_dense", "is_nonzero", "nonzero", "item", "equal")
    assert not [op for op in steps[1] if any(r in op[0] for r in reads)]
    assert worst < 1e-5, worst


def test_a_cuda_graph_that_cannot_be_made_falls_back_to_the_eager_step(planner, caplog):
    """Asked for CUDA graphs where there is no CUDA (as a GPU, driver or layer set the capture fails on would), the
    codes phase says so once and decodes eagerly: the official plan all the same."""
    graphs = P.Planner(planner.model, planner.tok, step="graph")
    with caplog.at_level("WARNING", logger="acestep_models.v15.planner"):
        _check_case(graphs, "user_metas")
    assert len([r for r in caplog.records if "no CUDA graph" in r.message]) == 1


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (run on the GPU machine)"
)
def test_on_cuda_the_graph_plans_what_the_eager_step_plans(qwen_bpe, caplog):
    """On a CUDA device (float32), the codes phase through its CUDA graph draws the tokens the eager step draws,
    CFG rows included, and keeps the graph (no fallback warning)."""
    plans = {}
    for step in ("eager", "graph"):
        planner = P.load_planner(TINY_LM, device="cuda", tokenizer=qwen_bpe)
        planner.step = step
        case = CASES["cases"]["negative_prompt_cfg"]
        with caplog.at_level("WARNING", logger="acestep_models.v15.planner"):
            plans[step] = planner.plan(seed=case["seed"], **case["kwargs"])["audio_codes"]
    assert plans["graph"] == plans["eager"]
    assert not [r for r in caplog.records if "no CUDA graph" in r.message]
