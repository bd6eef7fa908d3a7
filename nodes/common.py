"""What every node file shares: our socket types, the model handles ComfyUI's memory manager drives, the model
folders, dtype choice and errors written for people.

Nothing here touches a file or loads a model at import (the engine's modules are imported for their constants:
plain Python and torch, which ComfyUI has loaded already), so loading the pack costs ComfyUI almost nothing.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import folder_paths
import torch
from comfy_api.latest import io

from ..acestep_models.v1.music_dcae import LATENT_SHAPE

CATEGORY = "audio/ACE-Step"

# Our objects travel between nodes on these sockets (ComfyUI passes them through untouched).
DiT = io.Custom("ACESTEP_DIT")
Vae = io.Custom("ACESTEP_VAE")
TextEncoder = io.Custom("ACESTEP_TEXT_ENCODER")
LyricTokenizer = io.Custom("ACESTEP_LYRIC_TOKENIZER")
Speaker = io.Custom("ACESTEP_SPEAKER")

LATENT_CHANNELS, LATENT_HEIGHT = (
    LATENT_SHAPE  # ACE-Step latents [B, 8, 16, T], as ComfyUI's native ACE latents
)
# The longest latent a node makes or takes (ComfyUI's EmptyAceStepLatentAudio allows the same); the official pipeline
# samples at most 240 s at once (acestep_models.v1.sampler.WINDOW_SECONDS).
MAX_LATENT_SECONDS = 1000.0


# --- Errors for people -------------------------------------------------------------------------------------------


class AceStepError(ValueError):
    """A problem the user can fix: which node, which input and value, what to do. ComfyUI shows the message."""


def node_error(node: str, problem: str, fix: str = "", input: str | None = None, value=None) -> AceStepError:
    where = f"{node}: input '{input}' = {_show(value)}: " if input is not None else f"{node}: "
    return AceStepError(where + problem.rstrip(".") + "." + (f" {fix}" if fix else ""))


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "...'"


@contextlib.contextmanager
def explained(node: str, input: str | None = None, value=None, fix: str = "") -> Iterator[None]:
    """Re-raise the engine's errors (missing file, wrong weights, ...) with the node, input and value in front.

    Interruptions and out-of-memory errors pass unchanged: ComfyUI handles those itself."""
    try:
        yield
    except (mm.InterruptProcessingException, torch.OutOfMemoryError, AceStepError):
        raise
    except Exception as e:
        # The engine writes its ValueError/OSError messages for people; anything else needs its type to make sense.
        plain = isinstance(e, (ValueError, OSError))
        raise node_error(node, str(e) if plain else f"{type(e).__name__}: {e}", fix, input, value) from e


# --- Numbers, checked where they enter -------------------------------------------------------------------------


def check_number(node: str, input: str, value, low: float | None = None, high: float | None = None) -> float:
    """A FLOAT input as it enters a node: a finite number within [low, high], else an error naming the node, the
    input and the value. ComfyUI checks typed-in widget values against min/max, but NaN passes those checks (every
    comparison with NaN is false), and values that arrive over a link (a Float primitive, a math node) are not
    checked at all: unchecked, a NaN ran a whole sampling to fail at the decoder with a hint about dtypes."""
    span = _span(low, high)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise node_error(
            node, f"this is not a number but {type(value).__name__}", f"Give a number {span}.", input, value
        )
    if math.isnan(value):
        raise node_error(node, "not a number (NaN)", f"Give a number {span}.", input, value)
    if math.isinf(value):
        raise node_error(node, "an infinite number", f"Give a number {span}.", input, value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise node_error(node, "out of range", f"Give a number {span}.", input, value)
    return float(value)


def _span(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"from {low:g} to {high:g}"
    if low is not None:
        return f"of {low:g} or more"
    return f"of {high:g} or less" if high is not None else "(finite)"


def checks_numbers(execute: Callable) -> Callable:
    """Decorates a node's ``execute`` (below ``@classmethod``): every FLOAT input it is called with goes through
    ``check_number`` against the min/max the node's schema declares, before the node does anything else. New FLOAT
    inputs are covered by declaring them; nothing is listed twice."""
    signature = inspect.signature(execute)
    ranges: dict[str, tuple[float | None, float | None]] = {}

    @functools.wraps(execute)
    def checked(cls, *args, **kwargs):
        if not checked.read_schema:  # once (ComfyUI runs each prompt on a fresh clone of the class)
            floats = [i for i in cls.define_schema().inputs if isinstance(i, io.Float.Input)]
            ranges.update({i.id: (i.min, i.max) for i in floats})
            checked.read_schema = True
        given = signature.bind_partial(cls, *args, **kwargs).arguments
        for name, (low, high) in ranges.items():
            if given.get(name) is not None:
                check_number(cls.TITLE, name, given[name], low, high)
        return execute(cls, *args, **kwargs)

    checked.read_schema = False
    return checked


def comfy_interrupted() -> bool:
    """The engine's ``interrupt()`` callback (asked before every step or token): ComfyUI's Cancel raises its own
    exception, which ends the run; otherwise go on."""
    mm.throw_exception_if_processing_interrupted()
    return False


def advanced(inp: io.Input) -> io.Input:
    """Mark an expert knob (newer ComfyUI frontends fold these away; older ones ignore the flag)."""
    inp.extra_dict["advanced"] = True
    return inp


# --- Model folders -----------------------------------------------------------------------------------------------

ACESTEP_FOLDER = "acestep"  # official Hugging Face folders (ACE-Step-v1-3.5B/...) and single files
SPEAKER_FOLDER = "acestep_speakers"  # speaker embeddings (.safetensors / .npy with one 512-d vector)
WEIGHT_SUFFIX = ".safetensors"  # the only weights we load (pickles run code)
SPEAKER_SUFFIXES = (".safetensors", ".npy")
OFFICIAL_PART_DIRS = ("ace_step_transformer", "music_dcae_f8c8", "music_vocoder", "umt5-base")
OFFICIAL15_PART_GLOBS = ("acestep-v15-*", "acestep-5Hz-lm-*")  # ACE-Step 1.5's Ace-Step1.5/ (or checkpoints/)

# ComfyUI's own folders a part may sit in (the all-in-one file in checkpoints/ holds every part).
PART_FOLDERS = {
    "dit": ("diffusion_models", "checkpoints"),
    "vae": ("vae", "checkpoints"),
    "text_encoder": ("text_encoders", "checkpoints"),
    "checkpoint": ("checkpoints",),
    "lm": ("text_encoders", "checkpoints"),  # ACE-Step 1.5's 5 Hz LM (ComfyUI: text_encoders/qwen_1.7b_ace15)
}


def register_model_folders() -> None:
    """Add our folders to ComfyUI's registry, extending what extra_model_paths.yaml may already have set up."""
    for name, suffixes in ((ACESTEP_FOLDER, {WEIGHT_SUFFIX}), (SPEAKER_FOLDER, set(SPEAKER_SUFFIXES))):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
        paths, exts = folder_paths.folder_names_and_paths[name]
        folder_paths.folder_names_and_paths[name] = (paths, set(exts) | suffixes)


def _is_model_dir(d: Path) -> bool:
    """An official folder (holds part folders) or one part's folder (config.json and weights)."""
    if any((d / part).is_dir() for part in OFFICIAL_PART_DIRS):
        return True
    return (d / "config.json").is_file() and any(d.glob("*" + WEIGHT_SUFFIX))


def acestep_entries(max_depth: int = 3) -> list[str]:
    """Model folders and .safetensors files under the ``acestep`` folder(s), relative (``ACE-Step-v1-3.5B``)."""
    found: set[str] = set()
    for root in folder_paths.get_folder_paths(ACESTEP_FOLDER):
        root = Path(root)
        if not root.is_dir():
            continue
        for here, dirs, files in os.walk(root, followlinks=True):
            here = Path(here)
            rel = here.relative_to(root)
            if rel.parts and _is_model_dir(here):
                found.add(rel.as_posix())
                dirs.clear()
                continue
            if rel.parts and any(any(here.glob(g)) for g in OFFICIAL15_PART_GLOBS):
                # a 1.5 root: it, and each of its part folders (one root holds many DiTs)
                found.add(rel.as_posix())
            found.update((rel / f).as_posix() for f in files if f.lower().endswith(WEIGHT_SUFFIX))
            if len(rel.parts) >= max_depth:
                dirs.clear()
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(found)


def model_choices(kind: str) -> list[str]:
    """Combo options for a loader, as core names them: each matching file relative to its model folder (folders in
    ``PART_FOLDERS[kind]`` order; a name in two folders is listed once and loads from the first), then the entries
    of ``acestep/`` (official folders and files) relative to it."""
    out: dict[str, None] = {}
    for folder in PART_FOLDERS[kind]:
        out.update(
            dict.fromkeys(
                n for n in folder_paths.get_filename_list(folder) if n.lower().endswith(WEIGHT_SUFFIX)
            )
        )
    out.update(dict.fromkeys(acestep_entries()))
    return list(out)


def _in_acestep(rel: str) -> Path | None:
    for root in folder_paths.get_folder_paths(ACESTEP_FOLDER):
        cand = Path(root) / rel
        inside = os.path.commonpath([os.path.abspath(root), os.path.abspath(cand)]) == os.path.abspath(root)
        if rel and inside and cand.exists():
            return cand
    return None


# Where a plain name is looked for, in order: every folder a loader lists, then acestep/.
SEARCH_FOLDERS = ("diffusion_models", "vae", "text_encoders", "checkpoints")


# FILE_NAMES_CHECKED: a loader's ``validate_inputs`` names its file inputs, so ComfyUI (0.20 checks every combo value
# before a prompt runs) leaves them to ``resolve_model``: a missing model gets our message saying where to put it,
# not "Value not in list", and a saved workflow naming a file under another folder still reaches the loader.
def resolve_model(node: str, input: str, value: str) -> Path:
    """A loader option back to the file or folder it names: a plain name (``acestep_v1.5_turbo.safetensors``,
    ``Ace-Step1.5``), or, as workflows saved before 0.3 hold them, one with its folder in front
    (``diffusion_models/...``, ``acestep/...``)."""
    value = value.replace("\\", "/")
    folder, _, rel = value.partition("/")
    path = None
    if folder == ACESTEP_FOLDER:  # (saved before 0.3)
        path = _in_acestep(rel)
    elif folder in folder_paths.folder_names_and_paths and rel:
        full = folder_paths.get_full_path(folder, rel)
        path = Path(full) if full else None
    if path is None and value:
        for name in SEARCH_FOLDERS:
            full = folder_paths.get_full_path(name, value)
            if full:
                path = Path(full)
                break
        else:
            path = _in_acestep(value)
    if path is None:
        where = "; ".join(f"models/{f}/" for f in (*SEARCH_FOLDERS, ACESTEP_FOLDER))
        fix = (
            f"Put it in one of ComfyUI's model folders ({where} or their extra_model_paths.yaml places) and refresh "
            "the node list (R), then pick it from the list."
        )
        raise node_error(node, "no such model file or folder", fix, input, value)
    return path


def speaker_choices() -> list[str]:
    return [n for n in folder_paths.get_filename_list(SPEAKER_FOLDER) if n.lower().endswith(SPEAKER_SUFFIXES)]


def vocab_choices(max_depth: int = 4) -> list[str]:
    """``vocab.json`` files under the ``acestep`` folder(s), relative to it (``ACE-Step-v1-3.5B/.../vocab.json``)."""
    found = set()
    for root in folder_paths.get_folder_paths(ACESTEP_FOLDER):
        root = Path(root)
        if not root.is_dir():
            continue
        for here, dirs, files in os.walk(root, followlinks=True):
            rel = Path(here).relative_to(root)
            if "vocab.json" in files:
                found.add((rel / "vocab.json").as_posix())
            if len(rel.parts) >= max_depth:
                dirs.clear()
    return sorted(found)


# --- dtype ---------------------------------------------------------------------------------------------------------

DTYPE_CHOICES = ["auto", "bf16", "fp16", "fp32"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def pick_dtype(choice: str, kind: str, device: torch.device) -> torch.dtype:
    """The weights' dtype: the user's choice, or what ComfyUI's settings and the device suit for this part.

    ``auto``: float32 on CPU; on GPUs bfloat16 where it is fast (the official precision), else float32 for the DiT
    (ComfyUI runs ACE-Step's DiT in bf16 or fp32 only) and float16 for the VAE and text encoder. ComfyUI's
    ``--fp32-unet``, ``--bf16-vae``, ``--fp16-text-enc``... flags are honoured."""
    if choice != "auto":
        return _DTYPES[choice]
    if kind == "dit":
        return mm.unet_dtype(device=device, supported_dtypes=[torch.bfloat16, torch.float32])
    if kind == "vae":
        return mm.vae_dtype(device=device, allowed_dtypes=[torch.bfloat16, torch.float16])
    if mm.is_device_cpu(device):
        forced = mm.text_encoder_dtype(device)
        cli = mm.args
        return forced if (cli.fp16_text_enc or cli.bf16_text_enc or cli.fp32_text_enc) else torch.float32
    return torch.bfloat16 if mm.should_use_bf16(device) else mm.text_encoder_dtype(device)


# --- Layers ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _borrow(layer: torch.nn.Module, like: torch.Tensor) -> Iterator[torch.Tensor]:
    """A comfy.ops layer's weight, fetched as its own forward fetches it (from where the model manager keeps it:
    an offloaded layer, dynamic VRAM's staging), for math outside that forward (our tied LM head)."""
    if not (layer.comfy_cast_weights or layer.weight_function or layer.bias_function):
        yield layer.weight.to(device=like.device, dtype=like.dtype)
        return
    weight, bias, stream = comfy.ops.cast_bias_weight(layer, like, offloadable=True)
    try:
        yield weight
    finally:
        comfy.ops.uncast_bias_weight(layer, weight, bias, stream)


def _host_operations(base: type) -> type:
    """ComfyUI's layer set ``base`` plus ``borrow`` (see acestep_models.common.ops)."""
    return type(f"AceStep_{base.__name__}", (base,), {"borrow": staticmethod(_borrow)})


# comfy.ops layers behave as torch.nn ones until the model manager streams a layer's weights (lowvram, dynamic VRAM):
# then they cast per call. Our weights are kept in the compute dtype, so no manual cast is needed otherwise; float8
# storage and views over core's tensors (whatever dtype core keeps) cast on every call.
OPERATIONS = _host_operations(comfy.ops.disable_weight_init)
CAST_OPERATIONS = _host_operations(comfy.ops.manual_cast)


# --- Model handles ---------------------------------------------------------------------------------------------------


@dataclass
class ModelHandle:
    """A torch model in ComfyUI's care: ``patcher`` moves it to ``device`` when a node needs it and back (or out of
    memory) when something else does; ``--lowvram`` streams the layers built with ``comfy.ops``."""

    patcher: comfy.model_patcher.ModelPatcher
    source: str  # the file or folder it came from (for messages)
    dtype: torch.dtype
    # where the patcher's module holds ours (LoRA patch keys): core's MODEL keeps its DiT under diffusion_model
    patch_prefix: ClassVar[str] = ""

    @property
    def model(self) -> torch.nn.Module:
        return self.patcher.model

    @property
    def device(self) -> torch.device:
        return self.patcher.load_device

    def load(self, memory_required: int = 0) -> torch.nn.Module:
        """The model, on its compute device (what does not fit stays offloaded, cast per layer as it runs)."""
        mm.load_models_gpu([self.patcher], memory_required=memory_required)
        return self.model

    @staticmethod
    def wrap(
        model: torch.nn.Module, load_device, offload_device, dynamic: bool = True
    ) -> comfy.model_patcher.ModelPatcher:
        """``model`` in the patcher class ComfyUI gives its own models: ``CoreModelPatcher`` (0.18+; dynamic VRAM on
        NVIDIA, the plain ModelPatcher elsewhere), looked up when called (ComfyUI's main.py picks it at start-up), or
        the ModelPatcher of an older ComfyUI. ``dynamic=False``: the plain ModelPatcher, which loads the weights
        whole where they fit (the LM: its token loop replays one CUDA graph per token, which needs them resident,
        where dynamic VRAM fetches every layer's weights on every call)."""
        plain = comfy.model_patcher.ModelPatcher
        patcher = getattr(comfy.model_patcher, "CoreModelPatcher", plain) if dynamic else plain
        return patcher(model, load_device=load_device, offload_device=offload_device)


def core_module(
    node: str,
    input: str,
    given,
    path: str,
    accepts: Callable[[object], bool],
    wanted: str,
    fix: str,
    describe: Callable[[object], str] | None = None,
) -> torch.nn.Module:
    """The module core keeps in ``given`` (a MODEL, VAE or CLIP) at ``path`` (``model.diffusion_model``), when
    ``accepts`` it; else an error naming what ``input`` holds instead (``describe(module)``, default its class)."""
    inner = given
    for name in path.split("."):
        inner = getattr(inner, name, None)
    if inner is None or not accepts(inner):
        what = (
            type(given).__name__ if inner is None else describe(inner) if describe else type(inner).__name__
        )
        raise node_error(node, f"this {input.upper()} holds {what}, not {wanted}", fix, input, what)
    return inner


def in_module(name: str) -> Callable[[object], bool]:
    """``accepts`` for ``core_module``: a class defined in core's module ``name``."""
    return lambda m: type(m).__module__ == name


def full_precision_dtype(node: str, input: str, modules: list[torch.nn.Module], fix: str) -> torch.dtype:
    """The dtype of core's modules given on ``input``, which our views compute in; float8 storage (core's fp8
    files) is refused with ``fix``."""
    weights = [p for m in modules for p in m.parameters()]
    if any(p.dtype not in (torch.float32, torch.bfloat16, torch.float16) for p in weights):
        raise node_error(node, f"this {input.upper()} keeps its weights in float8", fix, input, input.upper())
    return weights[0].dtype


@dataclass
class OverCoreTensors:
    """A handle over a core model's own tensors: ``model`` is our module built over whatever tensors core's module
    holds right now (no copy), rebuilt when ComfyUI has swapped them (moved, patched). The view is not copied by
    ``dataclasses.replace`` (e.g. a LoRA's patched clone builds its own)."""

    _view: torch.nn.Module | None = field(default=None, init=False, repr=False)
    _bound: tuple = field(default=(), init=False, repr=False)

    def _over(self, module: torch.nn.Module, build, buffers: bool = False) -> torch.nn.Module:
        params = dict(module.named_parameters()) | (dict(module.named_buffers()) if buffers else {})
        bound = tuple(id(p) for p in params.values())
        if self._view is None or bound != self._bound:
            self._view, self._bound = build(params, operations=CAST_OPERATIONS), bound
        return self._view


@dataclass
class AceStepDiT(ModelHandle):
    """The ACE-Step transformer (with its lyric encoder): ``acestep_models.v1.dit.ACEStepTransformer``."""

    @property
    def config(self):
        return self.model.config


@dataclass
class CoreAceStepDiT(OverCoreTensors, AceStepDiT):
    """ComfyUI's own ACE-Step DiT (a core MODEL from Load Checkpoint on ace_step_v1_3.5b.safetensors, or Load
    Diffusion Model) seen as ours, over the same tensors. ComfyUI's patcher moves and patches them (its LoRA loaders
    too)."""

    patch_prefix: ClassVar[str] = "diffusion_model."

    @property
    def model(self) -> torch.nn.Module:
        from ..acestep_models.v1.checkpoint import dit_over

        inner = self.patcher.model.diffusion_model
        return self._over(inner, lambda sd, **kw: dit_over(sd, heads=inner.num_attention_heads, **kw))


@dataclass
class AceStepVAE(ModelHandle):
    """Music DCAE + vocoder: audio <-> latents [B, 8, 16, T] (``acestep_models.v1.music_dcae.MusicDCAE``)."""

    def encode(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Audio [B, C, N] (C = 1 or 2) -> latents [B, 8, 16, T] float32 on ComfyUI's intermediate device."""
        from ..acestep_models.v1.music_dcae import DCAE_WINDOW, SAMPLES_PER_FRAME, VAE_SAMPLE_RATE

        n44 = waveform.shape[-1] * VAE_SAMPLE_RATE // max(sample_rate, 1)
        # ComfyUI's memory estimate for its ACE VAE, over one encoder window
        need = min(n44, DCAE_WINDOW * SAMPLES_PER_FRAME) * 330 * mm.dtype_size(self.dtype)
        model = self.load(memory_required=need)
        out = []
        for one in waveform:
            mm.throw_exception_if_processing_interrupted()
            out.append(
                model.encode(one[None].to(self.device), sample_rate=sample_rate).to(mm.intermediate_device())
            )
        return torch.cat(out)

    def decode(self, latents: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Latents [B, 8, 16, T] -> audio [B, 2, N] float32 at ``sample_rate`` on the intermediate device."""
        from ..acestep_models.v1.music_dcae import DCAE_WINDOW

        need = min(latents.shape[-1], DCAE_WINDOW) * LATENT_HEIGHT * 87000 * mm.dtype_size(self.dtype)
        model = self.load(memory_required=need)
        out = []
        for one in latents:
            mm.throw_exception_if_processing_interrupted()
            z = one[None].to(self.device, torch.float32)
            out.append(model.decode(z, sample_rate=sample_rate).float().to(mm.intermediate_device()))
        return torch.cat(out)


@dataclass
class CoreAceStepVAE(OverCoreTensors, AceStepVAE):
    """ComfyUI's own ACE-Step VAE (a core VAE from Load Checkpoint on ace_step_v1_3.5b.safetensors, or Load VAE)
    seen as ours, over the same tensors (its mel front end's buffers too)."""

    @property
    def model(self) -> torch.nn.Module:
        from ..acestep_models.v1.checkpoint import vae_over

        return self._over(self.patcher.model, vae_over, buffers=True)


@dataclass
class AceStepTextEncoder(ModelHandle):
    """UMT5 encoder and its tokenizer (``acestep_models.v1.text_encoder``)."""

    tokenizer: object = None


@dataclass
class CoreAceStepTextEncoder(OverCoreTensors, AceStepTextEncoder):
    """The UMT5 of ComfyUI's own ACE-Step CLIP (Load Checkpoint on ace_step_v1_3.5b.safetensors, Load CLIP type ace)
    seen as ours, over the same tensors."""

    @property
    def model(self) -> torch.nn.Module:
        from ..acestep_models.v1.checkpoint import text_encoder_over

        return self._over(self.patcher.model.umt5base.transformer, text_encoder_over)


@dataclass
class SpeakerEmbedding:
    """The DiT's speaker input. ``embedding`` None means zeros, as the official release always feeds."""

    embedding: torch.Tensor | None  # [D]
    source: str = "zeros"


# --- ComfyUI's data types --------------------------------------------------------------------------------------------


def as_latent(samples: torch.Tensor) -> dict:
    """Latents [B, 8, 16, T] as ComfyUI's LATENT (float32 on the intermediate device, as core's latents)."""
    return {"samples": samples.float().to(mm.intermediate_device()), "type": "audio"}


def check_latent(node: str, input: str, latent: dict) -> torch.Tensor:
    """An ACE-Step LATENT's samples [B, 8, 16, T], or an error saying what was connected instead."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor):
        raise node_error(
            node, "this is not a LATENT", "Connect a latent from an ACE-Step node.", input, type(latent)
        )
    if samples.ndim != 4 or samples.shape[1] != LATENT_CHANNELS or samples.shape[2] != LATENT_HEIGHT:
        raise node_error(
            node,
            f"the latent has shape {list(samples.shape)}, not ACE-Step's [batch, 8, 16, frames] (is it an image "
            "or another audio model's latent?)",
            "Connect a latent from ACE-Step Empty Latent, ACE-Step Audio to Latent or EmptyAceStepLatentAudio.",
            input,
            "LATENT",
        )
    if samples.shape[-1] == 0:
        raise node_error(
            node, "the latent has no frames", "Give it a duration above 0 seconds.", input, "LATENT"
        )
    return samples


def check_audio(
    node: str,
    input: str,
    audio: dict,
    max_channels: int | None = None,
    value="AUDIO",
    source: str | None = None,
) -> tuple[torch.Tensor, int]:
    """ComfyUI's AUDIO ``{"waveform": [B, C, N], "sample_rate": int}`` -> (waveform float32, rate), checked.

    ``value`` is what the messages show for the input (e.g. the file name); ``source`` says where bad samples came
    from ("the file"; default: the node upstream)."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise node_error(
            node, "this is not an AUDIO", "Connect an AUDIO output (e.g. Load Audio).", input, type(audio)
        )
    wav, rate = audio["waveform"], int(audio["sample_rate"])
    if not isinstance(wav, torch.Tensor) or wav.ndim != 3:
        shape = list(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__
        raise node_error(node, f"the waveform is {shape}, not [batch, channels, samples]", "", input, value)
    if rate <= 0:
        raise node_error(
            node, f"the sample rate is {rate} Hz", "The audio needs a positive sample rate.", input, value
        )
    if wav.shape[-1] == 0 or wav.shape[0] == 0 or wav.shape[1] == 0:
        raise node_error(
            node,
            f"the audio is empty (waveform {list(wav.shape)})",
            "Check the file, or the trim/start/duration settings upstream.",
            input,
            value,
        )
    if max_channels is not None and wav.shape[1] > max_channels:
        raise node_error(
            node,
            f"the audio has {wav.shape[1]} channels; ACE-Step takes mono or stereo",
            "Mix it down to stereo first (e.g. with core Split Audio Channels / Join Audio Channels).",
            input,
            value,
        )
    wav = wav.float()
    if not torch.isfinite(wav).all():
        bad = int((~torch.isfinite(wav)).sum())
        raise node_error(
            node,
            f"the audio holds {bad} NaN/inf samples",
            f"Fix {source} first." if source else "Fix the node that made it (or its dtype) first.",
            input,
            value,
        )
    return wav, rate
