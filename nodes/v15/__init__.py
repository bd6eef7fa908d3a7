"""ACE-Step 1.5's ComfyUI nodes: loaders, LoRA, the planner and prompt, latents, the sampler and decode (thin over
``acestep_models.v15``)."""

from . import loaders, lora, prompts, sampling

NODES = [*loaders.NODES, *lora.NODES, *prompts.NODES, *sampling.NODES]
