#!/usr/bin/env bash
# The whole test suite, from a fresh clone: sets up what it needs, then runs pytest (fails loudly).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest "$@"
