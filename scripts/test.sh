#!/usr/bin/env bash
# The whole test suite, from a fresh clone: sets up what it needs, then runs pytest (fails loudly).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest "$@"
# ComfyUI 0.20.1, what users run now: the whole end-to-end suite again, on it (in .venv20).
COMFYUI_PATH="$PWD/build/ComfyUI-0.20.1" COMFYUI_PYTHON="$PWD/.venv20/bin/python" .venv/bin/python -m pytest tests/e2e "$@"
