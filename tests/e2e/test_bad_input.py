"""Bad input through ComfyUI's HTTP API, sent as an API client or a hand-edited workflow sends it (NaN and inf
included, which the frontend cannot send: JSON.stringify writes null): each mistake is refused where it enters, by
the node it enters, with a message that names the node, the input and the value and says what to do; the server
answers the next prompt, and nothing in the output folder changes.

``test_a_battery_of_bad_inputs`` queues over a hundred of them (files, models, numbers with NaN and inf, ranges,
masks, latents of other models, lyrics, LoRAs, speaker files, path traversal in names) on the session's server;
each fails at the node it enters, before any sampling, so the whole battery takes seconds. With
``ACESTEP_BATTERY_REPORT=file`` it writes what users are told, case by case, for reading them over. The same
mistakes through the command line are in tests/test_cli_bad_input.py.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e.conftest import BAD_AUDIO, BAD_LORAS, BAD_SPEAKERS

pytestmark = pytest.mark.slow

NAN, INF = math.nan, math.inf
# What a user must never see: the libraries' own words, which say nothing about the input.
RAW = (
    "Errno",
    "SafetensorError",
    "deserializing",
    "Traceback",
    "cannot convert float NaN",
    "groups must be",
    "Format not recognised",
    "Invalid data found",
)
LYRICS = "[verse]\nLights on the river\n[chorus]\nSing it out loud"


# --- graphs ----------------------------------------------------------------------------------------------------------


def lora_option(comfy) -> str:
    return comfy.models["lora"].removeprefix("loras/")


def base(comfy) -> dict:
    """The official folder's parts, a prompt and a 1 s empty latent: what the nodes under test are fed from (ComfyUI
    runs only what a prompt's output needs, and keeps what it ran for the next prompt)."""
    return {
        "ckpt": {
            "type": "AceStepFaithfulCheckpointLoader",
            "widgets": {"ckpt_name": comfy.models["official"]},
        },
        "enc": {
            "type": "AceStepFaithfulEncodePrompt",
            "widgets": {"prompt": "pop", "lyrics": LYRICS},
            "inputs": {
                "text_encoder": ["ckpt", "text_encoder"],
                "lyric_tokenizer": ["ckpt", "lyric_tokenizer"],
            },
        },
        "lat": {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": 1.0}},
        # ACE-Step 1.5: the official folder's parts, a prompt, a 1 s latent and the 5 Hz LM
        "ckpt15": {
            "type": "AceStepFaithful15CheckpointLoader",
            "widgets": {"ckpt_name": comfy.models["v15"]},
        },
        "enc15": {"type": "AceStepFaithful15Encode", "inputs": {"text_encoder": ["ckpt15", "text_encoder"]}},
        "lat15": {"type": "AceStepFaithful15EmptyLatent", "widgets": {"seconds": 1.0}},
        "lm15": {"type": "AceStepFaithful15LMLoader", "widgets": {"lm_name": comfy.models["v15_lm"]}},
    }


# node type -> (its inputs from ``base``, widgets it needs, the output to preview)
FEEDS = {
    "AceStepFaithfulSampler": (
        {"dit": ["ckpt", "dit"], "conditioning": ["enc", "conditioning"], "latent": ["lat", "latent"]},
        {"steps": 1},
        "latent",
    ),
    "AceStepFaithfulFlowEdit": (
        {
            "dit": ["ckpt", "dit"],
            "conditioning": ["enc", "conditioning"],
            "target_conditioning": ["enc", "conditioning"],
            "latent": ["lat", "latent"],
        },
        {"steps": 1},
        "latent",
    ),
    "AceStepFaithfulGuider": ({"dit": ["ckpt", "dit"], "positive": ["enc", "conditioning"]}, {}, "guider"),
    "AceStepFaithfulSamplerSelect": ({}, {}, "sampler"),
    "AceStepFaithfulScheduler": ({}, {}, "sigmas"),
    "AceStepFaithfulEmptyLatent": ({}, {}, "latent"),
    "AceStepFaithfulMaskFromSeconds": ({"latent": ["lat", "latent"]}, {"ranges": "0-0.5"}, "mask"),
    "AceStepFaithfulExtendLatent": ({"latent": ["lat", "latent"]}, {}, "latent"),
    "AceStepFaithfulLoadAudio": ({}, {"audio": "tone.wav"}, "audio"),
    "AceStepFaithfulLoraLoader": ({"dit": ["ckpt", "dit"]}, {}, "dit"),
    "AceStepFaithfulEncodePrompt": (
        {"text_encoder": ["ckpt", "text_encoder"], "lyric_tokenizer": ["ckpt", "lyric_tokenizer"]},
        {},
        "conditioning",
    ),
    "AceStepFaithfulConditioningToCore": ({"conditioning": ["enc", "conditioning"]}, {}, "conditioning"),
    "AceStepFaithfulLyricsCheck": ({"lyric_tokenizer": ["ckpt", "lyric_tokenizer"]}, {}, "report"),
    "AceStepFaithfulDecodeLatent": ({"latent": ["lat", "latent"], "vae": ["ckpt", "vae"]}, {}, "audio"),
    "AceStepFaithfulEncodeAudio": ({"vae": ["ckpt", "vae"]}, {}, "latent"),
    "AceStepFaithful15Sampler": (
        {"dit": ["ckpt15", "dit"], "prompt": ["enc15", "prompt"], "latent": ["lat15", "latent"]},
        {"steps": 1},
        "latent",
    ),
    "AceStepFaithful15Decode": ({"vae": ["ckpt15", "vae"], "latent": ["lat15", "latent"]}, {}, "audio"),
    "AceStepFaithful15EmptyLatent": ({}, {}, "latent"),
    "AceStepFaithful15Planner": ({"lm": ["lm15", "lm"]}, {"duration": 10.0}, "audio_codes"),
    "AceStepFaithful15LoraLoader": ({"dit": ["ckpt15", "dit"]}, {}, "dit"),
}


def one(comfy, node: str, widgets: dict | None = None, inputs: dict | None = None, extra: dict | None = None):
    """``node`` (id "x") fed from ``base`` as in ``FEEDS``, with ``widgets`` and ``inputs`` on top, previewed."""
    links, needs, output = FEEDS.get(node, ({}, {}, None))
    if node == "AceStepFaithfulLoraLoader":
        needs = {"lora_name": lora_option(comfy)}
    if node == "AceStepFaithful15LoraLoader":
        needs = {"lora_name": comfy.models["v15_lora"].removeprefix("loras/")}
    nodes = {
        **base(comfy),
        **(extra or {}),
        "x": {"type": node, "widgets": {**needs, **(widgets or {})}, "inputs": {**links, **(inputs or {})}},
    }
    if output is not None:
        nodes["out"] = {"type": "PreviewAny", "inputs": {"source": ["x", output]}}
    return nodes


def loader(node: str, input: str, value: str) -> dict:
    out = {
        "AceStepFaithfulCheckpointLoader": "dit",
        "AceStepFaithfulDiTLoader": "dit",
        "AceStepFaithfulVAELoader": "vae",
        "AceStepFaithfulTextEncoderLoader": "text_encoder",
        "AceStepFaithfulLyricTokenizerLoader": "lyric_tokenizer",
        "AceStepFaithfulSpeakerLoader": "speaker",
        "AceStepFaithful15DiTLoader": "dit",
    }[node]
    return {
        "x": {"type": node, "widgets": {input: value}},
        "out": {"type": "PreviewAny", "inputs": {"source": ["x", out]}},
    }


def load_audio(file: str, **widgets) -> dict:
    return {
        "x": {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": file, **widgets}},
        "out": {"type": "PreviewAny", "inputs": {"source": ["x", "audio"]}},
    }


def linked(value: float) -> dict:
    """A core Float primitive: its value reaches the node it feeds over a link, which ComfyUI checks against no
    min/max (its own are +-2**63, and let NaN through)."""
    return {"num": {"type": "PrimitiveFloat", "widgets": {"value": value}}}


# --- what a refusal must look like -----------------------------------------------------------------------------------


@dataclass
class Bad:
    """A bad input: ``node`` (a node type) must refuse it, naming ``input`` and holding ``words`` (the value among
    them). ``by_comfyui``: ComfyUI's own checks refuse the prompt (HTTP 400) before anything runs."""

    name: str
    nodes: dict
    node: str
    input: str
    words: tuple[str, ...] = ()
    by_comfyui: bool = False


def problem(run, bad: Bad) -> str | None:
    """What is wrong with how ``run`` refused ``bad`` (None: refused as it should be)."""
    if bad.by_comfyui:
        errors = run.response.get("node_errors", {}) if run.status == 400 else {}
        hits = [
            e
            for n in errors.values()
            if n["class_type"] == bad.node
            for e in n["errors"]
            if e.get("extra_info", {}).get("input_name") == bad.input
        ]
        if not hits:
            return f"ComfyUI should refuse {bad.node}.{bad.input}: {run}"
        text = " ".join(f"{e['message']} {e.get('details', '')}" for e in hits)
    else:
        if run.status != 200:
            return f"refused before it ran, not by {bad.node}: {run}"
        try:
            error = run.error()
        except AssertionError:
            return f"it ran without an error: {run}"
        text = error["exception_message"]
        if error["node_type"] != bad.node:
            return f"{error['node_type']} failed, not {bad.node}: {text}"
        if not error["exception_type"].endswith("AceStepError"):
            return f"not one of our messages ({error['exception_type']}): {text}"
        if not text.startswith("ACE-Step ") or f"input '{bad.input}'" not in text:
            return f"does not name the node and the input '{bad.input}': {text}"
    missing = [w for w in bad.words if w not in text]
    raw = [w for w in RAW if w in text and not bad.by_comfyui]  # (ComfyUI's own words are its business)
    if missing or raw:
        return f"missing {missing}, raw {raw}: {text}"
    return None


def assert_refused(comfy, bad: Bad) -> str:
    """``bad`` refused as it should be; the message. The server then answers the next prompt."""
    run = comfy.run(bad.nodes)
    trouble = problem(run, bad)
    assert trouble is None, f"{bad.name}: {trouble}"
    answers_next(comfy)
    return run.error()["exception_message"] if not bad.by_comfyui else json.dumps(run.response)


def said(run) -> str:
    """What the user was told: our node's message, or ComfyUI's refusal."""
    if run.status == 400:
        errors = [e for n in run.response.get("node_errors", {}).values() for e in n["errors"]]
        text = " | ".join(f"{e['message']}: {e.get('details', '')}" for e in errors)
        return text or json.dumps(run.response)
    try:
        return run.error()["exception_message"]
    except AssertionError:
        return f"(no error: {run})"


def answers_next(comfy) -> None:
    nodes = {
        "1": {"type": "AceStepFaithfulLyricTokenizerLoader"},
        "2": {"type": "AceStepFaithfulLyricsCheck", "inputs": {"lyric_tokenizer": ["1", "lyric_tokenizer"]}},
    }
    run = comfy.run(nodes)
    assert run.ok, f"the server did not run the next prompt: {run}"


# --- one test per mistake the issue found ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "input, feed",
    [
        ("guidance_scale", {}),
        ("omega_scale", {}),
        ("guidance_interval", {}),
        ("retake_variance", {"mask": ["m", "mask"]}),
        ("reference_strength", {"reference": ["lat", "latent"]}),
    ],
)
def test_nan_settings_are_refused_by_the_node_they_enter(comfy, input, feed):
    """NaN passes ComfyUI's min/max checks; these ran a whole sampling and failed at the decoder (or with "cannot
    convert float NaN to integer"). Now the sampler refuses them before it samples."""
    mask = {
        "m": {
            "type": "AceStepFaithfulMaskFromSeconds",
            "widgets": {"ranges": "0-0.5"},
            "inputs": {"latent": ["lat", "latent"]},
        }
    }
    nodes = one(comfy, "AceStepFaithfulSampler", {input: NAN}, feed, extra=mask)
    nodes["dec"] = {
        "type": "AceStepFaithfulDecodeLatent",
        "inputs": {"latent": ["x", "latent"], "vae": ["ckpt", "vae"]},
    }
    nodes["out"] = {"type": "PreviewAny", "inputs": {"source": ["dec", "audio"]}}
    message = assert_refused(
        comfy, Bad(input, nodes, "AceStepFaithfulSampler", input, ("= nan", "not a number (NaN)"))
    )
    assert "Give a number from" in message


def test_nan_and_out_of_range_over_a_link(comfy):
    """A value from another node skips ComfyUI's min/max entirely: the node's own check says what it takes."""
    bad = Bad(
        "linked",
        one(comfy, "AceStepFaithfulSampler", inputs={"guidance_scale": ["num", 0]}, extra=linked(5000.0)),
        "AceStepFaithfulSampler",
        "guidance_scale",
        ("5000.0", "from 0 to 200"),
    )
    assert_refused(comfy, bad)
    bad.nodes = one(comfy, "AceStepFaithfulEmptyLatent", inputs={"fps": ["num", 0]}, extra=linked(NAN))
    bad.nodes["x"]["inputs"]["images"] = ["img", 0]
    bad.nodes["img"] = {"type": "EmptyImage", "widgets": {"width": 8, "height": 8, "batch_size": 4}}
    bad.node, bad.input, bad.words = "AceStepFaithfulEmptyLatent", "fps", ("nan", "NaN")
    assert_refused(comfy, bad)


@pytest.mark.parametrize(
    "kind, says",
    [
        ("zero", "the file is empty (0 bytes)"),
        ("text", "the file is a text file"),
        ("random", "the file is binary data of no known format"),
        ("image", "the file is a PNG image"),
    ],
)
def test_unreadable_audio_says_what_the_file_is(comfy, kind, says):
    file = BAD_AUDIO[kind]
    bad = Bad(
        kind,
        load_audio(file),
        "AceStepFaithfulLoadAudio",
        "audio",
        (file, says, "expected an audio file (wav"),
    )
    assert_refused(comfy, bad)


@pytest.mark.parametrize(
    "kind, says",
    [
        ("zero", "it is empty (0 bytes)"),
        ("truncated", "it is truncated (its tensors need"),
        ("random", "it is not a safetensors file but binary data"),
        ("text", "it is not a safetensors file but a text file"),
    ],
)
def test_broken_safetensors_say_what_the_file_is(comfy, kind, says):
    file = comfy.bad_models[kind]
    for node, input in (
        ("AceStepFaithfulCheckpointLoader", "ckpt_name"),
        ("AceStepFaithfulVAELoader", "vae_name"),
    ):
        words = (file, says, "A .safetensors weights file was expected", "download or copy it again")
        assert_refused(comfy, Bad(kind, loader(node, input, file), node, input, words))


def test_a_dit_of_another_width_without_config_says_how_to_give_its_head_split(comfy):
    file = comfy.bad_models["narrow_dit"]
    words = (file, "32 wide, not the released 2560", "cannot be read from the tensors", "config.json")
    assert_refused(
        comfy,
        Bad(
            "narrow",
            loader("AceStepFaithfulDiTLoader", "dit_name", file),
            "AceStepFaithfulDiTLoader",
            "dit_name",
            words,
        ),
    )
    # as the message says: the same weights with their config.json in a folder of their own load
    run = comfy.run(loader("AceStepFaithfulDiTLoader", "dit_name", comfy.bad_models["narrow_dit_folder"]))
    assert run.ok, run


def test_lyrics_longer_than_the_model_takes_are_refused_before_anything_runs(comfy):
    info = comfy.get("/object_info")
    for node in ("AceStepFaithfulEncodePrompt", "AceStepFaithfulLyricsCheck"):
        assert "At most 4096 lyric tokens" in info[node]["input"]["required"]["lyrics"][1]["tooltip"]
    # 50,000 characters (57.6 GB of attention in the lyric encoder): refused at once, without tokenizing them
    huge = "[verse]\n" + "la la la la\n" * 4200
    start = time.monotonic()
    for node in ("AceStepFaithfulEncodePrompt", "AceStepFaithfulLyricsCheck"):
        words = (f"{7 + 4200 * 11:,} characters", "at most 4096 lyric tokens", "'[verse]\\nla la la")
        assert_refused(comfy, Bad("huge", one(comfy, node, {"lyrics": huge}), node, "lyrics", words))
    assert time.monotonic() - start < 20
    # fewer characters than that, but more tokens than the model reads: refused where the count passes the limit
    long = "[verse]\n" + "\n".join(f"line number {i} of many" for i in range(600))
    words = ("longer than the 4096 tokens ACE-Step v1 reads", "at line", "Shorten them")
    assert_refused(
        comfy,
        Bad(
            "long",
            one(comfy, "AceStepFaithfulEncodePrompt", {"lyrics": long}),
            "AceStepFaithfulEncodePrompt",
            "lyrics",
            words,
        ),
    )
    # Check Lyrics reports such lyrics (its job) with the count against the limit
    run = comfy.run(one(comfy, "AceStepFaithfulLyricsCheck", {"lyrics": long}))
    assert run.ok, run
    (report,) = run.outputs["x"]["text"]
    assert "tokens of at most 4096 (too long" in report.splitlines()[0]


def test_a_file_cut_short_is_refused_where_it_enters(comfy):
    """A WAV truncated to 300 bytes read as 26 samples and made a 0.09 s song without a word."""
    file = BAD_AUDIO["truncated"]
    words = (
        file,
        "only 0.00059 s of audio (26 samples at 44100 Hz)",
        "0.5 s or more",
        "its header announces 3.00 s",
    )
    assert_refused(comfy, Bad("truncated", load_audio(file), "AceStepFaithfulLoadAudio", "audio", words))
    short = BAD_AUDIO["short"]
    assert_refused(
        comfy, Bad("short", load_audio(short), "AceStepFaithfulLoadAudio", "audio", (short, "only 0.2 s"))
    )
    # ComfyUI's own Load Audio passes it on: ACE-Step Audio to Latent refuses it
    nodes = one(comfy, "AceStepFaithfulEncodeAudio", inputs={"audio": ["core", 0]})
    nodes["core"] = {"type": "LoadAudio", "widgets": {"audio": file}}
    assert_refused(
        comfy, Bad("core", nodes, "AceStepFaithfulEncodeAudio", "audio", ("AUDIO", "only 0.00059 s"))
    )


# --- the battery -----------------------------------------------------------------------------------------------------


def every_float_input(comfy) -> list[tuple[str, str]]:
    """(node type, input) for every FLOAT input of every node of ours, as the server lists them."""
    info = comfy.get("/object_info")
    ours = {
        k: v
        for k, v in info.items()
        if v.get("python_module", "").endswith("comfyui-acestep")
        and not v.get("deprecated")  # not the old ids
    }
    return sorted(
        (name, input)
        for name, node in ours.items()
        for group in ("required", "optional")
        for input, (kind, *_) in node["input"].get(group, {}).items()
        if kind == "FLOAT"
    )


def battery(comfy) -> list[Bad]:
    m, bad_m = comfy.models, comfy.bad_models
    cases: list[Bad] = []

    def add(name, nodes, node, input, *words, by_comfyui=False):
        cases.append(Bad(name, nodes, node, input, tuple(words), by_comfyui))

    # numbers: NaN in every FLOAT input of every node (a new one without the check fails here), inf, strings, ranges
    for node, input in every_float_input(comfy):
        assert node in FEEDS, f"add {node} to FEEDS so its FLOAT inputs are checked"
        add(f"{node}.{input}=NaN", one(comfy, node, {input: NAN}), node, input, "= nan", "NaN")
    add(
        "a v1 latent into 1.5's decode",
        one(comfy, "AceStepFaithful15Decode", inputs={"latent": ["lat", "latent"]}),
        "AceStepFaithful15Decode",
        "latent",
        "ACE-Step v1 latent",
    )
    add(
        "a v1 DiT into 1.5's loader",
        loader("AceStepFaithful15DiTLoader", "dit_name", m["dit"]),
        "AceStepFaithful15DiTLoader",
        "dit_name",
        "v1",
    )
    add(
        "nan as text",
        one(comfy, "AceStepFaithfulSampler", {"omega_scale": "nan"}),
        "AceStepFaithfulSampler",
        "omega_scale",
        "nan",
    )
    for node, input, value in (
        ("AceStepFaithfulSampler", "guidance_scale", INF),
        ("AceStepFaithfulEmptyLatent", "seconds", -INF),
        ("AceStepFaithfulLoraLoader", "strength", INF),
        ("AceStepFaithfulScheduler", "denoise", 2.0),
        ("AceStepFaithfulExtendLatent", "right_seconds", -1.0),
    ):
        add(f"{node}.{input}={value}", one(comfy, node, {input: value}), node, input, by_comfyui=True)
    for node, input, value, words in (
        ("AceStepFaithfulSampler", "guidance_scale", 1e12, ("1000000000000.0", "from 0 to 200")),
        ("AceStepFaithfulSampler", "omega_scale", -1e9, ("from -100 to 100",)),
        ("AceStepFaithfulSampler", "retake_variance", 2.0, ("2.0", "from 0 to 1")),
        ("AceStepFaithfulSampler", "reference_strength", 1.0, ("1.0", "from 0 to 0.99")),
        ("AceStepFaithfulEmptyLatent", "seconds", 0.0, ("0.0", "from 0.1 to 1000")),
        ("AceStepFaithfulLoraLoader", "strength", 1e6, ("from -10 to 10",)),
        ("AceStepFaithfulMaskFromSeconds", "soft_edge", -1.0, ("-1.0",)),
        ("AceStepFaithfulScheduler", "denoise", NAN, ("nan",)),
        ("AceStepFaithfulLoadAudio", "start_seconds", -3.0, ("-3.0",)),
        ("AceStepFaithfulSamplerSelect", "omega_scale", 1e15, ("1000000000000000.0",)),
    ):
        nodes = one(comfy, node, inputs={input: ["num", 0]}, extra=linked(value))
        add(f"{node}.{input}<-{value}", nodes, node, input, *words)
    for input, value in (("steps", "many"), ("steps", NAN), ("seed", -1), ("steps", 0)):
        add(
            f"sampler {input}={value}",
            one(comfy, "AceStepFaithfulSampler", {input: value}),
            "AceStepFaithfulSampler",
            input,
            by_comfyui=True,
        )
    add(
        "oss_steps 0",
        one(comfy, "AceStepFaithfulSampler", {"oss_steps": "0, 4"}),
        "AceStepFaithfulSampler",
        "oss_steps",
        "outside 1..1000",
    )
    add(
        "oss_steps words",
        one(comfy, "AceStepFaithfulScheduler", {"oss_steps": "ten"}),
        "AceStepFaithfulScheduler",
        "oss_steps",
        "ten",
    )
    add(
        "n_min > n_max",
        one(comfy, "AceStepFaithfulFlowEdit", {"n_min": 0.9, "n_max": 0.1}),
        "AceStepFaithfulFlowEdit",
        "n_min",
        "0.9",
    )
    add(
        "fps tiny",
        one(
            comfy,
            "AceStepFaithfulEmptyLatent",
            {"fps": 0.01},
            {"images": ["img", 0]},
            extra={"img": {"type": "EmptyImage", "widgets": {"width": 8, "height": 8, "batch_size": 30}}},
        ),
        "AceStepFaithfulEmptyLatent",
        "fps",
        "0.01",
        "1000 s",
    )

    # ranges of seconds
    for text, says in (
        ("abc", "cannot read the range"),
        ("5-2", "ends before it starts"),
        ("0-300", "past the end"),
        ("", "no range"),
    ):
        add(
            f"ranges {text!r}",
            one(comfy, "AceStepFaithfulMaskFromSeconds", {"ranges": text}),
            "AceStepFaithfulMaskFromSeconds",
            "ranges",
            says,
        )
    add(
        "regions past the end",
        load_audio("tone.wav", regions="1-9"),
        "AceStepFaithfulLoadAudio",
        "regions",
        "1-9",
        "past the end",
    )

    # audio files
    for kind in ("zero", "text", "random", "image"):
        add(
            f"audio {kind}",
            load_audio(BAD_AUDIO[kind]),
            "AceStepFaithfulLoadAudio",
            "audio",
            BAD_AUDIO[kind],
            "expected an audio file",
        )
    add(
        "audio truncated",
        load_audio(BAD_AUDIO["truncated"]),
        "AceStepFaithfulLoadAudio",
        "audio",
        "cut short",
    )
    add("audio short", load_audio(BAD_AUDIO["short"]), "AceStepFaithfulLoadAudio", "audio", "only 0.2 s")
    add("audio NaN", load_audio("nan.wav"), "AceStepFaithfulLoadAudio", "audio", "nan.wav", "NaN")
    add("audio empty", load_audio("empty.wav"), "AceStepFaithfulLoadAudio", "audio", "empty.wav", "empty")
    add(
        "audio past its end",
        load_audio("tone.wav", start_seconds=60.0),
        "AceStepFaithfulLoadAudio",
        "audio",
        "nothing to read from 60 s",
    )
    add(
        "audio missing",
        load_audio("no_such_song.wav"),
        "AceStepFaithfulLoadAudio",
        "audio",
        "no_such_song.wav",
        by_comfyui=True,
    )
    five = one(
        comfy,
        "AceStepFaithfulEncodeAudio",
        inputs={"audio": ["a", "audio"]},
        extra={"a": {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": BAD_AUDIO["channels"]}}},
    )
    add("audio 5 channels", five, "AceStepFaithfulEncodeAudio", "audio", "5 channels")
    add(
        "the canary as audio",
        load_audio("canary.txt [output]"),
        "AceStepFaithfulLoadAudio",
        "audio",
        "canary.txt",
        "a text file",
    )

    # path traversal in names
    for name in (
        "../models/checkpoints/ace_step_v1_3.5b.safetensors",
        "/etc/passwd",
        "../../../../etc/hostname",
        "x/../../comfyui.log",
    ):
        add(
            f"audio {name}",
            load_audio(name),
            "AceStepFaithfulLoadAudio",
            "audio",
            "outside ComfyUI's input folder",
            by_comfyui=True,
        )
    for prefix in (
        "../escaped",
        "/tmp/acestep_escaped",
        "e2e/../../escaped",
        "../../../../tmp/acestep_escaped",
    ):
        nodes = one(
            comfy,
            "AceStepFaithfulSaveAudio",
            {"filename_prefix": prefix},
            {"audio": ["a", "audio"]},
            extra={"a": {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": "tone.wav"}}},
        )
        add(
            f"save {prefix}",
            nodes,
            "AceStepFaithfulSaveAudio",
            "filename_prefix",
            prefix,
            "outside ComfyUI's output folder",
        )
    # (ComfyUI checks no V3 combo value against its list: the names reach the loaders, which look inside)
    for node, input, value in (
        ("AceStepFaithfulCheckpointLoader", "ckpt_name", "checkpoints/../../../etc/passwd"),
        ("AceStepFaithfulDiTLoader", "dit_name", "acestep/../../comfyui.log"),
        ("AceStepFaithfulVAELoader", "vae_name", "/etc/passwd"),
        ("AceStepFaithfulSpeakerLoader", "embedding", "../../comfyui.log"),
        ("AceStepFaithfulLyricTokenizerLoader", "vocab", "acestep/../../../etc/passwd"),
    ):
        add(f"{input} {value}", loader(node, input, value), node, input, value, "no such")
    lora = "../checkpoints/ace_step_v1_3.5b.safetensors"
    add(
        "lora ../",
        one(comfy, "AceStepFaithfulLoraLoader", {"lora_name": lora}),
        "AceStepFaithfulLoraLoader",
        "lora_name",
        lora,
        "no such",
    )
    for path, says in (
        ("/etc/passwd", "not the lyric vocabulary"),
        ("../../../../no/such/vocab.json", "not found"),
    ):
        add(
            f"vocab_path {path}",
            loader("AceStepFaithfulLyricTokenizerLoader", "vocab_path", path),
            "AceStepFaithfulLyricTokenizerLoader",
            "vocab_path",
            path,
            says,
        )

    # models
    for kind, says in (
        ("zero", "empty (0 bytes)"),
        ("truncated", "truncated"),
        ("random", "not a safetensors file"),
        ("text", "a text file"),
    ):
        for node, input in (
            ("AceStepFaithfulDiTLoader", "dit_name"),
            ("AceStepFaithfulTextEncoderLoader", "text_encoder_name"),
        ):
            add(
                f"{node} {kind}",
                loader(node, input, bad_m[kind]),
                node,
                input,
                bad_m[kind],
                says,
                "download or copy it again",
            )
    add(
        "partial DiT",
        loader("AceStepFaithfulDiTLoader", "dit_name", bad_m["partial_dit"]),
        "AceStepFaithfulDiTLoader",
        "dit_name",
        "lacks the tensor 't_block.1.weight'",
    )
    add(
        "narrow DiT",
        loader("AceStepFaithfulDiTLoader", "dit_name", bad_m["narrow_dit"]),
        "AceStepFaithfulDiTLoader",
        "dit_name",
        "cannot be read from the tensors",
    )
    add(
        "SD VAE",
        loader("AceStepFaithfulVAELoader", "vae_name", m["not_acestep"]),
        "AceStepFaithfulVAELoader",
        "vae_name",
        "not an ACE-Step file",
    )
    add(
        "VAE as DiT",
        loader("AceStepFaithfulDiTLoader", "dit_name", m["vae_as_dit"]),
        "AceStepFaithfulDiTLoader",
        "dit_name",
        "it holds: dcae, vocoder",
    )
    add(
        "DiT as text encoder",
        loader("AceStepFaithfulTextEncoderLoader", "text_encoder_name", bad_m["narrow_dit_folder"]),
        "AceStepFaithfulTextEncoderLoader",
        "text_encoder_name",
        "holds no text_encoder weights (it holds: dit)",
    )
    add(
        "truncated checkpoint",
        loader("AceStepFaithfulCheckpointLoader", "ckpt_name", "checkpoints/bad_truncated.safetensors"),
        "AceStepFaithfulCheckpointLoader",
        "ckpt_name",
        "truncated",
    )
    nothing = "diffusion_models/nothing.safetensors"
    add(
        "not in the list",
        loader("AceStepFaithfulDiTLoader", "dit_name", nothing),
        "AceStepFaithfulDiTLoader",
        "dit_name",
        nothing,
        "no such",
    )

    # LoRAs
    for kind, says in (
        ("zero", "empty (0 bytes)"),
        ("random", "not a safetensors file"),
        ("dit", "not a LoRA"),
        ("wrong_size", "does not fit this DiT"),
    ):
        add(
            f"lora {kind}",
            one(comfy, "AceStepFaithfulLoraLoader", {"lora_name": BAD_LORAS[kind]}),
            "AceStepFaithfulLoraLoader",
            "lora_name",
            BAD_LORAS[kind],
            says,
        )

    v1_lora, v15_lora = lora_option(comfy), comfy.models["v15_lora"].removeprefix("loras/")
    add(
        "a v1 LoRA into 1.5's LoRA loader",
        one(comfy, "AceStepFaithful15LoraLoader", {"lora_name": v1_lora}),
        "AceStepFaithful15LoraLoader",
        "lora_name",
        v1_lora,
        "is an ACE-Step v1 LoRA",
    )
    add(
        "a 1.5 LoRA into v1's LoRA loader",
        one(comfy, "AceStepFaithfulLoraLoader", {"lora_name": v15_lora}),
        "AceStepFaithfulLoraLoader",
        "lora_name",
        v15_lora,
        "match no ACE-Step v1 DiT layer",
    )

    # speaker files
    for kind, says in (
        ("two_tensors", "exactly one vector"),
        ("matrix", "exactly one vector"),
        ("nan", "NaN"),
        ("zero", "empty (0 bytes)"),
        ("pickle", "NumPy"),
        ("text", "a text file"),
    ):
        add(
            f"speaker {kind}",
            loader("AceStepFaithfulSpeakerLoader", "embedding", BAD_SPEAKERS[kind]),
            "AceStepFaithfulSpeakerLoader",
            "embedding",
            BAD_SPEAKERS[kind],
            says,
        )
    wide = one(comfy, "AceStepFaithfulSampler")
    wide["spk"] = {"type": "AceStepFaithfulSpeakerLoader", "widgets": {"embedding": BAD_SPEAKERS["wide"]}}
    wide["enc2"] = {**wide["enc"], "inputs": {**wide["enc"]["inputs"], "speaker": ["spk", "speaker"]}}
    wide["x"]["inputs"]["conditioning"] = ["enc2", "conditioning"]
    add(
        "speaker of another width",
        wide,
        "AceStepFaithfulSampler",
        "conditioning",
        "7 values but this DiT takes 16",
    )

    # masks
    def solid(width, value=1.0, height=16):
        return {"mk": {"type": "SolidMask", "widgets": {"value": value, "width": width, "height": height}}}

    add(
        "mask of an image",
        one(comfy, "AceStepFaithfulSampler", inputs={"mask": ["mk", 0]}, extra=solid(512)),
        "AceStepFaithfulSampler",
        "mask",
        "longer than the latent",
    )
    add(
        "mask NaN",
        one(comfy, "AceStepFaithfulSampler", inputs={"mask": ["mk", 0]}, extra=solid(10, NAN)),
        "AceStepFaithfulSampler",
        "mask",
        "NaN",
    )
    add(
        "mask and reference",
        one(
            comfy,
            "AceStepFaithfulSampler",
            inputs={"mask": ["mk", 0], "reference": ["lat", "latent"]},
            extra=solid(10),
        ),
        "AceStepFaithfulSampler",
        "reference",
        "both a mask and a reference",
    )

    # latents of other models
    image = {"img": {"type": "EmptyLatentImage", "widgets": {"width": 64, "height": 64}}}
    sd3 = {"img": {"type": "EmptySD3LatentImage", "widgets": {"width": 64, "height": 64}}}
    video = {"img": {"type": "EmptyHunyuanLatentVideo", "widgets": {"width": 64, "height": 64, "length": 1}}}
    for what, extra in (("image", image), ("SD3", sd3), ("video", video)):
        add(
            f"{what} latent to decode",
            one(comfy, "AceStepFaithfulDecodeLatent", inputs={"latent": ["img", 0]}, extra=extra),
            "AceStepFaithfulDecodeLatent",
            "latent",
            "not ACE-Step's [batch, 8, 16, frames]",
        )
    add(
        "image latent to sample",
        one(comfy, "AceStepFaithfulSampler", inputs={"latent": ["img", 0]}, extra=image),
        "AceStepFaithfulSampler",
        "latent",
        "not ACE-Step's",
    )
    add(
        "image latent as reference",
        one(comfy, "AceStepFaithfulSampler", inputs={"reference": ["img", 0]}, extra=image),
        "AceStepFaithfulSampler",
        "reference",
        "not ACE-Step's",
    )
    add(
        "image latent to mask",
        one(comfy, "AceStepFaithfulMaskFromSeconds", inputs={"latent": ["img", 0]}, extra=sd3),
        "AceStepFaithfulMaskFromSeconds",
        "latent",
        "not ACE-Step's",
    )
    add(
        "video latent to extend",
        one(comfy, "AceStepFaithfulExtendLatent", inputs={"latent": ["img", 0]}, extra=video),
        "AceStepFaithfulExtendLatent",
        "latent",
        "not ACE-Step's",
    )
    add(
        "image latent to edit",
        one(comfy, "AceStepFaithfulFlowEdit", inputs={"latent": ["img", 0]}, extra=image),
        "AceStepFaithfulFlowEdit",
        "latent",
        "not ACE-Step's",
    )

    # lyrics
    huge = "[verse]\n" + "la " * 20000
    chars = f"{7 + len(huge) - 9:,} characters"  # (counted without the lines' ends and trailing spaces)
    add(
        "lyrics 60,000 characters",
        one(comfy, "AceStepFaithfulEncodePrompt", {"lyrics": huge}),
        "AceStepFaithfulEncodePrompt",
        "lyrics",
        chars,
        "4096",
    )
    add(
        "lyrics to check, 60,000 characters",
        one(comfy, "AceStepFaithfulLyricsCheck", {"lyrics": huge}),
        "AceStepFaithfulLyricsCheck",
        "lyrics",
        "4096",
    )
    return cases


# What must still work afterwards (and not be refused): odd but valid input.
ODD_BUT_FINE = {
    "control characters in the lyrics": {"lyrics": "[verse]\n\x00\x07 hello\ttab\r\nline\u200b"},
    "emoji lyrics": {"lyrics": "[chorus]\n🎵🎵 ✨"},
    "no prompt": {"prompt": ""},
    "a prompt of 20,000 characters": {"prompt": "synth, " * 3000},
}


@pytest.fixture
def canaries(comfy):
    """Files in the output folder (one where a Save Audio prefix of the battery would put its file), checked byte
    for byte after the battery."""
    files = {
        comfy.output / "canary.txt": b"canary: nothing may change this file\n",
        comfy.output / "canary" / "ACE-Step_00001_.flac": bytes(range(256)) * 8,
        comfy.output.parent / "escaped_canary.txt": b"outside the output folder\n",
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    before = sorted(p.relative_to(comfy.output) for p in comfy.output.rglob("*") if p.is_file())
    yield files
    for path, data in files.items():
        assert path.read_bytes() == data, f"{path} changed"
    after = sorted(p.relative_to(comfy.output) for p in comfy.output.rglob("*") if p.is_file())
    assert after == before, f"the bad inputs wrote {sorted(set(after) - set(before))}"
    assert not list(comfy.output.parent.glob("escaped*_.flac")) and not list(
        comfy.base.parent.glob("escaped*")
    )


def test_a_battery_of_bad_inputs(comfy, canaries):
    cases = battery(comfy)
    assert len(cases) >= 100, len(cases)
    start = time.monotonic()
    queued = []
    for bad in cases:  # all queued at once: the server takes them one after another
        queued.append((bad, comfy.run(bad.nodes, wait=False)))
    problems, messages = [], []
    for bad, run in queued:
        if run.status == 200:
            run.history = comfy.wait(run.response["prompt_id"])
        trouble = problem(run, bad)
        if trouble:
            problems.append(f"{bad.name}: {trouble}")
        messages.append(f"{bad.name}\n    {said(run)}")
    seconds = time.monotonic() - start
    print(f"{len(cases)} bad inputs refused in {seconds:.1f} s")
    if os.environ.get("ACESTEP_BATTERY_REPORT"):  # what users see, case by case, for reading them over
        Path(os.environ["ACESTEP_BATTERY_REPORT"]).write_text("\n".join(messages) + "\n")
    assert not problems, "\n".join(problems)
    for name, widgets in ODD_BUT_FINE.items():
        run = comfy.run(one(comfy, "AceStepFaithfulEncodePrompt", widgets))
        assert run.ok, f"{name}: {run}"
    answers_next(comfy)
    assert comfy.process.poll() is None
