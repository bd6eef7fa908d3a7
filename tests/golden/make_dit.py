"""Golden fixtures for the DiT and its lyric encoder, produced by the OFFICIAL ACE-Step code.

    ACESTEP_REF=/work/ref/ACE-Step CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 \
        /work/venvs/ref/bin/python tests/golden/make_dit.py

Writes
- tests/golden/tiny/ace_step_transformer/: a tiny random-weight ``ACEStepTransformer2DModel`` through the official
  ``save_pretrained`` (config.json + diffusion_pytorch_model.safetensors, float16 to keep it small);
- tests/golden/dit/inputs.safetensors and outputs.safetensors (CPU results of the official model in float32, and
  two of them in bfloat16).

The official class hard-codes its lyric ConformerEncoder at full size (1024 wide, 16 heads, 4096 FF units); the
tiny model swaps in the official ConformerEncoder at small sizes, recorded in config.json as
``lyric_encoder_{attention_heads,linear_units,num_blocks}`` (keys the official class ignores). ``load_official``
rebuilds the official model from such a folder; the live parity test calls it through ``--live``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REF = os.environ.get("ACESTEP_REF")
if not REF:
    sys.exit(
        "make_dit.py: set ACESTEP_REF to a checkout of the official ACE-Step repository (commit d612523)"
    )
sys.path.insert(0, REF)

import torch  # noqa: E402
from acestep.models.ace_step_transformer import ACEStepTransformer2DModel  # noqa: E402
from acestep.models.lyrics_utils.lyric_encoder import ConformerEncoder  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

torch.set_num_threads(1)
torch.set_float32_matmul_precision("highest")

HERE = Path(__file__).resolve().parent
TINY_DIR = HERE / "tiny" / "ace_step_transformer"
OUT_DIR = HERE / "dit"
SEED_WEIGHTS, SEED_INPUTS = 1234, 5678

# 20 blocks so that ERG's hooks on blocks 15..19 exist; widths as small as the layout allows (the patch embedding
# alone is 8 * 256 * 16 weights). text_embedding_dim matches the tiny UMT5 (d_model 32).
TINY_CONFIG = dict(
    in_channels=8,
    num_layers=20,
    inner_dim=32,
    attention_head_dim=16,
    num_attention_heads=2,
    mlp_ratio=2.5,
    out_channels=8,
    max_position=32768,
    rope_theta=1000000.0,
    speaker_embedding_dim=16,
    text_embedding_dim=32,
    ssl_encoder_depths=[8, 8],
    ssl_names=["mert", "m-hubert"],
    ssl_latent_dims=[16, 12],
    lyric_encoder_vocab_size=6693,
    lyric_hidden_size=16,
    patch_size=[16, 1],
    max_height=16,
    max_width=4096,
)
TINY_LYRIC_ENCODER = dict(
    lyric_encoder_attention_heads=2, lyric_encoder_linear_units=32, lyric_encoder_num_blocks=6
)
ERG_TAU = 0.01  # official forward_{encoder,diffusion}_with_temperature default
ERG_DIT_BLOCKS = range(15, 20)
ERG_LYRIC_BLOCKS = range(4, 6)


def official_model(config: dict) -> ACEStepTransformer2DModel:
    """The official class from a config dict, its lyric encoder rebuilt at the sizes the config records."""
    kwargs = {k: v for k, v in config.items() if not k.startswith("_") and k not in TINY_LYRIC_ENCODER}
    model = ACEStepTransformer2DModel(**kwargs)
    if "lyric_encoder_num_blocks" in config:
        h = config["lyric_hidden_size"]
        model.lyric_encoder = ConformerEncoder(
            input_size=h,
            output_size=h,
            attention_heads=config["lyric_encoder_attention_heads"],
            linear_units=config["lyric_encoder_linear_units"],
            num_blocks=config["lyric_encoder_num_blocks"],
            static_chunk_size=0,
        )
    return model


def load_official(folder: Path) -> ACEStepTransformer2DModel:
    config = json.loads((folder / "config.json").read_text())
    model = official_model(config)
    model.load_state_dict(load_file(str(folder / "diffusion_pytorch_model.safetensors")), strict=True)
    return model.float().eval().requires_grad_(False)


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter redrawn so activations stay O(1) (zero-init layers would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        r = torch.randn(p.shape, generator=g)
        if name.endswith("bias"):
            v = 0.1 * r
        elif p.ndim == 1:  # LayerNorm / GroupNorm scales
            v = 1 + 0.1 * r
        elif "scale_shift_table" in name or "pos_bias" in name:
            v = 0.3 * r
        elif name == "lyric_embs.weight":
            v = r
        else:  # Linear / Conv weights: unit gain
            v = r / p[0].numel() ** 0.5
        with torch.no_grad():
            p.copy_(v)


def make_inputs(config: dict) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED_INPUTS)
    B, T, Lt, Ll = 2, 24, 7, 12
    text_mask = torch.ones(B, Lt, dtype=torch.long)
    text_mask[1, 5:] = 0
    lyric_ids = torch.randint(3, config["lyric_encoder_vocab_size"], (B, Ll), generator=g)
    lyric_ids[:, 0] = 261  # official lyric start token
    lyric_ids[0, 6] = 2  # line separator
    lyric_mask = torch.ones(B, Ll, dtype=torch.long)
    lyric_ids[1, 9:], lyric_mask[1, 9:] = 0, 0
    frame_mask = torch.ones(B, T)
    frame_mask[1, 20:] = 0  # padded frames, only used by the "masked" decode case
    return dict(
        hidden_states=torch.randn(B, config["in_channels"], 16, T, generator=g),
        attention_mask=torch.ones(B, T),
        frame_mask=frame_mask,
        encoder_text_hidden_states=torch.randn(B, Lt, config["text_embedding_dim"], generator=g),
        text_attention_mask=text_mask,
        speaker_embeds=torch.randn(B, config["speaker_embedding_dim"], generator=g),
        lyric_token_idx=lyric_ids,
        lyric_mask=lyric_mask,
        timestep=torch.tensor([937.5, 212.25]),
    )


def to_bf16(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.bfloat16) if v.is_floating_point() and k != "timestep" else v for k, v in x.items()}


def _scale_output(module, inputs, output):  # the ERG hook: scale q in place
    output[:] *= ERG_TAU
    return output


def run_official(model: ACEStepTransformer2DModel, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    cond = dict(
        encoder_text_hidden_states=x["encoder_text_hidden_states"],
        text_attention_mask=x["text_attention_mask"],
        speaker_embeds=x["speaker_embeds"],
        lyric_token_idx=x["lyric_token_idx"],
        lyric_mask=x["lyric_mask"],
    )
    out = {}
    with torch.no_grad():
        lyric_in = model.lyric_embs(x["lyric_token_idx"])
        out["lyric_encoder"] = model.lyric_encoder(lyric_in, x["lyric_mask"], 1, -1)[0]
        states, mask = model.encode(**cond)
        out["encoder_hidden_states"], out["encoder_hidden_mask"] = states, mask
        out["output"] = model(
            hidden_states=x["hidden_states"],
            attention_mask=x["attention_mask"],
            timestep=x["timestep"],
            **cond,
        ).sample
        T = x["hidden_states"].shape[-1]
        dec = dict(
            encoder_hidden_states=states, encoder_hidden_mask=mask, timestep=x["timestep"], output_length=T
        )
        out["output_masked"] = model.decode(
            hidden_states=x["hidden_states"], attention_mask=x["frame_mask"], **dec
        ).sample
        hooks = [model.lyric_encoder.encoders[i].self_attn.linear_q for i in ERG_LYRIC_BLOCKS]
        handles = [m.register_forward_hook(_scale_output) for m in hooks]
        out["encoder_hidden_states_erg"] = model.encode(**cond)[0]
        [h.remove() for h in handles]
        blocks = [model.transformer_blocks[i] for i in ERG_DIT_BLOCKS]
        handles = [b.attn.to_q.register_forward_hook(_scale_output) for b in blocks]
        handles += [b.cross_attn.to_q.register_forward_hook(_scale_output) for b in blocks]
        out["output_erg"] = model.decode(
            hidden_states=x["hidden_states"], attention_mask=x["attention_mask"], **dec
        ).sample
        [h.remove() for h in handles]
    return {k: v.contiguous() for k, v in out.items()}


def main() -> None:
    model = official_model({**TINY_CONFIG, **TINY_LYRIC_ENCODER})
    model.register_to_config(**TINY_LYRIC_ENCODER)
    randomise(model, SEED_WEIGHTS)
    TINY_DIR.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(str(TINY_DIR), safe_serialization=True)

    model = load_official(TINY_DIR)  # outputs from the folder exactly as written
    inputs = make_inputs(model.config)
    outputs = run_official(model, inputs)
    # the same in bfloat16 (weights and floating inputs cast, timesteps kept float32 as the pipeline passes them)
    bf16 = run_official(model.to(torch.bfloat16), to_bf16(inputs))
    outputs.update({f"bf16_{k}": bf16[k] for k in ("output", "encoder_hidden_states")})
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    save_file(inputs, str(OUT_DIR / "inputs.safetensors"))
    save_file(outputs, str(OUT_DIR / "outputs.safetensors"))
    for k, v in outputs.items():
        print(f"{k:28s} {tuple(v.shape)} rms {v.float().pow(2).mean().sqrt():.4g} max {v.abs().max():.4g}")


def live(folder: Path, inputs: Path, dest: Path) -> None:
    """For the live parity test: run the official model on a folder and inputs file, write the outputs."""
    model = load_official(folder)
    save_file(run_official(model, load_file(str(inputs))), str(dest))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--live", nargs=3, metavar=("FOLDER", "INPUTS", "DEST"), help="run official code only")
    args = ap.parse_args()
    if args.live:
        live(*map(Path, args.live))
    else:
        main()
