"""Command line: ``python -m acestep_models <command> ...``.

tokenize-lyrics [--vocab PATH] FILE...   the lyric token ids the official pipeline feeds the model, one JSON
                                         line per file, with each line's language, ids and unknown tokens
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


class CliError(Exception):
    """A problem to report to the user in one line (exit status 1)."""


def tokenize_lyrics(args: argparse.Namespace) -> None:
    from .lyric_tokenizer import LyricTokenizer, find_lyric_vocab

    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        raise CliError(f"lyrics file not found: {', '.join(missing)}")
    try:
        tokenizer = LyricTokenizer.from_vocab(find_lyric_vocab(args.vocab))
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from e
    for name in args.files:
        # newline="" keeps the text exactly as written: the official code splits on "\n" and strips each line.
        with open(name, encoding="utf-8-sig", newline="") as f:
            lyrics = f.read()
        reports = tokenizer.analyse(lyrics)
        ids = tokenizer.lyric_ids_and_mask(lyrics)[0][0].tolist()
        lines = []
        for r in reports:
            line = {"lang": r.lang, "text": r.text, "ids": r.ids, "unknown": r.unknown}
            if r.error:
                line["error"] = r.error
            lines.append(line)
        print(json.dumps({"file": name, "ids": ids, "lines": lines}, ensure_ascii=False), flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m acestep_models", description="ACE-Step v1 engine tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "tokenize-lyrics",
        help="print the lyric token ids the official pipeline feeds the model",
        description="Print one JSON line per lyrics file: the ids fed to the model (ids [0] for empty lyrics) "
        "and, per line, the language used, the line's ids and how many are unknown tokens.",
    )
    p.add_argument(
        "--vocab", metavar="PATH", help="lyric vocab.json (default: ComfyUI's copy, see COMFYUI_PATH)"
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="UTF-8 text file with the lyrics")
    p.set_defaults(func=tokenize_lyrics)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")
    try:
        args.func(args)
    except CliError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
