"""The ACE-Step 1.5 network (DiT, condition encoder, FSQ tokenizer) against the official code.

Goldens: tests/golden/make_v15_model.py ran the official classes (commit 89031b8) on a tiny seeded random-weight
model saved as tests/golden/v15/tiny/acestep-v15-turbo/; see tests/golden/v15/model/README.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch

from acestep_models.common.weights import read_json, read_safetensors
from acestep_models.v15.audio_tokenizer import (
    MAX_AUDIO_CODE,
    codes_to_string,
    pad_with_silence,
    parse_codes,
)
from acestep_models.v15.checkpoint import load_dit
from acestep_models.v15.condition_encoder import pack_sequences
from acestep_models.v15.model import AceStep15Config, AceStepConditionGenerationModel

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "golden" / "v15"
TINY = GOLDEN / "tiny" / "acestep-v15-turbo"
TOL = 1e-5  # relative L2, float32 CPU (one thread is bitwise; more threads may reorder a few sums)
# the string make_v15_model.py fed to the official handler's _parse_audio_code_string
CODE_STRING = (
    "<|audio_code_5|><|audio_code_70000|>junk<|audio_code_63999|> <|audio_code_0|><|audio_code_x|>"
    "<|audio_code_123|>"
)
# The official model at the released sizes (default AceStepConfig): tensor count, parameter count, sha256 of
# json.dumps(sorted [key, shape] list), from `make_v15_model.py --released-layout` in the reference env.
RELEASED_LAYOUT = (677, 2393872518, "107c3e566588e3bb9ab8d2da643e3b5f5f3c933e54a0ec276d8bfc54134cc1b1")


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.fixture(scope="module")
def model() -> AceStepConditionGenerationModel:
    return load_dit(TINY)


@pytest.fixture(scope="module")
def x() -> dict[str, torch.Tensor]:
    return read_safetensors(GOLDEN / "model" / "inputs.safetensors")[0]


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return read_safetensors(GOLDEN / "model" / "outputs.safetensors")[0]


def encoder_inputs(x: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    keys = (
        "text_hidden_states",
        "text_attention_mask",
        "lyric_hidden_states",
        "lyric_attention_mask",
        "refer_audio_acoustic_hidden_states_packed",
        "refer_audio_order_mask",
    )
    return [x[k] for k in keys]


def check(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], prefix: str = "", tol: float = TOL):
    """Float outputs within ``tol``; integer and bool outputs (indices, masks) exactly equal."""
    errors = {}
    for k, v in ours.items():
        r = ref[prefix + k]
        assert v.shape == r.shape and v.dtype == r.dtype, (k, v.shape, r.shape, v.dtype, r.dtype)
        if v.is_floating_point():
            errors[k] = rel_err(v, r)
        else:
            assert torch.equal(v, r), k
    print("relative L2 errors vs official:", {k: f"{e:.1e}" for k, e in errors.items()})
    assert all(e < tol for e in errors.values()), errors


# --- loading ----------------------------------------------------------------------------------------------------


def test_loads_the_official_folder_with_strict_load_state_dict():
    config = AceStep15Config.from_official(read_json(TINY / "config.json"))
    sd, _ = read_safetensors(TINY / "model.safetensors")
    ours = AceStepConditionGenerationModel(config)
    ours.load_state_dict(sd, strict=True)  # raises on any missing or unexpected key or shape
    assert set(ours.state_dict()) == set(sd)
    assert config.layer_types == ["sliding_attention", "full_attention"] * 2 and config.sliding_window == 128


def test_config_from_state_dict_matches_config_json():
    sd, _ = read_safetensors(TINY / "model.safetensors")
    assert AceStep15Config.from_state_dict(sd) == AceStep15Config.from_official(
        read_json(TINY / "config.json")
    )


def test_released_layout_matches_the_official_model():
    """The default config (the released sizes) builds exactly the official key set and shapes."""
    with torch.device("meta"):
        sd = AceStepConditionGenerationModel(AceStep15Config()).state_dict()
    listing = sorted((k, list(v.shape)) for k, v in sd.items())
    digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    assert (len(sd), sum(v.numel() for v in sd.values()), digest) == RELEASED_LAYOUT
    assert AceStep15Config.from_state_dict(sd) == AceStep15Config()


def test_config_without_sliding_window_drops_the_window():
    config = AceStep15Config(use_sliding_window=False, num_hidden_layers=3)
    assert config.sliding_window is None and len(config.layer_types) == 3


# --- DiT --------------------------------------------------------------------------------------------------------


def test_dit_matches_official(model, x, ref):
    t = x["dit_timestep"]
    with torch.no_grad():
        ours = {
            # 301 frames -> 151 patches: the sliding layers drop keys beyond +-128 patches
            "dit_velocity": model(
                x["dit_hidden_states"], t, t, x["dit_encoder_hidden_states"], x["dit_context_latents"]
            ),
            # t != r: time_embed_r sees t - r
            "dit_velocity_mf": model(
                x["dit_hidden_states"],
                x["dit_timestep_mf"],
                x["dit_timestep_r_mf"],
                x["dit_encoder_hidden_states"],
                x["dit_context_latents"],
            ),
            "dit_velocity_short": model(
                x["dit_hidden_states_short"],
                torch.tensor([0.625]),
                torch.tensor([0.625]),
                x["dit_encoder_hidden_states"][:1, :9],
                x["dit_context_latents_short"],
            ),
        }
    check(ours, ref)


def test_dit_sliding_window_bites_and_padding_is_attended(model, x, ref):
    """Quirks the golden fixes: without the window the 301-frame output changes; and the official DiT attends to
    the padded condition positions (it was given a mask with item 1 padded after 15 and ignored it)."""
    args = (x["dit_hidden_states"], x["dit_timestep"], x["dit_timestep"])
    wide = load_dit(TINY)
    wide.config = dataclasses.replace(wide.config, sliding_window=10_000)
    wide.decoder.config = wide.config
    states = x["dit_encoder_hidden_states"].clone()
    states[1, 15:] = 0
    with torch.no_grad():
        unwindowed = wide(*args, x["dit_encoder_hidden_states"], x["dit_context_latents"])
        changed = model(*args, states, x["dit_context_latents"])
    assert rel_err(unwindowed, ref["dit_velocity"]) > 1e-3
    assert rel_err(changed[1], ref["dit_velocity"][1]) > 1e-3


def test_cached_cross_attention_equals_recomputing(model, x):
    t = x["dit_timestep"]
    args = (x["dit_hidden_states"], t, t)
    with torch.no_grad():
        kv = model.context_kv(x["dit_encoder_hidden_states"])
        cached = model(*args, None, x["dit_context_latents"], context_kv=kv)
        fresh = model(*args, x["dit_encoder_hidden_states"], x["dit_context_latents"])
    assert torch.equal(cached, fresh)


# --- condition encoder ------------------------------------------------------------------------------------------


def test_condition_encoder_matches_official(model, x, ref):
    """Batch of 2 with padded text and lyrics (150 tokens: the sliding window bites), three 750-frame references
    for items [0, 1, 0] (item 1 gets a padded timbre slot)."""
    enc = encoder_inputs(x)
    with torch.no_grad():
        lyric = model.encoder.lyric_encoder(x["lyric_hidden_states"], x["lyric_attention_mask"])
        timbre, timbre_mask = model.encoder.timbre_encoder(
            x["refer_audio_acoustic_hidden_states_packed"], x["refer_audio_order_mask"]
        )
        pack1 = pack_sequences(lyric, timbre, x["lyric_attention_mask"], timbre_mask)
        states, mask = model.encode(*enc)
        ours = {
            "lyric_encoder": lyric,
            "timbre": timbre,
            "timbre_mask": timbre_mask,
            "text_projected": model.encoder.text_projector(x["text_hidden_states"]),
            "pack1_hidden": pack1[0],
            "pack1_mask": pack1[1],
            "encoder_hidden_states": states,
            "encoder_attention_mask": mask,
        }
    check(ours, ref)
    assert mask.dtype == torch.bool and mask[1].sum() == 131 + 1 + 8  # valid lyric + timbre + text
    assert timbre_mask.tolist() == [[1, 1], [1, 0]]


def test_encoder_sliding_window_bites(x, ref):
    wide = load_dit(TINY)
    wide.config = dataclasses.replace(wide.config, sliding_window=10_000)
    for m in wide.modules():
        if hasattr(m, "config"):
            m.config = wide.config
    with torch.no_grad():
        lyric = wide.encoder.lyric_encoder(x["lyric_hidden_states"], x["lyric_attention_mask"])
        timbre, _ = wide.encoder.timbre_encoder(
            x["refer_audio_acoustic_hidden_states_packed"], x["refer_audio_order_mask"]
        )
    assert rel_err(lyric, ref["lyric_encoder"]) > 1e-4
    assert rel_err(timbre, ref["timbre"]) > 1e-4


def test_pack_sequences_is_a_stable_sort_by_mask():
    h1 = torch.arange(4.0).view(1, 4, 1)
    h2 = torch.arange(10.0, 13.0).view(1, 3, 1)
    packed, mask = pack_sequences(h1, h2, torch.tensor([[1, 0, 1, 0]]), torch.tensor([[0, 1, 1]]))
    assert packed.flatten().tolist() == [0, 2, 11, 12, 1, 3, 10]
    assert mask.tolist() == [[True] * 4 + [False] * 3]


# --- FSQ tokenizer / detokenizer --------------------------------------------------------------------------------


def test_fsq_round_trip_matches_official(model, x, ref):
    """303 frames: padded to 305 with the silence latent, pooled to 61 codes, detokenized to 305 frames."""
    with torch.no_grad():
        quantized, indices, mask = model.tokenize(x["src_latents"], x["silence_latent"], x["attention_mask"])
        q_out, q_idx = model.tokenizer.quantizer(x["quantizer_input"])
        ours = {
            "tokenize_quantized": quantized,
            "tokenize_indices": indices,
            "tokenize_mask": mask,
            "detokenized": model.detokenize(quantized),
            "quantizer_output": q_out,
            "quantizer_indices": q_idx,
            "quantizer_from_indices": model.tokenizer.quantizer.get_output_from_indices(q_idx),
            "codes_quantized": model.tokenizer.quantizer.get_output_from_indices(x["codes"][None, :, None]),
            "codes_latents": model.codes_to_latents(codes_to_string(x["codes"])),
        }
    check(ours, ref)
    assert indices.shape == (2, 61, 1) and 0 <= indices.min() and indices.max() <= MAX_AUDIO_CODE
    assert model.tokenizer.quantizer.codebook_size == MAX_AUDIO_CODE + 1
    # in float32, quantising and decoding the indices give the same vectors
    assert torch.equal(ours["quantizer_output"], ours["quantizer_from_indices"])


def test_code_strings():
    assert torch.equal(
        torch.tensor(parse_codes(CODE_STRING)),
        read_safetensors(GOLDEN / "model" / "outputs.safetensors")[0]["parsed_code_string"],
    )
    assert parse_codes(CODE_STRING) == [5, MAX_AUDIO_CODE, MAX_AUDIO_CODE, 0, 123]
    assert parse_codes("") == [] and parse_codes(None) == []
    assert codes_to_string(torch.tensor([[3], [64]])) == "<|audio_code_3|><|audio_code_64|>"
    assert parse_codes(codes_to_string([7, 0, 63999])) == [7, 0, 63999]


def test_codes_to_latents(model):
    assert model.codes_to_latents("no codes here") is None
    with torch.no_grad():
        hints = model.codes_to_latents("<|audio_code_1|><|audio_code_2|>")
    assert hints.shape == (1, 10, model.config.audio_acoustic_hidden_dim)  # 5 frames at 25 Hz per code


def test_pad_with_silence():
    silence = torch.arange(10.0).view(1, 10, 1)
    hints = torch.full((2, 3, 1), -1.0)
    padded = pad_with_silence(hints, 6, silence)
    assert padded[:, :, 0].tolist() == [[-1, -1, -1, 0, 1, 2]] * 2
    assert pad_with_silence(padded, 4, silence).shape == (2, 4, 1)


# --- prepare_condition ------------------------------------------------------------------------------------------


def test_prepare_condition_matches_official(model, x, ref):
    """Item 0 is a cover (FSQ round trip of its source), item 1 keeps its source; then with precomputed hints
    (cropped to T); then text2music (no cover: the round trip is discarded officially, skipped here)."""
    args = (*encoder_inputs(x), x["src_latents"], x["chunk_masks"])
    kw = dict(silence_latent=x["silence_latent"], attention_mask=x["attention_mask"])
    ours = {}
    with torch.no_grad():
        for name, hints in (("prepare", None), ("prepare_hints", x["precomputed_lm_hints_25Hz"])):
            s, m, c = model.prepare_condition(*args, x["is_covers"], precomputed_lm_hints_25Hz=hints, **kw)
            ours |= {f"{name}_encoder_hidden_states": s, f"{name}_encoder_attention_mask": m}
            ours[f"{name}_context_latents"] = c
        ours["prepare_text2music_context_latents"] = model.prepare_condition(
            *args, torch.zeros(2, dtype=torch.long), **kw
        )[2]
    check(ours, ref)
    assert torch.equal(ours["prepare_context_latents"][1, :, :8], x["src_latents"][1])


def test_null_condition(model, x):
    states = x["dit_encoder_hidden_states"]
    null = model.null_condition(states)
    assert null.shape == states.shape and torch.equal(null[1, 7], model.null_condition_emb[0, 0])


# --- bfloat16 ---------------------------------------------------------------------------------------------------


def test_bf16_matches_official_bf16(x, ref):
    """Loaded in bfloat16 as the official handler loads it (from_pretrained(torch_dtype=bf16), then .to(bf16)):
    same results, including its bf16 RoPE frequencies and bf16-built FSQ codebook."""
    m16 = load_dit(TINY, dtype=torch.bfloat16)
    x16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in x.items()}
    t = x16["dit_timestep"]
    with torch.no_grad():
        quantized, indices, mask = m16.tokenize(
            x16["src_latents"], x16["silence_latent"], x16["attention_mask"]
        )
        states, enc_mask = m16.encode(*encoder_inputs(x16))
        ours = {
            "dit_velocity": m16(
                x16["dit_hidden_states"], t, t, x16["dit_encoder_hidden_states"], x16["dit_context_latents"]
            ),
            "encoder_hidden_states": states,
            "encoder_attention_mask": enc_mask,
            "tokenize_quantized": quantized,
            "tokenize_indices": indices,
            "detokenized": m16.detokenize(quantized),
            "codes_latents": m16.codes_to_latents(codes_to_string(x16["codes"])),
        }
    check(ours, ref, prefix="bf16_", tol=1e-2)  # bf16 kernels may round differently elsewhere; here bitwise


def test_float8_weight_storage_runs(x, ref):
    """ComfyUI-style low-memory load: matrices stored in float8, cast per call (common/ops.cast)."""
    m8 = load_dit(TINY, weight_dtype=torch.float8_e4m3fn)
    assert m8.decoder.layers[0].mlp.up_proj.weight.dtype == torch.float8_e4m3fn
    t = x["dit_timestep"]
    with torch.no_grad():
        v = m8(x["dit_hidden_states"], t, t, x["dit_encoder_hidden_states"], x["dit_context_latents"])
        hints = m8.codes_to_latents(codes_to_string(x["codes"]))
    assert torch.isfinite(v).all() and rel_err(v, ref["dit_velocity"]) < 0.5
    assert hints.dtype == torch.float32 and rel_err(hints, ref["codes_latents"]) < 0.5
