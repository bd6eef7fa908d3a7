"""Every example workflow in ``workflows/`` runs end to end in a real ComfyUI: loaded into the frontend as a user
drags it in, converted by the frontend (graphToPrompt) and queued, on the tiny checkpoints placed under the file
names the workflows use. Each must write its audio (or video) files, as long as expected, finite and not silent.

The files keep the official settings (60 s, 60 steps); the test changes the widgets a user would to make it quick
(1 s, a few steps, the test audio and video).
"""

from __future__ import annotations

import json
import math
import os

import av
import numpy as np
import pytest
import soundfile
from e2e.workflow_specs import SPECS, WORKFLOWS, build, run_with, write_workflows

from acestep_models.v1.music_dcae import frames_for_seconds, samples_for_frames

pytestmark = pytest.mark.slow

TONE_FRAMES = math.ceil(3 * 44100 / 4096)  # input/tone.wav (3 s at 44.1 kHz) as the DCAE encodes it
CLIP, CLIP_SECONDS = "clip.mp4", 2.0  # input/clip.mp4 (conftest): 24 frames at 12 fps

QUICK = {  # what a user would change to try a workflow quickly
    "AceStepFaithfulEmptyLatent": {"seconds": 1.0},
    "AceStepFaithfulSampler": {"steps": 4},
    "AceStepFaithfulFlowEdit": {"steps": 5},
    "AceStepFaithfulLoadAudio": {"audio": "tone.wav"},
    "AceStepFaithfulExtendLatent": {"right_seconds": 1.0},
    "LoadVideo": {"file": CLIP},
    "AceStepFaithful15EmptyLatent": {"seconds": 2.0},
    "AceStepFaithful15Sampler": {"steps": 2},
    "AceStepFaithful15Planner": {"duration": 6.0},
}
V15_MIN_FRAMES = 128  # the official 1.5 handler pads every song to 128 latent frames (5.12 s) at least
V15_OUTPAINT = {"AceStepFaithful15Sampler": {"repainting_start": 3.0, "repainting_end": 8.0}}  # tone.wav: 3 s
# workflow -> (extra widget changes, latent frames of every song it saves)
EXPECTED = {
    "text2music": ({}, frames_for_seconds(1.0)),
    "text2music_split_loaders": ({}, frames_for_seconds(1.0)),
    "retake": ({}, frames_for_seconds(1.0)),
    "repaint": ({"AceStepFaithfulMaskFromSeconds": {"ranges": "1-2"}}, TONE_FRAMES),
    "extend": ({}, TONE_FRAMES + frames_for_seconds(1.0)),
    "edit": ({}, TONE_FRAMES),
    "audio2audio": ({}, TONE_FRAMES),
    "lora": ({}, frames_for_seconds(1.0)),
    "music_for_video": ({}, frames_for_seconds(CLIP_SECONDS)),
    # ACE-Step 1.5: frames at 25 Hz (1920 samples each)
    "ace15_text2music": ({}, 6 * 25),  # the planner's duration
    "ace15_text2music_turbo": ({}, V15_MIN_FRAMES),
    "ace15_base_apg": ({}, V15_MIN_FRAMES),
    "ace15_cover": ({}, V15_MIN_FRAMES),
    "ace15_repaint": (
        {"AceStepFaithful15Sampler": {"repainting_start": 1.0, "repainting_end": 2.0}},
        V15_MIN_FRAMES,
    ),
    "ace15_extend": (V15_OUTPAINT, 8 * 25),
    "ace15_extract": ({}, V15_MIN_FRAMES),
    "ace15_lego": ({}, V15_MIN_FRAMES),
    "ace15_complete": ({}, V15_MIN_FRAMES),
    "ace15_reference_timbre": ({}, V15_MIN_FRAMES),
    "ace15_lora": ({}, V15_MIN_FRAMES),
}


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))


def check_song(audio: np.ndarray, frames: int, what: str, frame_samples=samples_for_frames) -> None:
    """[N, 2] at 48 kHz: the length the latent makes, finite, not silent."""
    assert audio.ndim == 2 and audio.shape[1] == 2, (what, audio.shape)
    assert audio.shape[0] == frame_samples(frames), (what, audio.shape[0], frame_samples(frames))
    assert np.isfinite(audio).all(), what
    assert np.sqrt(np.mean(audio**2)) > 1e-4, f"{what} is silent"


def test_every_workflow_is_tested():
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == sorted(EXPECTED) == sorted(SPECS)


def test_every_workflow_has_an_id_of_its_own():
    """The frontend opens a workflow whose id is already open by switching to that tab: one id per file."""
    ids = [load(name)["id"] for name in SPECS]
    assert len(set(ids)) == len(ids) and "00000000-0000-0000-0000-000000000000" not in ids


def test_the_files_are_the_specs(frontend):
    """The checked-in files hold the nodes and links of their specs (rebuild them with ACESTEP_WRITE_WORKFLOWS=1)."""

    def shape(workflow: dict):
        types = {n["id"]: n["type"] for n in workflow["nodes"]}
        links = sorted((types[src], s, types[dst], d) for _, src, s, dst, d, _ in workflow["links"])
        return sorted(types.values()), links

    for name in SPECS:
        assert shape(load(name)) == shape(build(frontend, name)), name


@pytest.mark.skipif(
    not os.environ.get("ACESTEP_WRITE_WORKFLOWS"), reason="set ACESTEP_WRITE_WORKFLOWS=1 to rewrite"
)
def test_write_workflows(frontend):
    assert len(write_workflows(frontend)) == len(SPECS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_workflow_runs(comfy, frontend, name):
    workflow = load(name)
    extra, frames = EXPECTED[name]
    widgets = {**QUICK, **extra}
    run = run_with(frontend, workflow, widgets)
    assert run.ok, str(run)

    saves = [n["id"] for n in workflow["nodes"] if n["type"] == "AceStepFaithfulSaveAudio"]
    songs = []
    for node in saves:
        (item,) = run.outputs[str(node)]["audio"]
        audio, rate = soundfile.read(comfy.output / item["subfolder"] / item["filename"], always_2d=True)
        assert rate == 48000
        v15 = name.startswith("ace15_")
        check_song(audio, frames, f"{name}: node {node}", (lambda f: f * 1920) if v15 else samples_for_frames)
        songs.append(audio)
    if name == "retake":  # the original and its variation
        original, variation = songs
        assert not np.array_equal(original, variation)
    if name == "music_for_video":
        (node,) = [n["id"] for n in workflow["nodes"] if n["type"] == "SaveVideo"]
        (item,) = run.outputs[str(node)]["images"]
        with av.open(str(comfy.output / item["subfolder"] / item["filename"])) as f:
            assert f.streams.video and f.streams.audio
            seconds = float(f.duration / av.time_base)
            audio = np.concatenate([fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)])
        assert seconds == pytest.approx(CLIP_SECONDS, abs=0.1)
        assert np.isfinite(audio).all() and np.sqrt(np.mean(audio**2)) > 1e-4
    else:
        assert saves, name


def test_workflow_shows_in_the_canvas(comfy, frontend, tmp_path):
    """text2music.json dragged in as a user does shows its nodes, wired; with ACESTEP_SCREENSHOTS=1 the picture
    becomes the README's docs/workflow_text2music.png."""
    import shutil
    import urllib.request
    from pathlib import Path

    from PIL import Image

    page = frontend.page
    # a fresh start, as a new user's: no tabs the earlier tests opened restored on reload (frontend 1.4x)
    settings = {
        "Comfy.TutorialCompleted": True,
        "Comfy.Workflow.ShowMissingModelsWarning": False,
        "Comfy.Workflow.Persist": False,
    }
    request = urllib.request.Request(comfy.url + "/settings", json.dumps(settings).encode(), method="POST")
    urllib.request.urlopen(request, timeout=30).close()
    page.set_viewport_size({"width": 1700, "height": 900})
    page.reload()
    page.wait_for_function("() => window.app?.graph && app.api.clientId", timeout=120_000)
    workflow = load("text2music")
    page.evaluate("(wf) => app.loadGraphData(wf)", workflow)
    want = sorted(n["type"] for n in workflow["nodes"])
    shown_js = "() => app.graph._nodes.map((n) => n.type)"
    for _ in range(
        150
    ):  # frontend 1.4x switches to the loaded workflow's tab a moment after loadGraphData returns
        if sorted(page.evaluate(shown_js)) == want:
            break
        page.wait_for_timeout(100)
    assert sorted(page.evaluate(shown_js)) == want
    page.wait_for_timeout(1000)  # the frontend restores the workflow's saved view after loading it
    page.evaluate(
        """() => { const ns = app.graph._nodes; const c = app.canvas;
                   const x0 = Math.min(...ns.map((n) => n.pos[0])), y0 = Math.min(...ns.map((n) => n.pos[1]));
                   const x1 = Math.max(...ns.map((n) => n.pos[0] + n.size[0]));
                   const y1 = Math.max(...ns.map((n) => n.pos[1] + n.size[1]));
                   const r = c.canvas.getBoundingClientRect();
                   const s = Math.min((r.width - 420) / (x1 - x0), (r.height - 200) / (y1 - y0 + 40), 1);
                   c.ds.scale = s; c.ds.offset = [100 / s - x0, 150 / s - y0]; c.setDirty(true, true); }"""
    )
    page.wait_for_timeout(500)
    path = tmp_path / "workflow_text2music.png"
    page.screenshot(path=str(path))
    assert len(np.unique(np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3), axis=0)) > 200
    if os.environ.get("ACESTEP_SCREENSHOTS"):
        shutil.copy(path, Path(__file__).resolve().parents[2] / "docs" / path.name)
