"""The ACE-Step v1 diffusion transformer (official ``ACEStepTransformer2DModel``), in plain PyTorch.

A Sana-style DiT over the DCAE latent [B, 8, 16, T]: a patch embedding folds the 16 latent rows into one token
per frame, then each block runs ReLU linear attention with RoPE over the frames, softmax cross-attention to the
conditioning (speaker, genre/text, lyric tokens), and a 1D-conv GLU feed-forward, all modulated AdaLN-single
style by the timestep. Module and parameter names are the official ones (as under ``model.diffusion_model.`` in
ComfyUI's all-in-one file), so official weights load with ``load_state_dict``, and the official ERG hook points
(``transformer_blocks[i].attn.to_q``, ``.cross_attn.to_q``, ``lyric_encoder.encoders[i].self_attn.linear_q``)
are plain Linear modules whose outputs feed the attention directly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..common import ops
from .lyric_encoder import LyricEncoder

# The official linear attention clips its output to the fp16 range in every dtype (see LinearSelfAttention).
FP16_MAX = 65504.0
NORM_EPS = 1e-6  # official RMSNorm eps (blocks and final layer)
LINEAR_ATTN_EPS = 1e-15  # official CustomLiteLAProcessor2_0.eps
TIME_FREQ_CHANNELS = 256  # official Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=0)
TIME_MAX_PERIOD = 10000  # diffusers get_timestep_embedding default
PATCH_HIDDEN_PER_CHANNEL = 256  # official PatchEmbed: in_channels * 256 hidden channels
PATCH_GROUPS = 32  # official PatchEmbed GroupNorm(num_groups=32, eps=1e-6)

# Official weights that the official forward never reads: the cross-attention's diffusers ``Attention`` builds
# joint-attention projections (``added_kv_proj_dim``) that ``CustomerAttnProcessor2_0`` ignores (it projects the
# conditioning with to_k/to_v). They are in every official file; the loader drops them explicitly.
UNUSED_OFFICIAL_KEYS = r"transformer_blocks\.\d+\.cross_attn\.(add_[qkv]_proj|to_add_out)\."
# REPA projectors: only used for the training loss against MERT / mHuBERT features.
TRAINING_ONLY_KEYS = r"projectors\."
# What the loader drops from official files (by regex match at the start of a key), with a log line.
IGNORED_KEYS = f"{TRAINING_ONLY_KEYS}|{UNUSED_OFFICIAL_KEYS}"


@dataclass
class DiTConfig:
    """Sizes of the DiT; defaults are the released ACE-Step-v1-3.5B ``ace_step_transformer/config.json``."""

    in_channels: int = 8
    out_channels: int = 8
    num_layers: int = 24
    num_attention_heads: int = 20
    attention_head_dim: int = 128
    mlp_ratio: float = 2.5
    patch_size: tuple[int, int] = (16, 1)
    rope_theta: float = 1000000.0
    speaker_embedding_dim: int = 512
    text_embedding_dim: int = 768
    lyric_encoder_vocab_size: int = 6693
    lyric_hidden_size: int = 1024
    # Not in the official config: the official code hard-codes its ConformerEncoder at these sizes
    # (output_size = lyric_hidden_size); tiny test checkpoints add them to config.json.
    lyric_encoder_attention_heads: int = 16
    lyric_encoder_linear_units: int = 4096
    lyric_encoder_num_blocks: int = 6

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def _make(cls, d: dict) -> DiTConfig:
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "patch_size" in d:
            d["patch_size"] = tuple(d["patch_size"])
        return cls(**d)

    @classmethod
    def from_official(cls, d: dict, overrides: dict | None = None) -> DiTConfig:
        """From the official ``config.json`` (extra official keys such as ``ssl_*`` or ``max_width`` are unused)."""
        return cls._make({**d, **(overrides or {})})

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], overrides: dict | None = None) -> DiTConfig:
        """Sizes read off tensor shapes (keys without the ``model.diffusion_model.`` prefix).

        Shapes cannot tell the head split or the RoPE base: those stay at the released values unless overridden
        (e.g. by the official config.json a tiny file carries); one of head size / head count gives the other.
        """
        overrides = dict(overrides or {})
        inner = sd["t_block.1.weight"].shape[1]
        patch = sd["proj_in.early_conv_layers.0.weight"]  # [in * 256, in, ph, pw]
        if "attention_head_dim" in overrides or "num_attention_heads" not in overrides:
            head_dim = int(overrides.get("attention_head_dim", cls.attention_head_dim))
        else:
            head_dim = inner // int(overrides["num_attention_heads"])
        lyric_prefix = "lyric_encoder.encoders."
        d = dict(
            in_channels=patch.shape[1],
            patch_size=tuple(patch.shape[2:]),
            out_channels=sd["final_layer.linear.weight"].shape[0] // (patch.shape[2] * patch.shape[3]),
            num_layers=1 + max(int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")),
            attention_head_dim=head_dim,
            num_attention_heads=inner // head_dim,
            mlp_ratio=sd["transformer_blocks.0.ff.point_conv.conv.weight"].shape[1] / inner,
            speaker_embedding_dim=sd["speaker_embedder.weight"].shape[1],
            text_embedding_dim=sd["genre_embedder.weight"].shape[1],
            lyric_encoder_vocab_size=sd["lyric_embs.weight"].shape[0],
            lyric_hidden_size=sd["lyric_embs.weight"].shape[1],
            lyric_encoder_attention_heads=sd[lyric_prefix + "0.self_attn.pos_bias_u"].shape[0],
            lyric_encoder_linear_units=sd[lyric_prefix + "0.feed_forward.w_1.weight"].shape[0],
            lyric_encoder_num_blocks=1 + max(int(k.split(".")[2]) for k in sd if k.startswith(lyric_prefix)),
        )
        return cls._make({**d, **overrides})


# --- functional pieces ------------------------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """diffusers ``RMSNorm`` without affine: statistics in float32, result in the input dtype."""
    return (x * torch.rsqrt(x.to(torch.float32).pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def timestep_features(t: torch.Tensor, channels: int = TIME_FREQ_CHANNELS) -> torch.Tensor:
    """diffusers ``Timesteps(channels, flip_sin_to_cos=True, downscale_freq_shift=0)``: t [B] -> [B, channels]."""
    half = channels // 2
    freqs = torch.exp(
        -math.log(TIME_MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


@functools.lru_cache(maxsize=8)
def _rope_table(
    length: int, dim: int, theta: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Official ``Qwen2RotaryEmbedding`` cos/sin, [length, dim] float32, built on the CPU as its init does."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = torch.arange(length, dtype=torch.int64).float()[:, None] * inv_freq[None]
    emb = torch.cat([freqs, freqs], dim=-1)  # half-split layout (see apply_rope)
    return emb.cos().to(device), emb.sin().to(device)


def rope_table(length: int, dim: int, theta: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = _rope_table(length, dim, theta, like.device)
    return cos.to(like.dtype), sin.to(like.dtype)  # official casts the table to the hidden-states dtype


def apply_rope(x: torch.Tensor, freqs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x: [B, H, S, D] rotated by the [S, D] table in float32, then cast back.

    Official quirk, kept: the table is in half-split layout (frequency i at columns i and i + D/2) but the rotation
    pairs interleaved neighbours (x0, x1) -> (-x1, x0), so the two members of a pair turn at different frequencies.
    """
    cos, sin = freqs
    pairs = rearrange(x, "... (d two) -> ... d two", two=2)
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


# --- modules ----------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """diffusers ``Attention`` with only the layers ACE-Step's processors read (to_q/k/v, to_out.0)."""

    def __init__(self, dim: int, heads: int, head_dim: int, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        self.heads, inner = heads, heads * head_dim
        self.to_q = operations.Linear(dim, inner, dtype=dtype, device=device)
        self.to_k = operations.Linear(dim, inner, dtype=dtype, device=device)
        self.to_v = operations.Linear(dim, inner, dtype=dtype, device=device)
        self.to_out = nn.ModuleList([operations.Linear(inner, dim, dtype=dtype, device=device)])


class LinearSelfAttention(Attention):
    """Official ``CustomLiteLAProcessor2_0``: ReLU-kernel linear attention with RoPE on q and k."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rope: tuple) -> torch.Tensor:
        # x: [B, S, C]; mask: [B, S] (1 = real frame)
        dtype = x.dtype
        q = apply_rope(rearrange(self.to_q(x), "b s (h d) -> b h s d", h=self.heads), rope)
        k = apply_rope(rearrange(self.to_k(x), "b s (h d) -> b h s d", h=self.heads), rope)
        v = rearrange(self.to_v(x), "b s (h d) -> b h d s", h=self.heads)
        if mask is not None:
            m = mask[:, None, :, None].to(k.dtype)  # [B, 1, S, 1]
            q, k, v = q * m, k * m, v * m.transpose(-1, -2)
        q, k, v = F.relu(q).transpose(-1, -2).float(), F.relu(k).float(), v.float()
        v = F.pad(v, (0, 0, 0, 1), value=1.0)  # a row of ones: the last output row is the normaliser
        out = (v @ k) @ q  # [B, H, D+1, S]
        out = out[:, :, :-1] / (out[:, :, -1:] + LINEAR_ATTN_EPS)
        out = rearrange(out, "b h d s -> b s (h d)").to(dtype)
        # official: clip when torch.get_autocast_gpu_dtype() == float16, which is its default, so always
        return self.to_out[0](out).clip(-FP16_MAX, FP16_MAX)


class CrossAttention(Attention):
    """Official ``CustomerAttnProcessor2_0`` as used for cross-attention: SDPA with RoPE on both sides."""

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        rope: tuple,
        rope_context: tuple,
    ) -> torch.Tensor:
        # x: [B, S, C]; context: [B, L, C]; mask: [B, S]; context_mask: [B, L] (1 = attend)
        q = apply_rope(rearrange(self.to_q(x), "b s (h d) -> b h s d", h=self.heads), rope)
        k = apply_rope(rearrange(self.to_k(context), "b l (h d) -> b h l d", h=self.heads), rope_context)
        v = rearrange(self.to_v(context), "b l (h d) -> b h l d", h=self.heads)
        pair = mask[:, :, None] * context_mask[:, None, :]  # [B, S, L]; only exact 1 counts, as official
        bias = torch.where(pair == 1, 0.0, -torch.inf)[:, None].expand(-1, self.heads, -1, -1).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.to_out[0](rearrange(out, "b h s d -> b s (h d)").to(q.dtype))


class _ConvLayer(nn.Module):
    """Official ``ConvLayer`` wrapper: only keeps the ``.conv.`` level of the key names."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class GLUMBConv(nn.Module):
    """Feed-forward: 1x1 conv + SiLU, depthwise k=3 conv over time, SiLU-gated GLU, 1x1 conv (no bias)."""

    def __init__(self, dim: int, hidden: int, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        kw = dict(dtype=dtype, device=device)
        self.inverted_conv = _ConvLayer(operations.Conv1d(dim, 2 * hidden, 1, **kw))
        self.depth_conv = _ConvLayer(
            operations.Conv1d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, **kw)
        )
        self.point_conv = _ConvLayer(operations.Conv1d(hidden, dim, 1, bias=False, **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depth_conv(F.silu(self.inverted_conv(x.transpose(1, 2))))  # [B, 2 * hidden, S]
        x, gate = x.chunk(2, dim=1)
        return self.point_conv(x * F.silu(gate)).transpose(1, 2)


class LinearTransformerBlock(nn.Module):
    def __init__(
        self, dim: int, heads: int, head_dim: int, mlp_ratio: float, dtype=None, device=None, operations=None
    ):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.attn = LinearSelfAttention(dim, heads, head_dim, **kw)
        self.cross_attn = CrossAttention(dim, heads, head_dim, **kw)
        self.ff = GLUMBConv(dim, int(dim * mlp_ratio), **kw)
        self.scale_shift_table = nn.Parameter(torch.empty(6, dim, dtype=dtype, device=device))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        rope: tuple,
        rope_context: tuple,
        temb: torch.Tensor,
    ) -> torch.Tensor:
        # x: [B, S, C]; temb: [B, 6 * C]
        mods = self.scale_shift_table.to(temb)[None] + rearrange(temb, "b (six c) -> b six c", six=6)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods.chunk(6, dim=1)
        x = gate_msa * self.attn(modulate(rms_norm(x), shift_msa, scale_msa), mask, rope) + x
        # the cross-attention reads the raw residual stream: no norm, no modulation, no gate (official)
        x = self.cross_attn(x, mask, context, context_mask, rope, rope_context) + x
        return x + gate_mlp * self.ff(modulate(rms_norm(x), shift_mlp, scale_mlp))


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, dim: int, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        self.linear_1 = operations.Linear(in_dim, dim, dtype=dtype, device=device)
        self.linear_2 = operations.Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class PatchEmbed(nn.Module):
    """[B, C, H, W] -> [B, (H/ph)*(W/pw), inner]: patch conv, GroupNorm, 1x1 conv."""

    def __init__(self, in_channels: int, dim: int, patch_size, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        hidden = in_channels * PATCH_HIDDEN_PER_CHANNEL
        kw = dict(dtype=dtype, device=device)
        self.early_conv_layers = nn.Sequential(
            operations.Conv2d(in_channels, hidden, kernel_size=patch_size, stride=patch_size, **kw),
            operations.GroupNorm(PATCH_GROUPS, hidden, eps=1e-6, **kw),
            operations.Conv2d(hidden, dim, kernel_size=1, **kw),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.early_conv_layers(x), "b c h w -> b (h w) c")


class FinalLayer(nn.Module):
    """Official ``T2IFinalLayer``: RMSNorm, modulation by the timestep embedding, linear, unpatchify."""

    def __init__(self, dim: int, patch_size, out_channels: int, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        self.patch_size, self.out_channels = tuple(patch_size), out_channels
        self.linear = operations.Linear(
            dim, patch_size[0] * patch_size[1] * out_channels, dtype=dtype, device=device
        )
        self.scale_shift_table = nn.Parameter(torch.empty(2, dim, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor, t: torch.Tensor, width: int) -> torch.Tensor:
        # x: [B, W', C]; t: [B, C] (embedded timestep, not the 6C modulation) -> [B, out, ph, width]
        shift, scale = (self.scale_shift_table.to(t)[None] + t[:, None]).chunk(2, dim=1)
        x = self.linear(modulate(F.rms_norm(x, (x.shape[-1],), eps=NORM_EPS), shift, scale))
        ph, pw = self.patch_size
        x = rearrange(x, "b w (p q c) -> b c p (w q)", p=ph, q=pw, c=self.out_channels)
        return F.pad(x, (0, max(0, width - x.shape[-1])))[..., :width]


class ACEStepTransformer(nn.Module):
    """ACE-Step v1 DiT; ``forward`` matches the official ``ACEStepTransformer2DModel.forward`` (tensor output)."""

    def __init__(self, config: DiTConfig, dtype=None, device=None, operations=None):
        super().__init__()
        operations = ops.resolve(operations)
        self.config = c = config
        inner = c.inner_dim
        kw = dict(dtype=dtype, device=device)
        okw = dict(kw, operations=operations)
        self.transformer_blocks = nn.ModuleList(
            [
                LinearTransformerBlock(inner, c.num_attention_heads, c.attention_head_dim, c.mlp_ratio, **okw)
                for _ in range(c.num_layers)
            ]
        )
        self.timestep_embedder = TimestepEmbedding(TIME_FREQ_CHANNELS, inner, **okw)
        self.t_block = nn.Sequential(nn.SiLU(), operations.Linear(inner, 6 * inner, **kw))
        self.speaker_embedder = operations.Linear(c.speaker_embedding_dim, inner, **kw)
        self.genre_embedder = operations.Linear(c.text_embedding_dim, inner, **kw)
        self.lyric_embs = operations.Embedding(c.lyric_encoder_vocab_size, c.lyric_hidden_size, **kw)
        self.lyric_encoder = LyricEncoder(
            c.lyric_hidden_size,
            c.lyric_hidden_size,
            c.lyric_encoder_attention_heads,
            c.lyric_encoder_linear_units,
            c.lyric_encoder_num_blocks,
            **okw,
        )
        self.lyric_proj = operations.Linear(c.lyric_hidden_size, inner, **kw)
        self.proj_in = PatchEmbed(c.in_channels, inner, c.patch_size, **okw)
        self.final_layer = FinalLayer(inner, c.patch_size, c.out_channels, **okw)

    def forward_lyric_encoder(self, lyric_token_idx: torch.Tensor, lyric_mask: torch.Tensor) -> torch.Tensor:
        """lyric ids [B, L] and mask [B, L] -> lyric tokens [B, L, inner]."""
        return self.lyric_proj(self.lyric_encoder(self.lyric_embs(lyric_token_idx), lyric_mask))

    def encode(
        self,
        encoder_text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        speaker_embeds: torch.Tensor,
        lyric_token_idx: torch.Tensor,
        lyric_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning -> (encoder_hidden_states [B, 1 + Lt + Ll, inner], encoder_hidden_mask [B, 1 + Lt + Ll]).

        Token order is speaker, text, lyric; the speaker token is always attended (float32 ones, so the mask comes
        out float32 as in the official code).
        """
        bs, device = encoder_text_hidden_states.shape[0], encoder_text_hidden_states.device
        speaker = self.speaker_embedder(speaker_embeds)[:, None]
        text = self.genre_embedder(encoder_text_hidden_states)
        lyric = self.forward_lyric_encoder(lyric_token_idx, lyric_mask)
        states = torch.cat([speaker, text, lyric], dim=1)
        mask = torch.cat([torch.ones(bs, 1, device=device), text_attention_mask, lyric_mask], dim=1)
        return states, mask

    def decode(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_mask: torch.Tensor,
        timestep: torch.Tensor,
        output_length: int | None = None,
    ) -> torch.Tensor:
        """Latents [B, C, H, W] at timestep [B] (0..1000) -> velocity [B, out, H, output_length].

        ``attention_mask`` [B, W / pw] marks real frames. ``output_length`` defaults to W (the official ``decode``
        defaults to 0, which returns an empty tensor; its ``forward`` and the pipeline always pass W).
        """
        c = self.config
        output_length = hidden_states.shape[-1] if output_length is None else output_length
        embedded_timestep = self.timestep_embedder(timestep_features(timestep).to(hidden_states.dtype))
        temb = self.t_block(embedded_timestep)
        x = self.proj_in(hidden_states)
        rope = rope_table(x.shape[1], c.attention_head_dim, c.rope_theta, x)
        rope_context = rope_table(
            encoder_hidden_states.shape[1], c.attention_head_dim, c.rope_theta, encoder_hidden_states
        )
        for block in self.transformer_blocks:
            x = block(x, attention_mask, encoder_hidden_states, encoder_hidden_mask, rope, rope_context, temb)
        return self.final_layer(x, embedded_timestep, output_length)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        encoder_text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        speaker_embeds: torch.Tensor,
        lyric_token_idx: torch.Tensor,
        lyric_mask: torch.Tensor,
        timestep: torch.Tensor,
    ) -> torch.Tensor:
        """Official forward: ``encode`` then ``decode`` at the input width; returns the ``.sample`` tensor."""
        states, mask = self.encode(
            encoder_text_hidden_states, text_attention_mask, speaker_embeds, lyric_token_idx, lyric_mask
        )
        return self.decode(hidden_states, attention_mask, states, mask, timestep, hidden_states.shape[-1])
