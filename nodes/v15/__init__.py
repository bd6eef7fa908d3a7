"""ACE-Step 1.5's ComfyUI nodes: loaders, the planner and prompt, latents, the sampler and decode (thin over
``acestep_models.v15``)."""

from . import loaders, prompts, sampling

NODES = [*loaders.NODES, *prompts.NODES, *sampling.NODES]
