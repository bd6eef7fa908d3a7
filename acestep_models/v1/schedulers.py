"""Flow-matching schedules and steps of ACE-Step v1 (official ``acestep/schedulers/*``), as small functions.

The model predicts the velocity ``v = noise - x0`` along ``x_sigma = (1 - sigma) x0 + sigma noise``; the DiT takes
the timestep ``1000 sigma``. Every official scheduler is built with ``shift=3.0`` and its schedule goes through
that shift twice: the constructor shifts its 1000 training sigmas, whose ends (``sigma_max``, ``sigma_min``) then
bound a linspace that ``set_timesteps`` shifts again. Custom sigmas (``oss_steps``) are taken from such a schedule
and shifted once more, and audio2audio's ``sigma_max = 1 - strength`` is shifted by the constructor before the same
double shift. The arithmetic (numpy float64 for the linspace, float32 elsewhere) is the official one, so the
timesteps come out bit for bit equal.

Steps (``Stepper``): Euler and Heun move by ``dx = dt * v`` with the official "omega" mean shift
``x += (dx - m) * w + m`` (``m`` the mean of ``dx`` over the whole tensor, batch included, and
``w = 0.9 + 0.2 / (1 + exp(-0.1 omega))``); Heun's schedule repeats each inner sigma so that every second DiT call
is its corrector. PingPong ignores omega: it predicts x0 and re-noises it to the next sigma with fresh noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

SHIFT = 3.0  # official pipeline: every scheduler is built with shift=3.0
NUM_TRAIN_TIMESTEPS = 1000  # official num_train_timesteps; the DiT's timestep is 1000 * sigma
MAX_STEPS = NUM_TRAIN_TIMESTEPS  # the most steps a schedule can have
SCHEDULERS = ("euler", "heun", "pingpong")  # official scheduler_type: FlowMatch{Euler,Heun,PingPong}
# official logistic_function(omega, L=0.9, U=1.1, x_0=0.0, k=0.1) in the schedulers' step()
OMEGA_LOW, OMEGA_HIGH, OMEGA_STEEPNESS = 0.9, 1.1, 0.1


def _shift(sigmas, shift: float = SHIFT):
    """Official timestep shift ``shift * s / (1 + (shift - 1) * s)``, in the input's own precision."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sigma_bounds(sigma_max: float = 1.0) -> tuple[float, float]:
    """``(sigma_max, sigma_min)`` of an official scheduler built with ``sigma_max``: the ends of its 1000 training
    timesteps ``linspace(1, 1000 sigma_max)`` (float32), divided by 1000 and shifted once, in float32."""
    ends = np.linspace(1.0, sigma_max * NUM_TRAIN_TIMESTEPS, NUM_TRAIN_TIMESTEPS, dtype=np.float32)[[-1, 0]]
    shifted = _shift(torch.from_numpy(ends.copy()) / NUM_TRAIN_TIMESTEPS)
    return shifted[0].item(), shifted[1].item()


@dataclass
class Schedule:
    """What one sampling run iterates over: one DiT call per entry of ``timesteps``."""

    kind: str
    timesteps: torch.Tensor  # [N] float32 in 0..1000, one per DiT call (Heun: 2 n - 1 for n steps)
    sigmas: torch.Tensor  # [N + 1] float32 (Heun: [2 n]), ending in 0
    num_inference_steps: int  # the count the official pipeline uses for its guidance interval
    sigma_max: float  # the scheduler's sigma_max (audio2audio noises the reference with it)

    def __len__(self) -> int:
        return len(self.timesteps)


def _from_sigmas(
    kind: str, sigmas: torch.Tensor, num_inference_steps: int, sigma_max: float, device
) -> Schedule:
    """The official ``set_timesteps`` tail: float32 sigmas -> timesteps 1000 sigma, sigmas closed by a 0; Heun
    repeats every timestep but the first, and every sigma but the first and the final 0."""
    sigmas = sigmas.to(dtype=torch.float32, device=device)
    timesteps = sigmas * NUM_TRAIN_TIMESTEPS
    sigmas = torch.cat([sigmas, torch.zeros(1, device=sigmas.device)])
    if kind == "heun":
        timesteps = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
        sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
    return Schedule(kind, timesteps, sigmas, num_inference_steps, sigma_max)


def make_schedule(kind: str, steps: int, sigma_max: float = 1.0, device=None) -> Schedule:
    """The official ``retrieve_timesteps(scheduler, steps)`` for ``FlowMatch{Euler,Heun,PingPong}`` with shift 3
    and ``sigma_max`` (1 except for audio2audio): ``steps`` sigmas linspaced between the once-shifted bounds in
    float64, shifted again, then float32."""
    if kind not in SCHEDULERS:
        raise ValueError(f"scheduler_type must be one of {SCHEDULERS}, not {kind!r}")
    hi, lo = sigma_bounds(sigma_max)
    sigmas = np.linspace(hi * NUM_TRAIN_TIMESTEPS, lo * NUM_TRAIN_TIMESTEPS, steps) / NUM_TRAIN_TIMESTEPS
    return _from_sigmas(kind, torch.from_numpy(_shift(sigmas)), steps, hi, device)


def oss_schedule(kind: str, oss_steps: Sequence[int], dtype=torch.float32, device=None) -> Schedule:
    """The official ``oss_steps`` schedule: the timesteps of a ``max(oss_steps)``-step schedule at the 1-based
    positions listed (stored in the pipeline dtype), divided by 1000 and used as custom sigmas, which
    ``set_timesteps`` shifts once more (float32 numpy arithmetic, as official)."""
    if kind == "heun":  # official: diffusers' retrieve_timesteps raises, Heun's set_timesteps takes no sigmas
        raise ValueError(
            "oss_steps cannot be used with the heun scheduler (its schedule takes no custom sigmas)"
        )
    base = make_schedule(kind, max(oss_steps), device=device)
    picked = torch.zeros(len(oss_steps), dtype=dtype, device=device)
    for i, step in enumerate(oss_steps):
        picked[i] = base.timesteps[step - 1]
    sigmas = (picked / NUM_TRAIN_TIMESTEPS).float().cpu().numpy()
    return _from_sigmas(kind, torch.from_numpy(_shift(sigmas)), len(oss_steps), base.sigma_max, device)


def first_step_index(timesteps: torch.Tensor, t: torch.Tensor) -> int:
    """Official ``index_for_timestep``: where ``t`` is in the schedule, the second match when it repeats."""
    matches = (timesteps == t).nonzero()
    return matches[1 if len(matches) > 1 else 0].item()


def omega_weight(omega: float) -> float:
    """The official logistic rescale of ``omega_scale`` to 0.9..1.1 (numpy float64, as official)."""
    return float(OMEGA_LOW + (OMEGA_HIGH - OMEGA_LOW) / (1 + np.exp(-OMEGA_STEEPNESS * (omega - 0.0))))


def _omega_shift(x: torch.Tensor, dx: torch.Tensor, w: float) -> torch.Tensor:
    m = dx.mean()  # over the whole tensor, batch included (official "mean shift 1")
    return x + ((dx - m) * w + m)


class Stepper:
    """One official scheduler's ``step`` over a ``Schedule``: call ``step`` once per DiT call, in order.

    ``x``: the current latents (any float dtype, computed in float32 and returned in ``v``'s dtype as official);
    ``v``: the guided velocity; ``t``: the current timestep (the first call locates it in the schedule, as the
    official ``_init_step_index``); ``generator``: PingPong's noise source (the first batch item's).
    """

    def __init__(self, schedule: Schedule, omega: float = 0.0):
        self.schedule, self.w = schedule, omega_weight(omega)
        self.index: int | None = None
        self._heun: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # derivative, dt, sample

    @property
    def corrects_next(self) -> bool:
        """The next call is Heun's corrector (of the step the last call predicted)."""
        return self._heun is not None

    def step(
        self, v: torch.Tensor, t: torch.Tensor, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if self.index is None:
            self.index = first_step_index(self.schedule.timesteps, t.to(self.schedule.timesteps.device))
        sigmas, i = self.schedule.sigmas, self.index
        x = x.to(torch.float32)
        kind = self.schedule.kind
        if kind == "euler":
            out = _omega_shift(x, (sigmas[i + 1] - sigmas[i]) * v, self.w)
        elif kind == "pingpong":
            denoised = x - sigmas[i] * v
            noise = torch.empty_like(x).normal_(generator=generator)
            out = (1 - sigmas[i + 1]) * denoised + sigmas[i + 1] * noise
        elif self._heun is None:  # Heun predictor: an Euler step, remembered for the corrector
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            derivative = (x - (x - v * sigma)) / sigma  # as official (not simplified to v: other rounding)
            dt = sigma_next - sigma
            self._heun = (derivative, dt, x)
            out = _omega_shift(x, derivative * dt, self.w)
        else:  # Heun corrector: average the two slopes and redo the step from the predictor's start
            sigma_next = sigmas[i]
            derivative = (x - (x - v * sigma_next)) / sigma_next
            prev_derivative, dt, start = self._heun
            self._heun = None
            out = _omega_shift(start, 0.5 * (prev_derivative + derivative) * dt, self.w)
        self.index += 1
        return out.to(v.dtype)
