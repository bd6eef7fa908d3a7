"""Deep-compression autoencoder of ACE-Step v1 (diffusers ``AutoencoderDC`` as configured in the official
``music_dcae_f8c8/config.json``).

A stereo log-mel "image" [B, 2, 128, T_mel] <-> latents [B, 8, 16, T_mel / 8]. Four stages: three of ResBlocks, one
of EfficientViT blocks (ReLU linear attention over all positions, with a 5x5 multi-scale token aggregation, then a
GLU MBConv); strided-conv downsampling and nearest-upsampling + conv, each with a parameter-free shortcut
(pixel-unshuffle + group mean / repeat + pixel-shuffle); RMSNorm over channels (with bias) everywhere.
Only what f8c8 uses is implemented; other diffusers options are refused in the config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..common import ops

RES, VIT = "ResBlock", "EfficientViTBlock"
_ACTS = {
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "mish": nn.Mish,
}  # diffusers ACT2CLS


@dataclass
class DCAEConfig:
    """The diffusers ``AutoencoderDC`` config fields (defaults = the released ``music_dcae_f8c8``)."""

    in_channels: int = 2
    latent_channels: int = 8
    attention_head_dim: int = 32
    encoder_block_types: tuple[str, ...] = (RES, RES, RES, VIT)
    decoder_block_types: tuple[str, ...] = (RES, RES, RES, VIT)
    encoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 1024)
    decoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 1024)
    encoder_layers_per_block: tuple[int, ...] = (2, 2, 3, 3)
    decoder_layers_per_block: tuple[int, ...] = (3, 3, 3, 3)
    encoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (5,), (5,))
    decoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (5,), (5,))
    decoder_act_fns: tuple[str, ...] = ("silu",) * 4
    overrides: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        n = len(self.encoder_block_out_channels)
        for side in ("encoder", "decoder"):
            types = getattr(self, f"{side}_block_types")
            types = (types,) * n if isinstance(types, str) else tuple(types)
            setattr(self, f"{side}_block_types", types)
            setattr(self, f"{side}_block_out_channels", tuple(getattr(self, f"{side}_block_out_channels")))
            setattr(self, f"{side}_layers_per_block", tuple(getattr(self, f"{side}_layers_per_block")))
            # Multi-scale kernels only exist in EfficientViT stages (config.json lists some for ResBlock stages too).
            scales = getattr(self, f"{side}_qkv_multiscales")
            setattr(
                self,
                f"{side}_qkv_multiscales",
                tuple(tuple(s) if t == VIT else () for s, t in zip(scales, types)),
            )
            if getattr(self, f"{side}_layers_per_block")[0] == 0:
                raise NotImplementedError(f"{side}_layers_per_block[0] == 0 is not used by the music DCAE")
        acts = self.decoder_act_fns
        self.decoder_act_fns = (acts,) * n if isinstance(acts, str) else tuple(acts)

    @classmethod
    def from_official(cls, d: dict) -> DCAEConfig:
        unsupported = {
            "upsample_block_type": "interpolate",
            "downsample_block_type": "conv",
            "decoder_norm_types": "rms_norm",
        }
        for key, value in unsupported.items():
            got = d.get(key, value)
            if any(str(g).lower() != value for g in ([got] if isinstance(got, str) else got)):
                raise NotImplementedError(
                    f"AutoencoderDC {key}={got!r}: only {value!r} (music_dcae_f8c8) is supported"
                )
        names = cls.__dataclass_fields__.keys() - {"overrides"}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], overrides: dict | None = None) -> DCAEConfig:
        """Sizes from tensor shapes (keys without a prefix). The attention head size is read off the multi-scale
        projection (grouped per head); activations cannot be seen and default to SiLU (or ``overrides``)."""

        def children(prefix: str) -> list[int]:
            return sorted({int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)})

        def stage(prefix: str):  # -> (block type, channels, layers, multi-scale kernels, head size)
            # Down/upsamplers are the children with a plain ``conv``; the rest are the stage's blocks.
            blocks = [j for j in children(prefix) if f"{prefix}{j}.conv.weight" not in sd]
            first = f"{prefix}{blocks[0]}."
            if first + "attn.to_q.weight" not in sd:
                return RES, sd[first + "conv1.weight"].shape[0], len(blocks), (), None
            ms = f"{first}attn.to_qkv_multiscale."
            scales = tuple(sd[f"{ms}{m}.proj_in.weight"].shape[-1] for m in children(ms))
            head = sd[f"{ms}0.proj_out.weight"].shape[1] if scales else None  # proj_out is grouped per head
            return VIT, sd[first + "attn.to_q.weight"].shape[1], len(blocks), scales, head

        c, heads = {}, set()
        for side, group in (("encoder", "down_blocks"), ("decoder", "up_blocks")):
            stages = [stage(f"{side}.{group}.{i}.") for i in children(f"{side}.{group}.")]
            c[f"{side}_block_types"] = tuple(s[0] for s in stages)
            c[f"{side}_block_out_channels"] = tuple(s[1] for s in stages)
            c[f"{side}_layers_per_block"] = tuple(s[2] for s in stages)
            c[f"{side}_qkv_multiscales"] = tuple(s[3] for s in stages)
            heads |= {s[4] for s in stages if s[4]}
        c["in_channels"] = sd["encoder.conv_in.weight"].shape[1]
        c["latent_channels"] = sd["encoder.conv_out.weight"].shape[0]
        if len(heads) == 1:
            c["attention_head_dim"] = heads.pop()
        c.update(overrides or {})
        return cls(**c, overrides=dict(overrides or {}))

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("overrides")
        return d


class RMSNorm(nn.Module):
    """diffusers RMSNorm (affine, with bias) over the channel dim 1 of [B, C, H, W]; statistics in float32."""

    def __init__(self, dim: int, eps: float = 1e-5, dtype=None, device=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(dim, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * torch.rsqrt(x.float().pow(2).mean(1, keepdim=True) + self.eps)).to(x.dtype)
        return x * self.weight.to(x)[:, None, None] + self.bias.to(x)[:, None, None]


def _linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A Linear over the channels of [B, C, H, W] (the official layers are Linear, stored as [out, in])."""
    return layer(x.movedim(1, -1)).movedim(-1, 1)


class ResBlock(nn.Module):
    def __init__(self, ch: int, act: str, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.conv1 = operations.Conv2d(ch, ch, 3, 1, 1, **kw)
        self.conv2 = operations.Conv2d(ch, ch, 3, 1, 1, bias=False, **kw)
        self.norm = RMSNorm(ch, **kw)
        self.nonlinearity = _ACTS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv2(self.nonlinearity(self.conv1(x)))) + x


class MultiscaleProjection(nn.Module):
    """Depthwise k x k conv then a 1x1 conv grouped per head, over the concatenated q, k, v."""

    def __init__(self, ch: int, heads: int, kernel_size: int, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, bias=False)
        self.proj_in = operations.Conv2d(ch, ch, kernel_size, padding=kernel_size // 2, groups=ch, **kw)
        self.proj_out = operations.Conv2d(ch, ch, 1, groups=3 * heads, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.proj_in(x))


class MultiscaleLinearAttention(nn.Module):
    """diffusers ``SanaMultiscaleLinearAttention`` with a residual, as used by EfficientViT blocks."""

    EPS = 1e-15  # diffusers default

    def __init__(
        self, ch: int, head_dim: int, scales: tuple[int, ...], dtype=None, device=None, operations=None
    ):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.head_dim, heads = head_dim, ch // head_dim
        inner = heads * head_dim
        self.to_q = operations.Linear(ch, inner, bias=False, **kw)
        self.to_k = operations.Linear(ch, inner, bias=False, **kw)
        self.to_v = operations.Linear(ch, inner, bias=False, **kw)
        self.to_qkv_multiscale = nn.ModuleList(
            MultiscaleProjection(3 * inner, heads, k, operations=operations, **kw) for k in scales
        )
        self.to_out = operations.Linear(inner * (1 + len(scales)), ch, bias=False, **kw)
        self.norm_out = RMSNorm(ch, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, H, W]
        B, _, H, W = x.shape
        qkv = _linear(lambda t: torch.cat([self.to_q(t), self.to_k(t), self.to_v(t)], -1), x)
        qkv = torch.cat([qkv, *(proj(qkv) for proj in self.to_qkv_multiscale)], 1)
        # Heads are consecutive runs of 3 * head_dim channels, each split into its own q, k, v (so every head mixes
        # channels of the q, k and v projections: the official layout the weights were trained with).
        linear = H * W > self.head_dim  # otherwise the official code takes the quadratic form
        qkv = qkv.float() if linear else qkv
        q, k, v = rearrange(qkv, "b (n c) h w -> b n c (h w)", c=3 * self.head_dim).chunk(3, dim=2)
        q, k = F.relu(q), F.relu(k)
        if linear:  # v gets a row of ones, so the last row of (v k^T) q is the normaliser sum_j k_j . q_i
            vk = torch.matmul(F.pad(v, (0, 0, 0, 1), value=1.0), k.transpose(-1, -2))  # [B, N, d + 1, d]
            out = torch.matmul(vk, q).float()
            out = (out[:, :, :-1] / (out[:, :, -1:] + self.EPS)).to(x.dtype)
        else:
            scores = torch.matmul(k.transpose(-1, -2), q).float()
            out = torch.matmul(v, (scores / (scores.sum(2, keepdim=True) + self.EPS)).to(v.dtype))
        out = _linear(self.to_out, out.reshape(B, -1, H, W))
        return self.norm_out(out) + x


class GLUMBConv(nn.Module):
    def __init__(self, ch: int, expand_ratio: float = 4, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        hidden = int(expand_ratio * ch)
        self.conv_inverted = operations.Conv2d(ch, 2 * hidden, 1, **kw)
        self.conv_depth = operations.Conv2d(2 * hidden, 2 * hidden, 3, 1, 1, groups=2 * hidden, **kw)
        self.conv_point = operations.Conv2d(hidden, ch, 1, bias=False, **kw)
        self.norm = RMSNorm(ch, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.conv_depth(F.silu(self.conv_inverted(x))).chunk(2, dim=1)
        return self.norm(self.conv_point(h * F.silu(gate))) + x


class EfficientViTBlock(nn.Module):
    def __init__(
        self, ch: int, head_dim: int, scales: tuple[int, ...], dtype=None, device=None, operations=None
    ):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.attn = MultiscaleLinearAttention(ch, head_dim, scales, **kw)
        self.conv_out = GLUMBConv(ch, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.attn(x))


class Downsample(nn.Module):
    """Stride-2 conv plus the shortcut: pixel-unshuffle, then the mean of each group of channels."""

    def __init__(self, cin: int, cout: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.conv = operations.Conv2d(cin, cout, 3, 2, 1, dtype=dtype, device=device)
        self.group = cin * 4 // cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + F.pixel_unshuffle(x, 2).unflatten(1, (-1, self.group)).mean(2)


class Upsample(nn.Module):
    """Nearest 2x upsampling then a conv, plus the shortcut: repeat each channel, then pixel-shuffle."""

    def __init__(self, cin: int, cout: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.conv = operations.Conv2d(cin, cout, 3, 1, 1, dtype=dtype, device=device)
        self.repeats = cout * 4 // cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pixel_shuffle(x.repeat_interleave(self.repeats, dim=1), 2)
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest")) + y


def _block(kind: str, ch: int, act: str, head_dim: int, scales, **kw) -> nn.Module:
    return ResBlock(ch, act, **kw) if kind == RES else EfficientViTBlock(ch, head_dim, scales, **kw)


class Encoder(nn.Module):
    """Mel image [B, in_channels, 128, T] -> [B, latent_channels, 16, T / 8] (before the pipeline's scaling)."""

    def __init__(self, c: DCAEConfig, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        chs = c.encoder_block_out_channels
        self.conv_in = operations.Conv2d(c.in_channels, chs[0], 3, 1, 1, dtype=dtype, device=device)
        stages = []
        for i, (ch, n) in enumerate(zip(chs, c.encoder_layers_per_block)):
            blocks = [
                _block(
                    c.encoder_block_types[i],
                    ch,
                    "silu",
                    c.attention_head_dim,
                    c.encoder_qkv_multiscales[i],
                    **kw,
                )
                for _ in range(n)
            ]
            if i < len(chs) - 1 and n > 0:
                blocks.append(Downsample(ch, chs[i + 1], **kw))
            stages.append(nn.Sequential(*blocks))
        self.down_blocks = nn.ModuleList(stages)
        self.conv_out = operations.Conv2d(chs[-1], c.latent_channels, 3, 1, 1, dtype=dtype, device=device)
        self.out_group = chs[-1] // c.latent_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for stage in self.down_blocks:
            x = stage(x)
        return self.conv_out(x) + x.unflatten(1, (-1, self.out_group)).mean(2)


class Decoder(nn.Module):
    """Latents [B, latent_channels, 16, T] -> mel image [B, in_channels, 128, 8 T]."""

    def __init__(self, c: DCAEConfig, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        chs = c.decoder_block_out_channels
        self.conv_in = operations.Conv2d(c.latent_channels, chs[-1], 3, 1, 1, dtype=dtype, device=device)
        self.in_repeats = chs[-1] // c.latent_channels
        stages = []
        for i, (ch, n) in enumerate(zip(chs, c.decoder_layers_per_block)):
            blocks = [Upsample(chs[i + 1], ch, **kw)] if i < len(chs) - 1 and n > 0 else []
            act = c.decoder_act_fns[i]
            blocks += [
                _block(
                    c.decoder_block_types[i],
                    ch,
                    act,
                    c.attention_head_dim,
                    c.decoder_qkv_multiscales[i],
                    **kw,
                )
                for _ in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
        self.up_blocks = nn.ModuleList(stages)  # indexed shallow to deep, run deep to shallow
        self.norm_out = RMSNorm(chs[0], dtype=dtype, device=device)
        self.conv_out = operations.Conv2d(chs[0], c.in_channels, 3, 1, 1, dtype=dtype, device=device)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z) + z.repeat_interleave(self.in_repeats, dim=1)
        for stage in reversed(self.up_blocks):
            x = stage(x)
        return self.conv_out(F.relu(self.norm_out(x)))


class AutoencoderDC(nn.Module):
    """``encoder`` and ``decoder`` with the diffusers key names (the DCAE's ``scaling_factor`` is not used by
    ACE-Step: its pipeline scales latents itself, see ``music_dcae.py``)."""

    def __init__(self, config: DCAEConfig, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        self.config = config
        self.encoder = Encoder(config, dtype=dtype, device=device, operations=operations)
        self.decoder = Decoder(config, dtype=dtype, device=device, operations=operations)
