"""The pack's ComfyUI nodes, one file per thing users do. Thin: they turn inputs into ``acestep_models`` calls and
results into ComfyUI types."""

from . import audio, latents, loaders, lyrics

NODES = [*loaders.NODES, *latents.NODES, *audio.NODES, *lyrics.NODES]
