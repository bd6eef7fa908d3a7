"""Time one generation by the official ACE-Step pipeline and by ours, on the same weights, in one process.

    ACESTEP_REF=/work/ref/ACE-Step /work/venvs/ref/bin/python benchmarks/bench_sampling.py --device cpu --size tiny

Runs the official ``ACEStepPipeline.__call__`` (imported from the checkout in ``$ACESTEP_REF``) and our
``acestep_models.pipeline.generate`` on one fixed configuration (default: 10 s, 10 steps, euler, APG, ERG on,
the official defaults otherwise), alternately, ``--repeats`` times after a warm-up, and prints the median of each
measure with our/official ratios. Measures, taken with hooks so that both sides are timed the same way:

- text encode: time inside the UMT5 encoder's forward (the prompt and, with ERG, its "null" pass);
- sampling: from the first DiT pass to the end of the last (the lyric encoder runs before it, inside "other");
- decode: time inside the DCAE + vocoder ``decode``;
- DiT calls per step: forward calls of the DiT's final layer (hooked on both models) / steps; DiT rows per item
  and step: the batch rows those calls processed / (batch size x steps), i.e. DiT passes per step as the
  official code counts them (ours batches a step's conditional and unconditional passes into one call);
- RTF: seconds of audio per second of wall time for the whole call.

``--size tiny`` uses the tiny random checkpoint of the tests (tests/golden/tiny); ``--size full`` builds a
full-size random-weight checkpoint (3.5B) from the released configs into a temporary folder (GPU only) and
loads it through each side's own loader. Writes the table to benchmarks/results/<date>-<device>-<size>.md.
Run with the official code's Python environment (which must import acestep_models as well).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REF = os.environ.get("ACESTEP_REF")
if not REF or not Path(REF, "acestep", "pipeline_ace_step.py").is_file():
    sys.exit(
        "bench_sampling.py: set ACESTEP_REF to a checkout of the official ACE-Step repository (commit d612523)"
    )
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [REF, str(ROOT)]

import torch  # noqa: E402

TINY = ROOT / "tests" / "golden" / "tiny"
OFFICIAL_VOCAB = Path(
    REF, "acestep", "models", "lyrics_utils", "vocab.json"
)  # the official tokenizer's own file
PROMPT = "pop, synth, drums, bass, female vocals, upbeat, 120 BPM"
LYRICS = "[verse]\nLights on the river, we follow the sound\n[chorus]\nSing it out loud, sing it out loud"

# Released ACE-Step-v1-3.5B sizes (the defaults of acestep_models' DiTConfig, DCAEConfig, VocoderConfig and
# UMT5Config), put over the keys of the tiny config.json files.
FULL_DIT = dict(num_layers=24, inner_dim=2560, attention_head_dim=128, num_attention_heads=20,
                speaker_embedding_dim=512, text_embedding_dim=768, ssl_latent_dims=[1024, 768],
                lyric_hidden_size=1024)  # fmt: skip
FULL_DCAE = dict(attention_head_dim=32, encoder_block_out_channels=[128, 256, 512, 1024],
                 decoder_block_out_channels=[128, 256, 512, 1024], encoder_layers_per_block=[2, 2, 3, 3],
                 decoder_layers_per_block=[3, 3, 3, 3])  # fmt: skip
FULL_VOCODER = dict(depths=[3, 3, 9, 3], dims=[128, 256, 384, 512], num_mels=512, upsample_initial_channel=1024,
                    resblock_kernel_sizes=[3, 7, 11, 13], resblock_dilation_sizes=[[1, 3, 5]] * 4)  # fmt: skip
FULL_UMT5 = dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12,
                 vocab_size=256384)  # fmt: skip
TINY_LYRIC_KEYS = ("lyric_encoder_attention_heads", "lyric_encoder_linear_units", "lyric_encoder_num_blocks")


# --- weights -----------------------------------------------------------------------------------------------------


def write_full_checkpoint(folder: Path, device: str) -> Path:
    """A full-size random-weight checkpoint in the official layout, made by the official classes (bfloat16 files;
    both sides cast them to the benchmark dtype on loading). The tokenizer files are the tiny ones: the ids it
    makes are valid for the full vocabulary, and a prompt's token count barely matters to the timing."""
    from acestep.models.ace_step_transformer import ACEStepTransformer2DModel
    from acestep.music_dcae.music_vocoder import ADaMoSHiFiGANV1
    from diffusers import AutoencoderDC
    from transformers import UMT5Config, UMT5EncoderModel

    def config(part: str, sizes: dict, drop=()) -> dict:
        d = json.loads((TINY / part / "config.json").read_text())
        return {k: v for k, v in {**d, **sizes}.items() if not k.startswith("_") and k not in drop}

    with torch.device(device):
        parts = {
            "ace_step_transformer": ACEStepTransformer2DModel(**config("ace_step_transformer", FULL_DIT, TINY_LYRIC_KEYS)),
            "music_dcae_f8c8": AutoencoderDC(**config("music_dcae_f8c8", FULL_DCAE)),
            "music_vocoder": ADaMoSHiFiGANV1(**config("music_vocoder", FULL_VOCODER)),
            "umt5-base": UMT5EncoderModel(UMT5Config(**config("umt5-base", FULL_UMT5))),
        }  # fmt: skip
    for name, model in parts.items():
        model.to(torch.bfloat16).save_pretrained(str(folder / name), safe_serialization=True)
        del model
    parts.clear()
    for f in (TINY / "umt5-base").iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, folder / "umt5-base" / f.name)
    gc.collect()
    return folder


# --- the two pipelines -------------------------------------------------------------------------------------------


OFFICIAL_SPEAKER_DIM = 512  # official __call__: torch.zeros(batch_size, 512) speaker embeddings


class FirstFeatures(torch.nn.Module):
    """A tiny DiT's speaker projection fed the first ``in_features`` of the official pipeline's 512 zeros (as
    tests/golden/make_pipeline.py does; our pipeline feeds zeros of the model's width: the same zeros)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x[..., : self.linear.in_features])


def official_pipeline(folder: Path, device: str, dtype: torch.dtype):
    """``ACEStepPipeline`` with its parts loaded as ``load_checkpoint`` loads them (the official class hard-codes a
    full-size lyric encoder; a tiny checkpoint records its smaller one in config.json, rebuilt here with the
    official ConformerEncoder). Audio is kept in memory instead of written."""
    import acestep.pipeline_ace_step as official
    from acestep.models.ace_step_transformer import ACEStepTransformer2DModel
    from acestep.models.lyrics_utils.lyric_encoder import ConformerEncoder
    from loguru import logger
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, UMT5EncoderModel

    logger.remove()  # the official code logs every step
    pipe = official.ACEStepPipeline(checkpoint_dir=str(folder), dtype="float32")
    pipe.device, pipe.dtype = torch.device(device), dtype
    dit_dir = folder / "ace_step_transformer"
    cfg = json.loads((dit_dir / "config.json").read_text())
    dit = ACEStepTransformer2DModel(
        **{k: v for k, v in cfg.items() if not k.startswith("_") and k not in TINY_LYRIC_KEYS}
    )
    if "lyric_encoder_num_blocks" in cfg:
        h = cfg["lyric_hidden_size"]
        dit.lyric_encoder = ConformerEncoder(input_size=h, output_size=h, static_chunk_size=0,
            attention_heads=cfg["lyric_encoder_attention_heads"], linear_units=cfg["lyric_encoder_linear_units"],
            num_blocks=cfg["lyric_encoder_num_blocks"])  # fmt: skip
    dit.load_state_dict(load_file(str(dit_dir / "diffusion_pytorch_model.safetensors")), strict=True)
    if dit.speaker_embedder.in_features != OFFICIAL_SPEAKER_DIM:  # tiny: fed the first features of the zeros
        dit.speaker_embedder = FirstFeatures(dit.speaker_embedder)
    pipe.ace_step_transformer = dit.to(device).eval().to(dtype)
    pipe.music_dcae = official.MusicDCAE(
        dcae_checkpoint_path=str(folder / "music_dcae_f8c8"),
        vocoder_checkpoint_path=str(folder / "music_vocoder"),
    ).to(device).eval().to(dtype)  # fmt: skip
    pipe.lang_segment = official.LangSegment()
    pipe.lang_segment.setfilters(official.language_filters.default)
    pipe.lyric_tokenizer = official.VoiceBpeTokenizer()
    te = UMT5EncoderModel.from_pretrained(str(folder / "umt5-base"), torch_dtype=dtype)
    pipe.text_encoder_model = te.to(device).eval().to(dtype).requires_grad_(False)
    pipe.text_tokenizer = AutoTokenizer.from_pretrained(str(folder / "umt5-base"))
    pipe.loaded = True
    audio = []

    def keep(target_wav, idx, save_path=None, sample_rate=48000, format="wav"):
        audio.append(target_wav)
        return str(Path(save_path).with_name(f"official_{idx}.{format}"))

    pipe.save_wav_file = keep  # torchaudio >= 2.9 cannot save without torchcodec; the timing needs no file
    pipe.kept_audio = audio
    return pipe


class Side:
    """One pipeline with the hooks that time it."""

    def __init__(self, name: str, run, text_encoder, dit, vae, device: str):
        self.name, self.run, self.device = name, run, device
        self.events: list[tuple[str, float]] = []
        self.rows = 0
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

        def mark(what):
            def hook(*_):
                sync()
                self.events.append((what, time.perf_counter()))

            return hook

        def count(module, inputs, output):
            self.rows += output.shape[0]

        text_encoder.register_forward_pre_hook(mark("text_start"))
        text_encoder.register_forward_hook(mark("text_end"))
        dit.proj_in.register_forward_pre_hook(mark("dit_start"))
        dit.final_layer.register_forward_hook(mark("dit_end"))
        dit.final_layer.register_forward_hook(count)
        for method in ("decode", "decode_overlap"):
            if hasattr(vae, method):
                original = getattr(vae, method)

                def timed(*args, _original=original, **kwargs):
                    mark("decode_start")()
                    out = _original(*args, **kwargs)
                    mark("decode_end")()
                    return out

                object.__setattr__(vae, method, timed)
        self.sync = sync

    def __call__(self, steps: int) -> dict:
        self.events.clear()
        self.rows = 0
        gc.collect()
        self.sync()
        start = time.perf_counter()
        audio = self.run()
        self.sync()
        total = time.perf_counter() - start
        ev = self.events

        def inside(what):
            starts = [t for k, t in ev if k == f"{what}_start"]
            ends = [t for k, t in ev if k == f"{what}_end"]
            return sum(e - s for s, e in zip(starts, ends))

        dit = [t for k, t in ev if k.startswith("dit_")]
        calls = sum(1 for k, _ in ev if k == "dit_end")
        sampling = dit[-1] - dit[0]
        return dict(total=total, text=inside("text"), sampling=sampling, decode=inside("decode"),
                    per_step=sampling / steps, calls=calls / steps, rows=self.rows / steps, audio=audio)  # fmt: skip


# --- main --------------------------------------------------------------------------------------------------------


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        return f"{names[0]} (torch threads: {torch.get_num_threads()})"
    except (OSError, IndexError):
        return f"{platform.processor() or platform.machine()} (torch threads: {torch.get_num_threads()})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--size", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                    help="default: float32 on cpu, bfloat16 (the official default) on cuda")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument(
        "--out", default=None, help="result file (default: benchmarks/results/<date>-<device>-<size>.md)"
    )
    args = ap.parse_args()
    if args.size == "full" and args.device != "cuda":
        sys.exit(
            "bench_sampling.py: --size full needs --device cuda (3.5B random weights on a CPU take too long)"
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_sampling.py: --device cuda but torch sees no GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype_name = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)

    import acestep.pipeline_ace_step  # noqa: F401  (sets its global torch flags; both sides run under them)

    torch.set_float32_matmul_precision(
        "highest"
    )  # the official import sets "high" (TF32); compare in full fp32
    from acestep_models.checkpoint import load_all
    from acestep_models.params import load_params
    from acestep_models.pipeline import generate

    tmp = Path(tempfile.mkdtemp(prefix="bench_sampling_"))
    try:
        folder = TINY if args.size == "tiny" else write_full_checkpoint(tmp / "checkpoint", args.device)
        settings = dict(audio_duration=args.seconds, prompt=PROMPT, lyrics=LYRICS, infer_step=args.steps,
                        manual_seeds=[1234], retake_seeds=[5678])  # fmt: skip
        params = load_params(settings)

        pipe = official_pipeline(folder, args.device, dtype)

        def run_official():
            pipe.kept_audio.clear()
            pipe(format="wav", save_path=str(tmp / "official.wav"), **settings)
            return pipe.kept_audio[0]

        official = Side("official", run_official, pipe.text_encoder_model, pipe.ace_step_transformer,
                        pipe.music_dcae, args.device)  # fmt: skip
        models = load_all(folder, dtype=dtype, device=args.device, vocab=OFFICIAL_VOCAB)
        ours = Side(
            "ours",
            lambda: generate(models, params, device=args.device, dtype=dtype).audio[0],
            models.text_encoder, models.dit, models.vae, args.device,
        )  # fmt: skip

        with torch.inference_mode():
            for side in (official, ours):  # warm-up: kernels, allocator, lazily built buffers
                side(args.steps)
            runs = {"official": [], "ours": []}
            for _ in range(args.repeats):
                for side in (official, ours):
                    runs[side.name].append(side(args.steps))
        report(args, dtype_name, runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(args, dtype_name: str, runs: dict) -> None:
    med = {
        side: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "audio"}
        for side, rs in runs.items()
    }
    a, b = runs["official"][-1]["audio"].float().cpu(), runs["ours"][-1]["audio"].float().cpu()
    n = min(a.shape[-1], b.shape[-1])
    difference = float((b[..., :n] - a[..., :n]).norm() / a[..., :n].norm())
    rows = [
        ("text encode (s)", "text", "{:.4f}"),
        ("sampling (s)", "sampling", "{:.4f}"),
        ("decode (s)", "decode", "{:.4f}"),
        ("whole call (s)", "total", "{:.4f}"),
        ("time per sampling step (s)", "per_step", "{:.4f}"),
        ("DiT forward calls per step", "calls", "{:.2f}"),
        ("DiT passes (batch rows) per step", "rows", "{:.2f}"),
    ]
    lines = ["| measure | official | ours | ours / official |", "|---|---:|---:|---:|"]
    for label, key, fmt in rows:
        o, u = med["official"][key], med["ours"][key]
        lines.append(
            f"| {label} | {fmt.format(o)} | {fmt.format(u)} | {u / o:.2f} |"
            if o
            else f"| {label} | - | - | - |"
        )
    rtf = {s: args.seconds / med[s]["total"] for s in med}
    lines.append(
        f"| RTF (audio s / wall s) | {rtf['official']:.2f} | {rtf['ours']:.2f} | {rtf['ours'] / rtf['official']:.2f} |"
    )
    device = machine(args.device)
    header = [
        f"# Sampling benchmark: {args.size} weights on {args.device}",
        "",
        f"- date: {time.strftime('%Y-%m-%d')}",
        f"- device: {device}"
        + (f", load average {os.getloadavg()[0]:.1f} at the end" if args.device == "cpu" else ""),
        f"- torch {torch.__version__}, Python {platform.python_version()}, dtype {dtype_name}, "
        f"float32 matmul precision highest",
        f"- configuration: {args.seconds:g} s, {args.steps} steps, euler, APG (guidance 15, interval 0.5), "
        "ERG tag/lyric/diffusion on, omega 10, batch 1, seeds 1234/5678",
        f"- median of {args.repeats} runs after one warm-up, both pipelines in one process, alternating",
        f"- weights: {'tests/golden/tiny' if args.size == 'tiny' else 'full-size random (released configs)'}",
        f"- our audio vs the official: relative L2 {difference:.2e}",
        "",
        "Command:",
        "",
        "```",
        f"ACESTEP_REF=... python benchmarks/bench_sampling.py {' '.join(sys.argv[1:])}",
        "```",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    print(text)
    out = (
        Path(args.out)
        if args.out
        else ROOT / "benchmarks" / "results" / f"{time.strftime('%Y-%m-%d')}-{args.device}-{args.size}.md"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
