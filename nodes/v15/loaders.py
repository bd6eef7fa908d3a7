"""ACE-Step 1.5 loaders: the DiT (turbo, base, sft), the Oobleck VAE, the Qwen3-Embedding text encoder, the 5 Hz
LM, and DiT + VAE + text encoder at once.

Each takes every layout ``acestep_models.v15.checkpoint`` reads: the official ``Ace-Step1.5/`` folder (or one of
its part folders, ``acestep-v15-turbo/`` ...) in ``models/acestep/``, ComfyUI's repackaged split files
(``diffusion_models/acestep_v1.5_turbo.safetensors``, ``vae/ace_1.5_vae.safetensors``,
``text_encoders/qwen_0.6b_ace15.safetensors``, ``text_encoders/qwen_1.7b_ace15.safetensors``) and its all-in-one
file in ``checkpoints/``.
"""

from __future__ import annotations

from pathlib import Path

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from ..common import (
    CAST_OPERATIONS,
    OPERATIONS,
    ModelHandle,
    core_module,
    explained,
    full_precision_dtype,
    in_module,
    model_choices,
    node_error,
    pick_dtype,
    resolve_model,
)
from ..loaders import DEFAULT_STORAGE, _dtype_input, _files_tooltip, _weight_dtype_input
from .handles import (
    CATEGORY15,
    LM15,
    CoreDiT15Handle,
    CoreLM15Handle,
    CoreTextEncoder15Handle,
    CoreVae15Handle,
    DiT15,
    DiT15Handle,
    LM15Handle,
    TextEncoder15,
    TextEncoder15Handle,
    Vae15,
    Vae15Handle,
)

AUTO = "auto"
VARIANT_TOOLTIP = (
    "Which official sampler the DiT was trained for. auto: from its config.json (is_turbo, model_version) or its "
    "name (acestep-v15-turbo / -base / -sft); turbo otherwise. turbo: 8 fixed steps, no CFG; base and sft: a "
    "linspace schedule with CFG (APG), and base alone runs extract, lego and complete."
)
SILENCE_FRAMES = 15000  # 600 s at 25 Hz: longer than any song the DiT makes (the slices taken stay inside it)


def _variant_input() -> io.Input:
    from ...acestep_models.v15.sampler import VARIANTS

    return io.Combo.Input("variant", options=[AUTO, *VARIANTS], default=AUTO, tooltip=VARIANT_TOOLTIP)


def silence_latent(node: str, input: str, value: str, path: Path | None, dim: int) -> torch.Tensor:
    """The DiT's ``silence_latent.pt`` [1, T, D] (official folders hold it); ComfyUI's repackaged files come without
    one, so there it is core's built-in copy (``comfy.ldm.ace.ace_step15.get_silence_latent``, ComfyUI 0.8+), which
    rounds the official one (results differ slightly from the official code; the file beside the DiT fixes that)."""
    from ...acestep_models.v15.checkpoint import SILENCE_LATENT, load_silence_latent

    silence = load_silence_latent(path) if path is not None else None
    if silence is None:
        try:
            from comfy.ldm.ace.ace_step15 import get_silence_latent
        except ImportError:
            get_silence_latent = None
        if get_silence_latent is not None and dim == 64:
            silence = get_silence_latent(SILENCE_FRAMES, "cpu").transpose(1, 2).float()
    if silence is None:
        raise node_error(
            node,
            f"no {SILENCE_LATENT} beside the DiT (the official acestep-v15-* folder holds it; this ComfyUI has no "
            "built-in copy for it)",
            f"Put the official {SILENCE_LATENT} beside the file, or load the official folder.",
            input,
            value,
        )
    if silence.shape[-1] != dim:
        raise node_error(
            node,
            f"{SILENCE_LATENT} holds {silence.shape[-1]} channels, the DiT's latents {dim}",
            "",
            input,
            value,
        )
    return silence


def load_dit15(
    node: str, input: str, value: str, variant: str, dtype_choice: str, storage_choice: str
) -> DiT15Handle:

    from ...acestep_models.common.ops import STORAGE_DTYPES
    from ...acestep_models.v15.checkpoint import load_dit
    from ...acestep_models.v15.pipeline import detect_variant

    path = resolve_model(node, input, value)
    device, offload = mm.get_torch_device(), mm.unet_offload_device()
    dtype = pick_dtype(dtype_choice, "dit", device)
    storage = STORAGE_DTYPES.get(storage_choice)
    operations = OPERATIONS if storage is None else CAST_OPERATIONS
    fix = "Pick an ACE-Step 1.5 DiT: the official acestep-v15-* folder, ComfyUI's acestep_v1.5_*.safetensors or its all-in-one file."
    with explained(node, input, value, fix):
        model = load_dit(
            path, dtype=dtype, device=offload, operations=operations, weight_dtype=storage
        ).eval()
        variant = detect_variant(path) if variant == AUTO else variant
    silence = silence_latent(node, input, value, path, model.config.audio_acoustic_hidden_dim)
    return DiT15Handle(ModelHandle.wrap(model, device, offload), str(path), dtype, variant, silence)


def load_vae15(node: str, input: str, value: str, dtype_choice: str, path: Path | None = None) -> Vae15Handle:
    from ...acestep_models.v15.checkpoint import load_vae

    path = path or resolve_model(node, input, value)
    device, offload = mm.vae_device(), mm.vae_offload_device()
    dtype = pick_dtype(dtype_choice, "vae", device)
    fix = "Pick ACE-Step 1.5's Oobleck VAE: the official vae/ folder, ComfyUI's ace_1.5_vae.safetensors or its all-in-one file."
    with explained(node, input, value, fix):
        model = load_vae(path, dtype=dtype, device=offload, operations=OPERATIONS).eval()
    return Vae15Handle(ModelHandle.wrap(model, device, offload), str(path), dtype)


def load_text_encoder15(
    node: str, input: str, value: str, dtype_choice: str, path: Path | None = None
) -> TextEncoder15Handle:
    from ...acestep_models.v15.checkpoint import load_text_encoder

    path = path or resolve_model(node, input, value)
    device, offload = mm.text_encoder_device(), mm.text_encoder_offload_device()
    dtype = pick_dtype(dtype_choice, "text_encoder", device)
    fix = (
        "Pick ACE-Step 1.5's text encoder: the official Qwen3-Embedding-0.6B folder, ComfyUI's "
        "qwen_0.6b_ace15.safetensors or its all-in-one file."
    )
    with explained(node, input, value, fix):
        model, tokenizer = load_text_encoder(path, dtype=dtype, device=offload, operations=OPERATIONS)
    return TextEncoder15Handle(ModelHandle.wrap(model.eval(), device, offload), str(path), dtype, tokenizer)


def load_lm15(node: str, input: str, value: str, dtype_choice: str, storage_choice: str) -> LM15Handle:

    from ...acestep_models.common.ops import STORAGE_DTYPES
    from ...acestep_models.v15.checkpoint import load_lm

    path = resolve_model(node, input, value)
    device, offload = mm.text_encoder_device(), mm.text_encoder_offload_device()
    dtype = pick_dtype(dtype_choice, "text_encoder", device)
    storage = STORAGE_DTYPES.get(storage_choice)
    operations = OPERATIONS if storage is None else CAST_OPERATIONS
    fix = (
        "Pick ACE-Step 1.5's 5 Hz LM: the official acestep-5Hz-lm-* folder, ComfyUI's qwen_1.7b_ace15 / qwen_4b_ace15 "
        "file or its all-in-one file."
    )
    with explained(node, input, value, fix):
        model, tokenizer = load_lm(
            path, dtype=dtype, device=offload, operations=operations, weight_dtype=storage
        )
    patcher = ModelHandle.wrap(model.eval(), device, offload, dynamic=False)  # (see wrap)
    return LM15Handle(patcher, str(path), dtype, tokenizer)


# --- nodes -----------------------------------------------------------------------------------------------------------


def _dit_out():
    return DiT15.Output(
        display_name="dit", tooltip="The 1.5 DiT (with its condition encoder and FSQ tokenizer)."
    )


def _vae_out():
    return Vae15.Output(display_name="vae", tooltip="The Oobleck VAE: 48 kHz stereo <-> 25 Hz latents.")


def _te_out():
    return TextEncoder15.Output(
        display_name="text_encoder", tooltip="Qwen3-Embedding-0.6B and its tokenizer."
    )


class AceStep15DiTLoader(io.ComfyNode):
    TITLE = "ACE-Step 1.5 Load DiT"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithful15DiTLoader",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="Loads an ACE-Step 1.5 DiT (turbo, base, sft) with its condition encoder and FSQ tokenizer.",
            inputs=[
                io.Combo.Input(
                    "dit_name", options=model_choices("dit"), tooltip=_files_tooltip("dit", "The DiT.")
                ),
                _variant_input(),
                _dtype_input(),
                _weight_dtype_input(),
            ],
            outputs=[_dit_out()],
        )

    @classmethod
    def validate_inputs(cls, dit_name: str) -> bool:
        return True  # names are checked when the node runs, with the fix (common.FILE_NAMES_CHECKED)

    @classmethod
    def execute(
        cls, dit_name: str, variant: str = AUTO, dtype: str = AUTO, weight_dtype: str = DEFAULT_STORAGE
    ):
        return io.NodeOutput(load_dit15(cls.TITLE, "dit_name", dit_name, variant, dtype, weight_dtype))


class AceStep15VAELoader(io.ComfyNode):
    TITLE = "ACE-Step 1.5 Load VAE"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithful15VAELoader",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="Loads ACE-Step 1.5's Oobleck VAE: 48 kHz stereo audio <-> latents at 25 Hz.",
            inputs=[
                io.Combo.Input(
                    "vae_name", options=model_choices("vae"), tooltip=_files_tooltip("vae", "The VAE.")
                ),
                _dtype_input(),
            ],
            outputs=[_vae_out()],
        )

    @classmethod
    def validate_inputs(cls, vae_name: str) -> bool:
        return True  # names are checked when the node runs, with the fix (common.FILE_NAMES_CHECKED)

    @classmethod
    def execute(cls, vae_name: str, dtype: str = AUTO):
        return io.NodeOutput(load_vae15(cls.TITLE, "vae_name", vae_name, dtype))


class AceStep15TextEncoderLoader(io.ComfyNode):
    TITLE = "ACE-Step 1.5 Load Text Encoder"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithful15TextEncoderLoader",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="Loads Qwen3-Embedding-0.6B, which reads ACE-Step 1.5's caption and lyrics, with its tokenizer.",
            inputs=[
                io.Combo.Input(
                    "text_encoder_name",
                    options=model_choices("text_encoder"),
                    tooltip=_files_tooltip("text_encoder", "Qwen3-Embedding-0.6B."),
                ),
                _dtype_input(),
            ],
            outputs=[_te_out()],
        )

    @classmethod
    def validate_inputs(cls, text_encoder_name: str) -> bool:
        return True  # names are checked when the node runs, with the fix (common.FILE_NAMES_CHECKED)

    @classmethod
    def execute(cls, text_encoder_name: str, dtype: str = AUTO):
        return io.NodeOutput(load_text_encoder15(cls.TITLE, "text_encoder_name", text_encoder_name, dtype))


class AceStep15LMLoader(io.ComfyNode):
    TITLE = "ACE-Step 1.5 Load 5 Hz LM"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithful15LMLoader",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="Loads the 5 Hz LM planner (acestep-5Hz-lm-0.6B / 1.7B / 4B), which writes the song's "
            "metadata and its audio codes.",
            inputs=[
                io.Combo.Input(
                    "lm_name", options=model_choices("lm"), tooltip=_files_tooltip("lm", "The 5 Hz LM.")
                ),
                _dtype_input(),
                _weight_dtype_input(),
            ],
            outputs=[LM15.Output(display_name="lm", tooltip="The 5 Hz LM and its tokenizer.")],
        )

    @classmethod
    def validate_inputs(cls, lm_name: str) -> bool:
        return True  # names are checked when the node runs, with the fix (common.FILE_NAMES_CHECKED)

    @classmethod
    def execute(cls, lm_name: str, dtype: str = AUTO, weight_dtype: str = DEFAULT_STORAGE):
        return io.NodeOutput(load_lm15(cls.TITLE, "lm_name", lm_name, dtype, weight_dtype))


class AceStep15CheckpointLoader(io.ComfyNode):
    TITLE = "ACE-Step 1.5 Load Checkpoint"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithful15CheckpointLoader",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="Loads the DiT, VAE and text encoder at once: from the official Ace-Step1.5 folder (or its "
            "acestep-v15-* DiT folder, with vae/ and Qwen3-Embedding-0.6B/ beside it) or ComfyUI's all-in-one file.",
            inputs=[
                io.Combo.Input(
                    "ckpt_name",
                    options=model_choices("checkpoint"),
                    tooltip=_files_tooltip("checkpoint", "The official folder or the all-in-one file."),
                ),
                _variant_input(),
                _dtype_input(),
                _weight_dtype_input(),
            ],
            outputs=[_dit_out(), _vae_out(), _te_out()],
        )

    @classmethod
    def validate_inputs(cls, ckpt_name: str) -> bool:
        return True  # names are checked when the node runs, with the fix (common.FILE_NAMES_CHECKED)

    @classmethod
    def execute(
        cls, ckpt_name: str, variant: str = AUTO, dtype: str = AUTO, weight_dtype: str = DEFAULT_STORAGE
    ):
        from ...acestep_models.v15.pipeline import official_root

        node, input = cls.TITLE, "ckpt_name"
        root = official_root(resolve_model(node, input, ckpt_name))  # a DiT folder finds vae/ etc. beside it
        return io.NodeOutput(
            load_dit15(node, input, ckpt_name, variant, dtype, weight_dtype),
            load_vae15(node, input, ckpt_name, dtype, path=root),
            load_text_encoder15(node, input, ckpt_name, dtype, path=root),
        )


class AceStep15DiTFromModel(io.ComfyNode):
    TITLE = "ACE-Step 1.5 DiT from MODEL"

    @classmethod
    def define_schema(cls) -> io.Schema:
        from ...acestep_models.v15.sampler import VARIANTS

        return io.Schema(
            node_id="AceStepFaithful15DiTFromModel",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="Core's ACE-Step 1.5 MODEL (Load Diffusion Model, Load Checkpoint) as a DiT for the ACE-Step "
            "1.5 Sampler, sharing its weights (no second copy in memory); core's LoRA loaders on the MODEL apply.",
            inputs=[
                io.Model.Input("model", tooltip="An ACE-Step 1.5 MODEL from core's loaders."),
                io.Combo.Input(
                    "variant",
                    options=list(VARIANTS),
                    default="turbo",
                    tooltip="Which official sampler the DiT was trained for (core's MODEL does not say): turbo, base "
                    "or sft, as its file name tells (acestep_v1.5_turbo / _base / _sft).",
                ),  # fmt: skip
            ],
            outputs=[_dit_out()],
        )

    @classmethod
    def execute(cls, model, variant: str = "turbo") -> io.NodeOutput:
        node = cls.TITLE
        inner = core_module(
            node, "model", model, "model.diffusion_model", in_module("comfy.ldm.ace.ace_step15"),
            "ComfyUI's ACE-Step 1.5 DiT", "Load acestep_v1.5_*.safetensors with core's Load Diffusion Model (or use "
            "ACE-Step 1.5 Load DiT).",
        )  # fmt: skip
        dtype = full_precision_dtype(
            node, "model", [inner], "Use ACE-Step 1.5 Load DiT (weight_dtype fp8_*) instead."
        )
        dim = inner.get_parameter("decoder.proj_out.1.weight").shape[1]
        silence = silence_latent(node, "model", "MODEL", None, dim)  # (core keeps no file)
        return io.NodeOutput(CoreDiT15Handle(model, "core MODEL", dtype, variant, silence))


class AceStep15VAEFromCore(io.ComfyNode):
    TITLE = "ACE-Step 1.5 VAE from core VAE"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithful15VAEFromCore",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="Core's ACE-Step 1.5 VAE (Load VAE with ace_1.5_vae.safetensors, or Load Checkpoint) as the "
            "VAE of the ACE-Step 1.5 nodes, sharing its weights (no second copy in memory).",
            inputs=[io.Vae.Input("vae", tooltip="ACE-Step 1.5's VAE from core's loaders.")],
            outputs=[_vae_out()],
        )

    @classmethod
    def execute(cls, vae) -> io.NodeOutput:
        rate = getattr(vae, "audio_sample_rate", None)
        inner = core_module(
            cls.TITLE, "vae", vae, "first_stage_model",
            lambda m: type(m).__name__ == "AudioOobleckVAE" and rate == 48000, "ACE-Step 1.5's 48 kHz Oobleck VAE",
            "Load ace_1.5_vae.safetensors with core's Load VAE (or use ACE-Step 1.5 Load VAE).",
            describe=lambda m: f"{type(m).__name__} at {rate} Hz",
        )  # fmt: skip
        dtype = next(inner.parameters()).dtype
        return io.NodeOutput(CoreVae15Handle(vae.patcher, "core VAE", dtype))


class AceStep15FromCoreCLIP(io.ComfyNode):
    TITLE = "ACE-Step 1.5 Text Encoder + LM from core CLIP"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithful15FromCoreCLIP",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="Core's ACE-Step 1.5 CLIP (DualCLIPLoader type ace with qwen_0.6b_ace15 + qwen_1.7b_ace15 "
            "or qwen_4b_ace15, or Load Checkpoint) as the text encoder and 5 Hz LM of the ACE-Step 1.5 nodes, "
            "sharing its weights (no second copy in memory); core's LoRA loaders on the CLIP apply.",
            inputs=[io.Clip.Input("clip", tooltip="ACE-Step 1.5's CLIP from core's loaders.")],
            outputs=[
                _te_out(),
                LM15.Output(display_name="lm", tooltip="The CLIP's 5 Hz LM, for ACE-Step 1.5 Plan."),
            ],
        )

    @classmethod
    def execute(cls, clip) -> io.NodeOutput:
        from ...acestep_models.v15.checkpoint import find_lm_tokenizer, find_tokenizer

        node = cls.TITLE
        inner = core_module(
            node, "clip", clip, "cond_stage_model", in_module("comfy.text_encoders.ace15"),
            "ComfyUI's ACE-Step 1.5 text encoders", "Load qwen_0.6b_ace15 and qwen_1.7b_ace15 with core's "
            "DualCLIPLoader, type ace (or use ACE-Step 1.5 Load Text Encoder and Load 5 Hz LM).",
        )  # fmt: skip
        member = getattr(inner, "lm_model", None)
        parts = [inner.qwen3_06b] + ([getattr(inner, member)] if hasattr(inner, str(member)) else [])
        fix = "Use ACE-Step 1.5 Load Text Encoder and Load 5 Hz LM (weight_dtype fp8_*) instead."
        te_dtype = full_precision_dtype(node, "clip", parts, fix)
        with explained(node, "clip", "CLIP", "Run inside ComfyUI (it ships the Qwen tokenizer files)."):
            te = CoreTextEncoder15Handle(clip.patcher, "core CLIP", te_dtype, find_tokenizer())
            lm = None
            if len(parts) == 2:
                lm_dtype = next(parts[1].parameters()).dtype
                lm = CoreLM15Handle(clip.patcher, "core CLIP", lm_dtype, find_lm_tokenizer(), member=member)
        return io.NodeOutput(te, lm)


NODES = [
    AceStep15CheckpointLoader,
    AceStep15DiTLoader,
    AceStep15DiTFromModel,
    AceStep15VAEFromCore,
    AceStep15FromCoreCLIP,
    AceStep15VAELoader,
    AceStep15TextEncoderLoader,
    AceStep15LMLoader,
]
