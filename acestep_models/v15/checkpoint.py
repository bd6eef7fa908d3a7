"""Where each ACE-Step 1.5 part lives in the files users have, and one loader per part.

1. the official Hugging Face folder ``Ace-Step1.5/`` (or the handler's ``checkpoints/``): ``acestep-v15-*/``
   (config.json, model.safetensors, silence_latent.pt), ``vae/`` (diffusers AutoencoderOobleck),
   ``Qwen3-Embedding-0.6B/`` (config.json, model.safetensors, tokenizer.json), or any one of those part folders;
2. ComfyUI's all-in-one ``ace_step_1.5_turbo_aio.safetensors``: ``model.diffusion_model.`` (the official DiT keys),
   ``vae.`` (ComfyUI's stable-audio-tools Oobleck keys), ``text_encoders.qwen3_06b.transformer.model.`` (and the
   LM under ``text_encoders.qwen3_{2b,4b}.``);
3. one file per part: ComfyUI's ``acestep_v1.5_{turbo,base,sft}.safetensors`` (and ``_xl_*``),
   ``ace_1.5_vae.safetensors``, ``qwen_0.6b_ace15.safetensors``, with or without those prefixes.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import safe_open

from ..common.weights import Layout, PartSource, StateDict, build, locate, register

OFFICIAL_DIRS = {
    "dit": ("acestep-v15-*", "checkpoints/acestep-v15-*"),
    "vae": ("vae", "checkpoints/vae"),
    "text_encoder": ("Qwen3-Embedding-0.6B", "checkpoints/Qwen3-Embedding-0.6B"),
    "lm": ("acestep-5Hz-lm-*", "checkpoints/acestep-5Hz-lm-*"),
}
OFFICIAL_WEIGHTS = {
    "dit": "model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
    "lm": "model.safetensors",
}
SIGNATURES = {
    "dit": ("null_condition_emb",),
    # diffusers' AutoencoderOobleck (official vae/), and ComfyUI's stable-audio-tools layout (its own detection key)
    "vae": ("decoder.snake1.beta", "decoder.layers.1.layers.0.beta"),
    "text_encoder": ("layers.0.self_attn.k_norm.weight",),
    # the 5 Hz LM (a Qwen3ForCausalLM): a Qwen3 whose vocabulary holds the audio codes (``_choose``)
    "lm": ("layers.0.self_attn.k_norm.weight",),
}
SILENCE_LATENT = "silence_latent.pt"  # official: beside the DiT's model.safetensors
# The DiT's own Qwen3-style stacks also hold ``layers.0.self_attn.k_norm``; a text encoder is none of them.
_DIT_STACKS = re.compile(
    r"(^|\.)(decoder|lyric_encoder|timbre_encoder|attention_pooler|detokenizer|tokenizer)\.$"
)
TEXT_VOCAB_END = 151669  # Qwen3-Embedding's vocabulary; the 5 Hz LM's audio-code tokens start here


def _embed_rows(path: Path | None, prefix: str) -> int:
    if path is None:
        return 0
    with safe_open(str(path), framework="pt", device="cpu") as f:
        key = prefix + "embed_tokens.weight"
        return f.get_slice(key).get_shape()[0] if key in f.keys() else 0


def _choose(part: str, prefixes: list[str], path: Path | None) -> str | None:
    if part == "lm":  # beside the text encoder (ComfyUI's all-in-one): the Qwen3 with the audio-code rows
        lms = [p for p in prefixes if not _DIT_STACKS.search(p) and _embed_rows(path, p) > TEXT_VOCAB_END]
        return lms[0] if lms else None
    if part != "text_encoder":
        return prefixes[0]
    texts = [p for p in prefixes if not _DIT_STACKS.search(p)]
    if not texts:
        return None
    # beside a 5 Hz LM (ComfyUI's all-in-one): the Qwen3 whose vocabulary holds no audio codes
    plain = [p for p in texts if _embed_rows(path, p) <= TEXT_VOCAB_END]
    return (plain or texts)[0]


# --- Edge conversions: other layouts' key names -> the official module tree -----------------------------------

_WEIGHT_NORM_NEW = (".parametrizations.weight.original0", ".parametrizations.weight.original1")
_WEIGHT_NORM_OLD = (".weight_g", ".weight_v")


def _weight_norm_old(k: str) -> str:
    for new, old in zip(_WEIGHT_NORM_NEW, _WEIGHT_NORM_OLD):
        if k.endswith(new):
            return k[: -len(new)] + old
    return k


def _sat_residual(rest: str) -> str:
    """stable-audio-tools ResidualUnit ``layers.{0,1,2,3}`` -> diffusers ``snake1, conv1, snake2, conv2``."""
    i, _, tail = rest.partition(".")
    return f"{('snake1', 'conv1', 'snake2', 'conv2')[int(i)]}.{tail}"


def _sat_to_diffusers(k: str, blocks: dict[str, int]) -> str:
    """A stable-audio-tools (ComfyUI) Oobleck key -> diffusers' AutoencoderOobleck key. ``blocks``: the number of
    down/up blocks of the encoder and decoder (their index after the first conv)."""
    m = re.fullmatch(r"(encoder|decoder)\.layers\.(\d+)\.(.+)", k)
    if not m:
        return k
    side, i, rest = m.group(1), int(m.group(2)), m.group(3)
    n = blocks[side]
    if i == 0:
        return f"{side}.conv1.{rest}"
    if i == n + 1:
        return f"{side}.snake1.{rest}"
    if i == n + 2:
        return f"{side}.conv2.{rest}"
    j, _, tail = rest.partition(".")  # block i - 1: "layers.<j>.<...>"
    assert j == "layers", k
    j, _, tail = tail.partition(".")
    j = int(j)
    if side == "encoder":  # res_unit1..3, snake1, conv1
        name = (
            f"res_unit{j + 1}.{_sat_residual(tail.partition('layers.')[2])}"
            if j < 3
            else (f"snake1.{tail}" if j == 3 else f"conv1.{tail}")
        )
    else:  # snake1, conv_t1, res_unit1..3
        name = (
            f"snake1.{tail}"
            if j == 0
            else (
                f"conv_t1.{tail}"
                if j == 1
                else f"res_unit{j - 1}.{_sat_residual(tail.partition('layers.')[2])}"
            )
        )
    return f"{side}.block.{i - 1}.{name}"


def to_official_keys(part: str, sd: StateDict) -> StateDict:
    if part != "vae":
        return sd
    sd = {_weight_norm_old(k): v for k, v in sd.items()}
    if not any(k.startswith("decoder.layers.") for k in sd):
        return sd
    blocks = {}
    for side in ("encoder", "decoder"):
        last = max(int(k.split(".")[2]) for k in sd if k.startswith(f"{side}.layers."))
        blocks[side] = last - 2  # conv1, the blocks, snake1, conv2
    out = {}
    for k, v in sd.items():
        k2 = _sat_to_diffusers(k, blocks)
        if (
            k2.endswith((".alpha", ".beta")) and v.ndim == 1
        ):  # stable-audio-tools' SnakeBeta: [C]; diffusers [1, C, 1]
            v = v[None, :, None]
        out[k2] = v
    return out


LAYOUT = register(
    Layout(
        "ACE-Step 1.5",
        dirs=OFFICIAL_DIRS,
        weights=OFFICIAL_WEIGHTS,
        signatures=SIGNATURES,
        choose=_choose,
        convert=to_official_keys,
    )
)


def locate_part(path: str | Path, part: str) -> PartSource:
    """``part`` from any layout above."""
    return locate(path, part, LAYOUT)


# --- Loaders: one per part, each taking any of the layouts above -------------------------------------------------


def load_dit(
    path: str | Path,
    dtype: torch.dtype | None = None,
    device="cpu",
    operations=None,
    weight_dtype: torch.dtype | None = None,
):
    """The DiT with its condition encoder and FSQ tokenizer (official ``AceStepConditionGenerationModel``) from an
    official folder, ComfyUI's all-in-one or a DiT-only file. ``weight_dtype`` (float8) keeps its matrices in one
    byte per weight, computing in ``dtype``, as for v1."""
    from .model import AceStep15Config, AceStepConditionGenerationModel

    src = locate_part(path, "dit")
    if src.config is not None:
        config = AceStep15Config.from_official(src.config)
    else:
        config = AceStep15Config.from_state_dict(src.state_dict)
    return build(
        AceStepConditionGenerationModel,
        config,
        src.state_dict,
        dtype=dtype,
        device=device,
        operations=operations,
        name=f"ACE-Step 1.5 DiT ({src.origin})",
        weight_dtype=weight_dtype,
    )


def dit_over(state_dict: StateDict, operations=None):
    """Our DiT over another module's tensors, shared, not copied (e.g. the parameters of ComfyUI's own 1.5 DiT,
    whose module tree has the official names too): built on meta, each tensor assigned as it is (its dtype and
    device). Sizes come from the shapes, the rest at the released values. ``operations``: layers that cast per call
    where the tensors may sit on another device (ComfyUI's ``manual_cast``)."""
    from .model import AceStep15Config, AceStepConditionGenerationModel

    config = AceStep15Config.from_state_dict(state_dict)
    with torch.device("meta"):
        model = AceStepConditionGenerationModel(config, operations=operations)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


def vae_over(state_dict: StateDict, operations=None):
    """Our Oobleck VAE over another module's tensors, shared, not copied: ComfyUI's own 1.5 VAE
    (``comfy.ldm.audio.autoencoder.AudioOobleckVAE``, stable-audio-tools names, converted as for its file; the
    snake parameters become views of its [C] tensors). Built on meta, each tensor assigned as it is."""
    from .vae import AutoencoderOobleck, OobleckConfig

    sd = to_official_keys("vae", dict(state_dict))
    config = OobleckConfig.from_state_dict(sd)
    with torch.device("meta"):
        model = AutoencoderOobleck(config, operations=operations)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def text_encoder_over(state_dict: StateDict, operations=None):
    """Our Qwen3-Embedding over another module's tensors, shared, not copied: ComfyUI's own (``qwen3_06b`` of its
    ACE-Step 1.5 CLIP, the official names under ``model.``). Built on meta, each tensor assigned as it is."""
    from .text_encoder import Qwen3Config, Qwen3Model, official_keys

    sd = official_keys(dict(state_dict))
    sd.pop("lm_head.weight", None)
    with torch.device("meta"):
        model = Qwen3Model(Qwen3Config.from_state_dict(sd), operations=operations)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def lm_over(state_dict: StateDict, operations=None):
    """Our 5 Hz LM over another module's tensors, shared, not copied: ComfyUI's own (``qwen3_2b`` / ``qwen3_4b``
    of its ACE-Step 1.5 CLIP: ``model.*`` as in ``Qwen3ForCausalLM``, the head tied to the embedding). Built on meta,
    each tensor assigned as it is."""
    from .lm import Qwen3ForCausalLM, Qwen3LMConfig

    sd = dict(state_dict)
    with torch.device("meta"):
        model = Qwen3ForCausalLM(Qwen3LMConfig.from_state_dict(sd), operations=operations)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def load_silence_latent(path: str | Path) -> torch.Tensor | None:
    """The DiT's ``silence_latent.pt`` as the handler holds it, [1, T, D] float32 (the file is [1, D, T]; read as
    tensors only, no pickled code runs), or None when it is not beside the weights (ComfyUI's files come without
    it)."""
    p = Path(path)
    folder = LAYOUT.part_dir(p, "dit") if p.is_dir() else p.parent
    file = folder / SILENCE_LATENT
    if not file.is_file():
        return None
    return torch.load(file, map_location="cpu", weights_only=True).transpose(1, 2).float()


def load_vae(path: str | Path, dtype: torch.dtype | None = None, device="cpu", operations=None):
    """The Oobleck VAE from the official ``vae/`` folder (diffusers), ComfyUI's ``ace_1.5_vae.safetensors``
    (stable-audio-tools keys, converted here) or its all-in-one file. Without a config.json the sizes come from the
    tensor shapes and the rate is the handler's 48 kHz."""
    from .vae import AutoencoderOobleck, OobleckConfig

    src = locate_part(path, "vae")
    if src.config is not None:
        config = OobleckConfig.from_official(src.config)
    else:
        config = OobleckConfig.from_state_dict(src.state_dict)
    return build(
        AutoencoderOobleck,
        config,
        src.state_dict,
        dtype=dtype,
        device=device,
        operations=operations,
        name=f"ACE-Step 1.5 VAE ({src.origin})",
    )


COMFY_QWEN_TOKENIZER = (
    Path("text_encoders") / "qwen25_tokenizer"
)  # ComfyUI ships Qwen's vocab.json + merges.txt


def _comfy_qwen_folders() -> list[Path]:
    """ComfyUI's ``comfy/text_encoders/qwen25_tokenizer/`` (Qwen's vocab.json + merges.txt): through the importable
    ``comfy`` package, then ``COMFYUI_PATH``."""
    import os

    from ..common.weights import host_comfy_dir

    package = host_comfy_dir()
    folders = [package / COMFY_QWEN_TOKENIZER] if package is not None else []
    if os.environ.get("COMFYUI_PATH"):
        folders.append(Path(os.environ["COMFYUI_PATH"]) / "comfy" / COMFY_QWEN_TOKENIZER)
    return folders


def find_tokenizer(explicit: str | Path | None = None, near: Path | None = None):
    """The Qwen3-Embedding tokenizer: the folder ``explicit``, else ``tokenizer.json`` (or vocab.json +
    merges.txt) beside the weights ``near``, else ComfyUI's ``comfy/text_encoders/qwen25_tokenizer/`` (through the
    importable ``comfy`` package or ``COMFYUI_PATH``), which gives the same ids."""
    from .tokenizer import Qwen3Tokenizer

    looked = []
    folders = [Path(explicit)] if explicit is not None else []
    if explicit is None:
        folders += [near] if near is not None else []
        folders += _comfy_qwen_folders()
    for folder in folders:
        try:
            return Qwen3Tokenizer.from_folder(folder)
        except FileNotFoundError:
            looked.append(str(folder))
    raise FileNotFoundError(
        "ACE-Step 1.5 text tokenizer not found (tokenizer.json, or vocab.json + merges.txt); looked in: "
        + ("; ".join(looked) or "nowhere")
        + ". Put the official Qwen3-Embedding-0.6B tokenizer.json beside the text encoder, or run inside ComfyUI "
        "(it ships comfy/text_encoders/qwen25_tokenizer/), or set COMFYUI_PATH."
    )


def load_text_encoder(
    path: str | Path, dtype: torch.dtype | None = None, device="cpu", operations=None, tokenizer=None
):
    """Qwen3-Embedding-0.6B and its tokenizer, from the official folder, ComfyUI's ``qwen_0.6b_ace15.safetensors``
    or its all-in-one file (beside the 5 Hz LM there: the Qwen3 without audio-code tokens). ``tokenizer``: a
    folder holding the tokenizer files (default: see ``find_tokenizer``)."""
    from .text_encoder import Qwen3Config, Qwen3Model, official_keys

    src = locate_part(path, "text_encoder")
    sd = official_keys(src.state_dict)
    sd.pop("lm_head.weight", None)  # a causal-LM save's head (tied to the embedding): the encoder has none
    config = (
        Qwen3Config.from_official(src.config) if src.config is not None else Qwen3Config.from_state_dict(sd)
    )
    model = build(
        Qwen3Model,
        config,
        sd,
        dtype=dtype,
        device=device,
        operations=operations,
        name=f"ACE-Step 1.5 text encoder ({src.origin})",
    )
    return model, find_tokenizer(tokenizer, near=Path(src.extras["dir"]))


# --- The 5 Hz LM (planner) ------------------------------------------------------------------------------------


def find_lm_tokenizer(explicit: str | Path | None = None, near: Path | None = None):
    """The 5 Hz LM tokenizer: ``tokenizer.json`` in the folder ``explicit`` or beside the LM weights ``near`` (the
    official ``acestep-5Hz-lm-*`` folder has it), else ComfyUI's ``qwen25_tokenizer`` vocab.json + merges.txt with
    the Qwen3 added tokens and the audio-code tokens (the official layout; see ``planner.LMTokenizer``)."""
    from .planner import LMTokenizer

    folders = [Path(explicit)] if explicit is not None else ([near] if near is not None else [])
    for folder in folders:
        if (folder / "tokenizer.json").is_file():
            return LMTokenizer.from_folder(folder)
    bpe = list(folders)
    if explicit is None:
        bpe += _comfy_qwen_folders()
    for folder in bpe:
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return LMTokenizer.from_vocab_merges(folder / "vocab.json", folder / "merges.txt")
    raise FileNotFoundError(
        "ACE-Step 1.5 5 Hz LM tokenizer not found (tokenizer.json, or vocab.json + merges.txt); looked in: "
        + ("; ".join(str(f) for f in bpe) or "nowhere")
        + ". Use the official acestep-5Hz-lm-* folder (it holds tokenizer.json), or run inside ComfyUI, or set "
        "COMFYUI_PATH."
    )


def load_lm(
    path: str | Path,
    dtype: torch.dtype | None = None,
    device="cpu",
    operations=None,
    tokenizer=None,
    weight_dtype: torch.dtype | None = None,
):
    """The 5 Hz LM (``lm.Qwen3ForCausalLM``) and its tokenizer from an official ``acestep-5Hz-lm-*`` folder (or a
    root holding one), ComfyUI's ``qwen_1.7b_ace15`` / ``qwen_4b_ace15`` files or its all-in-one file."""
    from ..common.weights import read_safetensors
    from .lm import Qwen3ForCausalLM, Qwen3LMConfig

    src = locate_part(path, "lm")
    sd = {k[len("model.") :] if k.startswith("model.") else k: v for k, v in src.state_dict.items()}
    sd = {f"model.{k}": v for k, v in sd.items() if k != "lm_head.weight"}
    rows = sd["model.embed_tokens.weight"].shape[0]
    if rows <= TEXT_VOCAB_END:
        raise ValueError(
            f"5 Hz LM: {src.origin} is a Qwen3 of {rows} tokens without audio codes (the text encoder?); give the "
            "official acestep-5Hz-lm-* folder or ComfyUI's qwen_*_ace15 LM file"
        )
    # the head sits beside ``model.`` (a Qwen3ForCausalLM save); tied models do not store it
    outer = ""
    for k in src.keys:  # the file's prefix of this LM (an all-in-one file holds two Qwen3s)
        if (
            k.endswith("embed_tokens.weight")
            and _embed_rows(Path(src.origin), k[: -len("embed_tokens.weight")]) == rows
        ):
            outer = k[: -len("embed_tokens.weight")]
            break
    outer = outer[: -len("model.")] if outer.endswith("model.") else outer
    head, _ = read_safetensors(src.origin, outer + "lm_head.")
    if "weight" in head:
        sd["lm_head.weight"] = head["weight"]
    if src.config is not None:
        config = Qwen3LMConfig.from_official(src.config)
    else:
        config = Qwen3LMConfig.from_state_dict(sd)
    if "lm_head.weight" in sd and config.tie_word_embeddings:
        sd.pop("lm_head.weight")
    model = build(
        Qwen3ForCausalLM,
        config,
        sd,
        dtype=dtype,
        device=device,
        operations=operations,
        name=f"ACE-Step 1.5 5 Hz LM ({src.origin})",
        weight_dtype=weight_dtype,
    )
    return model, find_lm_tokenizer(tokenizer, near=Path(src.extras["dir"]))
