"""Layer factories shared by every model.

Each model takes ``operations`` (a namespace with ``Linear``, ``Conv1d``, ``Conv2d``, ``LayerNorm``,
``GroupNorm``, ``Embedding``, ...) plus ``dtype`` and ``device``, as ComfyUI's ``comfy/ldm`` models do, so the
host can swap in its own casting/offloading layers (``comfy.ops``). Standalone we use plain ``torch.nn``;
models are built on the ``meta`` device by the loaders, so ``torch.nn``'s weight init never runs on real memory.
"""

import torch.nn

DEFAULT = torch.nn


def resolve(operations):
    """``operations`` or the default namespace."""
    return DEFAULT if operations is None else operations
