"""ADaMoSHiFiGAN vocoder of ACE-Step v1 (official ``acestep/music_dcae/music_vocoder.py``, ``ADaMoSHiFiGANV1``).

Log-mel [B, 128, T] -> ConvNeXt backbone -> HiFi-GAN head -> audio [B, 1, T * 512] at 44.1 kHz. The module tree
keeps the official key names: ``backbone.*``, ``head.*`` (weight-normed convs as ``weight_g`` / ``weight_v``) and
``mel_transform.*`` (the log-mel front end that the DCAE encoder reads).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..common import ops
from .mel import LogMelSpectrogram


@dataclass
class VocoderConfig:
    """The official ``music_vocoder/config.json`` fields (defaults = the released model)."""

    input_channels: int = 128
    depths: tuple[int, ...] = (3, 3, 9, 3)
    dims: tuple[int, ...] = (128, 256, 384, 512)
    kernel_sizes: tuple[int, ...] = (7,)
    upsample_rates: tuple[int, ...] = (4, 4, 2, 2, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (8, 8, 4, 4, 4, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11, 13)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5),) * 4
    num_mels: int = 512  # the head's input width (= dims[-1])
    upsample_initial_channel: int = 1024
    pre_conv_kernel_size: int = 13
    post_conv_kernel_size: int = 13
    sampling_rate: int = 44100
    n_fft: int = 2048
    win_length: int = 2048
    hop_length: int = 512
    f_min: float = 40.0
    f_max: float = 16000.0
    n_mels: int = 128
    overrides: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.depths, self.dims, self.kernel_sizes = (
            tuple(self.depths),
            tuple(self.dims),
            tuple(self.kernel_sizes),
        )
        self.upsample_rates, self.upsample_kernel_sizes = (
            tuple(self.upsample_rates),
            tuple(self.upsample_kernel_sizes),
        )
        self.resblock_kernel_sizes = tuple(self.resblock_kernel_sizes)
        self.resblock_dilation_sizes = tuple(tuple(d) for d in self.resblock_dilation_sizes)
        if len(self.kernel_sizes) != 1:
            raise NotImplementedError("ParallelConvNeXtBlock (several kernel_sizes) is not used by ACE-Step")
        if math.prod(self.upsample_rates) != self.hop_length:
            raise ValueError(
                f"upsample_rates {self.upsample_rates} must multiply to hop_length {self.hop_length}"
            )

    @classmethod
    def from_official(cls, d: dict) -> VocoderConfig:
        if d.get("use_template", False):
            raise NotImplementedError("use_template=True (noise_convs) is not used by ACE-Step")
        if d.get("drop_path_rate", 0.0):
            raise NotImplementedError("drop_path_rate only matters for training")
        names = cls.__dataclass_fields__.keys() - {"overrides"}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], overrides: dict | None = None) -> VocoderConfig:
        """Sizes from tensor shapes (keys without a prefix). What shapes cannot tell (resblock dilations, STFT
        hop, mel frequency range) falls back to the released model, or to ``overrides``."""

        def count(prefix: str) -> int:
            return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})

        def wn(prefix: str) -> torch.Tensor:  # weight-normed conv weight: official or torch.parametrize names
            return sd.get(prefix + ".weight_v", sd.get(prefix + ".parametrizations.weight.original1"))

        n_stages = count("backbone.stages.")
        n_ups = count("head.ups.")
        n_kernels = count("head.resblocks.") // n_ups
        up_k = tuple(wn(f"head.ups.{i}").shape[-1] for i in range(n_ups))
        fb = sd["mel_transform.mel_scale.fb"]
        c = dict(
            input_channels=sd["backbone.channel_layers.0.0.weight"].shape[1],
            depths=tuple(count(f"backbone.stages.{i}.") for i in range(n_stages)),
            dims=tuple(
                sd[f"backbone.channel_layers.{i}.{0 if i == 0 else 1}.weight"].shape[0]
                for i in range(n_stages)
            ),
            kernel_sizes=(sd["backbone.stages.0.0.dwconv.weight"].shape[-1],),
            upsample_rates=tuple(k // 2 for k in up_k),  # ADaMoS uses kernel = 2 * stride for every upsampler
            upsample_kernel_sizes=up_k,
            resblock_kernel_sizes=tuple(
                wn(f"head.resblocks.{j}.convs1.0").shape[-1] for j in range(n_kernels)
            ),
            resblock_dilation_sizes=((1, 3, 5),) * n_kernels,
            num_mels=wn("head.conv_pre").shape[1],
            upsample_initial_channel=wn("head.conv_pre").shape[0],
            pre_conv_kernel_size=wn("head.conv_pre").shape[-1],
            post_conv_kernel_size=wn("head.conv_post").shape[-1],
            n_fft=(fb.shape[0] - 1) * 2,
            win_length=sd["mel_transform.spectrogram.window"].shape[0],
            n_mels=fb.shape[1],
        )
        c.update(overrides or {})
        return cls(**c, overrides=dict(overrides or {}))

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("overrides")
        return d


class LayerNorm(nn.Module):
    """The official LayerNorm: ``channels_last`` is ``F.layer_norm``; ``channels_first`` normalises dim 1 of
    [B, C, T] by hand (same eps 1e-6)."""

    def __init__(self, dim: int, eps: float = 1e-6, channels_first: bool = False, dtype=None, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(dim, dtype=dtype, device=device))
        self.eps, self.channels_first = eps, channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight.to(x), self.bias.to(x)
        if not self.channels_first:
            return F.layer_norm(x, (x.shape[-1],), w, b, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return w[:, None] * ((x - u) / torch.sqrt(s + self.eps)) + b[:, None]


class ConvNeXtBlock(nn.Module):
    def __init__(
        self, dim: int, kernel_size: int, mlp_ratio: float = 4.0, dtype=None, device=None, operations=None
    ):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.dwconv = operations.Conv1d(
            dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim, **kw
        )
        self.norm = LayerNorm(dim, **kw)
        self.pwconv1 = operations.Linear(dim, int(mlp_ratio * dim), **kw)
        self.pwconv2 = operations.Linear(int(mlp_ratio * dim), dim, **kw)
        self.gamma = nn.Parameter(torch.empty(dim, **kw))  # layer scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, T]
        y = self.norm(self.dwconv(x).transpose(1, 2))
        y = self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + (self.gamma.to(y) * y).transpose(1, 2)


class ConvNeXtEncoder(nn.Module):
    def __init__(self, c: VocoderConfig, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        stem = nn.Sequential(
            operations.Conv1d(c.input_channels, c.dims[0], 7, padding=3, padding_mode="replicate", **kw),
            LayerNorm(c.dims[0], channels_first=True, **kw),
        )
        mids = [
            nn.Sequential(
                LayerNorm(c.dims[i], channels_first=True, **kw),
                operations.Conv1d(c.dims[i], c.dims[i + 1], 1, **kw),
            )
            for i in range(len(c.dims) - 1)
        ]
        self.channel_layers = nn.ModuleList([stem, *mids])
        self.stages = nn.ModuleList(
            nn.Sequential(
                *(ConvNeXtBlock(dim, c.kernel_sizes[0], operations=operations, **kw) for _ in range(depth))
            )
            for dim, depth in zip(c.dims, c.depths)
        )
        self.norm = LayerNorm(c.dims[-1], channels_first=True, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for channel_layer, stage in zip(self.channel_layers, self.stages):
            x = stage(channel_layer(x))
        return self.norm(x)


class WNConv1d(nn.Module):
    """Weight-normed (transposed) Conv1d with the official ``weight_g`` / ``weight_v`` / ``bias`` parameters
    (``torch.nn.utils.weight_norm``, dim 0); the weight is formed on the fly in the input's dtype and device."""

    def __init__(
        self,
        cin,
        cout,
        kernel_size,
        stride=1,
        dilation=1,
        padding=0,
        transposed=False,
        dtype=None,
        device=None,
    ):
        super().__init__()
        shape = (cin, cout, kernel_size) if transposed else (cout, cin, kernel_size)
        self.weight_g = nn.Parameter(torch.empty(shape[0], 1, 1, dtype=dtype, device=device))
        self.weight_v = nn.Parameter(torch.empty(shape, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(cout, dtype=dtype, device=device))
        self.stride, self.dilation, self.padding, self.transposed = stride, dilation, padding, transposed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch._weight_norm(self.weight_v.to(x.device), self.weight_g.to(x.device), 0).to(x.dtype)
        b = self.bias.to(x)
        if self.transposed:
            return F.conv_transpose1d(x, w, b, self.stride, self.padding)
        return F.conv1d(x, w, b, self.stride, self.padding, self.dilation)


class ResBlock1(nn.Module):
    def __init__(self, ch: int, kernel_size: int, dilations: tuple[int, ...], dtype=None, device=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        k = kernel_size
        self.convs1 = nn.ModuleList(
            WNConv1d(ch, ch, k, dilation=d, padding=(k * d - d) // 2, **kw) for d in dilations
        )
        self.convs2 = nn.ModuleList(WNConv1d(ch, ch, k, padding=(k - 1) // 2, **kw) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.silu(c1(F.silu(x))))
        return x


class HiFiGANGenerator(nn.Module):
    def __init__(self, c: VocoderConfig, dtype=None, device=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        ch0 = c.upsample_initial_channel
        self.conv_pre = WNConv1d(
            c.num_mels, ch0, c.pre_conv_kernel_size, padding=(c.pre_conv_kernel_size - 1) // 2, **kw
        )
        self.ups = nn.ModuleList(
            WNConv1d(ch0 >> i, ch0 >> (i + 1), k, stride=u, padding=(k - u) // 2, transposed=True, **kw)
            for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes))
        )
        self.num_kernels = len(c.resblock_kernel_sizes)
        self.resblocks = nn.ModuleList(
            ResBlock1(ch0 >> (i + 1), k, d, **kw)
            for i in range(len(self.ups))
            for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes)
        )
        k = c.post_conv_kernel_size
        self.conv_post = WNConv1d(ch0 >> len(self.ups), 1, k, padding=(k - 1) // 2, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, num_mels, T] -> [B, 1, T * hop]
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.silu(x))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / self.num_kernels
        return torch.tanh(self.conv_post(F.silu(x)))


class ADaMoSHiFiGAN(nn.Module):
    """Vocoder: ``decode(mel [B, n_mels, T]) -> audio [B, 1, T * hop_length]``; ``encode(audio [B, N])`` is the
    log-mel front end."""

    def __init__(self, config: VocoderConfig, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        self.config = c = config
        kw = dict(dtype=dtype, device=device)
        self.backbone = ConvNeXtEncoder(c, operations=operations, **kw)
        self.head = HiFiGANGenerator(c, **kw)
        self.mel_transform = LogMelSpectrogram(
            c.sampling_rate, c.n_fft, c.win_length, c.hop_length, c.n_mels, c.f_min, c.f_max, **kw
        )

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(mel))

    forward = decode

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        return self.mel_transform(audio)

    def receptive_field(self) -> int:
        """Mel frames on each side of a frame that can change its audio (an upper bound): a tiled decode with at
        least this margin gives the one-shot decode (the released model: 97)."""
        c = self.config
        frames = 3 + (c.kernel_sizes[0] // 2) * sum(c.depths) + c.pre_conv_kernel_size // 2  # at the mel rate
        rate = 1
        for u, k in zip(c.upsample_rates, c.upsample_kernel_sizes):
            rate *= u
            res = max(
                sum(d * (kr // 2) + kr // 2 for d in ds)
                for kr, ds in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes)
            )
            frames += math.ceil((k + res) / rate)
        return frames + math.ceil(c.post_conv_kernel_size / rate)
