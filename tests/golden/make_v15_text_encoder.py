"""Golden fixtures for the ACE-Step 1.5 text encoder, its tokenizer and prompt formats, produced by the
OFFICIAL ACE-Step 1.5 code (commit 89031b8) with transformers' ``Qwen3Model`` / ``AutoTokenizer``.

    ACESTEP15_REF=/work/ref15/ACE-Step-1.5 COMFYUI_PATH=/work/main/build/comfyui CUDA_VISIBLE_DEVICES="" \
        OMP_NUM_THREADS=1 /work/ref15/venv/bin/python tests/golden/make_v15_text_encoder.py

The Qwen3-Embedding-0.6B tokenizer files are rebuilt offline (no hub): ComfyUI's Qwen2.5 ``vocab.json`` +
``merges.txt`` (the same 151,643-token BPE as Qwen3) through transformers' own converter
(``Qwen2TokenizerFast`` from the two files), then the Qwen3 added tokens in id order (151643-151668) and the
released post-processor (``ByteLevel`` + ``TemplateProcessing "$A <|endoftext|>"``), ``eos_token``
``<|im_end|>``, ``pad_token`` ``<|endoftext|>``, written by ``save_pretrained``. Two such folders:
- FULL (a temporary folder, not committed): the real vocabulary, for the token-id goldens;
- tests/golden/v15/tiny/Qwen3-Embedding-0.6B/: the first TINY_MERGES merges only (vocabulary ids
  0..255+TINY_MERGES, a prefix of Qwen's: id 256+k is merge k), the added tokens right after, with a
  ``Qwen3Model`` of tiny sizes whose every parameter is redrawn (seeded), ``save_pretrained``.
Writes tests/golden/v15/text_encoder/{tokens.json, prompts.json, outputs.safetensors}; README.md beside them
says what each holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REF = os.environ.get("ACESTEP15_REF")
COMFYUI = os.environ.get("COMFYUI_PATH")
if not REF or not COMFYUI:
    sys.exit("make_v15_text_encoder.py: set ACESTEP15_REF (official ACE-Step-1.5 @ 89031b8) and COMFYUI_PATH")
sys.path.insert(0, REF)

import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from acestep.constants import TASK_INSTRUCTIONS, TRACK_NAMES  # noqa: E402
from acestep.handler import AceStepHandler  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import processors  # noqa: E402
from transformers import (  # noqa: E402
    AddedToken,
    AutoModel,
    AutoTokenizer,
    Qwen2TokenizerFast,
    Qwen3Config,
    Qwen3Model,
)

torch.set_float32_matmul_precision("highest")
torch.set_num_threads(1)

HERE = Path(__file__).resolve().parent
TINY_DIR = HERE / "v15" / "tiny" / "Qwen3-Embedding-0.6B"
OUT_DIR = HERE / "v15" / "text_encoder"
QWEN25 = Path(COMFYUI) / "comfy" / "text_encoders" / "qwen25_tokenizer"
SEED = 1515
TINY_MERGES = 2000

# Qwen3's added tokens after the BPE vocabulary, in id order, with their "special" flag (Qwen3
# tokenizer_config).
SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
NOT_SPECIAL = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]

# Qwen3-Embedding-0.6B sizes scaled down (head_dim != hidden / heads, GQA 2:1, the release's theta and eps).
TINY_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rms_norm_eps=1e-6,
    rope_theta=1000000,
    max_position_embeddings=32768,
    attention_bias=False,
    hidden_act="silu",
    tie_word_embeddings=True,
    use_sliding_window=False,
    sliding_window=None,
    max_window_layers=3,
)

LONG_LYRICS = "\n".join(
    f"[verse {i}]\nWalking down the river, line number {i}, singing to the moon tonight\n"
    f"我们一起唱歌到天亮 {i}，风吹过山岗\n君の声が聞こえる {i} 夜空の下で"
    for i in range(60)
)
# Captions and lyrics for the token-id goldens: tags, sentences, many scripts, digits, contractions,
# whitespace and Unicode normalisation corner cases, literal special tokens, a caption over 256 tokens and
# lyrics over 2048.
CAPTIONS = [
    "pop, rock, female vocals, guitar, 120 bpm, energetic",
    "Upbeat electronic dance music with heavy bass and bright synth leads",
    "",
    " ",
    "   leading spaces and trailing spaces   ",
    "tabs\tand\nnewlines\r\nmixed\n\n\nblank lines",
    "流行音乐，女声，钢琴，温柔的旋律，适合夜晚聆听",
    "日本のロック、エレキギター、力強いドラム、明るい雰囲気",
    "한국 발라드, 피아노, 감성적인 남성 보컬, 느린 템포",
    "Música latina con guitarra acústica y voz cálida; chanson française mélancolique",
    "Музыка в стиле рок с электрогитарами и хриплым вокалом",
    "موسيقى عربية هادئة مع العود — हिंदी फिल्म संगीत, ढोलक, सितार — เพลงไทย",
    "emoji 🎸🥁🎹 party 🎉🎉 night 👩‍🎤",
    "I'M SURE it's the band's BEST, they'll say we'd've LOVED it",
    "accents: e\u0301 vs é, n\u0303 vs ñ, Å vs A\u030a, ﬁ ligature, ｆｕｌｌｗｉｄｔｈ １２３",
    "zero\u200bwidth, no\u00a0break, ideographic\u3000space, soft\u00adhyphen",
    "numbers 1234567890 3.14159 1/4 4/4 6/8 -12dB +3 44.1kHz 2024-05-01",
    "special tokens <|endoftext|> <|im_start|>user<|im_end|> <think>x</think> <|fim_pad|> literal",
    "code `x = 1` and **markdown** # heading\n- item\n> quote",
    ", ".join(
        ["pop", "rock", "jazz", "lo-fi", "drum and bass", "k-pop", "trap", "metal", "ambient", "folk"] * 12
    ),
]
LYRICS = [
    "[verse]\nWalking down the empty street\nNeon lights beneath my feet\n\n"
    "[chorus]\nOh oh oh, we're alive tonight",
    "",
    "[Instrumental]",
    "[verse]\n夜空中最亮的星\n能否听清\n那仰望的人\n心底的孤独和叹息",
    "[verse]\n君の名前を呼んだ\n夜明けの空に\n[chorus]\nずっと一緒にいたい",
    "[verse]\n사랑해요 오늘 밤\n별빛 아래서\n[bridge]\n영원히 함께",
    "[verse]\nBajo la luna llena\nbailamos sin parar\n[chorus]\n¡Ay, corazón!",
    "[intro]\n\n\n[verse]   trailing   \n\ttabbed line\r\nwindows line<|endoftext|>after",
    LONG_LYRICS,
]
LANGUAGES = ["en", "zh", "ja", "ko", "es", "unknown", "", "fr", "en"]
INSTRUCTIONS = [
    TASK_INSTRUCTIONS["text2music"],
    TASK_INSTRUCTIONS["repaint"],
    TASK_INSTRUCTIONS["cover"],
    "Extract the VOCALS track from the audio",  # no colon: the handler adds one
    "custom instruction: ",  # ends with a space: gets another ':'
]
# Raw strings through the official tokenizer call alone (max_length 256, and 8 for the truncation edge).
RAW = CAPTIONS + LYRICS[:8] + ["a", "\n", "<|endoftext|>", "<|endoftext|><|endoftext|>", "x" * 3000]

# Short cover prompts: with Qwen's vocabulary the non-cover prompt ("Fill the audio semantic mask ...", 11
# tokens) is one token longer than the cover one (10), and the official _pad_sequences pads it to the cover
# batch's length with F.pad: a negative pad crops its last id.
CROP_ITEMS = [
    {
        "caption": "lofi",
        "lyrics": "",
        "language": "en",
        "instruction": TASK_INSTRUCTIONS["cover"],
        "metas": None,
    },
    {
        "caption": "jazz, piano",
        "lyrics": "la",
        "language": "en",
        "instruction": TASK_INSTRUCTIONS["cover"],
        "metas": {"bpm": 80},
    },
]


class RecordingTokenizer:
    """The official tokenizer, keeping the text, arguments and output of each call."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, []

    def __call__(self, *args, **kwargs):
        out = self.tokenizer(*args, **kwargs)
        self.calls.append((args, kwargs, out))
        return out

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


# --- Tokenizer and model folders ----------------------------------------------------------------------------------


def qwen3_embedding_tokenizer(vocab_file: Path, merges_file: Path) -> Qwen2TokenizerFast:
    """The released Qwen3-Embedding tokenizer rebuilt from the BPE files with transformers' converter."""
    tok = Qwen2TokenizerFast(vocab_file=str(vocab_file), merges_file=str(merges_file))  # <|endoftext|> first
    for content in SPECIAL[1:]:
        tok.add_tokens([AddedToken(content, special=True, normalized=False)], special_tokens=True)
    for content in NOT_SPECIAL:
        tok.add_tokens([AddedToken(content, special=False, normalized=False)])
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    tok._tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
            processors.TemplateProcessing(
                single="$A:0 <|endoftext|>:0",
                pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
                special_tokens=[("<|endoftext|>", eos)],
            ),
        ]
    )
    tok.eos_token, tok.pad_token, tok.unk_token = "<|im_end|>", "<|endoftext|>", None
    tok.model_max_length = 131072
    n = len(json.loads(Path(vocab_file).read_text(encoding="utf-8")))
    ids = tok.convert_tokens_to_ids(SPECIAL + NOT_SPECIAL)
    assert ids == list(range(n, n + len(ids))), ids
    return tok


def save_tokenizer(folder: Path, n_merges: int | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = json.loads((QWEN25 / "vocab.json").read_text(encoding="utf-8"))
    merges = (QWEN25 / "merges.txt").read_text(encoding="utf-8").splitlines()
    if n_merges is not None:  # Qwen's ids are merge ranks: the first 256 + n entries are a valid smaller BPE
        vocab = {t: i for t, i in vocab.items() if i < 256 + n_merges}
        merges = merges[: 1 + n_merges]  # "#version: 0.2" + n merges
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
        qwen3_embedding_tokenizer(Path(tmp) / "vocab.json", Path(tmp) / "merges.txt").save_pretrained(folder)


def save_tiny_model(vocab_size: int) -> None:
    """``Qwen3Model(config)`` with every parameter redrawn so that activations stay O(1): norm weights (incl.
    the q/k head norms) N(1, 0.25), embedding N(0, 1), projections N(0, fan_in^-0.5)."""
    torch.manual_seed(SEED)
    config = Qwen3Config(vocab_size=vocab_size, **TINY_CONFIG)
    model = Qwen3Model(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.25)
            elif "embed_tokens" in name:
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, p.shape[1] ** -0.5)
    model.save_pretrained(TINY_DIR, safe_serialization=True)


# --- The official handler -----------------------------------------------------------------------------------------


def official_handler(folder: Path, dtype: torch.dtype = torch.float32, model: bool = True) -> AceStepHandler:
    """A bare official handler holding the text encoder and tokenizer, loaded as ``initialize_service`` loads
    them (``AutoTokenizer.from_pretrained``, ``AutoModel.from_pretrained`` then ``.to(device).to(dtype)``),
    and a zero silence latent so that ``_prepare_batch`` runs without a VAE on silent target audio."""
    h = AceStepHandler()
    h.device, h.dtype = "cpu", dtype
    h.text_tokenizer = RecordingTokenizer(AutoTokenizer.from_pretrained(folder))
    if model:  # (the token goldens need only the tokenizer)
        h.text_encoder = AutoModel.from_pretrained(folder).to("cpu").to(dtype).eval()
    h.silence_latent = torch.zeros(1, 256, 8)
    return h


def prepare_batch(h: AceStepHandler, items: list[dict], audio_cover_strength: float = 1.0) -> dict:
    """Official ``_prepare_batch`` (what ``service_generate`` calls) on silent 1 s targets."""
    n = len(items)
    return h._prepare_batch(
        captions=[it["caption"] for it in items],
        lyrics=[it["lyrics"] for it in items],
        target_wavs=torch.zeros(n, 2, 48000),
        metas=[it["metas"] for it in items],
        vocal_languages=[it["language"] for it in items],
        instructions=[it["instruction"] for it in items],
        audio_cover_strength=audio_cover_strength,
    )


def corpus_items(h: AceStepHandler) -> list[dict]:
    metas = [
        h._build_metadata_dict(120, "C major", "4", 30.0),
        h._build_metadata_dict(None, "", "", None),
        h._build_metadata_dict("95", " A minor ", "3/4", 59.99),
        {"tempo": 90, "key": "D minor", "time_signature": "6", "length": 61.7, "caption": "LM caption"},
        None,
        "- bpm: 70\n- custom metas string\n",
    ]
    return [
        {
            "caption": c,
            "lyrics": LYRICS[i % len(LYRICS)],
            "language": LANGUAGES[i % len(LANGUAGES)],
            "instruction": INSTRUCTIONS[i % len(INSTRUCTIONS)],
            "metas": metas[i % len(metas)],
        }
        for i, c in enumerate(CAPTIONS)
    ]


def token_goldens(folder: Path) -> dict:
    """Official ids for the corpus: each prompt as ``_prepare_batch`` tokenizes it (recorded), the padded
    batch, and the raw strings through the same call."""
    h = official_handler(folder, model=False)
    items = corpus_items(h)
    batch = prepare_batch(h, items)
    calls = h.text_tokenizer.calls
    assert all(
        c[1] == dict(padding="longest", truncation=True, max_length=m, return_tensors="pt")
        for c, m in zip(calls, [256, 2048] * len(items))
    )
    caption_calls, lyric_calls = calls[0::2], calls[1::2]
    h.text_tokenizer.calls = []
    raw = {}
    for max_length in (256, 8):
        raw[str(max_length)] = [
            h.text_tokenizer(
                t, padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
            )
            .input_ids[0]
            .tolist()
            for t in RAW
        ]
    crop = prepare_batch(h, CROP_ITEMS, audio_cover_strength=0.5)
    tok = h.text_tokenizer.tokenizer
    for key, calls_ in (("text", caption_calls), ("lyric", lyric_calls)):  # the batch: items right-padded
        ids, mask = batch[f"{key}_token_idss"], batch[f"{key}_attention_masks"]
        for row, mrow, call in zip(ids.tolist(), mask.tolist(), calls_):
            item = call[2].input_ids[0].tolist()
            assert row == item + [tok.pad_token_id] * (len(row) - len(item))
            assert mrow == [True] * len(item) + [False] * (len(row) - len(item))
    return {
        "items": [{k: v for k, v in it.items()} for it in items],
        "caption_prompts": [c[0][0] for c in caption_calls],
        "lyric_prompts": [c[0][0] for c in lyric_calls],
        "caption_ids": [c[2].input_ids[0].tolist() for c in caption_calls],
        "lyric_ids": [c[2].input_ids[0].tolist() for c in lyric_calls],
        "text_inputs": batch["text_inputs"],
        "batch_lengths": [batch["text_token_idss"].shape[1], batch["lyric_token_idss"].shape[1]],
        "is_covers": batch["is_covers"].tolist(),
        "crop_items": CROP_ITEMS,
        "crop_caption_ids": crop["text_token_idss"].tolist(),
        "crop_non_cover_ids": crop["non_cover_text_input_ids"].tolist(),
        "crop_non_cover_mask": crop["non_cover_text_attention_masks"].tolist(),
        "raw": RAW,
        "raw_ids": raw,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "added_tokens": {t: tok.convert_tokens_to_ids(t) for t in SPECIAL + NOT_SPECIAL},
    }


def hidden_goldens() -> tuple[dict, dict]:
    """Official text/lyric hidden states of the tiny model for one batch (a cover batch, so that the non-cover
    prompts of ``audio_cover_strength < 1`` are built too) and a bfloat16 run."""
    items = [
        {
            "caption": "pop, rock, female vocals, 120 bpm",
            "lyrics": LYRICS[0],
            "language": "en",
            "instruction": TASK_INSTRUCTIONS["cover"],
            "metas": {"bpm": 120, "duration": "30 seconds"},
        },
        {
            "caption": "流行音乐，女声，钢琴 🎹",
            "lyrics": LYRICS[3],
            "language": "zh",
            "instruction": TASK_INSTRUCTIONS["cover"],
            "metas": None,
        },
        {
            "caption": CAPTIONS[-1],
            "lyrics": LYRICS[4],
            "language": "ja",  # over 256 tokens: truncated
            "instruction": TASK_INSTRUCTIONS["cover"],
            "metas": {"bpm": 90, "keyscale": "E minor", "duration": 12},
        },
        {
            "caption": "",
            "lyrics": "",
            "language": "en",
            "instruction": TASK_INSTRUCTIONS["cover"],
            "metas": None,
        },
    ]
    out, meta = {}, {"items": items}
    for dtype, tag in ((torch.float32, ""), (torch.bfloat16, "_bf16")):
        h = official_handler(TINY_DIR, dtype)
        batch = prepare_batch(h, items, audio_cover_strength=0.5)
        with torch.inference_mode():
            out["text_hidden_states" + tag] = h.infer_text_embeddings(batch["text_token_idss"]).clone()
            out["lyric_hidden_states" + tag] = h.infer_lyric_embeddings(batch["lyric_token_idss"]).clone()
            out["non_cover_text_hidden_states" + tag] = h.infer_text_embeddings(
                batch["non_cover_text_input_ids"]
            ).clone()
        if not tag:
            for k in (
                "text_token_idss",
                "text_attention_masks",
                "lyric_token_idss",
                "lyric_attention_masks",
                "non_cover_text_input_ids",
                "non_cover_text_attention_masks",
            ):
                out[k] = batch[k].clone()
            meta["text_inputs"] = batch["text_inputs"]
            meta["is_covers"] = batch["is_covers"].tolist()
            meta["attn_implementation"] = h.text_encoder.config._attn_implementation
    return out, meta


# --- Prompt strings -----------------------------------------------------------------------------------------------


def prompt_goldens() -> dict:
    h = AceStepHandler()
    instr = []
    for task in ["text2music", "repaint", "cover", "extract", "lego", "complete", "unknown_task"]:
        for track in [None, "", "vocals", "Backing_Vocals", "drums"]:
            instr.append(
                {"task": task, "track_name": track, "out": h.generate_instruction(task, track_name=track)}
            )
        for classes in [None, [], ["drums"], ["vocals", "Bass", "backing_vocals"], list(TRACK_NAMES)]:
            out = h.generate_instruction(task, complete_track_classes=classes)
            instr.append({"task": task, "track_classes": classes, "out": out})
    formats = ["", "abc", "abc:", "abc: ", "abc :", TASK_INSTRUCTIONS["extract_default"][:-1]]
    # prepare_batch_data(bpm, key_scale, time_signature, audio_duration, src samples) -> metas dict -> string
    metas_cases = []
    for bpm in [None, 0, 120, "120", ""]:
        for key in ["", " ", "C major", " F# minor "]:
            for ts in ["", "N/A", "4", " 3 "]:
                metas_cases.append((bpm, key, ts, None, None))
    for duration in [None, 0, -1, 30, 59.99, 240.5, "45", 10]:
        metas_cases.append((128, "G major", "4", duration, None))
    for src in [48000 * 12 + 5, 48000 * 7 - 1, 100]:
        metas_cases.append((None, "", "", 99.0, src))
    metas_out = []
    for bpm, key, ts, duration, src in metas_cases:
        src_audio = None if src is None else torch.zeros(2, src)
        _, _, _, _, metas = h.prepare_batch_data(
            1, src_audio, duration, "a caption", "", "en", TASK_INSTRUCTIONS["text2music"], bpm, key, ts
        )
        metas_out.append(
            {
                "bpm": bpm,
                "keyscale": key,
                "timesignature": ts,
                "audio_duration": duration,
                "src_samples": src,
                "dict": metas[0],
                "text": h._parse_metas(metas)[0],
            }
        )
    dicts = [
        {},
        {"tempo": 90, "key": "D minor", "time_signature": "3", "length": 61.7},
        {"duration": "2 minutes"},
        {"duration": None},
        {"duration": True},
        {"scale": "lydian", "bpm": None},
        {"duration": 0.5},
    ]
    parsed = [{"meta": m, "text": h._parse_metas([m])[0]} for m in [None, "custom\n", 5, *dicts]]
    sft = (
        "# Instruction\nFill the mask:\n\n# Caption\n  my pasted caption \n\n"
        "# Metas\n- bpm: 1\n<|endoftext|>\n"
    )
    sft_cases = [
        sft,
        "# Instruction\nx\n# Caption\nno metas here\n",
        "plain caption",
        "# Caption only\nbody",
        "text # Instruction then # Caption\nbody\n  #  Metas\nrest",
    ]
    return {
        "task_instructions": dict(TASK_INSTRUCTIONS),
        "track_names": list(TRACK_NAMES),
        "instructions": instr,
        "format_instruction": [{"in": s, "out": h._format_instruction(s)} for s in formats],
        "metas": metas_out,
        "parse_metas": parsed,
        "default_meta": h._create_default_meta(),
        "caption_from_sft": [{"in": s, "out": h.extract_caption_from_sft_format(s)} for s in sft_cases],
        "format_lyrics": [
            {"lyrics": ly, "language": la, "out": h._format_lyrics(ly, la)}
            for ly, la in [("", "en"), ("[verse]\nla", "zh"), ("x", ""), ("a\n", "unknown")]
        ],
    }


def main() -> None:
    shutil.rmtree(TINY_DIR, ignore_errors=True)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    save_tokenizer(TINY_DIR, TINY_MERGES)
    save_tiny_model(256 + TINY_MERGES + len(SPECIAL) + len(NOT_SPECIAL))

    with tempfile.TemporaryDirectory() as full:
        save_tokenizer(Path(full), None)
        sha = hashlib.sha256((Path(full) / "tokenizer.json").read_bytes()).hexdigest()
        tokens = {
            "full": token_goldens(Path(full)),
            "tiny": token_goldens(TINY_DIR),
            "full_tokenizer_sha256": sha,
        }
    tokens["versions"] = {
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "torch": torch.__version__,
    }
    hidden, meta = hidden_goldens()
    tokens["hidden_batch"] = meta
    with open(OUT_DIR / "tokens.json", "w", encoding="utf-8") as f:
        json.dump(tokens, f, ensure_ascii=False)
    with open(OUT_DIR / "prompts.json", "w", encoding="utf-8") as f:
        json.dump(prompt_goldens(), f, ensure_ascii=False, indent=0)
    save_file({k: v.contiguous() for k, v in hidden.items()}, str(OUT_DIR / "outputs.safetensors"))
    for p in [*OUT_DIR.iterdir(), *TINY_DIR.iterdir()]:
        p.chmod(0o644)
    print(
        f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
        f"torch {torch.__version__}; full tokenizer.json sha256 {sha}; "
        f"attention {meta['attn_implementation']}; hidden {tuple(hidden['text_hidden_states'].shape)}; "
        f"tiny files {sorted(p.name for p in TINY_DIR.iterdir())}"
    )


if __name__ == "__main__":
    main()
