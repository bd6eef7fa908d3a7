"""ACE-Step 1.5 graphs that mix our nodes with ComfyUI's own, queued on a real ComfyUI 0.20.1: our latents are
core's 1.5 LATENT and core's are ours, where the types allow.

- Core's Empty Ace Step 1.5 Latent Audio is ours (the same tensor), and drives our sampler bit for bit as ours does.
- Core's VAE Decode Audio (core's Load VAE on ace_1.5_vae) decodes our sampler's LATENT to what our Latent to Audio
  decodes with the same core VAE (ACE-Step 1.5 VAE from core VAE), up to each decoder's loudness scaling.
- Core's VAE Encode Audio + Set Latent Noise Mask: a core 1.5 LATENT whose noise mask is our sampler's repaint window.

Core's KSampler is not here: it needs core's CONDITIONING for its 1.5 MODEL, and only core's ACE-Step 1.5 text
encoder makes one with the lyric embedding that model reads (``conditioning_lyrics``): a fixed full-size Qwen3-0.6B
(1.2 GB in bfloat16) beside a 1.7B or 4B LM (DualCLIPLoader, type ace). The one core node that makes CONDITIONING
from nothing, Lotus Conditioning, has no lyric embedding: core's 1.5 model fails on it (``CONDRegular(None)``).

The server is the suite's (``comfy``, session); the core-sized models (a DiT 64 latent channels wide, core's full-size
Oobleck VAE with seeded random weights) are written into its model folders once per module. ComfyUI 0.3.76 has no
ACE-Step 1.5 of its own: there the module skips.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch
from conftest import comfyui_root
from safetensors.torch import load_file

_ROOT = comfyui_root()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        _ROOT is None or not (_ROOT / "comfy" / "ldm" / "ace" / "ace_step15.py").is_file(),
        reason="this ComfyUI (0.3.76) has no ACE-Step 1.5 nodes of its own to mix with ours",
    ),
]

CAPTION = "lofi hip hop, warm piano, vinyl crackle"
LYRICS = "[verse]\nLights on the river\n[chorus]\nSing it out loud"
SEED, GLOBAL_SEED = 42, 7
SAMPLES_PER_FRAME = 1920  # 48 kHz / 25 Hz latent frames
MIN_FRAMES = 128  # the official sampler makes at least 5.12 s (_prepare_batch: max(128, longest item))
# Where the module puts the core-sized models, as core's loaders list them (subfolders of diffusion_models/, vae/)
CORE_DIT, CORE_VAE = "core15/acestep_v1.5_turbo.safetensors", "core15/ace_1.5_vae.safetensors"


@pytest.fixture(scope="module")
def core_models(comfy, tmp_path_factory) -> None:
    """A DiT whose latents are 64 wide, as released (else the tiny golden one; no silence_latent.pt beside it, so
    our loader takes core's built-in one, as for ComfyUI's repackaged file), and core's full-size 1.5 Oobleck VAE
    (seeded random weights, as core's Load VAE detects it) in float16: 0.34 GB."""
    from e2e.conftest import V15_TINY
    from e2e.test_sampling_nodes import in_comfyui
    from safetensors.torch import save_file

    from acestep_models.common.weights import CONFIG_METADATA, read_json
    from acestep_models.v15.model import AceStep15Config, AceStepConditionGenerationModel

    models = comfy.base / "models"
    official = {
        **read_json(V15_TINY / "acestep-v15-turbo" / "config.json"),
        "audio_acoustic_hidden_dim": 64, "timbre_hidden_dim": 64, "in_channels": 192,
    }  # fmt: skip
    torch.manual_seed(0)
    model = AceStepConditionGenerationModel(AceStep15Config.from_official(official))
    sd = {
        k: (1 + 0.1 * torch.randn_like(v) if k.endswith("norm.weight") else 0.2 * torch.randn_like(v))
        for k, v in model.state_dict().items()
    }
    (models / "diffusion_models" / "core15").mkdir(parents=True)
    metadata = {CONFIG_METADATA.format(part="dit"): json.dumps(official)}
    save_file(sd, str(models / "diffusion_models" / CORE_DIT), metadata=metadata)

    vae = models / "vae" / CORE_VAE
    vae.parent.mkdir(parents=True)
    in_comfyui(
        tmp_path_factory.mktemp("core_vae"),
        f"""
        from comfy.ldm.audio.autoencoder import AudioOobleckVAE
        from safetensors.torch import save_file

        # core builds its layers without initialising them: seeded values, each weight-normed row of norm 1
        g = torch.Generator().manual_seed(0)

        def value(k, v):
            if k.endswith(("weight_g", "original0")):
                return torch.ones_like(v)
            if k.endswith(("alpha", "beta")):  # snake, log scale: 1
                return torch.zeros_like(v)
            return (0.02 if k.endswith("bias") else 1.0) * torch.randn(v.shape, generator=g)

        sd = {{k: value(k, v).half() for k, v in AudioOobleckVAE(strides=[2, 4, 4, 6, 10]).state_dict().items()}}
        save_file(sd, {str(vae)!r})
        print(json.dumps({{"tensors": len(sd)}}))
        """,
    )


# --- graphs ----------------------------------------------------------------------------------------------------------


def song(comfy, latent: dict, sampler: dict | None = None, extra: dict | None = None) -> dict:
    """Checkpoint "1" (the tiny official folder) -> Encode "2" -> latent "3" -> Sampler "5" -> Decode "6" -> float
    WAV "7"; ``sampler``: its widgets and inputs over these."""
    return {
        "1": {"type": "AceStepFaithful15CheckpointLoader", "widgets": {"ckpt_name": comfy.models["v15"]}},
        "2": {
            "type": "AceStepFaithful15Encode",
            "widgets": {"caption": CAPTION, "lyrics": LYRICS, "bpm": 90, "key_scale": "A minor"},
            "inputs": {"text_encoder": ["1", "text_encoder"]},
        },
        "3": latent,
        "5": {
            "type": "AceStepFaithful15Sampler",
            "widgets": {"seed": SEED, "global_seed": GLOBAL_SEED, **(sampler or {}).get("widgets", {})},
            "inputs": {
                "dit": ["1", "dit"],
                "prompt": ["2", "prompt"],
                "latent": ["3", 0],  # (core's nodes name their outputs by type: "LATENT")
                **(sampler or {}).get("inputs", {}),
            },
        },
        "6": {
            "type": "AceStepFaithful15Decode",
            "widgets": {"normalize": False},
            "inputs": {"vae": ["1", "vae"], "latent": ["5", "latent"]},
        },
        "7": save_audio("6", "audio"),
        **(extra or {}),
    }


def save_audio(node: str, output: str) -> dict:
    return {
        "type": "AceStepFaithfulSaveAudio",  # float WAV: the samples as they are
        "widgets": {"filename_prefix": "e2e/core15", "format": "wav"},
        "inputs": {"audio": [node, output]},
    }


def save_latent(node: str, output: str) -> dict:
    return {
        "type": "SaveLatent",  # core's: the LATENT's samples as they are, in a .latent file
        "widgets": {"filename_prefix": "e2e/core15"},
        "inputs": {"samples": [node, output]},
    }


def run(comfy, nodes: dict):
    result = comfy.run(nodes)
    assert result.ok, str(result)
    return result


def saved(comfy, result, node: str = "7") -> list[np.ndarray]:
    out = []
    for item in result.outputs[node]["audio"]:
        audio, rate = soundfile.read(comfy.output / item["subfolder"] / item["filename"], dtype="float32")
        assert rate == 48000
        out.append(audio)
    return out


def latent_file(comfy, result, node: str) -> torch.Tensor:
    (item,) = result.outputs[node]["latents"]
    return load_file(comfy.output / item["subfolder"] / item["filename"])["latent_tensor"]


def heard(audio: np.ndarray, frames: int) -> None:
    """What a user checks of audio decoded from ``frames`` latent frames: 48 kHz stereo of that length, finite, not
    silent."""
    assert audio.shape == (frames * SAMPLES_PER_FRAME, 2)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3


# --- core's empty latent is ours -------------------------------------------------------------------------------------


# (10.7 s and 41.7 s: round(seconds * 25) would give a frame more / fewer than core's round(seconds * 48000 / 1920))
@pytest.mark.parametrize("seconds", [2.0, 30.0, 10.7, 41.7])
def test_our_empty_latent_is_cores(comfy, seconds):
    """The same LATENT tensor from both nodes for the same seconds and batch: [batch, 64, frames] float32 zeros."""
    widgets = {"seconds": seconds, "batch_size": 2}
    nodes = {
        "1": {"type": "EmptyAceStep1.5LatentAudio", "widgets": widgets},
        "2": {"type": "AceStepFaithful15EmptyLatent", "widgets": widgets},
        "3": save_latent("1", "LATENT"),
        "4": save_latent("2", "latent"),
    }
    result = run(comfy, nodes)
    core, ours = latent_file(comfy, result, "3"), latent_file(comfy, result, "4")
    assert core.dtype == ours.dtype == torch.float32 and core.shape[:2] == (2, 64)
    assert core.shape == ours.shape and torch.equal(core, ours), (list(core.shape), list(ours.shape))


def test_cores_empty_latent_drives_our_sampler_as_ours_does(comfy):
    widgets = {"seconds": 6.0, "batch_size": 2}
    core = saved(comfy, run(comfy, song(comfy, {"type": "EmptyAceStep1.5LatentAudio", "widgets": widgets})))
    ours = saved(comfy, run(comfy, song(comfy, {"type": "AceStepFaithful15EmptyLatent", "widgets": widgets})))
    assert len(core) == len(ours) == 2
    for a, b in zip(core, ours):
        heard(a, 150)
        assert np.array_equal(a, b), float(np.abs(a - b).max())
    assert not np.array_equal(ours[0], ours[1])  # two songs, not one twice


# --- core's VAE Decode Audio decodes our sampler's latent ------------------------------------------------------------

# Each decoder scales the Oobleck's output by a positive number per song, differently: core's VAE Decode Audio
# divides by max(1, 5 * std), our Latent to Audio (normalize off) by max(1, peak) (the official anti-clipping). So the
# two agree once each song is scaled to a peak of 1. Measured (0.20.1, CPU, float32): 5.1e-8 relative L2 over the
# cut below, 4.9e-8 over the whole 128 frames (our decode tiled, as by default; core's in one pass); a wrong frame,
# channel or scale of the latent moves it to order 1.
DECODE_TOLERANCE = 1e-6
# Core's full-size Oobleck takes 15-25 s for 5.12 s of audio on 2 CPU cores: both decoders get 16 frames of the song,
# cut out by core's Latent Cut (which takes our LATENT's frames as its x).
CUT_INDEX, CUT_FRAMES = 56, 16


def test_cores_vae_decode_audio_decodes_our_samplers_latent(comfy, core_models):
    """Our DiT (64 latent channels) -> our sampler's LATENT -> core's Latent Cut -> core's VAE Decode Audio (core's
    Load VAE), and the same cut through our Latent to Audio on the same core VAE (ACE-Step 1.5 VAE from core VAE)."""
    nodes = song(comfy, {"type": "AceStepFaithful15EmptyLatent", "widgets": {"seconds": 2.0}})
    nodes["0"] = {"type": "AceStepFaithful15DiTLoader", "widgets": {"dit_name": CORE_DIT}}
    nodes["5"]["inputs"]["dit"] = ["0", "dit"]
    nodes["8"] = {"type": "VAELoader", "widgets": {"vae_name": CORE_VAE}}
    nodes["9"] = {"type": "AceStepFaithful15VAEFromCore", "inputs": {"vae": ["8", "VAE"]}}
    nodes["10"] = {
        "type": "LatentCut",
        "widgets": {"dim": "x", "index": CUT_INDEX, "amount": CUT_FRAMES},
        "inputs": {"samples": ["5", "latent"]},
    }
    nodes["6"]["inputs"] = {"vae": ["9", "vae"], "latent": ["10", "LATENT"]}
    nodes["11"] = {"type": "VAEDecodeAudio", "inputs": {"samples": ["10", "LATENT"], "vae": ["8", "VAE"]}}
    nodes["12"] = save_audio("11", "AUDIO")
    nodes["13"] = save_latent("5", "latent")
    nodes["14"] = save_latent("10", "LATENT")
    result = run(comfy, nodes)

    latent, cut = latent_file(comfy, result, "13"), latent_file(comfy, result, "14")
    # (2 s: the official minimum, 5.12 s)
    assert latent.shape == (1, 64, MIN_FRAMES) and latent.dtype == torch.float32, latent.shape
    assert torch.isfinite(latent).all() and latent.std() > 0.1
    assert torch.equal(cut, latent[..., CUT_INDEX : CUT_INDEX + CUT_FRAMES])
    (core,), (ours,) = saved(comfy, result, "12"), saved(comfy, result, "7")
    heard(core, CUT_FRAMES)
    heard(ours, CUT_FRAMES)
    core, ours = core / np.abs(core).max(), ours / np.abs(ours).max()
    rel = float(np.linalg.norm(core - ours) / np.linalg.norm(ours))
    print(f"core VAE Decode Audio vs our Latent to Audio, peak-normalised: relative L2 {rel:.2e}")
    assert rel < DECODE_TOLERANCE, rel


# --- core's latent and noise mask drive our sampler's repaint --------------------------------------------------------

TONE_FRAMES = 75  # input/tone.wav: 3 s


def test_cores_latent_noise_mask_is_our_samplers_repaint_window(comfy, core_models):
    """tone.wav through core's Load Audio and VAE Encode Audio (core's 1.5 LATENT, 75 frames), core's Set Latent
    Noise Mask over its frames 25-50 (core's Solid Mask and Combine Masks): our sampler's repaint on it repaints
    what repainting_start 1 s, repainting_end 2 s repaint, and what the same MASK on its mask input repaints; without
    the noise mask it repaints the whole song (the widgets' 0 to the end). (Our sampler reads the song itself from
    source_audio, with its VAE, as the official repaint does; from a LATENT it takes the batch, the length and the
    noise mask, so the tiny checkpoint's 3-channel DiT runs on core's 64-channel latent.)"""
    core_latent = {
        "10": {"type": "LoadAudio", "widgets": {"audio": "tone.wav"}},
        "11": {"type": "VAELoader", "widgets": {"vae_name": CORE_VAE}},
        "12": {"type": "VAEEncodeAudio", "inputs": {"audio": ["10", "AUDIO"], "vae": ["11", "VAE"]}},
        "13": {"type": "SolidMask", "widgets": {"value": 0.0, "width": TONE_FRAMES, "height": 1}},
        "14": {"type": "SolidMask", "widgets": {"value": 1.0, "width": 25, "height": 1}},
        "15": {
            "type": "MaskComposite",
            "widgets": {"x": 25, "y": 0, "operation": "add"},
            "inputs": {"destination": ["13", "MASK"], "source": ["14", "MASK"]},
        },
        "16": save_latent("12", "LATENT"),
    }
    repaint = {"task": "repaint"}
    source = {"vae": ["1", "vae"], "source_audio": ["10", "AUDIO"]}

    masked = {"type": "SetLatentNoiseMask", "inputs": {"samples": ["12", "LATENT"], "mask": ["15", "MASK"]}}

    def songs(noise_mask: bool, widgets: dict | None = None, inputs: dict | None = None):
        sampler = {"widgets": {**repaint, **(widgets or {})}, "inputs": {**source, **(inputs or {})}}
        nodes = song(comfy, masked, sampler, extra=core_latent)
        if not noise_mask:  # core's encoded latent itself
            del nodes["3"]
            nodes["5"]["inputs"]["latent"] = ["12", 0]
        result = run(comfy, nodes)
        return result, saved(comfy, result)

    result, (via_noise_mask,) = songs(True)
    encoded = latent_file(comfy, result, "16")
    assert encoded.shape == (1, 64, TONE_FRAMES) and torch.isfinite(encoded).all()
    heard(via_noise_mask, MIN_FRAMES)  # (3 s: the official minimum, 5.12 s)

    _, (via_widgets,) = songs(False, {"repainting_start": 1.0, "repainting_end": 2.0})
    _, (via_mask_input,) = songs(False, inputs={"mask": ["15", "MASK"]})
    _, (whole,) = songs(False)
    assert np.array_equal(via_noise_mask, via_widgets), float(np.abs(via_noise_mask - via_widgets).max())
    assert np.array_equal(via_noise_mask, via_mask_input)
    assert not np.array_equal(via_noise_mask, whole)
