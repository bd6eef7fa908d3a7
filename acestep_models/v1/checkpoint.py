"""Where each ACE-Step v1 part lives in the files users have, and one loader per part."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..common import weights
from ..common.weights import Layout, PartSource, StateDict, build, read_tensor, register

log = logging.getLogger(__name__)


# --- Where each part lives in the files users have -------------------------------------------------------------
#
# 1. the official Hugging Face folder ACE-Step-v1-3.5B/<part dir>/{config.json, weights}
# 2. ComfyUI's all-in-one ace_step_v1_3.5b.safetensors (model.diffusion_model. / vae.dcae. / vae.vocoder. /
#    text_encoders.umt5base.transformer. + text_encoders.umt5base.spiece_model)
# 3. one file per part (ComfyUI's diffusion_models/, vae/, text_encoders/), keys with or without those prefixes

OFFICIAL_DIRS = {
    "dit": "ace_step_transformer",
    "dcae": "music_dcae_f8c8",
    "vocoder": "music_vocoder",
    "text_encoder": "umt5-base",
}
OFFICIAL_WEIGHTS = {
    "dit": "diffusion_pytorch_model.safetensors",
    "dcae": "diffusion_pytorch_model.safetensors",
    "vocoder": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
}
SIGNATURES = {
    "dit": "genre_embedder.weight",
    "dcae": "decoder.conv_out.weight",
    "vocoder": "backbone.channel_layers.0.0.weight",
    "text_encoder": "encoder.block.0.layer.0.SelfAttention.q.weight",
}
SPIECE_SUFFIX = "spiece_model"


# --- Edge conversions: other layouts' key names -> the official module tree -----------------------------------

# torch's newer weight_norm (what ComfyUI's classes save) -> the official weight_g / weight_v parameters.
_WEIGHT_NORM_NEW = (".parametrizations.weight.original0", ".parametrizations.weight.original1")
_WEIGHT_NORM_OLD = (".weight_g", ".weight_v")


def to_official_keys(part: str, sd: StateDict) -> StateDict:
    if part == "vocoder":
        out = {}
        for k, v in sd.items():
            for new, old in zip(_WEIGHT_NORM_NEW, _WEIGHT_NORM_OLD):
                if k.endswith(new):
                    k = k[: -len(new)] + old
            out[k] = v
        return out
    return sd


LAYOUT = register(
    Layout(
        "ACE-Step v1",
        dirs={part: (d,) for part, d in OFFICIAL_DIRS.items()},
        weights=OFFICIAL_WEIGHTS,
        signatures={part: (sig,) for part, sig in SIGNATURES.items()},
        convert=to_official_keys,
    )
)


def find_prefix(keys: list[str], part: str) -> str | None:
    return LAYOUT.find_prefix(keys, part)


def locate(path: str | Path, part: str) -> PartSource:
    """Read ``part`` from an official folder (root or the part's own folder) or from a single .safetensors file."""
    src = weights.locate(path, part, LAYOUT)
    spiece = [k for k in src.keys if k.endswith(SPIECE_SUFFIX)]
    if (
        part == "text_encoder"
        and spiece
        and Path(src.origin).suffix == ".safetensors"
        and Path(path).is_file()
    ):
        src.extras["spiece_model"] = read_tensor(src.origin, spiece[0]).numpy().tobytes()
    return src


# --- Loaders: one per part, each taking any of the layouts above -------------------------------------------------


def _config(cls, src: PartSource):
    """The official config.json (of the folder, or carried in the file's metadata) when there is one; otherwise the
    sizes read off the tensors' shapes, with the released values for what shapes cannot tell."""
    if src.config is not None:
        return cls.from_official(src.config)
    return _from_shapes(cls, src.part, src.origin, src.state_dict)


def _from_shapes(cls, part: str, origin: str, sd: StateDict):
    try:
        return cls.from_state_dict(sd)
    except KeyError as e:  # a part's signature tensor is there, others are not
        raise ValueError(
            f"{part}: {Path(origin).name} lacks the tensor {e.args[0]!r} every ACE-Step v1 {part} has (a partial "
            "or damaged file?)"
        ) from None


def _dit_config(src: PartSource):
    """The DiT's config; without a config.json only a DiT of the released width: its head split (heads x head size)
    is in no tensor's shape, and a wrong guess either fails in a layer ("groups must be a positive integer") or,
    worse, loads and computes the wrong attention."""
    from .dit import DiTConfig

    if src.config is not None:
        return DiTConfig.from_official(src.config)
    config = _from_shapes(DiTConfig, "dit", src.origin, src.state_dict)
    released = DiTConfig()
    width = src.state_dict["t_block.1.weight"].shape[1]
    if width != released.inner_dim:
        raise ValueError(
            f"dit: {Path(src.origin).name} holds a DiT {width} wide, not the released {released.inner_dim} "
            f"({released.num_attention_heads} heads of {released.attention_head_dim}), and carries no config: how its "
            "width splits into attention heads cannot be read from the tensors. Give its config.json (with "
            "num_attention_heads and attention_head_dim): put it beside the weights in a folder of their own (in "
            "ComfyUI: models/acestep/<name>/config.json with the .safetensors) and load that folder"
        )
    return config


def load_dit(
    path: str | Path,
    dtype: torch.dtype | None = None,
    device="cpu",
    operations=None,
    weight_dtype: torch.dtype | None = None,
):
    """The DiT (with its lyric encoder) from an official folder, an all-in-one or a DiT-only file.

    ``weight_dtype`` (``ops.STORAGE_DTYPES``: float8) keeps its matrices in 1 byte per weight, computing in
    ``dtype``: the low-memory mode (ComfyUI's fp8 ``weight_dtype``)."""
    from .dit import IGNORED_KEYS, ACEStepTransformer

    src = locate(path, "dit")
    config = _dit_config(src)
    return build(
        ACEStepTransformer,
        config,
        src.state_dict,
        dtype=dtype,
        device=device,
        operations=operations,
        ignore=IGNORED_KEYS,
        name=f"ACE-Step DiT ({src.origin})",
        weight_dtype=weight_dtype,
    )


def dit_over(state_dict: StateDict, operations=None, heads: int | None = None):
    """Our DiT over another module's tensors, shared, not copied (ComfyUI's own ACE-Step DiT, whose module tree has
    the official names): built on meta, each tensor assigned as it is; the official training-only tensors stay
    where they are. ``heads``: the head count (shapes cannot tell it; the released one by default)."""
    import re

    from .dit import IGNORED_KEYS, ACEStepTransformer, DiTConfig

    sd = {k: v for k, v in state_dict.items() if not re.match(IGNORED_KEYS, k)}
    config = DiTConfig.from_state_dict(sd, {"num_attention_heads": heads} if heads else None)
    with torch.device("meta"):
        model = ACEStepTransformer(config, operations=operations)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def vae_over(state_dict: StateDict, operations=None):
    """Our music DCAE + vocoder over another module's tensors, shared, not copied: ComfyUI's own ACE-Step VAE
    (``dcae.`` + ``vocoder.``, the official names but for the vocoder's newer weight-norm names, converted as for
    its file). Built on meta, each tensor (and the mel front end's buffers) assigned as it is."""
    from .music_dcae import MusicDCAE, MusicDCAEConfig

    sd = {k: v for k, v in state_dict.items() if not k.startswith("vocoder.")}
    sd |= {f"vocoder.{k}": v for k, v in to_official_keys("vocoder", {
        k[len("vocoder."):]: v for k, v in state_dict.items() if k.startswith("vocoder.")}).items()}  # fmt: skip
    with torch.device("meta"):
        model = MusicDCAE(MusicDCAEConfig.from_state_dict(sd), operations=operations)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def text_encoder_over(state_dict: StateDict, operations=None):
    """Our UMT5 encoder over another module's tensors, shared, not copied: ComfyUI's own (``umt5base`` of its ACE
    CLIP, the official names). Built on meta, each tensor assigned as it is."""
    from .text_encoder import UMT5Config, UMT5EncoderModel

    sd = dict(state_dict)
    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config.from_state_dict(sd), operations=operations)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def load_text_encoder(path: str | Path, dtype: torch.dtype | None = None, device="cpu", operations=None):
    """UMT5 and its tokenizer: from the official umt5-base folder (tokenizer.json), or a single file that carries the
    sentencepiece model as its ``spiece_model`` tensor (ComfyUI's layout) or has tokenizer files beside it."""
    from .text_encoder import UMT5Config, UMT5EncoderModel, UMT5Tokenizer

    src = locate(path, "text_encoder")
    config = _config(UMT5Config, src)
    # ComfyUI's files carry the tokenizer and a CLIP-style logit_scale beside the weights; the encoder uses neither.
    model = build(
        UMT5EncoderModel,
        config,
        src.state_dict,
        dtype=dtype,
        device=device,
        ignore=f"({SPIECE_SUFFIX}|logit_scale)$",
        operations=operations,
        name=f"UMT5 text encoder ({src.origin})",
    )
    if "spiece_model" in src.extras:
        tokenizer = UMT5Tokenizer.from_sentencepiece(src.extras["spiece_model"])
    else:
        try:
            tokenizer = UMT5Tokenizer.from_folder(src.extras["dir"])
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"UMT5 tokenizer not found for {src.origin}: the file has no 'spiece_model' tensor and there is no "
                f"tokenizer.json or spiece.model beside it in {src.extras['dir']}. Put umt5-base's tokenizer.json "
                "there (from the official ACE-Step-v1-3.5B/umt5-base folder), or use ComfyUI's all-in-one file."
            ) from e
    return model, tokenizer


def load_music_dcae(
    path: str | Path,
    vocoder_path: str | Path | None = None,
    dtype: torch.dtype | None = None,
    device="cpu",
    operations=None,
):
    """DCAE + vocoder from the official folder (music_dcae_f8c8/ + music_vocoder/), an all-in-one file, a VAE file
    holding both (ComfyUI's vae/ layout), or a DCAE file and a separate ``vocoder_path``."""
    from .music_dcae import MusicDCAE, MusicDCAEConfig

    dcae = locate(path, "dcae")
    vocoder = locate(vocoder_path or path, "vocoder")
    sd = {f"dcae.{k}": v for k, v in dcae.state_dict.items()}
    sd.update({f"vocoder.{k}": v for k, v in vocoder.state_dict.items()})
    if dcae.config is not None and vocoder.config is not None:
        config = MusicDCAEConfig.from_official(dcae.config, vocoder.config)
    else:
        config = _from_shapes(MusicDCAEConfig, "dcae", dcae.origin, sd)
    return build(
        MusicDCAE,
        config,
        sd,
        dtype=dtype,
        device=device,
        operations=operations,
        name=f"ACE-Step music DCAE ({dcae.origin})",
    )


@dataclass
class ACEStepModels:
    """Every part the pipeline needs, loaded from one checkpoint."""

    dit: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    text_tokenizer: object
    lyric_tokenizer: object


def load_all(
    path: str | Path,
    dtype: torch.dtype | None = None,
    device="cpu",
    vocab: str | Path | None = None,
    dit_weight_dtype: torch.dtype | None = None,
) -> ACEStepModels:
    """All parts from the official folder or ComfyUI's all-in-one file; the lyric vocabulary from ``vocab``, beside
    the checkpoint, or the host ComfyUI (see ``lyric_tokenizer.find_lyric_vocab``). ``dit_weight_dtype``: float8
    storage for the DiT's matrices (see ``load_dit``)."""
    from .lyric_tokenizer import LyricTokenizer, find_lyric_vocab

    lyric_tokenizer = LyricTokenizer.from_vocab(
        find_lyric_vocab(vocab, near=path)
    )  # fail fast, before the weights
    text_encoder, text_tokenizer = load_text_encoder(path, dtype, device)
    return ACEStepModels(
        dit=load_dit(path, dtype, device, weight_dtype=dit_weight_dtype),
        vae=load_music_dcae(path, dtype=dtype, device=device),
        text_encoder=text_encoder,
        text_tokenizer=text_tokenizer,
        lyric_tokenizer=lyric_tokenizer,
    )


# --- One file per part, from any layout (the split loaders' files) --------------------------------------------------

SPLIT_FILES = {  # where ComfyUI keeps each part, under the names the split-loaders workflow uses
    "dit": Path("diffusion_models") / "ace_step_dit.safetensors",
    "vae": Path("vae") / "ace_step_vae.safetensors",
    "text_encoder": Path("text_encoders") / "umt5_base.safetensors",
}


def split(path: str | Path, models_dir: str | Path) -> dict[str, Path]:
    """Write the DiT, the VAE (DCAE + vocoder) and UMT5 of a checkpoint (official folder or all-in-one file) as one
    file per part under ComfyUI's ``models_dir`` (``SPLIT_FILES``): official key names, each part's config in the
    file's metadata (so sizes that shapes cannot tell travel along), UMT5 with its sentencepiece model as the
    ``spiece_model`` tensor when the source carries one, else the official ``tokenizer.json`` beside it. An existing
    file is never overwritten."""
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    targets = {part: models_dir / rel for part, rel in SPLIT_FILES.items()}
    taken = [str(t) for t in targets.values() if t.exists()]
    if taken:
        raise FileExistsError(f"not overwriting {', '.join(taken)}: move them away first")
    sources = {part: locate(path, part) for part in ("dit", "dcae", "vocoder", "text_encoder")}

    def meta(*parts: str) -> dict[str, str]:
        import json

        return {
            weights.CONFIG_METADATA.format(part=p): json.dumps(sources[p].config)
            for p in parts
            if sources[p].config is not None
        }

    te = sources["text_encoder"]
    tokenizer_json = Path(te.extras.get("dir", "")) / "tokenizer.json"
    if "spiece_model" not in te.extras and not tokenizer_json.is_file():
        raise FileNotFoundError(
            f"UMT5 tokenizer not found beside {te.origin} (no spiece_model, no tokenizer.json)"
        )
    parts = {
        "dit": ({k: v.contiguous() for k, v in sources["dit"].state_dict.items()}, meta("dit")),
        "vae": (
            {
                f"{p}.{k}": v.contiguous()
                for p in ("dcae", "vocoder")
                for k, v in sources[p].state_dict.items()
            },
            meta("dcae", "vocoder"),
        ),
        "text_encoder": ({k: v.contiguous() for k, v in te.state_dict.items()}, meta("text_encoder")),
    }
    if "spiece_model" in te.extras:
        parts["text_encoder"][0]["spiece_model"] = torch.frombuffer(
            bytearray(te.extras["spiece_model"]), dtype=torch.uint8
        )
    written = []
    try:
        for part, (sd, metadata) in parts.items():
            targets[part].parent.mkdir(parents=True, exist_ok=True)
            save_file(sd, str(targets[part]), metadata=metadata or None)
            written.append(targets[part])
        if "spiece_model" not in te.extras:
            beside = targets["text_encoder"].with_name("tokenizer.json")
            if not beside.exists():
                beside.write_bytes(tokenizer_json.read_bytes())
                written.append(beside)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return targets
