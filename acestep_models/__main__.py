"""Command line: ``python -m acestep_models <command> ...``.

tokenize-lyrics [--vocab PATH] FILE...   the lyric token ids the official pipeline feeds the model, one JSON
                                         line per file, with each line's language, ids and unknown tokens
check [CHECKPOINT] [--out WAV]           load every part of a checkpoint, encode a prompt and lyrics, run the
                                         DiT once and decode to audio: proves a download is complete and works
generate --params JSON --out WAV         make a song from official ACE-Step parameters (an official
                                         *_input_params.json, and/or --infer-step 27 style flags); writes the
                                         audio and OUT_input_params.json, which replays it exactly
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path


class CliError(Exception):
    """A problem to report to the user (exit status 1, or ``exit_code``)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def tokenize_lyrics(args: argparse.Namespace) -> None:
    from .v1.lyric_tokenizer import LyricTokenizer, find_lyric_vocab

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
    path = find_checkpoint(args.checkpoint, args.download)
    dtype, storage = _precision(args)
    if generation(path) == "ACE-Step 1.5":
        check15(args, path, dtype, storage)
    else:
        check_v1(args, path, dtype, storage)
    if args.song:
        song(args, path)


def song(args: argparse.Namespace, path: Path) -> None:
    """``check --song SECONDS``: a song of the example prompt and lyrics at the official defaults otherwise (v1:
    60 steps, euler, APG 15; 1.5: the DiT's own sampler, turbo's 8 steps), through ``generate``."""
    if generation(path) == "ACE-Step 1.5":
        params = {"captions": EXAMPLE_PROMPT, "lyrics": EXAMPLE_LYRICS, "audio_duration": args.song,
                  "use_random_seed": False, "seed": args.seed, "batch_size": 1}  # fmt: skip
        if path.is_dir() and not (path / "model.safetensors").is_file():  # a root: its (one) DiT folder
            dits = sorted(path.glob("acestep-v15-*")) or sorted(path.glob("checkpoints/acestep-v15-*"))
            path = dits[0] if len(dits) == 1 else path
    else:
        params = {"prompt": EXAMPLE_PROMPT, "lyrics": EXAMPLE_LYRICS, "audio_duration": args.song,
                  "manual_seeds": args.seed}  # fmt: skip
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "song_params.json"
        file.write_text(json.dumps(params))
        argv = ["generate", "--checkpoint", str(path), "--params", str(file), "--out", args.song_out,
                "--device", args.device, "--dtype", args.dtype]  # fmt: skip
        if args.vocab and generation(path) != "ACE-Step 1.5":
            argv += ["--vocab", args.vocab]
        code = main(argv)
    if code:
        raise CliError(f"the song did not come out (generate exited with {code}; see above)", exit_code=code)
    print(f"made a {args.song:g} s song in {time.perf_counter() - clock:.1f} s: {args.song_out}", flush=True)


def check_v1(args: argparse.Namespace, path: Path, dtype, storage) -> None:
    import soundfile
    import torch

    from .v1.checkpoint import load_all
    from .v1.music_dcae import OUTPUT_SAMPLE_RATE, frames_for_seconds
    from .v1.text_encoder import encode_text

    clock = time.perf_counter()

    def step(what: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        print(f"{what:<58} {now - clock:7.2f} s", flush=True)
        clock = now

    try:
        m = load_all(path, dtype=dtype, device=args.device, vocab=args.vocab, dit_weight_dtype=storage)
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


def generation(path: Path) -> str:
    """Which ACE-Step generation a checkpoint file or folder holds (an error when it holds none, or both)."""
    from .common.weights import WeightsError, generations_in

    try:
        found = generations_in(path)
    except WeightsError as e:
        raise CliError(str(e)) from e
    if len(found) != 1:
        what = " and ".join(found) if found else "no ACE-Step weights"
        raise CliError(
            f"{path} holds {what}; give one ACE-Step v1 or ACE-Step 1.5 checkpoint (file or folder)"
        )
    return found[0]


def check15(args: argparse.Namespace, path: Path, dtype, storage) -> None:
    """``check`` for ACE-Step 1.5: load the DiT (with its encoders), VAE and text encoder, encode the example
    caption and lyrics as the official handler does, run the DiT once and decode."""
    import time

    import soundfile
    import torch

    from .v15 import checkpoint as C
    from .v15 import prompts
    from .v15.text_encoder import encode_text

    clock = time.perf_counter()

    def step(what: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        print(f"{what:<58} {now - clock:7.2f} s", flush=True)
        clock = now

    try:
        dit = C.load_dit(path, dtype, args.device, weight_dtype=storage)
        vae = C.load_vae(path, dtype, args.device)
        text_encoder, tokenizer = C.load_text_encoder(path, dtype, args.device)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from e
    silence = C.load_silence_latent(path)
    count = {
        n: sum(p.numel() for p in m.parameters()) / 1e6
        for n, m in (("dit", dit), ("vae", vae), ("text_encoder", text_encoder))
    }
    step(f"loaded {path} (" + ", ".join(f"{k} {v:.1f}M" for k, v in count.items()) + ")")
    if silence is None:
        print(
            f"  (no {C.SILENCE_LATENT} beside the DiT: zeros stand in for this check; official runs need the file)"
        )
    c = dit.config
    frames = max(1, int(args.seconds * vae.config.sampling_rate) // vae.hop_length)
    D = c.audio_acoustic_hidden_dim
    if silence is None or silence.shape[1] < max(frames, c.timbre_fix_frame):
        silence = torch.zeros(1, max(frames, c.timbre_fix_frame), D)
    silence = silence.to(args.device, dtype)
    with torch.inference_mode():
        caption = prompts.caption_prompt(EXAMPLE_PROMPT, prompts.metas(duration=args.seconds))
        cap_ids, cap_mask = tokenizer.batch(caption, prompts.CAPTION_MAX_LENGTH)
        lyr_ids, lyr_mask = tokenizer.batch(prompts.lyric_prompt(EXAMPLE_LYRICS), prompts.LYRIC_MAX_LENGTH)
        text, lyrics = encode_text(text_encoder, cap_ids, lyr_ids)
        step(f"encoded the caption ({cap_ids.shape[1]} tokens) and lyrics ({lyr_ids.shape[1]} tokens)")
        device = args.device
        states, _, context = dit.prepare_condition(
            text.to(dtype),
            cap_mask.to(device),
            lyrics.to(dtype),
            lyr_mask.to(device),
            silence[:, : c.timbre_fix_frame],  # no reference audio: the silence latent, as official
            torch.zeros(1, dtype=torch.long, device=device),
            silence[:, :frames],  # text2music: the source is the silence latent
            torch.ones(1, frames, D, device=device, dtype=dtype),
            torch.zeros(1, dtype=torch.long, device=device),
            silence,
        )
        noise = torch.randn(1, frames, D, generator=torch.Generator().manual_seed(args.seed)).to(
            device, dtype
        )
        t = torch.ones(1, device=device, dtype=dtype)
        latents = noise - dit(noise, t, t, states, context)  # one step from t = 1 to 0: a sketch, not a song
        step(f"one DiT pass over {args.seconds:g} s ({frames} latent frames)")
        audio = vae.latents_to_audio(latents)[0].float().cpu()
        step(f"decoded to {audio.shape[0]} x {audio.shape[1]} samples at {vae.config.sampling_rate} Hz")
    if not torch.isfinite(audio).all():
        raise CliError("the decoded audio has NaN/inf values: the weights are damaged or the dtype overflows")
    soundfile.write(args.out, audio.T.numpy(), vae.config.sampling_rate, subtype="FLOAT")
    print(
        f"wrote {args.out}: every ACE-Step 1.5 part loads and runs (sampling is the sampler's job, not this check's)"
    )


# --- generate ----------------------------------------------------------------------------------------------------

DTYPES = ("float32", "bfloat16", "float16")
STORAGE_CHOICES = ("default", "fp8_e4m3fn", "fp8_e5m2")  # ops.STORAGE_DTYPES, without importing torch here
STORAGE_HELP = (
    "how the DiT's weight matrices are stored: default (in --dtype) or one byte per weight (fp8_e4m3fn, "
    "fp8_e5m2), cast to --dtype per layer: a quarter of the float32 memory, each weight rounded to 3 or 2 "
    "mantissa bits"
)


def _precision(args: argparse.Namespace):
    """(compute dtype, DiT weight-storage dtype or None) from --dtype and --dit-weight-dtype."""
    import torch

    from .common.ops import STORAGE_DTYPES

    return getattr(torch, args.dtype), STORAGE_DTYPES.get(args.dit_weight_dtype)


def _storage_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dit-weight-dtype", default="default", choices=STORAGE_CHOICES, help=STORAGE_HELP)


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _metavar(key: str) -> str:
    from .v1 import params as P

    kinds = {
        "N": P.INT_KEYS,
        "X": P.FLOAT_KEYS,
        "BOOL": P.BOOL_KEYS,
        "SEEDS": P.SEED_KEYS,
        "FILE": P.PATH_KEYS,
    }
    kinds.update({"TEXT": P.TEXT_KEYS, "STEPS": ("oss_steps",)})
    return next((name for name, keys in kinds.items() if key in keys), "NAME")


def _output_paths(out: Path, batch_size: int) -> list[tuple[Path, Path]]:
    """(audio, params JSON) per batch item: OUT.wav + OUT_input_params.json, or OUT_0.wav, OUT_1.wav, ..."""
    names = (
        [out]
        if batch_size == 1
        else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(batch_size)]
    )
    return [(a, a.with_name(f"{a.stem}_input_params.json")) for a in names]


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=4, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Bar:
    """A tqdm bar on stderr, opened by the subclass (plain lines where tqdm is not installed)."""

    def __init__(self):
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        self.tqdm, self.bar = tqdm, None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Progress(_Bar):
    """The bar over the sampling steps."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __call__(self, step: int, total: int) -> None:
        self.count += 1
        if self.tqdm is None:
            print(f"sampling step {self.count}/{total}", file=sys.stderr, flush=True)
            return
        if self.bar is None:
            self.bar = self.tqdm(total=total, desc="sampling", unit="step", file=sys.stderr)
        self.bar.update(1)
        if self.count == total:  # the decode that follows is not a sampling step
            self.close()


class _LMProgress(_Bar):
    """The bar per 5 Hz LM token, one bar per phase (metadata, then codes)."""

    def __init__(self):
        super().__init__()
        self.phase = 0

    def __call__(self, step: int, total: int) -> None:
        if step == 1:
            self.close()
            self.phase += 1
            if self.tqdm is not None:
                self.bar = self.tqdm(
                    total=total, desc=f"5 Hz LM phase {self.phase}", unit="token", file=sys.stderr
                )
        if self.bar is not None:
            self.bar.update(1)
        elif step % 50 == 0:
            print(f"5 Hz LM phase {self.phase}: token {step}", file=sys.stderr, flush=True)


def _catch_ctrl_c():
    """(an Event, the SIGINT handler to put back): Ctrl-C sets the event, which the sampler or the LM reads between
    steps to stop; a second Ctrl-C stops at once (KeyboardInterrupt). Either way the command writes nothing."""
    stop = threading.Event()

    def on_interrupt(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    return stop, signal.signal(signal.SIGINT, on_interrupt)


def _write_outputs(result, params: dict, paths: list[tuple[Path, Path]]) -> None:
    """Each item's audio and its parameter file, all or none: a failure or a second Ctrl-C midway removes what
    this run had written."""
    from .common.audio_io import save_audio
    from .v1.params import to_official_file

    done: list[Path] = []
    try:
        for audio, (audio_path, params_path) in zip(result.audio, paths, strict=True):
            done.append(save_audio(audio_path, audio, result.sample_rate))
            records = {"audio_path": audio_path.name, "format": audio_path.suffix.lower().lstrip(".")}
            if "timecosts" in result.params:
                records["timecosts"] = result.params["timecosts"]
            _write_json(params_path, to_official_file(params, **records))
            done.append(params_path)
    except BaseException:
        for path in done:
            path.unlink(missing_ok=True)
        raise


def _check_lora(params: dict) -> None:
    lora = params["lora_name_or_path"]
    if (
        lora != "none"
        and not Path(lora).exists()
        and (Path(lora).is_absolute() or lora.startswith((".", "~")))
    ):
        raise CliError(f"lora_name_or_path={json.dumps(lora)}: no such folder (give a LoRA folder or 'none')")


def _is_15(checkpoint: str | None) -> bool:
    """Whether ``--checkpoint`` holds ACE-Step 1.5 (and nothing else); anything else takes the v1 path."""
    if not checkpoint or not Path(checkpoint).exists():
        return False
    from .common.weights import generations_in

    try:
        return generations_in(Path(checkpoint)) == ["ACE-Step 1.5"]
    except (OSError, ValueError):
        return False


def generate15(args: argparse.Namespace) -> None:
    """``generate`` with an ACE-Step 1.5 checkpoint: the official ``generate_music`` parameters (v15/params.py),
    the generation of v15/pipeline.py; outputs, parameter files and Ctrl-C as for v1."""
    from .common.audio_io import WRITE_FORMATS, AudioError, load_audio
    from .v15 import params as P15

    out = Path(args.out)
    if out.suffix.lower() not in WRITE_FORMATS:
        raise CliError(f"--out {out}: unknown audio extension; use one of {', '.join(WRITE_FORMATS)}")
    if not out.parent.is_dir():
        raise CliError(f"--out {out}: folder {out.parent} does not exist")
    v1_flags = [k[len("param_") :] for k, v in vars(args).items() if k.startswith("param_") and v is not None]
    if v1_flags:
        raise CliError(
            f"{', '.join(_flag(k) for k in v1_flags)}: ACE-Step v1 parameters; an ACE-Step 1.5 checkpoint takes "
            "the official generate_music parameters in --params JSON"
        )
    notes: list[str] = []
    try:
        lm, recorded_plan = P15.load_lm_params(args.params if args.params else {})
        # the end-to-end path (official inference.generate_music): with --lm, or replaying what it recorded
        end_to_end = bool(args.lm) or recorded_plan is not None
        params = P15.load_params(args.params if args.params else {}, notes, with_lm=end_to_end)
        loras = P15.load_lora_params(args.params if args.params else {}, notes)
    except P15.ParamsError as e:
        raise CliError(f"{args.params}: {e}" if args.params and e.key != "params" else str(e)) from e
    for note in notes:
        print(f"{args.params}: {note}", file=sys.stderr, flush=True)
    if args.lm:
        if not Path(args.lm).exists():
            raise CliError(
                f"--lm {args.lm}: no such folder or file (give an official acestep-5Hz-lm-* folder)"
            )
    elif args.lm_tokenizer:
        raise CliError("--lm-tokenizer: only with --lm")
    audio = {}
    try:
        for key in P15.PATH_KEYS:
            if params.get(key):
                audio[key] = load_audio(params[key])
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from e
    paths = _output_paths(out, P15.batch_size(params))

    import torch

    from .v15.pipeline import Interrupted, load_models
    from .v15.pipeline import generate as run_pipeline

    dtype = getattr(torch, args.dtype)
    clock = time.perf_counter()
    try:
        models = load_models(args.checkpoint, device=args.device, dtype=dtype)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from e
    print(
        f"loaded {args.checkpoint} ({models.variant}) in {time.perf_counter() - clock:.1f} s", file=sys.stderr
    )
    if loras:
        from .v15.lora import apply_lora, load_lora

        try:
            for path, scale in loras:
                apply_lora(models.dit, load_lora(path), scale)
        except (FileNotFoundError, ValueError) as e:
            raise CliError(f"lora_path: {e}") from e
        print(f"LoRA {', '.join(f'{p} at {s:g}' for p, s in loras)}", file=sys.stderr)
    planner = None
    if args.lm:
        from .v15.planner import load_planner

        clock = time.perf_counter()
        try:
            planner = load_planner(args.lm, device=args.device, dtype=dtype, tokenizer=args.lm_tokenizer)
        except (FileNotFoundError, ValueError) as e:
            raise CliError(str(e)) from e
        print(f"loaded the 5 Hz LM {args.lm} in {time.perf_counter() - clock:.1f} s", file=sys.stderr)
    if end_to_end and params.get("global_seed") is None:  # drawn now: the LM and the DiT both take it
        import random

        from .v15.pipeline import MAX_SEED

        params["global_seed"] = random.SystemRandom().randint(0, MAX_SEED)
    lm_seeds = rng = None
    # the official batch mode (see planner.lm_seeds), for a replay too: the Python RNG the DiT's seeds come from
    if end_to_end and P15.batch_size(params) > 1:
        from .v15.planner import lm_seeds as official_lm_seeds

        lm_seeds, rng = official_lm_seeds(params, int(params["global_seed"]))

    progress, lm_progress = _Progress(), _LMProgress()
    stop, previous = _catch_ctrl_c()
    clock = time.perf_counter()
    try:
        plan = recorded_plan
        if planner is not None:
            from .v15.planner import plan_generation

            params, plan = plan_generation(
                planner, params, lm, int(params["global_seed"]), progress=lm_progress, interrupt=stop.is_set,
                seeds=lm_seeds,
            )  # fmt: skip
            lm_progress.close()
            if plan is not None:
                meta = ", ".join(f"{k}: {v}" for k, v in plan["metadata"].items() if k != "caption")
                codes = plan["audio_codes"]
                n = [c.count("<|audio_code_") for c in (codes if isinstance(codes, list) else [codes])]
                print(f"5 Hz LM plan: {meta or 'no metadata'}; {' + '.join(map(str, n))} codes "
                      f"({' + '.join(f'{c / 5:.1f}' for c in n)} s)", file=sys.stderr)  # fmt: skip
        result = run_pipeline(models, params, progress=progress, interrupt=stop.is_set, rng=rng, **audio)
        if stop.is_set():
            raise Interrupted()
        extra = {}
        if loras:  # as given (one entry per LoRA), so the parameter file replays with them
            extra = {"lora_path": [p for p, _ in loras], "lora_scale": [s for _, s in loras]}
        if end_to_end:  # official inference.generate_music: peak normalisation on top of the anti-clipping
            from .v15.pipeline import normalize_peak

            if lm["enable_normalization"] and lm["normalization_db"] <= 0.0:
                result.audio = [normalize_peak(w, lm["normalization_db"]) for w in result.audio]
            extra.update(lm)
            if plan is not None:
                extra[P15.PLAN_KEY] = plan
        seconds = time.perf_counter() - clock
        progress.close()
        from .common.audio_io import save_audio

        done: list[Path] = []
        try:
            for wav, (audio_path, params_path) in zip(result.audio, paths, strict=True):
                done.append(save_audio(audio_path, wav, result.sample_rate))
                _write_json(params_path, {**result.params, **extra, "audio_path": audio_path.name})
                done.append(params_path)
        except BaseException:
            for path in done:
                path.unlink(missing_ok=True)
            raise
    except (Interrupted, KeyboardInterrupt):
        progress.close()
        lm_progress.close()
        raise CliError("interrupted: no output written", exit_code=130) from None
    except AudioError as e:
        raise CliError(f"{e} (nothing written; try --dtype float32 or bfloat16)") from e
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise CliError(f"{type(e).__name__}: {e}") from e
    finally:
        signal.signal(signal.SIGINT, previous)
    length = result.audio[0].shape[-1] / result.sample_rate
    print(
        f"wrote {', '.join(str(a) for a, _ in paths)} ({length:.2f} s at {result.sample_rate} Hz, seeds "
        f"{result.params['actual_seeds']}, global_seed {result.params['global_seed']}) in {seconds:.1f} s, with "
        f"the parameters beside each as {paths[0][1].name if len(paths) == 1 else '*_input_params.json'}",
        flush=True,
    )


def generate(args: argparse.Namespace) -> None:
    if _is_15(args.checkpoint):
        return generate15(args)

    from .common.audio_io import WRITE_FORMATS, AudioError, load_audio
    from .v1.params import (
        OFFICIAL_KEYS,
        SOURCE_TASKS,
        ParamsError,
        fix_random,
        load_params,
        parse_flag,
    )

    # Everything that can be wrong with the request is found here, before a model is loaded.
    out = Path(args.out)
    if out.suffix.lower() not in WRITE_FORMATS:
        raise CliError(f"--out {out}: unknown audio extension; use one of {', '.join(WRITE_FORMATS)}")
    if not out.parent.is_dir():
        raise CliError(f"--out {out}: folder {out.parent} does not exist")
    try:
        overrides = {}
        for key in OFFICIAL_KEYS:
            text = getattr(args, f"param_{key}")
            if text is not None:
                overrides[key] = parse_flag(key, text)
        params = load_params(args.params if args.params else {}, overrides=overrides)
    except ParamsError as e:  # name the file when the value came from it
        from_file = args.params and e.key != "params" and e.key not in overrides
        raise CliError(f"{args.params}: {e}" if from_file else str(e)) from e
    _check_lora(params)
    params = fix_random(params)
    src_audio = ref_audio = None
    try:
        if params["task"] in SOURCE_TASKS:
            src_audio = load_audio(params["src_audio_path"])
        if params["task"] == "audio2audio":
            ref_audio = load_audio(params["ref_audio_input"])
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from e
    paths = _output_paths(out, params["batch_size"])

    from .v1.checkpoint import load_all
    from .v1.pipeline import Interrupted
    from .v1.pipeline import generate as run_pipeline

    path = find_checkpoint(args.checkpoint, download=False)
    dtype, storage = _precision(args)
    clock = time.perf_counter()
    try:
        models = load_all(path, dtype=dtype, device=args.device, vocab=args.vocab, dit_weight_dtype=storage)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from e
    print(f"loaded {path} in {time.perf_counter() - clock:.1f} s", file=sys.stderr, flush=True)

    progress = _Progress()
    stop, previous = _catch_ctrl_c()
    clock = time.perf_counter()
    try:
        result = run_pipeline(
            models,
            params,
            src_audio=src_audio,
            ref_audio=ref_audio,
            device=args.device,
            dtype=dtype,
            progress=progress,
            interrupt=stop.is_set,
        )
        if stop.is_set():
            raise Interrupted()
        seconds = time.perf_counter() - clock
        progress.close()
        _write_outputs(result, params, paths)
    except (Interrupted, KeyboardInterrupt):
        progress.close()
        raise CliError("interrupted: no output written", exit_code=130) from None
    except AudioError as e:  # e.g. NaN audio from a float16 overflow
        raise CliError(f"{e} (nothing written; try --dtype float32 or bfloat16)") from e
    except (FileNotFoundError, ValueError) as e:  # e.g. a LoRA that cannot be found or does not fit the model
        raise CliError(f"{type(e).__name__}: {e}") from e
    finally:
        signal.signal(signal.SIGINT, previous)
    length = result.audio[0].shape[-1] / result.sample_rate
    print(
        f"wrote {', '.join(str(a) for a, _ in paths)} ({length:.2f} s at {result.sample_rate} Hz, "
        f"seeds {params['manual_seeds']}) in {seconds:.1f} s, with the parameters beside each as "
        f"{paths[0][1].name if len(paths) == 1 else '*_input_params.json'}",
        flush=True,
    )


def split(args: argparse.Namespace) -> None:
    """``split``: the v1 checkpoint as one file per part in ComfyUI's model folders."""
    from .v1.checkpoint import split as split_checkpoint

    path = Path(args.checkpoint)
    if not path.exists():
        raise CliError(f"{path}: no such file or folder")
    if generation(path) != "ACE-Step v1":
        raise CliError(f"{path}: split takes an ACE-Step v1 checkpoint (ComfyUI ships 1.5 split already)")
    clock = time.perf_counter()
    try:
        written = split_checkpoint(path, args.models)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from e
    for part, file in written.items():
        print(f"{part:<13} {file}")
    print(f"split {path} in {time.perf_counter() - clock:.1f} s: load them with the ACE-Step Load DiT / VAE / Text "
          "Encoder nodes (workflows/text2music_split_loaders.json)")  # fmt: skip


# The keyword arguments of the official LLMHandler.generate_with_stop_condition that ``plan`` takes (plus ``seed``;
# batch_size and seeds: its batch mode).
PLAN_NUMBERS = ("temperature", "cfg_scale", "top_p", "repetition_penalty", "target_duration")
PLAN_TEXTS = ("caption", "lyrics", "infer_type", "negative_prompt")
PLAN_FLAGS = ("use_constrained_decoding", "use_cot_metas", "use_cot_caption", "use_cot_language")


def _plan_params(source: str) -> dict:
    """PARAMS.json for ``plan``, checked before any model loads."""
    import math

    try:
        params = json.loads(Path(source).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CliError(f"--params {source}: no such file") from e
    except json.JSONDecodeError as e:
        raise CliError(f"--params {source}: not JSON: {e}") from e
    if not isinstance(params, dict):
        raise CliError(f"--params {source}: must hold one JSON object")
    known = {*PLAN_NUMBERS, *PLAN_TEXTS, *PLAN_FLAGS, "top_k", "user_metadata", "seed", "batch_size", "seeds"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise CliError(
            f"{source}: unknown parameter(s) {unknown}; expected the official generate_with_stop_condition "
            f"names: {', '.join(sorted(known))}"
        )
    for key, value in params.items():
        if value is None:
            continue
        if key in PLAN_NUMBERS and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            raise CliError(f"{source}: {key}: expected a finite number, not {json.dumps(value)}")
        if key in ("top_k", "seed", "batch_size") and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise CliError(f"{source}: {key}: expected a whole number of 0 or more, not {json.dumps(value)}")
        if key == "seeds" and (
            not isinstance(value, list)
            or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**64 for s in value)
        ):
            raise CliError(f"{source}: seeds: expected a list of whole numbers of 0 or more, such as [7, 8]")
        if key in PLAN_TEXTS and not isinstance(value, str):
            raise CliError(f"{source}: {key}: expected text, not {json.dumps(value)}")
        if key in PLAN_FLAGS and not isinstance(value, bool):
            raise CliError(f"{source}: {key}: expected true or false, not {json.dumps(value)}")
        if key == "user_metadata" and not isinstance(value, dict):
            raise CliError(f'{source}: user_metadata: expected an object such as {{"bpm": 120}}')
    if str(params.get("infer_type", "")).strip().lower() not in ("dit", "llm_dit"):
        raise CliError(f"{source}: infer_type: 'dit' (metadata only) or 'llm_dit' (metadata and codes)")
    return params


def _plan_batch(batch_size: int | None, seeds: list[int] | None) -> list[int] | None:
    """The official batch mode's seeds (``generate_with_stop_condition``): None unless ``batch_size`` > 1 (then
    ``seeds`` is ignored, as there); else ``seeds`` cut to ``batch_size`` items or padded with
    ``random.randint(0, 2**32 - 1)``, as the official code pads them."""
    if not (batch_size and batch_size > 1):
        if seeds:
            print(f"seeds ignored: batch_size is {batch_size} (the official single mode)", file=sys.stderr)
        return None
    import random

    seeds = list(seeds or [])
    return (seeds + [random.randint(0, 2**32 - 1) for _ in range(batch_size - len(seeds))])[:batch_size]


def plan(args: argparse.Namespace) -> None:
    """``plan``: one official ``generate_with_stop_condition`` call with the 5 Hz LM; its JSON on the last line."""
    params = _plan_params(args.params)
    batch = _plan_batch(params.pop("batch_size", None), params.pop("seeds", None))
    if not Path(args.checkpoint).exists():
        raise CliError(
            f"--checkpoint {args.checkpoint}: no such folder or file (an official acestep-5Hz-lm-* folder)"
        )
    seed = params.pop("seed", None)
    if seed is None:  # drawn here, so the output says how to replay it
        import random

        seed = random.SystemRandom().randint(0, 2**32 - 1)

    import torch

    from .v15.planner import Interrupted, load_planner

    clock = time.perf_counter()
    try:
        planner = load_planner(args.checkpoint, device=args.device, dtype=getattr(torch, args.dtype),
                               tokenizer=args.lm_tokenizer)  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from e
    print(f"loaded the 5 Hz LM {args.checkpoint} in {time.perf_counter() - clock:.1f} s", file=sys.stderr)
    progress = _LMProgress()
    stop, previous = _catch_ctrl_c()
    clock = time.perf_counter()
    try:
        out = planner.plan(**params, seed=int(seed), seeds=batch, progress=progress, interrupt=stop.is_set)
    except (Interrupted, KeyboardInterrupt):
        raise CliError("interrupted: no plan", exit_code=130) from None
    except ValueError as e:
        raise CliError(f"{args.params}: {e}") from e
    finally:
        progress.close()
        signal.signal(signal.SIGINT, previous)
    if batch is None:
        n = out["audio_codes"].count("<|audio_code_")
        what = f"{n} codes ({n / 5:.1f} s)"
    else:
        what = f"{len(batch)} items of {' + '.join(str(c.count('<|audio_code_')) for c in out['audio_codes'])} codes"
    print(f"planned in {time.perf_counter() - clock:.1f} s: {what}", file=sys.stderr)
    result = {
        "metadata": out["metadata"],  # batch mode: lists, one item each, as the official call returns them
        "audio_codes": out["audio_codes"],
        "cot_text": out.get("cot_text", ""),
        "phases": {name: phase.text for name, phase in out["phases"].items()},
        "seed": int(seed),
    }
    if batch is not None:
        result["seeds"] = [int(s) for s in batch]  # the items' seeds, padded ones included: replay with them
    print(json.dumps(result, ensure_ascii=False), flush=True)


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
    _storage_argument(p)
    p.add_argument("--song", type=float, metavar="SECONDS", help="then make a song this long of the example "
                   "prompt and lyrics, at the official settings otherwise (the quickstart's 10 s)")  # fmt: skip
    p.add_argument("--song-out", default="song.wav", help="where --song writes it (default: song.wav)")
    p.set_defaults(func=check)

    from .v1.params import CHOICES, OFFICIAL_DEFAULTS

    p = commands.add_parser(
        "generate",
        help="make a song from official ACE-Step parameters",
        description="Generate audio from the official ACEStepPipeline parameters: a JSON file (official names, or an "
        "official *_input_params.json; relative paths resolve against its folder) and/or one flag per official "
        "keyword, which overrides the file (--infer-step 27 or --infer_step 27). Writes OUT (float WAV at 48 kHz, "
        "or .flac/.ogg/.mp3; OUT_0, OUT_1, ... for batch_size > 1) and OUT_input_params.json beside it, with the "
        "seeds used: give it back as --params to make the same audio again.",
    )
    p.add_argument("--checkpoint", help="official model folder or all-in-one .safetensors file "
                   "(default: $ACESTEP_CHECKPOINT, then " + ", ".join(DEFAULT_PLACES) + ")")  # fmt: skip
    p.add_argument("--params", metavar="JSON", help="parameter file (official names); flags override it")
    p.add_argument(
        "--out", required=True, metavar="AUDIO", help="output audio file: .wav, .flac, .ogg or .mp3"
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="weight dtype (default: float32)")
    _storage_argument(p)
    p.add_argument(
        "--vocab", metavar="PATH", help="lyric vocab.json (default: beside the checkpoint, or ComfyUI's)"
    )
    p.add_argument(
        "--lm", metavar="LM_FOLDER", help="ACE-Step 1.5 only: the 5 Hz LM (official acestep-5Hz-lm-* folder or "
        "ComfyUI's qwen_*_ace15 file) plans the song first, as the official inference.generate_music does "
        "(its fields lm_temperature, lm_cfg_scale, lm_top_k, lm_top_p, lm_negative_prompt, thinking, "
        "use_cot_metas, use_cot_caption, use_cot_language, use_constrained_decoding, enable_normalization, "
        "normalization_db in --params); the plan is recorded, so the parameter file replays without --lm",
    )  # fmt: skip
    p.add_argument(
        "--lm-tokenizer", metavar="FOLDER", help="the LM's tokenizer.json folder, or Qwen's vocab.json + "
        "merges.txt (default: beside the LM, else ComfyUI's qwen25_tokenizer)",
    )  # fmt: skip
    official = p.add_argument_group(
        "official parameters (default: the official ACEStepPipeline.__call__ value)"
    )
    for key, default in OFFICIAL_DEFAULTS.items():
        names = [_flag(key)] + ([f"--{key}"] if "_" in key else [])
        what = f"one of {', '.join(CHOICES[key])}; " if key in CHOICES else ""
        official.add_argument(
            *names, dest=f"param_{key}", metavar=_metavar(key), help=f"{what}default {json.dumps(default)}"
        )
    p.set_defaults(func=generate)

    p = commands.add_parser(
        "split",
        help="write a v1 checkpoint as one file per part (DiT, VAE, text encoder) into ComfyUI's models folder",
        description="Write the DiT, the VAE (music DCAE + vocoder) and UMT5 of an ACE-Step v1 checkpoint (the "
        "official folder or ComfyUI's all-in-one file) as diffusion_models/ace_step_dit.safetensors, "
        "vae/ace_step_vae.safetensors and text_encoders/umt5_base.safetensors under MODELS (ComfyUI's models/ "
        "folder): the files of workflows/text2music_split_loaders.json. Existing files are never overwritten.",
    )
    p.add_argument("checkpoint", help="official ACE-Step-v1-3.5B folder or ace_step_v1_3.5b.safetensors")
    p.add_argument("--models", required=True, metavar="MODELS", help="ComfyUI's models/ folder")
    p.set_defaults(func=split)

    p = commands.add_parser(
        "plan",
        help="ACE-Step 1.5: the 5 Hz LM's plan (metadata and audio codes) from official parameters",
        description="One official LLMHandler.generate_with_stop_condition call: PARAMS.json holds its keyword "
        "arguments under their official names (caption, lyrics, infer_type, temperature, cfg_scale, "
        "negative_prompt, top_k, top_p, repetition_penalty, use_constrained_decoding, target_duration, "
        "user_metadata, use_cot_metas, use_cot_caption, use_cot_language, and batch_size + seeds for the batch "
        "mode) plus seed (the official torch.manual_seed before the call). Prints one JSON object on its last "
        "line: metadata, audio_codes, cot_text, the phases' texts and the seed; with batch_size > 1, as the "
        "official batch call: the metadata phase once, then each item's codes after torch.manual_seed(seeds[i]) "
        "(missing seeds drawn, extra ones dropped); metadata and audio_codes are lists (one per item), the phases "
        "cot, codes_0, codes_1, ..., and seeds the items' seeds.",
    )
    p.add_argument("--checkpoint", required=True, metavar="LM_FOLDER_OR_FILE",
                   help="the official acestep-5Hz-lm-* folder, or ComfyUI's qwen_*_ace15 file")  # fmt: skip
    p.add_argument("--params", required=True, metavar="JSON", help="the official keyword arguments and seed")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="weight dtype (default: float32)")
    p.add_argument(
        "--lm-tokenizer", metavar="FOLDER", help="the LM's tokenizer.json folder, or Qwen's vocab.json + "
        "merges.txt (default: beside the LM, else ComfyUI's qwen25_tokenizer)",
    )  # fmt: skip
    p.set_defaults(func=plan)
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
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
