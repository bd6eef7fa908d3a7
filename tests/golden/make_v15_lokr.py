"""Golden fixtures for ACE-Step 1.5 LoKr adapters, from the OFFICIAL code (commit 89031b8) and LyCORIS: adapters
made by the official trainer's ``inject_lokr_into_dit`` / ``save_lokr_weights`` and applied by the official
``inject_lokr_into_dit`` + ``load_lokr_weights`` (LyCORIS ``LokrModule`` forwards on the DiT decoder).

    CUDA_VISIBLE_DEVICES="" PYTHONPATH=/work/ref15/ACE-Step-1.5 OMP_NUM_THREADS=1 \\
        /work/ref15/venv/bin/python tests/golden/make_v15_lokr.py

(lycoris-lora is an official requirement, unpinned; these were made with 4.1.3.) Uses the tiny official root of
tests/golden/v15/pipeline/tiny/ through make_v15_pipeline's handler stand-in and make_v15_lora's decoder inputs and
call. Writes tests/golden/v15/lora/lokr/: one folder per adapter (``lokr_weights.safetensors`` as the trainer
saves it), ``tensors.safetensors`` (the official decoder outputs) and ``cases.json``; see
tests/golden/v15/lora/README.md.
"""

from __future__ import annotations

import json
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

import torch

torch.set_num_threads(1)
torch.set_float32_matmul_precision("highest")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import make_v15_lora as lora_goldens  # noqa: E402  (the decoder inputs and call of the LoRA goldens)
import make_v15_pipeline as pipe  # noqa: E402  (the tiny root's handler stand-in)
from acestep.training.configs import LoKRConfig  # noqa: E402
from acestep.training.lokr_utils import inject_lokr_into_dit, load_lokr_weights, save_lokr_weights  # noqa: E402
from peft import PeftModel  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_float32_matmul_precision("highest")  # in case an official import changed it

OUT = HERE / "v15" / "lora" / "lokr"
LORA_INPUTS = HERE / "v15" / "lora" / "tensors.safetensors"  # the LoRA goldens' inputs: the same decoder call
OFFICIAL_LORA = HERE / "v15" / "lora" / "official_lora" / "adapter"
WEIGHTS = "lokr_weights.safetensors"  # save_lokr_weights' file name

# name -> (LoKRConfig fields, the other multiplier recorded besides 1, redraw seed). The tiny DiT is 32 wide (MLP
# 64, KV 16, proj_in a Conv1d 9 -> 32 of kernel 2, time_proj 32 -> 192, linear_1 256 -> 32): the official default
# linear_dim 64 / alpha 128 would make every layer a full-matrix one here (as it does on the released DiT, see
# the README), so the dims are small enough to reach each of LyCORIS's layouts.
CASES = {
    # w1 whole or a low-rank pair (decompose_both), w2 a low-rank pair, proj_in's w2 a Tucker decomposition
    # (use_tucker; its kernel is 2): scale alpha / dim = 1.5 everywhere
    "official_lokr": (
        dict(linear_dim=2, linear_alpha=3, factor=-1, decompose_both=True, use_tucker=True),
        0.5,
        15_0201,
    ),
    # factor 2: whole w1 and w2 on attention (scale 1: LyCORIS sets alpha := dim), w2 low-rank on the MLP and time
    # embeddings (4 / 8); rs_lora asked for (create_lycoris drops it), use_scalar's scalar folded into w1 at saving
    "factor_rslora": (
        dict(linear_dim=8, linear_alpha=4, factor=2, rs_lora=True, use_scalar=True),
        1.7,
        15_0202,
    ),
    # unbalanced_factorization (the larger output part goes to w1): time_proj's w1 a low-rank pair with a whole w2
    # (scale 3 / 6), linear_1's both pairs, attention and MLP all whole (scale 1)
    "unbalanced": (
        dict(linear_dim=6, linear_alpha=3, decompose_both=True, unbalanced_factorization=True),
        -0.6,
        15_0203,
    ),
    # the official defaults (linear_dim 64, alpha 128, factor -1): every layer whole, here as on the released DiT
    "defaults": (dict(), 0.5, 15_0204),
}
REDRAW = 0.5  # the LoKrs move the DiT output by 20-100 % (relative L2)
# this LoKr at 1.0 under the official LoRA (make_v15_lora) at PEFT scale 0.5
STACK = ("official_lokr", 1.0, 0.5)


def randomise_lokr(net: torch.nn.Module, seed: int) -> None:
    """Every LoKr parameter redrawn (LyCORIS zero-inits w2 or w2_b, which would hide bugs), in sorted-name order:
    REDRAW * normal / sqrt(its last dimension's size), 0.5 + uniform for use_scalar's scalar."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(net.named_parameters()):
        if name.endswith(".scalar"):
            v = 0.5 + torch.rand(p.shape, generator=g)
        elif ".lokr_" in name:
            v = REDRAW * torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5
        else:
            raise AssertionError(f"unexpected LoKr parameter {name}")
        with torch.no_grad():
            p.copy_(v)


def lokr_config(fields: dict) -> LoKRConfig:
    config = LoKRConfig(**fields)
    assert config.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"] and not config.weight_decompose
    return config


def layouts(net) -> dict[str, list]:
    """Per LyCORIS module: the scale its forward uses and its tensors (``alpha`` left out)."""
    return {
        m.lora_name: [
            float(m.scale),
            " ".join(f"{k}{list(v.shape)}" for k, v in m.state_dict().items() if k != "alpha"),
        ]
        for m in net.loras
    }


def make_lokr(name: str, x: dict[str, torch.Tensor]) -> tuple[Path, dict, torch.Tensor]:
    """A LoKr as the official trainer makes one (LoKRTrainer: inject_lokr_into_dit, train, then the final
    save_lokr_weights with {"lokr_config": config.to_dict()} as metadata); returns the file, notes, and the
    decoder output on ``x`` of the network that saved it (multiplier 1)."""
    fields, _, seed = CASES[name]
    config = lokr_config(fields)
    h = pipe.make_handler("turbo")
    model, net, info = inject_lokr_into_dit(h.model, config)
    randomise_lokr(net, seed)
    folder = OUT / name
    if folder.exists():
        shutil.rmtree(folder)
    path = Path(save_lokr_weights(net, str(folder), metadata={"lokr_config": config.to_dict()}))
    assert path == folder / WEIGHTS, path
    trained = lora_goldens.velocity(model.decoder, x)
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
        alphas = sorted({round(float(f.get_tensor(k)), 6) for k in f.keys() if k.endswith(".alpha")})
        keys = sorted(f.keys())
    notes = {
        "config": config.to_dict(),
        "info": {k: info[k] for k in ("lokr_params", "trainable_params")},
        "modules": len(net.loras),
        "trained_modules": sum(next(m.parameters()).requires_grad for m in net.loras),
        "file_metadata": dict(sorted(metadata.items())),  # safetensors writes them in a hash map's order
        "file_alphas": alphas,
        "file_keys": len(keys),
        "layouts": layouts(net),
    }
    print(f"{name}: {len(net.loras)} LyCORIS modules, {len(keys)} tensors -> {path}")
    return path, notes, trained


def official_apply(name: str, path: Path, multiplier: float):
    """What the official code offers to apply a LoKr: a fresh decoder, ``inject_lokr_into_dit(model, config,
    multiplier)`` with the config it was trained with, then ``load_lokr_weights``."""
    h = pipe.make_handler("turbo")
    model, net, _ = inject_lokr_into_dit(h.model, lokr_config(CASES[name][0]), multiplier=multiplier)
    result = load_lokr_weights(net, str(path))
    assert not result, f"load_lokr_weights: {result}"  # no missing or unexpected keys
    return model, net


def main() -> None:
    x = lora_goldens.make_inputs()
    with safe_open(str(LORA_INPUTS), "pt") as f:
        for k, v in x.items():
            assert torch.equal(f.get_tensor(f"inputs.{k}"), v), k  # the LoRA goldens' inputs, bit for bit
        base_golden = f.get_tensor("base")
    out: dict[str, torch.Tensor] = {}
    notes: dict[str, object] = {"lycoris_lora": version("lycoris-lora"), "torch": torch.__version__}
    base = lora_goldens.velocity(pipe.make_handler("turbo").model.decoder, x)
    notes["base_rel_l2_to_lora_goldens_base"] = float((base - base_golden).norm() / base_golden.norm())
    print("base vs the LoRA goldens: rel. L2", notes["base_rel_l2_to_lora_goldens_base"])
    for name, (_, other, _) in CASES.items():
        path, case_notes, trained = make_lokr(name, x)
        for multiplier in (1.0, other):
            model, net = official_apply(name, path, multiplier)
            out[f"{name}.scale{multiplier}"] = lora_goldens.velocity(model.decoder, x)
            assert layouts(net) == case_notes["layouts"]  # the same modules, tensors and scales as at saving
        case_notes["reloaded_equals_saving_network"] = bool(torch.equal(out[f"{name}.scale1.0"], trained))
        case_notes["reloaded_rel_l2_to_saving_network"] = float(
            (out[f"{name}.scale1.0"] - trained).norm() / trained.norm()
        )
        case_notes["multipliers"] = [1.0, other]
        notes[name] = case_notes

    # a LoKr and a LoRA at once (the handler holds neither together): LyCORIS wraps the Linear forwards, PEFT then
    # wraps those Linears as its base layers
    name, lokr_scale, lora_scale = STACK
    model, _ = official_apply(name, OUT / name / WEIGHTS, lokr_scale)
    decoder = PeftModel.from_pretrained(model.decoder, str(OFFICIAL_LORA), is_trainable=False)
    for m in decoder.modules():
        if isinstance(m, LoraLayer):
            m.set_scale("default", lora_scale)
    decoder.eval()
    out[f"stack.{name}{lokr_scale}_official_lora{lora_scale}"] = lora_goldens.velocity(decoder, x)

    save_file(out, str(OUT / "tensors.safetensors"))
    (OUT / "cases.json").write_text(json.dumps(notes, indent=1, ensure_ascii=False) + "\n")
    for k, v in out.items():
        print(f"{k:44s} rel. change vs base {((v - base).norm() / base.norm()).item():.3f}")
    for name in CASES:
        n = notes[name]
        print(name, {k: n[k] for k in ("file_alphas", "file_keys", "reloaded_equals_saving_network")})


if __name__ == "__main__":
    main()
