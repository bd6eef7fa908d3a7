"""Golden fixtures for the ACE-Step 1.5 VAE, produced by the OFFICIAL code: diffusers' ``AutoencoderOobleck`` and
the official handler's ``tiled_encode`` / ``tiled_decode`` (``acestep/handler.py`` at 89031b8, called on a real
``AceStepHandler()`` whose ``vae`` is set by hand) plus the decode post-processing lines of ``generate_music``
(latent rescale / shift, float32 cast, anti-clipping), executed verbatim from the official source.

Writes ``tests/golden/v15/tiny/vae/`` (a tiny random-weight ``save_pretrained`` folder) and
``tests/golden/v15/vae/{inputs,outputs}.safetensors``; see ``tests/golden/v15/vae/README.md``.

    CUDA_VISIBLE_DEVICES="" PYTHONPATH=/work/ref15/ACE-Step-1.5 OMP_NUM_THREADS=1 \\
        /work/ref15/venv/bin/python tests/golden/make_v15_vae.py
"""

from __future__ import annotations

import inspect
import math
import os
import textwrap
from pathlib import Path

import torch
from safetensors.torch import save_file

torch.set_num_threads(1)

import acestep.handler as official  # noqa: E402
from diffusers import AutoencoderOobleck  # noqa: E402
from diffusers.models.autoencoders.autoencoder_oobleck import OobleckDiagonalGaussianDistribution  # noqa: E402

HERE = Path(__file__).resolve().parent
TINY, OUT = HERE / "v15" / "tiny" / "vae", HERE / "v15" / "vae"
SEED = 15_2026

# The released hop (strides 2, 4, 4, 6, 10 = 1920 samples per frame, 48 kHz stereo), narrow: base widths 6 / 4 and
# 3 latent channels (odd, and unlike every width, so no size can be confused with another).
TINY_CONFIG = dict(
    encoder_hidden_size=6,
    downsampling_ratios=[2, 4, 4, 6, 10],
    channel_multiples=[1, 2, 2, 3, 4],
    decoder_channels=4,
    decoder_input_channels=3,
    audio_channels=2,
    sampling_rate=48000,
)

# Tiling geometry at the official sizes runs on a stand-in VAE (``StandIn``): the same handler code, but an
# encoder / decoder so cheap that 60 s of audio and 300-frame decodes cost nothing.
# tests/acestep_models/v15/test_vae.py defines the same two functions.
STANDIN_HOP_ENCODE = 1920  # samples per frame of the stand-in encoder (as the real VAE)
STANDIN_HOP_DECODE = 8  # samples per frame of the stand-in decoder (the decode sizes are in frames)


def standin_encoder(x: torch.Tensor) -> torch.Tensor:
    """[B, C, S] -> [B, 2, S // 1920]: mean = channel 0 at each frame's first sample, scale = 0."""
    t = x.shape[-1] // STANDIN_HOP_ENCODE
    mean = x[:, :1, : t * STANDIN_HOP_ENCODE : STANDIN_HOP_ENCODE]
    return torch.cat([mean, torch.zeros_like(mean)], 1)


def standin_decoder(z: torch.Tensor) -> torch.Tensor:
    """[B, D, T] -> [B, 1, 8 T]: 10^4 x the window's first latent (channel 0) + the sample's index in the window."""
    n = z.shape[-1] * STANDIN_HOP_DECODE
    return z[:, :1, :1] * 1e4 + torch.arange(n, dtype=z.dtype)


def ramp(b: int, n: int) -> torch.Tensor:
    """[b, 2, n] audio whose every sample is its own index (+ 10^7 per item)."""
    return (torch.arange(n, dtype=torch.float64) + 1e7 * torch.arange(b)[:, None])[:, None].repeat(1, 2, 1)


def frames(b: int, t: int) -> torch.Tensor:
    """[b, 1, t] latents whose every frame is its own index (+ 10^5 per item)."""
    return (torch.arange(t, dtype=torch.float64) + 1e5 * torch.arange(b)[:, None])[:, None]


class _Out:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class StandIn(torch.nn.Module):
    """The VAE interface the handler uses (``encode(x).latent_dist.sample()``, ``decode(z).sample``, ``dtype``),
    with diffusers' own ``OobleckDiagonalGaussianDistribution`` around the stand-in encoder, in float64."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    @property
    def dtype(self):
        return torch.float64

    def encode(self, x):
        return _Out(latent_dist=OobleckDiagonalGaussianDistribution(standin_encoder(x)))

    def decode(self, z):
        return _Out(sample=standin_decoder(z))


@torch.no_grad()
def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Re-draw every parameter in ``named_parameters`` order: Snake log-alpha / log-beta 0.3 N; weight-norm
    directions N(0, 1); magnitudes 0.6 + 0.2 U (latent mean std ~1), the decoder's last conv 2 + 0.2 U (audio
    std ~0.3); biases 0.05 N."""
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("alpha", "beta"):
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        elif leaf == "weight_g":
            base = 2.0 if name == "decoder.conv2.weight_g" else 0.6
            p.copy_(base + 0.2 * torch.rand(p.shape, generator=gen))
        elif leaf == "bias":
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(torch.randn(p.shape, generator=gen))


def test_audio(gen: torch.Generator, batch: int, samples: int) -> torch.Tensor:
    """[batch, 2, samples] at 48 kHz: an exponential chirp 60 Hz -> 15 kHz, partials of 110 Hz and noise, a
    different phase / level per item and channel; peaks about 0.9."""
    t = torch.arange(samples, dtype=torch.float64) / 48000
    dur = samples / 48000
    k = math.log(15000 / 60) / dur
    items = []
    for b in range(batch):
        chans = []
        for c in range(2):
            chirp = torch.sin(2 * math.pi * 60 * (torch.exp(k * t) - 1) / k + c + b)
            tone = sum(0.15 / h * torch.sin(2 * math.pi * 110 * h * t + b + 2 * c) for h in (1, 2, 3))
            noise = 0.05 * torch.randn(samples, generator=gen, dtype=torch.float64)
            chans.append((0.5 + 0.1 * b) * chirp + tone + noise)
        items.append(torch.stack(chans))
    return torch.stack(items).float()


def official_block(method, first: str, last: str) -> str:
    """The official source lines of ``method`` from the one containing ``first`` to the one containing ``last``,
    dedented: run verbatim with ``exec``."""
    lines = inspect.getsource(method).splitlines()
    i = next(n for n, line in enumerate(lines) if first in line)
    j = next(n for n, line in enumerate(lines) if n >= i and last in line)
    block = textwrap.dedent("\n".join(lines[i : j + 1]))
    print(f"--- official generate_music lines {i}-{j}:\n{block}\n---")
    return block


RESCALE = official_block(
    official.AceStepHandler.generate_music,
    "if latent_shift != 0.0 or latent_rescale != 1.0:",
    "pred_latents = pred_latents * latent_rescale + latent_shift",
)
ANTI_CLIP = official_block(
    official.AceStepHandler.generate_music,
    "if pred_wavs.dtype != torch.float32:",
    "pred_wavs = pred_wavs / peak.clamp(min=1.0)",
)


def run(block: str, **names) -> dict:
    class _Log:  # the block's logger.info / debug calls, silenced
        def __getattr__(self, _):
            return lambda *a, **k: None

    scope = {"torch": torch, "logger": _Log(), "self": _Out(debug_stats=False), **names}
    exec(block, scope)
    return scope


@torch.no_grad()
def main() -> None:
    assert not torch.cuda.is_available(), "run with CUDA_VISIBLE_DEVICES='' (the handler's CPU choices)"
    gen = torch.Generator().manual_seed(SEED)
    vae = AutoencoderOobleck(**TINY_CONFIG)
    randomise(vae, gen)
    vae.save_pretrained(TINY)  # float32
    vae = AutoencoderOobleck.from_pretrained(TINY).eval()  # what a user's folder gives
    handler = official.AceStepHandler()  # device "cpu"
    handler.vae = vae
    handler.disable_tqdm = True
    i, o = {}, {}

    # --- the tiny Oobleck, one pass (diffusers encode / decode) -----------------------------------------------
    # 1.03 s (25.6 frames: the encoder floors to 25), stored in float16: the official code and the tests both run
    # on its float32 upcast.
    x = test_audio(gen, 2, 48000 + 1234).half()
    i["audio"], x = x, x.float()
    dist = vae.encode(x).latent_dist
    o["encode_mean"], o["encode_std"] = dist.mean, dist.std
    i["seed_encode"] = torch.tensor(1234)
    torch.manual_seed(1234)
    o["encode_sample"] = vae.encode(x).latent_dist.sample()  # the global RNG, as the official calls
    torch.manual_seed(1234)
    o["encode_handler"] = handler.tiled_encode(x)  # 1 s <= 15 s: the handler encodes in one pass
    z = i["latents"] = torch.randn(2, TINY_CONFIG["decoder_input_channels"], 12, generator=gen)
    o["decode"] = vae.decode(z).sample

    # The same in bfloat16, the handler's VAE dtype on CUDA (``from_pretrained(...).to(bfloat16)``; run on the CPU
    # here): the noise is drawn in bfloat16 too.
    vae16 = AutoencoderOobleck.from_pretrained(TINY).to(torch.bfloat16).eval()
    o["encode_mean_bf16"] = vae16.encode(x.bfloat16()).latent_dist.mean
    torch.manual_seed(1234)
    o["encode_sample_bf16"] = vae16.encode(x.bfloat16()).latent_dist.sample()
    o["decode_bf16"] = vae16.decode(z[:, :, :4].bfloat16()).sample

    # --- the tiny Oobleck through the handler's tiling, small chunks (the official functions take them) -------
    i["seed_tiled_encode"] = torch.tensor(99)
    torch.manual_seed(99)
    o["tiled_encode"] = handler.tiled_encode(x, chunk_size=16 * 1920, overlap=3 * 1920)  # 3 windows
    z = i["latents_long"] = torch.randn(1, TINY_CONFIG["decoder_input_channels"], 20, generator=gen)
    o["tiled_decode"] = handler.tiled_decode(z, chunk_size=8, overlap=2)  # 5 windows

    # --- generate_music's decode: rescale / shift, [B, T, D] -> [B, D, T], tiled_decode, float32, anti-clip ----
    pred = 0.8 * torch.randn(2, 8, TINY_CONFIG["decoder_input_channels"], generator=gen)
    pred[1] *= 0.25  # item 0 clips, item 1 does not
    i["pred_latents"] = pred
    i["latent_rescale"], i["latent_shift"] = torch.tensor(1.25), torch.tensor(-0.125)
    scope = run(RESCALE, pred_latents=pred, latent_shift=-0.125, latent_rescale=1.25)
    z = scope["pred_latents"].transpose(1, 2).contiguous().to(vae.dtype)
    pre = handler.tiled_decode(z)  # T = 8 <= 256: one pass per item
    o["pre_clip_peak"] = pre.abs().amax((1, 2))
    assert o["pre_clip_peak"][0] > 1 > o["pre_clip_peak"][1], o["pre_clip_peak"]
    o["post_clip"] = run(ANTI_CLIP, pred_wavs=pre)["pred_wavs"]
    # Anti-clipping alone: peaks 2.5, 0.7, exactly 1.0 (untouched), and a bfloat16 input (cast to float32 first).
    clip = torch.randn(3, 2, 500, generator=gen)
    peaks = torch.tensor([2.5, 0.7, 1.0])[:, None, None]
    clip = i["clip"] = clip / clip.abs().amax((1, 2), keepdim=True) * peaks
    o["anti_clip"] = run(ANTI_CLIP, pred_wavs=clip.clone())["pred_wavs"]
    o["anti_clip_bf16"] = run(ANTI_CLIP, pred_wavs=clip.bfloat16())["pred_wavs"]

    # --- the handler's tiling at its own sizes, on the stand-in VAE ------------------------------------------
    handler.vae = StandIn()
    for name, n, env in (
        ("standin_encode_15s", 1_230_017, None),  # CPU: gpu memory 0 <= 8 GB -> 15 s chunks, 2 s overlap: 3
        ("standin_encode_direct", 48000 * 15, None),  # exactly one chunk: one pass
        ("standin_encode_30s", 48000 * 60 + 12345, "16"),  # MAX_CUDA_VRAM=16 (the official debug knob): 30 s
    ):
        if env:
            os.environ["MAX_CUDA_VRAM"] = env
        i[name + "_samples"] = torch.tensor(n)
        torch.manual_seed(7)  # the tests draw from torch.Generator().manual_seed(7)
        o[name] = handler.tiled_encode(ramp(2, n))
        os.environ.pop("MAX_CUDA_VRAM", None)
    explicit = dict(chunk_size=100, overlap=20, offload_wav_to_cpu=False)
    for name, device, b, t, kw in (
        ("standin_decode_cpu", "cpu", 2, 300, {}),  # CPU: 256 / 64 -> 3 windows per item
        ("standin_decode_cpu_256", "cpu", 1, 256, {}),  # T <= 256: one pass
        ("standin_decode_cpu_257", "cpu", 1, 257, {}),
        ("standin_decode_cuda", "cuda", 1, 300, {}),  # CUDA, 0 GB free: 128, overlap halved to 32
        ("standin_decode_mps", "mps", 1, 70, {}),  # MPS: cut to 32 / 8
        ("standin_decode_gpu_path", "cpu", 1, 301, explicit),  # the non-offload path, explicit sizes
    ):
        handler.device = device
        i[name + "_frames"] = torch.tensor([b, t])
        o[name] = handler.tiled_decode(frames(b, t), **kw)
    handler.device = "cpu"

    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in i.items()}, OUT / "inputs.safetensors")
    save_file({k: v.contiguous() for k, v in o.items()}, OUT / "outputs.safetensors")
    for f in (*OUT.glob("*.safetensors"), *TINY.iterdir()):
        f.chmod(0o644)
    for k, v in {**i, **o}.items():
        v = v.double()
        std = v.std() if v.numel() > 1 else 0
        print(f"{k:30s} {tuple(v.shape)!s:18s} std {std:.4g} absmax {v.abs().max():.4g}")


if __name__ == "__main__":
    main()
