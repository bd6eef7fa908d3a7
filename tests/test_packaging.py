"""The two places installers read our dependencies from say the same thing."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_requirements_txt_matches_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    requirements = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    assert requirements == pyproject


def test_engine_never_imports_comfyui():
    for path in (ROOT / "acestep_models").rglob("*.py"):
        text = path.read_text()
        assert "import comfy" not in text and "from comfy" not in text and "folder_paths" not in text, path


# --- every requirement installs from wheels (or pure-Python sources) wherever ComfyUI runs ---------------------------

PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# pip's --platform takes exact tags: each platform with the older tags its wheels may carry; the environment markers
# of requirements.txt are evaluated here for the target (pip evaluates them for the interpreter it runs on)
PLATFORMS = {
    "linux-x86_64": ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
    "linux-aarch64": ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"),
    "windows-x86_64": ("win_amd64",),
    "macos-arm64": ("macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_14_0_arm64"),
}
MARKER_ENV = {
    "linux-x86_64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    "linux-aarch64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"},
    "windows-x86_64": {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64"},
    "macos-arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
}
# Published only as sources: they must build into pure-Python wheels (py3-none-any), which pip makes anywhere
# without a compiler. The wheelhouse below stands in for that step so pip can resolve everything else binary-only.
PURE_SOURCES = ("docopt>=0.6.2", "unidic-lite==1.0.8")


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheelhouse")
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "--no-deps",
         "--no-binary=:all:", "-w", str(out), *PURE_SOURCES],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    wheels = sorted(p.name for p in out.glob("*.whl"))
    assert len(wheels) == len(PURE_SOURCES) and all(w.endswith("-none-any.whl") for w in wheels), wheels
    return out


@pytest.mark.slow
@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_requirements_install_from_wheels(platform, wheelhouse, tmp_path):
    """pip resolves the whole requirement set binary-only (`--only-binary=:all:`, the source-only pure-Python
    packages as the wheels they build into) for CPython 3.10-3.13 on each platform (ComfyUI's Windows portable
    build ships Python 3.13)."""
    from packaging.requirements import Requirement

    tags = [arg for tag in PLATFORMS[platform] for arg in ("--platform", tag)]
    lines = [ln for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln.strip() and ln[0] != "#"]
    for python in PYTHONS:
        env = {**MARKER_ENV[platform], "python_version": python, "python_full_version": f"{python}.0"}
        reqs = [Requirement(ln) for ln in lines]
        wanted = [f"{r.name}{'[' + ','.join(r.extras) + ']' if r.extras else ''}{r.specifier}" for r in reqs
                  if r.marker is None or r.marker.evaluate(env)]  # fmt: skip
        run = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "--only-binary=:all:",
             "--find-links", str(wheelhouse), "--python-version", python, *tags, "-d", str(tmp_path),
             *wanted],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        errors = [ln for ln in run.stderr.splitlines() if ln.startswith("ERROR")]
        assert run.returncode == 0, f"CPython {python} on {platform}: {errors or run.stderr[-2000:]}"
