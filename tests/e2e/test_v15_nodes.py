"""ACE-Step 1.5's nodes in a real ComfyUI, built and queued through the frontend: each graph makes what
``python -m acestep_models generate`` makes from the same official parameters (the official handler's output, as
the engine's goldens prove), bit for bit; the planner graph what ``generate --lm`` makes. Wrong wiring gets an
error naming the node and the input, and the server keeps serving.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CAPTION = "lofi hip hop, warm piano, vinyl crackle"
LYRICS = "[verse]\nLights on the river\n[chorus]\nSing it out loud"
SEED, GLOBAL_SEED = 42, 7


def graph(comfy, sampler: dict | None = None, ckpt: str = "v15", seconds: float = 2.0, extra: dict | None = None,
          decode: dict | None = None) -> dict:  # fmt: skip
    """Checkpoint "1" -> Encode "2" -> Empty Latent "3" -> Sampler "5" -> Decode "6" -> float WAV "7"."""
    return {
        "1": {"type": "AceStepFaithful15CheckpointLoader", "widgets": {"ckpt_name": comfy.models[ckpt]}},
        "2": {
            "type": "AceStepFaithful15Encode",
            "widgets": {"caption": CAPTION, "lyrics": LYRICS, "bpm": 90, "key_scale": "A minor"},
            "inputs": {"text_encoder": ["1", "text_encoder"]},
        },
        "3": {"type": "AceStepFaithful15EmptyLatent", "widgets": {"seconds": seconds}},
        "5": {
            "type": "AceStepFaithful15Sampler",
            "widgets": {"seed": SEED, "global_seed": GLOBAL_SEED, **(sampler or {}).get("widgets", {})},
            "inputs": {
                "dit": ["1", "dit"],
                "prompt": ["2", "prompt"],
                "latent": ["3", "latent"],
                **(sampler or {}).get("inputs", {}),
            },
        },
        "6": {
            "type": "AceStepFaithful15Decode",
            "widgets": {"normalize": False, **(decode or {})},
            "inputs": {"vae": ["1", "vae"], "latent": ["5", "latent"]},
        },
        "7": {
            "type": "AceStepFaithfulSaveAudio",
            "widgets": {"filename_prefix": "e2e/v15", "format": "wav"},
            "inputs": {"audio": ["6", "audio"]},
        },
        **(extra or {}),
    }


TONE = {"10": {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": "tone.wav"}}}
WITH_SOURCE = {"vae": ["1", "vae"], "source_audio": ["10", "audio"]}


def official(**over) -> dict:
    """The official generate_music parameters of ``graph``'s defaults."""
    return {
        "captions": CAPTION, "lyrics": LYRICS, "bpm": 90, "key_scale": "A minor", "vocal_language": "en",
        "use_random_seed": False, "seed": SEED, "global_seed": GLOBAL_SEED, "audio_duration": 2.0,
        "batch_size": 1, **over,
    }  # fmt: skip


def case(name: str, comfy) -> tuple[dict, dict, list[str]]:
    """(the graph, the command line's parameters, its extra flags) for one generation."""
    tone = str(comfy.base / "input" / "tone.wav")
    root = str(comfy.base / "models" / comfy.models["v15"])
    base = str(comfy.base / "models" / comfy.models["v15_base"])
    if name == "text2music":
        return graph(comfy), official(), ["--checkpoint", root]
    if name == "sde_shift3_batch":
        knobs = {"infer_method": "sde", "shift": 3.0}
        nodes = graph(comfy, {"widgets": {**knobs, "seed_list": "5, 6"}})
        nodes["3"]["widgets"]["batch_size"] = 2
        return nodes, official(**knobs, seed="5, 6", batch_size=2), ["--checkpoint", root]
    if name == "cover_source":
        knobs = {"audio_cover_strength": 0.5, "cover_noise_strength": 0.3}
        nodes = graph(comfy, {"widgets": {"task": "cover", **knobs}, "inputs": WITH_SOURCE}, extra=TONE)
        return nodes, official(task_type="cover", src_audio=tone, **knobs), ["--checkpoint", root]
    if name == "repaint_outpaint":
        knobs = {"repainting_start": 1.0, "repainting_end": 4.0}  # tone.wav is 3 s: 1 s past its end
        nodes = graph(comfy, {"widgets": {"task": "repaint", **knobs}, "inputs": WITH_SOURCE}, extra=TONE)
        return nodes, official(task_type="repaint", src_audio=tone, **knobs), ["--checkpoint", root]
    if (
        name == "repaint_regions"
    ):  # a region typed on Load Audio's waveform, 1 s past the end of tone.wav (3 s)
        nodes = graph(
            comfy, {"widgets": {"task": "repaint"}, "inputs": {**WITH_SOURCE, "regions": ["10", "regions"]}}
        )
        nodes["10"] = {
            "type": "AceStepFaithfulLoadAudio",
            "widgets": {"audio": "tone.wav", "regions": "1.5-end+1"},
        }
        params = official(task_type="repaint", src_audio=tone, repainting_start=1.5, repainting_end=4.0)
        return nodes, params, ["--checkpoint", root]
    if name == "reference_timbre":
        nodes = graph(
            comfy, {"inputs": {"vae": ["1", "vae"], "reference_audio": ["10", "audio"]}}, extra=TONE
        )
        return nodes, official(reference_audio=tone), ["--checkpoint", root]
    if name == "base_apg_lego":
        knobs = {"steps": 4, "guidance_scale": 5.0, "repainting_start": 0.5, "repainting_end": 2.0}
        widgets = {"task": "lego", "track_name": "drums", "cfg_interval_start": 0.2, **knobs}
        nodes = graph(comfy, {"widgets": widgets, "inputs": WITH_SOURCE}, ckpt="v15_base", extra=TONE)
        params = official(
            task_type="lego", src_audio=tone, track_name="drums", cfg_interval_start=0.2,
            inference_steps=4, guidance_scale=5.0, repainting_start=0.5, repainting_end=2.0,
        )  # fmt: skip
        return nodes, params, ["--checkpoint", base]
    if name == "base_adg_complete":
        widgets = {"task": "complete", "complete_tracks": "drums, bass", "use_adg": True, "steps": 3}
        nodes = graph(comfy, {"widgets": widgets, "inputs": WITH_SOURCE}, ckpt="v15_base", extra=TONE)
        params = official(
            task_type="complete", src_audio=tone, complete_track_classes=["drums", "bass"], use_adg=True,
            inference_steps=3,
        )  # fmt: skip
        return nodes, params, ["--checkpoint", base]
    if name in ("lora", "lokr"):  # the official trainers' files at the official scale 0.7, on the DiT file
        nodes = graph(comfy, {"inputs": {"dit": ["4", "dit"]}})
        nodes["0"] = {
            "type": "AceStepFaithful15DiTLoader",
            "widgets": {"dit_name": comfy.models["v15_dit_file"]},
        }
        nodes["4"] = {
            "type": "AceStepFaithful15LoraLoader",
            "widgets": {"lora_name": comfy.option(f"v15_{name}"), "strength": 0.7},
            "inputs": {"dit": ["0", "dit"]},
        }
        file = comfy.base / "models" / comfy.models[f"v15_{name}"]
        adapter = str(file.parent if name == "lora" else file)  # the PEFT folder; the LoKr file
        return nodes, official(lora_path=adapter, lora_scale=0.7), ["--checkpoint", root]
    if name == "planner":
        nodes = graph(comfy, {"inputs": {"audio_codes": ["8", "audio_codes"]}}, decode={"normalize": True})
        nodes["8"] = {
            "type": "AceStepFaithful15Planner",
            "widgets": {"caption": CAPTION, "lyrics": LYRICS, "duration": 10.0, "seed": GLOBAL_SEED},
            "inputs": {"lm": ["9", "lm"]},
        }
        nodes["9"] = {"type": "AceStepFaithful15LMLoader", "widgets": {"lm_name": comfy.models["v15_lm"]}}
        nodes["2"]["widgets"].update(bpm=0, key_scale="auto")  # the plan fills them
        nodes["2"]["inputs"]["plan"] = ["8", "plan"]
        nodes["3"]["inputs"] = {"seconds": ["8", "duration"]}
        params = official(bpm=None, key_scale="", audio_duration=10.0)
        lm = str(comfy.base / "models" / comfy.models["v15_lm"])
        tokenizer = str(comfy.root / "comfy" / "text_encoders" / "qwen25_tokenizer")
        return nodes, params, ["--checkpoint", root, "--lm", lm, "--lm-tokenizer", tokenizer]
    raise AssertionError(name)


CASES = [
    "text2music",
    "sde_shift3_batch",
    "cover_source",
    "repaint_outpaint",
    "repaint_regions",
    "reference_timbre",
    "base_apg_lego",
    "base_adg_complete",
    "lora",
    "lokr",
    "planner",
]


@pytest.fixture(scope="module")
def cli_songs(comfy, tmp_path_factory) -> dict[str, list[np.ndarray]]:
    """Every case through ``python -m acestep_models generate`` in one Python process."""
    folder = tmp_path_factory.mktemp("cli15")
    argvs = []
    for name in CASES:
        _, params, flags = case(name, comfy)
        (folder / f"{name}.json").write_text(json.dumps(params))
        out = str(folder / f"{name}.wav")
        argvs.append(["generate", *flags, "--params", str(folder / f"{name}.json"), "--out", out])
    (folder / "argvs.json").write_text(json.dumps(argvs))
    driver = "import json, sys; from acestep_models.__main__ import main; "
    driver += "sys.exit(max([main(a) for a in json.load(open(sys.argv[1]))]))"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    run = subprocess.run(
        [sys.executable, "-c", driver, str(folder / "argvs.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    songs = {}
    for name in CASES:
        files = sorted(folder.glob(f"{name}*.wav"))
        songs[name] = [soundfile.read(f, dtype="float32")[0] for f in files]
    return songs


def saved(comfy, run, node: str = "7") -> list[np.ndarray]:
    out = []
    for item in run.outputs[node]["audio"]:
        audio, rate = soundfile.read(comfy.output / item["subfolder"] / item["filename"], dtype="float32")
        assert rate == 48000
        out.append(audio)
    return out


@pytest.mark.parametrize("name", CASES)
def test_the_nodes_make_what_the_command_line_makes(comfy, frontend, cli_songs, name):
    run = frontend.run(frontend.build(case(name, comfy)[0]))
    assert run.ok, str(run)
    ours, cli = saved(comfy, run), cli_songs[name]
    assert len(ours) == len(cli) >= 1
    for a, b in zip(ours, cli):
        assert a.shape == b.shape and a.shape[1] == 2
        assert np.isfinite(a).all() and np.abs(a).max() > 1e-3
        if name == "lokr":  # ComfyUI's LoKr adapter builds kron(w1, w2) with the scale folded in first
            assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-5
        else:
            assert np.array_equal(a, b), float(np.abs(a - b).max())


def test_turbo_refuses_the_base_only_tasks_and_the_server_keeps_serving(comfy):
    nodes = graph(comfy, {"widgets": {"task": "extract"}, "inputs": WITH_SOURCE}, extra=TONE)
    run = comfy.run(nodes)
    assert not run.ok
    err = run.error()
    assert err["node_type"] == "AceStepFaithful15Sampler"
    assert "extract needs a base model" in err["exception_message"]
    assert "'task'" in err["exception_message"]
    assert comfy.run(graph(comfy)).ok


def test_a_v1_latent_into_the_15_sampler_is_named(comfy):
    nodes = graph(comfy)
    nodes["3"] = {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": 1.0}}
    run = comfy.run(nodes)
    err = run.error()
    assert err["node_type"] == "AceStepFaithful15Sampler"
    assert "ACE-Step v1 latent" in err["exception_message"] and "'latent'" in err["exception_message"]


def test_comfyuis_repackaged_dit_file_gives_the_official_folders_song(comfy):
    def song(nodes):
        run = comfy.run(nodes)
        assert run.ok, str(run)
        return saved(comfy, run)[0]

    folder = graph(comfy)
    single = graph(comfy)
    single["0"] = {
        "type": "AceStepFaithful15DiTLoader",
        "widgets": {"dit_name": comfy.models["v15_dit_file"]},
    }
    single["5"]["inputs"]["dit"] = ["0", "dit"]
    assert np.array_equal(song(folder), song(single))


def core15_model(tmp_path: Path) -> str:
    """Code (for ``in_comfyui``) writing a tiny 1.5 DiT 64 latent channels wide as ComfyUI's file in
    ``tmp_path/diffusion_models/`` (weights ``sd``, config ``official``) and building ``patcher``: core's own 1.5 MODEL
    holding those weights, in core's ModelPatcher."""
    tiny = ROOT / "tests" / "golden" / "v15" / "pipeline" / "tiny"
    return _code(f"""
        import os, comfy.model_patcher, comfy.supported_models
        from safetensors.torch import save_file
        from acestep_pack.acestep_models.common.weights import CONFIG_METADATA, read_json
        from acestep_pack.acestep_models.v15.model import AceStep15Config, AceStepConditionGenerationModel
        # a tiny DiT 64 latent channels wide (core's built-in silence latent is), saved as ComfyUI's file
        official = {{**read_json({str(tiny / "acestep-v15-turbo" / "config.json")!r}),
                    "audio_acoustic_hidden_dim": 64, "timbre_hidden_dim": 64, "in_channels": 192,
                    # core's tokenizer and detokenizer layers keep the released 16 / 8 heads and 3x MLP
                    "num_attention_heads": 16, "num_key_value_heads": 8, "intermediate_size": 96}}
        torch.manual_seed(0)
        ours = AceStepConditionGenerationModel(AceStep15Config.from_official(official))
        sd = {{k: (1 + 0.1 * torch.randn_like(v) if k.endswith("norm.weight") else 0.2 * torch.randn_like(v))
              for k, v in ours.state_dict().items()}}
        folder = {str(tmp_path / "diffusion_models")!r}
        os.makedirs(folder)
        save_file(sd, folder + "/acestep_v1.5_turbo.safetensors",
                  metadata={{CONFIG_METADATA.format(part="dit"): json.dumps(official)}})
        folder_paths.add_model_folder_path("diffusion_models", folder)

        # core's own 1.5 DiT holding those weights, in core's ModelPatcher
        unet = dict(audio_model="ace1.5", in_channels=192, hidden_size=32, text_hidden_dim=32, timbre_hidden_dim=64,
                    audio_acoustic_hidden_dim=64, num_dit_layers=4, num_lyric_layers=2, num_timbre_layers=2,
                    num_tokenizer_layers=2, num_heads=16, num_kv_heads=8, head_dim=8, intermediate_size=96,
                    fsq_dim=32, encoder_hidden_size=32, encoder_intermediate_size=96, encoder_num_heads=16)
        config = comfy.supported_models.ACEStep15(unet)
        config.set_inference_dtype(torch.float32, None)
        core = config.get_model({{}})
        core.diffusion_model.load_state_dict(sd)
        cpu = torch.device("cpu")
        patcher = comfy.model_patcher.ModelPatcher(core, load_device=cpu, offload_device=cpu)

    """)


def core15_clip(tmp_path: Path) -> str:
    """Code (for ``in_comfyui``) building ``clip``: core's own 1.5 CLIP (what DualCLIPLoader type ace gives) at tiny
    sizes, holding a seeded text encoder (also written as ComfyUI's ``tmp_path/text_encoders/qwen_0.6b_ace15``,
    ``te_file``) and the LM goldens' tiny LM."""
    lm = ROOT / "tests" / "golden" / "v15" / "lm"
    return _code(f"""
        import os, comfy.ops, comfy.sd, comfy.supported_models_base, comfy.text_encoders.ace15 as ace15
        import comfy.text_encoders.llama as llama
        from safetensors.torch import load_file, save_file
        # core's 1.5 CLIP classes at tiny sizes (core's configs fix the released ones; head_dim is not a field)
        def tiny(core, base, **sizes):
            class Config(base):
                head_dim = sizes.pop("head_dim")
            class Tiny(core):
                def __init__(self, config_dict, dtype, device, operations):  # (core's __init__, tiny config)
                    torch.nn.Module.__init__(self)
                    config = Config(**{{**config_dict, **sizes}})
                    self.num_layers = config.num_hidden_layers
                    self.model = llama.Llama2_(config, device=device, dtype=dtype, ops=operations)
                    self.dtype = dtype
            return Tiny
        llama.Qwen3_06B_ACE15 = tiny(llama.Qwen3_06B_ACE15, llama.Qwen3_06B_ACE15_Config, hidden_size=32,
            intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
        llama.Qwen3_2B_ACE15_lm = tiny(llama.Qwen3_2B_ACE15_lm, llama.Qwen3_2B_ACE15_lm_Config, hidden_size=16,
            intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8)

        # the text encoder as ComfyUI's qwen_0.6b_ace15 file (its vocabulary: core's tokenizer), seeded weights
        g = torch.Generator().manual_seed(0)
        shapes = llama.Qwen3_06B_ACE15({{}}, torch.float32, "meta", comfy.ops.manual_cast).state_dict()
        te_sd = {{k: (1 + 0.1 * torch.randn(v.shape, generator=g)) if "norm" in k else 0.3 * torch.randn(v.shape, generator=g)
                 for k, v in shapes.items()}}
        os.makedirs({str(tmp_path / "text_encoders")!r})
        te_file = {str(tmp_path / "text_encoders" / "qwen_0.6b_ace15.safetensors")!r}
        save_file(te_sd, te_file)
        lm_sd = {{k: v.float() for k, v in load_file({str(lm / "tiny-lm" / "model.safetensors")!r}).items()}}

        target = comfy.supported_models_base.ClipTarget(ace15.ACE15Tokenizer, ace15.te(lm_model="qwen3_2b"))
        clip = comfy.sd.CLIP(target, model_options={{"dtype": torch.float32}})
        clip.cond_stage_model.qwen3_06b.load_sd(te_sd)
        clip.cond_stage_model.qwen3_2b.load_sd(lm_sd)

    """)


def _code(block: str) -> str:
    return textwrap.indent(textwrap.dedent(block), "        ").strip()


def with_core15(tmp_path: Path, code: str) -> dict:
    """``in_comfyui(code)`` after core's own 1.5 MODEL (``patcher``) and CLIP (``clip``) are built and taken as ours
    over the same tensors (``dit``, ``te``); skipped on a ComfyUI without ACE-Step 1.5 of its own (0.3.76)."""
    from conftest import comfyui_root
    from e2e.test_sampling_nodes import in_comfyui

    if not (comfyui_root() / "comfy" / "text_encoders" / "ace15.py").is_file():
        pytest.skip("this ComfyUI (0.3.76) has no ACE-Step 1.5 nodes of its own")
    prelude = f"""
        from acestep_pack.nodes.v15 import loaders
        {core15_model(tmp_path)}
        {core15_clip(tmp_path)}
        te = loaders.AceStep15FromCoreCLIP.execute(clip).args[0]
        dit = loaders.AceStep15DiTFromModel.execute(patcher, "turbo").args[0]
    """
    return in_comfyui(tmp_path, prelude + code)


def test_cores_15_model_drives_our_sampler_on_the_same_tensors(tmp_path):
    """Core's 1.5 MODEL (what Load Diffusion Model gives) through ACE-Step 1.5 DiT from MODEL: our DiT over core's
    own tensors (no copy), generating what our loader's DiT from the same file generates, with our Load LoRA on
    either."""
    from conftest import comfyui_root
    from e2e.test_sampling_nodes import in_comfyui

    if not (comfyui_root() / "comfy" / "ldm" / "ace" / "ace_step15.py").is_file():
        pytest.skip("this ComfyUI (0.3.76) has no ACE-Step 1.5 model of its own to adapt")
    tiny = ROOT / "tests" / "golden" / "v15" / "pipeline" / "tiny"
    result = in_comfyui(
        tmp_path,
        f"""
        from acestep_pack.acestep_models.v15 import checkpoint as C
        from acestep_pack.acestep_models.v15.pipeline import Models15, generate
        from acestep_pack.nodes.v15 import loaders

        {core15_model(tmp_path)}
        adapted = loaders.AceStep15DiTFromModel.execute(patcher, "turbo").args[0]
        loaded = loaders.AceStep15DiTLoader.execute("diffusion_models/acestep_v1.5_turbo.safetensors", "auto", "fp32").args[0]
        core_tensors = {{id(p) for p in core.diffusion_model.parameters()}}
        shared = all(id(p) in core_tensors for p in adapted.model.parameters())

        te, tok = C.load_text_encoder({str(tiny / "Qwen3-Embedding-0.6B")!r})
        params = {{"captions": "lofi piano", "lyrics": "[verse]\\nla la", "use_random_seed": False, "seed": 3,
                  "global_seed": 5, "audio_duration": 2.0, "batch_size": 1}}

        def song(handle):
            handle.load()  # (as the Sampler does: ComfyUI patches the weights in as it loads them)
            models = Models15(handle.model, None, te, tok, handle.silence, handle.variant)
            return generate(models, params, decode=False).latents

        a, b = song(adapted), song(loaded)

        # our Load LoRA on core's MODEL patches core's weights through core's patcher, as on our DiT
        from acestep_pack.nodes.v15.lora import AceStep15LoraLoader
        g = torch.Generator().manual_seed(1)
        lora = {{}}
        for i in range(4):
            out, inp = sd[f"decoder.layers.{{i}}.self_attn.q_proj.weight"].shape
            lora[f"base_model.model.layers.{{i}}.self_attn.q_proj.lora_A.weight"] = torch.randn(2, inp, generator=g)
            lora[f"base_model.model.layers.{{i}}.self_attn.q_proj.lora_B.weight"] = 0.3 * torch.randn(out, 2, generator=g)
        os.makedirs({str(tmp_path / "loras")!r})
        save_file(lora, {str(tmp_path / "loras" / "q.safetensors")!r})
        folder_paths.add_model_folder_path("loras", {str(tmp_path / "loras")!r})
        la = song(AceStep15LoraLoader.execute(adapted, "q.safetensors", 0.5).args[0])
        lb = song(AceStep15LoraLoader.execute(loaded, "q.safetensors", 0.5).args[0])
        def rel(x, y):
            return float((x - y).norm() / y.norm())

        print(json.dumps({{"shared": shared, "rel": rel(a, b), "finite": bool(torch.isfinite(a).all()),
                          "silence_equal": bool(torch.equal(adapted.silence, loaded.silence)),
                          "lora_rel": rel(la, lb), "lora_moves": rel(la, a)}}))
        """,
    )
    # equal to float rounding: core's patcher, once it has loaded the MODEL, casts each weight per call
    # (comfy.ops manual_cast), which may pick another matmul path than our loader's plain layers
    assert result["shared"] and result["finite"] and result["silence_equal"], result
    assert result["rel"] < 1e-5 and result["lora_rel"] < 1e-5 and result["lora_moves"] > 1e-3, result


def test_cores_15_clip_gives_our_text_encoder_and_lm_on_the_same_tensors(tmp_path):
    """Core's 1.5 CLIP (what DualCLIPLoader type ace gives for qwen_0.6b_ace15 + qwen_1.7b_ace15) through ACE-Step 1.5
    Text Encoder + LM from core CLIP: our Qwen3-Embedding and 5 Hz LM over core's own tensors (no copy). The song
    equals the one from our loader's text encoder on the same weights, and the LM writes the official plan token
    for token (the LM goldens' tiny LM, held by core)."""
    from conftest import comfyui_root
    from e2e.test_sampling_nodes import in_comfyui

    if not (comfyui_root() / "comfy" / "text_encoders" / "ace15.py").is_file():
        pytest.skip("this ComfyUI (0.3.76) has no ACE-Step 1.5 text encoder of its own to adapt")
    golden = ROOT / "tests" / "golden" / "v15"
    pipeline, lm = golden / "pipeline" / "tiny", golden / "lm"
    result = in_comfyui(
        tmp_path,
        f"""
        import comfy.sd
        from acestep_pack.nodes.v15 import loaders, prompts, sampling

        {core15_clip(tmp_path)}
        te, planner_lm = loaders.AceStep15FromCoreCLIP.execute(clip).args
        try:  # a CLIP of another model
            loaders.AceStep15FromCoreCLIP.execute(comfy.sd.CLIP(no_init=True))
        except Exception as e:
            wrong = str(e)
        core_tensors = {{id(p) for p in clip.cond_stage_model.parameters()}}
        shared = all(id(p) in core_tensors for m in (te.model, planner_lm.model) for p in m.parameters())

        # the song through Encode Prompt and the Sampler: core's text encoder, and our loader's from the same file
        folder_paths.add_model_folder_path("acestep", {str(pipeline)!r})
        folder_paths.add_model_folder_path("text_encoders", {str(tmp_path / "text_encoders")!r})
        dit = loaders.AceStep15DiTLoader.execute("acestep-v15-turbo", "auto", "fp32").args[0]
        loaded = loaders.AceStep15TextEncoderLoader.execute("qwen_0.6b_ace15.safetensors", "fp32").args[0]
        latent = {{"samples": torch.zeros(1, dit.latent_dim, 50), "type": "audio"}}

        def song(text_encoder):
            prompt = prompts.AceStep15Encode.execute(text_encoder, "lofi piano", "[verse]\\nla la", "en", 90,
                                                     "A minor", "auto").args[0]
            return sampling.AceStep15Sampler.execute(dit, prompt, latent, 3, 8, 3.0, 1.0, "ode", "text2music",
                                                     global_seed=5).args[0]["samples"]
        a, b = song(te), song(loaded)

        # the plan: core's LM through ACE-Step 1.5 Plan equals our loader's LM; its planner writes the official plan
        # token for token (the LM goldens)
        folder_paths.add_model_folder_path("acestep", {str(lm)!r})
        def plan(handle):
            return prompts.AceStep15Planner.execute(handle, "jazz trio", "", 0, "auto", "auto", 10.0, 11).args[1:]
        same_plan = plan(planner_lm) == plan(loaders.AceStep15LMLoader.execute("tiny-lm", "fp32").args[0])
        case = json.load(open({str(lm / "cases.json")!r}))["cases"]["auto_metas_cfg"]
        planned = planner_lm.planner().plan(seed=case["seed"], **case["kwargs"])
        print(json.dumps({{"shared": shared, "equal": bool(torch.equal(a, b)), "rel": float((a - b).norm() / b.norm()),
                          "same_plan": same_plan, "codes": planned["audio_codes"] == case["audio_codes"],
                          "metadata": planned["metadata"] == case["metadata"], "wrong": wrong}}))
        """,
    )
    assert result["shared"] and result["same_plan"] and result["codes"] and result["metadata"], result
    assert result["equal"], result
    assert "LM from core CLIP" in result["wrong"] and "DualCLIPLoader" in result["wrong"], result


def test_cores_own_15_prompt_and_encoders_differ_from_ours_where_the_readme_says(tmp_path):
    """Core's own 1.5 text encode and encoders beside ours on the same weights (the README's "How this differs"):
    core's DiT prompt (what its Text Encode Ace Step Audio 1.5 tokenizes) holds the cover instruction, ceil(duration)
    and a second <|endoftext|>, while core's Qwen3 and ours give the same states on the same ids (the model is the
    same, the text is not; core's encode masks the prompt from its first <|endoftext|>, its pad id, on); core's lyric
    encoder equals the
    official one up to 128 lyric tokens and differs past them (no sliding window), and on a padded batch (no
    padding mask)."""
    result = with_core15(
        tmp_path,
        """
        from acestep_pack.acestep_models.v15 import prompts as P

        # the DiT prompt: the text core tokenizes, and both Qwen3s on exactly those ids
        tokens = clip.tokenize("lofi piano", lyrics="[verse]\\nLights on the river", bpm=90, duration=10.2, timesignature=4,
                               language="en", keyscale="A minor", generate_audio_codes=False)
        core_ids = [t[0] for t in tokens["qwen3_06b"][0]]
        core_text = te.tokenizer._tok.decode(core_ids, skip_special_tokens=False)
        model = te.load()
        ours_on_core_text = model(input_ids=torch.tensor([core_ids]))
        core_on_core_text = clip.cond_stage_model.qwen3_06b.transformer(torch.tensor([core_ids]))[0]
        # core's own encode masks its prompt from the first <|endoftext|> (its pad id) on: those states differ
        from comfy_extras.nodes_ace import TextEncodeAceStepAudio15
        cond = TextEncodeAceStepAudio15.execute(clip, "lofi piano", "[verse]\\nLights on the river", 0, 90, 10.2, "4",
                                                "en", "A minor", False, 2.0, 0.85, 0.9, 0, 0.0).args[0][0][0]
        eot = core_ids.index(151643)
        official = P.caption_prompt("lofi piano", P.metas(90, "A minor", "4", 10.2))

        # the lyric encoder: core's and ours over the same tensors
        g = torch.Generator().manual_seed(3)
        def lyric(encoder, x, mask):
            return encoder(inputs_embeds=x, attention_mask=mask)
        rel = lambda a, b: float((a - b).norm() / b.norm())
        core_enc, our_enc = patcher.model.diffusion_model.encoder.lyric_encoder, dit.model.encoder.lyric_encoder
        out = {}
        for n in (100, 300):
            x = torch.randn(1, n, 32, generator=g)
            mask = torch.ones(1, n, dtype=torch.long)
            out[n] = rel(lyric(core_enc, x, mask), lyric(our_enc, x, mask))
        x = torch.randn(2, 60, 32, generator=g)
        mask = torch.ones(2, 60, dtype=torch.long)
        mask[1, 40:] = 0  # the second item's lyrics are shorter: padding
        padded = rel(lyric(core_enc, x, mask)[1, :40], lyric(our_enc, x, mask)[1, :40])
        print(json.dumps({"core_text": core_text, "official": official,
                          "same_states": rel(ours_on_core_text, core_on_core_text),
                          "encode_before_eot": rel(cond[:, :eot], ours_on_core_text[:, :eot]),
                          "encode_from_eot": rel(cond[:, eot:], ours_on_core_text[:, eot:]), "eot_from_end": len(core_ids) - eot,
                          "lyrics_100": out[100], "lyrics_300": out[300], "padded": padded}))
        """,
    )
    core, official = result["core_text"], result["official"]
    assert "Generate audio semantic tokens based on the given conditions:" in core, core
    assert "Fill the audio semantic mask based on the given conditions:" in official, official
    assert "- duration: 11 seconds" in core and "- duration: 10 seconds" in official, (core, official)
    assert core.endswith("<|endoftext|>\n<|endoftext|>") or core.count("<|endoftext|>") == 2, core
    assert result["same_states"] < 1e-5, result
    assert (
        result["encode_before_eot"] < 1e-5
        and result["encode_from_eot"] > 1e-3
        and result["eot_from_end"] == 3
    ), result
    assert result["lyrics_100"] < 1e-5 and result["lyrics_300"] > 1e-3 and result["padded"] > 1e-3, result


def test_a_core_only_15_graph_and_ours_share_the_weights_and_make_different_songs(tmp_path):
    """Core's own 1.5 graph (Text Encode Ace Step Audio 1.5 without the LM, Empty Ace Step 1.5 Latent Audio, KSampler
    at its shift 3, euler, 8 steps) and ours (Encode Prompt and the turbo Sampler) on the very same tensors (DiT from
    MODEL, Text Encoder + LM from core CLIP): each makes a finite song of the same length, and they differ, as the
    README says (prompt text and masks, noise layout, schedule table; the test above names the first two)."""
    result = with_core15(
        tmp_path,
        """
        import nodes as core_nodes
        from comfy_extras.nodes_ace import EmptyAceStep15LatentAudio, TextEncodeAceStepAudio15
        from acestep_pack.nodes.v15 import prompts, sampling

        caption, lyrics = "lofi piano", "[verse]\\nLights on the river"

        cond = TextEncodeAceStepAudio15.execute(clip, caption, lyrics, 0, 90, 6.0, "4", "en", "A minor", False, 2.0,
                                                0.85, 0.9, 0, 0.0).args[0]
        latent = EmptyAceStep15LatentAudio.execute(6.0, 1).args[0]
        negative = core_nodes.ConditioningZeroOut().zero_out(cond)[0]
        core_song = core_nodes.common_ksampler(patcher, 3, 8, 1.0, "euler", "simple", cond, negative, latent)[0]["samples"]

        prompt = prompts.AceStep15Encode.execute(te, caption, lyrics, "en", 90, "A minor", "4").args[0]
        our_song = sampling.AceStep15Sampler.execute(dit, prompt, latent, 3, 8, 3.0, 1.0, "ode", "text2music").args[0]["samples"]
        core_tensors = {id(p) for p in patcher.model.diffusion_model.parameters()}
        print(json.dumps({"shapes": [list(core_song.shape), list(our_song.shape)],
                          "finite": bool(torch.isfinite(core_song).all() and torch.isfinite(our_song).all()),
                          "shared": all(id(p) in core_tensors for p in dit.model.parameters()),
                          "rel": float((core_song.float() - our_song).norm() / our_song.norm())}))
        """,
    )
    assert result["shapes"] == [[1, 64, 150], [1, 64, 150]] and result["finite"] and result["shared"], result
    assert result["rel"] > 1e-2, result


def test_cores_15_vae_decodes_for_our_nodes_on_the_same_tensors(tmp_path):
    """Core's 1.5 VAE (what Load VAE gives for ace_1.5_vae.safetensors) through ACE-Step 1.5 VAE from core VAE: our
    VAE over core's own tensors (no copy), decoding what our loader's VAE from the same file decodes, and what
    core's own decode makes, to float rounding."""
    from conftest import comfyui_root
    from e2e.test_sampling_nodes import in_comfyui

    if not (comfyui_root() / "comfy" / "ldm" / "ace" / "ace_step15.py").is_file():
        pytest.skip("this ComfyUI (0.3.76) has no ACE-Step 1.5 VAE of its own to adapt")
    result = in_comfyui(
        tmp_path,
        f"""
        import os, comfy.sd
        from comfy.ldm.audio.autoencoder import AudioOobleckVAE
        from safetensors.torch import save_file
        from acestep_pack.nodes.v15 import loaders, sampling

        # ACE-Step 1.5's VAE as core builds it (its file's layout, full size, seeded random weights)
        torch.manual_seed(0)
        # (core builds its layers without initialising them: seeded values, each weight-normed row of norm 1)
        g = torch.Generator().manual_seed(0)

        def value(k, v):
            if k.endswith(("weight_g", "original0")):
                return torch.ones_like(v)
            if k.endswith(("alpha", "beta")):  # snake, log scale: 1
                return torch.zeros_like(v)
            return (0.02 if k.endswith("bias") else 1.0) * torch.randn(v.shape, generator=g)

        sd = {{k: value(k, v) for k, v in AudioOobleckVAE(strides=[2, 4, 4, 6, 10]).state_dict().items()}}
        folder = {str(tmp_path / "vae")!r}
        os.makedirs(folder)
        save_file(sd, folder + "/ace_1.5_vae.safetensors")
        folder_paths.add_model_folder_path("vae", folder)
        core = comfy.sd.VAE(sd=sd)

        adapted = loaders.AceStep15VAEFromCore.execute(core).args[0]
        loaded = loaders.AceStep15VAELoader.execute("ace_1.5_vae.safetensors", "fp32").args[0]
        latent = {{"samples": torch.randn(1, 64, 25, generator=torch.Generator().manual_seed(1)), "type": "audio"}}

        def decode(handle):
            return sampling.AceStep15Decode.execute(handle, latent, normalize=False, tiled=False).args[0]["waveform"]

        a, b = decode(adapted), decode(loaded)
        shared = {{id(p) for p in core.first_stage_model.parameters()}}
        weights = [p for n, p in adapted.model.named_parameters() if not n.endswith(("alpha", "beta"))]
        c = core.decode(latent["samples"]).movedim(-1, 1)  # core's own decode, [B, 2, N]
        c = c / c.abs().amax().clamp(min=1.0)  # with the official anti-clipping our decode applies
        print(json.dumps({{"shared": all(id(p) in shared for p in weights), "equal": bool(torch.equal(a, b)),
                          "shape": list(a.shape), "core_rel": float((c - a).norm() / a.norm())}}))
        """,
    )
    assert result["shared"] and result["equal"] and result["shape"] == [1, 2, 25 * 1920], result
    assert result["core_rel"] < 1e-4, result
