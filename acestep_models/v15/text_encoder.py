"""The text encoder of ACE-Step 1.5: Qwen3-Embedding-0.6B (a stock ``transformers.Qwen3Model``) in plain
PyTorch.

The official handler loads ``AutoModel.from_pretrained(<checkpoints>/Qwen3-Embedding-0.6B)`` and uses it
twice:
- the caption prompt: ``text_encoder(input_ids=ids).last_hidden_state`` with **no attention mask**
  (``infer_text_embeddings``): the model is causal, so the right padding of a batch never reaches a real
  token;
- the lyric prompt: ``text_encoder.embed_tokens(ids)``, the token embeddings alone
  (``infer_lyric_embeddings``).

Qwen3 is a pre-norm decoder: RMSNorm, rotary positions (theta from the config), grouped-query attention with
an RMSNorm on every query and key head, a SwiGLU MLP and a final RMSNorm. Module and parameter names are those
of ``Qwen3Model`` (``embed_tokens``, ``layers.N.self_attn.q_proj``, ..., ``norm``), so the official folder's
``model.safetensors`` loads with ``load_state_dict``; ComfyUI's ``qwen_0.6b_ace15.safetensors`` holds the same
tensors under ``model.`` (``official_keys`` strips it). The float numerics follow transformers' (norms in
float32, rotary tables in float32 cast to the activations' dtype, PyTorch SDPA with ``is_causal`` and
``enable_gqa``, as transformers calls it when there is no mask).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ..common import ops

# --- Config -------------------------------------------------------------------------------------------------------


@dataclass
class Qwen3Config:
    """Sizes of the encoder; defaults are the released ``Qwen3-Embedding-0.6B/config.json``."""

    vocab_size: int = 151669
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    attention_bias: bool = False

    @classmethod
    def from_official(cls, d: dict, overrides: dict | None = None) -> Qwen3Config:
        """From a transformers ``config.json`` (``qwen3``); generation and training keys are unused."""
        d = {**d, **(overrides or {})}
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(
                f"Qwen3 text encoder: only hidden_act 'silu' is supported, not {d['hidden_act']!r}"
            )
        rope = d.get("rope_parameters") or {}  # transformers 5; 4.x writes rope_theta and rope_scaling
        scaling = d.get("rope_scaling") or rope
        if scaling.get("rope_type", scaling.get("type", "default")) != "default":
            raise ValueError(
                f"Qwen3 text encoder: rope scaling {scaling!r} is not supported (Qwen3-Embedding has none)"
            )
        layer_types = d.get("layer_types") or []
        if d.get("use_sliding_window") or any(t != "full_attention" for t in layer_types):
            raise ValueError(
                "Qwen3 text encoder: sliding-window layers are not supported (Qwen3-Embedding has none)"
            )
        d.setdefault("rope_theta", rope.get("rope_theta", cls.rope_theta))
        if d.get("head_dim") is None and "hidden_size" in d:  # transformers' default head size
            d["head_dim"] = d["hidden_size"] // d.get("num_attention_heads", cls.num_attention_heads)
        return cls._make(d)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], overrides: dict | None = None) -> Qwen3Config:
        """Sizes read off tensor shapes (keys as in ``Qwen3Model``, an optional ``model.`` prefix allowed).

        ``q_norm`` [head_dim] gives the head size, ``q_proj`` / ``k_proj`` rows the head counts; the norm
        epsilon and rope theta stay at the released values unless overridden.
        """
        overrides = dict(overrides or {})
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"Qwen3Config: unknown override(s) {sorted(unknown)}")
        sd = official_keys(sd)
        emb = sd["embed_tokens.weight"]  # [vocab, hidden]
        head_dim = sd["layers.0.self_attn.q_norm.weight"].shape[0]
        d = dict(
            vocab_size=emb.shape[0],
            hidden_size=emb.shape[1],
            intermediate_size=sd["layers.0.mlp.gate_proj.weight"].shape[0],
            num_hidden_layers=1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers.")),
            num_attention_heads=sd["layers.0.self_attn.q_proj.weight"].shape[0] // head_dim,
            num_key_value_heads=sd["layers.0.self_attn.k_proj.weight"].shape[0] // head_dim,
            head_dim=head_dim,
            attention_bias="layers.0.self_attn.q_proj.bias" in sd,
        )
        return cls._make({**d, **overrides})

    @classmethod
    def _make(cls, d: dict) -> Qwen3Config:
        cast = {"int": int, "float": float, "bool": bool}  # postponed annotations are strings
        return cls(**{f.name: cast[f.type](d[f.name]) for f in fields(cls) if d.get(f.name) is not None})


def official_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``Qwen3Model`` keys from a file that stores them under ``model.`` (ComfyUI's ``qwen_0.6b_ace15``, a
    ``Qwen3ForCausalLM`` save); an ``lm_head`` (tied to the embedding, unused by the encoder) is dropped."""
    if not any(k.startswith("model.") for k in sd):
        return sd
    return {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}


# --- Model --------------------------------------------------------------------------------------------------------


class Qwen3RMSNorm(nn.Module):
    """RMSNorm with the variance in float32; the normalised activations go back to the input's dtype before
    the weight multiplies them (transformers' order)."""

    def __init__(self, dim: int, eps: float, dtype=None, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dtype=dtype, device=device))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(in_dtype)


def rotary_tables(
    head_dim: int, theta: float, length: int, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [L, head_dim] for positions 0..L-1: float32 angles (``[freqs, freqs]``), cast to ``like``'s
    dtype."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=like.device).float() / head_dim
    inv_freq = 1.0 / (theta**exponent)  # [head_dim / 2]
    # Official quirk: transformers keeps inv_freq as a float buffer, so the handler's ``.to(dtype)`` rounds it
    # to bfloat16 / float16 (the GPU default) before the float32 angles are taken: reproduced for those
    # dtypes.
    inv_freq = inv_freq.to(like.dtype).float()
    pos = torch.arange(length, device=like.device).float()
    freqs = (inv_freq[:, None] @ pos[None, :]).transpose(0, 1)  # [L, head_dim / 2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(like.dtype), emb.sin().to(like.dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, L, Dh]; the "rotate half" form (first half paired with second half)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Qwen3Attention(nn.Module):
    def __init__(self, config: Qwen3Config, dtype=None, device=None, operations=None):
        super().__init__()
        ops_ = ops.resolve(operations)
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        kw = dict(bias=config.attention_bias, dtype=dtype, device=device)
        self.q_proj = ops_.Linear(config.hidden_size, q_dim, **kw)
        self.k_proj = ops_.Linear(config.hidden_size, kv_dim, **kw)
        self.v_proj = ops_.Linear(config.hidden_size, kv_dim, **kw)
        self.o_proj = ops_.Linear(q_dim, config.hidden_size, **kw)
        self.q_norm = Qwen3RMSNorm(self.head_dim, config.rms_norm_eps, dtype=dtype, device=device)
        self.k_norm = Qwen3RMSNorm(self.head_dim, config.rms_norm_eps, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x: [B, L, D] -> [B, L, D], causal (every token sees itself and the tokens before it)."""
        B, L, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, L, -1, self.head_dim)).transpose(1, 2)  # [B, H, L, Dh]
        k = self.k_norm(self.k_proj(x).view(B, L, -1, self.head_dim)).transpose(1, 2)  # [B, Hkv, L, Dh]
        v = self.v_proj(x).view(B, L, -1, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = F.scaled_dot_product_attention(
            q, k, v, scale=self.head_dim**-0.5, is_causal=L > 1, enable_gqa=True
        )
        return self.o_proj(out.transpose(1, 2).reshape(B, L, -1))


class Qwen3MLP(nn.Module):
    def __init__(self, config: Qwen3Config, dtype=None, device=None, operations=None):
        super().__init__()
        ops_ = ops.resolve(operations)
        kw = dict(bias=False, dtype=dtype, device=device)
        self.gate_proj = ops_.Linear(config.hidden_size, config.intermediate_size, **kw)
        self.up_proj = ops_.Linear(config.hidden_size, config.intermediate_size, **kw)
        self.down_proj = ops_.Linear(config.intermediate_size, config.hidden_size, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen3DecoderLayer(nn.Module):
    def __init__(self, config: Qwen3Config, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.self_attn = Qwen3Attention(config, **kw)
        self.mlp = Qwen3MLP(config, **kw)
        eps = config.rms_norm_eps
        self.input_layernorm = Qwen3RMSNorm(config.hidden_size, eps, dtype=dtype, device=device)
        self.post_attention_layernorm = Qwen3RMSNorm(config.hidden_size, eps, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3Model(nn.Module):
    """``Qwen3Model``: token ids [B, L] -> ``last_hidden_state`` [B, L, hidden] (``encode``), or the token
    embeddings alone (``embed``)."""

    def __init__(self, config: Qwen3Config, dtype=None, device=None, operations=None):
        super().__init__()
        self.config = config
        ops_ = ops.resolve(operations)
        self.embed_tokens = ops_.Embedding(config.vocab_size, config.hidden_size, dtype=dtype, device=device)
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.layers = nn.ModuleList(
            [Qwen3DecoderLayer(config, **kw) for _ in range(config.num_hidden_layers)]
        )
        self.norm = Qwen3RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype, device=device)

    @property
    def device(self) -> torch.device:
        """Where it computes: a host streaming the layers' weights (ComfyUI's offloading) keeps the norms there."""
        return self.norm.weight.device

    @device.setter
    def device(
        self, value
    ) -> None:  # ComfyUI's ModelPatcher writes model.device; the weights say where it is
        pass

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The lyric path: ``embed_tokens(ids)`` [B, L, hidden], no transformer layer (official
        ``infer_lyric_embeddings``)."""
        return self.embed_tokens(input_ids)

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The caption path: ``last_hidden_state`` [B, L, hidden] with no attention mask (official
        ``infer_text_embeddings``); positions 0..L-1 for every row."""
        x = self.embed_tokens(input_ids)
        cos, sin = rotary_tables(self.config.head_dim, self.config.rope_theta, x.shape[1], x)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)

    forward = encode

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A Qwen3ForCausalLM save of the same model may carry lm_head (tied to embed_tokens): never read here.
        state_dict.pop(prefix + "lm_head.weight", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@torch.no_grad()
def encode_text(
    model: Qwen3Model, caption_ids: torch.Tensor, lyric_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official ``preprocess_batch`` text step: (text_hidden_states, lyric_hidden_states) for padded id
    batches (``Qwen3Tokenizer.batch``), on the model's device and dtype."""
    return model.encode(caption_ids.to(model.device)), model.embed(lyric_ids.to(model.device))
