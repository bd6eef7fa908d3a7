"""The pack's ComfyUI nodes, one file per thing users do. Thin: they turn inputs into ``acestep_models`` calls and
results into ComfyUI types."""

from . import audio, conditioning, custom_sampling, latents, loaders, lora, lyrics, sampling, v15, visualize

NODES = [*loaders.NODES, *latents.NODES, *audio.NODES, *lyrics.NODES]
NODES += [*lora.NODES, *conditioning.NODES, *sampling.NODES]
NODES += custom_sampling.NODES
NODES += visualize.NODES
V1_NODES = list(NODES)  # (the ids that had an older, unprefixed name: nodes/legacy.py)
NODES += loaders.AFTER_RENAME + conditioning.AFTER_RENAME
NODES += v15.NODES
