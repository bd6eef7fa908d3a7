"""ACE-Step 1.5 generations equal the official handler's (tests/golden/v15/pipeline/, made by
tests/golden/make_v15_pipeline.py from ``AceStepHandler.generate_music``): same weights, parameters and seeds ->
the same starting noise, final latents and audio, for every sampler, guidance and task."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from acestep_models.v15 import pipeline
from acestep_models.v15.sampler import TURBO_SCHEDULES, SamplerSettings, flow_schedule, turbo_schedule

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "v15" / "pipeline"
sys.path.insert(0, str(GOLDEN.parents[1]))
from v15_signals import SAMPLE_RATE, reference_audio, source_audio  # noqa: E402

CASES = json.loads((GOLDEN / "cases.json").read_text())
STRIDE = CASES["audio_stride"]
TOLERANCE = 1e-4  # relative L2; the float32 noise floor is about 1e-6


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread is several times faster than contended ones (and the official goldens ran so)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def golden():
    return load_file(str(GOLDEN / "tensors.safetensors"))


@pytest.fixture(scope="module")
def models():
    return pipeline.load_models(GOLDEN / "tiny", variant="turbo")


def run(models, case: dict, decode: bool = True) -> pipeline.GenerationResult:
    kwargs = dict(case["kwargs"])
    audio = {}
    if kwargs.get("src_audio"):
        audio["src_audio"] = (source_audio(6.0), SAMPLE_RATE)
    if kwargs.get("reference_audio"):
        audio["reference_audio"] = (reference_audio(2.5), SAMPLE_RATE)
    m = replace(models, variant=case["variant"])
    return pipeline.generate(m, {**kwargs, "global_seed": case["global_seed"]}, decode=decode, **audio)


@pytest.mark.parametrize("name", sorted(CASES["cases"]))
def test_equals_official(models, golden, name):
    case = CASES["cases"][name]
    out = run(models, case, decode=True)
    assert out.params["actual_seeds"] == case["seed_value"]  # the official seeds, random ones included
    torch.testing.assert_close(out.noise, golden[f"{name}.noise"], rtol=0, atol=0)
    assert out.latents.shape == golden[f"{name}.latents"].shape
    assert rel(out.latents, golden[f"{name}.latents"]) < TOLERANCE
    audio = torch.stack(out.audio)
    assert audio.shape[-1] == case["samples"]
    assert rel(audio[..., ::STRIDE], golden[f"{name}.audio"]) < TOLERANCE


def test_two_runs_bit_identical(models):
    case = CASES["cases"]["turbo_batch_seeds_sde_shift2.5"]  # SDE: the global-seed stream too
    a, b = run(models, case, decode=False), run(models, case, decode=False)
    assert torch.equal(a.latents, b.latents)


def test_replay_from_recorded_params(models):
    case = CASES["cases"]["turbo_single_seed_batch_random_duration"]
    first = run(models, case, decode=False)
    params = {k: v for k, v in first.params.items() if k != "time_costs"}
    assert params["seed"] == 7 and params["global_seed"] == case["global_seed"]
    again = pipeline.generate(replace(models, variant="turbo"), params, decode=False)
    assert torch.equal(first.latents, again.latents)


def test_base_only_tasks_refused_on_turbo(models):
    with pytest.raises(ValueError, match="needs a base model"):
        pipeline.generate(
            models, {"task_type": "extract", "global_seed": 0}, src_audio=(source_audio(1), 48000)
        )


def test_unknown_parameter(models):
    with pytest.raises(ValueError, match="unknown parameter"):
        pipeline.generate(models, {"prompt": "x"})


def test_schedules():
    assert turbo_schedule(2.5) == list(TURBO_SCHEDULES[2.0])  # ties go to the first
    assert turbo_schedule(7.0) == list(TURBO_SCHEDULES[3.0])
    snapped = turbo_schedule(3.0, [0.97, 0.9, 0.7, 0.55, 0.3, 0.1, 0])
    assert snapped == [0.9545454545454546, 0.9, 0.6666666666666666, 0.5454545454545454, 0.3, 0.125]
    assert turbo_schedule(3.0, [0, 0]) == list(TURBO_SCHEDULES[3.0])
    assert len(turbo_schedule(1.0, [0.5] * 25)) == 20
    t = flow_schedule(4, 3.0)
    assert torch.allclose(t, torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]))
    with pytest.raises(ValueError):
        SamplerSettings(infer_method="euler").check()


def test_seeds():
    import random

    assert pipeline.prepare_seeds(2, "42,43", False, random.Random(0)) == [42, 43]
    rng = random.Random(0)
    expected = [
        7,
        rng.randint(0, 2**32 - 1),
        rng.randint(0, 2**32 - 1),
    ]  # official: one seed seeds item 0 only
    assert pipeline.prepare_seeds(3, 7, False, random.Random(0)) == expected
    assert pipeline.prepare_seeds(2, "5, -1", False, random.Random(1))[0] == 5


def test_task_objects_give_the_official_parameters():
    from acestep_models.common import tasks

    assert (
        pipeline.task_params(tasks.Extract("vocals"))["instruction"]
        == "Extract the VOCALS track from the audio:"
    )
    lego = pipeline.task_params(tasks.Lego("guitar", 2.0, 4.0))
    assert lego["instruction"] == CASES["cases"]["base_lego"]["kwargs"]["instruction"]
    assert (lego["repainting_start"], lego["repainting_end"]) == (2.0, 4.0)
    complete = pipeline.task_params(tasks.Complete(("drums", "bass")))
    assert complete["instruction"] == CASES["cases"]["base_complete"]["kwargs"]["instruction"]
    assert pipeline.task_params(tasks.Cover(0.5, 0.4))["audio_cover_strength"] == 0.5
