"""The 5 Hz LM of ACE-Step 1.5: a stock Qwen3 causal LM (``transformers.Qwen3ForCausalLM``) in plain PyTorch,
with a preallocated KV cache for token-by-token decoding (sized by the caller to what a phase can write, grown
in doublings where that is not known).

The official ``acestep-5Hz-lm-{0.6B,1.7B,4B}`` folders hold a ``Qwen3ForCausalLM`` (``config.json`` +
``model.safetensors``) whose vocabulary is Qwen3's 151,669 tokens plus 65,535 ``<|audio_code_N|>`` tokens (217,204
rows); ComfyUI's ``qwen_1.7b_ace15`` / ``qwen_4b_ace15`` files hold the same tensors. Module and parameter names
are transformers' (``model.embed_tokens``, ``model.layers.N.self_attn.q_proj``, ..., ``model.norm``, ``lm_head``),
so a file loads with ``load_state_dict``; with ``tie_word_embeddings`` (every released size) the head is the
embedding matrix and a stored ``lm_head.weight`` is not read.

The layers are the text encoder's (``text_encoder.py``: RMSNorm in float32, rotary tables in float32 cast to the
activations, q/k norms, SwiGLU); only the attention differs: it writes keys and values into a ``KVCache`` and
attends over what is there, with a key padding mask for the official left-padded CFG batch.

Positions, as the official loop gets them: it calls ``model(input_ids, attention_mask=...)`` without
``position_ids``, so transformers numbers the columns ``0..L-1`` (``cache_position``) for every row, the left
padding included; a padded row's tokens sit at shifted positions. Reproduced: the position of a token is its column
in the padded batch, which is also its slot in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..common import ops
from .text_encoder import (
    Qwen3Config,
    Qwen3MLP,
    Qwen3RMSNorm,
    apply_rotary,
    rotary_tables,
)

MAX_POSITIONS = 40960  # Qwen3 max_position_embeddings (the official LM config); the cache is sized per call


@dataclass
class Qwen3LMConfig(Qwen3Config):
    """Sizes of the LM; defaults are the released ``acestep-5Hz-lm-1.7B/config.json`` (Qwen3-1.7B with the
    audio-code vocabulary)."""

    vocab_size: int = 217204
    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    tie_word_embeddings: bool = True
    max_position_embeddings: int = MAX_POSITIONS

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], overrides: dict | None = None) -> Qwen3LMConfig:
        """Sizes from tensor shapes (``Qwen3ForCausalLM`` keys); tied unless the file has its own
        ``lm_head.weight`` that differs from the embedding."""
        overrides = dict(overrides or {})
        tied = "lm_head.weight" not in sd or (
            "model.embed_tokens.weight" in sd
            and sd["lm_head.weight"].data_ptr() == sd["model.embed_tokens.weight"].data_ptr()
        )
        overrides.setdefault("tie_word_embeddings", tied)
        return super().from_state_dict(sd, overrides)  # type: ignore[return-value]


class KVCache:
    """Keys and values of every layer for ``batch`` rows ([B, Hkv, capacity, Dh] each), written column by
    column. ``max_len`` is the most columns the cache may hold; ``initial`` of them (default: all) are allocated
    now and the rest when a forward needs them (``grow``: the capacity doubles, what is written is copied), so a
    phase whose length is known allocates exactly that and one whose length is not (the CoT) starts small.
    Columns past ``length`` are zeros: only a static step (``Qwen3ForCausalLM.static_step``) reads them, masked.

    ``key_valid`` [B, capacity] marks the columns that hold real tokens (False for the left padding);
    ``key_bias`` is the same as SDPA's additive mask (0 / -inf in the activations' dtype: what SDPA turns a
    boolean mask into at every layer), kept so a one-token step's mask is a view of it. ``length`` is how many
    columns are written (a host integer: the loop knows it)."""

    def __init__(self, config: Qwen3LMConfig, batch: int, max_len: int, dtype, device, initial=None):
        self.config, self.batch, self.dtype, self.device = config, batch, dtype, device
        self.max_len = max_len
        self.capacity = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.key_valid = torch.zeros(batch, 0, dtype=torch.bool, device=device)
        self.key_bias = torch.zeros(batch, 0, dtype=dtype, device=device)
        self.padded = False  # whether any written column is padding (else no mask is needed)
        self.length = 0
        self._columns: torch.Tensor | None = None
        self.grow(max_len if initial is None else min(max(int(initial), 1), max_len))

    def grow(self, need: int) -> None:
        """Make room for ``need`` columns: the capacity doubles (at least to ``need``, at most ``max_len``)."""
        if need <= self.capacity:
            return
        if need > self.max_len:
            raise ValueError(f"5 Hz LM: {need} tokens do not fit the cache of {self.max_len}")
        size = min(self.max_len, max(need, 2 * self.capacity))
        c = self.config
        shape = (self.batch, c.num_key_value_heads, size, c.head_dim)
        n = self.length

        def more(old: list[torch.Tensor]) -> list[torch.Tensor]:
            out = []
            for i in range(c.num_hidden_layers):
                # zeros: a static step reads (masked) the columns not yet written, so they must be finite
                t = torch.zeros(shape, dtype=self.dtype, device=self.device)
                if n:
                    t[:, :, :n] = old[i][:, :, :n]
                out.append(t)
            return out

        self.k, self.v = more(self.k), more(self.v)
        valid = torch.zeros(self.batch, size, dtype=torch.bool, device=self.device)
        # rows of a multiple of 16 columns: a view of them is a mask SDPA's CUDA kernels take without a copy
        bias = torch.zeros(self.batch, -(-size // 16) * 16, dtype=self.dtype, device=self.device)
        valid[:, :n], bias[:, :n] = self.key_valid[:, :n], self.key_bias[:, :n]
        self.key_valid, self.key_bias, self.capacity = valid, bias, size

    def write_valid(self, start: int, length: int, valid: torch.Tensor | None) -> None:
        """Mark columns ``start..start+length-1``: real tokens where ``valid`` [B, length] (None: all real)."""
        if valid is None:
            self.key_valid[:, start : start + length] = True
            self.key_bias[:, start : start + length] = 0.0
            return
        self.key_valid[:, start : start + length] = valid
        self.key_bias[:, start : start + length] = torch.where(valid, 0.0, float("-inf"))
        if length > 1 and not bool(valid.all()):  # one host read, at the prefill only
            self.padded = True

    def static_mask(self, position: torch.Tensor) -> torch.Tensor:
        """The additive [B, 1, 1, capacity] mask of a one-token step at the device column ``position`` [1]: what
        ``step_mask`` gives, widened to every column (those past ``position`` at -inf). Marks the column real."""
        # key_bias's width is a multiple of 16: the view below is a mask SDPA's CUDA kernels take as it is
        width = self.key_bias.shape[1]
        if self._columns is None or self._columns.shape[0] != width:
            self._columns = torch.arange(width, device=self.device)
        self.key_valid.index_fill_(1, position, True)
        self.key_bias.index_fill_(1, position, 0.0)
        mask = torch.where(self._columns <= position, self.key_bias, float("-inf"))
        return mask[:, None, None, : self.capacity]

    def step_mask(self, start: int) -> torch.Tensor | None:
        """The additive [B, 1, 1, start + 1] mask of a one-token step at column ``start`` (a real token: it
        sees every real column up to itself), a view of ``key_bias``; None when no row has padding."""
        return self.key_bias[:, None, None, : start + 1] if self.padded else None

    def attention_mask(self, start: int, length: int) -> torch.Tensor | None:
        """Boolean [B, 1, length, start + length] for queries at columns ``start..start+length-1`` (None when no
        row has padding and plain causal attention does). A padding query attends to itself only, so its
        (never read) output stays finite."""
        if not self.padded:
            return None
        end = start + length
        q = torch.arange(start, end, device=self.key_valid.device)[:, None]
        k = torch.arange(end, device=self.key_valid.device)[None, :]
        mask = (k <= q)[None] & self.key_valid[:, None, :end]
        mask = mask | (k == q)[None]
        return mask[:, None]


class Qwen3CachedAttention(nn.Module):
    """Qwen3 grouped-query attention (q/k RMSNorm per head, rotary) over a ``KVCache``."""

    def __init__(self, config: Qwen3LMConfig, dtype=None, device=None, operations=None):
        super().__init__()
        ops_ = ops.resolve(operations)
        self.head_dim = config.head_dim
        q_dim = config.num_attention_heads * config.head_dim
        kv_dim = config.num_key_value_heads * config.head_dim
        kw = dict(bias=config.attention_bias, dtype=dtype, device=device)
        self.q_proj = ops_.Linear(config.hidden_size, q_dim, **kw)
        self.k_proj = ops_.Linear(config.hidden_size, kv_dim, **kw)
        self.v_proj = ops_.Linear(config.hidden_size, kv_dim, **kw)
        self.o_proj = ops_.Linear(q_dim, config.hidden_size, **kw)
        self.q_norm = Qwen3RMSNorm(self.head_dim, config.rms_norm_eps, dtype=dtype, device=device)
        self.k_norm = Qwen3RMSNorm(self.head_dim, config.rms_norm_eps, dtype=dtype, device=device)

    def forward(
        self, x, cos, sin, cache: KVCache, layer: int, mask: torch.Tensor | None, position=None
    ) -> torch.Tensor:
        """x: [B, L, D] for the columns ``cache.length .. +L-1`` -> [B, L, D]; or, with ``position`` (a device
        column [1], L = 1, ``mask`` from ``KVCache.static_mask``), for that column: the static step."""
        B, L, _ = x.shape
        start = cache.length
        q = self.q_norm(self.q_proj(x).view(B, L, -1, self.head_dim)).transpose(1, 2)  # [B, H, L, Dh]
        k = self.k_norm(self.k_proj(x).view(B, L, -1, self.head_dim)).transpose(1, 2)  # [B, Hkv, L, Dh]
        v = self.v_proj(x).view(B, L, -1, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if position is not None:
            cache.k[layer].index_copy_(2, position, k)
            cache.v[layer].index_copy_(2, position, v)
            out = F.scaled_dot_product_attention(
                q, cache.k[layer], cache.v[layer], attn_mask=mask, scale=self.head_dim**-0.5, enable_gqa=True
            )
            return self.o_proj(out.transpose(1, 2).reshape(B, L, -1))
        cache.k[layer][:, :, start : start + L] = k
        cache.v[layer][:, :, start : start + L] = v
        keys, values = cache.k[layer][:, :, : start + L], cache.v[layer][:, :, : start + L]
        causal = mask is None and L > 1 and start == 0
        if mask is None and L > 1 and start > 0:  # a chunk after a prefix: causal within, all of the prefix
            mask = cache.attention_mask(start, L) if cache.padded else _chunk_causal(start, L, x.device)
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, scale=self.head_dim**-0.5, is_causal=causal, enable_gqa=True
        )
        return self.o_proj(out.transpose(1, 2).reshape(B, L, -1))


def _chunk_causal(start: int, length: int, device) -> torch.Tensor:
    q = torch.arange(start, start + length, device=device)[:, None]
    return torch.arange(start + length, device=device)[None, :] <= q


class Qwen3LMDecoderLayer(nn.Module):
    def __init__(self, config: Qwen3LMConfig, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.self_attn = Qwen3CachedAttention(config, **kw)
        self.mlp = Qwen3MLP(config, **kw)
        eps = config.rms_norm_eps
        self.input_layernorm = Qwen3RMSNorm(config.hidden_size, eps, dtype=dtype, device=device)
        self.post_attention_layernorm = Qwen3RMSNorm(config.hidden_size, eps, dtype=dtype, device=device)

    def forward(self, x, cos, sin, cache: KVCache, layer: int, mask, position=None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, layer, mask, position)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3LMBody(nn.Module):
    """``Qwen3Model`` (the ``model.`` part of the causal LM)."""

    def __init__(self, config: Qwen3LMConfig, dtype=None, device=None, operations=None):
        super().__init__()
        ops_ = ops.resolve(operations)
        self.embed_tokens = ops_.Embedding(config.vocab_size, config.hidden_size, dtype=dtype, device=device)
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.layers = nn.ModuleList(
            [Qwen3LMDecoderLayer(config, **kw) for _ in range(config.num_hidden_layers)]
        )
        self.norm = Qwen3RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype, device=device)


class Qwen3ForCausalLM(nn.Module):
    """Token ids -> next-token logits, through a ``KVCache`` (``new_cache``): ``forward(ids, cache)`` feeds the
    columns after ``cache.length`` (the whole prompt at once, then one column per step) and returns the logits of
    the last column ([B, V], float32 as the official loop upcasts them) or of every column (``all_logits``)."""

    def __init__(self, config: Qwen3LMConfig, dtype=None, device=None, operations=None):
        super().__init__()
        self.config = config
        self.model = Qwen3LMBody(config, dtype=dtype, device=device, operations=operations)
        if not config.tie_word_embeddings:
            ops_ = ops.resolve(operations)
            self.lm_head = ops_.Linear(
                config.hidden_size, config.vocab_size, bias=False, dtype=dtype, device=device
            )
        else:
            self.lm_head = None
        self._borrow = ops.borrower(operations)  # the tied head reads the embedding as the host lends it
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.model.norm.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.norm.weight.device

    @device.setter
    def device(
        self, value
    ) -> None:  # ComfyUI's ModelPatcher writes model.device; the weights say where it is
        pass

    def new_cache(self, batch: int, max_len: int, initial: int | None = None) -> KVCache:
        """A cache for up to ``max_len`` columns, ``initial`` of them allocated now (default: all)."""
        return KVCache(self.config, batch, max_len, self.dtype, self.device, initial=initial)

    def _rotary(self, start: int, length: int, like: torch.Tensor):
        need = start + length
        if self._rope is None or self._rope[0].shape[0] < need or self._rope[0].dtype != like.dtype:
            size = max(need, 4096)
            self._rope = rotary_tables(self.config.head_dim, self.config.rope_theta, size, like)
        cos, sin = self._rope
        return cos[start:need].to(like.device), sin[start:need].to(like.device)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        if self.lm_head is not None:
            return self.lm_head(h)
        with self._borrow(self.model.embed_tokens, h) as w:
            return F.linear(h, w)

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: KVCache,
        valid: torch.Tensor | None = None,
        all_logits: bool = False,
    ) -> torch.Tensor:
        """input_ids [B, L] for columns ``cache.length ..``; ``valid`` [B, L] False at left padding (prefill
        only). Returns float32 logits [B, V] of the last column ([B, L, V] with ``all_logits``)."""
        B, L = input_ids.shape
        start = cache.length
        cache.grow(start + L)  # a host decision on host integers: no read-back
        cache.write_valid(start, L, valid)
        x = self.model.embed_tokens(input_ids)
        cos, sin = self._rotary(start, L, x)
        # a one-token step reads its mask as a view (nothing built per token); a prompt builds its own
        mask = cache.step_mask(start) if L == 1 and valid is None else cache.attention_mask(start, L)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, cache, i, mask)
        cache.length = start + L
        x = x if all_logits else x[:, -1:]
        logits = self.head(self.model.norm(x)).float()
        return logits if all_logits else logits[:, -1]

    def static_step(self, input_ids: torch.Tensor, position: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One token per row (``input_ids`` [B, 1]) at the device column ``position`` [1] -> float32 logits [B, V],
        with every shape fixed and nothing read from the host (``cache.length`` is the caller's to advance): the
        step a CUDA graph captures once and replays (``CudaGraphStep``). It attends over the whole cache, the
        columns past ``position`` masked; the same logits as ``forward`` to float rounding."""
        x = self.model.embed_tokens(input_ids)
        cos, sin = self._rotary(0, cache.max_len, x)
        cos, sin = cos.index_select(0, position), sin.index_select(0, position)
        mask = cache.static_mask(position)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, cache, i, mask, position)
        return self.head(self.model.norm(x)).float()[:, -1]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.lm_head is None:  # tied: the head is the embedding; a stored copy is not read
            state_dict.pop(prefix + "lm_head.weight", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class StaticStep:
    """The decode step of a phase as ``static_step`` over buffers that keep their address (the token ids, the
    column): what ``CudaGraphStep`` captures, run as it is (on any device; the tests run it on the CPU)."""

    def __init__(self, model: Qwen3ForCausalLM, cache: KVCache):
        if cache.capacity != cache.max_len:
            raise ValueError("5 Hz LM: a static step needs the whole cache allocated")
        self.model, self.cache = model, cache
        self.ids = torch.zeros(cache.batch, 1, dtype=torch.long, device=cache.device)
        self.position = torch.zeros(1, dtype=torch.long, device=cache.device)

    def _feed(self, token: torch.Tensor) -> None:
        self.ids.copy_(token.view(1, 1).expand(self.cache.batch, 1))
        self.position.fill_(self.cache.length)  # a host integer the loop knows: no read-back

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        """``token`` [1] (every row is fed the same, as the CFG rows are) -> logits [B, V] of the next column."""
        self._feed(token)
        logits = self.model.static_step(self.ids, self.position, self.cache)
        self.cache.length += 1
        return logits


class CudaGraphStep(StaticStep):
    """``StaticStep`` as one CUDA graph: captured at the first call (after a warm-up on a side stream, which writes
    the column the first real step then overwrites), replayed for every token: one launch per token instead of
    some 20 per layer. The logits come back in the graph's own buffer, valid until the next call. The first call
    raises where the capture fails or its graph does not give the eager step's logits (``Planner`` then steps
    eagerly): the column is then written again by whatever step comes next."""

    def __init__(self, model: Qwen3ForCausalLM, cache: KVCache):
        super().__init__(model, cache)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        self._feed(token)
        if self.graph is None:
            self._capture()
        self.graph.replay()
        self.cache.length += 1
        return self.logits

    def _capture(self) -> None:
        """Warm up, capture, and replay once on the warm-up's own input: a graph whose logits are not the eager
        step's is refused (``GraphMismatch``; the one host read of the phase)."""
        device = self.cache.device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            eager = self.model.static_step(self.ids, self.position, self.cache)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self.model.static_step(self.ids, self.position, self.cache)
        graph.replay()
        if not torch.allclose(self.logits, eager, rtol=1e-3, atol=1e-3):
            raise GraphMismatch("the captured step's logits differ from the eager step's")
        self.graph = graph


class GraphMismatch(RuntimeError):
    pass
