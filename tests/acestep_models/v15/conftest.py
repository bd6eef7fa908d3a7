"""What the 1.5 tests share."""

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def qwen_bpe() -> Path:
    """ComfyUI's Qwen vocab.json + merges.txt (comfy/text_encoders/qwen25_tokenizer/), the 5 Hz LM tokenizer's base."""
    from conftest import comfyui_root

    root = comfyui_root()
    folder = root / "comfy" / "text_encoders" / "qwen25_tokenizer" if root else None
    if folder is None or not (folder / "vocab.json").is_file():
        pytest.fail(
            "No ComfyUI copy with qwen25_tokenizer/: run `bash scripts/setup_env.sh` or set COMFYUI_PATH"
        )
    return folder
