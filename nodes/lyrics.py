"""Lyrics: see how the model will read them before spending a sampling run on them."""

from __future__ import annotations

from comfy_api.latest import io, ui

from .common import CATEGORY, LyricTokenizer, explained
from .conditioning import check_lyrics, lyrics_tooltip


def lyrics_report(reports, limit: int) -> str:
    """One line per lyric line: number, language read, token count, unknown tokens, the text; first a summary with
    the token count against ``limit``, the most the model reads."""
    rows = []
    for n, r in enumerate(reports, 1):
        if r.lang is None:
            rows.append(f"{n:>3}  --  (empty line)")
            continue
        flag = f"{r.unknown} unknown" if r.unknown else "ok"
        if r.error:
            flag = f"left out: {r.error}"
        rows.append(f"{n:>3}  {r.lang:<3} {len(r.ids):>3} tokens  {flag:<11} {r.text}")
    unknown = sum(r.unknown for r in reports)
    dropped = sum(1 for r in reports if r.error)
    langs = sorted({r.lang for r in reports if r.lang})
    summary = f"{len(reports)} lines, languages: {', '.join(langs) or 'none'}, unknown tokens: {unknown}" + (
        f", lines left out: {dropped}" if dropped else ""
    )
    # what the model reads: [START], then each line's ids and its separator
    tokens = 1 + sum(len(r.ids) + 1 for r in reports if not r.error)
    summary += f", {tokens} tokens of at most {limit}" + (
        " (too long: ACE-Step Encode Prompt & Lyrics refuses them)" if tokens > limit else ""
    )
    return "\n".join([summary, *rows])


class AceStepLyricsCheck(io.ComfyNode):
    TITLE = "ACE-Step Check Lyrics"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulLyricsCheck",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Shows, for each lyric line, the language the tokenizer reads it as and how many of its "
            "tokens are unknown to the model ([UNK]); passes the lyrics on unchanged.",
            inputs=[
                LyricTokenizer.Input(
                    "lyric_tokenizer", tooltip="From ACE-Step Load Lyric Tokenizer or Load Checkpoint."
                ),
                io.String.Input(
                    "lyrics",
                    multiline=True,
                    default="[verse]\n",
                    tooltip=lyrics_tooltip(
                        "The lyrics, one line per sung line; [verse], [chorus]... lines mark the structure."
                    ),
                ),
            ],
            outputs=[
                io.String.Output(display_name="lyrics", tooltip="The lyrics, unchanged."),
                io.String.Output(display_name="report", tooltip="The per-line report shown on the node."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, lyric_tokenizer, lyrics: str) -> io.NodeOutput:
        from ..acestep_models.v1.lyric_tokenizer import MAX_LYRIC_TOKENS

        check_lyrics(cls.TITLE, "lyrics", lyrics)  # (too long to fit at all: not worth seconds of analysis)
        with explained(cls.TITLE, "lyrics", lyrics[:60]):
            report = lyrics_report(lyric_tokenizer.analyse(lyrics), MAX_LYRIC_TOKENS)
        return io.NodeOutput(lyrics, report, ui=ui.PreviewText(report))


NODES = [AceStepLyricsCheck]
