"""ACE-Step in pure PyTorch: the models of each generation, their loaders, samplers and front ends.

``common/`` holds what the generations share, ``v1/`` ACE-Step v1. Nothing here imports ComfyUI; the nodes in
``nodes/`` are a thin layer over this package.
"""
