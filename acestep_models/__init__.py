"""ACE-Step v1 in pure PyTorch: the models, their loaders and the lyric front end.

Nothing here imports ComfyUI; the nodes in ``nodes/`` are a thin layer over this package.
"""
