"""What a GPU's model manager does to weights, on a CPU, for tests run inside ComfyUI (``in_comfyui``).

On a GPU, ComfyUI keeps the weights of layers that do not fit (``--lowvram``, a big model) or all of them (dynamic
VRAM, 0.18+ on NVIDIA) away from the compute device: a ``comfy.ops`` layer fetches its weight in its own forward
(``comfy.ops.cast_bias_weight``). Code that reads such a weight any other way (``next(model.parameters()).device``,
a tied head's ``embedding.weight``) reads the wrong device, or the wrong tensor. On a CPU nothing is ever away.

``Offloaded()`` makes it so: after each ``load_models_gpu`` every comfy.ops layer's weight and bias are on the
``meta`` device, and only that layer's own cast reaches the real tensors; anything else that reads them fails.
``CPUDynamic``: ComfyUI's dynamic-VRAM patcher (``ModelPatcherDynamic``) kept on a CPU, which it otherwise hands to
the plain ModelPatcher, so its loading path runs here.
"""

from __future__ import annotations

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops
import torch


class Offloaded:
    def __init__(self) -> None:
        self.real: dict[tuple[torch.nn.Module, str], torch.nn.Parameter] = {}
        self.away: set[str] = set()  # the classes of the models whose weights were away
        self._load = mm.load_models_gpu
        mm.load_models_gpu = self.load
        comfy.ops.cast_bias_weight = self.cast
        comfy.ops.uncast_bias_weight = lambda *args, **kwargs: None

    def load(self, models, *args, **kwargs):
        # ComfyUI patches (LoRA) and moves the real weights; they go away again once it is done
        for (module, name), param in self.real.items():
            if module._parameters[name].is_meta:
                module._parameters[name] = param
        self.real.clear()
        out = self._load(models, *args, **kwargs)
        for patcher in models:
            for module in patcher.model.modules():
                if not hasattr(module, "comfy_cast_weights"):
                    continue  # ComfyUI loads every other module's weights to the device
                module.comfy_cast_weights = True
                for name in ("weight", "bias"):
                    param = module._parameters.get(name)
                    if param is not None and not param.is_meta:
                        self.real[(module, name)] = param
                        self.away.add(type(patcher.model).__name__)
                        module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=False)
        return out

    def cast(self, s, input=None, dtype=None, device=None, bias_dtype=None, offloadable=False, **kwargs):
        """comfy.ops.cast_bias_weight, from where the weights really are."""
        if input is not None:
            dtype = dtype or input.dtype
            device = device or input.device
        bias_dtype = bias_dtype or dtype

        def fetch(name, dt):
            param = self.real.get((s, name), s._parameters.get(name))
            if param is None:
                return None
            t = param.to(device=device, dtype=dt, copy=True)
            for f in getattr(s, name + "_function", []):
                t = f(t)
            return t

        weight, bias = fetch("weight", dtype), fetch("bias", bias_dtype)
        return (weight, bias, None) if offloadable else (weight, bias)


if hasattr(comfy.model_patcher, "ModelPatcherDynamic"):

    class CPUDynamic(comfy.model_patcher.ModelPatcherDynamic):
        def __new__(cls, *args, **kwargs):
            return object.__new__(cls)
