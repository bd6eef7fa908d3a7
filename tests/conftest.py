import os
import sys
from pathlib import Path

import pytest

# The bfloat16 goldens were made on an AVX-512 BF16 CPU without AMX. oneDNN's AMX kernels (Sapphire Rapids and
# later) round bfloat16 convolutions and matmuls otherwise (the tiny random VAE's bf16 encoder mean lands 1.1 away
# instead of 0.006), so the tests run oneDNN at that instruction set unless told otherwise. Set before torch loads.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
for path in (ROOT, ROOT / "tests"):  # the package, and shared test helpers (tiny_checkpoints)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


# Whether this CPU runs bfloat16 on the goldens' kernels (AVX-512 BF16; with AMX capped above). Elsewhere (AVX2
# CPUs such as this project's AMD EPYC machines) oneDNN emulates bfloat16 with another accumulation order, and the
# bfloat16 results agree with the goldens to bfloat16 rounding only: ``bf16_tol`` gives each test its two bounds.
BF16_AS_GOLDENS = "avx512_bf16" in _cpu_flags()


def bf16_tol(here: float, other_cpu: float) -> float:
    """A bfloat16-vs-official-bfloat16 bound: ``here`` on the goldens' kernels, ``other_cpu`` elsewhere (still far
    below what a cast in the wrong place moves, which each test's comment gives)."""
    return here if BF16_AS_GOLDENS else other_cpu


def comfyui_root() -> Path | None:
    """The ComfyUI copy the tests run against (.ci/run puts it in build/comfyui; COMFYUI_PATH overrides)."""
    for cand in (os.environ.get("COMFYUI_PATH"), ROOT / "build" / "comfyui"):
        if cand and (Path(cand) / "comfy").is_dir():
            return Path(cand)
    return None


@pytest.fixture
def golden() -> Path:
    return GOLDEN


@pytest.fixture(scope="session")
def lyric_vocab() -> Path:
    """ComfyUI ships the official VoiceBPE vocabulary; the tests take it from there, as users' installs do."""
    root = comfyui_root()
    path = root / "comfy" / "text_encoders" / "ace_lyrics_tokenizer" / "vocab.json" if root else None
    if path is None or not path.is_file():
        pytest.fail(
            "No ComfyUI copy with ace_lyrics_tokenizer/vocab.json: run `bash scripts/setup_env.sh` or set COMFYUI_PATH"
        )
    return path
