"""The pack in a real ComfyUI, used through its web frontend: the nodes register, a workflow runs end to end and
writes a real file, and mistakes come back as errors that name the node and the value while the server goes on.

Slow (a ComfyUI boot and a browser): marked ``slow``, run by ``scripts/test.sh`` and CI all the same.
"""

from __future__ import annotations

import json
import math

import av
import numpy as np
import pytest
import soundfile

pytestmark = pytest.mark.slow

OUR_NODES = {
    "AceStepFaithfulCheckpointLoader",
    "AceStepFaithfulDiTLoader",
    "AceStepFaithfulVAELoader",
    "AceStepFaithfulTextEncoderLoader",
    "AceStepFaithfulLyricTokenizerLoader",
    "AceStepFaithfulSpeakerLoader",
    "AceStepFaithfulEmptyLatent",
    "AceStepFaithfulEncodeAudio",
    "AceStepFaithfulDecodeLatent",
    "AceStepFaithfulMaskFromSeconds",
    "AceStepFaithfulExtendLatent",
    "AceStepFaithfulLoadAudio",
    "AceStepFaithfulSaveAudio",
    "AceStepFaithfulPreviewAudio",
    "AceStepFaithfulLyricsCheck",
    "AceStepFaithfulLoraLoader",
    "AceStepFaithfulDiTFromModel",
    "AceStepFaithfulVAEFromCore",
    "AceStepFaithfulTextEncoderFromCore",
    "AceStepFaithfulConditioningToCore",
    "AceStepFaithfulEncodePrompt",
    "AceStepFaithfulSampler",
    "AceStepFaithfulFlowEdit",
    "AceStepFaithfulGuider",
    "AceStepFaithfulSamplerSelect",
    "AceStepFaithfulScheduler",
    "AceStepFaithfulNoise",
    "AceStepFaithfulAudioToImage",
}
OUR_15_NODES = {
    "AceStepFaithful15CheckpointLoader",
    "AceStepFaithful15DiTLoader",
    "AceStepFaithful15DiTFromModel",
    "AceStepFaithful15VAEFromCore",
    "AceStepFaithful15FromCoreCLIP",
    "AceStepFaithful15VAELoader",
    "AceStepFaithful15TextEncoderLoader",
    "AceStepFaithful15LMLoader",
    "AceStepFaithful15LoraLoader",
    "AceStepFaithful15Planner",
    "AceStepFaithful15Encode",
    "AceStepFaithful15EmptyLatent",
    "AceStepFaithful15Sampler",
    "AceStepFaithful15Decode",
}
OUR_TYPES = {
    "ACESTEP_DIT",
    "ACESTEP_VAE",
    "ACESTEP_TEXT_ENCODER",
    "ACESTEP_LYRIC_TOKENIZER",
    "ACESTEP_SPEAKER",
    "ACESTEP15_DIT",
    "ACESTEP15_VAE",
    "ACESTEP15_TEXT_ENCODER",
    "ACESTEP15_LM",
    "ACESTEP15_PROMPT",
    "ACESTEP15_PLAN",
}


def samples_48k(frames: int) -> int:
    from acestep_models.v1.music_dcae import samples_for_frames

    return samples_for_frames(frames)


def frames_of(seconds_44k: float) -> int:
    """Latent frames the DCAE makes of that much 44.1 kHz audio (padded up to whole frames)."""
    return math.ceil(round(seconds_44k * 44100) / 4096)


# --- registration --------------------------------------------------------------------------------------------------


def test_every_node_is_listed_with_a_valid_schema(comfy):
    info = comfy.get("/object_info")
    ours = {
        k: v
        for k, v in info.items()
        if v.get("python_module", "").endswith("comfyui-acestep")
        and not v.get("deprecated")  # not the old ids
    }
    assert set(ours) == OUR_NODES | OUR_15_NODES
    for name, node in ours.items():
        assert name.startswith("AceStepFaithful"), name
        v15 = name in OUR_15_NODES
        assert node["display_name"].startswith("ACE-Step 1.5 " if v15 else "ACE-Step "), name
        assert node["category"] == ("audio/ACE-Step 1.5" if v15 else "audio/ACE-Step"), name
        assert len(node["description"]) > 20, name
        inputs = {**node["input"].get("required", {}), **node["input"].get("optional", {})}
        for input_name, (kind, options) in inputs.items():
            assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
            assert isinstance(kind, (str, list)), f"{name}.{input_name}"
        assert len(node["output"]) == len(node["output_name"]) == len(node["output_tooltips"]), name
    # Our objects travel on our own socket types; the rest is ComfyUI's standard AUDIO/LATENT/MASK.
    used = {t for n in ours.values() for t in n["output"]}
    assert OUR_TYPES <= used
    assert {"AUDIO", "LATENT", "MASK"} <= used
    assert ours["AceStepFaithfulDiTLoader"]["input"]["required"]["dtype"][1].get("advanced") is True
    assert ours["AceStepFaithfulDiTLoader"]["input"]["required"]["weight_dtype"][1].get("advanced") is True


def test_the_pack_imports_cleanly(comfy):
    log = comfy.log()
    import_lines = [ln for ln in log.splitlines() if "comfyui-acestep" in ln]
    assert import_lines, log
    assert not any("IMPORT FAILED" in ln for ln in import_lines), import_lines
    assert "Cannot import" not in log and "comfy_entrypoint" not in log, comfy.tail()


def test_loaders_list_the_files_in_comfyuis_model_folders(comfy):
    """Names as core's loaders give them (no folder in front), files and the official folders in acestep/."""
    info = comfy.get("/object_info")
    o = comfy.option

    def options(node, input):
        return info[node]["input"]["required"][input][1]["options"]

    assert {o("dit"), o("all_in_one"), o("official")} <= set(options("AceStepFaithfulDiTLoader", "dit_name"))
    assert {o("vae"), o("all_in_one"), o("official")} <= set(options("AceStepFaithfulVAELoader", "vae_name"))
    assert {o("text_encoder"), o("all_in_one"), o("official")} <= set(
        options("AceStepFaithfulTextEncoderLoader", "text_encoder_name")
    )
    checkpoints = options("AceStepFaithfulCheckpointLoader", "ckpt_name")
    assert {o("all_in_one"), o("official")} <= set(checkpoints) and o("dit") not in checkpoints
    assert {o("v15_dit_file"), o("v15_dit_folder")} <= set(options("AceStepFaithful15DiTLoader", "dit_name"))
    assert o("v15_lm") in options("AceStepFaithful15LMLoader", "lm_name")
    assert not any(n.startswith(("checkpoints/", "acestep/")) for n in checkpoints)
    assert "tone.wav" in options("AceStepFaithfulLoadAudio", "audio")


def test_names_saved_with_their_folder_still_load(comfy):
    """Workflows saved before 0.3 name models with their folder in front (``vae/ace_step_vae.safetensors``)."""
    plain, saved = comfy.run(roundtrip(comfy.option("vae"))), comfy.run(roundtrip(comfy.models["vae"]))
    assert plain.ok and saved.ok, (plain, saved)
    assert (
        soundfile.read(saved_file(comfy, plain))[0].shape == soundfile.read(saved_file(comfy, saved))[0].shape
    )


# --- workflows -----------------------------------------------------------------------------------------------------


def roundtrip(vae: str, audio="tone.wav", fmt="wav") -> dict:
    return {
        "1": {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": audio}},
        "2": {"type": "AceStepFaithfulVAELoader", "widgets": {"vae_name": vae}},
        "3": {"type": "AceStepFaithfulEncodeAudio", "inputs": {"audio": ["1", "audio"], "vae": ["2", "vae"]}},
        "4": {
            "type": "AceStepFaithfulDecodeLatent",
            "inputs": {"latent": ["3", "latent"], "vae": ["2", "vae"]},
        },
        "5": {
            "type": "AceStepFaithfulSaveAudio",
            "widgets": {"filename_prefix": "e2e/roundtrip", "format": fmt},
            "inputs": {"audio": ["4", "audio"]},
        },
    }


def saved_file(comfy, run, node="5"):
    (item,) = run.outputs[node]["audio"]
    assert item["type"] == "output"
    return comfy.output / item["subfolder"] / item["filename"]


def test_audio_to_latent_to_audio_writes_a_real_file(comfy, frontend):
    workflow = frontend.build(roundtrip(comfy.models["vae"]))
    assert {n["type"] for n in workflow["nodes"]} >= {"AceStepFaithfulLoadAudio", "AceStepFaithfulSaveAudio"}
    run = frontend.run(workflow)
    assert run.ok, run

    path = saved_file(comfy, run)
    audio, rate = soundfile.read(path, always_2d=True)
    assert rate == 48000 and audio.shape[1] == 2
    assert audio.shape[0] == samples_48k(frames_of(comfy.tone_seconds))  # the whole song, official length
    assert np.isfinite(audio).all()
    assert np.sqrt(np.mean(audio**2)) > 1e-4, "silent output"
    # The prompt and the UI workflow ride along in the file (WAV: one JSON comment), so it can be reloaded.
    with av.open(str(path)) as f:
        meta = json.loads(f.metadata["comment"])
    assert set(meta) >= {"prompt", "workflow"}
    assert {n["type"] for n in json.loads(meta["workflow"])["nodes"]} == {
        n["type"] for n in workflow["nodes"]
    }
    assert json.loads(meta["prompt"])["1"]["inputs"]["audio"] == "tone.wav"
    # The browser got the result and the node's player now plays the saved file.
    frontend.page.wait_for_function(
        "(name) => app.graph.getNodeById(5).widgets.find((w) => w.name === 'audioUI').element.src.includes(name)",
        arg=path.name,
        timeout=20_000,
    )


def test_all_in_one_checkpoint_and_comfyuis_native_latent(comfy, frontend):
    """One checkpoint loader gives every part; ComfyUI's own EmptyAceStepLatentAudio decodes with our VAE, and the
    lyric tokenizer reports each line."""
    nodes = {
        "1": {
            "type": "AceStepFaithfulCheckpointLoader",
            "widgets": {"ckpt_name": comfy.models["all_in_one"]},
        },
        "2": {"type": "EmptyAceStepLatentAudio", "widgets": {"seconds": 1.0, "batch_size": 1}},
        "3": {
            "type": "AceStepFaithfulDecodeLatent",
            "inputs": {"latent": ["2", "LATENT"], "vae": ["1", "vae"]},
        },
        "4": {
            "type": "AceStepFaithfulSaveAudio",
            "widgets": {"format": "flac"},
            "inputs": {"audio": ["3", "audio"]},
        },
        "5": {
            "type": "AceStepFaithfulLyricsCheck",
            "widgets": {"lyrics": "[verse]\nHello world\n你好世界"},
            "inputs": {"lyric_tokenizer": ["1", "lyric_tokenizer"]},
        },
        "6": {"type": "PreviewAny", "inputs": {"source": ["1", "dit"]}},
        "7": {"type": "PreviewAny", "inputs": {"source": ["1", "text_encoder"]}},
        # ComfyUI's own audio nodes and ours exchange AUDIO both ways.
        "8": {"type": "LoadAudio", "widgets": {"audio": "tone.wav"}},
        "9": {"type": "AceStepFaithfulEncodeAudio", "inputs": {"audio": ["8", "AUDIO"], "vae": ["1", "vae"]}},
        "10": {
            "type": "AceStepFaithfulDecodeLatent",
            "inputs": {"latent": ["9", "latent"], "vae": ["1", "vae"]},
        },
        "11": {
            "type": "SaveAudio",
            "widgets": {"filename_prefix": "e2e/core"},
            "inputs": {"audio": ["10", "audio"]},
        },
    }
    run = frontend.run(frontend.build(nodes))
    assert run.ok, run
    audio, rate = soundfile.read(saved_file(comfy, run, "4"), always_2d=True)
    assert (rate, audio.shape) == (48000, (samples_48k(int(44100 / 4096)), 2))
    assert soundfile.info(saved_file(comfy, run, "4")).format == "FLAC"
    (report,) = run.outputs["5"]["text"]
    assert "languages: en, zh" in report and "unknown tokens: 0" in report
    core, rate = soundfile.read(saved_file(comfy, run, "11"), always_2d=True)
    assert (rate, core.shape) == (48000, (samples_48k(frames_of(comfy.tone_seconds)), 2))


def test_every_loader_loads_from_every_layout(comfy, frontend):
    m = comfy.models
    loaders = [  # (node, widgets, output)
        ("AceStepFaithfulDiTLoader", {"dit_name": m["official"]}, "dit"),
        ("AceStepFaithfulDiTLoader", {"dit_name": m["dit"], "dtype": "bf16"}, "dit"),
        ("AceStepFaithfulVAELoader", {"vae_name": m["official"]}, "vae"),
        ("AceStepFaithfulTextEncoderLoader", {"text_encoder_name": m["text_encoder"]}, "text_encoder"),
        ("AceStepFaithfulTextEncoderLoader", {"text_encoder_name": m["official"]}, "text_encoder"),
        ("AceStepFaithfulLyricTokenizerLoader", {}, "lyric_tokenizer"),
        ("AceStepFaithfulSpeakerLoader", {}, "speaker"),
    ]
    nodes = {}
    for i, (node, widgets, out) in enumerate(loaders, 1):
        nodes[str(i)] = {"type": node, "widgets": widgets}
        nodes[str(100 + i)] = {"type": "PreviewAny", "inputs": {"source": [str(i), out]}}
    run = frontend.run(frontend.build(nodes))
    assert run.ok, run


def test_latents_masks_and_extension(comfy, frontend):
    """Masks come out on the latent grid ([1, 16, frames]) and go through ComfyUI's own mask nodes: saved as
    images here (16 x frames pixels) to check their values."""
    nodes = {
        "1": {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": 10.0}},
        "2": {
            "type": "AceStepFaithfulMaskFromSeconds",
            "widgets": {"ranges": "2-4, 8-end", "soft_edge": 0.5},
            "inputs": {"latent": ["1", "latent"]},
        },
        "3": {
            "type": "AceStepFaithfulExtendLatent",
            "widgets": {"left_seconds": 1.0, "right_seconds": 2.0},
            "inputs": {"latent": ["1", "latent"]},
        },
        "4": {"type": "MaskToImage", "inputs": {"mask": ["2", "mask"]}},
        "5": {
            "type": "SaveImage",
            "widgets": {"filename_prefix": "e2e/mask"},
            "inputs": {"images": ["4", "IMAGE"]},
        },
        "6": {"type": "MaskToImage", "inputs": {"mask": ["3", "mask"]}},
        "7": {
            "type": "SaveImage",
            "widgets": {"filename_prefix": "e2e/extend"},
            "inputs": {"images": ["6", "IMAGE"]},
        },
        "8": {"type": "PreviewAny", "inputs": {"source": ["1", "seconds"]}},
        # Durations from a video (24 frames at 12 fps) and from an audio file
        "9": {"type": "EmptyImage", "widgets": {"width": 8, "height": 8, "batch_size": 24}},
        "10": {"type": "CreateVideo", "widgets": {"fps": 12.0}, "inputs": {"images": ["9", "IMAGE"]}},
        "11": {"type": "AceStepFaithfulEmptyLatent", "inputs": {"video": ["10", "VIDEO"]}},
        "12": {"type": "PreviewAny", "inputs": {"source": ["11", "seconds"]}},
        "13": {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": "tone.wav"}},
        "14": {"type": "AceStepFaithfulEmptyLatent", "inputs": {"audio": ["13", "audio"]}},
        "15": {"type": "PreviewAny", "inputs": {"source": ["14", "seconds"]}},
    }
    run = frontend.run(frontend.build(nodes))
    assert run.ok, run

    def seconds(node):
        (text,) = run.outputs[node]["text"]
        return float(text)

    assert seconds("8") == pytest.approx(107 * 4096 / 44100)  # int(10 * 44100 / 4096) = 107 frames
    assert seconds("12") == pytest.approx(21 * 4096 / 44100)  # 2 s of video
    assert seconds("15") == pytest.approx(
        frames_of(comfy.tone_seconds) * 4096 / 44100
    )  # as the DCAE encodes it

    def mask_row(node):
        from PIL import Image

        (item,) = run.outputs[node]["images"]
        image = np.asarray(Image.open(comfy.output / item["subfolder"] / item["filename"]).convert("L"))
        assert (image == image[:1]).all()  # the same on all 16 rows
        return image[0] / 255.0

    mask = mask_row("5")
    assert mask.shape == (107,)
    # 2-4 s: frames 21..42 (int(s * 44100 / 4096)), 8 s-end: 86..106, ramps of 0.5 s (5.4 frames) outside
    assert (mask[21:43] == 1).all() and (mask[86:] == 1).all()
    assert mask[:15].max() == 0 and mask[49:80].max() == 0
    assert 0.3 < mask[18] < 0.6 and mask[17] < mask[18] < mask[19]

    extend = mask_row("7")
    left, right = int(1 * 44100 / 4096), int(2 * 44100 / 4096)
    assert extend.shape == (left + 107 + right,)
    assert (extend[:left] == 1).all() and (extend[-right:] == 1).all() and extend[left:-right].max() == 0


# --- errors are for people, and the server goes on -----------------------------------------------------------------


def still_serving(frontend):
    nodes = {
        "1": {"type": "AceStepFaithfulLyricTokenizerLoader"},
        "2": {"type": "AceStepFaithfulLyricsCheck", "inputs": {"lyric_tokenizer": ["1", "lyric_tokenizer"]}},
    }
    run = frontend.run(frontend.build(nodes))
    assert run.ok, f"the server did not run the next prompt after an error: {run}"


def assert_node_error(run, node_type: str, *words: str):
    error = run.error()
    assert error["node_type"] == node_type
    message = error["exception_message"]
    for word in words:
        assert word in message, message
    assert message.startswith("ACE-Step "), message  # says which node, as users see its title


@pytest.mark.parametrize(
    "node, input, model, says",
    [
        ("AceStepFaithfulVAELoader", "vae_name", "not_acestep", "not an ACE-Step file"),
        ("AceStepFaithfulDiTLoader", "dit_name", "vae_as_dit", "it holds: dcae, vocoder"),
    ],
)
def test_wrong_model_type(comfy, frontend, node, input, model, says):
    value = comfy.models[model]
    out = "vae" if node == "AceStepFaithfulVAELoader" else "dit"
    nodes = {
        "1": {"type": node, "widgets": {input: value}},
        "2": {"type": "PreviewAny", "inputs": {"source": ["1", out]}},
    }
    run = frontend.run(frontend.build(nodes))
    assert_node_error(run, node, f"'{input}'", value, says)
    still_serving(frontend)


@pytest.mark.parametrize(
    "file, says",
    [
        ("nan.wav", "NaN"),
        ("empty.wav", "empty"),
        ("bad_zero.wav", "the file is empty (0 bytes); expected an audio file"),
        ("bad_text.wav", "the file is a text file; expected an audio file"),
        ("bad_truncated.wav", "the file is cut short"),
    ],
)
def test_broken_audio(comfy, frontend, file, says):
    run = frontend.run(frontend.build(roundtrip(comfy.models["vae"], audio=file)))
    assert_node_error(run, "AceStepFaithfulLoadAudio", file, says)
    still_serving(frontend)


def test_mask_longer_than_latent(frontend):
    nodes = {
        "1": {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": 5.0}},
        "2": {
            "type": "AceStepFaithfulMaskFromSeconds",
            "widgets": {"ranges": "2-30"},
            "inputs": {"latent": ["1", "latent"]},
        },
        "3": {"type": "PreviewAny", "inputs": {"source": ["2", "mask"]}},
    }
    run = frontend.run(frontend.build(nodes))
    assert_node_error(run, "AceStepFaithfulMaskFromSeconds", "'ranges'", "2-30", "past the end of the latent")
    still_serving(frontend)


def test_absurd_durations(frontend):
    # A typed-in duration beyond the widget's range: ComfyUI refuses the prompt, naming the node and input.
    nodes = {
        "1": {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": 1e9}},
        "2": {"type": "PreviewAny", "inputs": {"source": ["1", "seconds"]}},
    }
    run = frontend.run(frontend.build(nodes))
    assert run.status == 400 and run.history is None
    (error,) = run.response["node_errors"]["1"]["errors"]
    assert run.response["node_errors"]["1"]["class_type"] == "AceStepFaithfulEmptyLatent"
    assert error["extra_info"]["input_name"] == "seconds" and "1000000000" in error["message"]

    # A duration computed from a connected image batch at a tiny fps: our node says so.
    nodes = {
        "1": {"type": "EmptyImage", "widgets": {"width": 8, "height": 8, "batch_size": 20}},
        "2": {
            "type": "AceStepFaithfulEmptyLatent",
            "widgets": {"fps": 0.01},
            "inputs": {"images": ["1", "IMAGE"]},
        },
        "3": {"type": "PreviewAny", "inputs": {"source": ["2", "seconds"]}},
    }
    run = frontend.run(frontend.build(nodes))
    assert_node_error(run, "AceStepFaithfulEmptyLatent", "'fps'", "0.01", "2000 s", "1000 s")
    still_serving(frontend)


def test_the_frontend_shows_no_errors_from_our_nodes(frontend):
    # The frontend looks custom nodes up on the Comfy registry; ComfyUI's Content-Security-Policy (with
    # --disable-api-nodes) blocks that in the browser, so nothing leaves the machine: not our error.
    ours = [
        m
        for m in frontend.console
        if "acestep" in m.lower()
        and ("error" in m.lower() or "pageerror" in m)
        and "Content Security Policy" not in m
    ]
    assert not ours, ours
