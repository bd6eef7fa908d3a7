"""Classifier-free guidance of ACE-Step v1 (official ``acestep/apg_guidance.py`` and the pipeline's interval logic).

All of it works on the DiT's velocity predictions [B, 8, 16, T]:
- ``cfg``: ``uncond + scale (cond - uncond)``;
- ``apg`` (the official default): adaptive projected guidance. The difference ``cond - uncond`` goes through a
  momentum buffer (-0.75: a running average that subtracts the previous steps' push), is clipped to an L2 norm of
  2.5 over each [16, T] plane, and only its part orthogonal to ``cond`` (projection in float64, eta 0) is added
  with weight ``scale - 1``;
- ``cfg_zero_star``: CFG with the unconditional branch rescaled by its optimal projection on ``cond``, and a zero
  velocity for the first steps (global step index <= 1);
- ``double_condition``: separate text and lyric scales,
  ``(1 - gt) uncond + (gt - gl) text_only + gl cond``.
Guidance applies only inside the guidance interval (centred on the middle of the schedule); the interval decay
lowers the scale linearly towards ``min_guidance_scale`` across it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

APG_MOMENTUM = -0.75  # official MomentumBuffer(momentum=-0.75)
APG_NORM_THRESHOLD = 2.5  # official apg_forward(norm_threshold=2.5)
APG_ETA = 0.0  # official apg_forward(eta=0.0): the parallel part is dropped
APG_DIMS = (-1, -2)  # official dims=[-1, -2]: norms and projections per [16, T] plane
CFG_STAR_ZERO_STEPS = 1  # official cfg_zero_star(zero_steps=1, use_zero_init=True)
CFG_TYPES = ("apg", "cfg", "cfg_star")


class MomentumBuffer:
    """APG's running average of the guidance difference (one per sampling run and branch)."""

    def __init__(self, momentum: float = APG_MOMENTUM):
        self.momentum = momentum
        self.running_average: torch.Tensor | float = 0

    def update(self, value: torch.Tensor) -> torch.Tensor:
        self.running_average = value + self.momentum * self.running_average
        return self.running_average


def _project(v0: torch.Tensor, v1: torch.Tensor, dims=APG_DIMS) -> tuple[torch.Tensor, torch.Tensor]:
    """Parts of ``v0`` parallel and orthogonal to ``v1`` per plane, computed in float64 (MPS: on the CPU)."""
    dtype, device = v0.dtype, v0.device
    if device.type == "mps":  # no float64 on MPS; official moves to the CPU too
        v0, v1 = v0.cpu(), v1.cpu()
    v0, v1 = v0.double(), v1.double()
    v1 = F.normalize(v1, dim=dims)
    parallel = (v0 * v1).sum(dim=dims, keepdim=True) * v1
    return parallel.to(dtype).to(device), (v0 - parallel).to(dtype).to(device)


def apg(
    cond: torch.Tensor,
    uncond: torch.Tensor,
    scale: float,
    momentum: MomentumBuffer | None = None,
    eta: float = APG_ETA,
    norm_threshold: float = APG_NORM_THRESHOLD,
    dims=APG_DIMS,
) -> torch.Tensor:
    """Official ``apg_forward`` (updates ``momentum`` in place)."""
    diff = cond - uncond
    if momentum is not None:
        diff = momentum.update(diff)
    if norm_threshold > 0:
        norm = diff.norm(p=2, dim=dims, keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff), norm_threshold / norm)
    parallel, orthogonal = _project(diff, cond, dims)
    return cond + (scale - 1) * (orthogonal + eta * parallel)


def cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    return uncond + scale * (cond - uncond)


def cfg_zero_star_is_zero(
    step: int, zero_steps: int = CFG_STAR_ZERO_STEPS, use_zero_init: bool = True
) -> bool:
    """Whether CFG-zero* returns a zero velocity at this global step index (then no DiT pass is needed: the
    official ``cond * 0.0`` is zero for any finite prediction)."""
    return use_zero_init and step <= zero_steps


def cfg_zero_star(
    cond: torch.Tensor,
    uncond: torch.Tensor,
    scale: float,
    step: int,
    zero_steps: int = CFG_STAR_ZERO_STEPS,
    use_zero_init: bool = True,
) -> torch.Tensor:
    """Official ``cfg_zero_star``: ``uncond`` scaled by ``<cond, uncond> / |uncond|^2`` per batch item."""
    if cfg_zero_star_is_zero(step, zero_steps, use_zero_init):
        return cond * 0.0
    b = cond.shape[0]
    pos, neg = cond.reshape(b, -1), uncond.reshape(b, -1)
    alpha = (pos * neg).sum(dim=1, keepdim=True) / ((neg**2).sum(dim=1, keepdim=True) + 1e-8)
    alpha = alpha.view(b, 1, 1, 1)
    return uncond * alpha + scale * (cond - uncond * alpha)


def double_condition(
    cond: torch.Tensor, uncond: torch.Tensor, text_only: torch.Tensor, scale_text: float, scale_lyric: float
) -> torch.Tensor:
    """Official ``cfg_double_condition_forward``: text guidance against ``uncond``, lyric guidance against the
    prediction with the text but a weakened (ERG) or empty lyric."""
    return (1 - scale_text) * uncond + (scale_text - scale_lyric) * text_only + scale_lyric * cond


def uses_cfg(guidance_scale: float) -> bool:
    """Official: guidance is off at scale 0 or 1 (only the conditional pass runs)."""
    return guidance_scale not in (0.0, 1.0)


def uses_double_condition(scale_text: float | None, scale_lyric: float | None) -> bool:
    """Official: the text/lyric scales take over only when both exceed 1."""
    return scale_text is not None and scale_text > 1.0 and scale_lyric is not None and scale_lyric > 1.0


def guidance_interval(num_inference_steps: int, interval: float) -> tuple[int, int]:
    """Official ``[start, end)`` step indices where guidance applies: the middle ``interval`` of the schedule."""
    return int(num_inference_steps * ((1 - interval) / 2)), int(num_inference_steps * (interval / 2 + 0.5))


def scale_at(step: int, start: int, end: int, scale: float, decay: float, min_scale: float) -> float:
    """The guidance scale at ``step`` inside ``[start, end)``: with ``decay`` > 0 it falls linearly from
    ``scale`` towards ``min_scale`` (reaching ``scale - (scale - min_scale) * decay`` at ``end - 1``).

    The official code divides by ``end - start - 1`` and fails with ZeroDivisionError on a one-step interval
    with decay; here that single step keeps the full scale."""
    if decay <= 0:
        return scale
    progress = (step - start) / (end - start - 1) if end - start > 1 else 0.0
    return scale - (scale - min_scale) * progress * decay
