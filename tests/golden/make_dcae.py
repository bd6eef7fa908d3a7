"""Golden fixtures for the music autoencoder (DCAE + vocoder + log-mel), produced by the OFFICIAL ACE-Step code.

Writes tiny random-weight checkpoints in the official layout (``save_pretrained`` of diffusers' ``AutoencoderDC`` and
the official ``ADaMoSHiFiGANV1``) to ``tests/golden/tiny/{music_dcae_f8c8,music_vocoder}/``, then runs the official
``MusicDCAE`` built from them and stores inputs and outputs in ``tests/golden/dcae/``. See ``tests/golden/dcae/README.md``.

    ACESTEP_REF=/work/ref/ACE-Step CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 \\
        /work/venvs/ref/bin/python tests/golden/make_dcae.py
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

REF = os.environ.get("ACESTEP_REF")
if not REF:
    sys.exit("Set ACESTEP_REF to a checkout of the official ACE-Step code (github.com/ace-step/ACE-Step).")
sys.path.insert(0, REF)
torch.set_num_threads(1)

from acestep.music_dcae.music_dcae_pipeline import MusicDCAE  # noqa: E402
from acestep.music_dcae.music_vocoder import ADaMoSHiFiGANV1  # noqa: E402
from diffusers import AutoencoderDC  # noqa: E402

HERE = Path(__file__).resolve().parent
TINY_DCAE, TINY_VOCODER, OUT = (
    HERE / "tiny" / "music_dcae_f8c8",
    HERE / "tiny" / "music_vocoder",
    HERE / "dcae",
)
SEED = 20240611

# The f8c8 structure (4 stages: 3 ResBlock + 1 EfficientViT, strided-conv down, interpolate up, RMSNorm, 5x5
# multi-scale attention) with narrow channels; head size 16 (4 heads) so that a 1-frame latent (16 x 1 positions)
# takes the official quadratic-attention branch.
DCAE_CONFIG = dict(
    in_channels=2,
    latent_channels=8,
    attention_head_dim=16,
    encoder_block_types=["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    decoder_block_types=["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"],
    encoder_block_out_channels=[8, 16, 32, 64],
    decoder_block_out_channels=[8, 16, 32, 64],
    encoder_layers_per_block=[1, 1, 2, 2],
    decoder_layers_per_block=[2, 1, 1, 2],
    encoder_qkv_multiscales=[[], [], [5], [5]],
    decoder_qkv_multiscales=[[], [], [5], [5]],
    upsample_block_type="interpolate",
    downsample_block_type="Conv",
    decoder_norm_types="rms_norm",
    decoder_act_fns="silu",
    scaling_factor=0.41407,
)
# The released vocoder's structure and rates (7 upsamplers: 4*4*2^5 = 512 samples per mel frame, 128 mel bins,
# 2048/512 STFT at 44.1 kHz), narrow: 128 channels before the first upsampler so the last one keeps 1.
VOCODER_CONFIG = dict(
    input_channels=128,
    depths=[2, 1, 2, 1],
    dims=[16, 24, 32, 32],
    drop_path_rate=0.0,
    kernel_sizes=[7],
    upsample_rates=[4, 4, 2, 2, 2, 2, 2],
    upsample_kernel_sizes=[8, 8, 4, 4, 4, 4, 4],
    resblock_kernel_sizes=[3, 5],
    resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
    num_mels=32,
    upsample_initial_channel=128,
    use_template=False,
    pre_conv_kernel_size=13,
    post_conv_kernel_size=13,
    sampling_rate=44100,
    n_fft=2048,
    win_length=2048,
    hop_length=512,
    f_min=40,
    f_max=16000,
    n_mels=128,
)


@torch.no_grad()
def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Re-draw every parameter (buffers such as the mel filterbank stay official): weights ~ N(0, 1 / fan_in),
    norm scales and weight-norm magnitudes ~ 1 + N(0, 0.2) (1.4 + N(0, 0.1) for the upsamplers),
    biases ~ N(0, 0.1), ConvNeXt layer scales ~ 0.5 + N(0, 0.1)."""
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        r = torch.randn(p.shape, generator=gen)
        if leaf == "gamma":
            p.copy_(0.5 + 0.1 * r)
        elif leaf == "weight_g" and "ups." in name:
            p.copy_(
                1.4 + 0.1 * r
            )  # makes up for SiLU halving small signals, so the audio is not near silence
        elif leaf == "weight_g" or (leaf == "weight" and p.ndim == 1):
            p.copy_(1.0 + 0.2 * r)
        elif leaf == "bias":
            p.copy_(0.1 * r)
        else:
            p.copy_(r / math.sqrt(p[0].numel()))
        assert (p != 0).all(), name


def test_audio(gen: torch.Generator, seconds: float, sr: int, channels: int) -> torch.Tensor:
    """Exponential chirps (80 Hz -> 12 kHz, a different start per channel), a few partials, and white noise."""
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    out = []
    for c in range(channels):
        f0, f1 = 80.0 * (1 + c), 12000.0
        k = math.log(f1 / f0) / seconds
        chirp = torch.sin(2 * math.pi * f0 * (torch.exp(k * t) - 1) / k)
        tone = sum(0.2 / h * torch.sin(2 * math.pi * 220.0 * h * t + c) for h in (1, 2, 3))
        out.append(0.4 * chirp + tone + 0.05 * torch.randn(t.shape, generator=gen, dtype=torch.float64))
    return torch.stack(out).float()[None]  # [1, C, N]


@torch.no_grad()
def main() -> None:
    gen = torch.Generator().manual_seed(SEED)
    dcae, vocoder = AutoencoderDC(**DCAE_CONFIG), ADaMoSHiFiGANV1(**VOCODER_CONFIG)
    randomise(dcae, gen)
    randomise(vocoder, gen)
    # Stored in float16 (half the size); diffusers' from_pretrained loads them back into the float32 classes.
    dcae.half().save_pretrained(TINY_DCAE)
    vocoder.half().save_pretrained(TINY_VOCODER)

    # The official wrapper, loading the files just written (source rate 48 kHz, as in the pipeline).
    model = MusicDCAE(dcae_checkpoint_path=str(TINY_DCAE), vocoder_checkpoint_path=str(TINY_VOCODER)).eval()
    assert all(t.dtype == torch.float32 for t in model.state_dict().values())
    lo, hi = model.min_mel_value, model.max_mel_value
    g = {}
    audio = g["audio_48k"] = test_audio(gen, 1.0, 48000, 2)  # [1, 2, 48000]

    # Encode, step by step (as MusicDCAE.encode does it), then in one call.
    a44 = model.resampler(audio)
    g["audio_44k"] = torch.nn.functional.pad(a44, (0, -a44.shape[-1] % 4096))  # 44.1 kHz, padded to 4096 k
    g["logmel"] = model.forward_mel(g["audio_44k"])  # [1, 2, 128, F]
    g["encoder_in"] = model.transform((g["logmel"] - lo) / (hi - lo))
    g["encoder_out"] = model.dcae.encoder(g["encoder_in"])
    g["encoder_out_t1"] = model.dcae.encoder(
        g["encoder_in"][..., :8]
    )  # 16 x 1 positions: quadratic attention
    g["latents"], _ = model.encode(audio, sr=48000)
    mono = g["audio_32k_mono"] = test_audio(gen, 0.5, 32000, 1)  # load_audio repeats mono to stereo
    g["latents_32k"], _ = model.encode(mono.repeat(1, 2, 1), sr=32000)

    # Decode, step by step (as MusicDCAE.decode does it), then as latents2audio calls it (sr=48000).
    z = g["latents"] / model.scale_factor + model.shift_factor
    g["decoder_out"] = model.dcae.decoder(z)
    g["decoder_out_t1"] = model.dcae.decoder(z[..., :1])
    g["vocoder_in"] = ((g["decoder_out"] * 0.5 + 0.5) * (hi - lo) + lo)[:, 0]
    g["vocoder_out"] = model.vocoder.decode(g["vocoder_in"])
    g["decoded"] = model.decode(g["latents"], sr=48000)[1][0][None]  # [1, 2, N48]

    # decode_overlap on a latent long enough for 3 DCAE windows (512 frames, hop 256) and 13 vocoder windows;
    # the 2 x 3566585 samples are stored in parts to keep the fixture small.
    g["long_latents"] = torch.randn(1, 8, 16, 800, generator=gen).half()  # stored in float16, run in float32
    wav = model.decode_overlap(g["long_latents"].float(), sr=48000)[1][0]
    g["overlap_head"], g["overlap_tail"] = wav[:, :4096], wav[:, -4096:]
    g["overlap_seam"] = wav[:, 280000:288000]  # around the first vocoder seam (44.1 kHz sample 261120)
    g["overlap_strided"] = wav[:, ::127]
    g["overlap_length"] = torch.tensor([wav.shape[-1]])

    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in g.items()}, OUT / "music_dcae.safetensors")
    for k, v in g.items():
        v = v.float()
        print(
            f"{k:16s} {tuple(v.shape)!s:22s} std {v.std() if v.numel() > 1 else 0:.4g} absmax {v.abs().max():.4g}"
        )


if __name__ == "__main__":
    main()
