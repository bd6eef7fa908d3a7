"""The two places installers read our dependencies from say the same thing."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_requirements_txt_matches_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    requirements = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    assert requirements == pyproject


def test_engine_never_imports_comfyui():
    for path in (ROOT / "acestep_models").glob("*.py"):
        text = path.read_text()
        assert "import comfy" not in text and "from comfy" not in text and "folder_paths" not in text, path
