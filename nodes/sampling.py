"""Sampling: the official ACE-Step diffusion loop as two nodes.

``ACE-Step Sampler`` runs text2music and, from what is connected, the official tasks built on it: a MASK makes it
repaint the masked frames of the latent (all ones: a retake, the official "vary the whole song"; zero frames padded on
by ACE-Step Extend Latent: an extend), a reference latent makes it audio2audio. ``ACE-Step Edit`` is the official
flow-edit: it moves a song from its own prompt/lyrics towards target ones.

Both do exactly what ``acestep_models.v1.pipeline.generate`` does with the same settings (the official pipeline), on
the DiT ComfyUI's model manager loaded (``--cpu``, ``--lowvram`` and LoRA patches included), with ComfyUI's progress
bar, a latent preview per step (when ComfyUI runs with ``--preview-method``) and its Cancel button.
"""

from __future__ import annotations

import math

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..acestep_models.common.noise import MAX_SEED
from ..acestep_models.v1.schedulers import MAX_STEPS
from .common import (
    CATEGORY,
    DiT,
    as_latent,
    check_latent,
    checks_numbers,
    comfy_interrupted,
    explained,
    node_error,
)
from .conditioning import AceStepConditioning, check_conditioning, fit_to_dit
from .inputs import NOISE_MODES, seed_input, shared
from .inputs import settings as sampler_settings

# preview image width range in pixels (latent frames are stretched or averaged to fit)
PREVIEW_WIDTH = (256, 512)


# --- inputs -------------------------------------------------------------------------------------------------------


def parse_oss_steps(node: str, text: str) -> list[int]:
    """Official ``oss_steps``: "16, 29, 52" -> [16, 29, 52] (empty: the regular schedule)."""
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        steps = [int(p) for p in parts]
    except ValueError:
        raise node_error(
            node,
            "cannot read the step numbers",
            "Write whole numbers separated by commas, e.g. 16, 29, 52.",
            "oss_steps",
            text,
        ) from None
    bad = [s for s in steps if not 1 <= s <= MAX_STEPS]
    if bad:
        raise node_error(
            node,
            f"step {bad[0]} is outside 1..{MAX_STEPS}",
            "Use step numbers from 1 to 1000.",
            "oss_steps",
            text,
        )
    return steps


# --- noise --------------------------------------------------------------------------------------------------------


def noise_generators(
    node: str, mode: str, seed: int, batch: int, device: torch.device
) -> list[torch.Generator]:
    """``official``: one generator per batch item seeded seed, seed+1, ... on ``device`` (the official pipeline with
    ``manual_seeds=[seed, seed+1, ...]``); ``comfy``: one CPU generator seeded ``seed`` drawing the whole batch in
    one stream, which is ``comfy.sample.prepare_noise(latent, seed)``."""
    if mode == "comfy":
        generator = torch.Generator("cpu").manual_seed(seed)
        return [generator] * batch  # the engine draws item after item from it: one stream, as one batch draw
    if mode != "official":
        raise node_error(
            node, "unknown noise mode", f"Use one of {', '.join(NOISE_MODES)}.", "noise_mode", mode
        )
    return [torch.Generator(device).manual_seed((seed + i) % (MAX_SEED + 1)) for i in range(batch)]


def check_noise_device(node: str, mode: str, scheduler: str, device: torch.device) -> None:
    # PingPong draws fresh noise every step on the DiT's device, from the first item's generator.
    if mode == "comfy" and scheduler == "pingpong" and device.type != "cpu":
        raise node_error(
            node,
            f"noise_mode 'comfy' draws on the CPU, but the pingpong scheduler draws noise every step on {device}",
            "Use noise_mode 'official' with pingpong (or the euler/heun scheduler).",
            "noise_mode",
            mode,
        )


# --- masks --------------------------------------------------------------------------------------------------------


def per_frame_mask(node: str, mask, batch: int, frames: int, input: str = "mask") -> torch.Tensor:
    """ComfyUI MASK [B or 1, H, T] (e.g. ACE-Step Mask from Seconds: H = 16) -> latent-time mask [T] or [B, T]: a
    frame is regenerated as much as its most-marked row."""
    if not isinstance(mask, torch.Tensor):
        raise node_error(
            node,
            "this is not a MASK",
            "Connect a MASK (e.g. ACE-Step Mask from Seconds).",
            input,
            type(mask).__name__,
        )
    if mask.ndim == 2:
        mask = mask[None]
    if (
        mask.ndim == 4 and mask.shape[1] == 1
    ):  # a LATENT's noise_mask (core's Set Latent Noise Mask): [B, 1, H, T]
        mask = mask[:, 0]
    if mask.ndim != 3 or mask.numel() == 0:
        raise node_error(
            node, f"the mask has shape {list(mask.shape)}, not [batch, rows, frames]", "", input, "MASK"
        )
    if mask.shape[-1] != frames:
        longer = "longer" if mask.shape[-1] > frames else "shorter"
        raise node_error(
            node,
            f"the mask is {longer} than the latent: {mask.shape[-1]} frames for a latent of {frames}",
            "Make the mask from the same latent (ACE-Step Mask from Seconds, or the mask of ACE-Step Extend Latent).",
            input,
            f"MASK {list(mask.shape)}",
        )
    if mask.shape[0] not in (1, batch):
        raise node_error(
            node,
            f"the mask has {mask.shape[0]} items for a batch of {batch}",
            "Give one mask, or one per batch item.",
            input,
            f"MASK {list(mask.shape)}",
        )
    mask = mask.float().cpu()
    if not torch.isfinite(mask).all():
        bad = int((~torch.isfinite(mask)).sum())
        raise node_error(
            node, f"the mask holds {bad} NaN/inf values", "Fix the node that made it.", input, "MASK"
        )
    if mask.min() < 0 or mask.max() > 1:
        raise node_error(
            node,
            f"mask values must lie in [0, 1], these go from {float(mask.min()):g} to {float(mask.max()):g}",
            "Clamp or rescale the mask (1 = regenerate, 0 = keep).",
            input,
            "MASK",
        )
    per_frame = mask.amax(dim=1)
    return per_frame[0] if per_frame.shape[0] == 1 else per_frame


# --- ComfyUI's side of a run: progress, preview, cancel -----------------------------------------------------------


def previews_enabled() -> bool:
    from comfy.cli_args import LatentPreviewMethod, args

    return args.preview_method != LatentPreviewMethod.NoPreviews


def latent_image(x: torch.Tensor):
    """A latent [8, 16, T] drawn as an RGB image: the 8 channels stacked as bands of 16 rows (low frequencies at the
    bottom of each), positive values orange, negative blue."""
    from PIL import Image

    x = x.detach().float().cpu().flip(1).reshape(-1, x.shape[-1])  # [128, T]
    frames = x.shape[-1]
    if frames > PREVIEW_WIDTH[1]:
        x = torch.nn.functional.adaptive_avg_pool1d(x[None], PREVIEW_WIDTH[1])[0]
    elif frames < PREVIEW_WIDTH[0]:
        x = x.repeat_interleave(math.ceil(PREVIEW_WIDTH[0] / frames), dim=-1)
    a = torch.tanh(x / 2)[..., None]  # latents are ~N(0, 1)
    dark = torch.tensor([0.08, 0.08, 0.1])
    rgb = (
        dark
        + a.clamp(min=0) * torch.tensor([0.92, 0.52, 0.0])
        - a.clamp(max=0) * torch.tensor([0.12, 0.42, 0.9])
    )
    return Image.fromarray((rgb.clamp(0, 1) * 255).to(torch.uint8).numpy(), "RGB")


class Live:
    """ComfyUI's progress bar with a preview of the latent the DiT last saw, and its Cancel button, hooked onto the
    engine's ``progress(step, total)`` and ``interrupt()`` callbacks."""

    def __init__(self, dit_model: torch.nn.Module, steps: int):
        self.model, self.bar = dit_model, comfy.utils.ProgressBar(steps)
        self.preview = previews_enabled()
        self.latest: torch.Tensor | None = None
        self.hook = None

    def __enter__(self) -> Live:
        if self.preview:  # observe the DiT's latent input (first batch item) without changing anything
            self.hook = self.model.proj_in.register_forward_pre_hook(self._capture)
        return self

    def __exit__(self, *exc) -> None:
        if self.hook is not None:
            self.hook.remove()

    def _capture(self, module, args) -> None:
        self.latest = args[0][:1].detach().clone()

    def progress(self, step: int, total: int) -> None:
        image = None
        if self.preview and self.latest is not None:
            from comfy.cli_args import args

            image = ("JPEG", latent_image(self.latest[0]), args.preview_size)
        self.bar.update_absolute(step, total, image)

    interrupt = staticmethod(comfy_interrupted)


def dit_on_device(dit, batch: int, frames: int, passes: int) -> torch.nn.Module:
    """The DiT on its device, with room for ``passes`` guidance branches of ``batch`` x ``frames``."""
    width = dit.config.inner_dim
    need = (
        batch * passes * frames * width * mm.dtype_size(dit.dtype) * 24
    )  # a block's activations, generously
    return dit.load(memory_required=need)


def engine_errors(node: str):
    """The engine's ValueErrors with the node in front (ComfyUI's interruption passes through)."""
    return explained(node, fix="Check the node's settings.")


# --- nodes --------------------------------------------------------------------------------------------------------


class AceStepSampler(io.ComfyNode):
    TITLE = "ACE-Step Sampler"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulSampler",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="The official ACE-Step sampler. text2music from an empty latent; with a mask: repaint the "
            "masked part of the latent (a mask of all ones: retake, a variation of the whole song; the mask of "
            "ACE-Step Extend Latent: extend); with a reference latent: audio2audio.",
            inputs=[
                DiT.Input(
                    "dit", tooltip="The DiT (ACE-Step Load DiT or Load Checkpoint, optionally with LoRAs)."
                ),
                AceStepConditioning.Input("conditioning", tooltip="From ACE-Step Encode Prompt & Lyrics."),
                io.Latent.Input(
                    "latent",
                    tooltip="Sets the length and batch size (an empty latent: text2music). With a mask connected, the "
                    "song to repaint or extend. A noise mask on it (core's Set Latent Noise Mask) is the mask when "
                    "none is connected.",
                ),
                seed_input("seed", "The noise seed (official manual_seeds; batch item i uses seed + i)."),
                *shared("steps", "scheduler", "cfg_type", "guidance_scale", "omega_scale"),
                io.Float.Input(
                    "retake_variance",
                    default=0.5,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="With a mask: how far the masked part may move from the original (official retake "
                    "variance; the official app uses 0.2 for retake and repaint, 1.0 for extend).",
                ),
                seed_input("retake_seed", "With a mask: the seed of the variation (official retake_seeds)."),
                io.Float.Input(
                    "reference_strength",
                    default=0.5,
                    min=0.0,
                    max=0.99,
                    step=0.01,
                    tooltip="With a reference latent: how much of the reference is kept (official ref_audio_strength).",
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="1 = regenerate (ACE-Step Mask from Seconds / Extend Latent): repaint, retake or extend.",
                ),
                io.Latent.Input(
                    "reference",
                    optional=True,
                    tooltip="audio2audio: the song to start from (ACE-Step Audio to Latent); it sets the length.",
                ),
                *shared(
                    "guidance_interval",
                    "guidance_interval_decay",
                    "min_guidance_scale",
                    "use_erg_lyric",
                    "use_erg_diffusion",
                    "guidance_scale_text",
                    "guidance_scale_lyric",
                    "oss_steps",
                    "noise_mode",
                ),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="The song's latent [batch, 8, 16, frames].")
            ],
        )

    @classmethod
    @checks_numbers
    def execute(
        cls,
        dit,
        conditioning,
        latent: dict,
        seed: int,
        steps: int,
        scheduler: str,
        cfg_type: str,
        guidance_scale: float,
        omega_scale: float,
        retake_variance: float,
        retake_seed: int,
        reference_strength: float,
        mask=None,
        reference: dict | None = None,
        guidance_interval: float = 0.5,
        guidance_interval_decay: float = 0.0,
        min_guidance_scale: float = 3.0,
        use_erg_lyric: bool = True,
        use_erg_diffusion: bool = True,
        guidance_scale_text: float = 0.0,
        guidance_scale_lyric: float = 0.0,
        oss_steps: str = "",
        noise_mode: str = "official",
    ) -> io.NodeOutput:
        from ..acestep_models.common import tasks
        from ..acestep_models.v1 import sampler as S

        node = cls.TITLE
        cond = check_conditioning(node, "conditioning", conditioning)
        samples = check_latent(node, "latent", latent)
        batch, frames = samples.shape[0], samples.shape[-1]
        settings = sampler_settings(
            steps=steps,
            scheduler=scheduler,
            omega_scale=omega_scale,
            oss_steps=parse_oss_steps(node, oss_steps),
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
        total = max(settings.oss_steps) if settings.oss_steps else steps
        task = tasks.TEXT2MUSIC
        if mask is not None and reference is not None:
            raise node_error(
                node,
                "both a mask and a reference are connected",
                "Connect a mask to repaint/retake/extend, or a reference for audio2audio, not both.",
                "reference",
                "LATENT",
            )
        if reference is not None:
            ref = check_latent(node, "reference", reference)
            if ref.shape[0] not in (1, batch):
                raise node_error(
                    node,
                    f"the reference has {ref.shape[0]} items for a batch of {batch}",
                    "Give one reference song, or one per batch item.",
                    "reference",
                    "LATENT",
                )
            if int((1 - reference_strength) * total) < 1:
                raise node_error(
                    node,
                    f"leaves no sampling step of {total} (int((1 - strength) * steps) = 0)",
                    "Lower the strength or use more steps.",
                    "reference_strength",
                    reference_strength,
                )
            task = tasks.Audio2Audio(ref, reference_strength)
        mask_input = "mask"
        if (
            mask is None
            and reference is None
            and isinstance(latent, dict)
            and latent.get("noise_mask") is not None
        ):
            mask, mask_input = (
                latent["noise_mask"],
                "latent",
            )  # core's Set Latent Noise Mask: what to regenerate
        if mask is not None:
            per_frame = per_frame_mask(node, mask, batch, frames, mask_input)
            task = tasks.from_mask(samples, per_frame, retake_variance)
            if not isinstance(task, tasks.Retake) and int(total * (1 - retake_variance)) >= total:
                raise node_error(
                    node,
                    f"regenerates nothing: int({total} steps * (1 - variance)) leaves no step",
                    "Use a variance above 0 (the official app uses 0.2 for repaint, 1.0 for extend).",
                    "retake_variance",
                    retake_variance,
                )

        model = dit_on_device(dit, batch, frames, 3 if guidance_scale not in (0.0, 1.0) else 1)
        device, dtype = dit.device, dit.dtype
        check_noise_device(node, noise_mode, scheduler, device)
        generators = noise_generators(node, noise_mode, seed, batch, device)
        retake_generators = noise_generators(node, noise_mode, retake_seed, batch, device)
        cond = fit_to_dit(node, "conditioning", cond, dit).to(device, dtype)
        with engine_errors(node), Live(model, total) as live:
            out = S.sample(
                model,
                cond,
                settings,
                generators,
                tasks.to(task, device, dtype),
                frames=frames,
                retake_generators=retake_generators,
                progress=live.progress,
                interrupt=live.interrupt,
            )
        return io.NodeOutput(as_latent(out))


class AceStepFlowEdit(io.ComfyNode):
    TITLE = "ACE-Step Edit"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulFlowEdit",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="The official flow-edit: changes a song (its latent) from what its own prompt and lyrics "
            "say towards the target prompt and lyrics, keeping the rest. Small lyric changes keep the melody.",
            inputs=[
                DiT.Input(
                    "dit", tooltip="The DiT (ACE-Step Load DiT or Load Checkpoint, optionally with LoRAs)."
                ),
                AceStepConditioning.Input(
                    "conditioning",
                    tooltip="The song's own prompt and lyrics (ACE-Step Encode Prompt & Lyrics).",
                ),
                AceStepConditioning.Input(
                    "target_conditioning", tooltip="The prompt and lyrics to edit the song towards."
                ),
                io.Latent.Input(
                    "latent",
                    tooltip="The song to edit (ACE-Step Audio to Latent); a batch of copies gives variations.",
                ),
                seed_input(
                    "seed", "The edit's noise seed (official: the retake seeds; item i uses seed + i)."
                ),
                *shared(
                    "steps",
                    "guidance_scale",
                    "scheduler",
                    scheduler="Official scheduler_type (the edit itself always steps with Euler; pingpong changes the "
                    "official edit's behaviour, kept as is).",
                ),
                io.Float.Input(
                    "n_min",
                    default=0.6,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Share of the steps skipped before editing (official app: 0.6 to change only the lyrics, "
                    "0.2 to remix).",
                ),
                io.Float.Input(
                    "n_max",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Share of the steps after which the target is sampled freely (official app: 1.0 for lyrics, "
                    "0.4 to remix).",
                ),
                io.Int.Input(
                    "n_avg",
                    default=1,
                    min=1,
                    max=64,
                    tooltip="Noise draws averaged per edit step (official 1).",
                ),
                *shared("noise_mode"),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="The edited song's latent.")],
        )

    @classmethod
    @checks_numbers
    def execute(
        cls,
        dit,
        conditioning,
        target_conditioning,
        latent: dict,
        seed: int,
        steps: int,
        guidance_scale: float,
        scheduler: str,
        n_min: float,
        n_max: float,
        n_avg: int,
        noise_mode: str = "official",
    ) -> io.NodeOutput:
        from ..acestep_models.common import tasks
        from ..acestep_models.v1 import sampler as S

        node = cls.TITLE
        src_cond = check_conditioning(node, "conditioning", conditioning)
        tar_cond = check_conditioning(node, "target_conditioning", target_conditioning)
        samples = check_latent(node, "latent", latent)
        batch, frames = samples.shape[0], samples.shape[-1]
        if n_min > n_max:
            raise node_error(
                node, f"n_min is above n_max = {n_max:g}", "Give n_min <= n_max.", "n_min", n_min
            )
        if batch > 1 and not (samples == samples[:1]).all():
            raise node_error(
                node,
                f"the latent holds {batch} different songs; the edit takes one song",
                "Edit one song (a batch of copies, e.g. from Repeat Latent Batch, gives variations).",
                "latent",
                "LATENT",
            )
        model = dit_on_device(dit, batch, frames, 4 * n_avg)
        device, dtype = dit.device, dit.dtype
        check_noise_device(node, noise_mode, scheduler, device)
        generators = noise_generators(node, noise_mode, seed, batch, device)
        src_cond = fit_to_dit(node, "conditioning", src_cond, dit).to(device, dtype)
        tar_cond = fit_to_dit(node, "target_conditioning", tar_cond, dit)
        edit = tasks.Edit(samples[:1], tar_cond, n_min, n_max, n_avg)
        settings = sampler_settings(steps=steps, scheduler=scheduler, guidance_scale=guidance_scale)
        total = steps - int(steps * n_min)
        with engine_errors(node), Live(model, max(total, 1)) as live:
            out = S.sample(
                model,
                src_cond,
                settings,
                generators,
                tasks.to(edit, device, dtype),
                frames=frames,
                progress=live.progress,
                interrupt=live.interrupt,
            )
        return io.NodeOutput(as_latent(out))


NODES = [AceStepSampler, AceStepFlowEdit]
