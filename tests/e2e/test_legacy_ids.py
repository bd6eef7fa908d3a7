"""Workflows saved with our node ids before 0.1 (``AceStepLoadAudio``, ... also another pack's ids) still load and
run: the frontend (js/migrate.js) renames those nodes to our ``AceStepFaithful*`` ids as they load, widget values
unchanged, and the server keeps the old ids as hidden (deprecated) aliases of the same nodes for API prompts."""

from __future__ import annotations

import copy
import json

import pytest
import soundfile
from e2e.test_workflows import QUICK, WORKFLOWS, check_song
from e2e.workflow_specs import run_with

from acestep_models.v1.music_dcae import frames_for_seconds

pytestmark = pytest.mark.slow

NEW, OLD = "AceStepFaithful", "AceStep"


def old_ids(workflow: dict) -> dict:
    """``workflow`` as 0.0 saved it: our nodes under their old ids."""
    workflow = copy.deepcopy(workflow)
    for node in workflow["nodes"]:
        if node["type"].startswith(NEW):
            node["type"] = OLD + node["type"][len(NEW) :]
            node.setdefault("properties", {})["Node name for S&R"] = node["type"]
    return workflow


def ours(object_info: dict) -> list[str]:
    return sorted(
        k
        for k, v in object_info.items()
        if k.startswith(NEW) and v["python_module"].endswith("comfyui-acestep")
    )


AFTER_RENAME = {
    "AceStepFaithfulDiTFromModel",
    "AceStepFaithfulVAEFromCore",
    "AceStepFaithfulTextEncoderFromCore",
    "AceStepFaithfulConditioningToCore",
}


def test_every_node_has_our_prefix_and_a_hidden_alias(comfy):
    info = comfy.get("/object_info")
    module = {v["python_module"] for k, v in info.items() if k.startswith(NEW)}
    assert len(module) == 1, module
    mine = sorted(k for k, v in info.items() if v["python_module"] in module)
    # ACE-Step 1.5's nodes, and the adapters of core's v1 models, came after the rename: no old ids
    later = [k for k in mine if k.startswith(NEW + "15") or k in AFTER_RENAME]
    new = [k for k in mine if k.startswith(NEW) and k not in later]
    assert len(new) == 24 and len(later) == 14 + len(AFTER_RENAME), (new, later)
    assert sorted(mine) == sorted(later + new + [OLD + k[len(NEW) :] for k in new])  # no id unprefixed
    for k in new:
        old = info[OLD + k[len(NEW) :]]
        assert old["deprecated"] is True and not info[k].get("deprecated"), k
        for field in (
            "input",
            "input_order",
            "output",
            "output_name",
            "display_name",
            "category",
            "output_node",
        ):
            assert old[field] == info[k][field], (k, field)


def test_js_knows_exactly_our_ids(comfy, frontend):
    ids = frontend.page.evaluate(
        "async () => [...(await import('/extensions/comfyui-acestep/support.js')).NODE_IDS].sort()"
    )
    info = comfy.get("/object_info")
    assert ids == ours(info)


def test_workflow_saved_with_the_old_ids_loads_and_runs(comfy, frontend):
    workflow = json.loads((WORKFLOWS / "text2music.json").read_text(encoding="utf-8"))
    legacy = old_ids(workflow)
    assert any(n["type"] == "AceStepSaveAudio" for n in legacy["nodes"])
    serialized = """async (wf) => { await app.loadGraphData(wf);
             return app.graph.serialize().nodes.map((n) => [n.id, n.type, n.widgets_values]); }"""
    # the same as the workflow saved with our ids gives: our ids, every widget value as saved
    as_saved = frontend.page.evaluate(serialized, workflow)
    assert frontend.page.evaluate(serialized, legacy) == as_saved  # the old-id file, now in the canvas
    for node in frontend.page.evaluate(
        "() => app.graph._nodes.map((n) => [n.type, (n.widgets || []).map((w) => w.name)])"
    ):
        if node[0] in ("AceStepFaithfulLoadAudio", "AceStepFaithfulSaveAudio"):
            assert "waveform" in node[1], node  # js hooks the migrated nodes

    run = run_with(frontend, legacy, QUICK)
    assert run.ok, run
    assert all(
        not n["class_type"].startswith(OLD) or n["class_type"].startswith(NEW) for n in run.prompt.values()
    )
    (save,) = [n["id"] for n in workflow["nodes"] if n["type"] == "AceStepFaithfulSaveAudio"]
    (item,) = run.outputs[str(save)]["audio"]
    audio, rate = soundfile.read(comfy.output / item["subfolder"] / item["filename"], always_2d=True)
    check_song(audio, frames_for_seconds(1.0), "old-id text2music")


def test_api_prompt_with_the_old_ids_runs(comfy, frontend):
    """A script's API prompt naming the old ids runs on the aliases."""
    workflow = json.loads((WORKFLOWS / "text2music.json").read_text(encoding="utf-8"))
    first = run_with(frontend, workflow, QUICK, wait=False)  # the frontend's prompt, with our ids
    assert first.status == 200, first
    comfy.wait(first.response["prompt_id"])
    prompt = copy.deepcopy(first.prompt)
    for node in prompt.values():
        if node["class_type"].startswith(NEW):
            node["class_type"] = OLD + node["class_type"][len(NEW) :]
    status, response = comfy.queue(prompt)
    assert status == 200, response
    entry = comfy.wait(response["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]
