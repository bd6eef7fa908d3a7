"""Conditioning: the style prompt (tags) through UMT5 and the lyrics through the lyric tokenizer, into what the DiT is
conditioned on (``acestep_models.v1.conditioning.Conditioning``), as the official pipeline prepares them.

The text encoder runs on the device ComfyUI's model manager gives it; the result is kept on ComfyUI's intermediate
device (small: a few hundred vectors), so the text encoder can be offloaded before sampling.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from types import SimpleNamespace

import comfy.model_management as mm
import torch
from comfy_api.latest import io

from .common import (
    CATEGORY,
    LyricTokenizer,
    Speaker,
    SpeakerEmbedding,
    TextEncoder,
    advanced,
    checks_numbers,
    explained,
    node_error,
)

# Our conditioning travels on this socket: an ``acestep_models.v1.conditioning.Conditioning`` (batch 1).
AceStepConditioning = io.Custom("ACESTEP_CONDITIONING")

OFFICIAL_SPEAKER_DIM = 512  # official ACEStepTransformer2DModel speaker_embedding_dim
# official UI defaults (acestep/ui/components.py TAG_DEFAULT, first lines of LYRIC_DEFAULT)
DEFAULT_PROMPT = (
    "funk, pop, soul, rock, melodic, guitar, drums, bass, keyboard, percussion, 105 BPM, energetic, upbeat, "
    "groovy, vibrant, dynamic"
)
DEFAULT_LYRICS = (
    "[verse]\nNeon lights they flicker bright\nCity hums in dead of night\nRhythms pulse through concrete veins\n"
    "Lost in the echo of the city's refrains"
)


def encode(
    node: str,
    text_encoder,
    lyric_tokenizer,
    prompt: str,
    lyrics: str,
    use_erg_tag: bool,
    speaker: SpeakerEmbedding | None,
):
    """Prompt + lyrics -> ``Conditioning`` on ComfyUI's intermediate device (float32 when the encoder is).

    Without a speaker embedding the speaker is zeros of the official width; ``fit_to_dit`` resizes those zeros to
    the DiT that samples (the official release always feeds zeros)."""
    from ..acestep_models.v1.conditioning import encode_conditioning

    check_lyrics(node, "lyrics", lyrics)  # text too long to fit: said before the text encoder loads
    if speaker is not None and speaker.embedding is not None:
        vector = speaker.embedding.reshape(1, -1)
    else:
        vector = torch.zeros(1, OFFICIAL_SPEAKER_DIM)
    model = text_encoder.load()
    models = SimpleNamespace(
        text_encoder=model, text_tokenizer=text_encoder.tokenizer, lyric_tokenizer=lyric_tokenizer
    )
    with explained(node), lyrics_explained(node, "lyrics", lyrics):
        cond = encode_conditioning(
            models,
            prompt,
            lyrics,
            use_erg_tag=use_erg_tag,
            speaker=vector.to(text_encoder.device, text_encoder.dtype),
            device=text_encoder.device,
        )
    return cond.to(mm.intermediate_device())


LYRICS_FIX = (
    "Shorten them, or make the song in parts (ACE-Step Extend Latent, then repaint with the next lyrics)."
)


def lyrics_tooltip(text: str) -> str:
    from ..acestep_models.v1.lyric_tokenizer import MAX_LYRIC_TOKENS

    return (
        f"{text} At most {MAX_LYRIC_TOKENS} lyric tokens (the official limit: about 6,000 characters of English or "
        "3,500 of Chinese); longer lyrics are refused."
    )


def check_lyrics(node: str, input: str, lyrics: str) -> None:
    """Lyrics too long to fit in the model at any rate, said without tokenizing them (cheap: checked first)."""
    from ..acestep_models.v1.lyric_tokenizer import check_length

    with lyrics_explained(node, input, lyrics):
        check_length(lyrics or "")


@contextlib.contextmanager
def lyrics_explained(node: str, input: str, lyrics: str):
    """Lyrics longer than the model takes (found while tokenizing them), named by the node's input."""
    from ..acestep_models.v1.lyric_tokenizer import LyricsTooLong

    try:
        yield
    except LyricsTooLong as e:
        raise node_error(node, str(e), LYRICS_FIX, input, lyrics) from None


def fit_to_dit(node: str, input: str, cond, dit) -> object:
    """``cond`` with its speaker input sized for ``dit`` (an ``AceStepDiT``): zeros are resized, an embedding of
    another width is an error."""
    width = dit.config.speaker_embedding_dim
    speaker = cond.speaker
    if speaker.shape[-1] == width:
        return cond
    if not bool(speaker.any()):
        return replace(cond, speaker=torch.zeros(1, width, dtype=speaker.dtype, device=speaker.device))
    raise node_error(
        node,
        f"the conditioning's speaker embedding has {speaker.shape[-1]} values but this DiT takes {width}",
        "Use an embedding made for this model, or 'zeros' in ACE-Step Speaker Embedding.",
        input,
        "ACESTEP_CONDITIONING",
    )


def check_conditioning(node: str, input: str, cond):
    from ..acestep_models.v1.conditioning import Conditioning

    if not isinstance(cond, Conditioning):
        raise node_error(
            node,
            "this is not an ACE-Step conditioning",
            "Connect ACE-Step Encode Prompt & Lyrics.",
            input,
            type(cond).__name__,
        )
    return cond


class AceStepEncodePrompt(io.ComfyNode):
    TITLE = "ACE-Step Encode Prompt & Lyrics"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulEncodePrompt",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Encodes the style prompt (tags: genre, instruments, mood, BPM...) with UMT5 and tokenizes "
            "the lyrics, as the official pipeline does: what the sampler is conditioned on.",
            inputs=[
                TextEncoder.Input(
                    "text_encoder", tooltip="UMT5, from ACE-Step Load Text Encoder or Load Checkpoint."
                ),
                LyricTokenizer.Input(
                    "lyric_tokenizer", tooltip="From ACE-Step Load Lyric Tokenizer or Load Checkpoint."
                ),
                io.String.Input(
                    "prompt",
                    multiline=True,
                    default=DEFAULT_PROMPT,
                    tooltip="The style: comma-separated tags such as genre, instruments, mood, tempo (BPM), voice.",
                ),
                io.String.Input(
                    "lyrics",
                    multiline=True,
                    default=DEFAULT_LYRICS,
                    tooltip=lyrics_tooltip(
                        "The lyrics, one sung line per line, with [verse], [chorus], [bridge]... structure lines. "
                        "Empty or [instrumental] for instrumental music."
                    ),
                ),
                Speaker.Input(
                    "speaker",
                    optional=True,
                    tooltip="Speaker embedding (ACE-Step Speaker Embedding); zeros when not connected, as official.",
                ),
                advanced(
                    io.Boolean.Input(
                        "use_erg_tag",
                        default=True,
                        tooltip="Official ERG on the prompt: also encode a weakened 'null' prompt for the "
                        "unconditional guidance branch (used with the sampler's use_erg_lyric).",
                    )
                ),
            ],
            outputs=[
                AceStepConditioning.Output(
                    display_name="conditioning",
                    tooltip="The encoded prompt and lyrics, for the ACE-Step sampler.",
                )
            ],
        )

    @classmethod
    def execute(
        cls,
        text_encoder,
        lyric_tokenizer,
        prompt: str,
        lyrics: str,
        speaker: SpeakerEmbedding | None = None,
        use_erg_tag: bool = True,
    ) -> io.NodeOutput:
        return io.NodeOutput(
            encode(cls.TITLE, text_encoder, lyric_tokenizer, prompt, lyrics, use_erg_tag, speaker)
        )


class AceStepConditioningToCore(io.ComfyNode):
    TITLE = "ACE-Step Conditioning to core"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulConditioningToCore",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Our Encode Prompt & Lyrics as core's CONDITIONING (what core's Text Encode Ace Step Audio "
            "gives), for core's KSampler and conditioning nodes on an ACE-Step (v1) MODEL.",
            inputs=[
                AceStepConditioning.Input("conditioning", tooltip="From ACE-Step Encode Prompt & Lyrics."),
                io.Float.Input("lyrics_strength", default=1.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Core's lyrics_strength: scales the lyric encoder's output (1: as trained)."),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning", tooltip="Core's CONDITIONING: the UMT5 states and the lyric tokens.")],
        )  # fmt: skip

    @classmethod
    @checks_numbers
    def execute(cls, conditioning, lyrics_strength: float = 1.0) -> io.NodeOutput:
        from ..acestep_models.v1.conditioning import Conditioning

        if not isinstance(conditioning, Conditioning):
            raise node_error(
                cls.TITLE, "this is not ACE-Step conditioning", "Connect ACE-Step Encode Prompt & Lyrics.",
                "conditioning", type(conditioning),
            )  # fmt: skip
        # core's speaker input is the official zeros; ERG's "null" prompt has no place in core's CONDITIONING
        extra = {
            "pooled_output": None,
            "conditioning_lyrics": conditioning.lyric_ids,
            "lyrics_strength": lyrics_strength,
        }
        return io.NodeOutput([[conditioning.text, extra]])


NODES = [AceStepEncodePrompt]
AFTER_RENAME = [AceStepConditioningToCore]  # (no old id: nodes/legacy.py)
