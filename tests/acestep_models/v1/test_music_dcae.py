"""The music autoencoder (DCAE + vocoder + log-mel) against the official code's outputs on a tiny checkpoint.

tests/golden/tiny/{music_dcae_f8c8,music_vocoder}/ are tiny random-weight models written by the official classes;
tests/golden/dcae/music_dcae.safetensors holds the official MusicDCAE's inputs and outputs on them
(tests/golden/make_dcae.py, README.md there).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from acestep_models.common.weights import build, read_json, read_safetensors
from acestep_models.v1.autoencoder_dc import DCAEConfig
from acestep_models.v1.mel import mel_filterbank
from acestep_models.v1.music_dcae import (
    LATENT_SCALE,
    LATENT_SHIFT,
    OUTPUT_SAMPLE_RATE,
    MusicDCAE,
    MusicDCAEConfig,
    frames_for_seconds,
    resample,
    samples_for_frames,
)
from acestep_models.v1.vocoder import VocoderConfig

TOL = 1e-4  # relative L2 error allowed against the official float32 outputs


def rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref.float()).norm() / ref.float().norm()).item()


def official_parts(tiny) -> tuple[dict, dict, dict]:
    """The two official folders as one ``vae.``-less state dict (``dcae.*``, ``vocoder.*``) and their configs."""
    sd = {}
    for part, folder in (("dcae", "music_dcae_f8c8"), ("vocoder", "music_vocoder")):
        tensors, _ = read_safetensors(tiny / folder / "diffusion_pytorch_model.safetensors")
        sd.update({f"{part}.{k}": v for k, v in tensors.items()})
    return (
        sd,
        read_json(tiny / "music_dcae_f8c8" / "config.json"),
        read_json(tiny / "music_vocoder" / "config.json"),
    )


def load_tiny(golden, dtype=torch.float32) -> MusicDCAE:
    """The tiny official folders (stored in float16) as a float32 (or ``dtype``) MusicDCAE."""
    sd, dcae_json, vocoder_json = official_parts(golden / "tiny")
    return build(MusicDCAE, MusicDCAEConfig.from_official(dcae_json, vocoder_json), sd, dtype=dtype)


@pytest.fixture(scope="module")
def model(request) -> MusicDCAE:
    torch.set_num_threads(2)
    return load_tiny(request.config.rootpath / "tests" / "golden")


@pytest.fixture(scope="module")
def ref(request) -> dict[str, torch.Tensor]:
    ref = load_file(request.config.rootpath / "tests" / "golden" / "dcae" / "music_dcae.safetensors")
    return {k: v.float() if v.is_floating_point() else v for k, v in ref.items()}  # long_latents are float16


def test_config_from_shapes_equals_config_json(golden):
    sd, dcae_json, vocoder_json = official_parts(golden / "tiny")
    assert MusicDCAEConfig.from_state_dict(sd) == MusicDCAEConfig.from_official(dcae_json, vocoder_json)
    # ComfyUI's files name the vocoder's weight-normed convs the torch.parametrize way; shapes read the same.
    renamed = {
        k.replace("weight_g", "parametrizations.weight.original0").replace(
            "weight_v", "parametrizations.weight.original1"
        ): v
        for k, v in sd.items()
    }
    assert MusicDCAEConfig.from_state_dict(renamed) == MusicDCAEConfig.from_official(dcae_json, vocoder_json)


# music_dcae_f8c8/config.json of the released model (ACE-Step/ACE-Step-v1-3.5B); the key shapes checked below
# confirm its sizes.
RELEASED_DCAE_JSON = {
    "_class_name": "AutoencoderDC",
    "attention_head_dim": 32,
    "decoder_act_fns": "silu",
    "decoder_block_out_channels": [128, 256, 512, 1024],
    "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "decoder_layers_per_block": [3, 3, 3, 3],
    "decoder_norm_types": "rms_norm",
    "decoder_qkv_multiscales": [[], [], [5], [5]],
    "downsample_block_type": "Conv",
    "encoder_block_out_channels": [128, 256, 512, 1024],
    "encoder_block_types": ["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    "encoder_layers_per_block": [2, 2, 3, 3],
    "encoder_qkv_multiscales": [[], [], [5], [5]],
    "in_channels": 2,
    "latent_channels": 8,
    "scaling_factor": 0.41407,
    "upsample_block_type": "interpolate",
}


def test_full_size_layout_matches_comfyui_all_in_one(golden):
    """The released sizes build exactly the tensors of ComfyUI's all-in-one ``vae.`` part, and reading that key
    list's shapes gives back the released config."""
    keys = read_json(golden / "comfyui_all_in_one_keys.json")
    wn = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    shapes = {}
    for k, (shape, _dtype) in keys.items():
        if k.startswith("vae."):
            for old, new in wn.items():
                k = k.replace(old, new)
            shapes[k[len("vae.") :]] = tuple(shape)
    config = MusicDCAEConfig(DCAEConfig.from_official(RELEASED_DCAE_JSON), VocoderConfig())
    assert config.dcae == DCAEConfig()
    with torch.device("meta"):
        model = MusicDCAE(config)
        sd = {k: torch.empty(v) for k, v in shapes.items()}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    assert MusicDCAEConfig.from_state_dict(sd) == config
    assert model.vocoder.receptive_field() == 97  # mel frames: the tiled vocoder's margin


def test_mel_front_end(model, ref):
    fb = model.vocoder.mel_transform.mel_scale.fb  # stored in the official file (here in float16)
    assert rel(mel_filterbank(1025, 40, 16000, 128, 44100), fb) < 1e-3
    assert rel(model.vocoder.encode(ref["audio_44k"][0])[None], ref["logmel"]) < 1e-6
    assert rel(model.mel(ref["audio_44k"]), ref["encoder_in"]) < 1e-6


def test_resample_to_44k_matches_torchaudio_transform(ref):
    audio = resample(ref["audio_48k"], 48000, 44100)
    assert audio.shape[-1] == 44100
    # torchaudio.transforms.Resample builds its kernel in float64, the functional form in the signal's dtype.
    assert rel(audio, ref["audio_44k"][..., :44100]) < 1e-5


def test_dcae_matches_official(model, ref):
    with torch.no_grad():
        assert rel(model.dcae.encoder(ref["encoder_in"]), ref["encoder_out"]) < 1e-5
        z = ref["latents"] / LATENT_SCALE + LATENT_SHIFT
        assert rel(model.dcae.decoder(z), ref["decoder_out"]) < 1e-5
        # One latent frame = 16 positions <= head size: the official quadratic-attention branch.
        assert rel(model.dcae.encoder(ref["encoder_in"][..., :8]), ref["encoder_out_t1"]) < 1e-5
        assert rel(model.dcae.decoder(z[..., :1]), ref["decoder_out_t1"]) < 1e-5


def test_vocoder_matches_official(model, ref):
    with torch.no_grad():
        audio = model.vocoder.decode(ref["vocoder_in"])
    assert audio.shape == (1, 1, ref["vocoder_in"].shape[-1] * 512)
    assert rel(audio, ref["vocoder_out"]) < 1e-5


def test_encode_matches_official(model, ref):
    latents = model.encode(ref["audio_48k"], 48000)
    assert latents.shape == (1, 8, 16, 11) and latents.dtype == torch.float32  # 1 s -> 44100 -> 45056 samples
    assert rel(latents, ref["latents"]) < TOL
    # Mono at another rate: repeated to stereo (the official load_audio), resampled from 32 kHz.
    assert rel(model.encode(ref["audio_32k_mono"], 32000), ref["latents_32k"]) < TOL


def test_decode_matches_official_latents2audio(model, ref):
    latents = ref["latents"]
    audio = model.decode(latents)
    assert audio.shape == (1, 2, samples_for_frames(11)) == ref["decoded"].shape
    assert rel(audio, ref["decoded"]) < TOL
    # The vocoder in tiles of 100 mel frames (margins cover its receptive field) is the one-shot vocoder.
    assert rel(model.decode(latents, vocoder_tile=100), ref["decoded"]) < TOL
    assert rel(model.decode(latents, window=None, vocoder_tile=None), ref["decoded"]) < TOL


def test_decode_overlap_matches_official(model, ref):
    """The official overlapped decode (3 DCAE windows, 13 vocoder windows) with its seams, to rounding."""
    audio = model.decode_overlap(ref["long_latents"])[0]
    assert audio.shape[-1] == ref["overlap_length"].item() == int(800 * 4096 * 48000 / 44100)
    assert rel(audio[:, :4096], ref["overlap_head"]) < TOL
    assert rel(audio[:, -4096:], ref["overlap_tail"]) < TOL
    assert rel(audio[:, 280000:288000], ref["overlap_seam"]) < TOL
    assert rel(audio[:, ::127], ref["overlap_strided"]) < TOL


def test_chunked_decode_is_seamless(model, ref):
    """Windowed DCAE (official decode_overlap windows, scaled down) + tiled vocoder vs one pass on 64 frames."""
    latents = ref["long_latents"][..., :64]
    with torch.no_grad():
        whole = model.decode_mel(latents, window=None)
        windowed = model.decode_mel(
            latents, window=16
        )  # windows [0,16) [8,24) ..., keeping [0,12) [12,20) ...
        # The DCAE attends over its whole window, so windows change the mel a little, everywhere alike ...
        assert rel(windowed, whole) < 0.05
        diff = (windowed - whole).abs().mean((0, 1, 2)).unflatten(0, (-1, 8)).mean(1)  # per latent frame
        cuts = torch.arange(12, 60, 8)
        assert diff[cuts].max() < 1.5 * diff.median() and diff[cuts - 1].max() < 1.5 * diff.median()
        # ... and make no step at the cuts: the mel changes there from frame to frame as in the one-pass mel.
        step = lambda m: (m[..., 1:] - m[..., :-1]).abs().mean((0, 1, 2))  # noqa: E731
        assert torch.allclose(step(windowed)[cuts * 8 - 1], step(whole)[cuts * 8 - 1], rtol=0.1)
        # The vocoder's tiles reproduce its one-pass output exactly.
        mel = whole[0, :1]
        assert rel(model.vocode(mel, tile=120), model.vocoder.decode(mel)[:, 0]) < 1e-5
    audio = model.decode(latents[..., :24], window=16, vocoder_tile=120)
    assert audio.shape == (1, 2, samples_for_frames(24)) and torch.isfinite(audio).all()


def test_chunked_encode(model):
    audio = 0.3 * torch.randn(1, 2, 48 * 4096, generator=torch.Generator().manual_seed(0))
    whole = model.encode(audio, 44100, window=None)  # the official encode, in one pass
    assert whole.shape == (1, 8, 16, 48)
    assert torch.equal(model.encode(audio, 44100, window=48), whole)  # up to one window: the same
    # Windows of 16 frames (4 of context on each inner side) change the latents a little, everywhere alike.
    chunked = model.encode(audio, 44100, window=16)
    assert rel(chunked, whole) < 0.03
    diff = (chunked - whole).abs().mean((0, 1, 2))
    assert diff.max() < 1.5 * diff.median()


def test_lengths():
    assert frames_for_seconds(240) == 2583 and frames_for_seconds(30) == 322
    assert samples_for_frames(11) == 49041 and samples_for_frames(800) == 3566585
    assert samples_for_frames(1, 44100) == 4096 and OUTPUT_SAMPLE_RATE == 48000


def test_bfloat16(golden, ref):
    model = load_tiny(golden, torch.bfloat16)
    latents = model.encode(ref["audio_48k"], 48000)
    assert latents.dtype == torch.float32 and rel(latents, ref["latents"]) < 0.05
    audio = model.decode(ref["latents"])
    assert audio.dtype == torch.float32 and torch.isfinite(audio).all() and rel(audio, ref["decoded"]) < 0.1


LIVE = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from acestep.music_dcae.music_dcae_pipeline import MusicDCAE
from safetensors.torch import load_file, save_file
torch.set_num_threads(1)
m = MusicDCAE(dcae_checkpoint_path=sys.argv[2], vocoder_checkpoint_path=sys.argv[3]).eval()
x = load_file(sys.argv[4])
with torch.no_grad():
    lat, _ = m.encode(x["audio"], sr=44100)
    wav = m.decode(lat, sr=48000)[1][0]
    short = m.decode_overlap(lat, sr=48000)[1][0]  # one zero-padded vocoder window
save_file({"latents": lat.contiguous(), "audio": wav.contiguous(), "overlap": short.contiguous()}, sys.argv[4])
"""


@pytest.mark.skipif(
    not os.environ.get("ACESTEP_REF"), reason="set ACESTEP_REF (and ACESTEP_REF_PYTHON) to run"
)
def test_live_parity_with_official(model, golden, tmp_path):
    """A fresh input (44.1 kHz: no resampling on the way in) through the official code in its own interpreter."""
    gen = torch.Generator().manual_seed(7)
    audio = 0.3 * torch.randn(1, 2, 30000, generator=gen)
    path = tmp_path / "io.safetensors"
    save_file({"audio": audio}, path)
    tiny = golden / "tiny"
    python = os.environ.get("ACESTEP_REF_PYTHON", sys.executable)
    cmd = [
        python,
        "-c",
        LIVE,
        os.environ["ACESTEP_REF"],
        str(tiny / "music_dcae_f8c8"),
        str(tiny / "music_vocoder"),
        str(path),
    ]
    subprocess.run(cmd, check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    out = load_file(path)
    latents = model.encode(audio, 44100)
    assert rel(latents, out["latents"]) < TOL
    assert rel(model.decode(out["latents"]), out["audio"]) < TOL
    assert rel(model.decode_overlap(out["latents"]), out["overlap"]) < TOL
