"""Golden fixtures for the ACE-Step 1.5 5 Hz LM and its planner, produced by the OFFICIAL ACE-Step 1.5 code (commit
89031b8): ``LLMHandler`` with its ``pt`` backend on the CPU in float32, and transformers' ``Qwen3ForCausalLM``.

    ACESTEP15_REF=/work/ref15/ACE-Step-1.5 COMFYUI_PATH=/work/main/build/comfyui CUDA_VISIBLE_DEVICES="" \
        OMP_NUM_THREADS=1 /work/ref15/venv/bin/python tests/golden/make_v15_lm.py

The LM tokenizer is rebuilt offline (no hub), as the official ``acestep-5Hz-lm-*`` tokenizer is laid out: ComfyUI's
Qwen2.5 ``vocab.json`` + ``merges.txt`` (Qwen's 151,643-token BPE) through transformers' converter
(``Qwen2TokenizerFast``), the 26 Qwen3 added tokens in id order (151643-151668), then the 65,535
``<|audio_code_N|>`` tokens (N = 0..65534, ids 151669..217203; added, not special, not normalised): 217,204 tokens;
``eos_token`` ``<|im_end|>``, ``pad_token`` ``<|endoftext|>``, and the Qwen3 chat template (optimum-intel 2.2.0's
``COMPLEX_CHAT_TEMPLATES`` Qwen3 entry, copied into ``QWEN3_CHAT_TEMPLATE`` below only to render the official
prompts here). It is written to a temporary folder beside a copy of the tiny LM and read back by the official
``AutoTokenizer.from_pretrained``; it is not committed (tests rebuild it from the same ComfyUI files).

The tiny LM: ``Qwen3ForCausalLM`` with the full 217,204-token vocabulary and hidden size 16 (tied embedding), every
parameter redrawn (seeded) and rounded to float16, saved in float16 to tests/golden/v15/lm/tiny-lm/ (config.json +
model.safetensors, ~7 MB: the embedding is 217,204 x 16 halves). The official handler loads it in float32, as ours.

Writes tests/golden/v15/lm/{logits.safetensors, logits.json, cases.json, generate_music.safetensors}; README.md
beside them says what each holds. With ``--generate-music`` only the official end-to-end cases (``inference.
generate_music`` with this LM and the tiny DiT root of make_v15_pipeline.py, batch mode) are made again: they go
into cases.json's ``generate_music`` entry (the rest of the file is kept as it is) and generate_music.safetensors.
With ``--batch`` only the batch-mode cases of ``generate_with_stop_condition`` (``batch_size`` > 1 and ``seeds``,
the ``BATCH`` table) are made again, into cases.json's ``batch`` entry (the rest of the file is kept as it is).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REF = os.environ.get("ACESTEP15_REF")
COMFYUI = os.environ.get("COMFYUI_PATH")
if not REF or not COMFYUI:
    sys.exit("make_v15_lm.py: set ACESTEP15_REF (official ACE-Step-1.5 @ 89031b8) and COMFYUI_PATH")
sys.path.insert(0, REF)
os.environ.setdefault("ACESTEP_DISABLE_TQDM", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AddedToken, Qwen2TokenizerFast, Qwen3Config, Qwen3ForCausalLM  # noqa: E402

torch.set_float32_matmul_precision("highest")
torch.set_num_threads(1)

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "v15" / "lm"
TINY_DIR = OUT_DIR / "tiny-lm"
QWEN25 = Path(COMFYUI) / "comfy" / "text_encoders" / "qwen25_tokenizer"
SEED = 5150
AUDIO_CODES = 65535
CHAT_TEMPLATE_FILE = os.environ.get("QWEN3_CHAT_TEMPLATE_FILE", "/tmp/qwen3_template.jinja")

SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
NOT_SPECIAL = [
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]  # fmt: skip

TINY_CONFIG = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=8,
    rms_norm_eps=1e-6,
    rope_theta=1000000,
    max_position_embeddings=40960,
    attention_bias=False,
    hidden_act="silu",
    tie_word_embeddings=True,
    use_sliding_window=False,
    sliding_window=None,
    max_window_layers=2,
)

LYRICS = "[verse]\nNeon rivers, midnight trains\nWe sing it loud\n[chorus]\nOh oh, alive tonight"
# generate_with_stop_condition keyword arguments per case (plus the seed given to torch.manual_seed before it)
CASES = {
    "auto_metas_cfg": dict(
        seed=11, caption="pop, upbeat, female vocals, synth", lyrics=LYRICS, infer_type="llm_dit",
        temperature=0.85, cfg_scale=2.0, top_p=0.9, target_duration=10, user_metadata={"duration": 10},
        use_cot_caption=False, use_cot_language=True,
    ),
    "user_metas": dict(
        seed=12, caption="lofi hip hop, mellow piano", lyrics="[Instrumental]", infer_type="llm_dit",
        temperature=0.85, cfg_scale=2.0, top_p=0.9, target_duration=12,
        user_metadata={"bpm": 120, "keyscale": "G major", "timesignature": "4", "duration": 12},
    ),
    "cot_caption": dict(
        seed=13, caption="rock ballad", lyrics=LYRICS, infer_type="llm_dit", temperature=0.85, cfg_scale=2.0,
        top_p=0.9, target_duration=10, user_metadata={"duration": 10}, use_cot_caption=True,
        use_cot_language=True,
    ),
    "greedy_no_cfg": dict(
        seed=14, caption="jazz trio", lyrics="", infer_type="llm_dit", temperature=0.0, cfg_scale=1.0,
        target_duration=10, user_metadata={"bpm": 90, "duration": 10}, use_cot_caption=False,
    ),
    "topk_topp_penalty": dict(
        seed=15, caption="metal, fast drums", lyrics=LYRICS, infer_type="llm_dit", temperature=1.1,
        cfg_scale=1.0, top_k=50, top_p=0.8, repetition_penalty=1.1, target_duration=11.3,
        user_metadata={"keyscale": "F# minor", "duration": 11}, use_cot_caption=False, use_cot_language=False,
    ),
    "negative_prompt_cfg": dict(
        seed=16, caption="ambient drone", lyrics="", infer_type="llm_dit", temperature=0.85, cfg_scale=3.0,
        negative_prompt="noisy, distorted, lo-fi", top_p=0.9, target_duration=12,
        user_metadata={"timesignature": "3", "duration": 12}, use_cot_caption=False,
    ),
    "dit_only": dict(
        seed=17, caption="folk guitar", lyrics=LYRICS, infer_type="dit", temperature=0.85, cfg_scale=2.0,
        top_p=0.9, use_cot_caption=False,
    ),
}  # fmt: skip

# Batch mode of generate_with_stop_condition (batch_size > 1, seeds): the metadata phase once, from the RNG that
# torch.manual_seed(seed) set, then item i's codes phase after the official torch.manual_seed(seeds[i])
BATCH = {
    "two_seeds": dict(
        seed=31, caption="pop, upbeat, female vocals, synth", lyrics=LYRICS, infer_type="llm_dit",
        temperature=0.85, cfg_scale=2.0, top_p=0.9, target_duration=6, user_metadata={"duration": 6},
        use_cot_caption=False, use_cot_language=True, batch_size=2, seeds=[7, 8],
    ),
    # all four metas given (no metadata phase), no CFG; 4 seeds for 3 items: the official code keeps the first 3
    "user_metas_truncated_seeds": dict(
        seed=32, caption="lofi hip hop, mellow piano", lyrics="[Instrumental]", infer_type="llm_dit",
        temperature=0.85, cfg_scale=1.0, top_p=0.9, target_duration=4,
        user_metadata={"bpm": 120, "keyscale": "G major", "timesignature": "4", "duration": 4},
        batch_size=3, seeds=[3, 4, 5, 6],
    ),
}  # fmt: skip

# The official end-to-end inference.generate_music(dit_handler, llm_handler, GenerationParams(**params),
# GenerationConfig(**config)) after random.seed(global_seed); torch.manual_seed(global_seed), in batch mode.
E2E_PARAMS = dict(
    caption="pop, upbeat, female vocals, synth", lyrics=LYRICS, vocal_language="en", duration=10.0,
    use_cot_caption=False, use_cot_language=True,
)  # fmt: skip
GENERATE_MUSIC = {
    # one seed per item: the LM's codes phase of item i after torch.manual_seed(seeds[i])
    "batch_seeds": dict(global_seed=21, params=E2E_PARAMS, config=dict(batch_size=2, use_random_seed=False,
                        seeds=[7, 8])),
    # a single seed: item 1 gets a python-random seed, drawn once for the LM and again for the DiT
    "batch_single_seed": dict(global_seed=22, params=E2E_PARAMS, config=dict(batch_size=2, use_random_seed=False,
                              seeds=[7])),
    # 9 items: LM chunks of 8 + 1 (lm_batch_chunk_size 8), each writing its own metadata; the last one in single
    # mode (not re-seeded); 3 s (15 codes each) to keep it small
    "batch_chunks": dict(global_seed=23, params=dict(E2E_PARAMS, duration=3.0), config=dict(batch_size=9,
                         use_random_seed=False, seeds=list(range(1, 10)))),
}  # fmt: skip


def lm_tokenizer(folder: Path) -> None:
    """The 5 Hz LM tokenizer (see the module docstring), saved to ``folder``."""
    tok = Qwen2TokenizerFast(vocab_file=str(QWEN25 / "vocab.json"), merges_file=str(QWEN25 / "merges.txt"))
    for content in SPECIAL[1:]:
        tok.add_tokens([AddedToken(content, special=True, normalized=False)], special_tokens=True)
    for content in NOT_SPECIAL:
        tok.add_tokens([AddedToken(content, special=False, normalized=False)])
    tok.add_tokens(
        [AddedToken(f"<|audio_code_{i}|>", special=False, normalized=False) for i in range(AUDIO_CODES)]
    )
    tok.eos_token, tok.pad_token, tok.unk_token = "<|im_end|>", "<|endoftext|>", None
    tok.model_max_length = 131072
    tok.chat_template = Path(CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    assert len(tok) == 151669 + AUDIO_CODES, len(tok)
    assert tok.convert_tokens_to_ids("<|audio_code_0|>") == 151669
    tok.save_pretrained(folder)


def save_tiny_lm() -> Qwen3ForCausalLM:
    torch.manual_seed(SEED)
    config = Qwen3Config(vocab_size=151669 + AUDIO_CODES, **TINY_CONFIG)
    model = Qwen3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.25)
            elif "embed_tokens" in name:
                p.normal_(0.0, 0.3)  # logits of O(1): sampling varies
            else:
                p.normal_(0.0, p.shape[1] ** -0.5)
            p.copy_(p.half().float())  # what the float16 file holds
    TINY_DIR.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(TINY_DIR, safe_serialization=True)
    for extra in ("generation_config.json",):
        (TINY_DIR / extra).unlink(missing_ok=True)
    return model.float()


LOGIT_STRIDE = 53  # logits kept at ids 0, 53, 106, ... (4,099 of 217,204) to keep the file small


def logits_goldens(model: Qwen3ForCausalLM, tokenizer) -> None:
    """The official loop's forward calls: a left-padded [cond, uncond] batch (attention mask, no position ids),
    then two one-token steps through the returned cache, and a single unpadded row."""
    from transformers import DynamicCache  # noqa: F401  (the cache type the model returns)

    texts = ["<|im_start|>user\n# Caption\npop rock\n<|im_end|>\n", "<|im_start|>user\nhi<|im_end|>\n"]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    steps = [torch.tensor([[151669 + 7], [151669 + 7]]), torch.tensor([[198], [198]])]
    out = {}
    with torch.inference_mode():
        o = model(input_ids=ids, attention_mask=mask, use_cache=True)
        out["batch_step0"] = o.logits[:, -1].float()
        out["batch_prefill_all"] = o.logits.float()[:, :, ::LOGIT_STRIDE]
        past = o.past_key_values
        for i, s in enumerate(steps):
            mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
            o = model(input_ids=s, attention_mask=mask, past_key_values=past, use_cache=True)
            past = o.past_key_values
            out[f"batch_step{i + 1}"] = o.logits[:, -1].float()
        single = tokenizer(texts[1], return_tensors="pt")["input_ids"]
        o = model(input_ids=single, attention_mask=torch.ones_like(single), use_cache=True)
        out["single_step0"] = o.logits[:, -1].float()
    saved = {
        k: (v[..., ::LOGIT_STRIDE] if k != "batch_prefill_all" else v).contiguous() for k, v in out.items()
    }
    saved.update({f"{k}_argmax": v.argmax(-1) for k, v in out.items() if k != "batch_prefill_all"})
    save_file(saved, str(OUT_DIR / "logits.safetensors"))
    meta = {
        "texts": texts,
        "input_ids": ids.tolist(),
        "attention_mask": batch["attention_mask"].tolist(),
        "steps": [s[:, 0].tolist() for s in steps],
        "single_ids": single.tolist(),
        "stride": LOGIT_STRIDE,
    }
    (OUT_DIR / "logits.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


class Recorder:
    """Wraps the handler's pt-backend steps, keeping each phase's prompts, prompt ids, generated ids and text."""

    def __init__(self, handler):
        self.handler, self.phases = handler, []
        run_single = handler._run_pt_single
        cfg_loop = handler._generate_with_cfg_custom
        plain_loop = handler._generate_with_constrained_decoding
        uncond = handler._build_unconditional_prompt

        def _run_pt_single(**kw):
            self.phases.append({"phase": kw["generation_phase"], "prompt": kw["formatted_prompt"]})
            text = run_single(**kw)
            self.phases[-1]["output_text"] = text
            return text

        def _build_unconditional_prompt(*a, **kw):
            p = uncond(*a, **kw)
            self.phases[-1]["uncond_prompt"] = p
            return p

        def _generate_with_cfg_custom(**kw):
            ids = cfg_loop(**kw)
            n = kw["batch_input_ids"].shape[1]
            self.phases[-1]["prompt_ids"] = kw["batch_input_ids"].tolist()
            self.phases[-1]["generated_ids"] = ids[0, n:].tolist()
            self.phases[-1]["max_new_tokens"] = kw["max_new_tokens"]
            return ids

        def _generate_with_constrained_decoding(**kw):
            ids = plain_loop(**kw)
            n = kw["input_ids"].shape[1]
            self.phases[-1]["prompt_ids"] = kw["input_ids"].tolist()
            self.phases[-1]["generated_ids"] = ids[0, n:].tolist()
            self.phases[-1]["max_new_tokens"] = kw["max_new_tokens"]
            return ids

        handler._run_pt_single = _run_pt_single
        handler._build_unconditional_prompt = _build_unconditional_prompt
        handler._generate_with_cfg_custom = _generate_with_cfg_custom
        handler._generate_with_constrained_decoding = _generate_with_constrained_decoding


def generate_music_goldens(handler, rec: Recorder) -> tuple[dict, dict]:
    """The GENERATE_MUSIC cases through the official ``inference.generate_music`` with ``handler`` (the tiny LM)
    and the turbo handler of make_v15_pipeline.py on its tiny root: (cases, tensors)."""
    import random

    from acestep.inference import GenerationConfig, GenerationParams, generate_music
    from make_v15_pipeline import AUDIO_STRIDE, TINY, make_handler

    dit = make_handler("turbo")
    calls = []
    lm_call = handler.generate_with_stop_condition

    def spy(**kw):
        calls.append({"batch_size": kw.get("batch_size"), "seeds": kw.get("seeds")})
        return lm_call(**kw)

    handler.generate_with_stop_condition = spy
    cases, tensors = {}, {}
    try:
        for name, case in GENERATE_MUSIC.items():
            calls.clear()
            rec.phases = []
            random.seed(case["global_seed"])
            torch.manual_seed(case["global_seed"])
            result = generate_music(
                dit,
                handler,
                GenerationParams(**case["params"]),
                GenerationConfig(**case["config"]),
                save_dir=None,
            )
            assert result.success, result.error
            extra = result.extra_outputs
            audio = torch.stack([a["tensor"] for a in result.audios])
            tensors[f"{name}.audio"] = audio[..., ::AUDIO_STRIDE].contiguous()
            tensors[f"{name}.latents"] = extra["pred_latents"].float().contiguous()
            cases[name] = {
                **case,
                "dit": str(TINY.relative_to(HERE.parent.parent) / "acestep-v15-turbo"),
                "lm_calls": list(calls),
                "lm_metadata": extra["lm_metadata"],
                "audio_codes": [a["params"]["audio_codes"] for a in result.audios],
                "dit_seeds": extra["seed_value"],
                "phases": [
                    {k: ph[k] for k in ("phase", "generated_ids", "output_text") if k in ph}
                    for ph in rec.phases
                ],
                "samples": audio.shape[-1],
                "audio_stride": AUDIO_STRIDE,
            }
            print(name, calls, extra["seed_value"], [len(p.get("generated_ids", [])) for p in rec.phases])
    finally:
        handler.generate_with_stop_condition = lm_call
    return cases, tensors


def official_lm(root: Path):
    """The official ``LLMHandler`` (pt backend, CPU, float32) on ``root/tiny-lm``."""
    from acestep.llm_inference import LLMHandler

    handler = LLMHandler()
    status, ok = handler.initialize(str(root), "tiny-lm", backend="pt", device="cpu", dtype=torch.float32)
    assert ok, status
    return handler


def batch_goldens(handler, rec: Recorder) -> dict:
    """The BATCH cases: ``torch.manual_seed(seed)``, then ``generate_with_stop_condition(**kwargs)`` (batch mode)."""
    cases = {}
    for name, kw in BATCH.items():
        kw = dict(kw)
        seed = kw.pop("seed")
        rec.phases = []
        torch.manual_seed(seed)
        result = handler.generate_with_stop_condition(**kw)
        assert result["success"], result
        cases[name] = {
            "seed": seed,
            "kwargs": kw,
            "phases": rec.phases,
            "metadata": result["metadata"],
            "audio_codes": result["audio_codes"],
            "codes_counts": result["extra_outputs"]["codes_counts"],
        }
        print(name, [len(p.get("generated_ids", [])) for p in rec.phases], result["metadata"], flush=True)
    return cases


def main() -> None:
    if "--batch" in sys.argv:  # only the batch-mode cases, into the committed cases.json's "batch" entry
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(TINY_DIR, Path(tmp) / "tiny-lm")
            lm_tokenizer(Path(tmp) / "tiny-lm")
            handler = official_lm(Path(tmp))
            batch = batch_goldens(handler, Recorder(handler))
        doc = json.loads((OUT_DIR / "cases.json").read_text(encoding="utf-8"))
        doc["batch"] = batch
        (OUT_DIR / "cases.json").write_text(
            json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        return

    if "--generate-music" in sys.argv:  # only the end-to-end cases, into the committed cases.json
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(TINY_DIR, Path(tmp) / "tiny-lm")
            lm_tokenizer(Path(tmp) / "tiny-lm")
            handler = official_lm(Path(tmp))
            e2e, tensors = generate_music_goldens(handler, Recorder(handler))
        doc = json.loads((OUT_DIR / "cases.json").read_text(encoding="utf-8"))
        doc["generate_music"] = e2e
        (OUT_DIR / "cases.json").write_text(
            json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        save_file(tensors, str(OUT_DIR / "generate_music.safetensors"))
        return

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    model = save_tiny_lm()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lm_dir = root / "tiny-lm"
        shutil.copytree(TINY_DIR, lm_dir)
        lm_tokenizer(lm_dir)
        from transformers import AutoTokenizer

        # from the file, as the official handler loads it (float32: the rotary inv_freq is not rounded to float16)
        model = Qwen3ForCausalLM.from_pretrained(lm_dir, torch_dtype=torch.float32).eval()
        logits_goldens(model, AutoTokenizer.from_pretrained(lm_dir, use_fast=True))
        if "--logits-only" in sys.argv:
            return

        handler = official_lm(root)
        max_duration = handler.constrained_processor.max_duration
        rec = Recorder(handler)
        cases = {}
        only = {a for a in sys.argv[1:] if not a.startswith("--")}
        for name, kw in CASES.items():
            if only and name not in only:
                continue
            kw = dict(kw)
            seed = kw.pop("seed")
            rec.phases = []
            torch.manual_seed(seed)
            result = handler.generate_with_stop_condition(**kw)
            assert result["success"], result
            cases[name] = {
                "seed": seed,
                "kwargs": kw,
                "phases": rec.phases,
                "metadata": result["metadata"],
                "audio_codes": result["audio_codes"],
            }
            print(name, [len(p.get("generated_ids", [])) for p in rec.phases], result["metadata"], flush=True)
        e2e, tensors = generate_music_goldens(handler, rec) if not only else ({}, None)
    doc = {"max_duration": max_duration, "cases": cases}
    if e2e:
        doc["generate_music"] = e2e
        save_file(tensors, str(OUT_DIR / "generate_music.safetensors"))
    (OUT_DIR / "cases.json").write_text(
        json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
