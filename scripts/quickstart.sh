#!/usr/bin/env bash
# From a fresh machine: set everything up, load the ACE-Step weights, run every part once (check.wav), then make a
# 10 s song at the official settings (song.wav), printing the time each step takes.
# Usage: bash scripts/quickstart.sh [CHECKPOINT]   (official folder or ComfyUI all-in-one .safetensors)
# Without CHECKPOINT it looks in models/ and, with network, downloads the official weights there.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/python -m pip install --disable-pip-version-check -q huggingface_hub || true  # for the download only
export COMFYUI_PATH=${COMFYUI_PATH:-$PWD/build/comfyui}  # its copy of the lyric vocabulary
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m acestep_models check "$@" --song 10
fi
exec .venv/bin/python -m acestep_models check --download --song 10
