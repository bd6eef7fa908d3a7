"""The one sampling loop every sampler runs, and what a host's guider offers it.

``run_steps`` walks a schedule one DiT call at a time: a velocity, then a step rule (Euler, Heun's predictor and
corrector, PingPong, repaint's blend...), asking ``interrupt`` before and telling ``progress`` after each call.
ACE-Step Sampler, the command line and SamplerCustomAdvanced (through our SAMPLER) all sample through it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from .progress import Interrupt, Progress, check_interrupt


def run_steps(
    timesteps: torch.Tensor,
    velocity: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor],
    step: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    start: int = 0,
    progress: Progress | None = None,
    interrupt: Interrupt | None = None,
) -> torch.Tensor:
    """The one sampling loop (ACE-Step Sampler, the command line and SamplerCustomAdvanced all run it): for each
    DiT call ``i`` of the schedule from ``start`` on, ``v = velocity(i, t, x)`` then ``x = step(i, t, v, x)``;
    ``interrupt`` is asked before and ``progress(done, total)`` told after every call."""
    first = max(start, 0)
    total = max(0, len(timesteps) - first)
    for done, i in enumerate(range(first, len(timesteps)), 1):
        check_interrupt(interrupt)
        t = timesteps[i]
        x = step(i, t, velocity(i, t, x), x)
        if progress is not None:
            progress(done, total)
    return x


class VelocityProvider(ABC):
    """A guider that hands out the guided velocity itself (not an x0 prediction), as the official loops use it:
    ``velocity(x, sigma)`` in the model's ``dtype``. ``noise_generator``: the generator the starting noise was drawn
    from, when the guider was handed one (samplers that draw fresh noise each step continue its stream)."""

    noise_generator: torch.Generator | None = None

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype: ...

    @abstractmethod
    def velocity(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...
