"""Golden fixtures for the ACE-Step 1.5 network (DiT, condition encoder, FSQ tokenizer), from the OFFICIAL code.

    ACESTEP15_REF=/work/ref15/ACE-Step-1.5 CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 \
        /work/ref15/venv/bin/python tests/golden/make_v15_model.py

Writes
- tests/golden/v15/tiny/acestep-v15-turbo/: a tiny seeded random-weight official ``AceStepConditionGenerationModel``
  (turbo class; base and sft share its network code) through the official ``save_pretrained`` (config.json +
  model.safetensors, float32);
- tests/golden/v15/model/inputs.safetensors and outputs.safetensors: CPU results of the official model loaded back
  from that folder with ``from_pretrained(attn_implementation="sdpa")`` as the handler does, in float32, and a
  few in bfloat16 (``torch_dtype=torch.bfloat16``, the handler's GPU setting).

See tests/golden/v15/model/README.md for what each tensor is.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from pathlib import Path

REF = os.environ.get("ACESTEP15_REF")
if not REF:
    sys.exit("make_v15_model.py: set ACESTEP15_REF to the official ACE-Step-1.5 tree (commit 89031b8)")
sys.path.insert(0, REF)

import torch  # noqa: E402
from acestep.core.generation.handler.audio_codes import AudioCodesMixin  # noqa: E402
from acestep.models.turbo.configuration_acestep_v15 import AceStepConfig  # noqa: E402
from acestep.models.turbo.modeling_acestep_v15_turbo import (  # noqa: E402
    AceStepConditionGenerationModel,
    pack_sequences,
)
from safetensors.torch import save_file  # noqa: E402

torch.set_num_threads(1)
torch.set_float32_matmul_precision("highest")

HERE = Path(__file__).resolve().parent
TINY_DIR = HERE / "v15" / "tiny" / "acestep-v15-turbo"
OUT_DIR = HERE / "v15" / "model"
SEED_WEIGHTS, SEED_INPUTS = 1234, 5678
ATTN = "sdpa"  # the official handler's choice on CPU

# Every width shrunk; the official sliding window (128) kept so that it bites on long inputs: lyrics of 150 tokens,
# 750-frame timbre references, and DiT inputs over 2 * 129 frames. 4 DiT layers -> layer_types
# [sliding, full, sliding, full]; the encoders (2 layers each) index the same list.
TINY_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    fsq_dim=32,
    fsq_input_levels=[8, 8, 8, 5, 5, 5],
    fsq_input_num_quantizers=1,
    text_hidden_dim=16,
    num_lyric_encoder_hidden_layers=2,
    num_timbre_encoder_hidden_layers=2,
    num_attention_pooler_hidden_layers=2,
    num_audio_decoder_hidden_layers=4,
    audio_acoustic_hidden_dim=8,
    timbre_hidden_dim=8,
    in_channels=24,
    sliding_window=128,
    vocab_size=64,
)
D = TINY_CONFIG["audio_acoustic_hidden_dim"]
CODES = [0, 1, 7, 8, 63999, 12345, 40000, 511, 512, 31999, 2560, 12799, 12800, 777, 50000]
CODE_STRING = (
    "<|audio_code_5|><|audio_code_70000|>junk<|audio_code_63999|> <|audio_code_0|><|audio_code_x|>"
    "<|audio_code_123|>"
)


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter redrawn so activations stay O(1) (zero-init layers would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        r = torch.randn(p.shape, generator=g)
        if name.endswith("bias"):
            v = 0.1 * r
        elif p.ndim == 1:  # RMSNorm scales
            v = 1 + 0.1 * r
        elif "scale_shift_table" in name:
            v = 0.3 * r
        elif "special_token" in name or name == "null_condition_emb":
            v = r
        else:  # Linear / Conv weights: unit gain
            v = r / p[0].numel() ** 0.5
        with torch.no_grad():
            p.copy_(v)


def load_official(dtype: torch.dtype = torch.float32) -> AceStepConditionGenerationModel:
    model = AceStepConditionGenerationModel.from_pretrained(
        str(TINY_DIR), attn_implementation=ATTN, torch_dtype=dtype
    )
    model.config._attn_implementation = ATTN  # as handler.initialize_service does
    return model.to(dtype).eval().requires_grad_(False)


def make_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED_INPUTS)
    B, T, T2, Lt, Ll = 2, 301, 303, 12, 150
    C, Dt = TINY_CONFIG["hidden_size"], TINY_CONFIG["text_hidden_dim"]
    text_mask = torch.ones(B, Lt, dtype=torch.long)
    text_mask[1, 8:] = 0
    lyric_mask = torch.ones(B, Ll, dtype=torch.long)
    lyric_mask[1, 131:] = 0
    enc_mask = torch.ones(B, 20, dtype=torch.long)
    enc_mask[1, 15:] = 0  # given to the official DiT, which ignores it
    chunk = torch.ones(B, T2, D)
    chunk[1, 100:200] = 0
    x = dict(
        # DiT: 301 frames (odd: padded to 302 = 151 patches > 129, so the sliding layers drop keys)
        dit_hidden_states=torch.randn(B, T, D, generator=g),
        dit_context_latents=torch.randn(B, T, 2 * D, generator=g),
        dit_encoder_hidden_states=torch.randn(B, 20, C, generator=g),
        dit_encoder_attention_mask=enc_mask,
        dit_timestep=torch.tensor([1.0, 0.3]),
        dit_timestep_mf=torch.tensor([0.9, 0.5]),
        dit_timestep_r_mf=torch.tensor([0.4, 0.5]),
        dit_hidden_states_short=torch.randn(1, 40, D, generator=g),
        dit_context_latents_short=torch.randn(1, 40, 2 * D, generator=g),
        # condition encoder: batch of 2 with padding, lyrics over 128 tokens, three 750-frame references
        text_hidden_states=torch.randn(B, Lt, Dt, generator=g),
        text_attention_mask=text_mask,
        lyric_hidden_states=torch.randn(B, Ll, Dt, generator=g),
        lyric_attention_mask=lyric_mask,
        refer_audio_acoustic_hidden_states_packed=torch.randn(3, 750, D, generator=g),
        refer_audio_order_mask=torch.tensor([0, 1, 0]),
        # tokenizer: 303 frames (padded to 305 with the silence latent)
        src_latents=torch.randn(B, T2, D, generator=g),
        silence_latent=0.5 * torch.randn(1, 400, D, generator=g),
        attention_mask=torch.ones(B, T2),
        chunk_masks=chunk,
        is_covers=torch.tensor([1, 0]),
        quantizer_input=3 * torch.randn(2, 50, C, generator=g),
        codes=torch.tensor(CODES),
    )
    x["precomputed_lm_hints_25Hz"] = torch.randn(B, T2 + 7, D, generator=g)
    return x


def official_codes_to_latents(model, code_string: str, dtype: torch.dtype) -> torch.Tensor:
    """The handler's ``_decode_audio_codes_to_latents`` on this model (a stand-in ``self`` with its attributes)."""
    host = types.SimpleNamespace(
        model=model, device="cpu", dtype=dtype, _load_model_context=lambda name: contextlib.nullcontext()
    )
    host._parse_audio_code_string = types.MethodType(AudioCodesMixin._parse_audio_code_string, host)
    return AudioCodesMixin._decode_audio_codes_to_latents(host, code_string)


def run_official(model, x: dict[str, torch.Tensor], full: bool = True) -> dict[str, torch.Tensor]:
    out = {}
    dec = model.decoder
    with torch.no_grad():
        common = dict(
            attention_mask=torch.ones(x["dit_hidden_states"].shape[:2], dtype=x["dit_hidden_states"].dtype),
            encoder_hidden_states=x["dit_encoder_hidden_states"],
            encoder_attention_mask=x["dit_encoder_attention_mask"],
            context_latents=x["dit_context_latents"],
            use_cache=False,
        )
        t = x["dit_timestep"]
        out["dit_velocity"] = dec(hidden_states=x["dit_hidden_states"], timestep=t, timestep_r=t, **common)[0]
        out["dit_velocity_mf"] = dec(
            hidden_states=x["dit_hidden_states"],
            timestep=x["dit_timestep_mf"],
            timestep_r=x["dit_timestep_r_mf"],
            **common,
        )[0]
        enc = dict(
            text_hidden_states=x["text_hidden_states"],
            text_attention_mask=x["text_attention_mask"],
            lyric_hidden_states=x["lyric_hidden_states"],
            lyric_attention_mask=x["lyric_attention_mask"],
            refer_audio_acoustic_hidden_states_packed=x["refer_audio_acoustic_hidden_states_packed"],
            refer_audio_order_mask=x["refer_audio_order_mask"],
        )
        states, mask = model.encoder(**enc)
        out["encoder_hidden_states"], out["encoder_attention_mask"] = states, mask
        quantized, indices, mask5 = model.tokenize(x["src_latents"], x["silence_latent"], x["attention_mask"])
        out["tokenize_quantized"], out["tokenize_indices"], out["tokenize_mask"] = quantized, indices, mask5
        out["detokenized"] = model.detokenize(quantized)
        code_string = "".join(f"<|audio_code_{int(c)}|>" for c in x["codes"])
        out["codes_latents"] = official_codes_to_latents(model, code_string, states.dtype)
        if not full:
            return {k: v.contiguous() for k, v in out.items()}

        short_t = torch.tensor([0.625])
        out["dit_velocity_short"] = dec(
            hidden_states=x["dit_hidden_states_short"],
            timestep=short_t,
            timestep_r=short_t,
            attention_mask=torch.ones(1, 40),
            encoder_hidden_states=x["dit_encoder_hidden_states"][:1, :9],
            encoder_attention_mask=torch.ones(1, 9),
            context_latents=x["dit_context_latents_short"],
            use_cache=False,
        )[0]
        out["lyric_encoder"] = model.encoder.lyric_encoder(
            inputs_embeds=x["lyric_hidden_states"], attention_mask=x["lyric_attention_mask"]
        ).last_hidden_state
        out["timbre"], out["timbre_mask"] = model.encoder.timbre_encoder(
            x["refer_audio_acoustic_hidden_states_packed"], x["refer_audio_order_mask"]
        )
        out["text_projected"] = model.encoder.text_projector(x["text_hidden_states"])
        packed1 = pack_sequences(
            out["lyric_encoder"], out["timbre"], x["lyric_attention_mask"], out["timbre_mask"]
        )
        out["pack1_hidden"], out["pack1_mask"] = packed1
        q_out, q_idx = model.tokenizer.quantizer(x["quantizer_input"])
        out["quantizer_output"], out["quantizer_indices"] = q_out, q_idx
        out["quantizer_from_indices"] = model.tokenizer.quantizer.get_output_from_indices(q_idx)
        out["codes_quantized"] = model.tokenizer.quantizer.get_output_from_indices(x["codes"][None, :, None])
        parsed = AudioCodesMixin._parse_audio_code_string(None, CODE_STRING)
        out["parsed_code_string"] = torch.tensor(parsed)
        prep = dict(
            **enc,
            hidden_states=x["src_latents"],
            attention_mask=x["attention_mask"],
            silence_latent=x["silence_latent"],
            src_latents=x["src_latents"],
            chunk_masks=x["chunk_masks"],
            is_covers=x["is_covers"],
        )
        for name, hints in (("prepare", None), ("prepare_hints", x["precomputed_lm_hints_25Hz"])):
            s, m, ctx = model.prepare_condition(**prep, precomputed_lm_hints_25Hz=hints)
            out[f"{name}_encoder_hidden_states"], out[f"{name}_encoder_attention_mask"] = s, m
            out[f"{name}_context_latents"] = ctx
        s, m, ctx = model.prepare_condition(**{**prep, "is_covers": torch.zeros(2, dtype=torch.long)})
        out["prepare_text2music_context_latents"] = ctx
    return {k: v.contiguous() for k, v in out.items()}


def to_bf16(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # timesteps too: the official sampler makes them in the latents' dtype (and float32 ones fail in bf16 Linear)
    return {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in x.items()}


def main() -> None:
    torch.manual_seed(0)  # the official __init__ draws from the global RNG before randomise() replaces it all
    model = AceStepConditionGenerationModel(AceStepConfig(**TINY_CONFIG))
    randomise(model, SEED_WEIGHTS)
    TINY_DIR.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(TINY_DIR), safe_serialization=True)

    model = load_official()  # outputs from the folder exactly as written
    inputs = make_inputs()
    outputs = run_official(model, inputs)
    bf16 = run_official(load_official(torch.bfloat16), to_bf16(inputs), full=False)
    outputs.update({f"bf16_{k}": v for k, v in bf16.items()})
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    save_file(inputs, str(OUT_DIR / "inputs.safetensors"))
    save_file(outputs, str(OUT_DIR / "outputs.safetensors"))
    for k, v in outputs.items():
        vf = v.float()
        stats = f"rms {vf.pow(2).mean().sqrt():.4g} max {vf.abs().max():.4g}"
        print(f"{k:42s} {str(v.dtype):15s} {tuple(v.shape)} {stats}")


def released_layout() -> None:
    """Print the key count, parameter count and sha256 of the sorted (key, shape) list of the official model at
    the released sizes (default ``AceStepConfig``), built without memory; test_model.py checks ours against them."""
    import hashlib
    import json

    from accelerate import init_empty_weights

    with init_empty_weights():
        model = AceStepConditionGenerationModel(AceStepConfig())
    listing = sorted((k, list(v.shape)) for k, v in model.state_dict().items())
    digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    print(len(listing), sum(v.numel() for v in model.state_dict().values()), digest)


if __name__ == "__main__":
    if "--released-layout" in sys.argv:
        released_layout()
    else:
        main()
