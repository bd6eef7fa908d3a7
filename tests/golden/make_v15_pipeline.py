"""Golden fixtures for whole ACE-Step 1.5 generations, from the OFFICIAL handler (``AceStepHandler.generate_music``,
commit 89031b8), for every sampler, guidance and task.

    CUDA_VISIBLE_DEVICES="" PYTHONPATH=/work/ref15/ACE-Step-1.5 OMP_NUM_THREADS=1 \\
        /work/ref15/venv/bin/python tests/golden/make_v15_pipeline.py

Writes tests/golden/v15/pipeline/: ``tiny/`` (a coherent tiny official root built here with the official classes:
``acestep-v15-turbo/`` DiT + silence latent, ``vae/``, ``Qwen3-Embedding-0.6B/``), ``cases.json`` and
``tensors.safetensors``; see tests/golden/v15/pipeline/README.md.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
torch.set_float32_matmul_precision("highest")

import acestep.handler as official  # noqa: E402
from acestep.constants import TASK_INSTRUCTIONS  # noqa: E402
from acestep.models.base.modeling_acestep_v15_base import (  # noqa: E402
    AceStepConditionGenerationModel as BaseModel,
)
from acestep.models.sft.modeling_acestep_v15_base import (  # noqa: E402
    AceStepConditionGenerationModel as SftModel,
)
from acestep.models.turbo.configuration_acestep_v15 import AceStepConfig  # noqa: E402
from acestep.models.turbo.modeling_acestep_v15_turbo import (  # noqa: E402
    AceStepConditionGenerationModel as TurboModel,
)
from diffusers import AutoencoderOobleck  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoTokenizer, Qwen3Model  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from v15_signals import SAMPLE_RATE, reference_audio, source_audio  # noqa: E402

PARTS = (
    HERE / "v15" / "tiny"
)  # the official tiny VAE and text encoder (make_v15_vae.py, make_v15_text_encoder.py)
OUT = HERE / "v15" / "pipeline"
TINY = OUT / "tiny"
SEED_WEIGHTS = 15_0001
ATTN = "sdpa"
AUDIO_STRIDE = 97  # audio is stored as audio[..., ::97] (exact samples, 1/97 of the size)
SILENCE_FRAMES = 800

# The DiT at the widths of the tiny VAE (3 latent channels) and text encoder (hidden 32).
DIT_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    fsq_dim=32,
    fsq_input_levels=[8, 8, 8, 5, 5, 5],
    fsq_input_num_quantizers=1,
    text_hidden_dim=32,
    num_lyric_encoder_hidden_layers=2,
    num_timbre_encoder_hidden_layers=2,
    num_attention_pooler_hidden_layers=2,
    num_audio_decoder_hidden_layers=4,
    audio_acoustic_hidden_dim=3,
    timbre_hidden_dim=3,
    in_channels=9,
    sliding_window=128,
    vocab_size=64,
)
D = DIT_CONFIG["audio_acoustic_hidden_dim"]


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter redrawn so activations stay O(1) (as make_v15_model.py)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        r = torch.randn(p.shape, generator=g)
        if name.endswith("bias"):
            v = 0.1 * r
        elif p.ndim == 1:
            v = 1 + 0.1 * r
        elif "scale_shift_table" in name:
            v = 0.3 * r
        elif "special_token" in name or name == "null_condition_emb":
            v = r
        else:
            v = r / p[0].numel() ** 0.5
        with torch.no_grad():
            p.copy_(v)


def build_tiny() -> None:
    """The tiny root in the official layout, with the official classes."""
    if TINY.exists():
        shutil.rmtree(TINY)
    for part in ("vae", "Qwen3-Embedding-0.6B"):
        shutil.copytree(PARTS / part, TINY / part)
    # check that the official classes read them
    AutoencoderOobleck.from_pretrained(str(TINY / "vae"))
    assert Qwen3Model.from_pretrained(str(TINY / "Qwen3-Embedding-0.6B")).config.hidden_size == 32
    torch.manual_seed(0)
    model = TurboModel(AceStepConfig(**DIT_CONFIG, model_version="turbo", is_turbo=True))
    randomise(model, SEED_WEIGHTS)
    folder = TINY / "acestep-v15-turbo"
    model.save_pretrained(str(folder), safe_serialization=True)
    g = torch.Generator().manual_seed(SEED_WEIGHTS + 1)
    torch.save(
        0.5 * torch.randn(1, D, SILENCE_FRAMES, generator=g), folder / "silence_latent.pt"
    )  # [1, D, T]


def make_handler(variant: str) -> official.AceStepHandler:
    """An ``AceStepHandler`` holding what ``initialize_service`` would load on the CPU in float32."""
    folder = TINY / "acestep-v15-turbo"
    cls = {"turbo": TurboModel, "base": BaseModel, "sft": SftModel}[variant]
    config = AceStepConfig.from_pretrained(str(folder))
    config.model_version, config.is_turbo = variant, variant == "turbo"
    model = cls(config)
    model.load_state_dict(TurboModel.from_pretrained(str(folder)).state_dict())
    model.config._attn_implementation = ATTN
    h = official.AceStepHandler()
    h.model = model.float().eval().requires_grad_(False)
    h.config = h.model.config
    h.vae = AutoencoderOobleck.from_pretrained(str(TINY / "vae")).float().eval()
    h.text_encoder = Qwen3Model.from_pretrained(str(TINY / "Qwen3-Embedding-0.6B")).float().eval()
    h.text_tokenizer = AutoTokenizer.from_pretrained(str(TINY / "Qwen3-Embedding-0.6B"))
    h.silence_latent = torch.load(folder / "silence_latent.pt", weights_only=True).transpose(1, 2).float()
    h.device, h.dtype = "cpu", torch.float32
    return h


# torchaudio 2.11 needs torchcodec to load files: the handler's torchaudio.load is served from the formulas.
SIGNALS = {"src.wav": lambda: source_audio(6.0), "ref.wav": lambda: reference_audio(2.5)}


def fake_load(path, *args, **kwargs):
    return SIGNALS[Path(path).name](), SAMPLE_RATE


LYRICS = "[verse]\nLights on the river, we follow the sound\n[chorus]\nSing it out loud"
COMMON = dict(
    captions="calm piano, warm pads, 120 BPM",
    lyrics=LYRICS,
    bpm=120,
    key_scale="C major",
    time_signature="4",
    vocal_language="en",
    use_random_seed=False,
    batch_size=1,
    seed="42",
)
CODES = "".join(f"<|audio_code_{(i * 7919) % 64000}|>" for i in range(30))  # 30 codes = 6 s = 150 frames
T2M = TASK_INSTRUCTIONS["text2music"]
COVER, REPAINT = TASK_INSTRUCTIONS["cover"], TASK_INSTRUCTIONS["repaint"]

# name: (variant, generate_music kwargs, global seed)
CASES = {
    "turbo_text2music": ("turbo", dict(COMMON, audio_duration=3.0, shift=3.0, instruction=T2M), 1),
    "turbo_batch_seeds_sde_shift2.5": (
        "turbo",
        dict(COMMON, audio_duration=5.0, seed="42,43", batch_size=2, shift=2.5, infer_method="sde"),
        2,
    ),
    "turbo_single_seed_batch_random_duration": (
        "turbo",
        dict(COMMON, seed=7, batch_size=2, audio_duration=None, shift=3.0),
        None,  # chosen below: a global seed whose two random durations are short
    ),
    "turbo_custom_timesteps": (
        "turbo",
        dict(COMMON, audio_duration=4.0, timesteps=[0.97, 0.9, 0.7, 0.55, 0.3, 0.1, 0.0], shift=1.0),
        3,
    ),
    "turbo_odd_duration_instrumental": (
        "turbo",
        dict(COMMON, lyrics="", bpm=None, key_scale="", audio_duration=7.3, shift=1.0),
        4,
    ),
    "turbo_long_tiled_decode": ("turbo", dict(COMMON, audio_duration=11.0, shift=3.0), 5),
    "turbo_cover_codes_switch": (
        "turbo",
        dict(COMMON, audio_code_string=CODES, audio_duration=6.0, audio_cover_strength=0.5, shift=3.0),
        6,
    ),
    "turbo_cover_src_noise": (
        "turbo",
        dict(
            COMMON,
            src_audio="src.wav",
            task_type="cover",
            instruction=COVER,
            cover_noise_strength=0.4,
            shift=3.0,
        ),
        7,
    ),  # fmt: skip
    "turbo_repaint": (
        "turbo",
        dict(
            COMMON,
            src_audio="src.wav",
            task_type="repaint",
            instruction=REPAINT,
            repainting_start=1.0,
            repainting_end=3.0,
            shift=3.0,
        ),
        8,
    ),  # fmt: skip
    "turbo_outpaint": (
        "turbo",
        dict(
            COMMON,
            src_audio="src.wav",
            task_type="repaint",
            instruction=REPAINT,
            repainting_start=-1.0,
            repainting_end=7.0,
            shift=3.0,
        ),
        9,
    ),  # fmt: skip
    "turbo_reference": (
        "turbo",
        dict(COMMON, reference_audio="ref.wav", audio_duration=3.0, batch_size=2, seed="5,6", shift=3.0),
        10,
    ),
    "base_apg_interval": (
        "base",
        dict(
            COMMON,
            audio_duration=3.0,
            inference_steps=6,
            guidance_scale=4.0,
            shift=2.0,
            cfg_interval_start=0.2,
            cfg_interval_end=0.9,
        ),
        11,
    ),  # fmt: skip
    "base_apg_batch": (
        "base",
        dict(COMMON, audio_duration=3.0, inference_steps=4, guidance_scale=3.0, batch_size=2, seed="1,2"),
        12,
    ),
    "base_adg_sde": (
        "base",
        dict(
            COMMON,
            audio_duration=3.0,
            inference_steps=5,
            guidance_scale=3.0,
            use_adg=True,
            infer_method="sde",
            shift=3.0,
        ),
        13,
    ),  # fmt: skip
    "base_ignores_timesteps": (
        "base",
        dict(
            COMMON,
            audio_duration=3.0,
            inference_steps=4,
            guidance_scale=1.0,
            timesteps=[1.0, 0.8, 0.5, 0.2, 0.0],
        ),
        14,
    ),  # fmt: skip
    "sft_timesteps": (
        "sft",
        dict(COMMON, audio_duration=3.0, guidance_scale=3.0, timesteps=[1.0, 0.8, 0.5, 0.2, 0.0]),
        15,
    ),
    "base_cover_noise_switch": (
        "base",
        dict(
            COMMON,
            src_audio="src.wav",
            task_type="cover",
            instruction=COVER,
            inference_steps=6,
            guidance_scale=3.0,
            cover_noise_strength=0.5,
            audio_cover_strength=0.5,
        ),
        16,
    ),  # fmt: skip
    "base_extract": (
        "base",
        dict(
            COMMON,
            src_audio="src.wav",
            task_type="extract",
            instruction="Extract the VOCALS track from the audio:",
            inference_steps=4,
            guidance_scale=1.0,
        ),
        17,
    ),  # fmt: skip
    "base_lego": (
        "base",
        dict(
            COMMON,
            src_audio="src.wav",
            task_type="lego",
            instruction="Generate the GUITAR track based on the audio context:",
            repainting_start=2.0,
            repainting_end=4.0,
            inference_steps=4,
            guidance_scale=3.0,
        ),
        18,
    ),  # fmt: skip
    "base_complete": (
        "base",
        dict(
            COMMON,
            src_audio="src.wav",
            task_type="complete",
            instruction="Complete the input track with DRUMS | BASS:",
            inference_steps=4,
            guidance_scale=2.0,
        ),
        19,
    ),  # fmt: skip
}


def short_random_durations(limit: float = 20.0) -> int:
    """The first global seed whose Python stream (one random seed for item 1, then two uniform(10, 120)
    durations, as prepare_seeds then prepare_padding_info draw them) gives durations under ``limit``."""
    for g in range(10000):
        r = random.Random(g)
        r.randint(0, 2**32 - 1)
        if max(r.uniform(10.0, 120.0) for _ in range(2)) < limit:
            return g
    raise RuntimeError("no short durations found")


def run_case(handlers, variant, kwargs, global_seed):
    h = handlers[variant]
    captured = {}
    prepare_noise = h.model.prepare_noise

    def spy(context_latents, seed=None):
        captured["noise"] = prepare_noise(context_latents, seed)
        captured["seed"] = list(seed) if isinstance(seed, list) else seed
        return captured["noise"]

    h.model.prepare_noise = spy
    random.seed(global_seed)
    torch.manual_seed(global_seed)
    try:
        result = h.generate_music(**kwargs)
    finally:
        h.model.prepare_noise = prepare_noise
    if not result["success"]:
        raise RuntimeError(result["error"])
    extra = result["extra_outputs"]
    audio = torch.stack([a["tensor"] for a in result["audios"]])
    return {
        "noise": captured["noise"].contiguous(),
        "latents": extra["pred_latents"].float().contiguous(),
        "audio": audio[..., ::AUDIO_STRIDE].contiguous(),
        "src_latents": extra["src_latents"].float().contiguous(),
    }, {"seeds": captured["seed"], "seed_value": extra["seed_value"], "samples": audio.shape[-1]}


def main() -> None:
    import torchaudio

    torchaudio.load = fake_load
    build_tiny()
    handlers = {v: make_handler(v) for v in ("turbo", "base", "sft")}
    tensors, cases = {}, {}
    for name, (variant, kwargs, global_seed) in CASES.items():
        if global_seed is None:
            global_seed = short_random_durations()
        out, info = run_case(handlers, variant, kwargs, global_seed)
        again, _ = run_case(handlers, variant, kwargs, global_seed)
        assert all(torch.equal(out[k], again[k]) for k in out), f"{name}: official run not repeatable"
        for k, v in out.items():
            tensors[f"{name}.{k}"] = v
        cases[name] = {"variant": variant, "global_seed": global_seed, "kwargs": kwargs, **info}
        print(
            f"{name:42s} latents {tuple(out['latents'].shape)} samples {info['samples']} seeds {info['seeds']}"
        )
    save_file(tensors, str(OUT / "tensors.safetensors"))
    (OUT / "cases.json").write_text(
        json.dumps({"audio_stride": AUDIO_STRIDE, "cases": cases}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
