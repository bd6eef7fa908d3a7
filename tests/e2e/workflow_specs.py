"""The example workflows in ``workflows/``, as compact node specs.

``write_workflows`` builds each one in ComfyUI's own frontend (``Frontend.build``: the frontend's node classes, so
the files are what the editor saves), lays it out left to right and writes ``workflows/<name>.json``:

    ACESTEP_WRITE_WORKFLOWS=1 .venv/bin/python -m pytest tests/e2e/test_workflows.py -k write

Settings are the official defaults (60 s, 60 steps; the official app's values for retake, repaint, extend and
edit); model files carry the names README.md tells users to use.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"

# Model files as the loaders list them, by their names in their model folders as core lists files (README: "Where to
# put model files for ComfyUI"): checkpoints/, acestep/ (the official folder), diffusion_models/, vae/, text_encoders/
ALL_IN_ONE = "ace_step_v1_3.5b.safetensors"
OFFICIAL = "ACE-Step-v1-3.5B"
SPLIT = {
    "dit": "ace_step_dit.safetensors",
    "vae": "ace_step_vae.safetensors",
    "text_encoder": "umt5_base.safetensors",
}
LORA = "ACE-Step-v1-chinese-rap-LoRA/pytorch_lora_weights.safetensors"
LORA15 = "acestep15_lora/adapter/adapter_model.safetensors"  # a LoRA the official 1.5 trainer exported
SONG = "song.wav"  # the user's audio in ComfyUI's input folder (they pick theirs)
VIDEO = "video.mp4"

PROMPT = (
    "funk, pop, soul, rock, melodic, guitar, drums, bass, keyboard, percussion, 105 BPM, energetic, upbeat, "
    "groovy, vibrant, dynamic"
)
LYRICS = (
    "[verse]\nNeon lights they flicker bright\nCity hums in dead of night\nRhythms pulse through concrete veins\n"
    "Lost in the echo of the city's refrains\n\n[chorus]\nTurn it up and let it flow\nFeel the fire let it grow"
)
EDIT_LYRICS = LYRICS.replace("Turn it up and let it flow", "Turn it up and let it go")
RAP_PROMPT = "rap, hip-hop, chinese rap, 808, trap beat, male vocals, 90 BPM"
RAP_LYRICS = "[verse]\n夜色里的霓虹灯在闪\n节奏在街头慢慢展开\n[chorus]\n跟着我一起唱\n让声音更响亮"


def _note(text: str) -> dict:
    return {"type": "MarkdownNote", "widgets": {"text": text}}


def _checkpoint(ckpt: str = ALL_IN_ONE) -> dict:
    return {"type": "AceStepFaithfulCheckpointLoader", "widgets": {"ckpt_name": ckpt}}


def _encode(prompt: str = PROMPT, lyrics: str = LYRICS, loader: str = "1") -> dict:
    return {
        "type": "AceStepFaithfulEncodePrompt",
        "widgets": {"prompt": prompt, "lyrics": lyrics},
        "inputs": {"text_encoder": [loader, "text_encoder"], "lyric_tokenizer": [loader, "lyric_tokenizer"]},
    }


def _sampler(
    latent: list, widgets: dict | None = None, dit=("1", "dit"), cond=("2", "conditioning"), **inputs
):
    return {
        "type": "AceStepFaithfulSampler",
        "widgets": widgets or {},
        "inputs": {"dit": list(dit), "conditioning": list(cond), "latent": latent, **inputs},
    }


def _tail(nodes: dict, latent_node: str, prefix: str, first_id: int, vae=("1", "vae")) -> dict:
    """Decode ``latent_node``'s latent and save it: ids ``first_id`` (decode) and ``first_id + 1`` (save)."""
    d, s = str(first_id), str(first_id + 1)
    nodes[d] = {
        "type": "AceStepFaithfulDecodeLatent",
        "inputs": {"latent": [latent_node, "latent"], "vae": list(vae)},
    }
    nodes[s] = {
        "type": "AceStepFaithfulSaveAudio",
        "widgets": {"filename_prefix": prefix, "format": "flac"},
        "inputs": {"audio": [d, "audio"]},
    }
    return nodes


def _song_latent(ids: tuple[str, str] = ("10", "11")) -> dict:
    """Load the user's audio and encode it: ids ``ids[0]`` (load) and ``ids[1]`` (encode)."""
    load, enc = ids
    return {
        load: {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": SONG}},
        enc: {
            "type": "AceStepFaithfulEncodeAudio",
            "inputs": {"audio": [load, "audio"], "vae": ["1", "vae"]},
        },
    }


MODELS_NOTE = (
    "Model files (see the pack's README): ComfyUI's all-in-one `ace_step_v1_3.5b.safetensors` in `models/checkpoints/`"
    ", or the official `ACE-Step-v1-3.5B` folder in `models/acestep/`."
)


def text2music() -> dict:
    nodes = {
        "1": _checkpoint(),
        "2": _encode(),
        "3": {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": 60.0, "batch_size": 1}},
        "4": _sampler(["3", "latent"]),
        "90": _note(
            "# ACE-Step text to music\nA song from a style prompt (tags) and lyrics.\n\n" + MODELS_NOTE
        ),
    }
    return _tail(nodes, "4", "ACE-Step/text2music", 5)


def text2music_split_loaders() -> dict:
    nodes = {
        "1": {"type": "AceStepFaithfulDiTLoader", "widgets": {"dit_name": SPLIT["dit"]}},
        "2": {"type": "AceStepFaithfulVAELoader", "widgets": {"vae_name": SPLIT["vae"]}},
        "3": {
            "type": "AceStepFaithfulTextEncoderLoader",
            "widgets": {"text_encoder_name": SPLIT["text_encoder"]},
        },
        "4": {"type": "AceStepFaithfulLyricTokenizerLoader"},
        "5": {"type": "AceStepFaithfulSpeakerLoader"},
        "6": {
            "type": "AceStepFaithfulEncodePrompt",
            "widgets": {"prompt": PROMPT, "lyrics": LYRICS},
            "inputs": {
                "text_encoder": ["3", "text_encoder"],
                "lyric_tokenizer": ["4", "lyric_tokenizer"],
                "speaker": ["5", "speaker"],
            },
        },
        "7": {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": 60.0, "batch_size": 1}},
        "8": _sampler(["7", "latent"], dit=("1", "dit"), cond=("6", "conditioning")),
        "90": _note(
            "# ACE-Step text to music, one loader per part\nThe DiT from `models/diffusion_models/`, the music DCAE + "
            "vocoder from `models/vae/`, UMT5 from `models/text_encoders/` (see the pack's README)."
        ),
    }
    return _tail(nodes, "8", "ACE-Step/text2music_split", 9, vae=("2", "vae"))


def retake() -> dict:
    nodes = {
        "1": _checkpoint(),
        "2": _encode(),
        "3": {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": 60.0, "batch_size": 1}},
        "4": {"type": "PrimitiveInt", "widgets": {"value": 42}},
        "5": _sampler(["3", "latent"], seed=["4", "INT"]),
        "6": {
            "type": "AceStepFaithfulMaskFromSeconds",
            "widgets": {"ranges": "0-end"},
            "inputs": {"latent": ["3", "latent"]},
        },
        "7": _sampler(["3", "latent"], {"retake_variance": 0.2}, seed=["4", "INT"], mask=["6", "mask"]),
        "90": _note(
            "# ACE-Step retake\nA variation of a song: the same seed, prompt and lyrics, and a mask over the whole "
            "song. `retake_variance` says how far it may move (official app: 0.2), `retake_seed` picks the "
            "variation.\n\n" + MODELS_NOTE
        ),
    }
    _tail(nodes, "5", "ACE-Step/original", 8)
    return _tail(nodes, "7", "ACE-Step/retake", 10)


def repaint() -> dict:
    nodes = {
        "1": _checkpoint(),
        "2": _encode(),
        **_song_latent(),
        "3": {
            "type": "AceStepFaithfulMaskFromSeconds",
            "widgets": {"ranges": "10-20"},
            "inputs": {"latent": ["11", "latent"]},
        },
        "4": _sampler(["11", "latent"], {"retake_variance": 0.2}, mask=["3", "mask"]),
        "90": _note(
            "# ACE-Step repaint\nRegenerates the given seconds of a song (`ranges`) and keeps the rest. Describe "
            "the song in the prompt and lyrics; `retake_variance` (official app: 0.2) says how far the part may "
            "move.\n\n" + MODELS_NOTE
        ),
    }
    return _tail(nodes, "4", "ACE-Step/repaint", 5)


def extend() -> dict:
    nodes = {
        "1": _checkpoint(),
        "2": _encode(),
        **_song_latent(),
        "3": {
            "type": "AceStepFaithfulExtendLatent",
            "widgets": {"left_seconds": 0.0, "right_seconds": 30.0},
            "inputs": {"latent": ["11", "latent"]},
        },
        "4": _sampler(["3", "latent"], {"retake_variance": 1.0}, mask=["3", "mask"]),
        "90": _note(
            "# ACE-Step extend\nAdds seconds before and/or after a song, as the official extend (variance 1.0, as "
            "the official app).\n\n" + MODELS_NOTE
        ),
    }
    return _tail(nodes, "4", "ACE-Step/extend", 5)


def edit() -> dict:
    nodes = {
        "1": _checkpoint(),
        "2": _encode(),
        "3": _encode(lyrics=EDIT_LYRICS),
        **_song_latent(),
        "4": {
            "type": "AceStepFaithfulFlowEdit",
            "widgets": {"n_min": 0.6, "n_max": 1.0},
            "inputs": {
                "dit": ["1", "dit"],
                "conditioning": ["2", "conditioning"],
                "target_conditioning": ["3", "conditioning"],
                "latent": ["11", "latent"],
            },
        },
        "90": _note(
            "# ACE-Step edit\nChanges a song from its own prompt and lyrics (top) to the target ones (bottom), "
            "keeping the rest: official flow-edit. n_min 0.6 / n_max 1.0 changes only the lyrics; 0.2 / 0.4 "
            "remixes.\n\n" + MODELS_NOTE
        ),
    }
    return _tail(nodes, "4", "ACE-Step/edit", 5)


def audio2audio() -> dict:
    nodes = {
        "1": _checkpoint(),
        "2": _encode(),
        **_song_latent(),
        "4": _sampler(["11", "latent"], {"reference_strength": 0.5}, reference=["11", "latent"]),
        "90": _note(
            "# ACE-Step audio to audio\nA new song that starts from a reference song: `reference_strength` says "
            "how much of it is kept (official 0.5).\n\n" + MODELS_NOTE
        ),
    }
    return _tail(nodes, "4", "ACE-Step/audio2audio", 5)


def lora() -> dict:
    nodes = {
        "1": _checkpoint(OFFICIAL),
        "2": _encode(RAP_PROMPT, RAP_LYRICS),
        "3": {
            "type": "AceStepFaithfulLoraLoader",
            "widgets": {"lora_name": LORA, "strength": 1.0},
            "inputs": {"dit": ["1", "dit"]},
        },
        "4": {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": 60.0, "batch_size": 1}},
        "5": _sampler(["4", "latent"], dit=("3", "dit")),
        "90": _note(
            "# ACE-Step with a LoRA\nThe official Chinese rap LoRA (Hugging Face `ACE-Step/ACE-Step-v1-chinese-rap-"
            "LoRA`, the folder in `models/loras/`) on the DiT of the official `ACE-Step-v1-3.5B` folder in "
            "`models/acestep/`. Chain more ACE-Step Load LoRA nodes to stack LoRAs."
        ),
    }
    return _tail(nodes, "5", "ACE-Step/lora", 6)


def music_for_video() -> dict:
    nodes = {
        "1": _checkpoint(),
        "2": _encode(),
        "3": {"type": "LoadVideo", "widgets": {"file": VIDEO}},
        "4": {"type": "GetVideoComponents", "inputs": {"video": ["3", "VIDEO"]}},
        "5": {"type": "AceStepFaithfulEmptyLatent", "inputs": {"video": ["3", "VIDEO"]}},
        "6": _sampler(["5", "latent"]),
        "7": {
            "type": "AceStepFaithfulDecodeLatent",
            "inputs": {"latent": ["6", "latent"], "vae": ["1", "vae"]},
        },
        "8": {
            "type": "CreateVideo",
            "inputs": {"images": ["4", "images"], "fps": ["4", "fps"], "audio": ["7", "audio"]},
        },
        "9": {
            "type": "SaveVideo",
            "widgets": {"filename_prefix": "ACE-Step/music_video"},
            "inputs": {"video": ["8", "VIDEO"]},
        },
        "90": _note(
            "# ACE-Step music for a video\nA song as long as the loaded video, put under its frames with ComfyUI's "
            "own video nodes (Get Video Components, Create Video, Save Video). An image batch works too: connect it "
            "to the empty latent's `images` input and set its fps.\n\n" + MODELS_NOTE
        ),
    }
    return nodes


# --- ACE-Step 1.5 -----------------------------------------------------------------------------------------------

# ComfyUI's repackaged 1.5 files (README: "Model files" for 1.5), which the frontend offers to download.
V15_REPO = "https://huggingface.co/Comfy-Org/ace_step_1.5_ComfyUI_files/resolve/main/split_files"
V15 = {
    "dit": "diffusion_models/acestep_v1.5_turbo.safetensors",
    "dit_base": "diffusion_models/acestep_v1.5_base.safetensors",
    "vae": "vae/ace_1.5_vae.safetensors",
    "text_encoder": "text_encoders/qwen_0.6b_ace15.safetensors",
    "lm": "text_encoders/qwen_1.7b_ace15.safetensors",
}
V15_CAPTION = "energetic synth-pop, female vocals, punchy drums, bright synth leads, 120 BPM"
V15_NOTE = (
    "Model files: ComfyUI's repackaged ACE-Step 1.5 files (Comfy-Org/ace_step_1.5_ComfyUI_files), each in its "
    "models/ folder, or the official `Ace-Step1.5` folder in `models/acestep/` (pick its `acestep-v15-*` folder in "
    "the loaders; its `silence_latent.pt` gives the official result exactly)."
)


def _model(value: str) -> dict:
    folder, _, name = value.partition("/")
    return {"name": name, "url": f"{V15_REPO}/{value}", "directory": folder}


def _name(value: str) -> str:
    """``folder/file`` as the loaders list it: the file's name in its folder."""
    return value.partition("/")[2]


def _loaders15(base: bool = False, lm: bool = False) -> dict:
    """DiT "1", VAE "2", text encoder "3" (and the 5 Hz LM "4") from ComfyUI's files, each naming its download."""
    dit = V15["dit_base" if base else "dit"]
    nodes = {
        "1": {
            "type": "AceStepFaithful15DiTLoader",
            "widgets": {"dit_name": _name(dit)},
            "models": [_model(dit)],
        },
        "2": {
            "type": "AceStepFaithful15VAELoader",
            "widgets": {"vae_name": _name(V15["vae"])},
            "models": [_model(V15["vae"])],
        },
        "3": {
            "type": "AceStepFaithful15TextEncoderLoader",
            "widgets": {"text_encoder_name": _name(V15["text_encoder"])},
            "models": [_model(V15["text_encoder"])],
        },
    }
    if lm:
        nodes["4"] = {
            "type": "AceStepFaithful15LMLoader",
            "widgets": {"lm_name": _name(V15["lm"])},
            "models": [_model(V15["lm"])],
        }
    return nodes


def _song15(task: str, note: str, prefix: str, base: bool = False, widgets: dict | None = None,
            inputs: dict | None = None, caption: str = V15_CAPTION, lyrics: str = LYRICS) -> dict:  # fmt: skip
    """Loaders -> Encode "5" -> Empty Latent "6" -> Sampler "7" (``task``, the user's song "8" as its source) ->
    Latent to Audio "9" -> Save "10"."""
    nodes = {
        **_loaders15(base),
        "5": {
            "type": "AceStepFaithful15Encode",
            "widgets": {"caption": caption, "lyrics": lyrics},
            "inputs": {"text_encoder": ["3", "text_encoder"]},
        },
        "6": {"type": "AceStepFaithful15EmptyLatent", "widgets": {"seconds": 60.0}},
        "7": {
            "type": "AceStepFaithful15Sampler",
            "widgets": {"task": task, **(widgets or {})},
            "inputs": {
                "dit": ["1", "dit"],
                "prompt": ["5", "prompt"],
                "latent": ["6", "latent"],
                **(inputs or {}),
            },
        },
        "9": {"type": "AceStepFaithful15Decode", "inputs": {"vae": ["2", "vae"], "latent": ["7", "latent"]}},
        "10": {
            "type": "AceStepFaithfulSaveAudio",
            "widgets": {"filename_prefix": f"ACE-Step-1.5/{prefix}", "format": "flac"},
            "inputs": {"audio": ["9", "audio"]},
        },
        "90": _note(note + "\n\n" + V15_NOTE),
    }
    if task != "text2music" or "reference_audio" in (inputs or {}):
        nodes["8"] = {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": SONG}}
    return nodes


SOURCE = {"vae": ["2", "vae"], "source_audio": ["8", "audio"]}


def ace15_text2music() -> dict:
    nodes = {
        **_loaders15(lm=True),
        "11": {
            "type": "AceStepFaithful15Planner",
            "widgets": {"caption": V15_CAPTION, "lyrics": LYRICS, "duration": -1.0},
            "inputs": {"lm": ["4", "lm"]},
        },
        "5": {
            "type": "AceStepFaithful15Encode",
            "widgets": {"caption": V15_CAPTION, "lyrics": LYRICS},
            "inputs": {"text_encoder": ["3", "text_encoder"], "plan": ["11", "plan"]},
        },
        "6": {"type": "AceStepFaithful15EmptyLatent", "inputs": {"seconds": ["11", "duration"]}},
        "7": {
            "type": "AceStepFaithful15Sampler",
            "inputs": {
                "dit": ["1", "dit"],
                "prompt": ["5", "prompt"],
                "latent": ["6", "latent"],
                "audio_codes": ["11", "audio_codes"],
            },
        },  # fmt: skip
        "9": {"type": "AceStepFaithful15Decode", "inputs": {"vae": ["2", "vae"], "latent": ["7", "latent"]}},
        "10": {
            "type": "AceStepFaithfulSaveAudio",
            "widgets": {"filename_prefix": "ACE-Step-1.5/text2music", "format": "flac"},
            "inputs": {"audio": ["9", "audio"]},
        },
        "12": {"type": "PreviewAny", "inputs": {"source": ["11", "metadata"]}},
        "90": _note(
            "# ACE-Step 1.5 text to music, planned by the 5 Hz LM\nAs the official app: the LM fills in what "
            "Plan leaves on auto (bpm, key, time signature, duration, a richer caption), writes the song's audio "
            "codes, and the turbo DiT renders them. The plan's metadata shows on the right; its codes go to the "
            "sampler.\n\n" + V15_NOTE
        ),
    }
    return nodes


def ace15_text2music_turbo() -> dict:
    nodes = _song15(
        "text2music", "# ACE-Step 1.5 text to music (turbo, no LM)\nThe turbo DiT alone: 8 steps, from the caption, "
        "lyrics and the metadata you give.", "turbo",
    )  # fmt: skip
    nodes["5"]["widgets"].update(bpm=120, key_scale="A minor", time_signature="4")
    return nodes


def ace15_base_apg() -> dict:
    return _song15(
        "text2music", "# ACE-Step 1.5 base model with CFG\nThe base DiT: 50 steps with CFG (the official APG; "
        "use_adg for ADG).", "base", base=True, widgets={"steps": 50, "guidance_scale": 7.0, "shift": 3.0},
    )  # fmt: skip


def ace15_cover() -> dict:
    return _song15(
        "cover", "# ACE-Step 1.5 cover\nA new version of your song (`song.wav` in ComfyUI's input folder): "
        "`audio_cover_strength` is the share of steps that follow it.", "cover", inputs=SOURCE,
    )  # fmt: skip


def ace15_repaint() -> dict:
    return _song15(
        "repaint", "# ACE-Step 1.5 repaint\nRemakes seconds 10 to 20 of your song and keeps the rest. A mask "
        "(or a latent noise mask) can mark the window instead.", "repaint", inputs=SOURCE,
        widgets={"repainting_start": 10.0, "repainting_end": 20.0},
    )  # fmt: skip


def ace15_extend() -> dict:
    return _song15(
        "repaint", "# ACE-Step 1.5 extend\nOutpainting: a window past the song's end (here 60 to 90 s of a 60 s "
        "song: set `repainting_start` to your song's length) adds music after it; a negative start adds some "
        "before it.", "extend", inputs=SOURCE, widgets={"repainting_start": 60.0, "repainting_end": 90.0},
    )  # fmt: skip


def ace15_extract() -> dict:
    return _song15(
        "extract", "# ACE-Step 1.5 extract\nOne track (here the vocals) out of your song. Base model only, as "
        "official.", "extract", base=True, inputs=SOURCE, widgets={"track_name": "vocals", "steps": 50},
    )  # fmt: skip


def ace15_lego() -> dict:
    return _song15(
        "lego", "# ACE-Step 1.5 lego\nAdds one track (here drums) to your song, in the window given (-1: to the "
        "end). Base model only, as official.", "lego", base=True, inputs=SOURCE,
        widgets={"track_name": "drums", "steps": 50},
    )  # fmt: skip


def ace15_complete() -> dict:
    return _song15(
        "complete", "# ACE-Step 1.5 complete\nCompletes your song with the tracks named (here drums and bass). "
        "Base model only, as official.", "complete", base=True, inputs=SOURCE,
        widgets={"complete_tracks": "drums, bass", "steps": 50},
    )  # fmt: skip


def ace15_reference_timbre() -> dict:
    return _song15(
        "text2music", "# ACE-Step 1.5 with a reference timbre\nA new song that follows the sound of yours "
        "(official reference_audio).", "reference", inputs={"vae": ["2", "vae"], "reference_audio": ["8", "audio"]},
    )  # fmt: skip


def ace15_lora() -> dict:
    nodes = _song15(
        "text2music", "# ACE-Step 1.5 with a LoRA\nYour LoRA from the official trainer: put its export folder "
        "(the one holding `adapter/`) in `models/loras/` as `acestep15_lora` (or pick yours) and choose its "
        "`adapter/adapter_model.safetensors`; `adapter_config.json` beside it gives the official scale. `strength` "
        "is the official LoRA scale (the app's slider, 0..1). Chain more Load LoRA nodes to stack LoRAs.",
        "lora", inputs={"dit": ["4", "dit"]},
    )  # fmt: skip
    nodes["4"] = {
        "type": "AceStepFaithful15LoraLoader",
        "widgets": {"lora_name": LORA15, "strength": 1.0},
        "inputs": {"dit": ["1", "dit"]},
    }
    return nodes


SPECS = {
    "text2music": text2music,
    "text2music_split_loaders": text2music_split_loaders,
    "retake": retake,
    "repaint": repaint,
    "extend": extend,
    "edit": edit,
    "audio2audio": audio2audio,
    "lora": lora,
    "music_for_video": music_for_video,
    "ace15_text2music": ace15_text2music,
    "ace15_text2music_turbo": ace15_text2music_turbo,
    "ace15_base_apg": ace15_base_apg,
    "ace15_cover": ace15_cover,
    "ace15_repaint": ace15_repaint,
    "ace15_extend": ace15_extend,
    "ace15_extract": ace15_extract,
    "ace15_lego": ace15_lego,
    "ace15_complete": ace15_complete,
    "ace15_reference_timbre": ace15_reference_timbre,
    "ace15_lora": ace15_lora,
}


# --- building and laying out ----------------------------------------------------------------------------------------

GAP_X, GAP_Y = 60, 40
NOTE_SIZE = [420, 220]


def layout(workflow: dict) -> dict:
    """Left to right by dependency depth, each column stacked top down; notes first in the first column."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    parents: dict[int, list[int]] = {i: [] for i in nodes}
    for link in workflow["links"]:
        _, src, _, dst, *_ = link
        parents[dst].append(src)
    depth: dict[int, int] = {}

    def depth_of(i: int) -> int:
        if i not in depth:
            depth[i] = 1 + max((depth_of(p) for p in parents[i]), default=-1)
        return depth[i]

    columns: dict[int, list[dict]] = {}
    for i, node in sorted(nodes.items()):
        if node["type"] in ("Note", "MarkdownNote"):
            node["size"] = list(NOTE_SIZE)
        columns.setdefault(depth_of(i), []).append(node)
    x = 0
    for col in sorted(columns):
        group = sorted(columns[col], key=lambda n: (n["type"] not in ("Note", "MarkdownNote"), n["id"]))
        y = 0
        for node in group:
            node["pos"] = [x, y]
            y += node["size"][1] + GAP_Y + 30  # + the title bar
        x += max(n["size"][0] for n in group) + GAP_X
    workflow.setdefault("extra", {})["ds"] = {"scale": 0.7, "offset": [40, 40]}  # the whole graph in view
    return workflow


def build(frontend, name: str) -> dict:
    spec = SPECS[name]()
    workflow = frontend.build(spec)
    # an id of its own, stable across rewrites: frontend 1.4x opens a workflow whose id it has open by switching
    # to that tab, so files sharing one id (the editor's nil id) would show each other
    workflow["id"] = str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"https://github.com/comfyui-acestep/workflows/{name}")
    )
    for node in workflow["nodes"]:  # the files the frontend offers to download when they are missing
        if spec[str(node["id"])].get("models"):
            node.setdefault("properties", {})["models"] = spec[str(node["id"])]["models"]
    return layout(workflow)


def write_workflows(frontend) -> list[Path]:
    WORKFLOWS.mkdir(exist_ok=True)
    written = []
    for name in SPECS:
        path = WORKFLOWS / f"{name}.json"
        path.write_text(
            json.dumps(build(frontend, name), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        written.append(path)
    return written


# --- running with changed settings ----------------------------------------------------------------------------------

LOAD_WITH_WIDGETS_JS = """async ({workflow, widgets}) => {
  await app.loadGraphData(workflow);
  for (const node of app.graph._nodes) {
    for (const [name, value] of Object.entries(widgets[node.type] || {})) {
      const w = node.widgets?.find((w) => w.name === name);
      if (!w) throw new Error(`${node.type} has no widget ${name}`);
      w.value = value;
    }
  }
  const p = await app.graphToPrompt();
  return {output: p.output, workflow: p.workflow};
}"""


def run_with(frontend, workflow: dict, widgets: dict[str, dict] | None = None, wait: bool = True):
    """Load ``workflow`` as a user does, set ``widgets`` ({node type: {widget: value}}, on every node of that type)
    as a user would type them, and queue it: the harness's ``Run`` (``wait=False``: not waited for)."""
    Run = type(frontend).run.__globals__["Run"]  # the harness's result type (tests/e2e/conftest.py)
    r = frontend.page.evaluate(LOAD_WITH_WIDGETS_JS, {"workflow": workflow, "widgets": widgets or {}})
    client_id = frontend.page.evaluate("() => app.api.clientId")
    status, response = frontend.comfy.queue(r["output"], r["workflow"], client_id)
    run = Run(status, response, r["output"])
    if status == 200 and wait:
        run.history = frontend.comfy.wait(response["prompt_id"])
    return run
