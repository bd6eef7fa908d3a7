"""Starting noise as the official pipelines draw it: one ``torch.Generator`` per batch item."""

from __future__ import annotations

from collections.abc import Sequence

import torch

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's range (ComfyUI's seed widgets use the same)


def batch_noise(
    shape: Sequence[int], generators: Sequence[torch.Generator], device, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal noise as diffusers' ``randn_tensor(shape, generator=generators)``: one draw of
    ``[1, *shape[1:]]`` per batch item from its own generator (one generator: a single draw of ``shape``), on the
    generator's device when that is the CPU, then moved to ``device``."""
    device = torch.device(device)
    draw_device = "cpu" if generators[0].device.type == "cpu" else device
    if len(generators) == 1:
        return torch.randn(tuple(shape), generator=generators[0], device=draw_device, dtype=dtype).to(device)
    item = (1, *shape[1:])
    parts = [
        torch.randn(item, generator=generators[i], device=draw_device, dtype=dtype) for i in range(shape[0])
    ]
    return torch.cat(parts).to(device)
