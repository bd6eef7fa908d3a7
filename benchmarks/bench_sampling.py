"""Time one generation, prompt to 48 kHz audio, by the official ACE-Step pipeline and by ours, on the same weights, in
one process and one run.

    ACESTEP_REF=/work/ref/ACE-Step /work/venvs/ref/bin/python benchmarks/bench_sampling.py --device cpu --size tiny

Runs the official ``ACEStepPipeline.__call__`` (imported from the checkout in ``$ACESTEP_REF``), our
``acestep_models.v1.pipeline.generate``, and ours with the DiT's matrices stored in float8 (the low-memory mode,
``--dit-weight-dtype fp8_e4m3fn``) on one configuration (default: 10 s, 10 steps, euler, APG, ERG on, the official
defaults otherwise), alternately, ``--repeats`` times after a warm-up, and prints the median of each measure with
the ratios to the official. Then the long songs (``--long``, default 240 and 480 s), once each, official and ours.
Measures, taken with hooks so that every side is timed the same way:

- text encode: time inside the UMT5 encoder's forward (the prompt and, with ERG, its "null" pass);
- sampling: from the first DiT pass to the end of the last (the lyric encoder runs before it);
- decode: time inside the DCAE + vocoder ``decode``;
- DiT calls per step: forward calls of the DiT's final layer (hooked on both models) / steps; DiT rows per item
  and step: the batch rows those calls processed / (batch size x steps), i.e. DiT passes per step as the
  official code counts them (ours batches a step's conditional and unconditional passes into one call);
- RTF: seconds of audio per second of wall time for the whole call;
- memory: the pipeline's weights (parameters and buffers of its text encoder, DiT and VAE) plus the peak working
  memory of the call: the CUDA allocator's peak above what was allocated before the call, or on the CPU the peak
  resident set above the resident set before it;
- seam (long songs): our decode, windowed for bounded memory, against one pass over the whole song.

``--size tiny`` uses the tiny random checkpoint of the tests (tests/golden/tiny); ``--size full`` builds a
full-size random-weight checkpoint (3.5B) from the released configs into a temporary folder (GPU only) and
loads it through each side's own loader. Writes the table to benchmarks/results/<date>-<device>-<size>.md.
Run with the official code's Python environment (which must import acestep_models as well); benchmarks/README.md
says how to run it on a GPU machine.
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


class Memory:
    """Peak memory of one call beyond what was allocated before it: on CUDA the allocator's peak; on the CPU the
    process's peak resident set (VmHWM, reset through /proc/self/clear_refs)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        if not self.cuda:
            import ctypes

            self.libc = ctypes.CDLL("libc.so.6")
            # glibc keeps freed memory for reuse, which hides a later call's peak: serve every large block with
            # mmap (returned to the system when freed) and trim the heap before each call
            M_MMAP_THRESHOLD = -3
            self.libc.mallopt(M_MMAP_THRESHOLD, 1 << 16)

    @staticmethod
    def _status(field: str) -> int:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident set
            self.base = self._status("VmRSS")

    def peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.base
        return self._status("VmHWM") - self.base

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def measure(self, fn):
        """(fn(), its wall time in seconds, its peak working memory in bytes)."""
        gc.collect()
        self.start()
        start = time.perf_counter()
        result = fn()
        self.sync()
        return result, time.perf_counter() - start, self.peak()


def tensor_bytes(*modules: torch.nn.Module) -> int:
    seen = {}
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


class Side:
    """One pipeline with the hooks that time it."""

    def __init__(self, name: str, run, text_encoder, dit, vae, device: str):
        self.name, self.run, self.device = name, run, device
        self.events: list[tuple[str, float]] = []
        self.rows = 0
        self.weights = tensor_bytes(text_encoder, dit, vae)
        self.memory = Memory(device)
        sync = self.memory.sync

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

    def __call__(self, steps: int, seconds: float) -> dict:
        self.events.clear()
        self.rows = 0
        audio, total, working = self.memory.measure(lambda: self.run(seconds))
        ev = self.events

        def inside(what):
            starts = [t for k, t in ev if k == f"{what}_start"]
            ends = [t for k, t in ev if k == f"{what}_end"]
            return sum(e - s for s, e in zip(starts, ends))

        dit = [t for k, t in ev if k.startswith("dit_")]
        calls = sum(1 for k, _ in ev if k == "dit_end")
        sampling = dit[-1] - dit[0]
        return dict(total=total, text=inside("text"), sampling=sampling, decode=inside("decode"),
                    per_step=sampling / steps, calls=calls / steps, rows=self.rows / steps,
                    rtf=seconds / total, weights=self.weights / 2**30, working=working / 2**30,
                    peak=(self.weights + working) / 2**30, audio=audio)  # fmt: skip


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
    ap.add_argument(
        "--long", default="240,480", help="long-song durations in seconds, run once each ('' for none)"
    )
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
    long_songs = [float(x) for x in args.long.split(",") if x.strip()]

    import acestep.pipeline_ace_step  # noqa: F401  (sets its global torch flags; both sides run under them)

    # the official import sets "high" (TF32); compare in full fp32
    torch.set_float32_matmul_precision("highest")
    from acestep_models.v1.checkpoint import load_all
    from acestep_models.v1.params import load_params
    from acestep_models.v1.pipeline import generate

    tmp = Path(tempfile.mkdtemp(prefix="bench_sampling_"))
    try:
        folder = TINY if args.size == "tiny" else write_full_checkpoint(tmp / "checkpoint", args.device)

        def settings(seconds: float) -> dict:
            return dict(audio_duration=seconds, prompt=PROMPT, lyrics=LYRICS, infer_step=args.steps,
                        manual_seeds=[1234], retake_seeds=[5678])  # fmt: skip

        pipe = official_pipeline(folder, args.device, dtype)

        def run_official(seconds: float):
            pipe.kept_audio.clear()
            pipe(format="wav", save_path=str(tmp / "official.wav"), **settings(seconds))
            return pipe.kept_audio[0]

        sides = {"official": Side("official", run_official, pipe.text_encoder_model, pipe.ace_step_transformer,
                                  pipe.music_dcae, args.device)}  # fmt: skip
        for name, storage in (("ours", None), ("ours fp8", torch.float8_e4m3fn)):
            models = load_all(
                folder, dtype=dtype, device=args.device, vocab=OFFICIAL_VOCAB, dit_weight_dtype=storage
            )

            def run(seconds: float, models=models):
                return generate(models, load_params(settings(seconds)), device=args.device, dtype=dtype)

            sides[name] = Side(name, lambda s, run=run: run(s).audio[0], models.text_encoder, models.dit,
                               models.vae, args.device)  # fmt: skip
            sides[name].models = models

        runs = {name: [] for name in sides}
        with torch.inference_mode():
            for side in sides.values():  # warm-up: kernels, allocator, lazily built buffers
                side(args.steps, args.seconds)
            for _ in range(args.repeats):
                for side in sides.values():
                    runs[side.name].append(side(args.steps, args.seconds))
            long_runs = {}
            decoders = {
                "official": lambda z: pipe.music_dcae.decode(z, sr=48000)[1],
                "official overlapped": lambda z: pipe.music_dcae.decode_overlap(z, sr=48000)[1],
                "ours": lambda z: sides["ours"].models.vae.decode(z),
            }
            for seconds in long_songs:
                long_runs[seconds] = decode_run(
                    decoders, sides["ours"].models.vae, seconds, args.device, dtype
                )
        report(args, dtype_name, runs, long_runs, long_songs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def decode_run(decoders: dict, vae, seconds: float, device: str, dtype) -> dict:
    """Each decoder once on the same random latents of ``seconds``: time and peak working memory; and the seam
    measure: our windowed decode against one pass of our DCAE decoder and vocoder over the whole song."""
    from acestep_models.v1.music_dcae import frames_for_seconds

    z = torch.randn(1, 8, 16, frames_for_seconds(seconds), generator=torch.Generator().manual_seed(0))
    z = z.to(device, dtype)
    memory = Memory(device)
    result = {}
    for name, decode in decoders.items():
        audio, seconds_taken, working = memory.measure(lambda decode=decode: decode(z))
        result[name] = dict(time=seconds_taken, working=working / 2**30)
        if name == "ours":
            windowed = audio[0].float()
        del audio
    one_pass = vae.decode(z, window=None, vocoder_tile=None)[0].float()
    result["seam"] = float((windowed - one_pass).norm() / one_pass.norm())
    return result


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    n = min(a.shape[-1], b.shape[-1])
    return float((b[..., :n] - a[..., :n]).norm() / a[..., :n].norm())


def report(args, dtype_name: str, runs: dict, long_runs: dict, long_songs: list[float]) -> None:
    med = {
        side: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "audio"}
        for side, rs in runs.items()
    }
    official = runs["official"][-1]["audio"]
    difference = {
        name: relative_l2(official, rs[-1]["audio"]) for name, rs in runs.items() if name != "official"
    }
    rows = [
        ("text encode (s)", "text", "{:.4f}"),
        ("sampling (s)", "sampling", "{:.4f}"),
        ("decode (s)", "decode", "{:.4f}"),
        ("whole call (s)", "total", "{:.4f}"),
        ("time per sampling step (s)", "per_step", "{:.4f}"),
        ("DiT forward calls per step", "calls", "{:.2f}"),
        ("DiT passes (batch rows) per step", "rows", "{:.2f}"),
        ("RTF (audio s / wall s)", "rtf", "{:.2f}"),
        ("weights (GiB)", "weights", "{:.4f}"),
        ("peak working memory of the call (GiB)", "working", "{:.4f}"),
        ("peak memory: weights + working (GiB)", "peak", "{:.4f}"),
    ]
    names = list(med)
    lines = [
        "| measure | " + " | ".join(names) + " | " + " | ".join(f"{n} / official" for n in names[1:]) + " |",
        "|---|" + "---:|" * (2 * len(names) - 1),
    ]
    for label, key, fmt in rows:
        values = [fmt.format(med[n][key]) for n in names]
        o = med["official"][key]
        ratios = [f"{med[n][key] / o:.2f}" if o else "-" for n in names[1:]]
        lines.append(f"| {label} | " + " | ".join(values + ratios) + " |")
    lines.append(
        "| audio vs the official (relative L2) | - | "
        + " | ".join(f"{difference[n]:.2e}" for n in names[1:])
        + " |"
        + " - |" * (len(names) - 1)
    )
    if long_songs:
        names = ["official", "official overlapped", "ours"]
        lines += [
            "",
            "Long songs, decode only (latents to 48 kHz audio, random latents, one run each). official: "
            "`MusicDCAE.decode`, one pass; official overlapped: its `decode_overlap` (the app's low-memory option); "
            "ours: `MusicDCAE.decode`, windowed. Memory: peak working memory of the decode (weights not included). "
            "Seam: our windowed decode against one pass of our decoder over the whole song (relative L2).",
            "",
            "| seconds | "
            + " | ".join(f"{n} (s)" for n in names)
            + " | "
            + " | ".join(f"{n} (GiB)" for n in names)
            + " | ours time / official | ours memory / official | seam |",
            "|---:|" + "---:|" * (2 * len(names) + 3),
        ]
        for seconds in long_songs:
            r = long_runs[seconds]
            o, u = r["official"], r["ours"]
            lines.append(
                f"| {seconds:g} | "
                + " | ".join(f"{r[n]['time']:.2f}" for n in names)
                + " | "
                + " | ".join(f"{r[n]['working']:.3f}" for n in names)
                + f" | {u['time'] / o['time']:.2f} | {u['working'] / o['working']:.2f} | {r['seam']:.1e} |"
            )
    device = machine(args.device)
    header = [
        f"# Generation benchmark: {args.size} weights on {args.device}",
        "",
        f"- date: {time.strftime('%Y-%m-%d')}",
        f"- device: {device}"
        + (f", load average {os.getloadavg()[0]:.1f} at the end" if args.device == "cpu" else ""),
        f"- torch {torch.__version__}, Python {platform.python_version()}, dtype {dtype_name}, "
        f"float32 matmul precision highest"
        + (f", CUDA driver {cuda_driver()}" if args.device == "cuda" else ""),
        f"- configuration: {args.seconds:g} s, {args.steps} steps, euler, APG (guidance 15, interval 0.5), "
        "ERG tag/lyric/diffusion on, omega 10, batch 1, seeds 1234/5678, prompt to 48 kHz audio",
        f"- median of {args.repeats} runs after one warm-up, all pipelines in one process, alternating",
        f"- weights: {'tests/golden/tiny' if args.size == 'tiny' else 'full-size random (released configs)'}",
        "- ours fp8: the DiT's matrices stored as float8_e4m3fn, computed in the dtype above (`--dit-weight-dtype`)",
        "- memory: "
        + ("CUDA allocator peak" if args.device == "cuda" else "peak resident set (VmHWM)")
        + " during the call above what was allocated before it, plus the pipeline's own weights",
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


def cuda_driver() -> str:
    import subprocess

    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    main()
