"""The sampling engine piece by piece: schedules, steps, guidance, ERG hooks, batched passes, DiT call counts and
repaint masks. Whole generations against the official pipeline are in test_pipeline.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from acestep_models.common import guidance as G
from acestep_models.common.noise import batch_noise
from acestep_models.v1 import checkpoint
from acestep_models.v1 import sampler as S
from acestep_models.v1.conditioning import Conditioning, encode_conditioning
from acestep_models.v1.pipeline import generate
from acestep_models.v1.schedulers import (
    Stepper,
    make_schedule,
    omega_weight,
    oss_schedule,
    sigma_bounds,
)

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "golden" / "tiny"
PIPELINE = ROOT / "tests" / "golden" / "pipeline"
CASES = json.loads((PIPELINE / "cases.json").read_text(encoding="utf-8"))


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref.float()).norm() / ref.float().norm()).item()


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


@pytest.fixture(scope="module")
def golden_latents() -> dict[str, torch.Tensor]:
    return load_file(str(PIPELINE / "latents.safetensors"))


def src_audio() -> tuple[torch.Tensor, int]:
    data, sr = sf.read(str(PIPELINE / "src.wav"), dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.T)), sr


def case_params(name: str, **changes) -> dict:
    case = CASES[name]
    return {
        **case["kwargs"],
        "manual_seeds": case["official_params"]["actual_seeds"],
        "retake_seeds": case["official_params"]["retake_seeds"],
        **changes,
    }


# --- schedules and steps ------------------------------------------------------------------------------------------


def test_schedule_is_the_official_double_shift():
    # values read off the official FlowMatchEulerDiscreteScheduler(shift=3) + retrieve_timesteps(8)
    official = [1000.0, 947.5425415039062, 882.7877807617188, 800.8373413085938, 693.7930908203125]
    official += [548.0455932617188, 337.97216796875, 8.928571701049805]
    s = make_schedule("euler", 8)
    assert s.timesteps.tolist() == official and s.sigmas[-1] == 0 and len(s.sigmas) == 9
    assert s.num_inference_steps == 8 and s.timesteps.dtype == torch.float32
    hi, lo = sigma_bounds()
    assert hi == 1.0 and lo == pytest.approx(3 * 0.001 / (1 + 2 * 0.001))  # the training range, shifted once
    # the last timestep is that lower bound shifted a second time: 3 lo / (1 + 2 lo) * 1000
    assert s.timesteps[-1].item() == pytest.approx(3000 * lo / (1 + 2 * lo), rel=1e-6)


def test_heun_repeats_inner_timesteps_for_its_corrector():
    s = make_schedule("heun", 3)
    assert s.timesteps.tolist() == [1000.0, 751.12109375, 751.12109375, 8.928571701049805, 8.928571701049805]
    assert (
        len(s.sigmas) == 6 and s.num_inference_steps == 3
    )  # the guidance interval counts 3, the loop runs 5


def test_oss_steps_and_audio2audio_go_through_the_shift_twice():
    s = oss_schedule("euler", [1, 3, 5, 8, 12])
    assert s.timesteps.tolist() == [
        1000.0,
        975.9895629882812,
        940.562255859375,
        838.3270874023438,
        26.3157901763916,
    ]
    base = make_schedule("euler", 12).timesteps
    assert all(s.timesteps[i] >= base[k - 1] for i, k in enumerate([1, 3, 5, 8, 12]))  # shifted once more
    a2a = make_schedule("euler", 4, sigma_max=0.5)  # strength 0.5: sigma_max 0.5 shifted to 0.75, then again
    assert a2a.sigma_max == 0.75 and a2a.timesteps[0].item() == 900.0
    with pytest.raises(ValueError, match="heun"):
        oss_schedule("heun", [1, 2])


def test_omega_mean_shift_is_over_the_whole_batch():
    s = make_schedule("euler", 4)
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 8, 16, 5, generator=g), torch.randn(2, 8, 16, 5, generator=g)
    v[1] += 3.0  # a different mean per item
    out = Stepper(s, omega=10.0).step(v, s.timesteps[0], x)
    dx = (s.sigmas[1] - s.sigmas[0]) * v
    w = 0.9 + 0.2 / (1 + math.exp(-0.1 * 10.0))
    assert omega_weight(10.0) == pytest.approx(w, abs=1e-15)
    assert torch.allclose(out, x + (dx - dx.mean()) * w + dx.mean(), atol=1e-6)
    per_item = x + torch.stack([(d - d.mean()) * w + d.mean() for d in dx])
    assert not torch.allclose(out, per_item, atol=1e-3)
    plain = Stepper(s, omega=0.0).step(v, s.timesteps[0], x)  # omega 0 -> weight 1: plain Euler
    assert torch.allclose(plain, x + dx, atol=1e-6)


def test_pingpong_renoises_from_the_generator():
    s = make_schedule("pingpong", 4)
    x, v = torch.randn(1, 8, 16, 3), torch.randn(1, 8, 16, 3)
    a = Stepper(s).step(v, s.timesteps[0], x, torch.Generator().manual_seed(1))
    b = Stepper(s).step(v, s.timesteps[0], x, torch.Generator().manual_seed(1))
    c = Stepper(s).step(v, s.timesteps[0], x, torch.Generator().manual_seed(2))
    noise = torch.randn(1, 8, 16, 3, generator=torch.Generator().manual_seed(1))
    expected = (1 - s.sigmas[1]) * (x - s.sigmas[0] * v) + s.sigmas[1] * noise
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.allclose(a, expected, atol=1e-6)


def test_batch_noise_draws_one_item_per_generator_like_diffusers():
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    noise = batch_noise((2, 8, 16, 4), gens, "cpu", torch.float32)
    assert torch.equal(noise[1:], torch.randn(1, 8, 16, 4, generator=torch.Generator().manual_seed(2)))
    single = batch_noise((1, 8, 16, 4), [torch.Generator().manual_seed(1)], "cpu", torch.float32)
    assert torch.equal(single, noise[:1])


# --- guidance -----------------------------------------------------------------------------------------------------


def test_apg_keeps_the_orthogonal_part_of_the_clipped_momentum_difference():
    g = torch.Generator().manual_seed(3)
    cond, uncond = torch.randn(2, 8, 16, 6, generator=g), torch.randn(2, 8, 16, 6, generator=g)
    buffer = G.MomentumBuffer()
    out = G.apg(cond, uncond, 4.0, buffer)
    diff = (cond - uncond).double()
    diff = diff * torch.clamp(2.5 / diff.norm(dim=(-1, -2), keepdim=True), max=1.0)
    unit = cond.double() / cond.double().norm(dim=(-1, -2), keepdim=True)
    orthogonal = diff - (diff * unit).sum(dim=(-1, -2), keepdim=True) * unit
    assert torch.allclose(out, cond + 3.0 * orthogonal.float(), atol=1e-5)
    # second step: the buffer subtracts 0.75 of the previous difference
    G.apg(cond, uncond, 4.0, buffer)
    assert torch.allclose(buffer.running_average, 0.25 * (cond - uncond), atol=1e-6)


def test_cfg_variants():
    cond, uncond, text = torch.randn(2, 8, 16, 3), torch.randn(2, 8, 16, 3), torch.randn(2, 8, 16, 3)
    assert torch.allclose(G.cfg(cond, uncond, 5.0), uncond + 5 * (cond - uncond))
    assert torch.equal(G.cfg_zero_star(cond, uncond, 5.0, step=1), torch.zeros_like(cond))
    assert G.cfg_zero_star_is_zero(0) and G.cfg_zero_star_is_zero(1) and not G.cfg_zero_star_is_zero(2)
    alpha = (cond * uncond).flatten(1).sum(1) / (uncond.flatten(1) ** 2).sum(1)
    expected = uncond * alpha[:, None, None, None] * (1 - 5.0) + 5.0 * cond
    assert torch.allclose(G.cfg_zero_star(cond, uncond, 5.0, step=2), expected, atol=1e-5)
    double = G.double_condition(cond, uncond, text, 5.0, 2.0)
    assert torch.allclose(double, -4 * uncond + 3 * text + 2 * cond, atol=1e-5)
    assert G.uses_double_condition(1.5, 1.1) and not G.uses_double_condition(1.5, 1.0)
    assert not G.uses_cfg(1.0) and not G.uses_cfg(0.0) and G.uses_cfg(1.5)


def test_guidance_interval_and_decay():
    assert G.guidance_interval(60, 0.5) == (15, 45)
    assert G.guidance_interval(8, 1.0) == (0, 8)
    start, end = G.guidance_interval(8, 1.0)
    scales = [G.scale_at(i, start, end, 15.0, 1.0, 5.0) for i in range(start, end)]
    assert scales[0] == 15.0 and scales[-1] == pytest.approx(5.0) and scales == sorted(scales, reverse=True)
    assert G.scale_at(3, start, end, 15.0, 0.0, 5.0) == 15.0
    assert G.scale_at(4, 4, 5, 15.0, 1.0, 5.0) == 15.0  # official: ZeroDivisionError on a one-step interval


# --- ERG hooks and batched passes ---------------------------------------------------------------------------------


def test_erg_hooks_scale_only_their_rows_and_are_always_removed():
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(3, 4)
    with S.scaled_outputs([lin], 0.01, [slice(1, 2)]):
        out = lin(x)
    ref = lin(x)
    assert torch.equal(out[[0, 2]], ref[[0, 2]]) and torch.allclose(out[1], ref[1] * 0.01)
    with pytest.raises(RuntimeError):
        with S.scaled_outputs([lin], 0.01):
            raise RuntimeError("boom")
    assert not lin._forward_hooks


def test_batched_passes_equal_the_passes_one_by_one(models):
    settings = S.SamplerSettings(guidance_scale_text=3.0, guidance_scale_lyric=2.0)
    cond = encode_conditioning(models, "rock, 120 BPM", "[verse]\nhello there")
    branches = S.encode_branches(models.dit, cond, 2, settings)
    assert list(branches) == ["cond", "text_only", "uncond"] and branches["uncond"].erg
    x, t = torch.randn(2, 8, 16, 7), torch.tensor(611.0)
    names = list(branches)
    batched = S.run_dit(models.dit, [x] * 3, [branches[n] for n in names], t)
    single = S.run_dit(models.dit, [x] * 3, [branches[n] for n in names], t, batch_passes=False)
    for a, b in zip(batched, single):
        assert rel_err(a, b) < 1e-5
    # the ERG rows differ from the same condition without the hooks
    plain = S.run_dit(models.dit, [x], [S.Branch(branches["uncond"].states, branches["uncond"].mask)], t)[0]
    assert rel_err(batched[2], plain) > 1e-3


def test_edit_source_and_target_of_different_lengths_share_one_pass(models):
    src = encode_conditioning(models, "rock", "", use_erg_tag=False)
    tar = encode_conditioning(
        models, "jazz, piano, slow", "[verse]\nmany more words in these lyrics", use_erg_tag=False
    )
    b = S.edit_branches(models.dit, src, 1, True) + S.edit_branches(models.dit, tar, 1, True)
    assert b[0].states.shape[1] != b[2].states.shape[1] and torch.equal(b[1].mask[:, -1:], torch.zeros(1, 1))
    x, t = torch.randn(1, 8, 16, 6), torch.tensor(500.0)
    batched = S.run_dit(models.dit, [x] * 4, b, t)
    for branch, v in zip(b, batched):
        assert rel_err(v, S.run_dit(models.dit, [x], [branch], t)[0]) < 1e-5


# --- DiT calls per step -------------------------------------------------------------------------------------------


def dit_calls_per_step(models, params: dict, **kw) -> list[list[int]]:
    """The batch size of every DiT call, grouped by sampling step (the DiT runs its final layer once per call)."""
    steps, current = [], []
    hook = models.dit.final_layer.register_forward_hook(lambda m, a, out: current.append(out.shape[0]))

    def progress(i, n):
        steps.append(list(current))
        current.clear()

    try:
        generate(models, params, decode=False, progress=progress, **kw)
    finally:
        hook.remove()
    return steps


def test_one_dit_call_per_step_and_none_that_is_not_needed(models):
    base = {
        "prompt": "pop",
        "lyrics": "[verse]\nla la",
        "audio_duration": 0.5,
        "infer_step": 8,
        "manual_seeds": 1,
    }
    # APG + ERG, interval 0.5: steps 2..5 guided (cond + ERG uncond in one call), the others conditional only
    assert dit_calls_per_step(models, {**base, "batch_size": 2}) == [[2]] * 2 + [[4]] * 4 + [[2]] * 2
    # double condition: cond, text-only and uncond in one call
    double = {**base, "guidance_interval": 1.0, "guidance_scale_text": 5.0, "guidance_scale_lyric": 2.0}
    assert dit_calls_per_step(models, double) == [[3]] * 8
    # CFG-zero*: the first two steps have a zero velocity, no DiT call at all
    star = {**base, "guidance_interval": 1.0, "cfg_type": "cfg_star"}
    assert dit_calls_per_step(models, star) == [[], []] + [[2]] * 6
    assert dit_calls_per_step(models, {**base, "guidance_scale": 1.0}) == [[1]] * 8
    assert dit_calls_per_step(models, {**base, "scheduler_type": "heun", "infer_step": 3}) == [
        [2],
        [2],
        [1],
        [1],
        [1],
    ]
    # flow-edit: n_avg x (source, target) x (cond, null) in one call during the edit phase, then the target only
    edit = {**base, "task": "edit", "edit_target_prompt": "jazz", "edit_target_lyrics": "", "retake_seeds": 3}
    edit.update(edit_n_min=0.25, edit_n_max=0.75, edit_n_avg=2)
    assert dit_calls_per_step(models, edit, src_audio=src_audio()) == [[8]] * 4 + [[2]] * 2
    # ... and one call per pass, as the official code, with batch_passes=False
    assert (
        dit_calls_per_step(models, edit, src_audio=src_audio(), batch_passes=False)
        == [[2] * 4] * 4 + [[2]] * 2
    )
    # PingPong's edit phase is discarded by the official code: no DiT call there
    pingpong = {**edit, "scheduler_type": "pingpong"}
    assert dit_calls_per_step(models, pingpong, src_audio=src_audio()) == [[]] * 4 + [[2]] * 2


# --- repaint masks ------------------------------------------------------------------------------------------------


def test_a_mask_equal_to_the_official_range_gives_the_official_result(models, golden_latents):
    params = case_params("repaint")  # 0.3 .. 0.8 s of 13 frames: frames 3..7
    by_range = generate(models, params, src_audio=src_audio(), decode=False)
    mask = torch.zeros(13)
    mask[3:8] = 1
    by_mask = generate(models, params, src_audio=src_audio(), repaint_mask=mask, decode=False)
    assert torch.equal(by_mask.latents, by_range.latents)
    assert rel_err(by_mask.latents, golden_latents["repaint"]) < 1e-4
    # the whole song: the official full-range case (a retake of the noise, the source unused)
    whole = case_params("repaint_whole")
    everything = generate(models, whole, src_audio=src_audio(), repaint_mask=torch.ones(1, 13), decode=False)
    assert rel_err(everything.latents, golden_latents["repaint_whole"]) < 1e-4


def test_extend_with_the_official_padding_mask_gives_the_official_result(models, golden_latents):
    params = case_params("extend_both")  # 3 frames added on the left, 5 on the right of 13
    mask = torch.zeros(21)
    mask[:3], mask[-5:] = 1, 1
    out = generate(models, params, src_audio=src_audio(), repaint_mask=mask, decode=False)
    assert rel_err(out.latents, golden_latents["extend_both"]) < 1e-4


def test_soft_two_range_mask_keeps_the_source_outside_exactly(models):
    g = torch.Generator().manual_seed(9)
    src = torch.randn(1, 8, 16, 24, generator=g)
    mask = torch.zeros(2, 24)
    mask[:, 2:9] = torch.tensor([0.25, 0.5, 1, 1, 1, 0.5, 0.25])  # soft edges
    mask[:, 15:20] = 1.0
    mask[1, 21] = 0.5  # per batch item
    params = {"prompt": "pop", "lyrics": "", "task": "repaint", "infer_step": 6, "batch_size": 2}
    params.update(manual_seeds="1,2", retake_seeds="3,4", retake_variance=0.7)
    out = generate(models, params, src_latents=src, repaint_mask=mask, decode=False).latents
    for b in range(2):
        outside = mask[b] == 0
        assert torch.equal(out[b][..., outside], src[0][..., outside])
        inside = mask[b] == 1
        assert (out[b][..., inside] - src[0][..., inside]).abs().amax(dim=(0, 1)).min() > 1e-3
    soft = out[0][..., 2] - src[0][..., 2]
    assert soft.abs().max() > 1e-4  # a blend: moved, but less than a regenerated frame
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        generate(models, params, src_latents=src, repaint_mask=mask * 2, decode=False)


def test_conditioning_is_batch_one_with_zero_speaker(models):
    cond = encode_conditioning(models, "pop", "")
    assert isinstance(cond, Conditioning) and cond.text.shape[0] == 1 and cond.text_null is not None
    assert torch.equal(cond.lyric_ids, torch.zeros(1, 1, dtype=torch.long)) and not cond.lyric_mask.any()
    assert cond.speaker.shape == (1, models.dit.config.speaker_embedding_dim) and not cond.speaker.any()
    assert not torch.equal(cond.text, cond.text_null)
    assert encode_conditioning(models, "pop", "", use_erg_tag=False).text_null is None


# --- the task objects, as the nodes build them ----------------------------------------------------------------------


def _sample_task(models, params: dict, task) -> torch.Tensor:
    """``sampler.sample`` called as ACE-Step Sampler calls it, with the official run's conditioning and seeds."""
    from acestep_models.common import tasks
    from acestep_models.v1.pipeline import make_generators

    cond = encode_conditioning(models, params["prompt"], params["lyrics"])
    generators, _ = make_generators(1, params["manual_seeds"])
    retake, _ = make_generators(1, params["retake_seeds"])
    settings = S.SamplerSettings(
        infer_step=params["infer_step"], scheduler_type=params.get("scheduler_type", "euler")
    )
    return S.sample(models.dit, cond, settings, generators, tasks.to(task, "cpu", torch.float32), frames=1,
                    retake_generators=retake)  # fmt: skip


def test_a_padded_latent_and_its_mask_read_as_the_official_extend(models, golden_latents):
    from acestep_models.common import tasks

    params = case_params("extend_both")  # 3 frames added on the left, 5 on the right of 13
    src = models.vae.encode(src_audio()[0][None], sample_rate=src_audio()[1])
    padded = torch.nn.functional.pad(src, (3, 5))
    mask = tasks.range_mask(21, [(0, 3), (16, 21)])
    task = tasks.from_mask(padded, mask, variance=0.5)
    assert (
        isinstance(task, tasks.Extend) and (task.left, task.right) == (3, 5) and torch.equal(task.source, src)
    )
    assert rel_err(_sample_task(models, params, task), golden_latents["extend_both"]) < 1e-4


def test_a_repaint_task_gives_the_official_repaint(models, golden_latents):
    from acestep_models.common import tasks

    params = case_params("repaint")  # 0.3 .. 0.8 s of 13 frames: frames 3..7
    src = models.vae.encode(src_audio()[0][None], sample_rate=src_audio()[1])
    mask = tasks.range_mask(13, [(3, 8)])
    task = tasks.from_mask(src, mask, variance=params["retake_variance"])
    assert isinstance(task, tasks.Repaint)
    assert rel_err(_sample_task(models, params, task), golden_latents["repaint"]) < 1e-4
    # all ones: a retake of the whole song
    assert isinstance(tasks.from_mask(src, torch.ones(13), 0.5), tasks.Retake)
