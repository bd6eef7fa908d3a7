"""The UMT5 text encoder and its tokenizer against the official ACE-Step code (golden outputs from
tests/golden/make_text_encoder.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import bf16_tol

from acestep_models.common.weights import build, read_json, read_safetensors
from acestep_models.v1 import checkpoint
from acestep_models.v1.text_encoder import (
    UMT5Config,
    UMT5EncoderModel,
    UMT5Tokenizer,
    encode_text,
    query_temperature,
)

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "golden"
TINY = GOLDEN / "tiny" / "umt5-base"
FIXTURES = GOLDEN / "text_encoder"
TINY_EXTRA_IDS = 24  # the tiny tokenizer's <extra_id_N> count (umt5: 300, the default)


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref.float()).norm() / ref.float().norm()).item()


def load_tiny(dtype: torch.dtype = torch.float32, sd: dict | None = None) -> UMT5EncoderModel:
    config = UMT5Config.from_official(read_json(TINY / "config.json"))
    sd = read_safetensors(TINY / "model.safetensors")[0] if sd is None else sd
    return build(UMT5EncoderModel, config, sd, dtype=dtype)


@pytest.fixture(scope="module")
def model() -> UMT5EncoderModel:
    return load_tiny()


@pytest.fixture(scope="module")
def tokens() -> dict:
    return json.loads((FIXTURES / "tokens.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return read_safetensors(FIXTURES / "outputs.safetensors")[0]


TOKENIZERS = {
    "tokenizer.json": lambda: UMT5Tokenizer.from_folder(TINY),
    "spiece bytes": lambda: UMT5Tokenizer.from_sentencepiece(
        (FIXTURES / "spiece.model").read_bytes(), extra_ids=TINY_EXTRA_IDS
    ),
    "spiece uint8 tensor": lambda: UMT5Tokenizer.from_sentencepiece(
        torch.frombuffer(bytearray((FIXTURES / "spiece.model").read_bytes()), dtype=torch.uint8),
        extra_ids=TINY_EXTRA_IDS,
    ),
}


@pytest.mark.parametrize("source", TOKENIZERS)
def test_token_ids_equal_the_official_tokenizer(source, tokens):
    tok = TOKENIZERS[source]()
    wrong = [p for p, ids in zip(tokens["prompts"], tokens["input_ids"]) if tok.encode(p) != ids]
    assert not wrong, f"{len(wrong)} prompts tokenized differently, e.g. {wrong[:3]}"
    ids, mask = tok(tokens["prompts"])  # one padded batch, as the official call with padding=True
    assert ids.tolist() == tokens["batch_input_ids"]
    assert mask.tolist() == tokens["batch_attention_mask"]
    assert ids.shape[1] == tokens["max_length"]  # the >256-token prompts are cut, their EOS kept
    assert all(row[-1] == 1 for row, m in zip(ids.tolist(), mask.tolist()) if all(m))


def test_sentencepiece_path_emulates_the_fast_tokenizer():
    """Plain sentencepiece (as ComfyUI uses it) spells unknown characters as UTF-8 byte pieces and special-token
    strings as text; the official fast tokenizer gives one <unk> per unknown run and the special ids."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(FIXTURES / "spiece.model"))
    text = "party 🎉🎉 night</s>"
    plain = sp.encode(text, add_eos=True)
    ours = UMT5Tokenizer.from_sentencepiece(FIXTURES / "spiece.model", extra_ids=TINY_EXTRA_IDS).encode(text)
    assert any(sp.is_byte(i) for i in plain) and not any(sp.is_byte(i) for i in ours)
    assert ours == UMT5Tokenizer.from_folder(TINY).encode(text)
    assert ours[-2:] == [1, 1]  # the literal </s>, then the appended EOS


def test_hidden_states_equal_the_official_encoder(model, tokens, ref):
    hidden, mask = encode_text(model, UMT5Tokenizer.from_folder(TINY), tokens["hidden_prompts"])
    assert torch.equal(mask, ref["attention_mask"])
    assert hidden.shape == ref["last_hidden_state"].shape == (6, 256, 32)
    assert rel_err(hidden, ref["last_hidden_state"]) < 1e-5


def test_erg_hooks_give_the_official_null_embedding(model, ref):
    ids, mask = ref["input_ids"], ref["attention_mask"]
    with torch.no_grad(), query_temperature(model):  # tau 0.01 on blocks 8, 9
        null = model(input_ids=ids, attention_mask=mask)
    assert rel_err(null, ref["null_hidden_state"]) < 1e-5
    assert rel_err(null, ref["last_hidden_state"]) > 0.05  # the temperature changes the output

    def hook(module, args, output):  # the official hook, on the official module path
        output[:] *= 0.01
        return output

    handles = [
        model.encoder.block[i].layer[0].SelfAttention.q.register_forward_hook(hook) for i in range(8, 10)
    ]
    with torch.no_grad():
        hooked = model(input_ids=ids, attention_mask=mask)
    for h in handles:
        h.remove()
    assert torch.equal(hooked, null)
    with torch.no_grad():  # hooks removed: the normal output again
        assert rel_err(model(input_ids=ids, attention_mask=mask), ref["last_hidden_state"]) < 1e-5


def test_config_from_shapes_equals_config_json():
    sd = read_safetensors(TINY / "model.safetensors")[0]
    official = UMT5Config.from_official(read_json(TINY / "config.json"))
    assert UMT5Config.from_state_dict(sd) == official
    assert UMT5Config.from_state_dict(sd, {"layer_norm_epsilon": "1e-5"}).layer_norm_epsilon == 1e-5
    assert UMT5Config() == UMT5Config.from_official({"feed_forward_proj": "gated-gelu"})  # released sizes


@pytest.mark.parametrize(
    "names", [("encoder.embed_tokens.weight",), ("shared.weight", "encoder.embed_tokens.weight")]
)
def test_files_with_the_tied_embedding_under_either_name_load(names, model, ref):
    sd = read_safetensors(TINY / "model.safetensors")[0]
    emb = sd.pop("shared.weight")
    sd.update({n: emb for n in names})
    other = load_tiny(sd=sd)
    assert torch.equal(other.shared.weight, model.shared.weight)
    assert "encoder.embed_tokens.weight" not in other.state_dict()


def test_comfyui_all_in_one_layout(tmp_path, tokens, ref):
    """Weights under ``text_encoders.umt5base.transformer.``, the sentencepiece model as a uint8 tensor, no
    config.json: sizes come from the shapes, the tokenizer from the bytes."""
    from safetensors.torch import save_file

    sd = read_safetensors(TINY / "model.safetensors")[0]
    spiece = (FIXTURES / "spiece.model").read_bytes()
    aio = {f"text_encoders.umt5base.transformer.{k}": v for k, v in sd.items()}
    aio["text_encoders.umt5base.spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    aio["text_encoders.umt5base.logit_scale"] = torch.tensor(4.6052)
    save_file(aio, str(tmp_path / "ace_step_v1_3.5b.safetensors"))

    src = checkpoint.locate(tmp_path / "ace_step_v1_3.5b.safetensors", "text_encoder")
    weights = checkpoint.to_official_keys("text_encoder", src.state_dict)
    model = build(UMT5EncoderModel, UMT5Config.from_state_dict(weights), weights)
    tok = UMT5Tokenizer.from_sentencepiece(src.extras["spiece_model"], extra_ids=TINY_EXTRA_IDS)
    hidden, mask = encode_text(model, tok, tokens["hidden_prompts"])
    assert torch.equal(mask, ref["attention_mask"])
    assert rel_err(hidden, ref["last_hidden_state"]) < 1e-5


def test_bfloat16_matches_the_official_bfloat16_run(ref):
    model = load_tiny(torch.bfloat16)
    with torch.no_grad():
        hidden = model(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"])
    assert hidden.dtype == torch.bfloat16 and torch.isfinite(hidden).all()
    # bfloat16 itself drifts ~9% from float32 over this random tiny model, in the official code as in ours
    assert rel_err(hidden, ref["last_hidden_state_bf16"]) < bf16_tol(1e-3, 2e-2)  # AVX2 bf16 kernels: 7.8e-3


@pytest.mark.skipif(
    not os.environ.get("ACESTEP_REF"), reason="ACESTEP_REF (official ACE-Step checkout) not set"
)
def test_live_parity_with_official(model, tmp_path):
    """Runs the official pipeline methods now (ref python from ACESTEP_REF_PYTHON) on fresh prompts and compares."""
    prompts = ["ambient, rain, 70 bpm, soft piano  ", "中国风 🎻 violin <extra_id_3> epic", "x" * 600]
    (tmp_path / "prompts.json").write_text(json.dumps(prompts), encoding="utf-8")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    python = os.environ.get("ACESTEP_REF_PYTHON", sys.executable)
    script = GOLDEN / "make_text_encoder.py"
    cmd = [python, str(script), "--live", str(TINY), str(tmp_path / "prompts.json"), str(tmp_path / "out.st")]
    subprocess.run(cmd, check=True, env=env)
    live = read_safetensors(tmp_path / "out.st")[0]
    for source, make in TOKENIZERS.items():
        ids, mask = make()(prompts)
        assert torch.equal(ids, live["input_ids"]) and torch.equal(mask, live["attention_mask"]), source
    hidden, _ = encode_text(model, UMT5Tokenizer.from_folder(TINY), prompts)
    with torch.no_grad(), query_temperature(model):
        null = model(input_ids=live["input_ids"], attention_mask=live["attention_mask"])
    assert rel_err(hidden, live["last_hidden_state"]) < 1e-4
    assert rel_err(null, live["null_hidden_state"]) < 1e-4
