"""A real ComfyUI with this pack, driven the way a person drives it.

``comfy`` (session): boots ``build/comfyui/main.py --cpu`` on a free loopback port with a throw-away base directory:
our pack linked into its ``custom_nodes/``, tiny random-weight checkpoints in its model folders under the names the
README and workflows use, a few audio files in its input folder. Torn down at the end of the session.

``frontend`` (session): ComfyUI's own web frontend in headless Debian chromium (via playwright). ``build`` turns a
compact node spec into a UI-format workflow with the frontend's own node classes; ``run`` loads a UI-format
workflow (``app.loadGraphData``), converts it with ``app.graphToPrompt()``, queues it on ``/prompt`` and waits on
``/history`` as the Queue button does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[2]
PACK_DIR_NAME = "comfyui-acestep"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BOOT_TIMEOUT = 180  # s: ComfyUI imports torch and its ~500 nodes (about 15 s on 2 cores)
PROMPT_TIMEOUT = 120  # s per queued workflow (tiny models: a few seconds)

# Test audio in the input folder: 3 s of stereo tones and noise at 44.1 kHz, plus broken files for the error tests.
TONE_SECONDS, TONE_RATE = 3.0, 44100

# Model files (as the loaders list them), under the names the README and the example workflows use.
MODELS = {
    "all_in_one": "checkpoints/ace_step_v1_3.5b.safetensors",
    "dit": "diffusion_models/ace_step_dit.safetensors",
    "vae": "vae/ace_step_vae.safetensors",
    "text_encoder": "text_encoders/umt5_base.safetensors",
    "official": "acestep/ACE-Step-v1-3.5B",
    "not_acestep": "vae/not_acestep.safetensors",  # an SD-style VAE file: the wrong model type
    "vae_as_dit": "diffusion_models/ace_step_vae_in_wrong_folder.safetensors",  # the VAE where a DiT should be
    # in models/loras/: the official LoRA's Hugging Face folder (ACE-Step/ACE-Step-v1-chinese-rap-LoRA), tiny here
    "lora": "loras/ACE-Step-v1-chinese-rap-LoRA/pytorch_lora_weights.safetensors",
    # ACE-Step 1.5 (tiny): the official Ace-Step1.5/ folder with the turbo DiT and the 5 Hz LM, a second with the DiT
    # as acestep-v15-base, and ComfyUI's repackaged DiT file (with the official silence_latent.pt beside it)
    "v15": "acestep/Ace-Step1.5",
    "v15_dit_folder": "acestep/Ace-Step1.5/acestep-v15-turbo",
    "v15_lm": "acestep/Ace-Step1.5/acestep-5Hz-lm-0.6B",
    "v15_base": "acestep/Ace-Step1.5-base",
    "v15_dit_file": "diffusion_models/acestep_v1.5_turbo.safetensors",
    "v15_base_file": "diffusion_models/acestep_v1.5_base.safetensors",
    "v15_vae_file": "vae/ace_1.5_vae.safetensors",
    "v15_text_encoder_file": "text_encoders/qwen_0.6b_ace15.safetensors",
    "v15_lm_file": "text_encoders/qwen_1.7b_ace15.safetensors",
    # a 1.5 LoRA as the official trainer exports it (the folder holds adapter/), for the tiny DiT
    "v15_lora": "loras/acestep15_lora/adapter/adapter_model.safetensors",
    "v15_lokr": "loras/acestep15_lokr/lokr_weights.safetensors",  # the official LoKr trainer's, default config
}
V15_TINY = Path(__file__).resolve().parents[1] / "golden" / "v15" / "pipeline" / "tiny"
V15_TINY_LM = Path(__file__).resolve().parents[1] / "golden" / "v15" / "lm" / "tiny-lm"
V15_TINY_LORA = Path(__file__).resolve().parents[1] / "golden" / "v15" / "lora" / "official_lora"
V15_TINY_LOKR = Path(__file__).resolve().parents[1] / "golden" / "v15" / "lora" / "lokr" / "defaults"
# Broken and wrong files for the bad-input tests (in checkpoints/, which every loader lists), as the loaders list them.
BAD_MODELS = {
    "zero": "checkpoints/bad_zero.safetensors",  # 0 bytes
    "truncated": "checkpoints/bad_truncated.safetensors",  # the all-in-one file cut in half
    "random": "checkpoints/bad_random.safetensors",  # random bytes
    "text": "checkpoints/bad_text.safetensors",  # a text file
    "partial_dit": "diffusion_models/bad_partial_dit.safetensors",  # a DiT without its timestep block
    # the tiny DiT (32 wide) without its config: its head split is in no tensor's shape
    "narrow_dit": "diffusion_models/narrow_dit.safetensors",
    "narrow_dit_folder": "acestep/narrow_dit",  # the same with its config.json beside it: loads
}
BAD_LORAS = {  # in models/loras/
    "zero": "bad_zero.safetensors",
    "random": "bad_random.safetensors",
    "dit": "bad_dit_not_a_lora.safetensors",  # a DiT checkpoint
    "wrong_size": "bad_wrong_size_lora.safetensors",  # a LoRA made for a wider model
}
BAD_SPEAKERS = {  # in models/acestep_speakers/
    "two_tensors": "bad_two_tensors.safetensors",
    "matrix": "bad_matrix.npy",
    "nan": "bad_nan.npy",
    "zero": "bad_zero.safetensors",
    "pickle": "bad_pickle.npy",  # an object array: a pickle, never loaded
    "text": "bad_text.npy",
    "wide": "bad_wide.safetensors",  # 7 values: not the tiny DiT's 16
}
BAD_AUDIO = {  # in the input folder, beside tone.wav
    "zero": "bad_zero.wav",  # 0 bytes
    "text": "bad_text.wav",
    "random": "bad_random.wav",
    "image": "bad_image.mp3",  # a PNG under an audio name
    "truncated": "bad_truncated.wav",  # tone.wav cut to its first 300 bytes
    "short": "bad_short.wav",  # a valid file of 0.2 s
    "channels": "bad_5ch.wav",  # 1 s in 5 channels
}
TINY_LORA = Path(__file__).resolve().parents[1] / "golden" / "lora" / "tiny_lora"
# A 2 s video (24 frames at 12 fps, no sound) in the input folder, for the music-for-a-video workflow.
CLIP, CLIP_FRAMES, CLIP_FPS = "clip.mp4", 24, 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the test process dies without tearing it down (killed CI run)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _comfyui_root() -> Path:
    for cand in (os.environ.get("COMFYUI_PATH"), ROOT / "build" / "comfyui"):
        if cand and (Path(cand) / "main.py").is_file():
            return Path(cand)
    pytest.fail("No ComfyUI copy in build/comfyui: run `bash scripts/setup_env.sh` (or set COMFYUI_PATH)")


def _write_models(models: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from acestep_models.v1.checkpoint import split
    from tiny_checkpoints import TINY, write_all_in_one

    (models / "checkpoints").mkdir(parents=True)
    write_all_in_one(models / MODELS["all_in_one"])
    # the split loaders' files as `python -m acestep_models split` writes them from the all-in-one file
    for part, path in split(models / MODELS["all_in_one"], models).items():
        assert path.relative_to(models).as_posix() == MODELS[part]
    shutil.copytree(TINY, models / MODELS["official"])
    g = torch.Generator().manual_seed(0)
    save_file(
        {
            "encoder.conv_in.weight": torch.randn(128, 3, 3, 3, generator=g),
            "decoder.conv_out.bias": torch.zeros(3),
        },
        str(models / MODELS["not_acestep"]),
    )
    shutil.copy(models / MODELS["vae"], models / MODELS["vae_as_dit"])
    shutil.copytree(TINY_LORA, (models / MODELS["lora"]).parent)
    _write_v15_models(models)
    _write_bad_models(models)


def _write_v15_models(models: Path) -> None:
    from safetensors.torch import load_file, save_file

    from acestep_models.common.weights import CONFIG_METADATA

    shutil.copytree(V15_TINY, models / MODELS["v15"])
    shutil.copytree(V15_TINY_LM, models / MODELS["v15_lm"])
    base = models / MODELS["v15_base"]
    shutil.copytree(V15_TINY, base, ignore=shutil.ignore_patterns("acestep-v15-turbo"))
    shutil.copytree(V15_TINY / "acestep-v15-turbo", base / "acestep-v15-base")
    config = json.loads((base / "acestep-v15-base" / "config.json").read_text())
    config.update(is_turbo=False, model_version="base")
    (base / "acestep-v15-base" / "config.json").write_text(json.dumps(config))
    # ComfyUI's file names (the workflows use them), each with its tiny config in the metadata (sizes no shape
    # tells); the DiTs with the official silence_latent.pt beside them (tiny: core's built-in one is 64 wide)
    dit = V15_TINY / "acestep-v15-turbo"
    turbo = (dit / "config.json").read_text()
    base_config = json.dumps({**json.loads(turbo), "is_turbo": False, "model_version": "base"})
    for key, part, weights, config in (
        ("v15_dit_file", "dit", dit / "model.safetensors", turbo),
        ("v15_base_file", "dit", dit / "model.safetensors", base_config),
        ("v15_vae_file", "vae", V15_TINY / "vae" / "diffusion_pytorch_model.safetensors", None),
        (
            "v15_text_encoder_file",
            "text_encoder",
            V15_TINY / "Qwen3-Embedding-0.6B" / "model.safetensors",
            None,
        ),
        ("v15_lm_file", "lm", V15_TINY_LM / "model.safetensors", None),
    ):
        folder = weights.parent
        config = config or (folder / "config.json").read_text()
        sd = load_file(weights)
        if (
            part == "text_encoder"
        ):  # one file reads ComfyUI's own Qwen vocabulary: the embedding needs its rows
            sd, config = _full_vocab(sd, config)
        save_file(sd, str(models / MODELS[key]), metadata={CONFIG_METADATA.format(part=part): config})
    shutil.copy(dit / "silence_latent.pt", (models / MODELS["v15_dit_file"]).parent)
    shutil.copytree(V15_TINY_LORA, (models / MODELS["v15_lora"]).parents[1])
    shutil.copytree(V15_TINY_LOKR, (models / MODELS["v15_lokr"]).parent)


def _full_vocab(sd: dict, config: str) -> tuple[dict, str]:
    """The tiny text encoder with Qwen3's whole vocabulary (151,669 rows, seeded random), as a real file has it."""
    import torch

    from acestep_models.v15.checkpoint import TEXT_VOCAB_END

    key = next(k for k in sd if k.endswith("embed_tokens.weight"))
    g = torch.Generator().manual_seed(1)
    sd = {**sd, key: torch.randn(TEXT_VOCAB_END, sd[key].shape[1], generator=g)}
    return sd, json.dumps({**json.loads(config), "vocab_size": TEXT_VOCAB_END})


def _write_bad_models(models: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from tiny_checkpoints import official_part

    rng = np.random.default_rng(0)
    whole = (models / MODELS["all_in_one"]).read_bytes()
    for name, data in {
        "zero": b"",
        "truncated": whole[: len(whole) // 2],
        "random": rng.bytes(4096),
        "text": b"this is not a model\n" * 20,
    }.items():
        (models / BAD_MODELS[name]).write_bytes(data)
    dit, dit_config = official_part("dit")
    save_file(
        {k: v for k, v in dit.items() if not k.startswith("t_block.")},
        str(models / BAD_MODELS["partial_dit"]),
    )
    save_file(dit, str(models / BAD_MODELS["narrow_dit"]))  # no config in its metadata
    folder = models / BAD_MODELS["narrow_dit_folder"]
    folder.mkdir(parents=True)
    shutil.copy(models / BAD_MODELS["narrow_dit"], folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(dit_config))

    loras = models / "loras"
    (loras / BAD_LORAS["zero"]).write_bytes(b"")
    (loras / BAD_LORAS["random"]).write_bytes(rng.bytes(4096))
    shutil.copy(models / BAD_MODELS["narrow_dit"], loras / BAD_LORAS["dit"])
    lora = load_file(TINY_LORA / "pytorch_lora_weights.safetensors")
    wider = {k: torch.cat([v, v], 1) if "lora_A" in k else v for k, v in lora.items()}  # twice as wide
    save_file(wider, str(loras / BAD_LORAS["wrong_size"]))

    speakers = models / "acestep_speakers"
    speakers.mkdir()
    save_file({"a": torch.zeros(16), "b": torch.zeros(16)}, str(speakers / BAD_SPEAKERS["two_tensors"]))
    np.save(speakers / BAD_SPEAKERS["matrix"], np.zeros((4, 16), np.float32))
    np.save(speakers / BAD_SPEAKERS["nan"], np.full(16, np.nan, np.float32))
    (speakers / BAD_SPEAKERS["zero"]).write_bytes(b"")
    np.save(speakers / BAD_SPEAKERS["pickle"], np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (speakers / BAD_SPEAKERS["text"]).write_text("0.1, 0.2, 0.3\n")
    save_file({"speaker": torch.ones(7)}, str(speakers / BAD_SPEAKERS["wide"]))


def _write_inputs(inputs: Path) -> None:
    inputs.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(TONE_SECONDS * TONE_RATE)) / TONE_RATE
    rng = np.random.default_rng(0)
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    right = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size)
    soundfile.write(
        inputs / "tone.wav", np.stack([left, right], 1).astype(np.float32), TONE_RATE, subtype="FLOAT"
    )
    nan = np.stack([left, right], 1).astype(np.float32)
    nan[1000:1100] = np.nan
    soundfile.write(inputs / "nan.wav", nan, TONE_RATE, subtype="FLOAT")
    soundfile.write(inputs / "empty.wav", np.zeros((0, 2), np.float32), TONE_RATE, subtype="FLOAT")
    _write_clip(inputs / CLIP)
    rng = np.random.default_rng(1)
    (inputs / BAD_AUDIO["zero"]).write_bytes(b"")
    (inputs / BAD_AUDIO["text"]).write_text("[verse]\nthese are lyrics, not audio\n")
    (inputs / BAD_AUDIO["random"]).write_bytes(
        b"\0" + rng.bytes(4095)
    )  # (not by chance an MP3 frame's start)
    (inputs / BAD_AUDIO["image"]).write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(512))
    (inputs / BAD_AUDIO["truncated"]).write_bytes((inputs / "tone.wav").read_bytes()[:300])
    short = np.stack([left, right], 1)[: int(0.2 * TONE_RATE)].astype(np.float32)
    soundfile.write(inputs / BAD_AUDIO["short"], short, TONE_RATE, subtype="FLOAT")
    five = np.repeat(left[:TONE_RATE, None], 5, 1).astype(np.float32)
    soundfile.write(inputs / BAD_AUDIO["channels"], five, TONE_RATE, subtype="FLOAT")


def _write_clip(path: Path) -> None:
    import av

    with av.open(str(path), "w") as f:
        video = f.add_stream("mpeg4", rate=CLIP_FPS)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for i in range(CLIP_FRAMES):
            rgb = np.full((48, 64, 3), (i * 10, 128, 255 - i * 10), np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                f.mux(packet)
        for packet in video.encode():
            f.mux(packet)


@dataclass
class Comfy:
    """A running ComfyUI: its URL, folders and log, and thin /prompt and /history calls."""

    url: str
    base: Path
    log_path: Path
    process: subprocess.Popen
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    models: dict = field(default_factory=lambda: dict(MODELS))  # each test model under models/ (folder/name)
    bad_models: dict = field(default_factory=lambda: dict(BAD_MODELS))  # broken or wrong files, as listed
    tone_seconds: float = TONE_SECONDS  # length of input/tone.wav
    root: Path | None = None  # the ComfyUI copy it runs
    _object_info: dict | None = None

    def option(self, key: str) -> str:
        """A test model as the loaders list it: its name inside its model folder, as core lists files
        (``models[key]`` itself, with the folder in front, is how workflows saved before 0.3 name it)."""
        return self.models[key].partition("/")[2]

    @property
    def output(self) -> Path:
        return self.base / "output"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def queue(
        self, prompt: dict, workflow: dict | None = None, client_id: str | None = None
    ) -> tuple[int, dict]:
        """POST /prompt as the frontend does: the API prompt, and the UI workflow for the files' metadata.
        ``client_id``: the browser tab that gets the progress and results (as if it had pressed Queue)."""
        extra = {"extra_pnginfo": {"workflow": workflow}} if workflow is not None else {}
        body = {"prompt": prompt, "client_id": client_id or self.client_id, "extra_data": extra}
        return self.post("/prompt", body)

    def wait(self, prompt_id: str, timeout: float = PROMPT_TIMEOUT) -> dict:
        """The /history entry of a finished prompt (``status.status_str`` is "success" or "error")."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"ComfyUI exited ({self.process.returncode}) while running a prompt:\n{self.tail()}"
                )
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"]["status_str"] in ("success", "error"):
                    return entry
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def api_prompt(self, nodes: dict) -> dict:
        """The API-format prompt of ``{id: {"type", "widgets": {name: value}, "inputs": {name: [id, output]}}}``
        (the compact spec ``Frontend.build`` takes), every widget not given at its default as the frontend fills
        them in. Values go as they are: NaN and inf reach the server as a hand-made request sends them (the
        frontend cannot: JSON.stringify writes null)."""
        if self._object_info is None:
            self._object_info = self.get("/object_info")
        prompt = {}
        for node_id, spec in nodes.items():
            info = self._object_info[spec["type"]]
            inputs = {}
            declared = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
            for name, (kind, options) in ((k, (v + [{}])[:2]) for k, v in declared.items()):
                if isinstance(kind, list) and kind:
                    inputs[name] = options.get("default", kind[0])
                elif kind == "COMBO" and options.get("options"):
                    inputs[name] = options.get("default", options["options"][0])
                elif kind in ("INT", "FLOAT", "STRING", "BOOLEAN") and "default" in options:
                    inputs[name] = options["default"]
            inputs.update(spec.get("widgets", {}))
            for name, (from_id, output) in spec.get("inputs", {}).items():
                outputs = self._object_info[nodes[from_id]["type"]]["output_name"]
                inputs[name] = [from_id, outputs.index(output) if isinstance(output, str) else output]
            prompt[node_id] = {"class_type": spec["type"], "inputs": inputs}
        return prompt

    def run(self, nodes: dict, wait: bool = True) -> Run:
        """Queue ``nodes`` (see ``api_prompt``) on /prompt as an API client does; with ``wait``, until it ends."""
        prompt = self.api_prompt(nodes)
        status, response = self.queue(prompt)
        run = Run(status, response, prompt)
        if status == 200 and wait:
            run.history = self.wait(response["prompt_id"])
        return run


@pytest.fixture(scope="session")
def comfy(tmp_path_factory) -> Comfy:
    comfyui = _comfyui_root()
    base = tmp_path_factory.mktemp("comfyui_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(ROOT, target_is_directory=True)
    for d in ("output", "temp", "user"):
        (base / d).mkdir()
    _write_models(base / "models")
    _write_inputs(base / "input")

    port = _free_port()
    log_path = base / "comfyui.log"
    cmd = [
        os.environ.get(
            "COMFYUI_PYTHON", sys.executable
        ),  # ComfyUI 0.20.1 runs in .venv20 (scripts/setup_env.sh)
        "main.py",
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-directory",
        str(base),
        "--disable-auto-launch",
        "--disable-api-nodes",  # no partner API nodes: nothing talks to the internet
        "--preview-method",
        "auto",  # samplers send a preview image with each step's progress
        "--database-url",
        "sqlite:///:memory:",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    env.pop(
        "COMFYUI_PATH", None
    )  # the engine must find ComfyUI's vocabulary through the running ComfyUI itself
    log = open(log_path, "w")
    process = subprocess.Popen(
        cmd,
        cwd=comfyui,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    server = Comfy(f"http://127.0.0.1:{port}", base, log_path, process, root=comfyui)
    try:
        end = time.monotonic() + BOOT_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode} while starting:\n{server.tail()}")
            try:
                server.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > end:
                    pytest.fail(f"ComfyUI did not answer within {BOOT_TIMEOUT} s:\n{server.tail()}")
                time.sleep(0.5)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(15)
        log.close()


# --- the browser -------------------------------------------------------------------------------------------------------

# Builds a graph from {"nodes": {id: {"type", "widgets": {name: value}, "inputs": {name: [from_id, output_name]}}}}
# with the frontend's own node classes, and returns it serialised (UI format, as "Save" writes it).
BUILD_JS = """(spec) => {
  const graph = app.graph;
  graph.clear();
  const nodes = {};
  let x = 0;
  for (const [id, s] of Object.entries(spec.nodes)) {
    const node = LiteGraph.createNode(s.type);
    if (!node) throw new Error(`unknown node type ${s.type}`);
    node.id = Number(id);
    node.pos = [x, 0];
    x += 350;
    graph.add(node);
    for (const [name, value] of Object.entries(s.widgets || {})) {
      const w = node.widgets?.find((w) => w.name === name);
      if (!w) throw new Error(`${s.type} has no widget ${name}`);
      w.value = value;
    }
    nodes[id] = node;
  }
  for (const [id, s] of Object.entries(spec.nodes)) {
    for (const [name, [fromId, outName]] of Object.entries(s.inputs || {})) {
      const from = nodes[fromId], to = nodes[id];
      const out = from.outputs.findIndex((o) => o.name === outName);
      const inp = to.inputs.findIndex((i) => i.name === name);
      if (out < 0 || inp < 0) throw new Error(`cannot link ${from.type}.${outName} -> ${to.type}.${name}`);
      if (!from.connect(out, to, inp)) throw new Error(`link refused: ${from.type}.${outName} -> ${to.type}.${name}`);
    }
  }
  return JSON.parse(JSON.stringify(graph.serialize()));
}"""

TO_PROMPT_JS = """async (workflow) => {
  await app.loadGraphData(workflow);
  const p = await app.graphToPrompt();
  return {output: p.output, workflow: p.workflow};
}"""


@dataclass
class Run:
    """What a queued workflow did: /prompt's answer and, if it was accepted, its /history entry."""

    status: int  # HTTP status of /prompt (400: ComfyUI refused it before running)
    response: dict
    prompt: dict
    history: dict | None = None

    @property
    def ok(self) -> bool:
        return self.history is not None and self.history["status"]["status_str"] == "success"

    @property
    def outputs(self) -> dict:
        return (self.history or {}).get("outputs", {})

    def __str__(self) -> str:
        """What went wrong, for assertion messages."""
        if self.history is None:
            return f"/prompt refused it ({self.status}): {json.dumps(self.response)[:3000]}"
        for kind, data in self.history["status"]["messages"]:
            if kind == "execution_error":
                trace = "".join(data.get("traceback", []))
                return (
                    f"{data['node_type']} (#{data['node_id']}) failed: {data['exception_message']}\n{trace}"
                )
        return f"status {self.history['status']['status_str']}"

    def error(self) -> dict:
        """The execution error message of a failed run (node_id, node_type, exception_message, ...)."""
        for kind, data in (self.history or {}).get("status", {}).get("messages", []):
            if kind == "execution_error":
                return data
        raise AssertionError(
            f"no execution error: /prompt -> {self.status} {self.response}, history {self.history}"
        )


class Frontend:
    def __init__(self, comfy: Comfy, page, console: list[str]):
        self.comfy, self.page, self.console = comfy, page, console

    def build(self, nodes: dict) -> dict:
        """A UI-format workflow (what the frontend saves) from ``{id: {"type", "widgets", "inputs"}}``."""
        return self.page.evaluate(BUILD_JS, {"nodes": nodes})

    def to_prompt(self, workflow: dict) -> tuple[dict, dict]:
        """Load a UI-format workflow into the canvas and convert it as the Queue button does: (API prompt, workflow)."""
        r = self.page.evaluate(TO_PROMPT_JS, workflow)
        return r["output"], r["workflow"]

    def run(self, workflow: dict) -> Run:
        prompt, ui_workflow = self.to_prompt(workflow)
        client_id = self.page.evaluate("() => app.api.clientId")  # the tab's websocket gets the results
        status, response = self.comfy.queue(prompt, ui_workflow, client_id)
        run = Run(status, response, prompt)
        if status == 200:
            run.history = self.comfy.wait(response["prompt_id"])
        return run


@pytest.fixture(scope="session")
def frontend(comfy: Comfy):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run `bash scripts/setup_env.sh` (installs Debian's chromium)")
    console: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(comfy.url + "/")
            page.wait_for_function(
                "() => window.app?.graph && window.LiteGraph?.registered_node_types?.AceStepFaithfulLoadAudio"
                " && app.api.clientId",  # node types registered, websocket connected
                timeout=120_000,
            )
            yield Frontend(comfy, page, console)
        finally:
            browser.close()
