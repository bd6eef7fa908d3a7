"""The sampling nodes in a real ComfyUI: they make what ``python -m acestep_models generate`` makes with the same
settings and seed (the official pipeline), report progress with a preview once per step over the websocket, stop
on Cancel, patch LoRAs as ComfyUI does, and say which input was wrong.

Also, in a plain process with ComfyUI importable (as ComfyUI imports the pack): the LoRA node's patched weights
equal the engine's merged ones, and the "comfy" noise mode is ComfyUI's ``comfy.sample.prepare_noise``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
from e2e.workflow_specs import run_with

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "pop, synth, drums, 120 BPM"
LYRICS = "[verse]\nLights on the river\n[chorus]\nSing it out loud"
TARGET_LYRICS = "[verse]\nLights on the water\n[chorus]\nSing it out loud"
SEED, RETAKE_SEED, STEPS = 7, 11, 4


# --- building blocks -------------------------------------------------------------------------------------------------


def song_nodes(comfy, sampler: dict, latent: dict | None = None, extra: dict | None = None) -> dict:
    """Checkpoint (the official folder) -> prompt -> [latent] -> sampler "5" -> decode -> float WAV "7"."""
    nodes = {
        "1": {"type": "AceStepFaithfulCheckpointLoader", "widgets": {"ckpt_name": comfy.models["official"]}},
        "2": {
            "type": "AceStepFaithfulEncodePrompt",
            "widgets": {"prompt": PROMPT, "lyrics": LYRICS},
            "inputs": {"text_encoder": ["1", "text_encoder"], "lyric_tokenizer": ["1", "lyric_tokenizer"]},
        },
        "3": latent or {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": 1.0}},
        "5": sampler,
        "6": {
            "type": "AceStepFaithfulDecodeLatent",
            "inputs": {"latent": ["5", "latent"], "vae": ["1", "vae"]},
        },
        "7": {
            "type": "AceStepFaithfulSaveAudio",
            "widgets": {"filename_prefix": "e2e/sampler", "format": "wav"},
            "inputs": {"audio": ["6", "audio"]},
        },
        **(extra or {}),
    }
    return nodes


def sampler(widgets: dict | None = None, dit=("1", "dit"), **inputs) -> dict:
    base = {"seed": SEED, "steps": STEPS, "retake_seed": RETAKE_SEED}
    return {
        "type": "AceStepFaithfulSampler",
        "widgets": {**base, **(widgets or {})},
        "inputs": {
            "dit": list(dit),
            "conditioning": ["2", "conditioning"],
            "latent": ["3", "latent"],
            **inputs,
        },
    }


TONE = {
    "10": {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": "tone.wav"}},
    "3": {"type": "AceStepFaithfulEncodeAudio", "inputs": {"audio": ["10", "audio"], "vae": ["1", "vae"]}},
}


def saved(comfy, run, node: str = "7") -> np.ndarray:
    (item,) = run.outputs[node]["audio"]
    audio, rate = soundfile.read(comfy.output / item["subfolder"] / item["filename"], dtype="float32")
    assert rate == 48000
    return audio


# --- the same as the command line ------------------------------------------------------------------------------------


def case(name: str, comfy) -> tuple[dict, dict]:
    """(ComfyUI nodes, the CLI's official parameters) for the same generation."""
    tone = str(comfy.base / "input" / "tone.wav")
    cli = {
        "prompt": PROMPT,
        "lyrics": LYRICS,
        "infer_step": STEPS,
        "manual_seeds": SEED,
        "retake_seeds": RETAKE_SEED,
    }
    if name == "text2music":
        return song_nodes(comfy, sampler()), {**cli, "audio_duration": 1.0}
    if name == "heun_cfg_star":
        knobs = {"guidance_interval": 1.0, "guidance_interval_decay": 0.5, "omega_scale": 5.0}
        official = {"scheduler_type": "heun", "cfg_type": "cfg_star", "use_erg_lyric": False, **knobs}
        widgets = {"scheduler": "heun", "cfg_type": "cfg_star", "use_erg_lyric": False, **knobs}
        return song_nodes(comfy, sampler(widgets)), {**cli, **official, "audio_duration": 1.0}
    if name == "pingpong_text_lyric_oss":
        knobs = {"guidance_scale_text": 5.0, "guidance_scale_lyric": 2.0, "use_erg_diffusion": False}
        widgets = {"scheduler": "pingpong", "oss_steps": "2, 4, 6", **knobs}
        official = {"scheduler_type": "pingpong", "oss_steps": "2, 4, 6", **knobs}
        return song_nodes(comfy, sampler(widgets)), {**cli, **official, "audio_duration": 1.0}
    if name == "retake":
        mask = {
            "4": {
                "type": "AceStepFaithfulMaskFromSeconds",
                "widgets": {"ranges": "0-end"},
                "inputs": {"latent": ["3", "latent"]},
            }
        }
        nodes = song_nodes(comfy, sampler({"retake_variance": 0.2}, mask=["4", "mask"]), extra=mask)
        return nodes, {**cli, "task": "retake", "retake_variance": 0.2, "audio_duration": 1.0}
    if name == "repaint":
        mask = {
            "4": {
                "type": "AceStepFaithfulMaskFromSeconds",
                "widgets": {"ranges": "1-2"},
                "inputs": {"latent": ["3", "latent"]},
            }
        }
        nodes = song_nodes(comfy, sampler(mask=["4", "mask"]), TONE["3"], {**TONE, **mask})
        official = {"task": "repaint", "src_audio_path": tone, "repaint_start": 1.0, "repaint_end": 2.0}
        return nodes, {**cli, **official}
    if name == "extend":
        pad = {
            "4": {
                "type": "AceStepFaithfulExtendLatent",
                "widgets": {"left_seconds": 0.0, "right_seconds": 1.0},
                "inputs": {"latent": ["11", "latent"]},
            },
            "10": TONE["10"],
            "11": {
                "type": "AceStepFaithfulEncodeAudio",
                "inputs": {"audio": ["10", "audio"], "vae": ["1", "vae"]},
            },
        }
        node = sampler({"retake_variance": 1.0}, mask=["4", "mask"])
        node["inputs"]["latent"] = ["4", "latent"]
        nodes = song_nodes(comfy, node, pad["11"], pad)
        del nodes["3"]
        # tone.wav is 33 latent frames: repaint_end 4 s = frame 43, 10 frames more (1 s)
        official = {"task": "extend", "src_audio_path": tone, "repaint_start": 0.0, "repaint_end": 4.0}
        return nodes, {**cli, **official, "retake_variance": 1.0}
    if name == "audio2audio":
        nodes = song_nodes(
            comfy, sampler({"reference_strength": 0.6}, reference=["3", "latent"]), TONE["3"], TONE
        )
        official = {"audio2audio_enable": True, "ref_audio_input": tone, "ref_audio_strength": 0.6}
        return nodes, {**cli, **official}
    if name == "edit":
        target = {
            "type": "AceStepFaithfulEncodePrompt",
            "widgets": {"prompt": PROMPT + ", piano", "lyrics": TARGET_LYRICS},
            "inputs": {"text_encoder": ["1", "text_encoder"], "lyric_tokenizer": ["1", "lyric_tokenizer"]},
        }
        node = {
            "type": "AceStepFaithfulFlowEdit",
            "widgets": {"seed": RETAKE_SEED, "steps": 5, "n_min": 0.2, "n_max": 0.8, "n_avg": 2},
            "inputs": {
                "dit": ["1", "dit"],
                "conditioning": ["2", "conditioning"],
                "target_conditioning": ["4", "conditioning"],
                "latent": ["3", "latent"],
            },
        }
        nodes = song_nodes(comfy, node, TONE["3"], {**TONE, "4": target})
        official = {
            "task": "edit",
            "src_audio_path": tone,
            "infer_step": 5,
            "edit_target_prompt": PROMPT + ", piano",
            "edit_target_lyrics": TARGET_LYRICS,
            "edit_n_min": 0.2,
            "edit_n_max": 0.8,
            "edit_n_avg": 2,
        }
        return nodes, {**cli, **official}
    if name == "fp8_dit":  # the low-memory mode: the DiT's matrices stored in float8
        nodes = song_nodes(comfy, sampler())
        nodes["1"]["widgets"]["weight_dtype"] = "fp8_e4m3fn"
        return nodes, {**cli, "audio_duration": 1.0}
    if name == "lora":
        lora = {
            "type": "AceStepFaithfulLoraLoader",
            "widgets": {"lora_name": lora_option(comfy), "strength": 0.7},
            "inputs": {"dit": ["1", "dit"]},
        }
        nodes = song_nodes(comfy, sampler(dit=("4", "dit")), extra={"4": lora})
        folder = str((comfy.base / "models" / comfy.models["lora"]).parent)
        return nodes, {**cli, "audio_duration": 1.0, "lora_name_or_path": folder, "lora_weight": 0.7}
    raise AssertionError(name)


def lora_option(comfy) -> str:
    return comfy.models["lora"].removeprefix("loras/")


@pytest.fixture(scope="module")
def cli_songs(comfy, lyric_vocab, tmp_path_factory) -> dict[str, np.ndarray]:
    """Every case through the command line: ``python -m acestep_models generate --params ... --out ...`` with the
    same checkpoint (the official folder ComfyUI has), all in one Python process (``acestep_models.__main__.main``
    once per case) to save an interpreter start per case."""
    folder = tmp_path_factory.mktemp("cli")
    checkpoint = comfy.base / "models" / comfy.models["official"]
    argvs = []
    for name in CASES:
        params = folder / f"{name}.json"
        params.write_text(json.dumps(case(name, comfy)[1]))
        argvs.append(
            [
                "generate",
                "--checkpoint",
                str(checkpoint),
                "--vocab",
                str(lyric_vocab),
                "--params",
                str(params),
                "--out",
                str(folder / f"{name}.wav"),
                *CLI_FLAGS.get(name, []),
            ]
        )
    (folder / "argvs.json").write_text(json.dumps(argvs))
    driver = "import json, sys; from acestep_models.__main__ import main; "
    driver += "sys.exit(max([main(a) for a in json.load(open(sys.argv[1]))]))"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))  # as the server runs
    run = subprocess.run(
        [sys.executable, "-c", driver, str(folder / "argvs.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    songs = {}
    for name in CASES:
        audio, rate = soundfile.read(folder / f"{name}.wav", dtype="float32")
        assert rate == 48000
        songs[name] = audio
    return songs


CLI_FLAGS = {"fp8_dit": ["--dit-weight-dtype", "fp8_e4m3fn"]}
CASES = [
    "text2music",
    "heun_cfg_star",
    "pingpong_text_lyric_oss",
    "retake",
    "repaint",
    "extend",
    "audio2audio",
    "edit",
    "lora",
    "fp8_dit",
]


@pytest.mark.parametrize("name", CASES)
def test_the_nodes_make_what_the_command_line_makes(comfy, frontend, cli_songs, name):
    run = frontend.run(frontend.build(case(name, comfy)[0]))
    assert run.ok, run
    ours, cli = saved(comfy, run), cli_songs[name]
    assert ours.shape == cli.shape
    assert np.isfinite(ours).all() and np.abs(ours).max() > 1e-3
    diff = float(np.abs(ours - cli).max())
    print(f"{name}: max |node - CLI| = {diff:.3g} (peak {np.abs(cli).max():.3g})")
    assert diff <= 1e-6 * max(1.0, float(np.abs(cli).max())), diff


# --- progress, preview, cancel -----------------------------------------------------------------------------------------

LISTEN_JS = """() => {
  window.__acestep_events = [];
  for (const type of ["progress", "b_preview", "b_preview_with_metadata", "execution_interrupted"]) {
    app.api.addEventListener(type, (e) => window.__acestep_events.push(
      {type, detail: type.startsWith("b_") ? (e.detail?.nodeId ?? null) : e.detail}));
  }
}"""


def events(frontend, prompt_id: str | None = None) -> list[dict]:
    out = frontend.page.evaluate("() => window.__acestep_events")
    return [
        e
        for e in out
        if prompt_id is None
        or not isinstance(e["detail"], dict)
        or e["detail"].get("prompt_id") in (None, prompt_id)
    ]


def test_progress_and_a_preview_once_per_step(comfy, frontend):
    frontend.page.evaluate(LISTEN_JS)
    steps = 6
    nodes = song_nodes(comfy, sampler({"steps": steps, "seed": 123}))
    run = frontend.run(frontend.build(nodes))
    assert run.ok, run
    prompt_id = run.response["prompt_id"]
    frontend.page.wait_for_function(
        "(n) => window.__acestep_events.filter((e) => e.type.startsWith('b_preview')).length >= n", arg=steps
    )
    seen = events(frontend, prompt_id)
    progress = [e["detail"] for e in seen if e["type"] == "progress" and e["detail"]["node"] == "5"]
    assert [(p["value"], p["max"]) for p in progress] == [(i, steps) for i in range(1, steps + 1)]
    # one preview image per step (the frontend asks for the previews with metadata)
    previews = [e for e in seen if e["type"] == "b_preview_with_metadata"] or [
        e for e in seen if e["type"] == "b_preview"
    ]
    assert len(previews) == steps, [e["type"] for e in seen]


def test_cancel_stops_the_sampler_and_the_server_goes_on(comfy, frontend):
    frontend.page.evaluate(LISTEN_JS)
    steps = 400  # minutes of work: it must stop early
    nodes = song_nodes(comfy, sampler({"steps": steps, "seed": 5}))
    workflow = frontend.build(nodes)
    run = run_with(frontend, workflow, wait=False)
    assert run.status == 200, run
    prompt_id = run.response["prompt_id"]
    end = time.monotonic() + 120
    while not any(
        e["type"] == "progress" and e["detail"]["node"] == "5" for e in events(frontend, prompt_id)
    ):
        assert time.monotonic() < end, comfy.tail()
        time.sleep(0.2)
    request = urllib.request.Request(comfy.url + "/interrupt", b"{}", {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:  # as the Cancel button
        assert answer.status == 200
    history = comfy.wait(prompt_id)
    kinds = [kind for kind, _ in history["status"]["messages"]]
    assert "execution_interrupted" in kinds, kinds
    done = max(e["detail"]["value"] for e in events(frontend, prompt_id) if e["type"] == "progress")
    assert done < steps
    # the next prompt runs
    again = frontend.run(frontend.build(song_nodes(comfy, sampler({"seed": 6}))))
    assert again.ok, again


def test_noise_modes_on_a_batch(comfy, frontend):
    """Both noise modes run a batch; "official" seeds item i with seed + i, "comfy" draws the batch from one
    generator (ComfyUI's batch noise; exact noise checked in test_comfy_noise_is_comfyuis_prepare_noise), so the
    second songs differ. (The first ones do not match either: the official Euler step's omega shift takes one mean
    over the whole batch, so batch items move together.)"""
    songs = {}
    for mode in ("official", "comfy"):
        nodes = song_nodes(comfy, sampler({"noise_mode": mode}))
        nodes["3"]["widgets"]["batch_size"] = 2
        run = frontend.run(frontend.build(nodes))
        assert run.ok, run
        items = run.outputs["7"]["audio"]
        assert len(items) == 2
        songs[mode] = [soundfile.read(comfy.output / i["subfolder"] / i["filename"])[0] for i in items]
    for first, second in songs.values():
        assert np.isfinite(first).all() and np.isfinite(second).all() and not np.array_equal(first, second)
    assert not np.array_equal(songs["official"][1], songs["comfy"][1])


# --- errors that name the node, the input and the value --------------------------------------------------------------


def error_case(name: str, comfy) -> tuple[dict, str, tuple[str, ...]]:
    """(nodes, failing node type, words the message must hold)"""
    other = {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": 3.0}}
    mask = {
        "type": "AceStepFaithfulMaskFromSeconds",
        "widgets": {"ranges": "1-2"},
        "inputs": {"latent": ["4", "latent"]},
    }
    if name == "mask_longer_than_latent":
        nodes = song_nodes(comfy, sampler(mask=["8", "mask"]), extra={"4": other, "8": mask})
        return nodes, "AceStepFaithfulSampler", ("'mask'", "longer than the latent", "32 frames", "10")
    if name == "mask_and_reference":
        both = {"8": {**mask, "widgets": {"ranges": "0-0.5"}, "inputs": {"latent": ["3", "latent"]}}}
        nodes = song_nodes(comfy, sampler(mask=["8", "mask"], reference=["3", "latent"]), extra=both)
        return nodes, "AceStepFaithfulSampler", ("'reference'", "both a mask and a reference")
    if name == "reference_strength":
        nodes = song_nodes(comfy, sampler({"steps": 1, "reference_strength": 0.5}, reference=["3", "latent"]))
        return nodes, "AceStepFaithfulSampler", ("'reference_strength'", "0.5", "no sampling step")
    if name == "oss_steps":
        nodes = song_nodes(comfy, sampler({"oss_steps": "10, twenty"}))
        return nodes, "AceStepFaithfulSampler", ("'oss_steps'", "10, twenty", "comma")
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name", ["mask_longer_than_latent", "mask_and_reference", "reference_strength", "oss_steps"]
)
def test_mistakes_name_the_node_input_and_value(comfy, frontend, name):
    nodes, node_type, words = error_case(name, comfy)
    run = frontend.run(frontend.build(nodes))
    error = run.error()
    assert error["node_type"] == node_type
    message = error["exception_message"]
    assert message.startswith("ACE-Step "), message
    for word in words:
        assert word in message, message
    again = frontend.run(frontend.build(song_nodes(comfy, sampler({"steps": 1}))))
    assert again.ok, again


# --- in a process that imports ComfyUI, as ComfyUI imports the pack ------------------------------------------------------


def comfyui_root() -> Path:
    return Path(os.environ.get("COMFYUI_PATH") or ROOT / "build" / "comfyui")


def in_comfyui(tmp_path: Path, code: str) -> dict:
    """Run ``code`` with ComfyUI (build/comfyui, CPU) importable and this repository as the package ``acestep_pack``
    (as ComfyUI loads it from custom_nodes/); returns the JSON it prints last."""
    (tmp_path / "acestep_pack").symlink_to(ROOT, target_is_directory=True)
    prelude = f"""
        import json, sys
        sys.path[:0] = [{str(comfyui_root())!r}, {str(tmp_path)!r}]
        from comfy.cli_args import args
        args.cpu = True
        import torch, folder_paths, comfy.model_management
        import acestep_pack
    """
    script = textwrap.dedent(prelude) + textwrap.dedent(code)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [os.environ.get("COMFYUI_PYTHON", sys.executable), "-c", script],  # the ComfyUI's interpreter
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_lora_patches_equal_the_engines_merge(tmp_path):
    """ComfyUI's patched weights (ModelPatcher.clone + add_patches, merged when the model loads) equal
    acestep_models.v1.lora.apply_lora's; strength 0 leaves the DiT as it was; LoRAs stack; the base comes back."""
    golden = ROOT / "tests" / "golden"
    result = in_comfyui(
        tmp_path,
        f"""
        from acestep_pack.acestep_models.v1.checkpoint import load_dit
        from acestep_pack.acestep_models.v1.lora import apply_lora
        from acestep_pack.nodes import loaders, lora
        folder_paths.add_model_folder_path("acestep", {str(golden)!r})
        folder_paths.add_model_folder_path("loras", {str(golden / "lora")!r})
        name = "tiny_lora/pytorch_lora_weights.safetensors"
        assert name in lora.lora_choices()

        dit = loaders.AceStepDiTLoader.execute("acestep/tiny", "fp32").args[0]
        base = {{k: v.clone() for k, v in dit.model.state_dict().items()}}

        def weights(handle):
            return {{k: v.clone() for k, v in handle.load().state_dict().items()}}

        def merged(weight):
            ref = load_dit({str(golden / "tiny")!r}, dtype=torch.float32)
            apply_lora(ref, {str(golden / "lora" / "tiny_lora")!r}, weight)
            return ref.state_dict()

        def max_diff(a, b):
            return max((a[k] - b[k]).abs().max().item() for k in b)

        patched = lora.AceStepLoraLoader.execute(dit, name, 0.7).args[0]
        w07 = weights(patched)
        changed = sum(not torch.equal(w07[k], base[k]) for k in base)
        zero = weights(lora.AceStepLoraLoader.execute(dit, name, 0.0).args[0])
        stacked = weights(lora.AceStepLoraLoader.execute(patched, name, 0.3).args[0])
        back = weights(dit)
        print(json.dumps({{
            "diff_07": max_diff(w07, merged(0.7)),
            "changed": changed,
            "zero_is_base": all(torch.equal(zero[k], base[k]) for k in base),
            "stacked_vs_1": max_diff(stacked, merged(1.0)),
            "base_back": all(torch.equal(back[k], base[k]) for k in base),
            "same_base_module": patched.model is dit.model,
        }}))
    """,
    )
    print(result)
    assert result["changed"] == 179  # every layer of the tiny LoRA
    assert result["diff_07"] <= 1e-6
    assert result["zero_is_base"] and result["base_back"] and result["same_base_module"]
    assert result["stacked_vs_1"] <= 1e-6  # 0.7 then 0.3 = 1.0, to rounding


def core_ace_model(golden: Path, speaker_512: bool = False) -> str:
    """Code (for ``in_comfyui``) building ``patcher``: core's own ACE-Step MODEL in its ModelPatcher, holding the
    tiny checkpoint's DiT (core builds the released sizes: the tiny ones are given to its classes). ``speaker_512``:
    its speaker projection widened with zero columns to the 512 inputs core's KSampler feeds (zeros, as the official
    pipeline does: the same output)."""
    return textwrap.indent(
        textwrap.dedent(f"""
        import functools, comfy.ldm.ace.model, comfy.model_patcher, comfy.supported_models
        from acestep_pack.acestep_models.common.weights import read_json, read_safetensors
        # core's own ACE-Step DiT at the tiny checkpoint's sizes (its lyric encoder's are fixed: given here)
        config = read_json({str(golden / "tiny" / "ace_step_transformer" / "config.json")!r})
        comfy.ldm.ace.model.LyricEncoder = functools.partial(
            comfy.ldm.ace.model.LyricEncoder, output_size=config["lyric_hidden_size"],
            attention_heads=config["lyric_encoder_attention_heads"], linear_units=config["lyric_encoder_linear_units"])
        unet = {{k: v for k, v in config.items() if not k.startswith(("_", "lyric_encoder_"))}}
        unet.update(audio_model="ace", lyric_encoder_vocab_size=config["lyric_encoder_vocab_size"])
        sd, _ = read_safetensors({str(golden / "tiny" / "ace_step_transformer" / "diffusion_pytorch_model.safetensors")!r})
        if {speaker_512}:
            sd["speaker_embedder.weight"] = torch.cat([sd["speaker_embedder.weight"],
                torch.zeros(sd["speaker_embedder.weight"].shape[0], 512 - unet["speaker_embedding_dim"])], 1)
            unet["speaker_embedding_dim"] = 512
        model_config = comfy.supported_models.ACEStep(unet)
        model_config.set_inference_dtype(torch.float32, None)
        core = model_config.get_model({{}})
        core.diffusion_model.load_state_dict(sd)
        cpu = torch.device("cpu")
        patcher = comfy.model_patcher.ModelPatcher(core, load_device=cpu, offload_device=cpu)

    """),
        "        ",
    ).strip()


def core_ace_clip(golden: Path, checkpoint: Path) -> str:
    """Code (for ``in_comfyui``) building ``clip``: core's own ACE-Step CLIP holding the UMT5 of ``checkpoint``
    (ComfyUI's all-in-one layout) and its sentencepiece model, at the tiny checkpoint's sizes."""
    return textwrap.indent(
        textwrap.dedent(f"""
        import comfy.sd, comfy.supported_models_base, comfy.text_encoders.ace as ace, comfy.text_encoders.t5 as t5
        from safetensors.torch import load_file
        from acestep_pack.acestep_models.common.weights import read_json
        # core's own ACE-Step CLIP at the tiny checkpoint's sizes (core reads the released ones from its json)
        tiny = read_json({str(golden / "tiny" / "umt5-base" / "config.json")!r})
        class Tiny(t5.T5):
            def __init__(self, config_dict, dtype, device, operations):
                super().__init__({{**config_dict, **{{k: tiny[k] for k in ("d_ff", "d_kv", "d_model", "num_heads",
                    "num_layers", "vocab_size", "relative_attention_num_buckets")}}}}, dtype, device, operations)
        t5.T5 = Tiny
        file = load_file({str(checkpoint)!r})
        prefix = "text_encoders.umt5base."
        clip = comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(ace.AceT5Tokenizer, ace.AceT5Model),
                             tokenizer_data={{"spiece_model": file[prefix + "spiece_model"]}},
                             model_options={{"dtype": torch.float32}})
        weights = {{k[len(prefix + "transformer.") :]: v for k, v in file.items() if k.startswith(prefix + "transformer.")}}
        assert not clip.cond_stage_model.umt5base.load_sd(weights).missing_keys

    """),
        "        ",
    ).strip()


def test_cores_model_drives_our_sampler_on_the_same_tensors(tmp_path):
    """Core's ACE-Step MODEL (what Load Checkpoint gives for ace_step_v1_3.5b.safetensors) through ACE-Step DiT from
    MODEL: our DiT over core's own tensors (no copy), sampling what our loader's DiT from the same weights samples,
    with core's LoRA patching (our Load LoRA) on either."""
    golden = ROOT / "tests" / "golden"
    result = in_comfyui(
        tmp_path,
        f"""
        from acestep_pack.nodes import conditioning, latents, loaders, lora, sampling
        folder_paths.add_model_folder_path("acestep", {str(golden)!r})
        folder_paths.add_model_folder_path("loras", {str(golden / "lora")!r})

        {core_ace_model(golden)}
        adapted = loaders.AceStepDiTFromModel.execute(patcher).args[0]
        loaded, _, text_encoder, lyric_tokenizer = loaders.AceStepCheckpointLoader.execute("tiny", "fp32").args
        core_tensors = {{id(p) for p in core.diffusion_model.parameters()}}
        shared = all(id(p) in core_tensors for p in adapted.model.parameters())

        cond = conditioning.AceStepEncodePrompt.execute(text_encoder, lyric_tokenizer, "lofi piano", "[verse]\\nla la").args[0]
        latent = {{"samples": torch.zeros(1, 8, 16, 40)}}

        def song(dit):
            return sampling.AceStepSampler.execute(dit, cond, latent, 7, 4, "euler", "apg", 15.0, 10.0, 0.0, 0, 0.5
                                                   ).args[0]["samples"]
        a, b = song(adapted), song(loaded)
        name = "tiny_lora/pytorch_lora_weights.safetensors"
        la = song(lora.AceStepLoraLoader.execute(adapted, name, 0.7).args[0])
        lb = song(lora.AceStepLoraLoader.execute(loaded, name, 0.7).args[0])
        try:  # a MODEL of another model
            loaders.AceStepDiTFromModel.execute(object())
        except Exception as e:
            wrong = str(e)
        rel = lambda x, y: float((x - y).norm() / y.norm())
        print(json.dumps({{"shared": shared, "equal": bool(torch.equal(a, b)), "rel": rel(a, b),
                          "finite": bool(torch.isfinite(a).all()), "lora_rel": rel(la, lb), "lora_moves": rel(la, a),
                          "wrong": wrong}}))
    """,
    )
    assert result["shared"] and result["finite"] and result["equal"], result
    assert result["lora_rel"] < 1e-5 and result["lora_moves"] > 1e-3, result
    assert "DiT from MODEL" in result["wrong"] and "Load Checkpoint" in result["wrong"], result


def test_cores_vae_encodes_and_decodes_for_our_nodes_on_the_same_tensors(tmp_path):
    """Core's ACE-Step VAE (what Load Checkpoint gives for ace_step_v1_3.5b.safetensors) through ACE-Step VAE from
    core VAE: our music DCAE + vocoder over core's own tensors (no copy), encoding and decoding what our loader's VAE
    from the same weights does."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_checkpoints import write_all_in_one

    (tmp_path / "vae").mkdir()
    checkpoint = write_all_in_one(
        tmp_path / "vae" / "ace_step_v1_3.5b.safetensors", parts=("dcae", "vocoder")
    )
    golden = ROOT / "tests" / "golden" / "tiny"
    result = in_comfyui(
        tmp_path,
        f"""
        import comfy.sd, comfy.ldm.ace.vae.music_dcae_pipeline as pipeline
        from safetensors.torch import load_file
        from acestep_pack.acestep_models.common.weights import read_json
        from acestep_pack.nodes import latents, loaders
        folder_paths.add_model_folder_path("vae", {str(tmp_path / "vae")!r})

        # core's own ACE-Step VAE at the tiny checkpoint's sizes (core builds the released ones): from its file
        strip = lambda c: {{k: v for k, v in c.items() if not k.startswith("_")}}
        pipeline.MusicDCAE.__init__.__defaults__ = (None,  # (its config defaults: the released sizes)
            strip(read_json({str(golden / "music_dcae_f8c8" / "config.json")!r})),
            strip(read_json({str(golden / "music_vocoder" / "config.json")!r})))
        sd = {{k[len("vae."):]: v for k, v in load_file({str(checkpoint)!r}).items() if k.startswith("vae.")}}
        core = comfy.sd.VAE(sd=sd)

        adapted = loaders.AceStepVAEFromCore.execute(core).args[0]
        loaded = loaders.AceStepVAELoader.execute("ace_step_v1_3.5b.safetensors", dtype="fp32").args[0]
        shared = {{id(t) for t in [*core.first_stage_model.parameters(), *core.first_stage_model.buffers()]}}
        all_shared = all(id(t) in shared for t in [*adapted.model.parameters(), *adapted.model.buffers()])

        g = torch.Generator().manual_seed(0)
        audio = {{"waveform": 0.3 * torch.randn(1, 2, 48000, generator=g), "sample_rate": 48000}}
        la, lb = (latents.AceStepEncodeAudio.execute(audio, v).args[0]["samples"] for v in (adapted, loaded))
        da, db = (latents.AceStepDecodeLatent.execute({{"samples": lb}}, v).args[0]["waveform"] for v in (adapted, loaded))
        try:  # a VAE of another model
            loaders.AceStepVAEFromCore.execute(object())
        except Exception as e:
            wrong = str(e)
        print(json.dumps({{"shared": all_shared, "encode_equal": bool(torch.equal(la, lb)),
                          "decode_equal": bool(torch.equal(da, db)), "shape": list(da.shape),
                          "loud": float(da.abs().max()), "wrong": wrong}}))
    """,
    )
    assert result["shared"] and result["encode_equal"] and result["decode_equal"], result
    assert result["shape"][:2] == [1, 2] and result["loud"] > 0, result
    assert "VAE from core VAE" in result["wrong"] and "Load Checkpoint" in result["wrong"], result


def test_cores_clip_encodes_for_our_sampler_on_the_same_tensors(tmp_path):
    """Core's ACE-Step CLIP (what Load Checkpoint gives for ace_step_v1_3.5b.safetensors) through ACE-Step Text
    Encoder from core CLIP: our UMT5 over core's own tensors (no copy), with core's sentencepiece model as its
    tokenizer, giving the song our loader's text encoder from the same file gives."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_checkpoints import write_all_in_one

    (tmp_path / "text_encoders").mkdir()
    checkpoint = write_all_in_one(
        tmp_path / "text_encoders" / "ace_step_v1_3.5b.safetensors", parts=("text_encoder",)
    )
    golden = ROOT / "tests" / "golden"
    result = in_comfyui(
        tmp_path,
        f"""
        from acestep_pack.nodes import conditioning, loaders, sampling
        folder_paths.add_model_folder_path("acestep", {str(golden)!r})
        folder_paths.add_model_folder_path("text_encoders", {str(tmp_path / "text_encoders")!r})

        {core_ace_clip(golden, checkpoint)}
        adapted, lyric_tokenizer = loaders.AceStepTextEncoderFromCore.execute(clip).args
        loaded = loaders.AceStepTextEncoderLoader.execute("ace_step_v1_3.5b.safetensors", "fp32").args[0]
        shared = {{id(p) for p in clip.cond_stage_model.parameters()}}
        all_shared = all(id(p) in shared for p in adapted.model.parameters())
        dit = loaders.AceStepDiTLoader.execute("tiny", "fp32").args[0]
        latent = {{"samples": torch.zeros(1, 8, 16, 40)}}

        def song(text_encoder):
            cond = conditioning.AceStepEncodePrompt.execute(text_encoder, lyric_tokenizer, "lofi piano",
                                                            "[verse]\\nla la").args[0]
            return sampling.AceStepSampler.execute(dit, cond, latent, 7, 4, "euler", "apg", 15.0, 10.0, 0.0, 0, 0.5
                                                   ).args[0]["samples"]
        a, b = song(adapted), song(loaded)

        # our conditioning through ACE-Step Conditioning to core, into core's KSampler on core's MODEL, beside core's
        # own Text Encode Ace Step Audio on the same CLIP: the same CONDITIONING, so the same latents
        {core_ace_model(golden, speaker_512=True)}
        import nodes as core_nodes
        from comfy_extras.nodes_ace import TextEncodeAceStepAudio
        # (English lines: core tags every line untagged as English, the official pipeline detects each line's
        # language, which "la la" is not read as)
        lyrics = "[verse]\\nLights on the river tonight"
        ours = conditioning.AceStepEncodePrompt.execute(adapted, lyric_tokenizer, "lofi piano", lyrics).args[0]
        ours = conditioning.AceStepConditioningToCore.execute(ours, 0.8).args[0]
        cores = TextEncodeAceStepAudio.execute(clip, "lofi piano", lyrics, 0.8).args[0]
        rel = lambda x, y: float((x - y).norm() / y.norm())
        same_cond = (ours[0][0].shape == cores[0][0].shape and rel(ours[0][0], cores[0][0]) < 1e-6
                     and ours[0][1]["lyrics_strength"] == cores[0][1]["lyrics_strength"]
                     and torch.equal(ours[0][1]["conditioning_lyrics"], cores[0][1]["conditioning_lyrics"]))

        def ksample(positive):
            negative = core_nodes.ConditioningZeroOut().zero_out(positive)[0]
            return core_nodes.common_ksampler(patcher, 5, 3, 1.0, "euler", "simple", positive, negative,
                                              {{"samples": torch.zeros(1, 8, 16, 40)}})[0]["samples"]
        ka, kb = ksample(ours), ksample(cores)
        try:  # a CLIP of another model
            loaders.AceStepTextEncoderFromCore.execute(comfy.sd.CLIP(no_init=True))
        except Exception as e:
            wrong = str(e)
        print(json.dumps({{"shared": all_shared, "equal": bool(torch.equal(a, b)), "finite": bool(torch.isfinite(a).all()),
                          "same_cond": same_cond, "ksampler_rel": rel(ka, kb),
                          "ksampler_finite": bool(torch.isfinite(ka).all()),
                          "wrong": wrong}}))
    """,
    )
    assert result["shared"] and result["equal"] and result["finite"], result
    # core's UMT5 attention rounds differently from ours (float32: ~1e-7 relative)
    assert result["same_cond"] and result["ksampler_rel"] < 1e-5 and result["ksampler_finite"], result
    assert "Text Encoder from core CLIP" in result["wrong"] and "Load Checkpoint" in result["wrong"], result


def test_comfy_noise_is_comfyuis_prepare_noise(tmp_path):
    result = in_comfyui(
        tmp_path,
        """
        import comfy.sample
        from acestep_pack.acestep_models.common.noise import batch_noise
        from acestep_pack.nodes.sampling import noise_generators

        latent = torch.zeros(3, 8, 16, 21)
        ours = batch_noise(latent.shape, noise_generators("test", "comfy", 1234, 3, torch.device("cpu")), "cpu",
                           torch.float32)
        official = batch_noise(latent.shape, noise_generators("test", "official", 1234, 3, torch.device("cpu")), "cpu",
                               torch.float32)
        one = batch_noise((1, 8, 16, 21), [torch.Generator().manual_seed(1235)], "cpu", torch.float32)
        print(json.dumps({
            "comfy_equal": torch.equal(ours, comfy.sample.prepare_noise(latent, 1234)),
            "official_item_1_is_seed_plus_1": torch.equal(official[1:2], one),
        }))
    """,
    )
    assert result == {"comfy_equal": True, "official_item_1_is_seed_plus_1": True}


def test_a_latent_noise_mask_is_the_mask_when_none_is_connected(comfy):
    """Core's Set Latent Noise Mask on the song's latent repaints what the same mask on the mask input repaints."""

    def song(nodes):
        run = comfy.run(nodes)
        assert run.ok, str(run)
        return saved(comfy, run)

    mask = {
        "4": {
            "type": "AceStepFaithfulMaskFromSeconds",
            "widgets": {"ranges": "1-2"},
            "inputs": {"latent": ["3", "latent"]},
        }
    }
    direct = song_nodes(comfy, sampler(mask=["4", "mask"]), TONE["3"], {**TONE, **mask})
    masked = {
        "8": {"type": "SetLatentNoiseMask", "inputs": {"samples": ["3", "latent"], "mask": ["4", "mask"]}}
    }
    via_latent = song_nodes(comfy, sampler(), TONE["3"], {**TONE, **mask, **masked})
    via_latent["5"]["inputs"]["latent"] = ["8", "LATENT"]
    plain = song_nodes(
        comfy, sampler(), TONE["3"], TONE
    )  # the same song latent without any mask: audio2audio off
    assert np.array_equal(song(direct), song(via_latent))
    assert not np.array_equal(song(direct), song(plain))
