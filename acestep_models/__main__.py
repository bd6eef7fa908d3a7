"""Command line: ``python -m acestep_models <command> ...``.

tokenize-lyrics [--vocab PATH] FILE...   the lyric token ids the official pipeline feeds the model, one JSON
                                         line per file, with each line's language, ids and unknown tokens
check [CHECKPOINT] [--out WAV]           load every part of a checkpoint, encode a prompt and lyrics, run the
                                         DiT once and decode to audio: proves a download is complete and works
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


class CliError(Exception):
    """A problem to report to the user (exit status 1, or ``exit_code``)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


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


HF_REPO = "ACE-Step/ACE-Step-v1-3.5B"
DEFAULT_PLACES = ("models/ACE-Step-v1-3.5B", "models/ace_step_v1_3.5b.safetensors")
WHERE_TO_PUT = f"""No ACE-Step weights found (looked at: {{looked}}). Put one of these in place and run again:
  1. the official folder https://huggingface.co/{HF_REPO} as models/ACE-Step-v1-3.5B/ with
       ace_step_transformer/  config.json, diffusion_pytorch_model.safetensors
       music_dcae_f8c8/       config.json, diffusion_pytorch_model.safetensors
       music_vocoder/         config.json, diffusion_pytorch_model.safetensors
       umt5-base/             config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
                              special_tokens_map.json
  2. ComfyUI's all-in-one file ace_step_v1_3.5b.safetensors (https://huggingface.co/Comfy-Org/
     ACE-Step_ComfyUI_repackaged, folder all_in_one/) as models/ace_step_v1_3.5b.safetensors
or give its path: python -m acestep_models check PATH (or set ACESTEP_CHECKPOINT)."""
EXAMPLE_PROMPT = "pop, synth, drums, bass, female vocals, upbeat, 120 BPM"
EXAMPLE_LYRICS = (
    "[verse]\nLights on the river, we follow the sound\n[chorus]\nSing it out loud, sing it out loud"
)


def find_checkpoint(given: str | None, download: bool) -> Path:
    places = [given] if given else [os.environ.get("ACESTEP_CHECKPOINT"), *DEFAULT_PLACES]
    places = [Path(p) for p in places if p]
    for p in places:
        if p.exists():
            return p
    if given is None and download:
        target = Path(DEFAULT_PLACES[0])
        try:
            from huggingface_hub import snapshot_download

            print(f"downloading {HF_REPO} to {target} ...", flush=True)
            return Path(snapshot_download(HF_REPO, local_dir=target))
        except Exception as e:  # no network, no huggingface_hub: fall through to the instructions
            print(
                f"download failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                file=sys.stderr,
            )
    raise CliError(WHERE_TO_PUT.format(looked=", ".join(str(p) for p in places)), exit_code=2)


def check(args: argparse.Namespace) -> None:
    import time

    import soundfile
    import torch

    from .checkpoint import load_all
    from .music_dcae import OUTPUT_SAMPLE_RATE, frames_for_seconds
    from .text_encoder import encode_text

    path = find_checkpoint(args.checkpoint, args.download)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    clock = time.perf_counter()

    def step(what: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        print(f"{what:<58} {now - clock:7.2f} s", flush=True)
        clock = now

    try:
        m = load_all(path, dtype=dtype, device=args.device, vocab=args.vocab)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from e
    count = {
        name: sum(p.numel() for p in getattr(m, name).parameters()) / 1e6
        for name in ("dit", "vae", "text_encoder")
    }
    step(f"loaded {path} (" + ", ".join(f"{k} {v:.1f}M" for k, v in count.items()) + ")")
    with torch.inference_mode():
        text, text_mask = encode_text(m.text_encoder, m.text_tokenizer, [EXAMPLE_PROMPT], args.device)
        lyric_ids, lyric_mask = (
            t.to(args.device) for t in m.lyric_tokenizer.lyric_ids_and_mask(EXAMPLE_LYRICS)
        )
        step(f"encoded the prompt ({text.shape[1]} tokens) and lyrics ({lyric_ids.shape[1]} tokens)")
        frames = frames_for_seconds(args.seconds)
        noise = torch.randn(1, 8, 16, frames, generator=torch.Generator().manual_seed(args.seed))
        noise = noise.to(args.device, dtype)
        speaker = torch.zeros(1, m.dit.config.speaker_embedding_dim, device=args.device, dtype=dtype)
        t = torch.full((1,), 1000.0, device=args.device)
        velocity = m.dit(
            noise,
            torch.ones(1, frames, device=args.device),
            text,
            text_mask,
            speaker,
            lyric_ids,
            lyric_mask,
            t,
        )
        latents = noise - velocity  # one Euler step of the flow from sigma 1 to 0: a rough sketch, not a song
        step(f"one DiT pass over {args.seconds:g} s ({frames} latent frames)")
        audio = m.vae.decode(latents.float() if dtype == torch.float16 else latents)[0].float().cpu()
        step(f"decoded to {audio.shape[0]} x {audio.shape[1]} samples at {OUTPUT_SAMPLE_RATE} Hz")
    if not torch.isfinite(audio).all():
        raise CliError("the decoded audio has NaN/inf values: the weights are damaged or the dtype overflows")
    soundfile.write(args.out, audio.T.numpy(), OUTPUT_SAMPLE_RATE, subtype="FLOAT")
    print(
        f"wrote {args.out}: every part loads and runs (full sampling is the sampler's job, not this check's)"
    )


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

    p = commands.add_parser(
        "check",
        help="load a checkpoint and run every part once",
        description="Load every part of an ACE-Step checkpoint (official folder or ComfyUI all-in-one file), encode "
        "an example prompt and lyrics, run the DiT once and decode to a WAV file. Without CHECKPOINT it looks in "
        f"$ACESTEP_CHECKPOINT and {', '.join(DEFAULT_PLACES)}, and with --download fetches {HF_REPO} there.",
    )
    p.add_argument("checkpoint", nargs="?", help="official model folder or all-in-one .safetensors file")
    p.add_argument("--download", action="store_true", help=f"fetch {HF_REPO} when no checkpoint is found")
    p.add_argument(
        "--vocab", metavar="PATH", help="lyric vocab.json (default: beside the checkpoint, or ComfyUI's)"
    )
    p.add_argument("--out", default="check.wav", help="where to write the decoded audio (default: check.wav)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the test audio (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weight dtype"
    )
    p.set_defaults(func=check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")
    try:
        args.func(args)
    except CliError as e:
        text = str(e) if "\n" in str(e) else " ".join(str(e).split())  # keep multi-line instructions readable
        print(f"error: {text}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
