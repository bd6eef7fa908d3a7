"""ACE-Step 1.5 LoRAs on the DiT through ComfyUI's weight patching, as v1's (``nodes/lora.py``): the base weights
load once, LoRAs stack, and ComfyUI merges and removes the patches as models come and go.

The file is read by ``acestep_models.v15.lora.load_lora``: the official trainer's PEFT adapter (its
``adapter_config.json`` beside ``adapter_model.safetensors`` gives the official ``alpha / r``), its LyCORIS LoKr
(``lokr_weights.safetensors``, as ComfyUI's LoKr patches) and ComfyUI's key layouts. The patched weight is ``W + strength * alpha / r * B @ A``, what the official handler computes at
``set_lora_scale(strength)``; the official slider stops at [0, 1], this strength does not.
"""

from __future__ import annotations

from dataclasses import replace

from comfy_api.latest import io

from ..common import checks_numbers, explained
from ..lora import comfy_patches, lora_choices, lora_path, strength_input
from .handles import CATEGORY15, DiT15

FIX = "Use an ACE-Step 1.5 DiT LoRA (the official trainer's adapter/ folder file, or a ComfyUI .safetensors)."


class AceStep15LoraLoader(io.ComfyNode):
    TITLE = "ACE-Step 1.5 Load LoRA"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AceStepFaithful15LoraLoader",
            display_name=cls.TITLE,
            category=CATEGORY15,
            description="Applies an ACE-Step 1.5 LoRA to the DiT at a strength, with the official handler's scale "
            "(alpha / r from the adapter's config), through ComfyUI's patching: LoRAs stack and the DiT is not "
            "reloaded.",
            inputs=[
                DiT15.Input("dit", tooltip="The 1.5 DiT (or one with LoRAs already applied)."),
                io.Combo.Input(
                    "lora_name",
                    options=lora_choices(),
                    tooltip="A LoRA in ComfyUI's models/loras/: the official trainer's adapter folder (pick its "
                    "adapter_model.safetensors; adapter_config.json beside it gives the official scale), its LoKr "
                    "(lokr_weights.safetensors) or a single .safetensors file.",
                ),
                strength_input(
                    "The official LoRA scale (the app's slider, 0..1; 1 = as trained, 0 = no effect); beyond 1 or "
                    "below 0 extrapolates."
                ),
            ],
            outputs=[DiT15.Output(display_name="dit", tooltip="The DiT with the LoRA patched in.")],
        )

    @classmethod
    def validate_inputs(cls, lora_name: str) -> bool:
        return True  # names are checked when the node runs, with the fix (common.FILE_NAMES_CHECKED)

    @classmethod
    @checks_numbers
    def execute(cls, dit, lora_name: str, strength: float) -> io.NodeOutput:
        from ...acestep_models.v15.lora import load_lora, lokr_patches

        path = lora_path(cls.TITLE, lora_name)
        with explained(cls.TITLE, "lora_name", lora_name, FIX):
            lora = load_lora(path)
        patches = comfy_patches(cls.TITLE, lora, dit.model, FIX, lora_name, dit.patch_prefix, lokr_patches)
        patched = dit.patcher.clone()
        patched.add_patches(patches, strength_patch=strength)
        source = f"{dit.source} + LoRA {lora_name} at {strength:g}"
        return io.NodeOutput(replace(dit, patcher=patched, source=source))


NODES = [AceStep15LoraLoader]
