"""The diffusion loops of ACE-Step 1.5 (official ``generate_audio`` of the turbo, base and sft models, commit
89031b8), through the one loop ``common.sampling.run_steps``.

- turbo: a fixed 8-entry schedule per shift (1, 2 or 3; other shifts rounded to the nearest, ties to the first),
  or custom timesteps snapped to the 20 values those tables hold; no CFG; Euler (ODE) or x0-renoise (SDE) steps,
  and the last step returns ``x0 = x - v t`` (from t = 0.3 with shift 3, not from 0).
- base / sft: ``linspace(1, 0, steps + 1)`` shifted by ``s t / (1 + (s - 1) t)``; sft takes custom timesteps
  verbatim, base ignores them. CFG when ``guidance_scale > 1`` against ``null_condition_emb`` at every encoder
  position, with the official APG (momentum -0.75, norm 2.5 over the time axis, float64 projection) or ADG,
  applied where ``cfg_interval_start <= t <= cfg_interval_end`` (t values, not step fractions). The SDE step
  renoises to ``1 - (i + 1) / steps`` whatever the shift (official quirk, kept).
- both: ``cover_noise_strength`` starts from the source latents renoised to the schedule entry nearest
  ``1 - strength`` and drops the steps before it; ``audio_cover_strength < 1`` switches once, after
  ``int(steps * strength)`` steps, to the non-cover condition.

CFG's two passes run as one DiT call of batch 2 B per step ([cond, uncond], as official); the cross-attention
keys and values are computed once per condition (``model.context_kv``, what the official ``EncoderDecoderCache``
holds) and reused by every step. The SDE renoise draws from ``renoise_generator``: a generator seeded like the
official global RNG (the official ``torch.randn_like``), see ``pipeline``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..common import guidance as G
from ..common.progress import Interrupt, Progress
from ..common.sampling import run_steps

VARIANTS = ("turbo", "base", "sft")
INFER_METHODS = ("ode", "sde")

# --- turbo schedules (official generate_audio in models/turbo) -----------------------------------------------------
TURBO_STEPS = 8  # official fix_nfe=8
TURBO_SCHEDULES = {  # official SHIFT_TIMESTEPS (fix_nfe=8, the final 0 left out)
    1.0: (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125),
    2.0: (
        1.0, 0.9333333333333333, 0.8571428571428571, 0.7692307692307693,
        0.6666666666666666, 0.5454545454545454, 0.4, 0.2222222222222222,
    ),
    3.0: (1.0, 0.9545454545454546, 0.9, 0.8333333333333334, 0.75, 0.6428571428571429, 0.5, 0.3),
}  # fmt: skip
VALID_SHIFTS = (1.0, 2.0, 3.0)
# official VALID_TIMESTEPS: the 20 distinct entries of the three tables, in the official order (descending)
VALID_TIMESTEPS = tuple(sorted({t for s in TURBO_SCHEDULES.values() for t in s}, reverse=True))
MAX_CUSTOM_TIMESTEPS = 20

# --- ADG (official apg_guidance.adg_forward) ------------------------------------------------------------------------
ADG_ANGLE_CLIP = 3.14 / 6  # official angle_clip=3.14 / 6 (3.14, not pi)
ADG_WEIGHT_EPS = 1e-3  # official weight = (g - 1) * (g - 1 > 0) + 1e-3
ADG_SIN_EPS = 1e-3
APG_DIMS = (1,)  # official 1.5 apg_forward(..., dims=[1]): norms/projections over time per (item, channel)


def nearest(values: Sequence[float], x: float) -> float:
    """Python's ``min(values, key=|v - x|)``: the first of equally near values wins (official tie rule)."""
    return min(values, key=lambda v: abs(v - x))


def turbo_schedule(
    shift: float = 3.0, timesteps: Sequence[float] | torch.Tensor | None = None
) -> list[float]:
    """The turbo schedule (without the final 0). ``timesteps``: trailing zeros dropped, at most 20 kept, each
    snapped to the nearest of ``VALID_TIMESTEPS``; the handler hands them over as a float32 tensor, so they are
    rounded to float32 first. Empty (after dropping zeros) or None: the table of ``shift`` rounded to 1, 2 or 3."""
    if timesteps is not None:
        ts = torch.as_tensor(timesteps, dtype=torch.float32).tolist()
        while ts and ts[-1] == 0:
            ts.pop()
        if ts:
            return [nearest(VALID_TIMESTEPS, t) for t in ts[:MAX_CUSTOM_TIMESTEPS]]
    return list(TURBO_SCHEDULES[nearest(VALID_SHIFTS, float(shift))])


def flow_schedule(
    steps: int,
    shift: float = 1.0,
    timesteps: Sequence[float] | torch.Tensor | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The base/sft schedule [steps + 1], from 1 to 0: ``linspace`` then the shift (in ``dtype``, as official),
    or ``timesteps`` verbatim (sft; the caller drops them for base)."""
    if timesteps is not None:
        return torch.as_tensor(timesteps, dtype=torch.float32).to(device=device, dtype=dtype)
    t = torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=dtype)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    return t


# --- guidance -------------------------------------------------------------------------------------------------------


def adg(
    x: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, t: torch.Tensor, guidance_scale: float
) -> torch.Tensor:
    """Official ``adg_forward`` (angle clip on, no norm): the angle between the two x0 predictions, per
    (item, frame) row in float64, is scaled by ``g - 1`` and clipped to 3.14/6; velocity from the new x0.

    Deliberate difference: the official code broadcasts its [B T, 1] angles against [B, T, D] and so fails for a
    batch of more than one item (RuntimeError, the generation returns an error); here the angles are per row of
    each item, which is the same arithmetic for one item and works for batches."""
    b, n, c = cond.shape
    sigma = t.reshape(1, 1, 1).expand(b, 1, 1)
    weight = guidance_scale - 1
    weight = weight * (weight > 0) + ADG_WEIGHT_EPS
    hat_cond = x - sigma * cond
    hat_uncond = x - sigma * uncond
    diff = hat_cond - hat_uncond
    a, u = hat_cond.reshape(-1, c).double(), hat_uncond.reshape(-1, c).double()
    a = a / torch.linalg.norm(a, dim=1, keepdim=True)
    u = u / torch.linalg.norm(u, dim=1, keepdim=True)
    theta = torch.acos((a * u).sum(dim=1, keepdim=True)).reshape(b, n, 1)  # [B, T, 1] float64
    theta_new = torch.clip(weight * theta, -ADG_ANGLE_CLIP, ADG_ANGLE_CLIP)
    d, h = diff.reshape(-1, c).float(), hat_uncond.reshape(-1, c).float()
    projection = ((d * h).sum(1, keepdim=True) / ((h * h).sum(1, keepdim=True) + 1e-8)) * h
    perp = (d - projection).reshape(b, n, c)
    sin = torch.sin(theta)
    new = torch.cos(theta_new) * hat_cond + (
        perp * torch.sin(theta_new) / sin * (sin > ADG_SIN_EPS) + perp * weight * (sin <= ADG_SIN_EPS)
    )
    return ((x - new) / sigma).reshape(b, n, c).to(x.dtype)


# --- the loop -------------------------------------------------------------------------------------------------------


@dataclass
class Condition:
    """One packed condition of the DiT: ``states`` [B, L, C] (the encoder output; padding positions included, the
    DiT attends to all of them) and ``context`` [B, T, 2 D] (source latents or LM hints + chunk mask)."""

    states: torch.Tensor
    context: torch.Tensor


@dataclass
class SamplerSettings:
    """The official ``generate_audio`` knobs, under the handler's ``generate_music`` names."""

    variant: str = "turbo"  # "turbo", "base" or "sft": which official generate_audio
    inference_steps: int = 8  # base/sft; turbo always runs its 8-entry table (official fix_nfe=8)
    guidance_scale: float = 7.0  # base/sft; CFG iff > 1. Ignored by turbo (official)
    shift: float = 1.0
    timesteps: Sequence[float] | None = None  # turbo: snapped; sft: verbatim; base: ignored (official)
    infer_method: str = "ode"
    use_adg: bool = False
    cfg_interval_start: float = 0.0
    cfg_interval_end: float = 1.0
    audio_cover_strength: float = 1.0
    cover_noise_strength: float = 0.0

    def check(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"model variant must be one of {VARIANTS}, not {self.variant!r}")
        if self.infer_method not in INFER_METHODS:
            raise ValueError(f"infer_method must be one of {INFER_METHODS}, not {self.infer_method!r}")
        if self.variant != "turbo" and int(self.inference_steps) < 1 and self.timesteps is None:
            raise ValueError(f"inference_steps must be at least 1, not {self.inference_steps}")


def _with_null(model, cond: Condition) -> Condition:
    """[cond, uncond] in one batch: the null condition at every encoder position, same context (official)."""
    return Condition(
        torch.cat([cond.states, model.null_condition(cond.states)]), torch.cat([cond.context, cond.context])
    )


def schedule_of(settings: SamplerSettings, device=None, dtype=torch.float32) -> torch.Tensor:
    """The t values the DiT is called at, plus (base/sft) the final 0: turbo [n] (its last call returns x0),
    base/sft [steps + 1]. Before any cover-noise truncation."""
    if settings.variant == "turbo":
        return torch.tensor(turbo_schedule(settings.shift, settings.timesteps), device=device, dtype=dtype)
    timesteps = settings.timesteps if settings.variant == "sft" else None  # base swallows them (official)
    return flow_schedule(int(settings.inference_steps), settings.shift, timesteps, device, dtype)


@torch.no_grad()
def sample(
    model,
    cond: Condition,
    noise: torch.Tensor,
    settings: SamplerSettings,
    *,
    src_latents: torch.Tensor | None = None,
    non_cover: Condition | None = None,
    renoise_generator: torch.Generator | None = None,
    progress: Progress | None = None,
    interrupt: Interrupt | None = None,
) -> torch.Tensor:
    """Final latents [B, T, D] of the official ``generate_audio`` of ``settings.variant``.

    ``noise`` [B, T, D]: the starting noise (``pipeline.seed_noise``). ``src_latents`` [B, T, D]: what
    ``cover_noise_strength`` renoises (the handler's src latents, not the LM hints). ``non_cover``: the condition
    switched to after ``int(steps * audio_cover_strength)`` steps (needed when that strength is < 1).
    ``renoise_generator``: the SDE draws (None: torch's global RNG, as official)."""
    settings.check()
    turbo = settings.variant == "turbo"
    device, dtype = noise.device, noise.dtype
    bsz = noise.shape[0]
    t = schedule_of(settings, device, dtype)
    # the DiT is called at every turbo entry (its python table values: official t_schedule_list) and at every
    # base/sft entry but the last (0; official t[:-1].tolist(), float32 values)
    values = turbo_schedule(settings.shift, settings.timesteps) if turbo else t[:-1].tolist()
    if settings.cover_noise_strength > 0.0:
        if src_latents is None:
            raise ValueError("cover_noise_strength > 0 needs the source latents")
        t_star = nearest(values, 1.0 - settings.cover_noise_strength)
        start = values.index(t_star)
        x = t_star * noise + (1 - t_star) * src_latents  # official renoise(src_latents, t*, noise)
        t = t[start:]
    else:
        x = noise
    calls = len(t) if turbo else len(t) - 1
    cover_steps = int(calls * settings.audio_cover_strength)
    if cover_steps < calls and non_cover is None:
        raise ValueError("audio_cover_strength < 1 needs the non-cover condition")
    cfg = not turbo and settings.guidance_scale > 1.0  # official do_cfg_guidance (turbo: no CFG at all)
    conds = [_with_null(model, c) if cfg else c for c in (cond, non_cover) if c is not None]
    kvs: dict[int, list] = {}  # cross-attention K/V, once per condition (official EncoderDecoderCache)
    momentum = G.MomentumBuffer()

    def draw(like: torch.Tensor) -> torch.Tensor:  # official torch.randn_like (global RNG)
        where = renoise_generator.device if renoise_generator is not None else like.device
        noise = torch.randn(like.shape, generator=renoise_generator, device=where, dtype=like.dtype)
        return noise.to(like.device)  # a CPU generator for a GPU model: drawn on the CPU, then moved

    def velocity(i: int, t_i: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        which = 0 if i < cover_steps else 1  # official: the switch happens once, at step cover_steps
        c = conds[which]
        if which not in kvs:
            kvs[which] = model.context_kv(c.states)
        xin = torch.cat([x, x]) if cfg else x
        if turbo:  # official: t_schedule[i].item() * ones -> the float32 value
            t_b = t_i.item() * torch.ones((xin.shape[0],), device=device, dtype=dtype)
        else:
            t_b = t_i * torch.ones((xin.shape[0],), device=device, dtype=dtype)
        v = model(xin, t_b, t_b, None, c.context, context_kv=kvs[which])
        if not cfg:
            return v
        v_cond, v_uncond = v.chunk(2)
        if not (t_i >= settings.cfg_interval_start and t_i <= settings.cfg_interval_end):
            return v_cond
        if settings.use_adg:
            return adg(x, v_cond, v_uncond, t_i, settings.guidance_scale)
        return G.apg(v_cond, v_uncond, settings.guidance_scale, momentum, dims=APG_DIMS)

    def step(i: int, t_i: torch.Tensor, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if turbo:
            t_now = t_i.item() * torch.ones((bsz,), device=device, dtype=dtype)
            x0 = x - v * t_now[:, None, None]
            if i == calls - 1:  # official: the last turbo step returns x0
                return x0
            t_next = t[i + 1].item()
            if settings.infer_method == "sde":
                return t_next * draw(x0) + (1 - t_next) * x0
            dt = t_i.item() - t_next  # python floats, as official
            return x - v * (dt * torch.ones((bsz,), device=device, dtype=dtype))[:, None, None]
        if settings.infer_method == "sde":
            x0 = x - v * (t_i * torch.ones((bsz,), device=device, dtype=dtype))[:, None, None]
            t_next = 1.0 - float(i + 1) / calls  # official quirk: the unshifted, untruncated grid
            return t_next * draw(x0) + (1 - t_next) * x0
        dt = t_i - t[i + 1]
        return x - v * (dt * torch.ones((bsz,), device=device, dtype=dtype))[:, None, None]

    return run_steps(t[:calls], velocity, step, x, progress=progress, interrupt=interrupt)


def dit_calls_per_step(settings: SamplerSettings) -> int:
    """DiT passes per step (in one batched call): 2 with base/sft CFG, else 1."""
    return 2 if settings.variant != "turbo" and settings.guidance_scale > 1.0 else 1


__all__ = [
    "ADG_ANGLE_CLIP",
    "Condition",
    "SamplerSettings",
    "TURBO_SCHEDULES",
    "VALID_TIMESTEPS",
    "adg",
    "dit_calls_per_step",
    "flow_schedule",
    "sample",
    "turbo_schedule",
]
