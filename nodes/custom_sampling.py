"""Custom sampling: ACE-Step's official guidance, schedule, step rules and noise as ComfyUI's GUIDER, SIGMAS,
SAMPLER and NOISE, for core ``SamplerCustomAdvanced`` (and ``KSamplerSelect``, ``DisableNoise``,
``SetLatentNoiseMask``, ``SplitSigmas``... around them).

ComfyUI's convention for ACE-Step, which these follow: latents ``[B, 8, 16, T]`` (ours and ``EmptyAceStepLatentAudio``
alike), a flow model ``x_sigma = (1 - sigma) x0 + sigma noise`` with sigma in [0, 1] and the DiT timestep
``1000 sigma``, SIGMAS ending in 0, and a guider returning the x0 prediction ``x - sigma v`` to ComfyUI's samplers.

``AceStepNoise`` + ``AceStepGuider`` + ``AceStepSamplerSelect`` + ``AceStepScheduler`` in ``SamplerCustomAdvanced``
give the official text2music result (``acestep_models.v1.pipeline.generate``). There the sampler takes the guided velocity
straight from the guider, as the official loop does; with a core sampler, a denoise mask, or our sampler under
another guider, the velocity is recovered from the x0 prediction (``(x - x0) / sigma``, equal to rounding).
"""

from __future__ import annotations

import types

import comfy.latent_formats
import comfy.model_management as mm
import comfy.model_patcher
import comfy.model_sampling
import comfy.sampler_helpers
import comfy.samplers
import torch
from comfy_api.latest import io
from tqdm.auto import tqdm

from ..acestep_models.common.sampling import VelocityProvider
from ..acestep_models.v1.schedulers import SCHEDULERS
from .common import (
    CATEGORY,
    LATENT_CHANNELS,
    LATENT_HEIGHT,
    AceStepDiT,
    DiT,
    advanced,
    checks_numbers,
    comfy_interrupted,
    explained,
    node_error,
)
from .conditioning import AceStepConditioning, check_conditioning, fit_to_dit
from .inputs import seed_input, shared
from .inputs import settings as sampler_settings
from .sampling import dit_on_device, noise_generators, parse_oss_steps

# ACE-Step Noise hands the generator it drew with to ACE-Step Guider on the noise tensor itself (the one object
# SamplerCustomAdvanced passes from a NOISE to a GUIDER): PingPong's fresh noise continues that stream.
_NOISE_GENERATOR = "acestep_noise_generator"
# official schedulers' shift and DiT timestep scale (ComfyUI's ACE model_sampling: shift 3, multiplier 1000)
SHIFT, TIMESTEP_MULTIPLIER = 3.0, 1000


# --- what ComfyUI's samplers read from a model ---------------------------------------------------------------------


class _FlowSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
    """ComfyUI's model sampling for ACE-Step (``model_base.ACEStep``: FLOW, shift 3): sigma in [0, 1], timestep
    ``1000 sigma``, noising ``sigma noise + (1 - sigma) x0``, x0 prediction ``x - sigma v``."""

    def __init__(self):
        super().__init__(
            types.SimpleNamespace(sampling_settings={"shift": SHIFT, "multiplier": TIMESTEP_MULTIPLIER})
        )


class _SamplingModel:
    """What ComfyUI's samplers read from a guider's ``inner_model`` (a ``BaseModel`` for core models): the model
    sampling, the latent format (ACE audio: scale 1, no shift, so ``process_latent_in/out`` change nothing) and the
    inpaint noising of the source outside a mask."""

    def __init__(self):
        self.model_sampling = _FlowSampling()
        self.latent_format = comfy.latent_formats.ACEAudio()

    def process_latent_in(self, latent: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_in(latent)

    def process_latent_out(self, latent: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_out(latent)

    def scale_latent_inpaint(self, sigma, noise, latent_image, **kwargs) -> torch.Tensor:
        sigma = sigma.reshape([sigma.shape[0]] + [1] * (noise.ndim - 1))
        return self.model_sampling.noise_scaling(sigma, noise, latent_image)

    def attach_to(self, module: torch.nn.Module) -> None:
        """SamplerCustomAdvanced and some core samplers read ``latent_format``, ``model_sampling`` and
        ``process_latent_out`` from ``guider.model_patcher.model``, where ComfyUI's own models carry them. The DiT
        gets them as plain attributes (not submodules: its state dict and device moves stay the official ones)."""
        for name in ("latent_format", "model_sampling", "process_latent_in", "process_latent_out"):
            module.__dict__[name] = getattr(self, name)


# --- the guider ------------------------------------------------------------------------------------------------------


class _GuidedVelocity:
    """One sampling run of the official guidance (the engine's ``sampler.GuidedVelocity``) called the way ComfyUI's
    samplers call a model, at ``(x, sigma)``. The guidance step index counts DiT calls (as the official loop: Heun's
    corrector is a step of its own); an optional negative replaces the official null branch."""

    def __init__(self, dit, positive, negative, settings, batch: int, steps: int):
        from ..acestep_models.v1 import sampler as S

        self.dit, self.settings, self.S = dit, settings, S
        branches = S.encode_branches(dit, positive, batch, settings)
        if negative is not None and "uncond" in branches:
            branches["uncond"] = self._encode_negative(negative, batch)
        self.branches = branches
        self.guided = S.GuidedVelocity(dit, branches, settings, steps)
        self.calls = 0

    @torch.no_grad()
    def _encode_negative(self, negative, batch: int):
        """The unconditional branch from a negative prompt and lyrics instead of the official null ones (no speaker
        either way; the diffusion ERG still applies to it when enabled)."""
        text, text_mask, ids, lyric_mask, speaker = (
            x.repeat(batch, *([1] * (x.dim() - 1)))
            for x in (
                negative.text,
                negative.text_mask,
                negative.lyric_ids,
                negative.lyric_mask,
                negative.speaker,
            )
        )
        states, mask = self.dit.encode(text, text_mask, torch.zeros_like(speaker), ids, lyric_mask)
        return self.S.Branch(states, mask, erg=self.settings.use_erg_diffusion)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The guided velocity at ``x`` [B, 8, 16, T] and ``sigma`` (0-dim), in the DiT's dtype."""
        mm.throw_exception_if_processing_interrupted()
        i, self.calls = self.calls, self.calls + 1
        t = (sigma.reshape(()).to(torch.float32) * TIMESTEP_MULTIPLIER).to(x.device)  # official timestep
        return self.guided(i, t, x.to(self.branches["cond"].states.dtype))


class OfficialGuider(comfy.samplers.CFGGuider, VelocityProvider):
    """ComfyUI's GUIDER protocol (``sample(noise, latent_image, sampler, sigmas, denoise_mask, callback,
    disable_pbar, seed)``) over our DiT and the official guidance.

    ``model_patcher`` is the DiT's own patcher (what ComfyUI's sampler nodes read it for is attached to the DiT,
    see ``_SamplingModel.attach_to``); the DiT is loaded through ComfyUI's model management when sampling starts.
    ComfyUI's samplers call the guider (``predict_noise``) for the x0 prediction; as a ``VelocityProvider`` it gives
    the official sampler the guided velocity itself."""

    def __init__(self, dit: AceStepDiT, positive, negative, settings):
        super().__init__(dit.patcher)
        self.dit, self.positive, self.negative, self.settings = dit, positive, negative, settings
        self.cfg = settings.guidance_scale
        self.inner_model = _SamplingModel()
        self.inner_model.attach_to(dit.model)
        self._velocity: _GuidedVelocity | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.dit.dtype

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self._velocity is None:
            raise RuntimeError("ACE-Step Guider: the velocity is only available while the guider samples")
        return self._velocity(x, sigma)

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (ComfyUI's signature)
        sigma = timestep.reshape(-1)[:1].reshape(())  # ComfyUI passes sigma (one per batch item, all equal)
        v = self.velocity(x, sigma)
        # the flow x0 prediction, as ComfyUI's CONST.calculate_denoised
        return x - timestep.reshape([-1] + [1] * (x.ndim - 1)) * v

    def sample(
        self,
        noise,
        latent_image,
        sampler,
        sigmas,
        denoise_mask=None,
        callback=None,
        disable_pbar=False,
        seed=None,
    ):
        if sigmas.shape[-1] == 0:
            return latent_image
        samples = _check_samples(latent_image)
        batch, frames = samples.shape[0], samples.shape[-1]
        if noise.shape != samples.shape:
            raise node_error(
                AceStepGuider.TITLE,
                f"the noise has shape {list(noise.shape)}, the latent {list(samples.shape)}",
                "Use a NOISE node that makes noise for this latent (ACE-Step Noise, RandomNoise, DisableNoise).",
            )
        self.noise_generator = getattr(noise, _NOISE_GENERATOR, None)  # from ACE-Step Noise, else None
        model = dit_on_device(
            self.dit, batch, frames, 3 if self.settings.guidance_scale not in (0.0, 1.0) else 1
        )
        device, dtype = self.dit.device, self.dit.dtype
        noise, latent, sigmas = (t.to(device, torch.float32) for t in (noise, samples, sigmas))
        mask = None
        if denoise_mask is not None:
            mask = comfy.sampler_helpers.prepare_mask(denoise_mask, noise.shape, device)
        # (no process_latent_in/out: the identity for ACE audio latents, scale 1 and no shift)
        with explained(AceStepGuider.TITLE):
            positive = fit_to_dit(AceStepGuider.TITLE, "positive", self.positive, self.dit).to(device, dtype)
            negative = self.negative
            if negative is not None:
                negative = fit_to_dit(AceStepGuider.TITLE, "negative", negative, self.dit).to(device, dtype)
            self._velocity = _GuidedVelocity(model, positive, negative, self.settings, batch, len(sigmas) - 1)
        options = comfy.model_patcher.create_model_options_clone(self.model_options)
        options.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
        extra_args = {"model_options": options, "seed": seed}
        try:
            out = sampler.sample(self, sigmas, extra_args, callback, noise, latent, mask, disable_pbar)
        finally:
            self._velocity, self.noise_generator = None, None
        out = out.to(torch.float32)
        if mask is not None:  # what the mask keeps stays the source, exactly
            out = torch.where(mask > 0, out, latent)
        return out


def _check_samples(latent_image) -> torch.Tensor:
    if getattr(latent_image, "is_nested", False):
        raise node_error(
            AceStepGuider.TITLE,
            "the latent is a nested (multi-part) latent",
            "Connect a plain ACE-Step latent [batch, 8, 16, frames].",
        )
    if latent_image.ndim != 4 or latent_image.shape[1:3] != (LATENT_CHANNELS, LATENT_HEIGHT):
        raise node_error(
            AceStepGuider.TITLE,
            f"the latent has shape {list(latent_image.shape)}, not ACE-Step's [batch, 8, 16, frames]",
            "Connect an ACE-Step latent (ACE-Step Empty Latent, ACE-Step Audio to Latent, EmptyAceStepLatentAudio).",
        )
    return latent_image


class AceStepGuider(io.ComfyNode):
    TITLE = "ACE-Step Guider"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulGuider",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="The official ACE-Step guidance (APG, CFG or CFG-zero*, its guidance interval and ERG) as a "
            "GUIDER for SamplerCustomAdvanced: with ACE-Step Sampler Select, Scheduler and Noise it gives exactly the "
            "official text2music result; core samplers (KSamplerSelect) work with it too.",
            inputs=[
                DiT.Input("dit", tooltip="ACE-Step's DiT (from ACE-Step Load DiT or Load Checkpoint)."),
                AceStepConditioning.Input(
                    "positive", tooltip="The prompt and lyrics (ACE-Step Encode Prompt & Lyrics)."
                ),
                AceStepConditioning.Input(
                    "negative",
                    optional=True,
                    tooltip="Replaces the official unconditional branch (no prompt, no lyrics, weakened by ERG) "
                    "with this prompt and lyrics. Leave empty for the official behaviour.",
                ),
                *shared(
                    "guidance_scale",
                    "cfg_type",
                    "guidance_interval",
                    "guidance_interval_decay",
                    "min_guidance_scale",
                    "guidance_scale_text",
                    "guidance_scale_lyric",
                    "use_erg_lyric",
                    "use_erg_diffusion",
                ),
            ],
            outputs=[io.Guider.Output(display_name="guider", tooltip="For SamplerCustomAdvanced.")],
        )

    @classmethod
    @checks_numbers
    def execute(
        cls,
        dit: AceStepDiT,
        positive,
        guidance_scale: float,
        cfg_type: str,
        negative=None,
        guidance_interval: float = 0.5,
        guidance_interval_decay: float = 0.0,
        min_guidance_scale: float = 3.0,
        guidance_scale_text: float = 0.0,
        guidance_scale_lyric: float = 0.0,
        use_erg_lyric: bool = True,
        use_erg_diffusion: bool = True,
    ) -> io.NodeOutput:
        settings = sampler_settings(
            guidance_scale=guidance_scale,
            cfg_type=cfg_type,
            guidance_interval=guidance_interval,
            guidance_interval_decay=guidance_interval_decay,
            min_guidance_scale=min_guidance_scale,
            use_erg_lyric=use_erg_lyric,
            use_erg_diffusion=use_erg_diffusion,
            guidance_scale_text=guidance_scale_text,
            guidance_scale_lyric=guidance_scale_lyric,
        )
        with explained(cls.TITLE, "cfg_type", cfg_type):
            settings.check()
        positive = check_conditioning(cls.TITLE, "positive", positive)
        negative = None if negative is None else check_conditioning(cls.TITLE, "negative", negative)
        return io.NodeOutput(OfficialGuider(dit, positive, negative, settings))


# --- the sampler -----------------------------------------------------------------------------------------------------


def _stepper_schedule(kind: str, sigmas: torch.Tensor):
    """The engine's ``Schedule`` over ComfyUI sigmas ``[s0 .. sN]``: one entry per DiT call. Heun (official
    ``FlowMatchHeunDiscreteScheduler``) repeats every sigma after the first, its corrector evaluating at the next
    sigma; no corrector after a step to 0."""
    from ..acestep_models.v1.schedulers import NUM_TRAIN_TIMESTEPS, Schedule

    steps = len(sigmas) - 1
    if kind == "heun":
        calls = 2 * steps - (1 if sigmas[-1] == 0 else 0)
        per_call = torch.cat([sigmas[:1], sigmas[1:].repeat_interleave(2)])
    else:
        calls, per_call = steps, sigmas
    return Schedule(kind, per_call[:calls] * NUM_TRAIN_TIMESTEPS, per_call, steps, float(sigmas[0]))


def _foreign_noise_generator(x: torch.Tensor, seed, dtype: torch.dtype) -> torch.Generator:
    """For noise that did not come from ACE-Step Noise (RandomNoise, a core guider): PingPong's stream continued as
    if ACE-Step Noise had drawn the first item's starting noise with this seed (``common.noise.batch_noise``)."""
    g = torch.Generator(device=x.device).manual_seed(int(seed or 0))
    torch.randn((1, *x.shape[1:]), generator=g, device=x.device, dtype=dtype)
    return g


@torch.no_grad()
def sample_official(model, x, sigmas, extra_args=None, callback=None, disable=None, kind="euler", omega=10.0):
    """The official Euler / Heun / PingPong step rules (``acestep_models.v1.schedulers.Stepper``, with the omega mean
    shift) as a k-diffusion style sampler for ``comfy.samplers.KSAMPLER``, through the engine's one sampling loop
    (``common.sampling.run_steps``).

    ``model``: ComfyUI's inpaint wrapper around the guider (``KSamplerX0Inpaint``, which also holds the unscaled
    noise and the latent). Under a ``VelocityProvider`` guider (ACE-Step Guider) without a denoise mask the guided
    velocity comes straight from it and the latents live in the DiT's dtype between steps, as official; otherwise
    the velocity is ``(x - x0) / sigma`` from the x0 prediction (ComfyUI's flow models), equal to rounding."""
    from ..acestep_models.common.sampling import run_steps
    from ..acestep_models.v1.schedulers import Stepper

    extra_args = {} if extra_args is None else extra_args
    guider = getattr(model, "inner_model", None)  # ComfyUI's wrapper keeps the guider here
    provider = guider if isinstance(guider, VelocityProvider) else None
    if extra_args.get("denoise_mask") is not None:
        provider = None  # ComfyUI's wrapper blends the source in around the guider
    s_in = x.new_ones([x.shape[0]])
    noise, latent = getattr(model, "noise", None), getattr(model, "latent_image", None)
    if noise is not None and latent is not None and torch.count_nonzero(latent) == 0:
        # Official text2music starts from the noise itself whatever the first sigma; ComfyUI scaled it by that
        # sigma, which differs only for schedules starting below 1 (oss_steps).
        x = noise

    schedule = _stepper_schedule(kind, sigmas)
    stepper = Stepper(schedule, omega)
    stepper.index = 0
    generator = None
    if kind == "pingpong":
        generator = provider.noise_generator if provider is not None else None
        if generator is None:
            dtype = provider.dtype if provider is not None else torch.float32
            generator = _foreign_noise_generator(x, extra_args.get("seed"), dtype)
    bar = tqdm(total=len(sigmas) - 1, disable=disable)

    def velocity(i: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sigma = schedule.sigmas[i]  # the ComfyUI sigma of this DiT call (Heun's corrector: the next one)
        if provider is not None:
            v = provider.velocity(x, sigma)
        else:
            v = (x - model(x, sigma * s_in, **extra_args)) / sigma
        if (
            not stepper.corrects_next
        ):  # a ComfyUI step begins: preview and progress per step, as k-diffusion's
            if callback is not None:
                k = bar.n
                callback({"x": x, "i": k, "sigma": sigma, "sigma_hat": sigma, "denoised": x - sigma * v})
            bar.update(1)
        return v

    def step(i: int, t: torch.Tensor, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return stepper.step(v, t, x.to(v.dtype), generator)

    try:
        return run_steps(schedule.timesteps, velocity, step, x, interrupt=comfy_interrupted)
    finally:
        bar.close()


class AceStepSamplerSelect(io.ComfyNode):
    TITLE = "ACE-Step Sampler Select"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulSamplerSelect",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="The official ACE-Step step rules (Euler and Heun with the omega mean shift, PingPong) as a "
            "SAMPLER for SamplerCustomAdvanced or SamplerCustom.",
            inputs=[
                io.Combo.Input(
                    "sampler",
                    options=list(SCHEDULERS),
                    default="euler",
                    tooltip="The official step rule (scheduler_type): euler (default), heun (two DiT calls per step "
                    "but the last) or pingpong (predicts the clean latent and re-noises it each step with fresh noise "
                    "from the seed).",
                ),
                *shared("omega_scale"),
            ],
            outputs=[io.Sampler.Output(display_name="sampler", tooltip="For SamplerCustomAdvanced.")],
        )

    @classmethod
    @checks_numbers
    def execute(cls, sampler: str, omega_scale: float) -> io.NodeOutput:
        if sampler not in SCHEDULERS:
            raise node_error(
                cls.TITLE, "unknown step rule", f"Use one of {list(SCHEDULERS)}.", "sampler", sampler
            )
        return io.NodeOutput(
            comfy.samplers.KSAMPLER(sample_official, extra_options={"kind": sampler, "omega": omega_scale})
        )


# --- the schedule ----------------------------------------------------------------------------------------------------


class AceStepScheduler(io.ComfyNode):
    TITLE = "ACE-Step Scheduler"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulScheduler",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="The official ACE-Step flow-matching schedule (shift 3, applied twice as the official "
            "schedulers do) as SIGMAS: steps + 1 values from 1 down to 0. Euler, Heun and PingPong share it; Heun "
            "makes two DiT calls per step.",
            inputs=[
                io.Int.Input(
                    "steps", default=60, min=1, max=1000, tooltip="Number of steps (official infer_step, 60)."
                ),
                io.Float.Input(
                    "denoise",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Below 1: start part-way, with the official audio2audio schedule (denoise = 1 - "
                    "ref_audio_strength): int(denoise x steps) steps. ComfyUI noises the latent to the first sigma; "
                    "the official audio2audio noises it less (ACE-Step Sampler's reference input does that).",
                ),
                advanced(
                    io.String.Input(
                        "oss_steps",
                        default="",
                        tooltip="Official oss_steps: pick these steps (e.g. '16, 29, 52, 60') of a schedule as long "
                        "as the largest; replaces steps.",
                    )
                ),
                DiT.Input(
                    "dit",
                    optional=True,
                    tooltip="With oss_steps the official code rounds the picked timesteps to the DiT's precision: "
                    "connect the DiT to do the same (unconnected: float32).",
                ),
            ],
            outputs=[io.Sigmas.Output(display_name="sigmas", tooltip="float32 [steps + 1], ending in 0.")],
        )

    @classmethod
    @checks_numbers
    def execute(cls, steps: int, denoise: float, oss_steps: str = "", dit=None) -> io.NodeOutput:
        from ..acestep_models.v1.schedulers import make_schedule, oss_schedule

        oss = parse_oss_steps(cls.TITLE, oss_steps)
        infer_steps = max(oss) if oss else steps
        if denoise < 1.0:  # official audio2audio: sigma_max = 1 - ref_audio_strength (oss_steps then unused)
            count = int(denoise * infer_steps)
            if count == 0:  # no step: SamplerCustomAdvanced returns the latent unchanged
                return io.NodeOutput(torch.zeros(0))
            schedule = make_schedule("euler", count, sigma_max=denoise)
        elif oss:
            dtype = dit.dtype if dit is not None else torch.float32
            schedule = oss_schedule("euler", oss, dtype=dtype)
        else:
            schedule = make_schedule("euler", steps)
        return io.NodeOutput(schedule.sigmas.cpu())


# --- the noise -------------------------------------------------------------------------------------------------------


class OfficialNoise:
    """ComfyUI's NOISE protocol (``seed``, ``generate_noise(latent)``) with ACE-Step Sampler's official draws: one
    generator per batch item seeded seed, seed + 1, ... on ``device`` (the official ``manual_seeds``), standard
    normal ``[1, 8, 16, T]`` each in ``dtype`` (``common.noise.batch_noise``); returned float32 on the CPU, as ComfyUI's
    noise is."""

    def __init__(self, seed: int, device: torch.device, dtype: torch.dtype):
        # ``seed`` is the first item's (SamplerCustomAdvanced hands it to the sampler: PingPong continues its stream)
        self.seed, self.device, self.dtype = seed, device, dtype

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        from ..acestep_models.common.noise import batch_noise

        samples = input_latent["samples"]
        generators = noise_generators(
            AceStepNoise.TITLE, "official", self.seed, samples.shape[0], self.device
        )
        noise = batch_noise(samples.shape, generators, self.device, self.dtype).to("cpu", torch.float32)
        setattr(noise, _NOISE_GENERATOR, generators[0])  # handed over to ACE-Step Guider (PingPong's stream)
        return noise


class AceStepNoise(io.ComfyNode):
    TITLE = "ACE-Step Noise"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulNoise",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="The official ACE-Step starting noise (as ACE-Step Sampler draws it: one generator per song, "
            "seeds seed, seed + 1, ...): with it SamplerCustomAdvanced reproduces the official pipeline exactly.",
            inputs=[
                seed_input(
                    "noise_seed", "The noise seed (official manual_seeds; batch item i uses seed + i)."
                ),
                DiT.Input(
                    "dit",
                    optional=True,
                    tooltip="Draw on the DiT's device and in its precision, as the official pipeline and ACE-Step "
                    "Sampler do (GPU and CPU give different songs). Unconnected: float32 on ComfyUI's device.",
                ),
            ],
            outputs=[io.Noise.Output(display_name="noise", tooltip="For SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, noise_seed: int, dit=None) -> io.NodeOutput:
        device = dit.device if dit is not None else mm.get_torch_device()
        dtype = dit.dtype if dit is not None else torch.float32
        return io.NodeOutput(OfficialNoise(noise_seed, device, dtype))


NODES = [AceStepGuider, AceStepSamplerSelect, AceStepScheduler, AceStepNoise]
