"""ACE-Step 1.5 VAE: the diffusers ``AutoencoderOobleck`` (``<root>/checkpoints/vae/``), and the official handler's
tiled encode / decode around it (``acestep/handler.py`` at 89031b8: ``tiled_encode``, ``tiled_decode``).

Audio [B, C, S] (48 kHz stereo in the released model) <-> latents [B, D, T] in the VAE's own layout (channels
first; the DiT works in [B, T, D]: ``audio_to_latents`` / ``latents_to_audio`` do the handler's transposes).
One latent frame = ``prod(downsampling_ratios)`` samples (1920: 25 Hz). Every size comes from ``config.json`` or the
tensor shapes.

Architecture (diffusers ``autoencoder_oobleck.py``): weight-normed convs and Snake activations only.
- encoder: conv(k7) -> per ratio s an EncoderBlock (3 residual units at dilations 1, 3, 9, Snake, strided conv
  k=2s) -> Snake -> conv(k3) to ``encoder_hidden_size`` channels = [mean, scale] of a diagonal Gaussian with
  ``std = softplus(scale) + 1e-4``;
- decoder: conv(k7) -> per ratio (reversed) a DecoderBlock (Snake, transposed conv k=2s, 3 residual units) ->
  Snake -> conv(k7, no bias) to the audio channels.

Official behaviour reproduced (quirks named where they live):
- encode always *samples* (``latent_dist.sample()``, never the mode); the official draws from the global torch
  RNG, ``encode(generator=g)`` draws the same numbers in the same order from ``g`` (same shape, dtype, device rule
  as diffusers' ``randn_tensor``); ``generator=None`` uses the global RNG as the official does.
- tiled encode: chunks of 15 s (GPU memory <= 8 GB, CPU: 0) or 30 s, 2 s overlap, one sample per chunk, each
  chunk's core kept; audio up to one chunk is encoded in one pass (the whole batch at once).
- tiled decode: chunk 256 frames on CPU (CUDA: 512 / 384 / 256 / 128 by free VRAM; MPS: 32 with overlap 8), overlap
  64 halved until the stride is positive; T <= chunk decodes directly; batch items one at a time; trims by
  ``round(frames * upsample_factor)``.
- ``latent_rescale`` / ``latent_shift`` before decode, float32 output, anti-clipping (a clip whose peak exceeds 1 is
  divided by its peak).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..common import ops

STD_EPS = 1e-4  # diffusers OobleckDiagonalGaussianDistribution: std = softplus(scale) + 1e-4
SNAKE_EPS = 1e-9  # diffusers Snake1d: x + 1 / (beta + 1e-9) * sin(alpha * x) ** 2
RES_DILATIONS = (1, 3, 9)  # the three residual units of every Oobleck block
RES_KERNEL = 7

# The official handler counts its encode chunks in samples at 48 kHz (``48000 * 15``), whatever the VAE's rate.
HANDLER_SAMPLE_RATE = 48000
ENCODE_CHUNK_LOW = 48000 * 15  # tiled_encode: get_gpu_memory_gb() <= 8 (0 without CUDA)
ENCODE_CHUNK = 48000 * 30  # tiled_encode: more GPU memory
ENCODE_LOW_MEMORY_GB = 8
ENCODE_OVERLAP = 48000 * 2  # tiled_encode default overlap (samples)
DECODE_OVERLAP = 64  # tiled_decode default overlap (latent frames)
DECODE_MAX_CHUNK = 512  # MemoryUtilsMixin.VAE_DECODE_MAX_CHUNK_SIZE
DECODE_CPU_CHUNK = 256  # _get_auto_decode_chunk_size on CPU
DECODE_CUDA_CHUNKS = ((24.0, 512), (16.0, 384), (12.0, 256))  # (free VRAM GB at least, chunk); below: 128
DECODE_CUDA_MIN_CHUNK = 128
DECODE_MPS_MEMORY_CHUNKS = ((48.0, 1536), (24.0, 1024))  # then capped at 512: every MPS tier gives 512
MPS_DECODE_CHUNK, MPS_DECODE_OVERLAP = 32, 8  # AceStepHandler._MPS_DECODE_CHUNK_SIZE / _MPS_DECODE_OVERLAP

_WN_KEYS = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}


@dataclass
class OobleckConfig:
    """The diffusers ``AutoencoderOobleck`` config.json fields (no defaults: read them from the file or shapes)."""

    encoder_hidden_size: int  # encoder width, and its output channels (= 2 x latent channels: mean, scale)
    downsampling_ratios: tuple[int, ...]  # encoder strides; the decoder uses them reversed
    channel_multiples: tuple[int, ...]  # width of block i's output = base width x channel_multiples[i]
    decoder_channels: int
    decoder_input_channels: int  # latent channels D
    audio_channels: int
    sampling_rate: int
    overrides: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.downsampling_ratios = tuple(self.downsampling_ratios)
        self.channel_multiples = tuple(self.channel_multiples)
        if len(self.channel_multiples) != len(self.downsampling_ratios):
            raise ValueError(
                f"channel_multiples {self.channel_multiples} and downsampling_ratios "
                f"{self.downsampling_ratios} must have the same length"
            )

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (1920 in the released model)."""
        return math.prod(self.downsampling_ratios)

    @property
    def latent_channels(self) -> int:
        return self.decoder_input_channels

    def latent_length(self, samples: int) -> int:
        """Latent frames the encoder makes of ``samples`` (its strided convs floor; ``samples // hop`` for even
        ratios)."""
        for s in self.downsampling_ratios:
            samples = (samples + 2 * math.ceil(s / 2) - 2 * s) // s + 1
        return samples

    @classmethod
    def from_official(cls, d: dict) -> OobleckConfig:
        """From the diffusers ``vae/config.json``."""
        if d.get("_class_name", "AutoencoderOobleck") != "AutoencoderOobleck":
            raise ValueError(f"not an AutoencoderOobleck config (_class_name {d['_class_name']!r})")
        names = cls.__dataclass_fields__.keys() - {"overrides"}
        missing = names - d.keys()
        if missing:
            raise ValueError(f"AutoencoderOobleck config.json lacks {sorted(missing)}")
        return cls(**{k: d[k] for k in names})

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], overrides: dict | None = None) -> OobleckConfig:
        """Sizes from tensor shapes (diffusers key names, either weight-norm spelling). The sample rate is not in
        the weights: ``overrides={"sampling_rate": ...}``, else the official handler's 48 kHz."""

        def wn(prefix: str) -> torch.Tensor:
            return (
                sd[prefix + ".weight_v"]
                if prefix + ".weight_v" in sd
                else sd[prefix + ".parametrizations.weight.original1"]
            )

        n = len({k.split(".")[2] for k in sd if k.startswith("encoder.block.")})
        hidden, audio_channels = wn("encoder.conv1").shape[:2]
        downs = [wn(f"encoder.block.{i}.conv1") for i in range(n)]  # [out, in, 2 * stride]
        c = dict(
            encoder_hidden_size=hidden,
            downsampling_ratios=tuple(w.shape[-1] // 2 for w in downs),
            channel_multiples=tuple(w.shape[0] // hidden for w in downs),
            decoder_channels=wn("decoder.conv2").shape[1],
            decoder_input_channels=wn("decoder.conv1").shape[1],
            audio_channels=audio_channels,
            sampling_rate=HANDLER_SAMPLE_RATE,
        )
        c.update(overrides or {})
        return cls(**c, overrides=dict(overrides or {}))

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("overrides")
        return d


# --- layers --------------------------------------------------------------------------------------------------


class Snake1d(nn.Module):
    """Snake with log-scale ``alpha`` / ``beta`` [1, C, 1]: ``x + sin(e^alpha x)^2 / (e^beta + 1e-9)``."""

    def __init__(self, dim: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(1, dim, 1, dtype=dtype, device=device))
        self.beta = nn.Parameter(torch.empty(1, dim, 1, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, L]
        alpha, beta = self.alpha.to(x).exp(), self.beta.to(x).exp()
        return x + (beta + SNAKE_EPS).reciprocal() * torch.sin(alpha * x).pow(2)


class WNConv1d(nn.Module):
    """Weight-normed (transposed) Conv1d with diffusers' ``weight_g`` / ``weight_v`` / ``bias`` parameters
    (``torch.nn.utils.weight_norm``, dim 0); ``parametrizations.weight.original0/1`` keys load too. The weight is
    formed per call in the input's dtype and device, as a host's manual cast would: Oobleck has no other layers,
    so ``operations`` supplies none and is accepted for the common signature."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        padding: int = 0,
        bias: bool = True,
        transposed: bool = False,
        dtype=None,
        device=None,
        operations=None,
    ):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        shape = (cin, cout, kernel_size) if transposed else (cout, cin, kernel_size)
        self.weight_g = nn.Parameter(torch.empty(shape[0], 1, 1, **kw))
        self.weight_v = nn.Parameter(torch.empty(shape, **kw))
        self.bias = nn.Parameter(torch.empty(cout, **kw)) if bias else None
        self.stride, self.dilation, self.padding, self.transposed = stride, dilation, padding, transposed

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for old, new in _WN_KEYS.items():  # torch.nn.utils.parametrizations.weight_norm spelling
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, cin, L]
        w = torch._weight_norm(self.weight_v.to(x), self.weight_g.to(x), 0)
        b = None if self.bias is None else self.bias.to(x)
        if self.transposed:
            return F.conv_transpose1d(x, w, b, self.stride, self.padding)
        return F.conv1d(x, w, b, self.stride, self.padding, self.dilation)


class ResidualUnit(nn.Module):
    """Snake -> dilated conv k7 -> Snake -> conv k1, plus the input."""

    def __init__(self, dim: int, dilation: int, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.snake1 = Snake1d(dim, **kw)
        self.conv1 = WNConv1d(
            dim, dim, RES_KERNEL, dilation=dilation, padding=(RES_KERNEL - 1) * dilation // 2, **kw
        )
        self.snake2 = Snake1d(dim, **kw)
        self.conv2 = WNConv1d(dim, dim, 1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.snake2(self.conv1(self.snake1(x))))
        crop = (x.shape[-1] - y.shape[-1]) // 2  # 0 with these paddings; diffusers crops the skip if not
        return (x[..., crop:-crop] if crop > 0 else x) + y


class EncoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.res_unit1, self.res_unit2, self.res_unit3 = (ResidualUnit(cin, d, **kw) for d in RES_DILATIONS)
        self.snake1 = Snake1d(cin, **kw)
        self.conv1 = WNConv1d(cin, cout, 2 * stride, stride=stride, padding=math.ceil(stride / 2), **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, cin, L] -> [B, cout, ~L / stride]
        return self.conv1(self.snake1(self.res_unit3(self.res_unit2(self.res_unit1(x)))))


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.snake1 = Snake1d(cin, **kw)
        self.conv_t1 = WNConv1d(
            cin, cout, 2 * stride, stride=stride, padding=math.ceil(stride / 2), transposed=True, **kw
        )
        self.res_unit1, self.res_unit2, self.res_unit3 = (ResidualUnit(cout, d, **kw) for d in RES_DILATIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, cin, L] -> [B, cout, L * stride] (even strides)
        return self.res_unit3(self.res_unit2(self.res_unit1(self.conv_t1(self.snake1(x)))))


class OobleckEncoder(nn.Module):
    def __init__(self, c: OobleckConfig, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        widths = [c.encoder_hidden_size * m for m in (1, *c.channel_multiples)]
        self.conv1 = WNConv1d(c.audio_channels, widths[0], 7, padding=3, **kw)
        self.block = nn.ModuleList(
            EncoderBlock(widths[i], widths[i + 1], s, **kw) for i, s in enumerate(c.downsampling_ratios)
        )
        self.snake1 = Snake1d(widths[-1], **kw)
        self.conv2 = WNConv1d(widths[-1], c.encoder_hidden_size, 3, padding=1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # audio [B, C, S] -> [B, encoder_hidden_size, T]
        x = self.conv1(x)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))


class OobleckDecoder(nn.Module):
    def __init__(self, c: OobleckConfig, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        widths = [c.decoder_channels * m for m in (1, *c.channel_multiples)][::-1]  # widest first
        self.conv1 = WNConv1d(c.decoder_input_channels, widths[0], 7, padding=3, **kw)
        self.block = nn.ModuleList(
            DecoderBlock(widths[i], widths[i + 1], s, **kw)
            for i, s in enumerate(reversed(c.downsampling_ratios))
        )
        self.snake1 = Snake1d(widths[-1], **kw)
        self.conv2 = WNConv1d(widths[-1], c.audio_channels, 7, padding=3, bias=False, **kw)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # latents [B, D, T] -> audio [B, C, T * hop]
        z = self.conv1(z)
        for block in self.block:
            z = block(z)
        return self.conv2(self.snake1(z))


class LatentDistribution:
    """The encoder's diagonal Gaussian: ``mean``, ``std`` [B, D, T]."""

    def __init__(self, h: torch.Tensor):  # h: [B, 2D, T], mean first
        self.mean, scale = h.chunk(2, dim=1)
        self.std = F.softplus(scale) + STD_EPS

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``mean + std * noise``; the noise is drawn as diffusers' ``randn_tensor`` does: in the mean's dtype,
        on the generator's device (a CPU generator for a GPU model draws on the CPU and moves), from the global RNG
        of the mean's device when ``generator`` is None (the official call)."""
        device = self.mean.device if generator is None else generator.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        return self.mean


# --- the official handler's tiling choices -----------------------------------------------------------------


def gpu_memory_gb() -> float:
    """Total memory of the first CUDA (or XPU) device in GiB, 0 without one: the official ``get_gpu_memory_gb``
    (without its MAX_CUDA_VRAM / MPS debug overrides), which picks the tiled-encode chunk."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / 1024**3
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return torch.xpu.get_device_properties(0).total_memory / 1024**3
    return 0.0


def free_vram_gb() -> float:
    """Free memory of CUDA device 0 in GiB, 0 without CUDA (the official ``get_effective_free_vram_gb`` without
    its MAX_CUDA_VRAM cap)."""
    return torch.cuda.mem_get_info(0)[0] / 1024**3 if torch.cuda.is_available() else 0.0


def encode_chunk_size(gpu_memory: float) -> int:
    """The official ``tiled_encode`` chunk (samples) for ``gpu_memory`` GiB (``gpu_memory_gb()``; CPU-only: 0)."""
    return ENCODE_CHUNK_LOW if gpu_memory <= ENCODE_LOW_MEMORY_GB else ENCODE_CHUNK


def decode_chunk_size(device_type: str, free_vram: float = 0.0, mps_memory: float | None = None) -> int:
    """The official ``_get_auto_decode_chunk_size`` (latent frames) for the handler's device type: CPU (and any
    other) 256; CUDA by free VRAM GiB 512 / 384 / 256 / 128; MPS by memory, capped at 512 (``tiled_decode`` then
    cuts MPS to 32). Its ACESTEP_VAE_DECODE_CHUNK_SIZE override is the caller's ``chunk_size``."""
    if device_type == "mps":
        chunk = next(
            (c for gb, c in DECODE_MPS_MEMORY_CHUNKS if mps_memory is not None and mps_memory >= gb), 512
        )
        return min(chunk, DECODE_MAX_CHUNK)
    if device_type == "cuda":
        chunk = next((c for gb, c in DECODE_CUDA_CHUNKS if free_vram >= gb), DECODE_CUDA_MIN_CHUNK)
        return min(chunk, DECODE_MAX_CHUNK)
    return min(DECODE_CPU_CHUNK, DECODE_MAX_CHUNK)


def official_vae_dtype(device_type: str) -> torch.dtype:
    """The handler's VAE dtype (``_get_vae_dtype``): bfloat16 on CUDA / XPU, float16 on MPS, float32 on CPU."""
    return {"cuda": torch.bfloat16, "xpu": torch.bfloat16, "mps": torch.float16}.get(
        device_type, torch.float32
    )


def anti_clip(wav: torch.Tensor) -> torch.Tensor:
    """The handler's anti-clipping after decode: float32; a clip [C, S] of the batch whose peak (over channels and
    time) exceeds 1 is divided by that peak, the others are left as they are."""
    wav = wav.float()
    peak = wav.abs().amax(dim=(1, 2), keepdim=True)
    return wav / peak.clamp(min=1.0) if bool((peak > 1.0).any()) else wav


# --- the model -------------------------------------------------------------------------------------------------


class AutoencoderOobleck(nn.Module):
    """``encoder`` + ``decoder``: the diffusers module tree, so ``vae/diffusion_pytorch_model.safetensors`` loads
    with ``load_state_dict``."""

    def __init__(self, config: OobleckConfig, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        self.config = config
        self.encoder = OobleckEncoder(config, dtype=dtype, device=device, operations=operations)
        self.decoder = OobleckDecoder(config, dtype=dtype, device=device, operations=operations)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv1.weight_v.dtype

    @property
    def device(self) -> torch.device:
        return self.encoder.conv1.weight_v.device

    @device.setter
    def device(
        self, value
    ) -> None:  # ComfyUI's ModelPatcher writes model.device; the weights say where it is
        pass

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    # --- one pass (diffusers encode / decode) ---------------------------------------------------------------

    @torch.no_grad()
    def encode_distribution(self, audio: torch.Tensor) -> LatentDistribution:
        """Audio [B, C, S] (moved to the model's device and dtype) -> the latent Gaussian [B, D, T]."""
        return LatentDistribution(self.encoder(audio.to(self.device, self.dtype)))

    def encode(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``vae.encode(audio).latent_dist.sample()``: audio [B, C, S] -> latents [B, D, T] in the model's dtype,
        one draw of shape [B, D, T] from ``generator`` (None: the global RNG, as the official code)."""
        return self.encode_distribution(audio).sample(generator)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``vae.decode(latents).sample``: latents [B, D, T] -> audio [B, C, T * hop] in the model's dtype."""
        return self.decoder(latents.to(self.device, self.dtype))

    # --- the official handler's tiling ----------------------------------------------------------------------

    @torch.no_grad()
    def tiled_encode(
        self,
        audio: torch.Tensor,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
        overlap: int | None = None,
        gpu_memory: float | None = None,
    ) -> torch.Tensor:
        """The official ``tiled_encode``: audio [B, C, S] (or [C, S]) -> latents [B, D, T] (or [D, T]).

        ``chunk_size`` / ``overlap`` in samples; by default the official choice: ``encode_chunk_size(gpu_memory)``
        (``gpu_memory`` in GiB, default ``gpu_memory_gb()``: 15 s on CPU) and 2 s. Audio up to one chunk is
        encoded in one pass. Longer audio: windows [core - overlap, core + overlap] over cores of
        ``chunk - 2 overlap`` samples, the whole batch per window, one ``sample()`` per window (so the draws are
        [B, D, window frames] in window order), and each window's core kept, its margins trimmed by
        ``round(margin / downsample_factor)`` frames, the factor (samples per frame) measured on the first window.
        (The official offload path pre-allocates ``round(S / factor)`` frames and raises if the cores overflow it,
        which only chunk sizes that are not multiples of the hop cause; here the cores are concatenated, as its
        GPU path does. Both give the same latents otherwise. The latents stay on the model's device; the
        official offload path returns them on the CPU and its callers move them to the DiT's device.)"""
        if audio.dim() == 2:
            return self.tiled_encode(audio[None], generator, chunk_size, overlap, gpu_memory)[0]
        if chunk_size is None:
            chunk_size = encode_chunk_size(gpu_memory_gb() if gpu_memory is None else gpu_memory)
        overlap = ENCODE_OVERLAP if overlap is None else overlap
        n = audio.shape[-1]
        if n <= chunk_size:
            return self.encode(audio, generator)
        stride = chunk_size - 2 * overlap
        if stride <= 0:
            raise ValueError(f"tiled encode: chunk_size {chunk_size} must exceed 2 * overlap ({overlap})")
        cores, factor = [], None
        for start in range(0, n, stride):
            end = min(start + stride, n)
            lo, hi = max(0, start - overlap), min(n, end + overlap)
            # Official quirk, kept: a full sample() per window, the margins' draws thrown away with the margins.
            z = self.encode(audio[..., lo:hi], generator)
            # Official: samples per frame measured once, on the first window (1920.0 for chunk sizes in whole
            # frames); the trims use Python's round (half to even).
            factor = factor or (hi - lo) / z.shape[-1]
            cut_lo, cut_hi = round((start - lo) / factor), round((hi - end) / factor)
            cores.append(z[..., cut_lo : z.shape[-1] - cut_hi])
        return torch.cat(cores, -1)

    @torch.no_grad()
    def tiled_decode(
        self,
        latents: torch.Tensor,
        chunk_size: int | None = None,
        overlap: int = DECODE_OVERLAP,
        device_type: str | None = None,
        free_vram: float | None = None,
        mps_memory: float | None = None,
    ) -> torch.Tensor:
        """The official ``tiled_decode``: latents [B, D, T] -> audio [B, C, T * hop] in the model's dtype.

        ``chunk_size`` / ``overlap`` in latent frames; by default the official choice for ``device_type`` (the
        handler's device; default the model's): ``decode_chunk_size(device_type, free_vram, mps_memory)`` (256 on
        CPU) and 64; on MPS both are cut to 32 / 8. Items are decoded one at a time; the overlap is halved until
        ``chunk - 2 overlap > 0``; T <= chunk decodes in one pass; otherwise windows [core - overlap,
        core + overlap] over cores of ``chunk - 2 overlap`` frames, each trimmed by ``round(margin * factor)``
        samples, the factor measured on the first window."""
        device_type = device_type or self.device.type
        if chunk_size is None:
            if device_type == "cuda" and free_vram is None:
                free_vram = free_vram_gb()
            chunk_size = decode_chunk_size(device_type, free_vram or 0.0, mps_memory)
        if device_type == "mps":  # the MPS conv output-size limit
            chunk_size, overlap = min(chunk_size, MPS_DECODE_CHUNK), min(overlap, MPS_DECODE_OVERLAP)
        # Official: items one at a time, whatever T (a batched decode differs in the last bits).
        if latents.shape[0] > 1:
            return torch.cat([self.tiled_decode(z[None], chunk_size, overlap, device_type) for z in latents])
        while chunk_size - 2 * overlap <= 0 and overlap > 0:  # official quirk: chunk 128 -> overlap 32
            overlap //= 2
        n = latents.shape[-1]
        if n <= chunk_size:
            return self.decode(latents)
        stride = chunk_size - 2 * overlap
        parts, factor = [], None
        for start in range(0, n, stride):
            end = min(start + stride, n)
            lo, hi = max(0, start - overlap), min(n, end + overlap)
            wav = self.decode(latents[..., lo:hi])
            factor = factor or wav.shape[-1] / (hi - lo)  # official: measured on the first window
            cut_lo, cut_hi = round((start - lo) * factor), round((hi - end) * factor)
            parts.append(wav[..., cut_lo : wav.shape[-1] - cut_hi])
        return torch.cat(parts, -1)

    # --- the handler's calls --------------------------------------------------------------------------------

    def audio_to_latents(
        self, audio: torch.Tensor, generator: torch.Generator | None = None, **tiling
    ) -> torch.Tensor:
        """The handler's ``_encode_audio_to_latents``: 48 kHz audio [B, C, S] -> ``tiled_encode`` -> DiT latents
        [B, T, D] (the model's dtype; the handler then casts to the DiT's)."""
        return self.tiled_encode(audio, generator, **tiling).transpose(1, 2)

    def latents_to_audio(
        self,
        latents: torch.Tensor,
        latent_rescale: float = 1.0,
        latent_shift: float = 0.0,
        tiled: bool = True,
        **tiling,
    ) -> torch.Tensor:
        """The decode in ``generate_music``: DiT latents [B, T, D] -> ``latents * latent_rescale + latent_shift``
        (only when they are not 1 / 0) -> [B, D, T] in the VAE's dtype -> ``tiled_decode`` (``use_tiled_decode``,
        the default) or one pass -> float32 -> ``anti_clip``. Returns audio [B, C, T * hop]."""
        if latent_shift != 0.0 or latent_rescale != 1.0:
            latents = latents * latent_rescale + latent_shift
        z = latents.transpose(1, 2).contiguous().to(self.dtype)
        wav = self.tiled_decode(z, **tiling) if tiled else self.decode(z)
        return anti_clip(wav)
