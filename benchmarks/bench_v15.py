"""Time ACE-Step 1.5 by the official code and by ours, in one process, on the same weights: the 5 Hz LM
planner (tokens per second, time to the first audio code) and one generation (time per step, DiT calls,
memory).

    PYTHONPATH=/work/ref15/ACE-Step-1.5:/work/main /work/ref15/venv/bin/python benchmarks/bench_v15.py \\
        --device cpu --size tiny --threads 1

The official parts run only where the official ACE-Step 1.5 code (commit 89031b8) is importable, i.e. run by
its Python environment with the checkout on PYTHONPATH (benchmarks/README.md says how); that environment must
import acestep_models as well.

LM (``--what lm``): one official ``LLMHandler.generate_with_stop_condition`` call (``pt`` backend, after
``torch.manual_seed(seed)``) against our ``Planner.plan`` with the same keyword arguments and seed (CoT phase
then the codes phase, CFG 2.0, the official defaults), and, where ComfyUI 0.20.1 imports (``--comfyui``),
ComfyUI's native loop (``comfy.text_encoders.ace15.generate_audio_codes``: codes only, its own prompt with the
metas the official CoT chose, its own seeded generator) on the same weights. Measures come from hooks on each
side's LM module (CUDA events on a GPU, so no side is made to synchronise): a forward over more than one token
starts a phase (its prefill); every forward feeds one token; the decode rate of a phase is (its tokens - 1) /
(the time from the end of its prefill to the end of its last forward); the time to the first audio code runs
from the call's start to the start of the codes phase's second forward (the first code has been drawn then).
On CUDA ours runs twice: as it comes (the codes phase replays one CUDA graph per token; each replay is timed as one
forward) and with ``Planner.step = "eager"`` (the plain forward per token), the column "ours, no CUDA graphs".

Generation (``--what pipeline``): the official ``AceStepHandler.generate_music`` (its parts set as
``initialize_service`` loads them, as tests/golden/make_v15_pipeline.py does) against our
``pipeline.generate``, same parameters and seeds (``random.seed`` + ``torch.manual_seed`` for the official
global RNGs, ``global_seed`` for ours), turbo 8 steps and base with CFG (APG, guidance 7). Sampling runs from
the first DiT decoder pass to the end of the last; DiT calls and batch rows are counted on each side's
decoder; decode is the time inside the VAE decoder; memory is the side's weights plus the call's peak working
memory (the CUDA allocator's peak above what was allocated before, or on the CPU the peak resident set above
the resident set before).

Sizes: ``tiny`` = the tests' tiny official weights (tests/golden/v15/lm/tiny-lm,
tests/golden/v15/pipeline/tiny); ``mid`` = tiny plus a random-weight LM of the official 0.6B shape (CPU
friendly with a short ``--lm-seconds``); ``full`` (GPU) = random-weight LMs of the 1.7B and 4B shapes and
full-size random weights of the released DiT, VAE and text encoder configs, in bfloat16, for a 240 s song.
``--smoke`` runs the ``full`` code path with every size shrunk (a CPU check of that path; its figures mean
nothing). Tables go to benchmarks/results/<date>-<device>-v15-{lm,pipeline}-<size>.md. No test asserts a time.
"""

from __future__ import annotations

import argparse
import ast
import gc
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("ACESTEP_DISABLE_TQDM", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

import torch  # noqa: E402

try:
    import acestep.handler  # noqa: F401
    import acestep.llm_inference  # noqa: F401

    OFFICIAL = True
except ImportError as e:  # ours (and ComfyUI) still run; the ratios need the official side
    OFFICIAL = False
    OFFICIAL_ERROR = str(e)

GOLDEN = ROOT / "tests" / "golden" / "v15"
TINY_LM = GOLDEN / "lm" / "tiny-lm"
TINY_ROOT = GOLDEN / "pipeline" / "tiny"
TINY_TEXT_ENCODER = GOLDEN / "tiny" / "Qwen3-Embedding-0.6B"  # its tokenizer serves the full-size encoder too
CAPTION = "pop, upbeat, female vocals, synth"
LYRICS = "[verse]\nNeon rivers, midnight trains\nWe sing it loud\n[chorus]\nOh oh, alive tonight"
LM_SEED, PIPELINE_SEED, GLOBAL_SEED = 11, "42", 1

# --- weights ------------------------------------------------------------------------------------------------

AUDIO_CODES = 65535
LM_VOCAB = 151669 + AUDIO_CODES
LM_COMMON = dict(vocab_size=LM_VOCAB, head_dim=128, rms_norm_eps=1e-6, rope_theta=1000000,
                 max_position_embeddings=40960, attention_bias=False, hidden_act="silu",
                 tie_word_embeddings=True, use_sliding_window=False, sliding_window=None)  # fmt: skip
LM_SHAPES = {  # the Qwen3 shapes of the official acestep-5Hz-lm-{0.6B,1.7B,4B}
    "0.6B": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8),
    "1.7B": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8),
    "4B": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8),
    "smoke": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=64),
}  # fmt: skip
# Released ACE-Step 1.5 sizes: the DiT is AceStepConfig's defaults; the VAE is ComfyUI's 48 kHz Oobleck
# (comfy/sd.py: channels 128, latent 64, c_mults [1, 2, 4, 8, 16], strides [2, 4, 4, 6, 10]); the text
# encoder is Qwen3-Embedding-0.6B.
FULL_VAE = dict(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 6, 10],
                channel_multiples=[1, 2, 4, 8, 16], decoder_channels=128, decoder_input_channels=64,
                audio_channels=2, sampling_rate=48000)  # fmt: skip
FULL_TEXT_ENCODER = dict(vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6,
                         rope_theta=1000000, max_position_embeddings=32768,
                         tie_word_embeddings=True)  # fmt: skip
SMOKE_DIT = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=64, fsq_dim=128, text_hidden_dim=128,
                 num_lyric_encoder_hidden_layers=1, num_timbre_encoder_hidden_layers=1,
                 num_audio_decoder_hidden_layers=2)  # fmt: skip
SMOKE_VAE = dict(FULL_VAE, decoder_channels=8, channel_multiples=[1, 1, 1, 1, 1])
SMOKE_TEXT_ENCODER = dict(FULL_TEXT_ENCODER, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=64)  # fmt: skip
SILENCE_FRAMES = 15000  # 600 s at 25 Hz: text2music targets are the silence latent's first T frames

QWEN_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
QWEN_NOT_SPECIAL = [
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]  # fmt: skip


def chat_template(path: str) -> str:
    """The Qwen3 chat template the official prompts are rendered with: a .jinja file, or the optimum-intel
    2.2.0 wheel (its ``COMPLEX_CHAT_TEMPLATES`` key with ``last_query_index`` and ``enable_thinking``)."""
    p = Path(path)
    if p.suffix != ".whl":
        return p.read_text(encoding="utf-8")
    src = zipfile.ZipFile(p).read("optimum/exporters/openvino/utils.py").decode()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "COMPLEX_CHAT_TEMPLATES" for t in node.targets
        ):
            for key in ast.literal_eval(node.value):
                if "last_query_index" in key and "enable_thinking" in key:
                    return key
    raise ValueError(f"{path}: no Qwen3 chat template in COMPLEX_CHAT_TEMPLATES")


def write_lm_tokenizer(folder: Path, bpe: Path, template: str) -> None:
    """The 5 Hz LM tokenizer in the official layout (as tests/golden/make_v15_lm.py builds it): Qwen's BPE,
    the Qwen3 added tokens, the 65,535 audio-code tokens, ``<|im_end|>`` as EOS and the Qwen3 chat
    template."""
    from transformers import AddedToken, Qwen2TokenizerFast

    tok = Qwen2TokenizerFast(vocab_file=str(bpe / "vocab.json"), merges_file=str(bpe / "merges.txt"))
    for content in QWEN_SPECIAL[1:]:
        tok.add_tokens([AddedToken(content, special=True, normalized=False)], special_tokens=True)
    for content in QWEN_NOT_SPECIAL:
        tok.add_tokens([AddedToken(content, special=False, normalized=False)])
    tok.add_tokens(
        [AddedToken(f"<|audio_code_{i}|>", special=False, normalized=False) for i in range(AUDIO_CODES)]
    )
    tok.eos_token, tok.pad_token, tok.unk_token = "<|im_end|>", "<|endoftext|>", None
    tok.model_max_length = 131072
    tok.chat_template = template
    assert len(tok) == LM_VOCAB, len(tok)
    tok.save_pretrained(folder)


def write_random_lm(folder: Path, shape: str, device: str, seed: int = 5150) -> None:
    """A Qwen3ForCausalLM of ``shape`` with seeded random weights (as the tiny LM's: norms N(1, 0.25),
    embedding N(0, 0.3), projections N(0, 1/fan_in)), saved in bfloat16 as an official acestep-5Hz-lm-*
    folder."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    sizes = {**LM_COMMON, **LM_SHAPES[shape]}
    config = Qwen3Config(**sizes, max_window_layers=sizes["num_hidden_layers"])
    g = torch.Generator(device).manual_seed(seed)
    with torch.device(device):
        model = Qwen3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.25, generator=g)
            elif "embed_tokens" in name:
                p.normal_(0.0, 0.3, generator=g)
            else:
                p.normal_(0.0, p.shape[1] ** -0.5, generator=g)
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    (folder / "generation_config.json").unlink(missing_ok=True)
    del model
    gc.collect()


def randomise(model: torch.nn.Module, seed: int, device: str) -> None:
    """Every parameter redrawn so activations stay O(1) (tests/golden/make_v15_pipeline.py's scheme)."""
    g = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g, device=p.device)
            if name.endswith("bias"):
                r.mul_(0.1)
            elif p.ndim == 1:
                r.mul_(0.1).add_(1.0)
            elif "scale_shift_table" in name:
                r.mul_(0.3)
            elif not ("special_token" in name or name == "null_condition_emb"):
                r.div_(p[0].numel() ** 0.5)
            p.copy_(r)
            del r


def write_full_root(folder: Path, device: str, smoke: bool) -> Path:
    """An official root (``acestep-v15-turbo/`` + ``silence_latent.pt``, ``vae/``, ``Qwen3-Embedding-0.6B/``)
    with random weights at the released sizes (``smoke``: shrunk), made by the official classes."""
    from acestep.models.turbo.configuration_acestep_v15 import AceStepConfig
    from acestep.models.turbo.modeling_acestep_v15_turbo import AceStepConditionGenerationModel
    from diffusers import AutoencoderOobleck
    from transformers import Qwen3Config, Qwen3Model

    dit_sizes = SMOKE_DIT if smoke else {}
    with torch.device(device):
        dit = AceStepConditionGenerationModel(
            AceStepConfig(**dit_sizes, model_version="turbo", is_turbo=True)
        )
    randomise(dit, 150001, device)
    dit_dir = folder / "acestep-v15-turbo"
    dit.to(torch.bfloat16).save_pretrained(str(dit_dir), safe_serialization=True)
    latent = dit.config.audio_acoustic_hidden_dim
    del dit
    g = torch.Generator().manual_seed(150002)
    torch.save(0.5 * torch.randn(1, latent, SILENCE_FRAMES, generator=g), dit_dir / "silence_latent.pt")
    with torch.device(device):
        vae = AutoencoderOobleck(**(SMOKE_VAE if smoke else FULL_VAE))
    vae.save_pretrained(str(folder / "vae"), safe_serialization=True)
    del vae
    te_sizes = SMOKE_TEXT_ENCODER if smoke else FULL_TEXT_ENCODER
    with torch.device(device):
        te = Qwen3Model(Qwen3Config(**te_sizes, max_window_layers=te_sizes["num_hidden_layers"]))
    te_dir = folder / "Qwen3-Embedding-0.6B"
    te.to(torch.bfloat16).save_pretrained(str(te_dir), safe_serialization=True)
    del te
    for f in TINY_TEXT_ENCODER.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "added_tokens")):
            shutil.copy(f, te_dir / f.name)
    gc.collect()
    return folder


# --- measuring ----------------------------------------------------------------------------------------------


class Clock:
    """Time marks that never synchronise: CUDA events on a GPU (read after the call), perf_counter on the
    CPU."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def seconds(self, a, b) -> float:
        return a.elapsed_time(b) / 1000 if self.cuda else b - a


class Memory:
    """Peak memory of one call beyond what was allocated before it (as bench_sampling.py): on CUDA the
    allocator's peak; on the CPU the peak resident set (VmHWM, reset through /proc/self/clear_refs)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.libc = None
        if not self.cuda:
            try:
                import ctypes

                self.libc = ctypes.CDLL("libc.so.6")
                self.libc.mallopt(
                    -3, 1 << 16
                )  # M_MMAP_THRESHOLD: large blocks go back to the system when freed
            except OSError:
                pass

    @staticmethod
    def _status(field: str) -> int:
        try:
            for line in open("/proc/self/status"):
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def measure(self, fn):
        """(fn(), its wall time in seconds, its peak working memory in bytes)."""
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            if self.libc is not None:
                self.libc.malloc_trim(0)
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
            base = self._status("VmRSS")
        start = time.perf_counter()
        result = fn()
        self.sync()
        wall = time.perf_counter() - start
        peak = (torch.cuda.max_memory_allocated() if self.cuda else self._status("VmHWM")) - base
        return result, wall, max(peak, 0)


def tensor_bytes(*modules: torch.nn.Module) -> int:
    seen = {}
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    n = min(a.shape[-1], b.shape[-1])
    return float((a[..., :n] - b[..., :n]).norm() / b[..., :n].norm().clamp_min(1e-30))


def median_rows(runs: list[dict]) -> dict:
    out = {}
    for k, v in runs[0].items():
        vals = [r[k] for r in runs]
        out[k] = statistics.median(vals) if isinstance(v, (int, float)) and v is not None else vals[-1]
    return out


# --- the LM sides -------------------------------------------------------------------------------------------


class LMSide:
    """One LM loop with hooks on its LM module: ``tokens_in(args, kwargs)`` says how many tokens a forward
    feeds."""

    def __init__(self, name: str, run, module: torch.nn.Module, tokens_in, device: str, weights: int):
        self.name, self.run, self.weights = name, run, weights
        self.clock, self.memory = Clock(device), Memory(device)
        self.forwards: list = []
        pending = []

        def pre(_module, args, kwargs):
            pending.append((tokens_in(args, kwargs), self.clock.mark()))

        def post(_module, args, kwargs, output):
            n, start = pending.pop()
            self.forwards.append((n, start, self.clock.mark()))

        self.handles = [
            module.register_forward_pre_hook(pre, with_kwargs=True),
            module.register_forward_hook(post, with_kwargs=True),
        ]

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def __call__(self, seconds: float) -> dict:
        self.forwards.clear()
        box = {}

        def call():
            box["start"] = self.clock.mark()
            out = self.run(seconds)
            box["end"] = self.clock.mark()
            return out

        with torch.inference_mode():
            out, wall, working = self.memory.measure(call)
        s = lambda m: self.clock.seconds(box["start"], m)  # noqa: E731
        fw = [(n, s(a), s(b)) for n, a, b in self.forwards]
        end = s(box["end"])
        starts = [i for i, f in enumerate(fw) if f[0] > 1]
        phases = [fw[i : (starts[j + 1] if j + 1 < len(starts) else len(fw))] for j, i in enumerate(starts)]
        codes = phases[-1]
        cot = phases[0] if len(phases) > 1 else None

        def rate(ph):
            return (len(ph) - 1) / (ph[-1][2] - ph[0][2]) if len(ph) > 1 and ph[-1][2] > ph[0][2] else None

        return dict(
            total=wall,
            setup=fw[0][1],
            cot_tokens=len(cot) if cot else None,
            cot_time=(codes[0][1] - cot[0][1]) if cot else None,
            cot_rate=rate(cot) if cot else None,
            codes_tokens=len(codes),
            prefill=codes[0][2] - codes[0][1],
            codes_time=end - codes[0][1],
            codes_rate=rate(codes),
            first_code=codes[1][1] if len(codes) > 1 else codes[0][2],
            forwards=len(fw),
            weights=self.weights / 2**30,
            working=working / 2**30,
            output=out,
        )


def lm_kwargs(seconds: float) -> dict:
    """``generate_with_stop_condition`` keywords: the official end-to-end defaults (CFG 2.0, temperature 0.85,
    top-p 0.9), the user's duration injected into the CoT, the CoT caption skipped (bpm, key, language and
    time signature are generated)."""
    return dict(
        caption=CAPTION,
        lyrics=LYRICS,
        infer_type="llm_dit",
        temperature=0.85,
        cfg_scale=2.0,
        top_p=0.9,
        target_duration=seconds,
        user_metadata={"duration": int(seconds)},
        use_cot_caption=False,
        use_cot_language=True,
    )


def official_lm_side(folder: Path, device: str, dtype: torch.dtype) -> LMSide:
    from acestep.llm_inference import LLMHandler

    handler = LLMHandler()
    status, ok = handler.initialize(str(folder.parent), folder.name, backend="pt", device=device, dtype=dtype)
    if not ok:
        raise RuntimeError(status)

    def run(seconds: float):
        torch.manual_seed(LM_SEED)
        r = handler.generate_with_stop_condition(**lm_kwargs(seconds))
        if not r.get("success", True):
            raise RuntimeError(r.get("error"))
        return {"codes": r["audio_codes"], "metadata": r["metadata"]}

    side = LMSide(
        "official", run, handler.llm, lambda a, k: k["input_ids"].shape[1], device, tensor_bytes(handler.llm)
    )
    side.max_duration = handler.constrained_processor.max_duration
    side.keep = handler
    return side


def our_lm_side(
    folder: Path, device: str, dtype: torch.dtype, bpe: Path, max_duration, name: str = "ours", step: str = "auto"
) -> LMSide:  # fmt: skip
    """Our planner; ``step``: its codes phase's decode step (auto: one CUDA graph per token on CUDA)."""
    from acestep_models.v15.planner import load_planner

    planner = load_planner(folder, device=device, dtype=dtype, tokenizer=bpe, max_duration=max_duration)
    planner.step = step

    def run(seconds: float):
        r = planner.plan(**lm_kwargs(seconds), seed=LM_SEED)
        return {"codes": r["audio_codes"], "metadata": r["metadata"]}

    side = LMSide(name, run, planner.model, lambda a, k: a[0].shape[1], device, tensor_bytes(planner.model))
    side.keep = planner
    stepper = planner._codes_stepper

    def timed_stepper(cache, batch):  # a graph's (or static) step bypasses the module's forward: timed as one
        step = stepper(cache, batch)

        def timed(token):
            n, start = len(side.forwards), side.clock.mark()
            logits = step(token)
            if len(side.forwards) == n:  # (an eager step went through the module's hooks)
                side.forwards.append((1, start, side.clock.mark()))
            return logits

        return timed

    planner._codes_stepper = timed_stepper
    return side


def import_comfyui(path: Path, site: str | None, device: str):
    """ComfyUI 0.20.1's modules on sys.path (its extra packages appended from ``site``), in CPU mode on the
    CPU."""
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    if site and site not in sys.path:
        sys.path.append(site)
    import comfy.cli_args

    comfy.cli_args.args.cpu = device == "cpu"
    import comfy.text_encoders.ace15 as ace15

    return ace15


def comfyui_lm_side(folder: Path, device: str, dtype: torch.dtype, ace15, metas: dict) -> LMSide:
    """ComfyUI's native ACE-Step 1.5 LM: its Qwen3 (``llama.Llama2_`` in an ``SDClipModel``, as its
    ``Qwen3_2B_ACE15`` builds it) at this folder's sizes, its tokenizer and prompt,
    ``generate_audio_codes``."""
    import comfy.sd1_clip as S
    import comfy.text_encoders.llama as L
    from safetensors.torch import load_file

    c = json.loads((folder / "config.json").read_text())
    fields = {
        k: c[k]
        for k in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "rms_norm_eps",
            "rope_theta",
        )
    }
    config = L.Qwen3_2B_ACE15_lm_Config(**fields)
    config.head_dim = c["head_dim"]  # a class attribute in ComfyUI (128); the tiny LM's is 8

    class LM(L.BaseLlama, L.BaseQwen3, torch.nn.Module):
        def __init__(self, config_dict, dtype, device, operations):
            super().__init__()
            self.num_layers = config.num_hidden_layers
            self.model = L.Llama2_(config, device=device, dtype=dtype, ops=operations)
            self.dtype = dtype

    model = S.SDClipModel(
        device=device,
        layer="last",
        layer_idx=None,
        textmodel_json_config={},
        dtype=dtype,
        special_tokens={"pad": 151643},
        layer_norm_hidden_state=False,
        model_class=LM,
        enable_attention_masks=True,
        return_attention_masks=True,
        model_options={},
    )
    sd = {k: v.to(dtype) for k, v in load_file(str(folder / "model.safetensors")).items()}
    result = model.load_sd(sd)
    if result.missing_keys:
        raise RuntimeError(f"ComfyUI LM: missing keys {result.missing_keys[:5]}")
    del sd
    model.set_clip_options({"execution_device": torch.device(device)})
    tokenizer = ace15.ACE15Tokenizer()
    sampling = dict(cfg_scale=2.0, temperature=0.85, top_p=0.9, top_k=0)

    def run(seconds: float):
        t = tokenizer.tokenize_with_weights(
            CAPTION, lyrics=LYRICS, duration=seconds, seed=LM_SEED, **metas, **sampling
        )
        n = t["lm_metadata"]["min_tokens"]
        codes = ace15.generate_audio_codes(
            model,
            t["lm_prompt"],
            t["lm_prompt_negative"],
            min_tokens=n,
            max_tokens=n,
            seed=LM_SEED,
            min_p=0.0,
            **sampling,
        )
        return {"codes": codes, "metadata": metas}

    side = LMSide(
        "ComfyUI 0.20.1",
        run,
        model.transformer,
        lambda a, k: k["embeds"].shape[1],
        device,
        tensor_bytes(model.transformer),
    )
    side.keep = model
    return side


def comfy_metas(metadata: dict) -> dict:
    """The CoT's metas as ComfyUI's text-encode node takes them (it has no CoT phase)."""
    out = {}
    for ours, theirs in (
        ("bpm", "bpm"),
        ("keyscale", "keyscale"),
        ("timesignature", "timesignature"),
        ("language", "language"),
    ):
        if metadata.get(ours) not in (None, "", "N/A"):
            out[theirs] = metadata[ours]
    return out


def bench_lm(
    args, label: str, folder: Path, seconds: float, dtype: torch.dtype, together: bool, ace15
) -> dict:
    """Every side on one LM folder: a warm-up, then ``--repeats`` runs (alternating when ``together``, else
    one side at a time, each freed before the next is loaded)."""
    eager = ["ours, no CUDA graphs"] if args.device == "cuda" else []
    names = (["official"] if OFFICIAL else []) + ["ours"] + eager + (["ComfyUI 0.20.1"] if ace15 else [])
    state = {"max_duration": None, "metas": {}}

    def build(name):
        if name == "official":
            side = official_lm_side(folder, args.device, dtype)
            state["max_duration"] = side.max_duration
        elif name.startswith("ours"):
            step = "eager" if name in eager else "auto"
            side = our_lm_side(folder, args.device, dtype, args.bpe, state["max_duration"], name, step)
        else:
            side = comfyui_lm_side(folder, args.device, dtype, ace15, state["metas"])
        return side

    def warm(side):
        out = side(min(seconds, args.warmup_seconds))
        if side.name in ("official", "ours") and not state["metas"]:
            state["metas"].update(comfy_metas(out["output"]["metadata"]))  # the ComfyUI side holds this dict

    runs = {n: [] for n in names}
    if together:
        sides = [build(n) for n in names]
        for side in sides:
            warm(side)
        for _ in range(args.repeats):
            for side in sides:
                runs[side.name].append(side(seconds))
        for side in sides:
            side.close()
        del sides
    else:
        for name in names:
            side = build(name)
            warm(side)
            for _ in range(args.repeats):
                runs[name].append(side(seconds))
            side.close()
            del side
            gc.collect()
            if args.device == "cuda":
                torch.cuda.empty_cache()
    print(
        f"[{label}] done: "
        + ", ".join(f"{n} {statistics.median(r['total'] for r in rs):.2f} s" for n, rs in runs.items()),
        flush=True,
    )
    return {"label": label, "seconds": seconds, "runs": runs, "together": together}


LM_ROWS = [
    ("whole call (s)", "total", "{:.3f}",
     "wall time of one call: both phases (ComfyUI: codes only), prompts included"),
    ("before the first LM forward (s)", "setup", "{:.3f}",
     "call start to the first prefill: prompts, tokenizer, KV cache allocation, decoder state"),
    ("CoT phase: tokens", "cot_tokens", "{:.0f}", "tokens the CoT (metadata) phase drew; ComfyUI has no CoT"),
    ("CoT phase (s)", "cot_time", "{:.3f}", "from the CoT prefill's start to the codes prefill's start"),
    ("CoT decode (tokens/s)", "cot_rate", "{:.1f}",
     "(CoT tokens - 1) / (end of its last forward - end of its prefill)"),
    ("codes phase: tokens", "codes_tokens", "{:.0f}",
     "tokens drawn in the codes phase (official and ours: the codes + EOS)"),
    ("codes prefill (s)", "prefill", "{:.4f}",
     "the codes phase's first forward (both CFG rows, whole prompt)"),
    ("codes phase (s)", "codes_time", "{:.3f}", "from the codes prefill's start to the end of the call"),
    ("codes decode (tokens/s)", "codes_rate", "{:.1f}",
     "(codes tokens - 1) / (end of the last forward - end of the prefill)"),
    ("time to first audio code (s)", "first_code", "{:.3f}",
     "call start to the first code drawn (the codes phase's 2nd forward starts); ComfyUI: no CoT first"),
    ("LM forward calls", "forwards", "{:.0f}", "forwards of the LM module (each feeds both CFG rows)"),
    ("weights (GiB)", "weights", "{:.4f}", "parameters and buffers of the LM"),
    ("peak working memory (GiB)", "working", "{:.4f}",
     "peak above the memory in use before the call (KV cache, logits, ...)"),
]  # fmt: skip


def lm_table(result: dict) -> list[str]:
    runs = result["runs"]
    med = {n: median_rows(rs) for n, rs in runs.items()}
    names = list(med)
    others = [n for n in names if n != "official"] if "official" in med else []
    head = (
        "| measure | " + " | ".join(names) + "".join(f" | {n} / official" for n in others) + " | what it is |"
    )
    lines = [head, "|---|" + "---:|" * (len(names) + len(others)) + "---|"]
    for label, key, fmt, what in LM_ROWS:
        vals = [fmt.format(med[n][key]) if med[n][key] is not None else "-" for n in names]
        ratios = []
        for n in others:
            o, v = med["official"][key], med[n][key]
            ratios.append(f"{v / o:.2f}" if o and v is not None else "-")
        lines.append(f"| {label} | " + " | ".join(vals + ratios) + f" | {what} |")
    if "official" in med:
        ref = med["official"]["output"]
        same = []
        for n in names:
            if n == "official":
                same.append("-")
            elif n.startswith("ours"):
                same.append("yes" if med[n]["output"] == ref else "no")
            else:
                same.append("n/a")
        lines.append(
            "| same codes and metadata as the official | "
            + " | ".join(same)
            + " | -" * len(others)
            + " | ComfyUI: its own prompt, RNG and stop rule, not comparable |"
        )
    return lines


# --- the generation sides -----------------------------------------------------------------------------------


def official_handler(root: Path, variant: str, device: str, dtype: torch.dtype):
    """An ``AceStepHandler`` holding what ``initialize_service`` loads (make_v15_pipeline.make_handler's way):
    the variant's official model class with the turbo folder's weights, sdpa attention, the VAE in the
    handler's own VAE dtype, the text encoder and tokenizer, the silence latent."""
    import acestep.handler as official
    from acestep.models.base.modeling_acestep_v15_base import AceStepConditionGenerationModel as Base
    from acestep.models.sft.modeling_acestep_v15_base import AceStepConditionGenerationModel as Sft
    from acestep.models.turbo.configuration_acestep_v15 import AceStepConfig
    from acestep.models.turbo.modeling_acestep_v15_turbo import AceStepConditionGenerationModel as Turbo
    from diffusers import AutoencoderOobleck
    from transformers import AutoTokenizer, Qwen3Model

    folder = root / "acestep-v15-turbo"
    config = AceStepConfig.from_pretrained(str(folder))
    config.model_version, config.is_turbo = variant, variant == "turbo"
    with torch.device(device):
        model = {"turbo": Turbo, "base": Base, "sft": Sft}[variant](config)
    model.load_state_dict(Turbo.from_pretrained(str(folder)).state_dict())
    model.config._attn_implementation = "sdpa"
    h = official.AceStepHandler()
    h.device, h.dtype = device, dtype
    h.model = model.to(device, dtype).eval().requires_grad_(False)
    h.config = h.model.config
    h.vae = (
        AutoencoderOobleck.from_pretrained(str(root / "vae")).to(device).to(h._get_vae_dtype(device)).eval()
    )
    h.text_encoder = Qwen3Model.from_pretrained(str(root / "Qwen3-Embedding-0.6B")).to(device, dtype).eval()
    h.text_tokenizer = AutoTokenizer.from_pretrained(str(root / "Qwen3-Embedding-0.6B"))
    silence = torch.load(folder / "silence_latent.pt", weights_only=True).transpose(1, 2)
    h.silence_latent = silence.to(device).to(dtype)
    return h


def generation_params(variant: str, seconds: float, steps: int) -> dict:
    p = dict(
        captions="calm piano, warm pads, 120 BPM",
        lyrics=LYRICS,
        bpm=120,
        key_scale="C major",
        time_signature="4",
        vocal_language="en",
        use_random_seed=False,
        seed=PIPELINE_SEED,
        batch_size=1,
        audio_duration=seconds,
        instruction="Fill the audio semantic mask based on the given conditions:",
    )
    if variant == "turbo":
        p.update(inference_steps=8, shift=3.0)  # turbo: the fixed 8-entry table (fix_nfe = 8)
    else:
        p.update(inference_steps=steps, guidance_scale=7.0, shift=1.0)  # APG with CFG on every step
    return p


class GenSide:
    """One generation pipeline with hooks on its DiT decoder and VAE decoder."""

    def __init__(self, name: str, run, dit_decoder, vae_decoder, weights: int, device: str):
        self.name, self.run, self.weights = name, run, weights
        self.clock, self.memory = Clock(device), Memory(device)
        self.events: list = []
        self.rows = 0

        def mark(what):
            def hook(*_):
                self.events.append((what, self.clock.mark()))

            return hook

        def count(_module, _inputs, output):
            self.rows += (output if torch.is_tensor(output) else output[0]).shape[0]

        self.handles = [
            dit_decoder.register_forward_pre_hook(mark("dit_start")),
            dit_decoder.register_forward_hook(mark("dit_end")),
            dit_decoder.register_forward_hook(count),
            vae_decoder.register_forward_pre_hook(mark("vae_start")),
            vae_decoder.register_forward_hook(mark("vae_end")),
        ]

    def close(self):
        for h in self.handles:
            h.remove()

    def __call__(self, steps: int) -> dict:
        self.events.clear()
        self.rows = 0
        box = {}

        def call():
            box["start"] = self.clock.mark()
            return self.run()

        with torch.inference_mode():
            (latents, audio), wall, working = self.memory.measure(call)
        s = lambda m: self.clock.seconds(box["start"], m)  # noqa: E731
        ev = [(k, s(m)) for k, m in self.events]
        dit = [t for k, t in ev if k.startswith("dit_")]
        vs = [t for k, t in ev if k == "vae_start"]
        ve = [t for k, t in ev if k == "vae_end"]
        calls = sum(1 for k, _ in ev if k == "dit_end")
        seconds = audio.shape[-1] / 48000
        return dict(
            total=wall,
            before=dit[0],
            sampling=dit[-1] - dit[0],
            per_step=(dit[-1] - dit[0]) / steps,
            calls=calls / steps,
            rows=self.rows / steps,
            decode=sum(e - b for b, e in zip(vs, ve)),
            rtf=seconds / wall,
            weights=self.weights / 2**30,
            working=working / 2**30,
            peak=self.weights / 2**30 + working / 2**30,
            latents=latents.float().cpu(),
            audio=audio.float().cpu(),
        )


def bench_generation(args, label: str, root: Path, variant: str, seconds: float, steps: int, dtype) -> dict:
    from acestep_models.v15 import pipeline

    params = generation_params(variant, seconds, steps)
    n_steps = 8 if variant == "turbo" else steps
    sides, h = [], None
    if OFFICIAL:
        h = official_handler(root, variant, args.device, dtype)

        def run_official(h=h):
            random.seed(GLOBAL_SEED)
            torch.manual_seed(GLOBAL_SEED)
            r = h.generate_music(**params)
            if not r["success"]:
                raise RuntimeError(r["error"])
            return r["extra_outputs"]["pred_latents"], r["audios"][0]["tensor"]

        sides.append(
            GenSide(
                "official",
                run_official,
                h.model.decoder,
                h.vae.decoder,
                tensor_bytes(h.model, h.vae, h.text_encoder),
                args.device,
            )
        )
    models = pipeline.load_models(root, variant=variant, device=args.device, dtype=dtype)

    def run_ours(models=models):
        r = pipeline.generate(models, {**params, "global_seed": GLOBAL_SEED})
        return r.latents, r.audio[0]

    sides.append(
        GenSide(
            "ours",
            run_ours,
            models.dit.decoder,
            models.vae.decoder,
            tensor_bytes(models.dit, models.vae, models.text_encoder),
            args.device,
        )
    )
    runs = {side.name: [] for side in sides}
    for side in sides:
        side(n_steps)  # warm-up
    for _ in range(args.repeats):
        for side in sides:
            runs[side.name].append(side(n_steps))
    for side in sides:
        side.close()
    del sides, models, h
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    print(
        f"[{label}] done: "
        + ", ".join(f"{n} {statistics.median(r['total'] for r in rs):.2f} s" for n, rs in runs.items()),
        flush=True,
    )
    return {"label": label, "variant": variant, "seconds": seconds, "steps": n_steps, "runs": runs}


GEN_ROWS = [
    ("whole call (s)", "total", "{:.4f}", "wall time of generate_music / generate, prompt to 48 kHz audio"),
    ("before sampling (s)", "before", "{:.4f}",
     "call start to the first DiT pass: prompts, text encoder, conditions, noise"),
    ("sampling (s)", "sampling", "{:.4f}", "first DiT decoder pass to the end of the last"),
    ("time per step (s)", "per_step", "{:.4f}", "sampling / steps"),
    ("DiT calls per step", "calls", "{:.2f}", "forward calls of the DiT decoder / steps"),
    ("DiT rows per step", "rows", "{:.2f}", "batch rows those calls processed / steps (CFG: cond + uncond)"),
    ("decode (s)", "decode", "{:.4f}", "time inside the VAE decoder (all tiles)"),
    ("RTF (audio s / wall s)", "rtf", "{:.2f}", "seconds of audio returned per second of the whole call"),
    ("weights (GiB)", "weights", "{:.4f}", "parameters and buffers of the DiT, VAE and text encoder"),
    ("peak working memory (GiB)", "working", "{:.4f}",
     "peak during the call above the memory in use before it"),
    ("peak memory: weights + working (GiB)", "peak", "{:.4f}", "the two rows above added"),
]  # fmt: skip


def gen_table(result: dict) -> list[str]:
    runs = result["runs"]
    med = {n: median_rows(rs) for n, rs in runs.items()}
    names = list(med)
    has_ref = "official" in med
    lines = [
        "| measure | " + " | ".join(names) + (" | ours / official" if has_ref else "") + " | what it is |",
        "|---|" + "---:|" * (len(names) + has_ref) + "---|",
    ]
    for label, key, fmt, what in GEN_ROWS:
        vals = [fmt.format(med[n][key]) for n in names]
        if has_ref:
            o = med["official"][key]
            vals.append(f"{med['ours'][key] / o:.2f}" if o else "-")
        lines.append(f"| {label} | " + " | ".join(vals) + f" | {what} |")
    if has_ref:
        o, u = med["official"], med["ours"]
        lines.append(
            f"| latents vs the official (relative L2) | - | {relative_l2(u['latents'], o['latents']):.1e} "
            "| - | same parameters and seeds |"
        )
        lines.append(
            f"| audio vs the official (relative L2) | - | {relative_l2(u['audio'], o['audio']):.1e} | - "
            "| same parameters and seeds |"
        )
    return lines


# --- main ---------------------------------------------------------------------------------------------------


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        return f"{names[0]} (torch threads: {torch.get_num_threads()})"
    except (OSError, IndexError):
        return f"{platform.processor() or platform.machine()} (torch threads: {torch.get_num_threads()})"


def header(args, title: str, dtype_name: str, notes: list[str]) -> list[str]:
    import transformers

    load = f", load average {os.getloadavg()[0]:.1f} at the end" if args.device == "cpu" else ""
    official = (
        "commit 89031b8 (acestep from " + str(Path(sys.modules["acestep"].__file__).parents[1]) + ")"
        if OFFICIAL
        else f"not importable ({OFFICIAL_ERROR})"
    )
    return [
        f"# ACE-Step 1.5 {title}: {args.size} on {args.device}",
        "",
        f"- date: {time.strftime('%Y-%m-%d')}",
        f"- device: {machine(args.device)}{load}",
        f"- torch {torch.__version__}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}, dtype {dtype_name}, float32 matmul precision highest",
        f"- official code: {official}",
        f"- median of {args.repeats} runs after one warm-up",
        *notes,
        "",
        "Command:",
        "",
        "```",
        "PYTHONPATH=/work/ref15/ACE-Step-1.5:/work/main /work/ref15/venv/bin/python benchmarks/bench_v15.py "
        + " ".join(sys.argv[1:]),
        "```",
        "",
    ]


def write(args, what: str, text: str) -> None:
    print(text)
    out_dir = Path(args.out_dir) if args.out_dir else ROOT / "benchmarks" / "results"
    size = "smoke" if args.smoke else args.size
    out = out_dir / f"{time.strftime('%Y-%m-%d')}-{args.device}-v15-{what}-{size}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--size", default="tiny", choices=["tiny", "mid", "full"])
    ap.add_argument("--what", default="lm,pipeline", help="lm, pipeline or both (comma-separated)")
    ap.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16"],
        help="default: float32 on the CPU, bfloat16 (the official default) on CUDA",
    )
    ap.add_argument(
        "--lm-seconds",
        type=float,
        default=None,
        help="target duration of the LM runs (default: 10 for tiny and mid, 240 for full: 1,200 codes)",
    )
    ap.add_argument("--warmup-seconds", type=float, default=10.0, help="target duration of the LM warm-up")
    ap.add_argument(
        "--seconds", type=float, default=None, help="generation length (default: 10 for tiny, 240 for full)"
    )
    ap.add_argument("--base-steps", type=int, default=50, help="base model steps (with CFG)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument(
        "--lm-tokenizer",
        default=None,
        help="Qwen2.5 BPE folder (vocab.json + merges.txt) for our "
        "loader and the official tokenizer (default: $COMFYUI_PATH or build/comfyui qwen25_tokenizer)",
    )
    ap.add_argument(
        "--chat-template",
        default=os.environ.get("QWEN3_CHAT_TEMPLATE_FILE", "/tmp/qwen3_template.jinja"),
        help="Qwen3 chat template (.jinja) or the optimum-intel 2.2.0 wheel holding it",
    )
    ap.add_argument(
        "--comfyui",
        default=str(ROOT / "build" / "ComfyUI-0.20.1"),
        help="ComfyUI 0.20.1 folder for its native LM loop ('' to skip)",
    )
    ap.add_argument(
        "--comfyui-site",
        default=str(ROOT / ".venv20" / "lib" / "python3.11" / "site-packages"),
        help="site-packages with ComfyUI's extra packages, appended to sys.path",
    )
    ap.add_argument(
        "--smoke", action="store_true", help="the --size full code path with shrunk sizes (CPU check)"
    )
    ap.add_argument("--out-dir", default=None, help="result folder (default: benchmarks/results)")
    args = ap.parse_args()
    if args.smoke:
        args.size = "full"
    if args.size == "full" and args.device != "cuda" and not args.smoke:
        sys.exit(
            "bench_v15.py: --size full needs --device cuda (use --smoke to check its code path on a CPU)"
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_v15.py: --device cuda but torch sees no GPU")
    if not OFFICIAL:
        print(
            f"bench_v15.py: the official code does not import ({OFFICIAL_ERROR}); timing ours only",
            flush=True,
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("highest")
    dtype_name = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    what = {w.strip() for w in args.what.split(",") if w.strip()}
    full = args.size == "full"
    comfy_root = Path(os.environ.get("COMFYUI_PATH") or ROOT / "build" / "comfyui")
    args.bpe = Path(args.lm_tokenizer or comfy_root / "comfy" / "text_encoders" / "qwen25_tokenizer")
    try:
        from loguru import logger

        logger.remove()  # the official code logs every step
    except ImportError:
        pass

    tmp = Path(tempfile.mkdtemp(prefix="bench_v15_"))
    try:
        if "lm" in what:
            run_lm(args, tmp, dtype, dtype_name, full)
        if "pipeline" in what:
            run_pipeline(args, tmp, dtype, dtype_name, full)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fits_three_copies(weights: Path, dtype: torch.dtype) -> bool:
    """Whether three sides' copies of an LM (stored in bfloat16 or float16, held in ``dtype``) and a loading
    copy take under half the memory available now (then the sides alternate; else one runs at a time)."""
    need = 4 * weights.stat().st_size * torch.empty(0, dtype=dtype).element_size() / 2
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return need < int(line.split()[1]) * 1024 / 2
    except OSError:
        pass
    return need < 2**30


def run_lm(args, tmp: Path, dtype, dtype_name: str, full: bool) -> None:
    ace15 = None
    if args.comfyui and Path(args.comfyui, "comfy", "text_encoders", "ace15.py").is_file():
        try:
            ace15 = import_comfyui(Path(args.comfyui), args.comfyui_site, args.device)
        except Exception as e:  # noqa: BLE001  (a peer: report and go on without it)
            print(
                f"bench_v15.py: ComfyUI does not import ({type(e).__name__}: {e}); skipping its LM",
                flush=True,
            )
    template = None
    if OFFICIAL:
        if not Path(args.chat_template).is_file():
            sys.exit(
                f"bench_v15.py: the official LM needs the Qwen3 chat template: --chat-template "
                f"{args.chat_template} not found (pip download --no-deps optimum-intel==2.2.0, pass the "
                "wheel)"
            )
        template = chat_template(args.chat_template)
    tok_dir = tmp / "lm-tokenizer"
    if template is not None:
        write_lm_tokenizer(tok_dir, args.bpe, template)
    lm_seconds = args.lm_seconds or (240.0 if full and not args.smoke else 10.0 if not args.smoke else 20.0)
    if full:
        shapes = ["smoke"] if args.smoke else ["1.7B", "4B"]
    else:
        shapes = ["tiny"] + (["0.6B"] if args.size == "mid" else [])
    results = []
    for shape in shapes:
        folder = tmp / "checkpoints" / f"acestep-5Hz-lm-{shape}"
        if shape == "tiny":
            shutil.copytree(TINY_LM, folder)
        else:
            write_random_lm(folder, shape, args.device)
        if template is not None:
            for f in tok_dir.iterdir():
                shutil.copy(f, folder / f.name)
        together = args.device == "cuda" or fits_three_copies(folder / "model.safetensors", dtype)
        label = f"LM {shape}" + (" (tests/golden/v15/lm/tiny-lm)" if shape == "tiny" else " (random weights)")
        results.append(bench_lm(args, label, folder, lm_seconds, dtype, together, ace15))
        shutil.rmtree(folder, ignore_errors=True)
    notes = [
        f"- configuration: target duration {lm_seconds:g} s ({int(lm_seconds * 5)} codes), CFG 2.0, "
        f"temperature 0.85, top-p 0.9, user duration given, CoT caption skipped, seed {LM_SEED}; official: "
        "LLMHandler pt backend, generate_with_stop_condition after torch.manual_seed; ours: "
        "Planner.plan(seed=...)",
        "- ComfyUI 0.20.1: comfy.text_encoders.ace15.generate_audio_codes on the same weights (codes only: "
        "it has no CoT phase; its prompt carries the metas the official CoT chose; duration x 5 codes)",
        "- sides: "
        + "; ".join(
            f"{r['label']}: "
            + ("alternating in one process" if r["together"] else "one side at a time (memory)")
            for r in results
        ),
        "- timings from hooks on each side's LM module" + (" (CUDA events)" if args.device == "cuda" else ""),
    ]
    lines = header(args, "5 Hz LM planner", dtype_name, notes)
    for r in results:
        lines += [f"## {r['label']}", ""] + lm_table(r) + [""]
    write(args, "lm", "\n".join(lines))


def run_pipeline(args, tmp: Path, dtype, dtype_name: str, full: bool) -> None:
    if full:
        root = write_full_root(tmp / "root", args.device, args.smoke)
        seconds = args.seconds or (20.0 if args.smoke else 240.0)
        where = "random weights, " + ("shrunk sizes (smoke)" if args.smoke else "released sizes")
    else:
        root, seconds = TINY_ROOT, args.seconds or 10.0
        where = "tests/golden/v15/pipeline/tiny"
    results = [
        bench_generation(args, f"turbo, {seconds:g} s, 8 steps", root, "turbo", seconds, 8, dtype),
        bench_generation(
            args,
            f"base, {seconds:g} s, {args.base_steps} steps, CFG (APG, guidance 7)",
            root,
            "base",
            seconds,
            args.base_steps,
            dtype,
        ),
    ]
    notes = [
        f"- weights: {where}; turbo and base share them (base: the official base class)",
        f"- configuration: text2music, {seconds:g} s, batch 1, seed {PIPELINE_SEED}, global seed "
        f"{GLOBAL_SEED}; turbo shift 3 (8 steps, no CFG); base shift 1, guidance 7 (APG), cfg interval 0..1",
        "- both sides loaded together, alternating in one process",
        "- memory: "
        + ("CUDA allocator peak" if args.device == "cuda" else "peak resident set (VmHWM)")
        + " during the call above what was allocated before it, plus the pipeline's own weights",
    ]
    lines = header(args, "generation", dtype_name, notes)
    for r in results:
        lines += [f"## {r['label']}", ""] + gen_table(r) + [""]
    write(args, "pipeline", "\n".join(lines))


if __name__ == "__main__":
    main()
