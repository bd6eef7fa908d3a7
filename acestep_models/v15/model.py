"""The ACE-Step 1.5 generation model (official ``AceStepConditionGenerationModel``): container, config, loading.

Module tree = the official state-dict layout (``decoder.``, ``encoder.``, ``tokenizer.``, ``detokenizer.``,
``null_condition_emb``), so an official ``model.safetensors`` loads with ``load_state_dict``. The network is the
same in the official turbo, base and sft folders (their ``modeling_*.py`` differ only in ``generate_audio``, the
sampler, which lives in our sampler module).

Use: ``prepare_condition`` once per condition (encoder, plus the FSQ round trip for cover items), then the
velocity ``model(x_t, t, r, encoder_hidden_states, context_latents)`` per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .audio_tokenizer import AceStepAudioTokenizer, AudioTokenDetokenizer, parse_codes
from .condition_encoder import AceStepConditionEncoder
from .dit import AceStepDiTModel
from .layers import FULL, SLIDING


def default_layer_types(num_layers: int) -> list[str]:
    """Official default: sliding for even layer indices, full for odd (``(i + 1) % 2``)."""
    return [SLIDING if (i + 1) % 2 else FULL for i in range(num_layers)]


@dataclass
class AceStep15Config:
    """The fields of the official ``AceStepConfig`` the network reads; defaults are the official defaults (= the
    released acestep-v15-turbo/base/sft ``config.json``)."""

    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 24  # DiT depth; also the slice bound of the lyric / timbre encoder loops
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    rope_scaling: dict | None = None  # only the default RoPE is implemented (as released)
    attention_bias: bool = False
    use_sliding_window: bool = True
    sliding_window: int | None = 128  # official: None unless use_sliding_window
    layer_types: list[str] | None = None  # None -> default_layer_types(num_hidden_layers)
    text_hidden_dim: int = 1024  # Qwen3-Embedding-0.6B width
    num_lyric_encoder_hidden_layers: int = 8
    timbre_hidden_dim: int = 64
    num_timbre_encoder_hidden_layers: int = 4
    timbre_fix_frame: int = 750  # reference window (30 s at 25 Hz); read by the handler, not the network
    audio_acoustic_hidden_dim: int = 64  # latent width D
    in_channels: int = 192  # DiT input: 3 D (context latents 2 D + x_t)
    patch_size: int = 2
    pool_window_size: int = 5  # 25 Hz -> 5 Hz
    num_attention_pooler_hidden_layers: int = 2  # pooler and detokenizer depth
    fsq_dim: int = 2048
    fsq_input_levels: list[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    fsq_input_num_quantizers: int = 1
    # Official config keys the network never reads (training, or unused): kept so a config round-trips.
    num_audio_decoder_hidden_layers: int = 24  # unused: the DiT depth is num_hidden_layers
    model_version: str = "turbo"

    def __post_init__(self):
        if not self.use_sliding_window:
            self.sliding_window = None
        if self.layer_types is None:
            self.layer_types = default_layer_types(self.num_hidden_layers)
        self.layer_types = list(self.layer_types)
        self.fsq_input_levels = list(self.fsq_input_levels)
        if self.rope_scaling is not None and self.rope_scaling.get("rope_type", "default") != "default":
            raise NotImplementedError(f"AceStep15Config: rope_scaling {self.rope_scaling} is not supported")
        if len(self.layer_types) < self.num_hidden_layers:
            raise ValueError(
                f"AceStep15Config: {len(self.layer_types)} layer_types for {self.num_hidden_layers} layers"
            )

    @classmethod
    def _make(cls, d: dict) -> AceStep15Config:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_official(cls, d: dict, overrides: dict | None = None) -> AceStep15Config:
        """From the official ``config.json`` (transformers keys such as ``architectures`` are ignored)."""
        return cls._make({**d, **(overrides or {})})

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], overrides: dict | None = None) -> AceStep15Config:
        """Sizes read off tensor shapes (official key names). Not in any shape: the RoPE base, norm eps, sliding
        window, layer types, FSQ level values and quantizer count; those keep the released values unless given in
        ``overrides`` (e.g. the official config.json)."""

        def count(prefix: str) -> int:
            return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})

        attn = "decoder.layers.0.self_attn."
        head_dim = sd[attn + "q_norm.weight"].shape[0]
        proj_in = sd["decoder.proj_in.1.weight"]  # [hidden, in_channels, patch]
        d = dict(
            hidden_size=proj_in.shape[0],
            intermediate_size=sd["decoder.layers.0.mlp.gate_proj.weight"].shape[0],
            num_hidden_layers=count("decoder.layers."),
            num_attention_heads=sd[attn + "q_proj.weight"].shape[0] // head_dim,
            num_key_value_heads=sd[attn + "k_proj.weight"].shape[0] // head_dim,
            head_dim=head_dim,
            attention_bias=attn + "q_proj.bias" in sd,
            text_hidden_dim=sd["encoder.text_projector.weight"].shape[1],
            num_lyric_encoder_hidden_layers=count("encoder.lyric_encoder.layers."),
            timbre_hidden_dim=sd["encoder.timbre_encoder.embed_tokens.weight"].shape[1],
            num_timbre_encoder_hidden_layers=count("encoder.timbre_encoder.layers."),
            audio_acoustic_hidden_dim=sd["decoder.proj_out.1.weight"].shape[1],
            in_channels=proj_in.shape[1],
            patch_size=proj_in.shape[2],
            pool_window_size=sd["detokenizer.special_tokens"].shape[1],
            num_attention_pooler_hidden_layers=count("tokenizer.attention_pooler.layers."),
            fsq_dim=sd["tokenizer.quantizer.project_in.weight"].shape[1],
        )
        d.update(overrides or {})
        d.setdefault("num_audio_decoder_hidden_layers", d["num_hidden_layers"])
        levels = sd["tokenizer.quantizer.project_in.weight"].shape[0]
        config = cls._make(d)
        if len(config.fsq_input_levels) != levels:
            raise ValueError(f"AceStep15Config: the FSQ has {levels} levels; pass fsq_input_levels to match")
        return config


class AceStepConditionGenerationModel(nn.Module):
    """The official checkpoint's network: ``decoder`` (DiT), ``encoder`` (condition), ``tokenizer`` /
    ``detokenizer`` (FSQ codes) and ``null_condition_emb`` (the CFG null condition of base/sft)."""

    def __init__(self, config: AceStep15Config, dtype=None, device=None, operations=None):
        super().__init__()
        self.config = config
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.decoder = AceStepDiTModel(config, **kw)
        self.encoder = AceStepConditionEncoder(config, **kw)
        self.tokenizer = AceStepAudioTokenizer(config, **kw)
        self.detokenizer = AudioTokenDetokenizer(config, **kw)
        self.null_condition_emb = nn.Parameter(
            torch.empty(1, 1, config.hidden_size, dtype=dtype, device=device)
        )

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (that of the norms and tables, never a float8 storage dtype)."""
        return self.null_condition_emb.dtype

    # --- condition ----------------------------------------------------------------------------------------------

    def encode(
        self,
        text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        lyric_hidden_states: torch.Tensor,
        lyric_attention_mask: torch.Tensor,
        refer_audio_acoustic_hidden_states_packed: torch.Tensor,
        refer_audio_order_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed condition [B, L, C] and its bool mask (see ``AceStepConditionEncoder``)."""
        return self.encoder(
            text_hidden_states,
            text_attention_mask,
            lyric_hidden_states,
            lyric_attention_mask,
            refer_audio_acoustic_hidden_states_packed,
            refer_audio_order_mask,
        )

    def null_condition(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """The unconditional counterpart of a packed condition: ``null_condition_emb`` at every position, padding
        included (official base/sft CFG; the mask and context latents stay those of the condition)."""
        return self.null_condition_emb.to(encoder_hidden_states).expand_as(encoder_hidden_states)

    def tokenize(
        self, latents: torch.Tensor, silence_latent: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Official ``tokenize``: latents [B, T, D] -> (quantized [B, T', fsq_dim], indices [B, T', Q] int32,
        5 Hz mask [B, T']), T' = ceil(T / 5). T is padded with ``silence_latent[:1, :pad]`` ([1, T_s, D])."""
        p = self.config.pool_window_size
        if attention_mask is None:
            attention_mask = torch.ones(latents.shape[:2], device=latents.device)
        if latents.shape[1] % p:
            pad = p - latents.shape[1] % p
            silence = silence_latent[:1, :pad].to(latents).repeat(latents.shape[0], 1, 1)
            latents = torch.cat([latents, silence], dim=1)
            attention_mask = F.pad(attention_mask, (0, pad), value=0)
        patches = rearrange(latents, "n (t p) d -> n t p d", p=p)
        chunk = math.ceil(attention_mask.shape[1] / patches.shape[1])
        mask = F.max_pool1d(attention_mask.to(latents.dtype)[:, None], chunk, chunk, ceil_mode=True)[:, 0]
        quantized, indices = self.tokenizer(patches)
        return quantized, indices, mask

    def detokenize(self, quantized: torch.Tensor) -> torch.Tensor:
        """5 Hz quantized [B, T', fsq_dim] -> 25 Hz latents [B, 5 T', D]."""
        return self.detokenizer(quantized)

    def codes_to_latents(self, codes: str | list[int] | torch.Tensor) -> torch.Tensor | None:
        """Official ``_decode_audio_codes_to_latents``: a code string (or ids) -> LM hints [1, 5 n, D] at 25 Hz,
        None when there is no code. Codes are clamped to [0, 63999] when parsed from a string."""
        if isinstance(codes, str):
            codes = parse_codes(codes)
        indices = torch.as_tensor(codes, dtype=torch.long, device=self.null_condition_emb.device)
        if indices.numel() == 0:
            return None
        indices = indices.reshape(1, -1, 1)  # [1, n, num_quantizers = 1], as the handler builds it
        quantized = self.tokenizer.quantizer.get_output_from_indices(indices, self.dtype)
        return self.detokenize(quantized.to(self.dtype))

    def prepare_condition(
        self,
        text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor,
        lyric_hidden_states: torch.Tensor,
        lyric_attention_mask: torch.Tensor,
        refer_audio_acoustic_hidden_states_packed: torch.Tensor,
        refer_audio_order_mask: torch.Tensor,
        src_latents: torch.Tensor,
        chunk_masks: torch.Tensor,
        is_covers: torch.Tensor,
        silence_latent: torch.Tensor,
        hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        precomputed_lm_hints_25Hz: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Official ``prepare_condition`` -> (encoder_hidden_states, encoder_attention_mask, context_latents).

        Cover items (``is_covers`` > 0) take LM hints in place of ``src_latents`` [B, T, D]: the precomputed
        25 Hz hints (decoded codes) when given, else the FSQ round trip of ``hidden_states`` (default
        ``src_latents``, as the handler always passes). ``context_latents`` = cat(src, chunk_masks) [B, T, 2 D].
        The official code runs that round trip for every batch, then discards it where no item is a cover; we
        skip it then (identical result). (Its ``audio_codes`` argument would crash officially; not offered.)
        """
        hidden_states = src_latents if hidden_states is None else hidden_states
        states, mask = self.encode(
            text_hidden_states,
            text_attention_mask,
            lyric_hidden_states,
            lyric_attention_mask,
            refer_audio_acoustic_hidden_states_packed,
            refer_audio_order_mask,
        )
        frames = src_latents.shape[1]
        hints = None
        if precomputed_lm_hints_25Hz is not None:
            hints = precomputed_lm_hints_25Hz[:, :frames]
        elif bool((is_covers > 0).any()):
            if attention_mask is None:
                attention_mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device)
            quantized, _, _ = self.tokenize(hidden_states, silence_latent, attention_mask)
            hints = self.detokenize(quantized)[:, :frames]
        if hints is not None:
            src_latents = torch.where(is_covers[:, None, None] > 0, hints, src_latents)
        context = torch.cat([src_latents, chunk_masks.to(hidden_states.dtype)], dim=-1)
        return states, mask, context

    # --- velocity -----------------------------------------------------------------------------------------------

    def context_kv(self, encoder_hidden_states: torch.Tensor) -> list:
        """The DiT's cross-attention keys/values for a condition, to reuse across steps (see ``forward``)."""
        return self.decoder.context_kv(encoder_hidden_states)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        timestep_r: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        context_latents: torch.Tensor,
        context_kv: list | None = None,
    ) -> torch.Tensor:
        """Velocity [B, T, D] of x_t [B, T, D] at t [B] (samplers pass r = t): the official
        ``decoder(...)[0]``. The encoder attention mask is not an input: the official DiT ignores it."""
        return self.decoder(
            hidden_states, timestep, timestep_r, encoder_hidden_states, context_latents, context_kv
        )
