"""Whole generations against the official ``ACEStepPipeline.__call__``: every case of tests/golden/pipeline
(written by tests/golden/make_pipeline.py on the tiny checkpoints) through our ``generate``, loaded the way a user
loads the official folder. Final latents, decoded audio and the parameter record must match."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from acestep_models.v1 import checkpoint
from acestep_models.v1.pipeline import (
    OFFICIAL_DEFAULTS,
    GenerationResult,
    Interrupted,
    generate,
    make_generators,
    parse_oss_steps,
    parse_seeds,
)

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "golden"
TINY = GOLDEN / "tiny"
PIPELINE = GOLDEN / "pipeline"
CASES = json.loads((PIPELINE / "cases.json").read_text(encoding="utf-8"))
LONG_SRC_FRAMES, LONG_SRC_SEED = 2580, 4242  # make_pipeline.long_src_latents
TOLERANCE = 1e-4


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref.float()).norm() / ref.float().norm()).item()


def load_audio(path: Path) -> tuple[torch.Tensor, int]:
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.T)), sr


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and then equal the golden runs bit for bit)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def models(lyric_vocab):
    return checkpoint.load_all(TINY, dtype=torch.float32, vocab=lyric_vocab)


def run_case(models, case: dict, folder: Path = PIPELINE, **kw) -> GenerationResult:
    """A golden case through ``generate``: the official call's keywords, with the seeds it reported (random ones
    included) and its audio files loaded by the caller, as the contract says."""
    params = dict(case["kwargs"])
    params["manual_seeds"] = case["official_params"]["actual_seeds"]
    params["retake_seeds"] = case["official_params"]["retake_seeds"]
    inputs = {}
    if case["long_src"]:  # the 240 s extend window: synthetic source latents (make_pipeline.long_src_latents)
        g = torch.Generator().manual_seed(LONG_SRC_SEED)
        inputs["src_latents"] = torch.randn(1, 8, 16, LONG_SRC_FRAMES, generator=g)
    elif params.get("src_audio_path"):
        inputs["src_audio"] = load_audio(folder / params["src_audio_path"])
    if params.get("ref_audio_input"):
        inputs["ref_audio"] = load_audio(folder / params["ref_audio_input"])
    return generate(models, params, decode=case["audio"], **inputs, **kw)


def check_against(result: GenerationResult, case: dict, latents: torch.Tensor, audio: torch.Tensor | None):
    assert result.latents.shape == latents.shape
    assert rel_err(result.latents, latents) < TOLERANCE
    if audio is not None:
        assert result.sample_rate == 48000
        ours = torch.stack(result.audio)
        assert ours.dtype == torch.float32 and ours.shape == audio.shape
        assert rel_err(ours, audio) < TOLERANCE
    params = {k: v for k, v in result.params.items() if k != "timecosts"}
    assert params == case["official_params"]
    assert set(result.params["timecosts"]) == {"preprocess", "diffusion", "latent2audio"}


@pytest.fixture(scope="module")
def golden_latents() -> dict[str, torch.Tensor]:
    return load_file(str(PIPELINE / "latents.safetensors"))


@pytest.fixture(scope="module")
def golden_audio() -> dict[str, torch.Tensor]:
    return load_file(str(PIPELINE / "audio.safetensors"))


@pytest.mark.parametrize("name", list(CASES))
def test_generation_matches_official(models, golden_latents, golden_audio, name):
    case = CASES[name]
    result = run_case(models, case)
    check_against(result, case, golden_latents[name], golden_audio.get(name))


@pytest.mark.parametrize("name", ["t2m_euler_apg", "double_condition_erg", "repaint", "edit", "audio2audio"])
def test_passes_one_by_one_give_the_official_result_too(models, golden_latents, name):
    """``batch_passes=False`` runs the DiT per pass as the official code (bitwise equal with one thread)."""
    result = run_case(models, CASES[name], batch_passes=False)
    assert rel_err(result.latents, golden_latents[name]) < TOLERANCE


def test_every_task_and_option_is_covered_by_a_golden_case():
    tasks = {c["official_params"]["task"] for c in CASES.values()}
    assert tasks == {"text2music", "retake", "repaint", "extend", "edit", "audio2audio"}
    kw = [c["kwargs"] for c in CASES.values()]
    for key, value in [
        ("scheduler_type", "heun"),
        ("scheduler_type", "pingpong"),
        ("cfg_type", "cfg"),
        ("cfg_type", "cfg_star"),
        ("use_erg_diffusion", False),
        ("use_erg_lyric", False),
        ("use_erg_tag", False),
        ("lyrics", ""),
    ]:
        assert any(k.get(key) == value for k in kw), (key, value)
    assert any(k.get("batch_size", 1) > 1 for k in kw) and any(k.get("oss_steps") for k in kw)
    assert any(k.get("guidance_scale_text", 0) > 1 for k in kw)
    assert sum(c["audio"] for c in CASES.values()) == 6  # one decoded case per task


def test_same_parameters_give_the_same_bits_and_other_seeds_differ(models):
    case = CASES["t2m_pingpong_apg"]
    a, b = run_case(models, case), run_case(models, case)
    assert torch.equal(a.latents, b.latents)
    other = dict(case, official_params={**case["official_params"], "actual_seeds": [43]})
    c = run_case(models, other)
    assert not torch.allclose(a.latents, c.latents, atol=1e-2)
    assert c.params["actual_seeds"] == [43]


def test_batch_items_have_their_own_noise(models):
    result = run_case(models, CASES["batch2_seeds"])
    assert result.params["actual_seeds"] == [7, 8]
    assert not torch.allclose(result.latents[0], result.latents[1], atol=1e-2)
    one_seed = run_case(models, CASES["batch3_heun_seed_list"])  # seeds [11, 12]: the last one repeats
    assert one_seed.params["actual_seeds"] == [11, 12, 12]
    assert torch.equal(one_seed.latents[1], one_seed.latents[2])


def test_random_seeds_are_drawn_and_reported(models):
    params = {"prompt": "pop", "lyrics": "", "audio_duration": 0.5, "infer_step": 2, "batch_size": 2}
    torch.manual_seed(0)
    a = generate(models, params, decode=False)
    assert len(a.params["actual_seeds"]) == 2 and len(a.params["retake_seeds"]) == 2
    again = generate(models, {**params, "manual_seeds": a.params["actual_seeds"]}, decode=False)
    assert torch.equal(a.latents, again.latents)


def test_non_positive_duration_is_random_between_30_and_240_seconds(models, monkeypatch):
    import acestep_models.v1.pipeline as pipeline

    assert pipeline.RANDOM_DURATION == (30.0, 240.0)
    monkeypatch.setattr(pipeline, "RANDOM_DURATION", (0.3, 0.3))  # keep the test short
    result = generate(
        models, {"prompt": "a", "lyrics": "", "audio_duration": -1, "infer_step": 1}, decode=False
    )
    assert result.params["audio_duration"] == 0.3 and result.latents.shape[-1] == 3


def test_seed_and_step_parsing_is_the_official_one():
    assert parse_seeds("1, 2,3") == [1, 2, 3] and parse_seeds("42") == 42 and parse_seeds(7) == 7
    assert parse_seeds(" 42") is None and parse_seeds("") is None and parse_seeds([]) is None
    assert parse_seeds([1, "2"]) is None and parse_seeds([5, 6]) == [5, 6]
    gens, seeds = make_generators(3, "4,5")
    assert seeds == [4, 5, 5] and gens[2].initial_seed() == 5
    assert parse_oss_steps("1, 3,5") == [1, 3, 5] and parse_oss_steps([2, 4]) == [2, 4]
    assert parse_oss_steps(None) == [] and parse_oss_steps("") == []


def test_official_defaults_are_the_official_call_signature():
    assert OFFICIAL_DEFAULTS["infer_step"] == 60 and OFFICIAL_DEFAULTS["guidance_scale"] == 15.0
    assert OFFICIAL_DEFAULTS["guidance_interval_decay"] == 0.0 and OFFICIAL_DEFAULTS["omega_scale"] == 10.0
    assert OFFICIAL_DEFAULTS["use_erg_tag"] and OFFICIAL_DEFAULTS["use_erg_lyric"]
    assert len(OFFICIAL_DEFAULTS) == 35  # the official __call__'s 38 keywords but format, save_path, debug


def test_progress_once_per_step_and_interrupt_stops_cleanly(models):
    calls = []
    params = {**CASES["t2m_heun_apg"]["kwargs"], "infer_step": 4}
    generate(models, params, decode=False, progress=lambda i, n: calls.append((i, n)))
    assert calls == [(i, 7) for i in range(1, 8)]  # Heun: 2 n - 1 DiT calls
    seen = []

    def interrupt() -> bool:
        seen.append(1)
        return len(seen) > 2

    with pytest.raises(Interrupted):
        generate(models, params, decode=False, interrupt=interrupt)
    leftover = [n for n, m in models.dit.named_modules() if m._forward_hooks] + [
        n for n, m in models.text_encoder.named_modules() if m._forward_hooks
    ]
    assert leftover == []


def test_repaint_progress_counts_the_steps_that_run(models):
    calls = []
    run_case(models, CASES["repaint"], progress=lambda i, n: calls.append((i, n)))
    assert calls == [(i, 5) for i in range(1, 6)]  # 8 steps, variance 0.6: from step int(8 * 0.4) = 3


def test_lora_is_applied_for_the_generation_and_removed(models, monkeypatch):
    import types

    log = []
    fake = types.ModuleType("acestep_models.v1.lora")
    fake.apply_lora = lambda dit, path, weight: log.append(("apply", dit is models.dit, path, weight))
    fake.remove_lora = lambda dit: log.append(("remove", dit is models.dit))
    monkeypatch.setitem(sys.modules, "acestep_models.v1.lora", fake)
    params = {"prompt": "rap", "lyrics": "", "audio_duration": 0.3, "infer_step": 1}
    result = generate(models, {**params, "lora_name_or_path": "/loras/rap", "lora_weight": 0.7}, decode=False)
    assert log == [("apply", True, "/loras/rap", 0.7), ("remove", True)]
    assert result.params["lora_name_or_path"] == "/loras/rap" and result.params["lora_weight"] == 0.7
    log.clear()
    with pytest.raises(Interrupted):
        generate(models, {**params, "lora_name_or_path": "x"}, decode=False, interrupt=lambda: True)
    assert [entry[0] for entry in log] == ["apply", "remove"]
    log.clear()
    generate(models, params, decode=False)
    assert log == []


def test_wrong_inputs_say_what_is_wrong(models):
    base = {"prompt": "a", "lyrics": "", "audio_duration": 0.3, "infer_step": 1}
    src = load_audio(PIPELINE / "src.wav")
    with pytest.raises(ValueError, match="unknown parameter"):
        generate(models, {**base, "guidance": 3})
    with pytest.raises(ValueError, match="needs source audio"):
        generate(models, {**base, "task": "repaint"})
    with pytest.raises(ValueError, match="source audio is used by"):
        generate(models, {**base, "task": "text2music"}, src_audio=src)
    with pytest.raises(ValueError, match="task must be one of"):
        generate(models, {**base, "task": "remix"})
    with pytest.raises(ValueError, match="scheduler_type"):
        generate(models, {**base, "scheduler_type": "ddim"}, decode=False)
    with pytest.raises(ValueError, match="oss_steps cannot be used with the heun"):
        generate(models, {**base, "scheduler_type": "heun", "oss_steps": "1,2"}, decode=False)
    with pytest.raises(ValueError, match="repaint_mask must be"):
        generate(models, {**base, "task": "repaint"}, src_audio=src, repaint_mask=torch.ones(3), decode=False)


@pytest.mark.skipif(
    not os.environ.get("ACESTEP_REF"), reason="ACESTEP_REF (official ACE-Step checkout) not set"
)
def test_live_parity_with_official(models, tmp_path):
    """Runs the official pipeline now (ref python from ACESTEP_REF_PYTHON) on a few cases and compares."""
    names = ["t2m_heun_cfg_star", "double_condition_erg", "extend_both", "edit", "audio2audio"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    python = os.environ.get("ACESTEP_REF_PYTHON", sys.executable)
    cmd = [python, str(GOLDEN / "make_pipeline.py"), "--live", str(tmp_path), *names]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    cases = json.loads((tmp_path / "cases.json").read_text(encoding="utf-8"))
    latents, audio = (
        load_file(str(tmp_path / "latents.safetensors")),
        load_file(str(tmp_path / "audio.safetensors")),
    )
    for name in names:
        check_against(run_case(models, cases[name], tmp_path), cases[name], latents[name], audio.get(name))
