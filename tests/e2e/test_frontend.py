"""The pack's frontend (``js/``) in a real ComfyUI, used with the mouse as a musician would: upload a song, see its
waveform, drag the parts to regenerate (and past the end to extend it), save and reload the workflow, run it and
check that the mask covers exactly the frames that were marked. Also: the waveform on the output nodes, the
audio-to-image node, the lyrics box, and that everything still runs (with plain text inputs) where the browser
lacks what the editor needs.

Slow (a ComfyUI boot and a browser): marked ``slow``, run by ``scripts/test.sh`` and CI all the same. Set
``ACESTEP_SCREENSHOTS=1`` to refresh ``docs/waveform_widget.png`` from the run.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FRAME_SECONDS = 4096 / 44100  # one ACE-Step latent frame
SONG_SECONDS, SONG_RATE = 8.0, 44100

WAVEFORM = "(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'waveform')"
EDITOR = "(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'waveform').editor"


def frames_of_song() -> int:
    """Latent frames ACE-Step Audio to Latent (and Empty Latent from audio) makes of the test song."""
    return math.ceil(round(SONG_SECONDS * SONG_RATE) / 4096)


def frames_for_seconds(s: float) -> int:
    return int(s * 44100 / 512 / 8)  # the official repaint's rounding


def write_song(path: Path) -> Path:
    """8 s that look like music on a waveform: a quiet intro, kicks on the beat, a bass line and chords, louder
    from the middle on."""
    t = np.arange(int(SONG_SECONDS * SONG_RATE)) / SONG_RATE
    beat = 0.5
    phase = t % beat
    kick = np.sin(2 * np.pi * 55 * phase * (1 + 4 * np.exp(-phase * 30))) * np.exp(-phase * 9)
    bass_notes = np.array([55.0, 55.0, 65.4, 49.0])[(t // (2 * beat)).astype(int) % 4]
    bass = 0.35 * np.sin(2 * np.pi * bass_notes * t) * (0.6 + 0.4 * np.exp(-(t % (2 * beat)) * 3))
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    swell = 0.5 + 0.5 * np.sin(2 * np.pi * t / 4 - np.pi / 2)
    rng = np.random.default_rng(0)
    hats = 0.08 * rng.standard_normal(t.size) * np.exp(-((t + beat / 2) % beat) * 40)
    level = np.clip(0.25 + 0.75 * (t > SONG_SECONDS / 2) + 0.1 * t / SONG_SECONDS, 0, 1)
    mix = level * (0.55 * kick + bass + 0.25 * swell * chord + hats)
    stereo = np.stack([mix, 0.9 * mix + 0.05 * chord], 1)
    stereo *= 0.9 / np.abs(stereo).max()
    soundfile.write(path, stereo.astype(np.float32), SONG_RATE, subtype="PCM_16")
    return path


def canvas_state(page, node_id: int) -> str:
    return page.evaluate(f"(id) => ({WAVEFORM})(id)?.element.dataset.state ?? 'none'", node_id)


def wait_ready(page, node_id: int) -> None:
    page.wait_for_function(
        f"(id) => ({WAVEFORM})(id)?.element.dataset.state === 'ready'", arg=node_id, timeout=30_000
    )


def close_dialogs(page) -> None:
    """Close what ComfyUI opens over the canvas (the template browser on a first visit, ...) before using the mouse."""
    for _ in range(5):
        if page.locator(".p-dialog:visible").count() == 0:
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    assert page.locator(".p-dialog:visible").count() == 0, "a dialog stays open over the canvas"


def place(page, layout: dict[int, tuple[int, int, int, int]]) -> None:
    """Put nodes at graph positions [x, y, w, h] and show the graph at scale 1 from its origin (then graph
    coordinates plus the canvas' offset are page coordinates)."""
    close_dialogs(page)
    page.evaluate(
        """(layout) => {
          for (const [id, [x, y, w, h]] of Object.entries(layout)) {
            const n = app.graph.getNodeById(Number(id));
            n.pos = [x, y];
            n.size = [w, h];
          }
          app.canvas.ds.offset = [0, 0];
          app.canvas.ds.scale = 1;
          app.canvas.setDirty(true, true);
        }""",
        {str(k): v for k, v in layout.items()},
    )
    page.wait_for_timeout(300)  # a frame or two: DOM widgets follow the canvas


def canvas_box(page, node_id: int) -> dict:
    return page.evaluate(
        f"""(id) => {{
          const r = ({WAVEFORM})(id).element.querySelector('canvas').getBoundingClientRect();
          return {{x: r.left, y: r.top, width: r.width, height: r.height}};
        }}""",
        node_id,
    )


def x_at(page, node_id: int, seconds: float) -> float:
    """Page x of a time on the waveform, on a whole pixel (where the mouse can really be)."""
    box = canvas_box(page, node_id)
    return round(box["x"] + page.evaluate(f"([id, t]) => ({EDITOR})(id).xOf(t)", [node_id, seconds]))


def frame_under(page, node_id: int, page_x: float) -> int:
    """The latent frame boundary the editor snaps page x to."""
    box = canvas_box(page, node_id)
    return page.evaluate(f"([id, x]) => ({EDITOR})(id).frameAt(x)", [node_id, page_x - box["x"]])


def drag(page, node_id: int, x0: float, x1: float) -> None:
    box = canvas_box(page, node_id)
    y = box["y"] + box["height"] * 0.6
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move(x1, y, steps=8)
    page.mouse.up()


def regions_value(page, node_id: int) -> str:
    return page.evaluate(
        "(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'regions').value", node_id
    )


def parse_value(text: str, frames: int) -> list[tuple[int, int]]:
    """The regions text as frame ranges on the song's grid (as nodes/latents.py reads it; negative = before)."""
    out = []
    for part in text.split(","):
        start, stop = re.fullmatch(r"\s*(-?[\d.]+|end)-(end(?:\+[\d.]+)?|[\d.]+)\s*", part).groups()
        a = (
            frames
            if start == "end"
            else int(math.copysign(frames_for_seconds(abs(float(start))), float(start)))
        )
        b = (
            frames + frames_for_seconds(float(stop[4:] or 0))
            if stop.startswith("end")
            else frames_for_seconds(float(stop))
        )
        out.append((a, b))
    return out


def is_frame_exact(number: str) -> bool:
    """The editor writes a frame boundary as the shortest text that reads back as that frame."""
    k = frames_for_seconds(float(number))
    return float(number) == math.ceil((k * FRAME_SECONDS + 1e-6) * 100) / 100


def screenshot(page, node_id: int, path: Path) -> None:
    """A picture of one node (title included); also into docs/ with ACESTEP_SCREENSHOTS=1."""
    box = page.evaluate(
        """(id) => { const n = app.graph.getNodeById(id); const r = app.canvas.canvas.getBoundingClientRect();
                     return {x: r.left + n.pos[0] - 6, y: r.top + n.pos[1] - 36, width: n.size[0] + 12,
                             height: n.size[1] + 42}; }""",
        node_id,
    )
    page.screenshot(path=str(path), clip=box)
    assert len(np.unique(np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3), axis=0)) > 50
    if os.environ.get("ACESTEP_SCREENSHOTS"):
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(path, ROOT / "docs" / path.name)


def mask_row(comfy, run, node: str) -> np.ndarray:
    (item,) = run.outputs[node]["images"]
    image = np.asarray(Image.open(comfy.output / item["subfolder"] / item["filename"]).convert("L"))
    assert (image == image[:1]).all()  # the same on all 16 rows
    return image[0] / 255.0


def ours(console: list[str], *kinds: str) -> list[str]:
    """Console lines of these kinds from our extension. ComfyUI's own startup errors are not ours, nor its
    registry look-ups for custom nodes, which its Content-Security-Policy blocks (nothing leaves the machine)."""
    return [
        m
        for m in console
        if m.startswith(kinds)
        and ("acestep" in m.lower() or "ace-step" in m.lower())
        and "Content Security Policy" not in m
    ]


# --- fixtures ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """A song on the user's disk (not yet in ComfyUI's input folder: it is uploaded through the node)."""
    return write_song(tmp_path_factory.mktemp("song") / "song.wav")


@pytest.fixture(scope="module", autouse=True)
def returning_user(comfy, frontend) -> None:
    """The tab of a returning user who turned ComfyUI's pop-ups off."""
    page = frontend.page
    # A returning user who turned the pop-ups off: ComfyUI's first-visit template browser, or a warning about the
    # models of a workflow an earlier test left in the tab, would sit over the canvas and take the clicks.
    settings = {
        "Comfy.TutorialCompleted": True,
        "Comfy.Workflow.ShowMissingModelsWarning": False,
        "Comfy.Workflow.ShowMissingNodesWarning": False,
    }
    request = urllib.request.Request(comfy.url + "/settings", json.dumps(settings).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    page.reload()
    page.wait_for_function(
        "() => window.app?.graph && window.LiteGraph?.registered_node_types?.AceStepFaithfulLoadAudio && app.api.clientId",
        timeout=120_000,
    )


@pytest.fixture(scope="module")
def uploaded(comfy, frontend, song) -> str:
    """The song uploaded with ACE-Step Load Audio's upload button, as a person does."""
    page = frontend.page
    frontend.build({"1": {"type": "AceStepFaithfulLoadAudio"}})
    place(page, {1: (120, 140, 640, 360)})
    button = page.evaluate(
        """() => {
          const n = app.graph.getNodeById(1);
          const w = n.widgets.find((w) => w.name === 'upload');
          const r = app.canvas.canvas.getBoundingClientRect();
          const [x, y] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0] / 2, n.pos[1] + w.y + 10]);
          return [r.left + x, r.top + y];
        }"""
    )
    page.mouse.move(*button)  # litegraph finds the widget under the pointer as it moves
    page.wait_for_timeout(100)
    on_top = page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.outerHTML.slice(0, 200)", button)
    assert on_top.startswith("<canvas"), f"something covers the upload button: {on_top}"
    with page.expect_file_chooser() as chooser:
        page.mouse.click(*button)
    chooser.value.set_files(str(song))
    page.wait_for_function(
        "() => app.graph.getNodeById(1).widgets.find((w) => w.name === 'audio').value === 'song.wav'",
        timeout=30_000,
    )
    uploaded = comfy.base / "input" / "song.wav"
    for _ in range(
        300
    ):  # frontend 1.4x shows the name as the upload starts, not when the server has the file
        if uploaded.is_file() and uploaded.stat().st_size == song.stat().st_size:
            break
        page.wait_for_timeout(100)
    assert uploaded.read_bytes() == song.read_bytes()
    return "song.wav"


# --- the waveform on the loader ----------------------------------------------------------------------------------------


def test_upload_shows_the_waveform(frontend, uploaded):
    page = frontend.page
    wait_ready(page, 1)
    editor = page.evaluate(
        f"(id) => {{ const e = ({EDITOR})(id); return {{d: e.duration, f: e.frames}}; }}", 1
    )
    assert editor["d"] == pytest.approx(SONG_SECONDS, abs=1e-3)
    assert editor["f"] == frames_of_song()
    # The canvas is drawn: many colours, and the waveform's own blue over a good part of the song's width.
    pixels = page.evaluate(
        f"""(id) => {{
          const e = ({EDITOR})(id);
          e.drawNow();
          const c = e.canvas;
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          const colours = new Set();
          let blue = 0;
          for (let i = 0; i < d.length; i += 4) {{
            colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
            if (d[i + 2] > 150 && d[i] < 160) blue++;
          }}
          return {{colours: colours.size, blue: blue / (d.length / 4)}};
        }}""",
        1,
    )
    assert pixels["colours"] > 20 and pixels["blue"] > 0.15, pixels
    # ComfyUI's own player stays (hidden) and plays the same file.
    src = page.evaluate(
        "() => app.graph.getNodeById(1).widgets.find((w) => w.name === 'audioUI').element.src"
    )
    assert "filename=song.wav" in src


def test_play_pause_and_zoom(frontend, uploaded):
    page = frontend.page
    wait_ready(page, 1)
    play = page.locator(".acestep-wave button[data-role=play]").first
    play.click()
    page.wait_for_function(f"(id) => !({EDITOR})(id).player.paused", arg=1, timeout=10_000)
    page.wait_for_timeout(400)
    play.click()
    state = page.evaluate(
        f"(id) => {{ const p = ({EDITOR})(id).player; return [p.paused, p.currentTime]; }}", 1
    )
    assert state[0] is True and state[1] > 0, state  # it played, and the playhead moved
    page.evaluate(f"(id) => {{ ({EDITOR})(id).player.currentTime = 0; }}", 1)

    view = page.evaluate(f"(id) => ({EDITOR})(id).view", 1)
    page.locator(".acestep-wave button[data-role=zoom-in]").first.click()
    zoomed = page.evaluate(f"(id) => ({EDITOR})(id).view", 1)
    assert zoomed[1] - zoomed[0] == pytest.approx((view[1] - view[0]) / 2)
    # wheel zooms around the pointer
    box = canvas_box(page, 1)
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -600)
    assert page.evaluate(f"(id) => ({EDITOR})(id).zoom", 1) > 2
    page.evaluate(f"(id) => ({EDITOR})(id).setZoom(1)", 1)


def test_drag_regions_save_reload_and_mask_the_same_frames(comfy, frontend, uploaded, tmp_path):
    """Mark two parts and an extension with the mouse; the widget holds frame-exact seconds; the workflow keeps
    them; the mask ACE-Step Mask from Seconds makes of them covers exactly the marked frames."""
    page = frontend.page
    nodes = {
        "1": {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": uploaded}},
        "2": {"type": "AceStepFaithfulEmptyLatent", "inputs": {"audio": ["1", "audio"]}},
        "3": {
            "type": "AceStepFaithfulMaskFromSeconds",
            "inputs": {"latent": ["2", "latent"], "ranges": ["1", "regions"]},
        },
        "4": {"type": "MaskToImage", "inputs": {"mask": ["3", "mask"]}},
        "5": {
            "type": "SaveImage",
            "widgets": {"filename_prefix": "e2e/regions"},
            "inputs": {"images": ["4", "IMAGE"]},
        },
        "6": {"type": "AceStepFaithfulPreviewAudio", "inputs": {"audio": ["1", "audio"]}},
    }
    frontend.build(nodes)
    # the loader in view (a clean picture for the README); the rest of the graph off to the right
    place(
        page,
        {1: (100, 230, 760, 400), 6: (1500, 520, 760, 260)}
        | {n: (1150 + 350 * n, 100, 300, 200) for n in (2, 3, 4, 5)},
    )
    wait_ready(page, 1)
    frames = frames_of_song()

    # 1. a part in the middle (1.0 -> 2.5 s)
    x0, x1 = x_at(page, 1, 1.0), x_at(page, 1, 2.5)
    first = (frame_under(page, 1, x0), frame_under(page, 1, x1))
    drag(page, 1, x0, x1)
    value = regions_value(page, 1)
    start, stop = value.split("-")
    assert is_frame_exact(start) and is_frame_exact(stop), value
    assert (frames_for_seconds(float(start)), frames_for_seconds(float(stop))) == first
    assert abs(float(start) - 1.0) < 0.1 and abs(float(stop) - 2.5) < 0.1  # snapped to the nearest frame

    # 2. from 6.5 s to past the end (+1 s): an extension
    x2, x3 = x_at(page, 1, 6.5), x_at(page, 1, SONG_SECONDS + 1.0)
    second = (frame_under(page, 1, x2), frame_under(page, 1, x3))
    assert second[1] > frames
    drag(page, 1, x2, x3)
    value = regions_value(page, 1)
    assert re.fullmatch(r"[\d.]+-[\d.]+, [\d.]+-end\+[\d.]+", value), value

    # 3. grab the first part's left edge and move it to 0.5 s (the view has grown to show the extension)
    x4 = x_at(page, 1, 0.5)
    drag(page, 1, x_at(page, 1, first[0] * FRAME_SECONDS), x4)
    first = (frame_under(page, 1, x4), first[1])
    value = regions_value(page, 1)
    assert parse_value(value, frames) == [first, second], value
    shown = page.evaluate(f"(id) => ({EDITOR})(id).regions.map((r) => [r.a, r.b])", 1)
    assert [tuple(r) for r in shown] == [first, second]  # what the editor shows is what the text says

    # 4. from 0.2 s to before the start (into the hatched margin): new frames before the song
    x5, x6 = x_at(page, 1, 0.2), x_at(page, 1, -0.4)
    before = (frame_under(page, 1, x6), frame_under(page, 1, x5))
    assert before[0] < 0 < before[1] < first[0]
    drag(page, 1, x5, x6)
    value = regions_value(page, 1)
    assert value.startswith("-") and parse_value(value, frames) == [before, first, second], value
    marked = [before, first, second]

    page.evaluate(f"(id) => {{ ({EDITOR})(id).player.currentTime = 3.2; }}", 1)  # the playhead
    page.mouse.move(x_at(page, 1, 4.2), canvas_box(page, 1)["y"] + 40)  # a hover line, as in use
    page.wait_for_timeout(300)
    screenshot(page, 1, tmp_path / "waveform_widget.png")

    # Save the workflow (as the Save menu does), clear the canvas, load it back: the regions are there.
    saved = json.loads(json.dumps(page.evaluate("() => app.graph.serialize()")))
    loader = next(n for n in saved["nodes"] if n["id"] == 1)
    assert value in loader["widgets_values"]
    page.evaluate("() => app.graph.clear()")
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", saved)
    assert regions_value(page, 1) == value
    wait_ready(page, 1)
    page.evaluate(f"(id) => ({EDITOR})(id).drawNow()", 1)
    shown = page.evaluate(f"(id) => ({EDITOR})(id).regions.map((r) => [r.a, r.b])", 1)
    assert [tuple(r) for r in shown] == marked

    # Run it: the mask covers exactly the marked frames, on the song extended by the new frames.
    run = frontend.run(saved)
    assert run.ok, run
    mask = mask_row(comfy, run, "5")
    left, right = -before[0], second[1] - frames
    expected = np.zeros(left + frames + right)
    for a, b in marked:
        expected[left + a : left + b] = 1
    assert mask.shape == expected.shape
    assert (mask == expected).all(), np.nonzero(mask != expected)

    # The output node shows the waveform of the file it wrote.
    page.wait_for_function(
        f"(id) => ({WAVEFORM})(id)?.element.dataset.state === 'ready' && ({EDITOR})(id).src.includes('preview')",
        arg=6,
        timeout=30_000,
    )
    assert page.evaluate(f"(id) => ({EDITOR})(id).duration", 6) == pytest.approx(SONG_SECONDS, abs=0.01)


def test_typed_regions_show_on_the_waveform(frontend, uploaded):
    page = frontend.page
    frontend.build(
        {"1": {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": uploaded, "regions": "-2-0, 3-4"}}}
    )
    place(page, {1: (120, 140, 640, 360)})
    wait_ready(page, 1)
    page.evaluate(f"(id) => ({EDITOR})(id).drawNow()", 1)
    shown = page.evaluate(f"(id) => ({EDITOR})(id).regions.map((r) => [r.a, r.b])", 1)
    assert [tuple(r) for r in shown] == [
        (-frames_for_seconds(2), 0),
        (frames_for_seconds(3), frames_for_seconds(4)),
    ]
    # a typo is reported under the waveform, not thrown
    page.evaluate(
        "() => { app.graph.getNodeById(1).widgets.find((w) => w.name === 'regions').value = '5-3'; }"
    )
    page.evaluate(f"(id) => ({EDITOR})(id).drawNow()", 1)
    status = page.evaluate(f"(id) => ({EDITOR})(id).status.textContent", 1)
    assert "ends before it starts" in status
    # and the loader names the input when run
    nodes = {
        "1": {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": uploaded, "regions": "7-9"}},
        "2": {"type": "PreviewAny", "inputs": {"source": ["1", "regions"]}},
    }
    run = frontend.run(frontend.build(nodes))
    error = run.error()
    assert error["node_type"] == "AceStepFaithfulLoadAudio" and "'regions'" in error["exception_message"]
    assert "end+seconds" in error["exception_message"]


def test_the_editor_and_the_mask_node_read_regions_alike(comfy, frontend):
    """js/regions.js (what the waveform shows) and nodes/latents.py (what is regenerated) give the same frames."""
    texts = [
        "2-4, 8-end",
        "0.05-0.06",
        "-1.5-0.5",
        "end-end+2.5",
        "9.9-end+0.1",
        "-0.5-end+0.5",
        "3.1:3.9; 5 to 7",
    ]
    nodes = {"1": {"type": "AceStepFaithfulEmptyLatent", "widgets": {"seconds": 10.0}}}
    for i, text in enumerate(texts):
        nodes[f"{10 + i}"] = {
            "type": "AceStepFaithfulMaskFromSeconds",
            "widgets": {"ranges": text},
            "inputs": {"latent": ["1", "latent"]},
        }
        nodes[f"{30 + i}"] = {"type": "MaskToImage", "inputs": {"mask": [f"{10 + i}", "mask"]}}
        nodes[f"{50 + i}"] = {
            "type": "SaveImage",
            "widgets": {"filename_prefix": f"e2e/parity{i}"},
            "inputs": {"images": [f"{30 + i}", "IMAGE"]},
        }
    run = frontend.run(frontend.build(nodes))
    assert run.ok, run
    frames = frames_for_seconds(10.0)
    shown = frontend.page.evaluate(
        """async ([texts, frames]) => {
          const R = await import('/extensions/comfyui-acestep/regions.js');
          return texts.map((t) => R.parseRegions(t, frames).regions.map((r) => [r.a, r.b]));
        }""",
        [texts, frames],
    )
    for i, (text, regions) in enumerate(zip(texts, shown)):
        left = max(0, -min(a for a, _ in regions))
        right = max(0, max(b for _, b in regions) - frames)
        expected = np.zeros(left + frames + right)
        for a, b in regions:
            expected[a + left : b + left] = 1
        mask = mask_row(comfy, run, f"{50 + i}")
        assert mask.shape == expected.shape and (mask == expected).all(), (text, regions)


# --- audio to image ------------------------------------------------------------------------------------------------------


def test_audio_to_image(comfy, frontend, uploaded):
    nodes = {
        "1": {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": uploaded}},
        "2": {
            "type": "AceStepFaithfulAudioToImage",
            "widgets": {"width": 512, "height": 128},
            "inputs": {"audio": ["1", "audio"]},
        },
        "3": {
            "type": "SaveImage",
            "widgets": {"filename_prefix": "e2e/wave"},
            "inputs": {"images": ["2", "image"]},
        },
        "4": {
            "type": "AceStepFaithfulAudioToImage",
            "widgets": {"mode": "spectrogram", "width": 320, "height": 96},
            "inputs": {"audio": ["1", "audio"]},
        },
        "5": {
            "type": "SaveImage",
            "widgets": {"filename_prefix": "e2e/spec"},
            "inputs": {"images": ["4", "image"]},
        },
    }
    run = frontend.run(frontend.build(nodes))
    assert run.ok, run

    def image(node):
        (item,) = run.outputs[node]["images"]
        return (
            np.asarray(Image.open(comfy.output / item["subfolder"] / item["filename"]).convert("RGB")) / 255.0
        )

    wave = image("3")
    assert wave.shape == (128, 512, 3)
    background = wave[0, 0]
    drawn = (np.abs(wave - background).sum(-1) > 0.1).mean(0)  # per column: share of non-background pixels
    assert (drawn > 0).all()  # sound all along
    assert drawn[-64:].mean() > 1.5 * drawn[:64].mean()  # the song gets louder in its second half
    spec = image("5")
    assert spec.shape == (96, 320, 3)
    assert spec.std() > 0.05 and len(np.unique(spec.reshape(-1, 3), axis=0)) > 100
    # the bass sits at the bottom: brighter low rows than high rows
    assert spec[-20:].mean() > spec[:20].mean()


# --- lyrics ----------------------------------------------------------------------------------------------------------------


def test_lyrics_tags_are_highlighted_and_the_check_shows_per_line(frontend, tmp_path):
    page = frontend.page
    lyrics = "[verse]\nHello world, walking down the street tonight\n\n[chorus]\nla la la ☃☃\nWe sing it loud"
    nodes = {
        "1": {"type": "AceStepFaithfulLyricTokenizerLoader"},
        "2": {
            "type": "AceStepFaithfulLyricsCheck",
            "widgets": {"lyrics": lyrics},
            "inputs": {"lyric_tokenizer": ["1", "lyric_tokenizer"]},
        },
    }
    frontend.build(nodes)
    place(page, {2: (300, 220, 460, 330), 1: (1400, 220, 300, 100)})
    workflow = page.evaluate("() => app.graph.serialize()")  # as placed (running loads it again)
    backdrop = "() => app.graph.getNodeById(2).widgets.find((w) => w.name === 'lyrics').element.parentElement.querySelector('.acestep-lyrics-backdrop')"
    page.wait_for_function(f"() => ({backdrop})()?.querySelectorAll('mark').length === 2", timeout=10_000)
    marks = page.evaluate(
        f"() => [...({backdrop})().querySelectorAll('mark')].map((m) => [m.textContent, m.className])"
    )
    assert marks == [["[verse]", "verse"], ["[chorus]", "chorus"]]
    # the backdrop lies exactly under the text box, with its font (so tags line up with the text)
    same = page.evaluate(
        f"""() => {{
          const b = ({backdrop})(), t = b.nextElementSibling;
          const [rb, rt] = [b.getBoundingClientRect(), t.getBoundingClientRect()];
          return [Math.abs(rb.left - rt.left) < 1, Math.abs(rb.top - rt.top) < 1,
                  getComputedStyle(b).fontSize === getComputedStyle(t).fontSize];
        }}"""
    )
    assert same == [True, True, True]

    run = frontend.run(workflow)
    assert run.ok, run
    (report,) = run.outputs["2"]["text"]
    page.wait_for_function(
        "() => app.graph.getNodeById(2).widgets.find((w) => w.name === 'lyrics_check')?.element.dataset.state === 'checked'",
        timeout=10_000,
    )
    check = page.evaluate(
        "() => app.graph.getNodeById(2).widgets.find((w) => w.name === 'lyrics_check').element.textContent"
    )
    assert report.splitlines()[0] in check
    lines = page.evaluate(
        f"() => [...({backdrop})().children].map((d) => [d.className, d.dataset.badge ?? null])"
    )
    assert len(lines) == 6
    assert lines[1][1].startswith("en · ")  # "Hello world": English, its token count
    assert lines[2] == ["", None]  # the empty line
    if "unknown" in report.splitlines()[5]:
        assert lines[4][0] == "unknown" and "unknown" in lines[4][1] and "line 5" in check
    page.wait_for_timeout(200)
    screenshot(page, 2, tmp_path / "lyrics_widget.png")


# --- without what the editor needs --------------------------------------------------------------------------------------


def test_without_web_audio_the_nodes_work_and_the_console_says_why_once(comfy, frontend, uploaded):
    browser = frontend.page.context.browser
    context = browser.new_context()
    context.add_init_script("delete window.OfflineAudioContext; delete window.AudioContext;")
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    try:
        page.goto(comfy.url + "/")
        page.wait_for_function(
            "() => window.app?.graph && window.LiteGraph?.registered_node_types?.AceStepFaithfulLoadAudio && app.api.clientId",
            timeout=120_000,
        )
        degraded = type(frontend)(comfy, page, console)
        nodes = {
            "1": {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": uploaded, "regions": "1-2"}},
            "2": {"type": "AceStepFaithfulLoadAudio", "widgets": {"audio": uploaded}},
            "3": {"type": "AceStepFaithfulEmptyLatent", "inputs": {"audio": ["1", "audio"]}},
            "4": {
                "type": "AceStepFaithfulMaskFromSeconds",
                "inputs": {"latent": ["3", "latent"], "ranges": ["1", "regions"]},
            },
            "5": {"type": "MaskToImage", "inputs": {"mask": ["4", "mask"]}},
            "6": {
                "type": "SaveImage",
                "widgets": {"filename_prefix": "e2e/plain"},
                "inputs": {"images": ["5", "IMAGE"]},
            },
        }
        workflow = degraded.build(nodes)
        assert canvas_state(page, 1) == "none"  # no waveform: the plain regions box does the job
        run = degraded.run(workflow)
        assert run.ok, run
        mask = mask_row(comfy, run, "6")
        assert np.nonzero(mask)[0].tolist() == list(range(frames_for_seconds(1), frames_for_seconds(2)))
        said = [m for m in console if "[ACE-Step]" in m]
        assert len(said) == 1 and "Web Audio" in said[0] and "regions" in said[0], said
        assert not ours(console, "error", "pageerror")
    finally:
        context.close()


def test_no_errors_or_warnings_from_our_extension(frontend):
    said = ours(frontend.console, "error", "pageerror", "warning")
    assert not said, said
