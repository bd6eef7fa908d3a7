"""The inputs several nodes share, declared once: name, default, range and tooltip (the official defaults).

``shared("steps", "guidance_scale", ...)`` gives fresh inputs in the order asked for, so each node keeps its own
widget order (saved workflows store widget values by position). ``settings(**inputs)`` turns what a node received
into the engine's ``SamplerSettings``.
"""

from __future__ import annotations

from collections.abc import Callable

from comfy_api.latest import io

from ..acestep_models.common.guidance import CFG_TYPES
from ..acestep_models.common.noise import MAX_SEED
from ..acestep_models.v1.schedulers import MAX_STEPS, SCHEDULERS
from .common import advanced

NOISE_MODES = ["official", "comfy"]


def seed_input(name: str, tooltip: str) -> io.Input:
    return io.Int.Input(name, default=0, min=0, max=MAX_SEED, control_after_generate=True, tooltip=tooltip)


def _scale(name: str, default: float, tooltip: str) -> io.Input:
    return io.Float.Input(name, default=default, min=0.0, max=200.0, step=0.1, tooltip=tooltip)


def _share(name: str, default: float, tooltip: str) -> io.Input:
    return io.Float.Input(name, default=default, min=0.0, max=1.0, step=0.01, tooltip=tooltip)


_INPUTS: dict[str, Callable[[], io.Input]] = {
    "steps": lambda: io.Int.Input(
        "steps", default=60, min=1, max=MAX_STEPS, tooltip="Sampling steps (official infer_step, default 60)."
    ),
    "scheduler": lambda: io.Combo.Input(
        "scheduler",
        options=list(SCHEDULERS),
        default="euler",
        tooltip="Official scheduler_type: euler (default), heun (two DiT calls per step but the last) or pingpong "
        "(predicts the clean latent and re-noises it each step with fresh noise from the seed).",
    ),
    "cfg_type": lambda: io.Combo.Input(
        "cfg_type",
        options=list(CFG_TYPES),
        default="apg",
        tooltip="Guidance: apg (official default, adaptive projected), cfg (classic), or cfg_star (CFG-zero*).",
    ),
    "guidance_scale": lambda: _scale(
        "guidance_scale",
        15.0,
        "How strongly to follow the prompt and lyrics (official default 15; 0 or 1: no guidance, one DiT pass "
        "per step).",
    ),
    "omega_scale": lambda: io.Float.Input(
        "omega_scale",
        default=10.0,
        min=-100.0,
        max=100.0,
        step=0.1,
        tooltip="Official omega (granularity): scales each step's deviation from its mean by 0.9..1.1 (10: about "
        "1.046); higher values sharpen details. Euler and Heun only.",
    ),
    "guidance_interval": lambda: advanced(
        _share(
            "guidance_interval",
            0.5,
            "Share of the steps, centred on the middle, that use guidance (official 0.5).",
        )
    ),
    "guidance_interval_decay": lambda: advanced(
        _share(
            "guidance_interval_decay",
            0.0,
            "Lowers the guidance scale linearly across the interval towards min_guidance_scale (0: constant).",
        )
    ),
    "min_guidance_scale": lambda: advanced(
        _scale("min_guidance_scale", 3.0, "Where the interval decay ends (official 3).")
    ),
    "guidance_scale_text": lambda: advanced(
        _scale(
            "guidance_scale_text",
            0.0,
            "With guidance_scale_lyric, both above 1: separate text and lyric guidance, replacing cfg_type (one "
            "more DiT pass per step).",
        )
    ),
    "guidance_scale_lyric": lambda: advanced(
        _scale(
            "guidance_scale_lyric",
            0.0,
            "With guidance_scale_text, both above 1: separate text and lyric guidance, replacing cfg_type.",
        )
    ),
    "use_erg_lyric": lambda: advanced(
        io.Boolean.Input(
            "use_erg_lyric",
            default=True,
            tooltip="Official ERG: the unconditional branch keeps the lyrics, weakened in the lyric encoder, and "
            "the ERG null prompt; off: no prompt and no lyrics at all (the official app's UI turns it off; its "
            "pipeline default is on).",
        )
    ),
    "use_erg_diffusion": lambda: advanced(
        io.Boolean.Input(
            "use_erg_diffusion",
            default=True,
            tooltip="Official ERG: the unconditional pass runs with weakened attention in DiT blocks 15-19.",
        )
    ),
    "oss_steps": lambda: advanced(
        io.String.Input(
            "oss_steps",
            default="",
            tooltip="Official optimal-step sampling: step numbers such as '16, 29, 52, 60' pick these steps of a "
            "schedule as long as the largest, replacing steps (empty: off).",
        )
    ),
    "noise_mode": lambda: advanced(
        io.Combo.Input(
            "noise_mode",
            options=NOISE_MODES,
            default="official",
            tooltip="official: one generator per batch item (seed, seed+1, ...) on the DiT's device, exactly as the "
            "official pipeline on that device (GPU and CPU give different songs). comfy: ComfyUI's noise "
            "(comfy.sample.prepare_noise): one CPU generator for the whole batch, the same noise on any device.",
        )
    ),
}


def shared(*names: str, **tooltips: str) -> list[io.Input]:
    """Fresh inputs for ``names``, in that order; ``tooltips`` replace the shared text where a node means more."""
    inputs = [_INPUTS[name]() for name in names]
    for inp in inputs:
        if inp.id in tooltips:
            inp.tooltip = tooltips[inp.id]
    return inputs


GUIDANCE_KEYS = (
    "guidance_scale",
    "cfg_type",
    "guidance_interval",
    "guidance_interval_decay",
    "min_guidance_scale",
    "use_erg_lyric",
    "use_erg_diffusion",
    "guidance_scale_text",
    "guidance_scale_lyric",
)


def settings(steps: int = 60, scheduler: str = "euler", omega_scale: float = 10.0, oss_steps=(), **guidance):
    """The engine's ``SamplerSettings`` from node inputs of the names above (node names -> official names)."""
    from ..acestep_models.v1.sampler import SamplerSettings

    unknown = set(guidance) - set(GUIDANCE_KEYS)
    if unknown:
        raise TypeError(f"not sampler settings: {sorted(unknown)}")
    return SamplerSettings(
        infer_step=steps,
        scheduler_type=scheduler,
        omega_scale=omega_scale,
        oss_steps=list(oss_steps),
        **guidance,
    )
