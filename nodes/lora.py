"""LoRAs on the DiT through ComfyUI's weight patching: ``ModelPatcher.clone()`` + ``add_patches``, so LoRAs stack,
the base weights are loaded once and never reloaded, and ComfyUI merges (or, with ``--lowvram``, applies per layer)
and removes the patches as models come and go.

The LoRA file is read by ``acestep_models.v1.lora.load_lora`` (the official PEFT format and the others it accepts,
with the official scale semantics); its patches become ComfyUI's own LoRA adapters, so the patched weight is
``W + strength * scale * up @ down`` as the official pipeline merges it at ``lora_weight = strength``.
"""

from __future__ import annotations

from dataclasses import replace

import folder_paths
from comfy_api.latest import io

from .common import CATEGORY, WEIGHT_SUFFIX, DiT, checks_numbers, explained, node_error

LORA_FOLDER = "loras"  # ComfyUI's own LoRA folder (models/loras/)


def lora_choices() -> list[str]:
    return [n for n in folder_paths.get_filename_list(LORA_FOLDER) if n.lower().endswith(WEIGHT_SUFFIX)]


def comfy_patches(node: str, lora, model, fix: str, value: str, prefix: str = "", lokr_patches=None) -> dict:
    """{ComfyUI weight key: ComfyUI adapter} at strength 1 for the engine's ``lora``, checked against ``model``'s
    weights; ``prefix`` is what ComfyUI's patcher puts before the module's keys (``diffusion_model.`` on core's
    MODEL). A LoRA becomes ComfyUI's LoRA adapters: they add ``strength * alpha / rank * up @ down``, so
    ``alpha = scale * rank`` makes that the engine's ``strength * scale * up @ down``. A LoKr (1.5) becomes its LoKr
    adapters, from ``lokr_patches`` (``acestep_models.v15.lora.lokr_patches``: the factors in their tuple order)."""
    from ..acestep_models.common.lora import lora_patches, patch_dims

    params = dict(model.named_parameters())
    problems = []
    for key, patch in lora.patches.items():
        weight = params.get(key)
        if weight is None:
            problems.append(f"{key} is not in this DiT")
        elif (weight.shape[0], weight[0].numel()) != patch_dims(patch):
            problems.append(f"{key} is {tuple(weight.shape)}, the LoRA makes {patch_dims(patch)}")
    if problems:
        raise node_error(
            node,
            f"the LoRA does not fit this DiT (made for another model or size?): {'; '.join(problems[:3])}",
            fix,
            "lora_name",
            value,
        )
    if lora.is_lokr:
        from comfy.weight_adapter.lokr import LoKrAdapter

        return {prefix + k: LoKrAdapter(set(), t) for k, t in lokr_patches(lora, 1.0).items()}
    from comfy.weight_adapter.lora import LoRAAdapter

    return {
        prefix + k: LoRAAdapter(set(), (up, down, scale * down.shape[0], None, None, None))
        for k, (up, down, scale) in lora_patches(lora, 1.0).items()
    }


def lora_path(node: str, lora_name: str) -> str:
    """The file of a ``lora_name`` choice, or an error saying where LoRAs go."""
    path = folder_paths.get_full_path(LORA_FOLDER, lora_name)
    if path is None:
        raise node_error(
            node,
            "no such LoRA file",
            "Put it in ComfyUI's models/loras/ and refresh the node list (R), then pick it.",
            "lora_name",
            lora_name,
        )
    return path


def strength_input(tooltip: str) -> io.Input:
    return io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01, tooltip=tooltip)


class AceStepLoraLoader(io.ComfyNode):
    TITLE = "ACE-Step Load LoRA"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithfulLoraLoader",
            display_name=cls.TITLE,
            category=CATEGORY,
            description="Applies an ACE-Step LoRA (e.g. the official Chinese rap LoRA) to the DiT at a strength, "
            "through ComfyUI's patching: LoRAs stack, and the base model is not reloaded.",
            inputs=[
                DiT.Input("dit", tooltip="The DiT (or one with LoRAs already applied)."),
                io.Combo.Input(
                    "lora_name",
                    options=lora_choices(),
                    tooltip="A LoRA in ComfyUI's models/loras/: an official LoRA folder's "
                    "pytorch_lora_weights.safetensors, or a single .safetensors file.",
                ),
                strength_input("The LoRA's weight (official lora_weight, default 1; 0 = no effect)."),
            ],
            outputs=[DiT.Output(display_name="dit", tooltip="The DiT with the LoRA patched in.")],
        )

    @classmethod
    def validate_inputs(cls, lora_name: str) -> bool:
        return True  # names are checked when the node runs, with the fix (common.FILE_NAMES_CHECKED)

    @classmethod
    @checks_numbers
    def execute(cls, dit, lora_name: str, strength: float) -> io.NodeOutput:
        from ..acestep_models.v1.lora import load_lora

        path = lora_path(cls.TITLE, lora_name)
        with explained(cls.TITLE, "lora_name", lora_name, "Use an ACE-Step v1 LoRA (.safetensors)."):
            lora = load_lora(path)
        fix = "Use an ACE-Step v1 3.5B LoRA."
        patches = comfy_patches(cls.TITLE, lora, dit.model, fix, lora_name, dit.patch_prefix)
        patched = dit.patcher.clone()
        patched.add_patches(patches, strength_patch=strength)
        return io.NodeOutput(
            replace(dit, patcher=patched, source=f"{dit.source} + LoRA {lora_name} at {strength:g}")
        )


NODES = [AceStepLoraLoader]
