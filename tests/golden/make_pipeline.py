"""Golden fixtures for the sampler and pipeline: the OFFICIAL ``ACEStepPipeline.__call__`` on the tiny checkpoints.

    ACESTEP_REF=/work/ref/ACE-Step CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 \\
        /work/venvs/ref/bin/python tests/golden/make_pipeline.py

Writes tests/golden/pipeline/ (see the README there): the test audio ``src.wav`` / ``ref.wav``, ``cases.json`` (per
case: the keyword arguments of the official call, what it returned as its input_params_json, the actual seeds),
``latents.safetensors`` (final latents per case) and ``audio.safetensors`` (decoded audio, one case per task).

``--live DEST CASE...`` runs only the official code for the named cases and writes the same files into DEST (the
optional live parity test uses it). Nothing of the official code is copied; it is imported from ``$ACESTEP_REF``
and driven through its public ``__call__``, with three run-time adaptations for the tiny folder:
- the DiT comes from ``make_dit.load_official`` (the official ``from_pretrained`` cannot rebuild its small lyric
  Conformer);
- the official pipeline feeds a [B, 512] zero speaker embedding; the tiny DiT's speaker projection takes 16
  features, so it is given the first 16 of those zeros (the same zeros our port feeds);
- torchaudio >= 2.9 loads and saves through torchcodec: ``torchaudio.load`` / ``save`` are replaced by soundfile.
Final latents are captured by wrapping ``latents2audio`` (and audio by wrapping ``music_dcae.decode``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

REF = os.environ.get("ACESTEP_REF")
if not REF:
    sys.exit(
        "make_pipeline.py: set ACESTEP_REF to a checkout of the official ACE-Step repository (commit d612523)"
    )
HERE = Path(__file__).resolve().parent
sys.path.insert(0, REF)
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import torchaudio  # noqa: E402
from acestep import pipeline_ace_step  # noqa: E402
from acestep.language_segmentation import LangSegment, language_filters  # noqa: E402
from acestep.models.lyrics_utils.lyric_tokenizer import VoiceBpeTokenizer  # noqa: E402
from acestep.music_dcae.music_dcae_pipeline import MusicDCAE  # noqa: E402
from make_dit import load_official  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoTokenizer, UMT5EncoderModel  # noqa: E402

torch.set_float32_matmul_precision("highest")  # the pipeline import set "high"
torch.set_num_threads(1)

TINY = HERE / "tiny"
OUT = HERE / "pipeline"
FRAMES_PER_SECOND = 44100 / 512 / 8
GLOBAL_SEED = 20250601  # torch's and Python's global generators (random seeds, random durations)

PROMPT = "funk, pop, soul, melodic, guitar, drums, bass, 105 BPM"
LYRICS = "[verse]\nHello darkness, my old friend\nI've come to talk with you again\n\n[chorus]\nLa la la"
LYRICS_ZH_JA_KO = (
    "[verse]\n你好世界，我们一起唱歌\n月が綺麗ですね\n사랑해요 정말로\n[chorus]\n2024年 我们 100 次"
)
LYRICS_EUROPE = "Hola mundo, cantamos juntos\nBonjour tout le monde\nGuten Morgen, meine Freunde\nПривет, мир"


# --- run-time adaptations (no official code is changed) ----------------------------------------------------------


def _sf_load(path, *args, **kwargs):
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.T)), sr


def _sf_save(path, wav, sample_rate, *args, **kwargs):
    sf.write(str(path), wav.detach().cpu().float().numpy().T, sample_rate, subtype="FLOAT")


torchaudio.load, torchaudio.save = _sf_load, _sf_save


class FirstFeatures(torch.nn.Module):
    """The tiny speaker projection fed the first ``in_features`` of the pipeline's 512 zeros."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x[..., : self.linear.in_features])


def official_pipeline() -> pipeline_ace_step.ACEStepPipeline:
    """What ``load_checkpoint`` builds, from the tiny official-layout folder, float32 on the CPU."""
    pipe = pipeline_ace_step.ACEStepPipeline(checkpoint_dir=str(TINY), dtype="float32")
    assert pipe.device.type == "cpu" and pipe.dtype == torch.float32
    dit = load_official(TINY / "ace_step_transformer").to(pipe.device).eval().to(pipe.dtype)
    dit.speaker_embedder = FirstFeatures(dit.speaker_embedder)
    pipe.ace_step_transformer = dit
    pipe.music_dcae = (
        MusicDCAE(
            dcae_checkpoint_path=str(TINY / "music_dcae_f8c8"),
            vocoder_checkpoint_path=str(TINY / "music_vocoder"),
        )
        .to(pipe.device)
        .eval()
        .to(pipe.dtype)
    )
    segmenter = LangSegment()
    segmenter.setfilters(language_filters.default)
    pipe.lang_segment = segmenter
    pipe.lyric_tokenizer = VoiceBpeTokenizer()
    text_encoder = UMT5EncoderModel.from_pretrained(str(TINY / "umt5-base"), torch_dtype=pipe.dtype).eval()
    pipe.text_encoder_model = text_encoder.to(pipe.device).eval().to(pipe.dtype).requires_grad_(False)
    pipe.text_tokenizer = AutoTokenizer.from_pretrained(str(TINY / "umt5-base"))
    pipe.loaded = True
    return pipe


# --- test audio ---------------------------------------------------------------------------------------------------


def write_test_audio(folder: Path) -> None:
    """src.wav: 1.2 s mono 24 kHz 16-bit (a chord with vibrato and a chirp: exercises resampling and the mono ->
    stereo repeat); ref.wav: 1.0 s stereo 48 kHz 16-bit (other notes, different per channel)."""
    t = np.arange(int(1.2 * 24000)) / 24000
    env = np.minimum(1, 8 * t) * np.exp(-0.8 * t)
    src = sum(
        a * np.sin(2 * np.pi * f * t + 3 * np.sin(2 * np.pi * 5 * t))
        for f, a in ((220, 0.3), (277, 0.2), (330, 0.2))
    )
    src = env * (src + 0.1 * np.sin(2 * np.pi * (200 * t + 1500 * t**2)))
    sf.write(str(folder / "src.wav"), src.astype(np.float32), 24000, subtype="PCM_16")
    t = np.arange(48000) / 48000
    left = 0.4 * np.sin(2 * np.pi * 392 * t) * np.exp(-2 * t) + 0.1 * np.sin(2 * np.pi * 98 * t)
    right = 0.3 * np.sin(2 * np.pi * 523.25 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t)) + 0.1 * np.sin(
        2 * np.pi * 98 * t
    )
    sf.write(str(folder / "ref.wav"), np.stack([left, right], 1).astype(np.float32), 48000, subtype="PCM_16")


def src_frames(folder: Path) -> int:
    """Latent frames of src.wav as the official encode makes them (44.1 kHz, padded to 4096 samples)."""
    info = sf.info(str(folder / "src.wav"))
    n44 = math.ceil(info.frames * 44100 / info.samplerate)
    return math.ceil(n44 / 4096)


LONG_SRC_FRAMES, LONG_SRC_SEED = 2580, 4242  # the 240 s extend-window case: synthetic source latents


def long_src_latents() -> torch.Tensor:
    """Source latents for the 240 s window case (the official infer_latents is bypassed for it)."""
    return torch.randn(1, 8, 16, LONG_SRC_FRAMES, generator=torch.Generator().manual_seed(LONG_SRC_SEED))


# --- cases --------------------------------------------------------------------------------------------------------


def cases(folder: Path) -> dict[str, dict]:
    """name -> {"kwargs": official __call__ keywords (paths relative to the pipeline folder), "audio": bool,
    "long_src": bool}."""
    base = dict(
        prompt=PROMPT, lyrics=LYRICS, audio_duration=2.0, infer_step=8, guidance_scale=15.0, manual_seeds=[42]
    )
    out: dict[str, dict] = {}

    def add(name, audio=False, long_src=False, **kw):
        out[name] = {"kwargs": {**base, **kw}, "audio": audio, "long_src": long_src}

    add("t2m_default_1s", audio=True, audio_duration=1.0)
    for sched in ("euler", "heun", "pingpong"):
        for cfg in ("apg", "cfg", "cfg_star"):
            add(f"t2m_{sched}_{cfg}", scheduler_type=sched, cfg_type=cfg, guidance_interval=0.75)
    for tag, lyric, diff in ((0, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1)):
        add(
            f"erg_tag{tag}_lyric{lyric}_diff{diff}",
            use_erg_tag=bool(tag),
            use_erg_lyric=bool(lyric),
            use_erg_diffusion=bool(diff),
            guidance_interval=1.0,
        )
    add("interval_decay", guidance_interval=1.0, guidance_interval_decay=1.0, min_guidance_scale=5.0)
    add(
        "interval_decay_half",
        guidance_interval=0.6,
        guidance_interval_decay=0.5,
        min_guidance_scale=2.0,
        cfg_type="cfg",
    )
    add("no_guidance", guidance_scale=1.0)
    add("omega_0_heun", omega_scale=0.0, scheduler_type="heun", infer_step=5)
    add("double_condition_erg", guidance_scale_text=5.0, guidance_scale_lyric=2.5, guidance_interval=1.0)
    add("double_condition_no_erg", guidance_scale_text=3.0, guidance_scale_lyric=1.5, use_erg_lyric=False)
    add("oss_euler", oss_steps="1, 3, 5, 8, 12", guidance_interval=1.0)
    add("oss_pingpong", oss_steps="2,4,6,8,10,20", scheduler_type="pingpong", cfg_type="cfg_star")
    add("batch2_seeds", batch_size=2, manual_seeds="7,8", guidance_interval=1.0)
    add("batch2_pingpong_one_seed", batch_size=2, manual_seeds=5, scheduler_type="pingpong")
    add("batch3_heun_seed_list", batch_size=3, manual_seeds=[11, 12], scheduler_type="heun", infer_step=4)
    add("random_seed", manual_seeds=None)
    add("empty_lyrics", lyrics="")
    add("lyrics_zh_ja_ko", lyrics=LYRICS_ZH_JA_KO)
    add("lyrics_europe", lyrics=LYRICS_EUROPE, prompt="流行, 女声, 抒情, 90 BPM")

    add("retake", audio=True, task="retake", audio_duration=1.0, retake_seeds=[123], retake_variance=0.5)
    add(
        "retake_batch2_heun",
        task="retake",
        batch_size=2,
        retake_seeds="3,4",
        retake_variance=0.3,
        scheduler_type="heun",
    )

    src = "src.wav"
    s = src_frames(folder)
    dur = s / FRAMES_PER_SECOND  # the source's length in seconds as the official frame count sees it
    add(
        "repaint",
        audio=True,
        task="repaint",
        src_audio_path=src,
        repaint_start=0.3,
        repaint_end=0.8,
        retake_seeds=[99],
        retake_variance=0.6,
    )
    add(
        "repaint_heun_cfg_star",
        task="repaint",
        src_audio_path=src,
        repaint_start=0.5,
        repaint_end=1.2,
        retake_seeds=[98],
        scheduler_type="heun",
        cfg_type="cfg_star",
        guidance_interval=1.0,
    )
    add(
        "repaint_pingpong_batch2",
        task="repaint",
        src_audio_path=src,
        repaint_start=0.0,
        repaint_end=0.45,
        batch_size=2,
        manual_seeds="1,2",
        retake_seeds="3,4",
        scheduler_type="pingpong",
        retake_variance=0.8,
    )
    add(
        "repaint_whole",
        task="repaint",
        src_audio_path=src,
        repaint_start=0.0,
        repaint_end=(s + 0.5) / FRAMES_PER_SECOND,
        retake_seeds=[97],
    )
    add(
        "extend_right",
        audio=True,
        task="extend",
        src_audio_path=src,
        repaint_start=0.0,
        repaint_end=round(dur + 0.5, 3),
        retake_seeds=[77],
        retake_variance=0.9,
    )
    add(
        "extend_left",
        task="extend",
        src_audio_path=src,
        repaint_start=-0.5,
        repaint_end=round(dur, 3),
        retake_seeds=[76],
        retake_variance=1.0,
    )
    add(
        "extend_both",
        task="extend",
        src_audio_path=src,
        repaint_start=-0.3,
        repaint_end=round(dur + 0.8, 3),
        retake_seeds=[75],
        scheduler_type="heun",
    )
    add(
        "extend_left_240s_window",
        long_src=True,
        task="extend",
        src_audio_path=src,
        repaint_start=-1.0,
        repaint_end=10.0,
        retake_seeds=[74],
        infer_step=6,
        retake_variance=1.0,
    )

    edit = dict(
        task="edit",
        src_audio_path=src,
        edit_target_prompt="jazz, piano, saxophone, slow, 70 BPM",
        edit_target_lyrics="[verse]\nGoodbye sunshine, my new friend\nI came to sing with you again",
    )
    add("edit", audio=True, **edit, edit_n_min=0.2, edit_n_max=0.8, edit_n_avg=2, retake_seeds=[55])
    add("edit_full_range", **edit, retake_seeds=[54], guidance_scale=7.0)
    add(
        "edit_pingpong_navg3",
        **edit,
        edit_n_min=0.1,
        edit_n_max=0.6,
        edit_n_avg=3,
        retake_seeds=[53],
        scheduler_type="pingpong",
    )
    add(
        "edit_no_guidance_empty_target_lyrics",
        **{**edit, "edit_target_lyrics": ""},
        edit_n_max=0.5,
        guidance_scale=1.0,
        retake_seeds=[52],
    )

    ref = dict(audio2audio_enable=True, ref_audio_input="ref.wav")
    add("audio2audio", audio=True, **ref, ref_audio_strength=0.5)
    add(
        "audio2audio_heun_strong", **ref, ref_audio_strength=0.3, scheduler_type="heun", guidance_interval=1.0
    )
    add(
        "audio2audio_pingpong_oss",
        **ref,
        ref_audio_strength=0.7,
        scheduler_type="pingpong",
        oss_steps="1,2,4,8",
    )
    add("audio2audio_task_retake_overridden", **ref, task="retake", ref_audio_strength=0.6, retake_seeds=[1])
    return out


# --- running ------------------------------------------------------------------------------------------------------


def run_case(pipe, folder: Path, case: dict) -> tuple[dict, torch.Tensor, torch.Tensor | None]:
    """One official call: (its returned input_params_json, final latents, audio [B, 2, N] or None)."""
    captured: dict = {}
    original_latents2audio = type(pipe).latents2audio

    def latents2audio(
        latents, target_wav_duration_second=30, sample_rate=48000, save_path=None, format="wav"
    ):
        captured["latents"] = latents.detach().clone()
        if not case["audio"]:
            return [str(Path(save_path) / "skipped.wav")]
        return original_latents2audio(
            pipe, latents, target_wav_duration_second, sample_rate, save_path, format
        )

    original_decode = pipe.music_dcae.decode

    def decode(*args, **kwargs):
        sr, wavs = original_decode(*args, **kwargs)
        captured["audio"] = torch.stack([w.detach().clone() for w in wavs])
        return sr, wavs

    kwargs = dict(case["kwargs"])
    for key in ("src_audio_path", "ref_audio_input"):
        if kwargs.get(key):
            kwargs[key] = str(folder / kwargs[key])
    if case["long_src"]:
        pipe.infer_latents = lambda path: long_src_latents().to(pipe.device, pipe.dtype)
    pipe.latents2audio, pipe.music_dcae.decode = latents2audio, decode
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = pipe(**kwargs, save_path=tmp + os.sep, format="wav")
    finally:  # back to the class's methods
        for obj, attr in ((pipe, "latents2audio"), (pipe.music_dcae, "decode"), (pipe, "infer_latents")):
            if attr in vars(obj):
                delattr(obj, attr)
    params = dict(result[-1])
    params.pop("timecosts"), params.pop("audio_path")
    for key in ("src_audio_path", "ref_audio_input"):  # store the paths as given, relative to the folder
        params[key] = case["kwargs"].get(key)
    return params, captured["latents"], captured.get("audio")


def run(dest: Path, names: list[str] | None = None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / "src.wav").exists():
        write_test_audio(dest)
    torch.manual_seed(GLOBAL_SEED)
    random.seed(GLOBAL_SEED)
    pipe = official_pipeline()
    all_cases = cases(dest)
    record, latents, audio = {}, {}, {}
    for name, case in all_cases.items():
        if names and name not in names:
            continue
        params, lat, wav = run_case(pipe, dest, case)
        record[name] = {**case, "official_params": params}
        latents[name] = lat.contiguous()
        if wav is not None:
            audio[name] = wav.contiguous()
        print(
            f"{name:40s} latents {tuple(lat.shape)} rms {lat.pow(2).mean().sqrt():.4f}"
            + (f" audio {tuple(wav.shape)}" if wav is not None else "")
        )
    with open(dest / "cases.json", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
    save_file(latents, str(dest / "latents.safetensors"))
    save_file(audio, str(dest / "audio.safetensors"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--live", nargs="+", metavar=("DEST", "CASE"), help="official run of some cases into DEST"
    )
    args = ap.parse_args()
    if args.live:
        dest = Path(args.live[0])
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("src.wav", "ref.wav"):
            (dest / f).write_bytes((OUT / f).read_bytes())
        run(dest, args.live[1:])
    else:
        run(OUT)
