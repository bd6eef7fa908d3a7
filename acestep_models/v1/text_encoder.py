"""The prompt (tags) encoder of ACE-Step v1: the UMT5-base encoder and its tokenizer, in plain PyTorch.

The official pipeline runs ``transformers.UMT5EncoderModel`` and ``AutoTokenizer`` from ``umt5-base/`` and takes
``last_hidden_state`` (``get_text_embeddings``). This is a T5 v1.1 encoder (pre-norm RMSNorm blocks, gated-GELU
feed-forward, unscaled attention logits plus a learned relative position bias) where, unlike T5, every block has
its own ``relative_attention_bias``. Module and parameter names are Hugging Face's (as under
``text_encoders.umt5base.transformer.`` in ComfyUI's all-in-one file), so official weights load with
``load_state_dict``; ``encoder.block[i].layer[0].SelfAttention.q`` is a plain Linear whose output feeds the
attention directly, the hook point of the official ERG (``get_text_embeddings_null``, see ``query_temperature``).
The float numerics follow transformers' (RMSNorm variance in float32, tanh GELU, softmax in float32).

``UMT5Tokenizer`` gives the ids and mask of the official ``AutoTokenizer(texts, padding=True, truncation=True,
max_length=256)`` call, from the official folder's ``tokenizer.json`` (through the ``tokenizers`` library, as
transformers does) or from the sentencepiece model that ComfyUI's all-in-one file carries as bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from ..common import ops

TEXT_MAX_LENGTH = 256  # official get_text_embeddings(text_max_length=256)
PAD_ID, EOS_ID = 0, 1  # umt5-base config.json pad_token_id / eos_token_id (sentencepiece <pad>, </s>)
# google/umt5 tokenizers add <extra_id_0..299> after the 256000 sentencepiece pieces (<extra_id_0> last).
UMT5_EXTRA_IDS = 300
ERG_TAU = 0.01  # official get_text_embeddings_null(tau=0.01, l_min=8, l_max=10)
ERG_LAYERS = range(8, 10)


# --- Config -------------------------------------------------------------------------------------------------------


@dataclass
class UMT5Config:
    """Sizes of the encoder; defaults are the released ``umt5-base/config.json``."""

    vocab_size: int = 256384
    d_model: int = 768
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 12
    num_heads: int = 12
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6

    @classmethod
    def from_official(cls, d: dict, overrides: dict | None = None) -> UMT5Config:
        """From the official ``config.json`` (decoder and generation keys are unused)."""
        d = {**d, **(overrides or {})}
        if d.get("feed_forward_proj", "gated-gelu") != "gated-gelu":
            raise ValueError(
                f"UMT5: only feed_forward_proj 'gated-gelu' is supported, not {d['feed_forward_proj']!r}"
            )
        return cls._make(d)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], overrides: dict | None = None) -> UMT5Config:
        """Sizes read off tensor shapes (keys without a file prefix such as ``text_encoders.umt5base.transformer.``).

        ``relative_attention_bias`` [buckets, heads] gives the head count and ``q`` [heads * d_kv, d_model] the head
        size; the bucket distance and the norm epsilon stay at the released values unless overridden.
        """
        overrides = dict(overrides or {})
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"UMT5Config: unknown override(s) {sorted(unknown)}")
        emb = sd["shared.weight"] if "shared.weight" in sd else sd["encoder.embed_tokens.weight"]
        bias = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]  # [buckets, heads]
        inner = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
        d = dict(
            vocab_size=emb.shape[0],
            d_model=emb.shape[1],
            d_kv=inner // bias.shape[1],
            d_ff=sd["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0],
            num_layers=1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.block.")),
            num_heads=bias.shape[1],
            relative_attention_num_buckets=bias.shape[0],
        )
        return cls._make({**d, **overrides})

    @classmethod
    def _make(cls, d: dict) -> UMT5Config:
        types = {f.name: f.type for f in fields(cls)}  # "int" / "float" (postponed annotations)
        return cls(**{k: (float if types[k] == "float" else int)(v) for k, v in d.items() if k in types})


# --- Model --------------------------------------------------------------------------------------------------------


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of GELU, written as transformers' ``gelu_new`` (same ops, same bits)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device=None) -> torch.Tensor:
    """T5's bidirectional bucket of (key - query) for every query/key pair: [L, L] long.

    Half the buckets for keys after the query; in each half, exact buckets up to num_buckets / 4 and logarithmic
    ones up to max_distance (the float ops are those of transformers, so boundary cases bucket identically).
    """
    pos = torch.arange(length, dtype=torch.long, device=device)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).to(torch.long) * half
    rel = torch.abs(rel)
    max_exact = half // 2
    log_ratio = torch.log(rel.float() / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    large = torch.min(max_exact + log_ratio.to(torch.long), torch.full_like(rel, half - 1))
    return buckets + torch.where(rel < max_exact, rel, large)


class UMT5LayerNorm(nn.Module):
    """T5's RMSNorm: scale only, variance in float32, result cast back to a half-precision weight's dtype."""

    def __init__(self, dim: int, eps: float, dtype=None, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, dtype=dtype, device=device))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.variance_epsilon)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


class UMT5Attention(nn.Module):
    def __init__(self, config: UMT5Config, dtype=None, device=None, operations=None):
        super().__init__()
        ops_ = ops.resolve(operations)
        self.num_heads, self.d_kv = config.num_heads, config.d_kv
        inner = config.num_heads * config.d_kv
        kw = dict(bias=False, dtype=dtype, device=device)
        self.q = ops_.Linear(config.d_model, inner, **kw)
        self.k = ops_.Linear(config.d_model, inner, **kw)
        self.v = ops_.Linear(config.d_model, inner, **kw)
        self.o = ops_.Linear(inner, config.d_model, **kw)
        self.relative_attention_bias = ops_.Embedding(
            config.relative_attention_num_buckets, config.num_heads, dtype=dtype, device=device
        )

    def forward(self, x: torch.Tensor, buckets: torch.Tensor, mask_bias: torch.Tensor | None) -> torch.Tensor:
        """x: [B, L, D], buckets: [L, L], mask_bias: [B, 1, 1, L] (0 or the dtype's min) -> [B, L, D]."""
        B, L, _ = x.shape
        q = self.q(x)  # ERG hook point: a forward hook may scale this output in place
        q = q.view(B, L, self.num_heads, self.d_kv).transpose(1, 2)
        k = self.k(x).view(B, L, self.num_heads, self.d_kv).transpose(1, 2)
        v = self.v(x).view(B, L, self.num_heads, self.d_kv).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(3, 2))  # [B, H, L, L]; T5 logits are not scaled by 1/sqrt(d_kv)
        bias = self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)  # [1, H, L, L]
        if mask_bias is not None:
            bias = bias + mask_bias
        scores += bias
        weights = torch.softmax(scores.float(), dim=-1).type_as(scores)
        out = torch.matmul(weights, v).transpose(1, 2).contiguous().view(B, L, -1)
        return self.o(out)


class UMT5LayerSelfAttention(nn.Module):
    def __init__(self, config: UMT5Config, dtype=None, device=None, operations=None):
        super().__init__()
        self.SelfAttention = UMT5Attention(config, dtype=dtype, device=device, operations=operations)
        self.layer_norm = UMT5LayerNorm(config.d_model, config.layer_norm_epsilon, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, buckets: torch.Tensor, mask_bias: torch.Tensor | None) -> torch.Tensor:
        return x + self.SelfAttention(self.layer_norm(x), buckets, mask_bias)


class UMT5DenseGatedActDense(nn.Module):
    def __init__(self, config: UMT5Config, dtype=None, device=None, operations=None):
        super().__init__()
        ops_ = ops.resolve(operations)
        kw = dict(bias=False, dtype=dtype, device=device)
        self.wi_0 = ops_.Linear(config.d_model, config.d_ff, **kw)
        self.wi_1 = ops_.Linear(config.d_model, config.d_ff, **kw)
        self.wo = ops_.Linear(config.d_ff, config.d_model, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(gelu_new(self.wi_0(x)) * self.wi_1(x))


class UMT5LayerFF(nn.Module):
    def __init__(self, config: UMT5Config, dtype=None, device=None, operations=None):
        super().__init__()
        self.DenseReluDense = UMT5DenseGatedActDense(
            config, dtype=dtype, device=device, operations=operations
        )
        self.layer_norm = UMT5LayerNorm(config.d_model, config.layer_norm_epsilon, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


def _clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    """transformers keeps float16 activations finite after each sub-layer (a no-op in other dtypes)."""
    if x.dtype != torch.float16:
        return x
    fmax = torch.finfo(x.dtype).max
    limit = torch.where(torch.isinf(x).any(), fmax - 1000, fmax)
    return torch.clamp(x, min=-limit, max=limit)


class UMT5Block(nn.Module):
    def __init__(self, config: UMT5Config, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.layer = nn.ModuleList([UMT5LayerSelfAttention(config, **kw), UMT5LayerFF(config, **kw)])

    def forward(self, x: torch.Tensor, buckets: torch.Tensor, mask_bias: torch.Tensor | None) -> torch.Tensor:
        x = _clamp_fp16(self.layer[0](x, buckets, mask_bias))
        return _clamp_fp16(self.layer[1](x))


class UMT5Stack(nn.Module):
    """The encoder stack (``encoder.``); the token embedding lives on the model as ``shared``."""

    def __init__(self, config: UMT5Config, dtype=None, device=None, operations=None):
        super().__init__()
        self.config = config
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.block = nn.ModuleList([UMT5Block(config, **kw) for _ in range(config.num_layers)])
        self.final_layer_norm = UMT5LayerNorm(
            config.d_model, config.layer_norm_epsilon, dtype=dtype, device=device
        )

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, D] token embeddings, attention_mask: [B, L] (1 = token, 0 = padding) -> [B, L, D]."""
        cfg = self.config
        buckets = relative_position_buckets(
            x.shape[1], cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance, x.device
        )
        mask_bias = None
        if attention_mask is not None:  # padded keys: the dtype's min added to their logits, as transformers
            mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for block in self.block:
            x = block(x, buckets, mask_bias)
        return self.final_layer_norm(x)


class UMT5EncoderModel(nn.Module):
    """``UMT5EncoderModel``: token ids [B, L] -> ``last_hidden_state`` [B, L, d_model]."""

    def __init__(self, config: UMT5Config, dtype=None, device=None, operations=None):
        super().__init__()
        self.config = config
        ops_ = ops.resolve(operations)
        self.shared = ops_.Embedding(config.vocab_size, config.d_model, dtype=dtype, device=device)
        self.encoder = UMT5Stack(config, dtype=dtype, device=device, operations=operations)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(self.shared(input_ids), attention_mask)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # encoder.embed_tokens is tied to shared in UMT5: files carry either name or both (same tensor).
        tied = state_dict.pop(prefix + "encoder.embed_tokens.weight", None)
        if tied is not None:
            state_dict.setdefault(prefix + "shared.weight", tied)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@contextmanager
def query_temperature(
    model: UMT5EncoderModel, tau: float = ERG_TAU, layers: Sequence[int] = ERG_LAYERS
) -> Iterator[UMT5EncoderModel]:
    """Within the block, the self-attention queries of ``layers`` are scaled by ``tau`` (in place, on the output of
    ``SelfAttention.q``, as the official ERG hook in ``get_text_embeddings_null``): the "null" prompt embedding."""

    def hook(module, args, output):
        output.mul_(tau)

    handles = [model.encoder.block[i].layer[0].SelfAttention.q.register_forward_hook(hook) for i in layers]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


# --- Tokenizer ----------------------------------------------------------------------------------------------------


class UMT5Tokenizer:
    """Prompt tokenizer with the official call's output: ids + EOS, truncated to ``max_length`` keeping the EOS,
    right-padded with id 0 across a batch.

    Build it with ``from_folder`` (``tokenizer.json``, what the official ``AutoTokenizer`` reads, else
    ``spiece.model``), ``from_tokenizer_json`` or ``from_sentencepiece`` (the model bytes of ComfyUI's all-in-one
    ``text_encoders.umt5base.spiece_model`` tensor). The sentencepiece path reproduces the official fast tokenizer
    where plain sentencepiece differs: the fast tokenizer has no byte fallback (a run of characters outside the
    vocabulary becomes one ``<unk>``, not UTF-8 byte pieces) and matches the special-token strings (``</s>``,
    ``<pad>``, ``<unk>``, ``<extra_id_N>``) in the text.
    """

    def __init__(self, encode, pad_id: int = PAD_ID):
        self._encode = encode  # (text, max_length) -> ids with EOS
        self.pad_id = pad_id

    @classmethod
    def from_folder(cls, folder: str | Path) -> UMT5Tokenizer:
        folder = Path(folder)
        if (folder / "tokenizer.json").is_file():
            return cls.from_tokenizer_json(folder / "tokenizer.json")
        if (folder / "spiece.model").is_file():
            return cls.from_sentencepiece(folder / "spiece.model")
        raise FileNotFoundError(f"UMT5 tokenizer: neither tokenizer.json nor spiece.model in {folder}")

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> UMT5Tokenizer:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        tok.no_padding()
        pad_id = tok.token_to_id("<pad>")

        def encode(text: str, max_length: int) -> list[int]:
            # as transformers' fast-tokenizer call: the backend truncates, leaving room for the template's EOS
            tok.enable_truncation(max_length, strategy="longest_first", direction="right")
            return tok.encode(text, add_special_tokens=True).ids

        return cls(encode, PAD_ID if pad_id is None else pad_id)

    @classmethod
    def from_sentencepiece(
        cls, model: bytes | torch.Tensor | str | Path, extra_ids: int = UMT5_EXTRA_IDS
    ) -> UMT5Tokenizer:
        """From sentencepiece model bytes, a uint8 tensor of them, or a ``spiece.model`` path. ``extra_ids``: how
        many ``<extra_id_N>`` tokens the official tokenizer adds after the pieces (300 for umt5)."""
        import sentencepiece

        if isinstance(model, torch.Tensor):
            model = model.cpu().numpy().tobytes()
        if not isinstance(model, bytes):
            model = Path(model).read_bytes()
        sp = sentencepiece.SentencePieceProcessor(model_proto=model)
        n = sp.get_piece_size()
        unk, eos = sp.unk_id(), sp.eos_id()
        special = {sp.id_to_piece(i): i for i in (sp.pad_id(), eos, unk) if i >= 0}
        special.update({f"<extra_id_{i}>": n + extra_ids - 1 - i for i in range(extra_ids)})
        splitter = re.compile("(" + "|".join(re.escape(s) for s in special) + ")")

        def encode_segment(text: str) -> list[int]:
            ids: list[int] = []
            for i in sp.encode(text):
                if sp.is_byte(i):  # no byte fallback in the fast tokenizer: one <unk> per unknown run
                    if ids and ids[-1] == unk:
                        continue
                    i = unk
                elif i == unk and ids and ids[-1] == unk:
                    continue
                ids.append(i)
            return ids

        def encode(text: str, max_length: int) -> list[int]:
            ids: list[int] = []
            for j, part in enumerate(splitter.split(text)):
                ids += [special[part]] if j % 2 else encode_segment(part)
            return ids[: max_length - 1] + [eos]

        return cls(encode, PAD_ID if sp.pad_id() < 0 else sp.pad_id())

    def encode(self, text: str, max_length: int = TEXT_MAX_LENGTH) -> list[int]:
        """Token ids of one text, EOS included."""
        return self._encode(text, max_length)

    def __call__(
        self, texts: str | Sequence[str], max_length: int = TEXT_MAX_LENGTH
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids [B, L] and attention_mask [B, L] (int64), L the longest text's length."""
        if isinstance(texts, str):
            texts = [texts]
        seqs = [self.encode(t, max_length) for t in texts]
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), L), dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[b, : len(s)] = 1
        return ids, mask


@torch.no_grad()
def encode_text(
    model: UMT5EncoderModel,
    tokenizer: UMT5Tokenizer,
    texts: str | Sequence[str],
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official ``get_text_embeddings``: hidden [B, L, D] (the model's dtype) and attention mask [B, L]."""
    device = next(model.parameters()).device if device is None else device
    ids, mask = tokenizer(texts)
    ids, mask = ids.to(device), mask.to(device)
    return model(input_ids=ids, attention_mask=mask), mask
