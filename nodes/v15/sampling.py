"""ACE-Step 1.5 latents and sampling: Empty Latent, the Sampler (every official task and knob) and Decode.

The sampler is one official ``generate_music`` call (``acestep_models.v15.pipeline.generate``) built from what is
connected: the prompt, the latent (batch and length), the task and its inputs. So a graph gives what
``python -m acestep_models generate`` gives for the same parameters, bit for bit.
"""

from __future__ import annotations

import re

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..common import advanced, check_audio, checks_numbers, comfy_interrupted, explained, node_error
from ..inputs import seed_input
from .handles import (
    CATEGORY15,
    FRAME_RATE,
    DiT15,
    DiT15Handle,
    Prompt15,
    PromptText15,
    Vae15,
    Vae15Handle,
    as_latent15,
    samples15,
)

MAX_SECONDS = 600.0  # the official UI's longest song
TASKS = ("text2music", "cover", "repaint", "extract", "lego", "complete")
SOURCE_TASKS = (
    "repaint",
    "extract",
    "lego",
    "complete",
)  # tasks that read the source audio (cover may use codes)


class AceStep15EmptyLatent(io.ComfyNode):
    TITLE = "ACE-Step 1.5 Empty Latent"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithful15EmptyLatent",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="A silent ACE-Step 1.5 latent of the song's length: [batch, 64, frames] at 25 Hz, the same "
            "LATENT as core's Empty Ace Step 1.5 Latent Audio.",
            inputs=[
                io.Float.Input(
                    "seconds", default=30.0, min=1.0, max=MAX_SECONDS, step=0.1, tooltip="Song length."
                ),
                io.Int.Input(
                    "batch_size", default=1, min=1, max=64, tooltip="How many songs to make at once."
                ),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    @checks_numbers
    def execute(cls, seconds: float, batch_size: int) -> io.NodeOutput:
        # core's EmptyAceStep1.5LatentAudio, float rounding included (round(seconds * 25) differs at 10.7 s, ...)
        frames = round(seconds * 48000 / 1920)
        samples = torch.zeros([batch_size, 64, frames], device=mm.intermediate_device())
        return io.NodeOutput({"samples": samples, "type": "audio"})


def _window(node: str, input: str, mask: torch.Tensor, frames: int) -> tuple[float, float]:
    """A mask over the latent's frames (any shape ending in frames; ComfyUI's MASK or a LATENT's noise_mask) as
    the official repaint window in seconds. The official model repaints one window, so the mask must be one run."""
    m = mask.float()
    m = m.reshape(-1, m.shape[-1]).amax(0) if m.ndim > 1 else m
    if m.shape[-1] != frames:
        m = torch.nn.functional.interpolate(m[None, None], size=frames, mode="nearest")[0, 0]
    on = torch.nonzero(m > 0.5).flatten().tolist()
    if not on:
        raise node_error(
            node, "the mask marks nothing to repaint", "Mark the region to repaint.", input, "MASK"
        )
    a, b = on[0], on[-1] + 1
    if len(on) != b - a:
        raise node_error(
            node, "the mask marks more than one region; ACE-Step 1.5 repaints one window at a time",
            "Repaint one region, then the next.", input, "MASK",
        )  # fmt: skip
    # half a frame in: the official int(seconds * 48000 // 1920) gives back frames a and b exactly
    return (a + 0.5) / FRAME_RATE, (b + 0.5) / FRAME_RATE


def _region(node: str, input: str, text: str, source_seconds: float | None) -> tuple[float, float]:
    """One region as ACE-Step Load Audio's waveform writes it (``10-20``, ``35.5-end``, ``end-end+10``, ``-5-0``) as
    the official window in seconds of the source: ``end`` is the source's end; past either end it outpaints."""
    from ..latents import _RANGE, RANGES_HELP

    parts = [p.strip() for p in re.split(r"[,;\n]+", text) if p.strip()]
    if len(parts) != 1:
        raise node_error(
            node, f"{len(parts)} regions; ACE-Step 1.5 repaints one window at a time",
            "Give one region (repaint the next one in a second pass).", input, text,
        )  # fmt: skip
    m = _RANGE.match(parts[0])
    if not m:
        raise node_error(
            node,
            f"cannot read the region '{parts[0]}'",
            f"Write start-end in seconds, {RANGES_HELP}.",
            input,
            text,
        )

    def seconds(value: str) -> float:
        value = value.replace(" ", "").lower()
        if value.startswith("end"):
            if source_seconds is None:
                raise node_error(node, "'end' needs the source audio", "Connect source_audio.", input, text)
            return source_seconds + float(value[4:] or 0)
        return float(value)

    start, end = seconds(m.group(1)), seconds(m.group(2))
    if m.group(2).replace(" ", "").lower() == "end":
        return start, -1.0  # the official "to the source's end"
    if end <= start:
        raise node_error(
            node,
            f"the region '{parts[0]}' ends before it starts",
            "Write start-end, end > start.",
            input,
            text,
        )
    return start, end


def _seconds48(src: tuple[torch.Tensor, int] | None) -> float | None:
    """The source's length as the official handler measures it: in samples at 48 kHz after its resampling."""
    from ...acestep_models.v15.pipeline import SAMPLE_RATE, to_stereo_48k

    return None if src is None else to_stereo_48k(*src).shape[-1] / SAMPLE_RATE


def _audio(node: str, input: str, audio) -> tuple[torch.Tensor, int] | None:
    if audio is None:
        return None
    wav, rate = check_audio(node, input, audio)
    return wav[0], rate  # one file, as the official src_audio / reference_audio


def _timesteps(node: str, text: str) -> list[float] | None:
    if not text.strip():
        return None
    try:
        return [float(t) for t in text.replace(";", ",").split(",") if t.strip()]
    except ValueError:
        raise node_error(
            node, "not a list of numbers", "Give timesteps like '0.97, 0.76, 0.5, 0.3'.", "timesteps", text
        ) from None


class AceStep15Sampler(io.ComfyNode):
    TITLE = "ACE-Step 1.5 Sampler"

    @classmethod
    def define_schema(cls) -> io.Schema:
        from ...acestep_models.v15.prompts import TRACK_NAMES
        from ...acestep_models.v15.sampler import INFER_METHODS

        return io.Schema(
            node_id="AceStepFaithful15Sampler",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="The official ACE-Step 1.5 generation (generate_music): text2music, cover (from audio codes or "
            "a source audio), repaint (a window of the source, or past its ends), and on base models extract, lego "
            "and complete; with the DiT's own schedule (turbo: 8 fixed steps; base/sft: CFG with APG or ADG).",
            inputs=[
                DiT15.Input("dit", tooltip="The 1.5 DiT (its variant picks the schedule and guidance)."),
                Prompt15.Input("prompt", tooltip="ACE-Step 1.5 Encode Prompt."),
                io.Latent.Input("latent", tooltip="Batch size and length (ACE-Step 1.5 Empty Latent); with a source audio the length is the source's, as official. A noise mask on it (Set Latent Noise Mask) is the repaint window when no mask is connected."),
                seed_input("seed", "The starting noise of the first song (the official seed; further songs of a batch draw theirs from global_seed, as official, unless seed_list names them)."),
                io.Int.Input("steps", default=8, min=1, max=200, tooltip="inference_steps (official 8: turbo's fixed 8; base/sft often 32-50)."),
                io.Float.Input("shift", default=1.0, min=1.0, max=5.0, step=0.1, tooltip="Timestep shift (official 1.0; turbo takes 1, 2 or 3, others are rounded to the nearest)."),
                io.Float.Input("guidance_scale", default=7.0, min=1.0, max=30.0, step=0.1, tooltip="CFG scale of base and sft models (official 7.0); turbo uses none."),
                io.Combo.Input("infer_method", options=list(INFER_METHODS), default="ode", tooltip="ode (official default) or sde (renoises each step from global_seed)."),
                io.Combo.Input("task", options=list(TASKS), default="text2music", tooltip="What to make (official task_type). With audio_codes, text2music is a cover of the codes, as official."),
                Vae15.Input("vae", optional=True, tooltip="Needed to read source_audio and reference_audio."),
                io.Audio.Input("source_audio", optional=True, tooltip="The song to cover, repaint, extract from, add to (lego) or complete."),
                io.String.Input("audio_codes", optional=True, force_input=True, tooltip="5 Hz audio codes (<|audio_code_N|>..., from ACE-Step 1.5 Plan): the music is rendered from them (cover)."),
                io.Audio.Input("reference_audio", optional=True, tooltip="A song whose timbre to follow (official reference_audio)."),
                io.Mask.Input("mask", optional=True, tooltip="repaint / lego: the window to make, over the latent's frames (one region)."),
                io.String.Input("regions", optional=True, force_input=True, tooltip="repaint / lego: the window as one region from ACE-Step Load Audio's waveform (10-20; end-end+10 outpaints after the song, -5-0 before it). Wins over mask and the window below."),
                io.Float.Input("repainting_start", default=0.0, min=-MAX_SECONDS, max=MAX_SECONDS, step=0.01, tooltip="repaint / lego window start in seconds (negative: outpaint before the song), when no mask is given."),
                io.Float.Input("repainting_end", default=-1.0, min=-1.0, max=2 * MAX_SECONDS, step=0.01, tooltip="Window end in seconds (-1: the source's end; past it: outpaint after the song)."),
                io.Float.Input("audio_cover_strength", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="cover: the share of the steps that follow the source (official 1.0; below, the rest follow the prompt alone)."),
                io.Float.Input("cover_noise_strength", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="cover: start from the source noised this much instead of pure noise (official 0: off)."),
                io.Combo.Input("track_name", options=list(TRACK_NAMES), default="vocals", tooltip="extract / lego: the track (official track_name)."),
                io.String.Input("complete_tracks", default="", tooltip="complete: the tracks to add, comma separated (e.g. 'drums, bass'); empty: the official default instruction."),
                advanced(io.Boolean.Input("use_adg", default=False, tooltip="base/sft: ADG guidance instead of APG.")),
                advanced(io.Float.Input("cfg_interval_start", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="base/sft: guidance from this t (official 0).")),
                advanced(io.Float.Input("cfg_interval_end", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="base/sft: guidance up to this t (official 1).")),
                advanced(io.String.Input("timesteps", default="", tooltip="Custom timesteps, e.g. '0.97, 0.76, 0.5' (turbo snaps them to its 20 valid values; base ignores them; empty: off).")),
                advanced(io.String.Input("seed_list", default="", tooltip="Seeds per song, e.g. '42, 43' (official seed list; -1: random from global_seed). Empty: seed.")),
                advanced(io.Int.Input("global_seed", default=0, min=0, max=2**32 - 1, tooltip="Stands for the official global RNG: random seeds and durations, VAE sampling, SDE renoise, reference segments.")),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="The song's latents [batch, 64, frames] (core's 1.5 LATENT).")],
        )  # fmt: skip

    @classmethod
    @checks_numbers
    def execute(
        cls, dit, prompt, latent, seed: int, steps: int, shift: float, guidance_scale: float, infer_method: str,
        task: str, vae=None, source_audio=None, audio_codes: str | None = None, reference_audio=None, mask=None,
        repainting_start: float = 0.0, repainting_end: float = -1.0, audio_cover_strength: float = 1.0,
        cover_noise_strength: float = 0.0, track_name: str = "vocals", complete_tracks: str = "",
        use_adg: bool = False, cfg_interval_start: float = 0.0, cfg_interval_end: float = 1.0, timesteps: str = "",
        seed_list: str = "", global_seed: int = 0, regions: str | None = None,
    ) -> io.NodeOutput:  # fmt: skip
        from ...acestep_models.v15.pipeline import Models15, generate

        node = cls.TITLE
        if not isinstance(dit, DiT15Handle):
            raise node_error(
                node, "this is not an ACE-Step 1.5 DiT", "Connect ACE-Step 1.5 Load DiT.", "dit", type(dit)
            )
        if not isinstance(prompt, PromptText15):
            raise node_error(
                node,
                "this is not an ACE-Step 1.5 prompt",
                "Connect ACE-Step 1.5 Encode Prompt.",
                "prompt",
                type(prompt),
            )
        if vae is not None and not isinstance(vae, Vae15Handle):
            raise node_error(
                node, "this is not ACE-Step 1.5's VAE", "Connect ACE-Step 1.5 Load VAE.", "vae", type(vae)
            )
        samples = samples15(node, "latent", latent)
        batch, frames = samples.shape[0], samples.shape[-1]
        src, ref = (
            _audio(node, "source_audio", source_audio),
            _audio(node, "reference_audio", reference_audio),
        )
        codes = (audio_codes or "").strip()
        if task in SOURCE_TASKS and src is None:
            raise node_error(
                node, f"the {task} task needs the song to work on", "Connect source_audio.", "task", task
            )
        if task == "cover" and src is None and not codes:
            raise node_error(
                node,
                "cover needs a source audio or audio codes",
                "Connect source_audio or audio_codes.",
                "task",
                task,
            )
        if (src is not None or ref is not None) and vae is None:
            raise node_error(
                node, "reading audio needs the VAE", "Connect ACE-Step 1.5 Load VAE to vae.", "vae", None
            )
        if codes:
            from ...acestep_models.v15.audio_tokenizer import parse_codes

            n = len(parse_codes(codes))
            if n == 0:
                raise node_error(
                    node,
                    "no audio code in the text",
                    "Give codes like <|audio_code_123|> (from ACE-Step 1.5 Plan).",
                    "audio_codes",
                    codes,
                )
        if task in ("extract", "lego", "complete") and dit.variant != "base":
            raise node_error(
                node, f"{task} needs a base model (acestep-v15-base); this {dit.variant} model offers text2music, cover and repaint (official)",
                "Load the base DiT, or pick another task.", "task", task,
            )  # fmt: skip
        window = None
        if task in ("repaint", "lego"):
            noise_mask = latent.get("noise_mask") if isinstance(latent, dict) else None
            if (regions or "").strip():
                window = _region(node, "regions", regions, _seconds48(src))
            elif mask is not None:
                window = _window(node, "mask", mask, frames)
            elif noise_mask is not None:
                window = _window(node, "latent", noise_mask, frames)
        start, end = window if window else (repainting_start, repainting_end)
        params = {
            "captions": prompt.captions, "lyrics": prompt.lyrics, "vocal_language": prompt.vocal_language,
            "bpm": prompt.bpm, "key_scale": prompt.key_scale, "time_signature": prompt.time_signature,
            "inference_steps": steps, "guidance_scale": guidance_scale, "use_random_seed": False,
            "seed": seed_list.strip() or int(seed), "audio_duration": frames / FRAME_RATE, "batch_size": batch,
            "audio_code_string": codes, "repainting_start": start, "repainting_end": end,
            "audio_cover_strength": audio_cover_strength, "cover_noise_strength": cover_noise_strength,
            "task_type": task, "use_adg": use_adg, "cfg_interval_start": cfg_interval_start,
            "cfg_interval_end": cfg_interval_end, "shift": shift, "infer_method": infer_method,
            "timesteps": _timesteps(node, timesteps), "global_seed": int(global_seed),
        }  # fmt: skip
        if task in ("extract", "lego"):
            params["track_name"] = track_name
        if task == "complete" and complete_tracks.strip():
            params["complete_track_classes"] = [t.strip() for t in complete_tracks.split(",") if t.strip()]
        te = prompt.text_encoder
        handles = [dit, te] + ([vae] if vae is not None else [])
        mm.load_models_gpu([h.patcher for h in handles])
        model, device = dit.model, dit.device
        models = Models15(
            model, vae.model if vae is not None else None, te.model, te.tokenizer,
            dit.silence.to(device, model.dtype), dit.variant,
        )  # fmt: skip
        bar = comfy.utils.ProgressBar(steps)
        with explained(node, fix="Check the node's settings."):
            result = generate(
                models, params, src_audio=src, reference_audio=ref, decode=False,
                progress=lambda n, total: bar.update_absolute(n, total), interrupt=comfy_interrupted,
            )  # fmt: skip
        return io.NodeOutput(as_latent15(result.latents))


class AceStep15Decode(io.ComfyNode):
    TITLE = "ACE-Step 1.5 Latent to Audio"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithful15Decode",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="Decodes ACE-Step 1.5 latents to 48 kHz stereo with the Oobleck VAE (the official tiled "
            "decode and anti-clipping), then scales each song to a peak of -1 dBFS as the official app does.",
            inputs=[
                Vae15.Input("vae", tooltip="ACE-Step 1.5 Load VAE."),
                io.Latent.Input("latent", tooltip="ACE-Step 1.5 latents (the sampler's, or core's)."),
                io.Boolean.Input("normalize", default=True, tooltip="Scale each song to the peak below (the official app's enable_normalization, on by default; the handler alone does not)."),
                advanced(io.Float.Input("normalization_db", default=-1.0, min=-60.0, max=0.0, step=0.1, tooltip="The peak in dBFS (official -1).")),
                advanced(io.Boolean.Input("tiled", default=True, tooltip="The official tiled decode (use_tiled_decode): bounded memory for long songs.")),
                advanced(io.Float.Input("latent_shift", default=0.0, min=-10.0, max=10.0, step=0.01, tooltip="Official latent_shift, added before decoding.")),
                advanced(io.Float.Input("latent_rescale", default=1.0, min=0.0, max=10.0, step=0.01, tooltip="Official latent_rescale, applied before decoding.")),
            ],
            outputs=[io.Audio.Output(display_name="audio")],
        )  # fmt: skip

    @classmethod
    @checks_numbers
    def execute(
        cls, vae, latent, normalize: bool = True, normalization_db: float = -1.0, tiled: bool = True,
        latent_shift: float = 0.0, latent_rescale: float = 1.0,
    ) -> io.NodeOutput:  # fmt: skip
        from ...acestep_models.v15.pipeline import SAMPLE_RATE, normalize_peak

        node = cls.TITLE
        if not isinstance(vae, Vae15Handle):
            raise node_error(
                node, "this is not ACE-Step 1.5's VAE", "Connect ACE-Step 1.5 Load VAE.", "vae", type(vae)
            )
        samples = samples15(node, "latent", latent, dim=vae.model.config.latent_channels)
        vae.load()
        model = vae.model  # (after the load: a core VAE's view follows its tensors)
        with explained(node, fix="Check the node's settings."):  # the batch at once, as the official decode
            z = samples.transpose(1, 2).to(model.device)
            wavs = model.latents_to_audio(z, latent_rescale, latent_shift, tiled=tiled).float().cpu()
        if normalize:
            wavs = torch.stack([normalize_peak(w, normalization_db) for w in wavs])
        return io.NodeOutput({"waveform": wavs.to(mm.intermediate_device()), "sample_rate": SAMPLE_RATE})


NODES = [AceStep15EmptyLatent, AceStep15Sampler, AceStep15Decode]
