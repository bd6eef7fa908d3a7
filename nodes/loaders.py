"""Loaders: the DiT, the VAE (music DCAE + vocoder), the UMT5 text encoder, the lyric tokenizer, the speaker
embedding, and all parts at once from one checkpoint.

Each loader lists the files in the ComfyUI folders the part may sit in (``diffusion_models``, ``vae``,
``text_encoders``, ``checkpoints``) plus the entries of the ``acestep`` folder (official Hugging Face folders such as
``ACE-Step-v1-3.5B``), builds the model with ``comfy.ops`` layers and hands it to ComfyUI's model manager, which
moves it to the GPU when a node needs it and offloads or frees it when memory is short (``--lowvram``, ``--cpu``).
"""

from __future__ import annotations

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from .common import (
    CAST_OPERATIONS,
    CATEGORY,
    DTYPE_CHOICES,
    OPERATIONS,
    AceStepDiT,
    AceStepTextEncoder,
    AceStepVAE,
    CoreAceStepDiT,
    CoreAceStepTextEncoder,
    CoreAceStepVAE,
    DiT,
    LyricTokenizer,
    ModelHandle,
    Speaker,
    SpeakerEmbedding,
    TextEncoder,
    Vae,
    advanced,
    core_module,
    explained,
    full_precision_dtype,
    in_module,
    model_choices,
    node_error,
    pick_dtype,
    resolve_model,
    speaker_choices,
    vocab_choices,
)

DTYPE_TOOLTIP = (
    "Precision of the weights. auto: float32 on CPU, bfloat16 on GPUs that run it fast (the official precision), "
    "following ComfyUI's --bf16-*/--fp16-*/--fp32-* flags."
)
MODEL_FILES_TOOLTIP = (
    "Files in ComfyUI's models/{folders}/ folders, and official folders (ACE-Step-v1-3.5B) or files in "
    "models/acestep/."
)
IN_VAE_FILE = "(in the VAE file)"
AUTO_VOCAB = "auto (ComfyUI's ace_lyrics_tokenizer)"
ZEROS = "zeros (official default)"


def _dtype_input() -> io.Input:
    return advanced(io.Combo.Input("dtype", options=DTYPE_CHOICES, default="auto", tooltip=DTYPE_TOOLTIP))


DEFAULT_STORAGE = "default"
WEIGHT_DTYPE_TOOLTIP = (
    "How the DiT's weight matrices are stored. default: in the dtype above. fp8_e4m3fn / fp8_e5m2: one byte per "
    "weight (3.3 GB for the released DiT instead of 6.6 GB in bf16), cast to the dtype above layer by layer as it "
    "runs: for GPUs with little memory. Each weight is rounded to 3 (e4m3fn) or 2 (e5m2) mantissa bits, so the "
    "music changes slightly."
)


def _weight_dtype_input() -> io.Input:
    from ..acestep_models.common.ops import STORAGE_DTYPES

    return advanced(
        io.Combo.Input(
            "weight_dtype",
            options=[DEFAULT_STORAGE, *STORAGE_DTYPES],
            default=DEFAULT_STORAGE,
            tooltip=WEIGHT_DTYPE_TOOLTIP,
        )
    )


def _files_tooltip(kind: str, what: str) -> str:
    from .common import PART_FOLDERS

    return f"{what} " + MODEL_FILES_TOOLTIP.format(folders=", ".join(PART_FOLDERS[kind]))


# --- building the parts (shared by the single-part loaders and the checkpoint loader) -------------------------------


def load_dit(
    node: str, input: str, value: str, dtype_choice: str, storage_choice: str = DEFAULT_STORAGE
) -> AceStepDiT:
    from ..acestep_models.common.ops import STORAGE_DTYPES
    from ..acestep_models.v1.checkpoint import load_dit as engine_load_dit

    path = resolve_model(node, input, value)
    device, offload = mm.get_torch_device(), mm.unet_offload_device()
    dtype = pick_dtype(dtype_choice, "dit", device)
    storage = STORAGE_DTYPES.get(storage_choice)
    # narrow weights need layers that cast on every call: ComfyUI's manual_cast (which also streams them in lowvram)
    operations = OPERATIONS if storage is None else CAST_OPERATIONS
    with explained(
        node, input, value, "Pick an ACE-Step v1 DiT: the all-in-one file, a DiT file or the official folder."
    ):
        model = engine_load_dit(
            path, dtype=dtype, device=offload, operations=operations, weight_dtype=storage
        )
    return AceStepDiT(ModelHandle.wrap(model, device, offload), str(path), dtype)


def load_vae(
    node: str, input: str, value: str, dtype_choice: str, vocoder_value: str | None = None
) -> AceStepVAE:
    from ..acestep_models.v1.checkpoint import load_music_dcae

    path = resolve_model(node, input, value)
    vocoder = resolve_model(node, "vocoder_name", vocoder_value) if vocoder_value else None
    device, offload = mm.vae_device(), mm.vae_offload_device()
    dtype = pick_dtype(dtype_choice, "vae", device)
    fix = "Pick a file holding ACE-Step's music DCAE and vocoder (the all-in-one file, a VAE file or the official folder)."
    with explained(node, input, value, fix):
        model = load_music_dcae(path, vocoder, dtype=dtype, device=offload, operations=OPERATIONS)
    return AceStepVAE(ModelHandle.wrap(model, device, offload), str(path), dtype)


def load_text_encoder(node: str, input: str, value: str, dtype_choice: str) -> AceStepTextEncoder:
    from ..acestep_models.v1.checkpoint import load_text_encoder as engine_load_text_encoder

    path = resolve_model(node, input, value)
    device, offload = mm.text_encoder_device(), mm.text_encoder_offload_device()
    dtype = pick_dtype(dtype_choice, "text_encoder", device)
    fix = "Pick ACE-Step's UMT5 text encoder: the all-in-one file, umt5_base.safetensors or the official folder."
    with explained(node, input, value, fix):
        model, tokenizer = engine_load_text_encoder(path, dtype=dtype, device=offload, operations=OPERATIONS)
    return AceStepTextEncoder(ModelHandle.wrap(model, device, offload), str(path), dtype, tokenizer)


def load_lyric_tokenizer(node: str, input: str, value: str | None, near=None):
    from ..acestep_models.v1.lyric_tokenizer import LyricTokenizer as EngineLyricTokenizer
    from ..acestep_models.v1.lyric_tokenizer import find_lyric_vocab

    fix = (
        "Use 'auto' (ComfyUI ships the vocabulary in comfy/text_encoders/ace_lyrics_tokenizer/vocab.json), or give "
        "the path of the official acestep/models/lyrics_utils/vocab.json."
    )
    with explained(node, input, value, fix):
        return EngineLyricTokenizer.from_vocab(find_lyric_vocab(value, near=near))


# --- nodes -----------------------------------------------------------------------------------------------------------


class AceStepDiTLoader(io.ComfyNode):
    TITLE = "ACE-Step Load DiT"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulDiTLoader",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Loads ACE-Step's diffusion transformer (with its lyric encoder) from any layout.",
            inputs=[
                io.Combo.Input(
                    "dit_name", options=model_choices("dit"), tooltip=_files_tooltip("dit", "The DiT.")
                ),
                _dtype_input(),
                _weight_dtype_input(),
            ],
            outputs=[DiT.Output(display_name="dit", tooltip="The DiT, managed by ComfyUI's model memory.")],
        )

    @classmethod
    def validate_inputs(cls, dit_name: str) -> bool:
        return True  # names are checked when the node runs, with the fix (common.FILE_NAMES_CHECKED)

    @classmethod
    def execute(
        cls, dit_name: str, dtype: str = "auto", weight_dtype: str = DEFAULT_STORAGE
    ) -> io.NodeOutput:
        return io.NodeOutput(load_dit(cls.TITLE, "dit_name", dit_name, dtype, weight_dtype))


class AceStepVAELoader(io.ComfyNode):
    TITLE = "ACE-Step Load VAE"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulVAELoader",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Loads ACE-Step's music DCAE and its vocoder: audio <-> latents.",
            inputs=[
                io.Combo.Input(
                    "vae_name",
                    options=model_choices("vae"),
                    tooltip=_files_tooltip("vae", "The music DCAE (and vocoder)."),
                ),
                advanced(
                    io.Combo.Input(
                        "vocoder_name",
                        options=[IN_VAE_FILE] + model_choices("vae"),
                        default=IN_VAE_FILE,
                        tooltip="Where the vocoder is, when it is not in the same file or folder as the DCAE.",
                    )
                ),
                _dtype_input(),
            ],
            outputs=[
                Vae.Output(display_name="vae", tooltip="DCAE + vocoder, managed by ComfyUI's model memory.")
            ],
        )

    @classmethod
    def validate_inputs(cls, vae_name: str, vocoder_name: str) -> bool:
        return True  # names are checked when the node runs, with the fix (common.FILE_NAMES_CHECKED)

    @classmethod
    def execute(cls, vae_name: str, vocoder_name: str = IN_VAE_FILE, dtype: str = "auto") -> io.NodeOutput:
        vocoder = None if vocoder_name == IN_VAE_FILE else vocoder_name
        return io.NodeOutput(load_vae(cls.TITLE, "vae_name", vae_name, dtype, vocoder))


class AceStepTextEncoderLoader(io.ComfyNode):
    TITLE = "ACE-Step Load Text Encoder"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulTextEncoderLoader",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Loads the UMT5 text encoder that reads the style prompt, with its tokenizer.",
            inputs=[
                io.Combo.Input(
                    "text_encoder_name",
                    options=model_choices("text_encoder"),
                    tooltip=_files_tooltip("text_encoder", "UMT5-base (with its sentencepiece tokenizer)."),
                ),
                _dtype_input(),
            ],
            outputs=[TextEncoder.Output(display_name="text_encoder", tooltip="UMT5 and its tokenizer.")],
        )

    @classmethod
    def validate_inputs(cls, text_encoder_name: str) -> bool:
        return True  # names are checked when the node runs, with the fix (common.FILE_NAMES_CHECKED)

    @classmethod
    def execute(cls, text_encoder_name: str, dtype: str = "auto") -> io.NodeOutput:
        return io.NodeOutput(load_text_encoder(cls.TITLE, "text_encoder_name", text_encoder_name, dtype))


class AceStepLyricTokenizerLoader(io.ComfyNode):
    TITLE = "ACE-Step Load Lyric Tokenizer"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulLyricTokenizerLoader",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="The multilingual lyric tokenizer (VoiceBPE vocabulary) that turns lyrics into the ids the "
            "DiT's lyric encoder reads.",
            inputs=[
                io.Combo.Input(
                    "vocab",
                    options=[AUTO_VOCAB] + vocab_choices(),
                    default=AUTO_VOCAB,
                    tooltip="The vocabulary: ComfyUI's own copy (auto), or a vocab.json under models/acestep/.",
                ),
                advanced(
                    io.String.Input(
                        "vocab_path",
                        default="",
                        tooltip="A vocab.json path (or the folder holding it) that overrides the choice above.",
                    )
                ),
            ],
            outputs=[LyricTokenizer.Output(display_name="lyric_tokenizer", tooltip="The lyric tokenizer.")],
        )

    @classmethod
    def validate_inputs(cls, vocab: str) -> bool:
        return True  # names are checked when the node runs, with the fix (common.FILE_NAMES_CHECKED)

    @classmethod
    def execute(cls, vocab: str = AUTO_VOCAB, vocab_path: str = "") -> io.NodeOutput:
        if vocab_path.strip():
            return io.NodeOutput(load_lyric_tokenizer(cls.TITLE, "vocab_path", vocab_path.strip()))
        if vocab == AUTO_VOCAB:
            return io.NodeOutput(load_lyric_tokenizer(cls.TITLE, "vocab", None))
        return io.NodeOutput(
            load_lyric_tokenizer(cls.TITLE, "vocab", str(resolve_model(cls.TITLE, "vocab", vocab)))
        )


class AceStepSpeakerLoader(io.ComfyNode):
    TITLE = "ACE-Step Speaker Embedding"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulSpeakerLoader",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="The DiT's speaker input. The official release has no speaker encoder and feeds zeros; a "
            "file gives one embedding vector (models/acestep_speakers/, .safetensors or .npy).",
            inputs=[
                io.Combo.Input(
                    "embedding",
                    options=[ZEROS] + speaker_choices(),
                    default=ZEROS,
                    tooltip="zeros (what the official pipeline always uses) or a file in models/acestep_speakers/.",
                ),
            ],
            outputs=[Speaker.Output(display_name="speaker", tooltip="The speaker embedding.")],
        )

    @classmethod
    def validate_inputs(cls, embedding: str) -> bool:
        return True  # names are checked when the node runs, with the fix (common.FILE_NAMES_CHECKED)

    @classmethod
    def execute(cls, embedding: str = ZEROS) -> io.NodeOutput:
        if embedding == ZEROS:
            return io.NodeOutput(SpeakerEmbedding(None))
        return io.NodeOutput(SpeakerEmbedding(read_speaker(cls.TITLE, embedding), embedding))


def read_speaker(node: str, value: str) -> torch.Tensor:
    import folder_paths

    from .common import SPEAKER_FOLDER

    path = folder_paths.get_full_path(SPEAKER_FOLDER, value)
    if path is None:
        raise node_error(
            node, "no such file", "Put it in models/acestep_speakers/ and refresh (R).", "embedding", value
        )
    with explained(node, "embedding", value, "Give a .safetensors or .npy file holding one vector."):
        if path.lower().endswith(".npy"):
            tensors = [_read_npy(path)]
        else:
            from ..acestep_models.common.weights import read_safetensors

            tensors = list(read_safetensors(path)[0].values())
    if len(tensors) != 1 or tensors[0].numel() == 0 or tensors[0].squeeze().ndim > 1:
        shapes = [list(t.shape) for t in tensors]
        raise node_error(
            node,
            f"the file must hold exactly one vector, it holds tensors of shapes {shapes}",
            "",
            "embedding",
            value,
        )
    vector = tensors[0].float().flatten()
    if not torch.isfinite(vector).all():
        raise node_error(
            node, "the embedding holds NaN/inf values", "Use a valid embedding.", "embedding", value
        )
    return vector


def _read_npy(path: str) -> torch.Tensor:
    import numpy as np

    from ..acestep_models.common.sniff import describe

    try:
        array = np.load(path, allow_pickle=False)  # (a pickle could run code: never loaded)
    except (ValueError, OSError, EOFError) as e:
        what = describe(path)
        if what.startswith("a NumPy"):  # e.g. an object array: a pickle inside
            raise ValueError(f"the NumPy .npy file holds no plain numbers ({e})") from None
        raise ValueError(f"the file is {what}, not a NumPy .npy array") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"the file holds {type(array).__name__} of {getattr(array, 'dtype', '?')}, not numbers"
        )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


class AceStepCheckpointLoader(io.ComfyNode):
    TITLE = "ACE-Step Load Checkpoint"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulCheckpointLoader",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Loads every part from ComfyUI's all-in-one ace_step_v1_3.5b.safetensors or the official "
            "ACE-Step-v1-3.5B folder: DiT, VAE, text encoder and lyric tokenizer.",
            inputs=[
                io.Combo.Input(
                    "ckpt_name",
                    options=model_choices("checkpoint"),
                    tooltip=_files_tooltip("checkpoint", "The all-in-one file or official folder."),
                ),
                _dtype_input(),
                _weight_dtype_input(),
            ],
            outputs=[
                DiT.Output(display_name="dit", tooltip="The diffusion transformer."),
                Vae.Output(display_name="vae", tooltip="Music DCAE + vocoder."),
                TextEncoder.Output(display_name="text_encoder", tooltip="UMT5 and its tokenizer."),
                LyricTokenizer.Output(display_name="lyric_tokenizer", tooltip="The lyric tokenizer."),
            ],
        )

    @classmethod
    def validate_inputs(cls, ckpt_name: str) -> bool:
        return True  # names are checked when the node runs, with the fix (common.FILE_NAMES_CHECKED)

    @classmethod
    def execute(
        cls, ckpt_name: str, dtype: str = "auto", weight_dtype: str = DEFAULT_STORAGE
    ) -> io.NodeOutput:
        path = resolve_model(cls.TITLE, "ckpt_name", ckpt_name)
        return io.NodeOutput(
            load_dit(cls.TITLE, "ckpt_name", ckpt_name, dtype, weight_dtype),
            load_vae(cls.TITLE, "ckpt_name", ckpt_name, dtype),
            load_text_encoder(cls.TITLE, "ckpt_name", ckpt_name, dtype),
            load_lyric_tokenizer(cls.TITLE, "ckpt_name", None, near=path),
        )


class AceStepDiTFromModel(io.ComfyNode):
    TITLE = "ACE-Step DiT from MODEL"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulDiTFromModel",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Core's ACE-Step MODEL (Load Checkpoint on ace_step_v1_3.5b.safetensors, Load Diffusion "
            "Model) as the DiT of the ACE-Step nodes, sharing its weights (no second copy in memory); core's LoRA "
            "loaders on the MODEL apply.",
            inputs=[io.Model.Input("model", tooltip="An ACE-Step (v1) MODEL from core's loaders.")],
            outputs=[DiT.Output(display_name="dit", tooltip="The DiT, over the MODEL's weights.")],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        node = cls.TITLE
        inner = core_module(
            node, "model", model, "model.diffusion_model", in_module("comfy.ldm.ace.model"),
            "ComfyUI's ACE-Step (v1) DiT", "Load ace_step_v1_3.5b.safetensors with core's Load Checkpoint (for "
            "ACE-Step 1.5: ACE-Step 1.5 DiT from MODEL).",
        )  # fmt: skip
        dtype = full_precision_dtype(
            node, "model", [inner], "Use ACE-Step Load DiT (weight_dtype fp8_*) instead."
        )
        return io.NodeOutput(CoreAceStepDiT(model, "core MODEL", dtype))


class AceStepVAEFromCore(io.ComfyNode):
    TITLE = "ACE-Step VAE from core VAE"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulVAEFromCore",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Core's ACE-Step VAE (Load Checkpoint on ace_step_v1_3.5b.safetensors, or Load VAE) as the "
            "VAE of the ACE-Step nodes, sharing its weights (no second copy in memory).",
            inputs=[io.Vae.Input("vae", tooltip="ACE-Step's (v1) VAE from core's loaders.")],
            outputs=[Vae.Output(display_name="vae", tooltip="Music DCAE + vocoder, over the VAE's weights.")],
        )

    @classmethod
    def execute(cls, vae) -> io.NodeOutput:
        inner = core_module(
            cls.TITLE, "vae", vae, "first_stage_model", in_module("comfy.ldm.ace.vae.music_dcae_pipeline"),
            "ComfyUI's ACE-Step (v1) music DCAE", "Load ace_step_v1_3.5b.safetensors with core's Load Checkpoint "
            "(for ACE-Step 1.5: ACE-Step 1.5 VAE from core VAE).",
        )  # fmt: skip
        return io.NodeOutput(CoreAceStepVAE(vae.patcher, "core VAE", next(inner.parameters()).dtype))


class AceStepTextEncoderFromCore(io.ComfyNode):
    TITLE = "ACE-Step Text Encoder from core CLIP"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulTextEncoderFromCore",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Core's ACE-Step CLIP (Load Checkpoint on ace_step_v1_3.5b.safetensors, or Load CLIP type "
            "ace) as the UMT5 text encoder of the ACE-Step nodes, sharing its weights (no second copy in memory), "
            "with the lyric tokenizer ComfyUI ships.",
            inputs=[io.Clip.Input("clip", tooltip="ACE-Step's (v1) CLIP from core's loaders.")],
            outputs=[
                TextEncoder.Output(display_name="text_encoder", tooltip="UMT5 and its tokenizer, over the CLIP's weights."),
                LyricTokenizer.Output(display_name="lyric_tokenizer", tooltip="The lyric tokenizer (ComfyUI's vocabulary)."),
            ],
        )  # fmt: skip

    @classmethod
    def execute(cls, clip) -> io.NodeOutput:
        from ..acestep_models.v1.text_encoder import UMT5Tokenizer

        node = cls.TITLE
        inner = core_module(
            node, "clip", clip, "cond_stage_model", lambda m: type(m).__name__ == "AceT5Model",
            "ComfyUI's ACE-Step (v1) UMT5", "Load ace_step_v1_3.5b.safetensors with core's Load Checkpoint (for "
            "ACE-Step 1.5: ACE-Step 1.5 Text Encoder + LM from core CLIP).",
        )  # fmt: skip
        dtype = next(inner.parameters()).dtype
        with explained(node, "clip", "CLIP", "Load the CLIP with core's Load Checkpoint."):
            tokenizer = UMT5Tokenizer.from_sentencepiece(clip.tokenizer.umt5base.tokenizer.serialize_model())
        text_encoder = CoreAceStepTextEncoder(clip.patcher, "core CLIP", dtype, tokenizer)
        return io.NodeOutput(text_encoder, load_lyric_tokenizer(node, "clip", None))


NODES = [
    AceStepCheckpointLoader,
    AceStepDiTLoader,
    AceStepVAELoader,
    AceStepTextEncoderLoader,
    AceStepLyricTokenizerLoader,
    AceStepSpeakerLoader,
]
# nodes added after the id rename (no old id: nodes/legacy.py): core's models as ours
AFTER_RENAME = [AceStepDiTFromModel, AceStepVAEFromCore, AceStepTextEncoderFromCore]
