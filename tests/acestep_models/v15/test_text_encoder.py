"""The ACE-Step 1.5 text encoder (Qwen3-Embedding), its tokenizer and the prompt formats against the official
code (golden files from tests/golden/make_v15_text_encoder.py: transformers' Qwen3Model and AutoTokenizer run
by the official handler)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from acestep_models.common.weights import build, read_json, read_safetensors
from acestep_models.v15 import prompts
from acestep_models.v15.text_encoder import Qwen3Config, Qwen3Model, encode_text, official_keys
from acestep_models.v15.tokenizer import QWEN3_ADDED_TOKENS, Qwen3Tokenizer

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "golden" / "v15"
TINY = GOLDEN / "tiny" / "Qwen3-Embedding-0.6B"
FIXTURES = GOLDEN / "text_encoder"


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref.float()).norm() / ref.float().norm()).item()


def load_tiny(dtype: torch.dtype = torch.float32, sd: dict | None = None) -> Qwen3Model:
    config = Qwen3Config.from_official(read_json(TINY / "config.json"))
    sd = read_safetensors(TINY / "model.safetensors")[0] if sd is None else sd
    return build(Qwen3Model, config, sd, dtype=dtype)


@pytest.fixture(scope="module")
def tokens() -> dict:
    return json.loads((FIXTURES / "tokens.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return read_safetensors(FIXTURES / "outputs.safetensors")[0]


@pytest.fixture(scope="module")
def qwen25_files() -> tuple[Path, Path]:
    """ComfyUI's Qwen2.5 BPE files (the real vocabulary), as users' installs have them."""
    roots = [os.environ.get("COMFYUI_PATH"), ROOT / "build" / "comfyui"]
    for root in roots:
        folder = Path(root) / "comfy" / "text_encoders" / "qwen25_tokenizer" if root else None
        if folder and (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return folder / "vocab.json", folder / "merges.txt"
    pytest.fail("No ComfyUI copy with qwen25_tokenizer/: run `bash scripts/setup_env.sh` or set COMFYUI_PATH")


@pytest.fixture(scope="module")
def full_tokenizer(qwen25_files) -> Qwen3Tokenizer:
    return Qwen3Tokenizer.from_vocab_merges(*qwen25_files)


def item_prompts(item: dict) -> tuple[str, str]:
    """Our builders on one official ``_prepare_batch`` item (caption, lyrics, language, instruction,
    metas)."""
    caption = prompts.caption_prompt(item["caption"], prompts.metas_text(item["metas"]), item["instruction"])
    return caption, prompts.lyric_prompt(item["lyrics"], item["language"])


# --- Tokenizer ----------------------------------------------------------------------------------------------------


def assert_same_ids(tok: Qwen3Tokenizer, golden: dict) -> None:
    cases = [
        (p, prompts.CAPTION_MAX_LENGTH, i) for p, i in zip(golden["caption_prompts"], golden["caption_ids"])
    ]
    cases += [(p, prompts.LYRIC_MAX_LENGTH, i) for p, i in zip(golden["lyric_prompts"], golden["lyric_ids"])]
    for max_length, ids in golden["raw_ids"].items():
        cases += [(p, int(max_length), i) for p, i in zip(golden["raw"], ids)]
    wrong = [(text[:40], n) for text, n, ids in cases if tok.encode(text, n) != ids]
    assert not wrong, f"{len(wrong)} of {len(cases)} texts tokenized differently, e.g. {wrong[:3]}"
    assert tok.pad_id == golden["pad_token_id"]
    assert {t: tok.token_to_id(t) for t, _ in QWEN3_ADDED_TOKENS} == golden["added_tokens"]


def test_real_vocabulary_ids_equal_the_official_tokenizer(full_tokenizer, tokens):
    """ComfyUI's qwen25 vocab/merges + the Qwen3 added tokens + the appended <|endoftext|> give the official
    ids on every caption prompt, lyric prompt (2048-token truncation included) and raw string of the
    corpus."""
    tok = full_tokenizer
    assert_same_ids(tok, tokens["full"])
    assert tok.pad_id == 151643 and tok.token_to_id("<|im_end|>") == tokens["full"]["eos_token_id"] == 151645
    caption_ids = tokens["full"]["caption_ids"]
    assert all(
        ids[-3:] == [151643, 198, 151643] for ids in caption_ids if len(ids) < 256
    )  # <|eot|> \n <|eot|>
    assert all(ids[-2:] == [151643, 151643] for ids in tokens["full"]["lyric_ids"] if len(ids) < 2048)
    assert (
        max(len(i) for i in caption_ids) == 256 and max(len(i) for i in tokens["full"]["lyric_ids"]) == 2048
    )
    assert all(ids[-1] == 151643 for ids in caption_ids + tokens["full"]["lyric_ids"])  # truncation keeps it


@pytest.mark.parametrize("source", ["tokenizer.json", "vocab.json + merges.txt"])
def test_tiny_tokenizer_ids_equal_the_official_tokenizer(source, tokens):
    if source == "tokenizer.json":
        tok = Qwen3Tokenizer.from_folder(TINY)
    else:
        tok = Qwen3Tokenizer.from_vocab_merges(TINY / "vocab.json", TINY / "merges.txt")
    assert_same_ids(tok, tokens["tiny"])


def test_without_the_appended_eos(qwen25_files, full_tokenizer):
    plain = Qwen3Tokenizer.from_vocab_merges(*qwen25_files, append_eos=False)
    assert plain.encode("Hello world<|endoftext|>", 256) == [9707, 1879, 151643]
    assert full_tokenizer.encode("", 256) == [151643]


@pytest.mark.parametrize("vocab", ["full", "tiny"])
def test_batches_are_padded_and_non_cover_prompts_cropped_as_official(vocab, tokens, full_tokenizer):
    g = tokens[vocab]
    tok = full_tokenizer if vocab == "full" else Qwen3Tokenizer.from_folder(TINY)
    captions = [item_prompts(it)[0] for it in g["crop_items"]]
    ids, mask = tok.batch(captions, prompts.CAPTION_MAX_LENGTH)
    assert ids.tolist() == g["crop_caption_ids"] and mask.dtype == torch.bool
    non_cover = [
        prompts.caption_prompt(
            it["caption"], prompts.metas_text(it["metas"]), prompts.DEFAULT_DIT_INSTRUCTION
        )
        for it in g["crop_items"]
    ]
    nc_ids, nc_mask = tok.batch(non_cover, prompts.CAPTION_MAX_LENGTH, pad_to=ids.shape[1])
    assert nc_ids.tolist() == g["crop_non_cover_ids"] and nc_mask.tolist() == g["crop_non_cover_mask"]
    if (
        vocab == "full"
    ):  # "Fill the audio semantic mask" is one token longer: its appended <|endoftext|> is cut
        assert nc_ids[1, -1].item() == 198 and nc_mask[1].all()
    ids, mask = tok.batch([item_prompts(it)[1] for it in g["items"]], prompts.LYRIC_MAX_LENGTH)
    assert list(ids.shape) == [len(g["items"]), g["batch_lengths"][1]]
    for row, m, item in zip(ids.tolist(), mask.tolist(), g["lyric_ids"]):
        assert row == item + [tok.pad_id] * (len(row) - len(item)) and sum(m) == len(item)


# --- Prompt strings -----------------------------------------------------------------------------------------------


def test_prompts_equal_the_official_prompts(tokens):
    g = tokens["full"]
    ours = [item_prompts(it) for it in g["items"]]
    assert [c for c, _ in ours] == g["caption_prompts"]
    assert [ly for _, ly in ours] == g["lyric_prompts"]
    assert [c + "\n\n" + ly for c, ly in ours] == g["text_inputs"]  # the handler's logged text_input
    assert [prompts.is_cover(it["instruction"]) for it in g["items"]] == g["is_covers"]
    # an LM caption in a metas dict does not replace the caption: _prepare_batch parses metas to strings first
    assert any("LM caption" in str(it["metas"]) for it in g["items"])
    assert not any("LM caption" in p for p in g["caption_prompts"])


@pytest.fixture(scope="module")
def official_strings() -> dict:
    return json.loads((FIXTURES / "prompts.json").read_text(encoding="utf-8"))


def test_task_instructions_equal_the_official_ones(official_strings):
    assert prompts.TASK_INSTRUCTIONS == official_strings["task_instructions"]
    assert list(prompts.TRACK_NAMES) == official_strings["track_names"]
    for case in official_strings["instructions"]:
        ours = prompts.task_instruction(case["task"], case.get("track_name"), case.get("track_classes"))
        assert ours == case["out"], case
    for case in official_strings["format_instruction"]:
        assert prompts.format_instruction(case["in"]) == case["out"]


def test_metas_equal_the_official_metas(official_strings):
    for case in official_strings[
        "metas"
    ]:  # generate_music's values through prepare_batch_data and _parse_metas
        duration = prompts.target_duration(case["src_samples"], case["audio_duration"])
        assert (
            prompts.metas_dict(case["bpm"], case["keyscale"], case["timesignature"], duration) == case["dict"]
        )
        assert (
            prompts.metas(case["bpm"], case["keyscale"], case["timesignature"], duration) == case["text"]
        ), case
    for case in official_strings["parse_metas"]:
        assert prompts.metas_text(case["meta"]) == case["text"], case
    assert prompts.metas() == prompts.metas_text(None) == official_strings["default_meta"]
    assert "- duration: 30 seconds\n" in prompts.metas() and "- duration: 59 seconds" in prompts.metas(
        duration=59.99
    )


def test_caption_and_lyric_formats_equal_the_official_ones(official_strings):
    for case in official_strings["caption_from_sft"]:
        assert prompts.caption_from_sft_format(case["in"]) == case["out"], case
    for case in official_strings["format_lyrics"]:
        assert prompts.lyric_prompt(case["lyrics"], case["language"]) == case["out"]
    caption, lyric = prompts.dit_prompts(
        "# Instruction\nx\n\n# Caption\n  pasted \n\n# Metas\n- bpm: 1\n", "", bpm=90, duration=12.7
    )
    assert caption == prompts.SFT_GEN_PROMPT.format(
        prompts.DEFAULT_DIT_INSTRUCTION, "pasted", prompts.metas(90, "", "", 12)
    )
    assert (
        caption.endswith("- duration: 12 seconds\n<|endoftext|>\n")
        and lyric == "# Languages\nen\n\n# Lyric\n<|endoftext|>"
    )


def test_audio_codes_turn_text2music_into_cover():
    cover = prompts.TASK_INSTRUCTIONS["cover"]
    assert prompts.resolve_task("text2music", prompts.DEFAULT_DIT_INSTRUCTION, "<|audio_code_7|>") == (
        "cover",
        cover,
    )
    assert prompts.resolve_task("text2music", "mine", ["", "  "]) == ("text2music", "mine")
    assert prompts.resolve_task("repaint", "mine", "<|audio_code_7|>") == ("repaint", "mine")
    assert prompts.is_cover(cover) and prompts.is_cover("x", has_code_hint=True) and not prompts.is_cover("x")


# --- Encoder ------------------------------------------------------------------------------------------------------


def test_hidden_states_equal_the_official_encoder(tokens, ref):
    """The whole text step on the tiny folder: our prompts and tokenizer give the official id batches, and our
    encoder the official ``infer_text_embeddings`` / ``infer_lyric_embeddings`` outputs."""
    tok, model = Qwen3Tokenizer.from_folder(TINY), load_tiny()
    items = tokens["hidden_batch"]["items"]
    caption_ids, caption_mask = tok.batch([item_prompts(it)[0] for it in items], prompts.CAPTION_MAX_LENGTH)
    lyric_ids, lyric_mask = tok.batch([item_prompts(it)[1] for it in items], prompts.LYRIC_MAX_LENGTH)
    assert torch.equal(caption_ids, ref["text_token_idss"]) and torch.equal(
        caption_mask, ref["text_attention_masks"]
    )
    assert torch.equal(lyric_ids, ref["lyric_token_idss"]) and torch.equal(
        lyric_mask, ref["lyric_attention_masks"]
    )
    text, lyric = encode_text(model, caption_ids, lyric_ids)
    assert text.shape == ref["text_hidden_states"].shape == (4, 256, 32)
    # same ops as transformers: measured bitwise equal here, but matmul bits may vary with the CPU's kernels
    assert rel_err(text, ref["text_hidden_states"]) < 1e-5
    assert torch.equal(lyric, ref["lyric_hidden_states"])  # a lookup: bitwise
    with torch.no_grad():
        non_cover = model.encode(ref["non_cover_text_input_ids"])
    assert rel_err(non_cover, ref["non_cover_text_hidden_states"]) < 1e-5


def test_bfloat16_matches_the_official_bfloat16_run(ref):
    """The handler casts the loaded model with ``.to(bfloat16)`` on GPUs, which also rounds transformers'
    rotary frequency buffer: reproduced, so the bfloat16 run matches too (without it the error is ~1e-2)."""
    model = load_tiny(torch.bfloat16)
    with torch.no_grad():
        text = model.encode(ref["text_token_idss"])
        lyric = model.embed(ref["lyric_token_idss"])
    assert text.dtype == torch.bfloat16 and torch.isfinite(text).all()
    assert rel_err(text, ref["text_hidden_states_bf16"]) < 1e-3
    assert torch.equal(lyric, ref["lyric_hidden_states_bf16"])


def test_config_from_shapes_equals_config_json():
    sd = read_safetensors(TINY / "model.safetensors")[0]
    official = Qwen3Config.from_official(read_json(TINY / "config.json"))
    assert Qwen3Config.from_state_dict(sd) == official
    assert (
        official.head_dim * official.num_attention_heads != official.hidden_size
    )  # head_dim read, not derived
    assert Qwen3Config.from_state_dict(sd, {"rope_theta": 1e4}).rope_theta == 1e4
    with pytest.raises(ValueError, match="sliding"):
        Qwen3Config.from_official({**read_json(TINY / "config.json"), "use_sliding_window": True})
    with pytest.raises(ValueError, match="rope scaling"):
        Qwen3Config.from_official({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    v5 = {k: v for k, v in read_json(TINY / "config.json").items() if k not in ("rope_theta", "rope_scaling")}
    assert (
        Qwen3Config.from_official({**v5, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}})
        == official
    )


def test_comfyui_layout_loads(ref):
    """ComfyUI's qwen_0.6b_ace15 file keeps the tensors under ``model.`` (a Qwen3ForCausalLM save, here with a
    tied lm_head): sizes come from the shapes, the keys from ``official_keys``."""
    sd = read_safetensors(TINY / "model.safetensors")[0]
    file = {f"model.{k}": v for k, v in sd.items()} | {"lm_head.weight": sd["embed_tokens.weight"]}
    model = build(Qwen3Model, Qwen3Config.from_state_dict(file), official_keys(file))
    with torch.no_grad():
        assert rel_err(model.encode(ref["text_token_idss"]), ref["text_hidden_states"]) < 1e-5
    plain = build(
        Qwen3Model, Qwen3Config.from_state_dict(sd), {**sd, "lm_head.weight": sd["embed_tokens.weight"]}
    )
    assert "lm_head.weight" not in plain.state_dict()


def test_causal_encoder_ignores_right_padding(ref):
    """No mask, as official: the real tokens of a padded row equal those of the row alone (causal
    attention)."""
    model = load_tiny()
    ids, mask = ref["text_token_idss"], ref["text_attention_masks"]
    n = int(mask[0].sum())
    with torch.no_grad():
        alone = model.encode(ids[:1, :n])
        batched = model.encode(ids)
    assert n < ids.shape[1] and rel_err(batched[0, :n], alone[0]) < 1e-6
