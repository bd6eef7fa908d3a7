"""ACE-Step 1.5 prompts: the 5 Hz LM planner and Encode Prompt.

The planner writes the song's plan as the official ``inference.generate_music`` does before the DiT runs (the
chain-of-thought metadata under the constrained decoder, then the audio codes); its outputs are the plan, the codes
as a string (the official app's code box: read it, edit it, feed it to the sampler's ``audio_codes``) and the
plan's duration (for the empty latent). Encode Prompt holds the caption, lyrics and metadata; connected to a plan,
the fields left on auto take the plan's values, and its caption the plan's (``use_cot_caption``), as official.
"""

from __future__ import annotations

import comfy.utils
from comfy_api.latest import io

from ..common import advanced, checks_numbers, comfy_interrupted, explained, node_error
from ..inputs import seed_input
from .handles import (
    CATEGORY15,
    LM15,
    LM15Handle,
    Plan15,
    Prompt15,
    PromptText15,
    TextEncoder15,
    TextEncoder15Handle,
)

AUTO = "auto"
KEY_SCALES = [f"{n}{a} {m}" for m in ("major", "minor") for n in "CDEFGAB" for a in ("", "#", "b")]
TIME_SIGNATURES = ["2", "3", "4", "6"]


def _languages() -> list[str]:
    from ...acestep_models.v15.planner import VALID_LANGUAGES

    return list(VALID_LANGUAGES)


def _metadata_inputs() -> list[io.Input]:
    return [
        io.Int.Input(
            "bpm",
            default=0,
            min=0,
            max=300,
            tooltip="Tempo in beats per minute; 0: auto (N/A, or the plan's).",
        ),
        io.Combo.Input(
            "key_scale", options=[AUTO, *KEY_SCALES], default=AUTO, tooltip="Key; auto: none (or the plan's)."
        ),
        io.Combo.Input(
            "time_signature",
            options=[AUTO, *TIME_SIGNATURES],
            default=AUTO,
            tooltip="Beats per bar; auto: none (or the plan's).",
        ),  # fmt: skip
    ]


def _metadata(bpm: int, key_scale: str, time_signature: str) -> dict:
    """Node metadata as the official ``generate_music`` arguments (auto: not given)."""
    return {
        "bpm": int(bpm) if bpm else None,
        "key_scale": "" if key_scale == AUTO else key_scale,
        "time_signature": "" if time_signature == AUTO else time_signature,
    }


def _caption_input() -> io.Input:
    return io.String.Input(
        "caption",
        multiline=True,
        default="",
        tooltip="What the music is: style, instruments, mood (official captions).",
    )


def _lyrics_input() -> io.Input:
    return io.String.Input(
        "lyrics", multiline=True, default="",
        tooltip="Lyrics with section tags ([verse], [chorus], ...); empty or [Instrumental] for none.",
    )  # fmt: skip


class AceStep15Planner(io.ComfyNode):
    TITLE = "ACE-Step 1.5 Plan (5 Hz LM)"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithful15Planner",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="The 5 Hz LM plans the song as the official app does: it fills in the metadata left on "
            "auto (bpm, key, time signature, duration, language, a richer caption) under the official constrained "
            "decoder, then writes 5 audio codes per second that the sampler renders. Token for token the official "
            "result for the same seed.",
            inputs=[
                LM15.Input("lm", tooltip="The 5 Hz LM (ACE-Step 1.5 Load 5 Hz LM)."),
                _caption_input(),
                _lyrics_input(),
                *_metadata_inputs(),
                io.Float.Input(
                    "duration", default=-1.0, min=-1.0, max=600.0, step=0.1,
                    tooltip="Song length in seconds; -1: the LM chooses.",
                ),  # fmt: skip
                seed_input("seed", "Seeds the LM's sampling (the official torch.manual_seed before the call)."),
                io.Boolean.Input(
                    "write_codes", default=True,
                    tooltip="Official 'thinking': write the audio codes after the metadata (llm_dit). Off: only the "
                    "metadata (dit), the sampler then makes the music from the prompt alone.",
                ),  # fmt: skip
                advanced(io.Float.Input("lm_temperature", default=0.85, min=0.0, max=2.0, step=0.01, tooltip="Sampling temperature (official 0.85; 0: greedy).")),
                advanced(io.Float.Input("lm_cfg_scale", default=2.0, min=0.0, max=10.0, step=0.1, tooltip="LM guidance against the unconditional prompt (official 2.0; 1 or less: none, half the work).")),
                advanced(io.Int.Input("lm_top_k", default=0, min=0, max=1000, tooltip="Top-k (0: off, official).")),
                advanced(io.Float.Input("lm_top_p", default=0.9, min=0.0, max=1.0, step=0.01, tooltip="Top-p (official 0.9; 1: off).")),
                advanced(io.String.Input("lm_negative_prompt", default="NO USER INPUT", tooltip="The unconditional caption of LM guidance (official).")),
                advanced(io.Boolean.Input("use_cot_metas", default=True, tooltip="Let the LM write the metadata (official on).")),
                advanced(io.Boolean.Input("use_cot_caption", default=True, tooltip="Let the LM rewrite the caption, which Encode Prompt then uses (official on).")),
                advanced(io.Boolean.Input("use_cot_language", default=True, tooltip="Let the LM name the vocal language (official on).")),
                advanced(io.Boolean.Input("use_constrained_decoding", default=True, tooltip="The official constrained decoder (valid fields, ranges, codes only in the codes phase).")),
            ],
            outputs=[
                Plan15.Output(display_name="plan", tooltip="The plan: metadata and caption for Encode Prompt."),
                io.String.Output(display_name="audio_codes", tooltip="The audio codes (<|audio_code_N|>...), for the sampler's audio_codes."),
                io.Float.Output(display_name="duration", tooltip="The song's length in seconds, for the empty latent."),
                io.String.Output(display_name="metadata", tooltip="The plan's metadata as the LM wrote it (readable)."),
            ],
        )  # fmt: skip

    @classmethod
    @checks_numbers
    def execute(
        cls, lm, caption: str, lyrics: str, bpm: int, key_scale: str, time_signature: str, duration: float,
        seed: int, write_codes: bool = True, lm_temperature: float = 0.85, lm_cfg_scale: float = 2.0,
        lm_top_k: int = 0, lm_top_p: float = 0.9, lm_negative_prompt: str = "NO USER INPUT",
        use_cot_metas: bool = True, use_cot_caption: bool = True, use_cot_language: bool = True,
        use_constrained_decoding: bool = True,
    ) -> io.NodeOutput:  # fmt: skip
        from ...acestep_models.v15.params import LM_DEFAULTS
        from ...acestep_models.v15.planner import format_metadata_as_cot, plan_generation

        if not isinstance(lm, LM15Handle):
            raise node_error(
                cls.TITLE,
                "this is not an ACE-Step 1.5 LM",
                "Connect ACE-Step 1.5 Load 5 Hz LM.",
                "lm",
                type(lm),
            )
        params = {
            "captions": caption, "lyrics": lyrics, **_metadata(bpm, key_scale, time_signature),
            "audio_duration": float(duration) if duration > 0 else None, "task_type": "text2music",
        }  # fmt: skip
        settings = {
            **LM_DEFAULTS, "thinking": write_codes, "lm_temperature": lm_temperature, "lm_cfg_scale": lm_cfg_scale,
            "lm_top_k": lm_top_k, "lm_top_p": lm_top_p, "lm_negative_prompt": lm_negative_prompt,
            "use_cot_metas": use_cot_metas, "use_cot_caption": use_cot_caption,
            "use_cot_language": use_cot_language, "use_constrained_decoding": use_constrained_decoding,
        }  # fmt: skip
        with explained(cls.TITLE, fix="Check the node's settings."):
            planner = lm.planner()
            bar = comfy.utils.ProgressBar(1)
            planned, plan = plan_generation(
                planner, params, settings, int(seed), progress=lambda n, total: bar.update_absolute(n, total),
                interrupt=comfy_interrupted,
            )  # fmt: skip
        plan = plan or {"infer_type": "dit", "metadata": {}, "audio_codes": "", "cot_text": ""}
        plan["lm"] = {k: settings[k] for k in ("use_cot_caption", "use_cot_language")}
        codes = plan["audio_codes"] or ""
        seconds = planned.get("audio_duration")
        if seconds is None:
            seconds = codes.count("<|audio_code_") / 5 if codes else 30.0  # official default 30 s
        return io.NodeOutput(
            plan, codes, float(seconds), format_metadata_as_cot(plan["metadata"]) if plan["metadata"] else ""
        )


class AceStep15Encode(io.ComfyNode):
    TITLE = "ACE-Step 1.5 Encode Prompt"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithful15Encode",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="The caption, lyrics, vocal language and metadata, read by Qwen3-Embedding when the sampler "
            "runs (the official caption prompt holds the task's instruction and the song's duration). A plan "
            "fills the fields left on auto, as the official app does.",
            inputs=[
                TextEncoder15.Input("text_encoder", tooltip="Qwen3-Embedding-0.6B (ACE-Step 1.5 Load Text Encoder)."),
                _caption_input(),
                _lyrics_input(),
                io.Combo.Input("vocal_language", options=_languages(), default="en", tooltip="The language the lyrics are sung in (official vocal_language)."),
                *_metadata_inputs(),
                Plan15.Input("plan", optional=True, tooltip="A plan from ACE-Step 1.5 Plan: its metadata fill the fields on auto, its caption replaces this one."),
            ],
            outputs=[Prompt15.Output(display_name="prompt", tooltip="The prompt for the ACE-Step 1.5 sampler.")],
        )  # fmt: skip

    @classmethod
    def execute(
        cls, text_encoder, caption: str, lyrics: str, vocal_language: str, bpm: int, key_scale: str,
        time_signature: str, plan=None,
    ) -> io.NodeOutput:  # fmt: skip
        from ...acestep_models.v15.planner import apply_plan

        if not isinstance(text_encoder, TextEncoder15Handle):
            raise node_error(
                cls.TITLE, "this is not ACE-Step 1.5's text encoder", "Connect ACE-Step 1.5 Load Text Encoder.",
                "text_encoder", type(text_encoder),
            )  # fmt: skip
        p = {
            "captions": caption,
            "lyrics": lyrics,
            "vocal_language": vocal_language,
            **_metadata(bpm, key_scale, time_signature),
        }
        if plan is not None:
            p = apply_plan(p, plan["lm"], "dit", plan["metadata"], "")  # (the codes go to the sampler)
        return io.NodeOutput(
            PromptText15(text_encoder, p["captions"], p["lyrics"], p["vocal_language"], p["bpm"], p["key_scale"] or "", p["time_signature"] or "")
        )  # fmt: skip


NODES = [AceStep15Planner, AceStep15Encode]
