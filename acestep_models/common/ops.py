"""Layer factories shared by every model.

Each model takes ``operations`` (a namespace with ``Linear``, ``Conv1d``, ``Conv2d``, ``LayerNorm``,
``GroupNorm``, ``Embedding``, ...) plus ``dtype`` and ``device``, as ComfyUI's ``comfy/ldm`` models do, so the
host can swap in its own casting/offloading layers (``comfy.ops``). Standalone we use plain ``torch.nn``;
models are built on the ``meta`` device by the loaders, so ``torch.nn``'s weight init never runs on real memory.

A host may add ``borrow(layer, like)`` to its namespace: a context manager lending ``layer``'s weight, on ``like``'s
device and dtype, to math outside the layer's own forward (a tied LM head reading the embedding matrix). A host that
keeps weights away from the compute device (ComfyUI's offloaded layers, its dynamic VRAM) fetches it as the layer's
own forward would; ``borrow`` below is the default.

``cast`` is our counterpart of ComfyUI's ``comfy.ops.manual_cast`` for weights stored narrower than the compute
dtype (float8): its matrix layers cast their weight to the input's dtype on every call, so a 3.3 B DiT keeps 1 byte
per weight in memory and computes in bfloat16 or float32.
"""

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace

import torch
import torch.nn.functional as F

DEFAULT = torch.nn

# Weight-storage dtypes offered besides the compute dtypes (ComfyUI's UNETLoader weight_dtype names).
STORAGE_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


def resolve(operations):
    """``operations`` or the default namespace."""
    return DEFAULT if operations is None else operations


@contextlib.contextmanager
def borrow(layer: torch.nn.Module, like: torch.Tensor) -> Iterator[torch.Tensor]:
    """``layer.weight`` on ``like``'s device and dtype (the default ``borrow``: the weight is where it is)."""
    yield layer.weight.to(device=like.device, dtype=like.dtype)


def borrower(operations):
    """``operations.borrow``, or the default."""
    return getattr(resolve(operations), "borrow", borrow)


def _like(t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.to(device=x.device, dtype=x.dtype)


class CastLinear(torch.nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _like(self.weight, x), _like(self.bias, x))


class CastConv1d(torch.nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, _like(self.weight, x), _like(self.bias, x))


class CastConv2d(torch.nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, _like(self.weight, x), _like(self.bias, x))


class CastConvTranspose1d(torch.nn.ConvTranspose1d):
    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        padding = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size, 1, self.dilation
        )
        w, b = _like(self.weight, x), _like(self.bias, x)
        return F.conv_transpose1d(x, w, b, self.stride, self.padding, padding, self.groups, self.dilation)


cast = SimpleNamespace(
    Linear=CastLinear,
    Conv1d=CastConv1d,
    Conv2d=CastConv2d,
    ConvTranspose1d=CastConvTranspose1d,
    LayerNorm=torch.nn.LayerNorm,
    GroupNorm=torch.nn.GroupNorm,
    Embedding=torch.nn.Embedding,
)

# The layers whose weights a narrow storage dtype applies to: the matrices (over 99% of the DiT's parameters).
# Norms, embeddings and modulation tables stay in the compute dtype.
MATRIX_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)


def narrow_weight_keys(model: torch.nn.Module) -> set[str]:
    """State-dict keys of the matrix weights that a storage dtype applies to."""
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, MATRIX_LAYERS)}


def to_storage(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in a float8 ``dtype``, saturated to its range (a plain cast turns out-of-range values into NaN)."""
    limit = torch.finfo(dtype).max
    return t.float().clamp(-limit, limit).to(dtype)
