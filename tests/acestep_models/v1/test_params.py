"""Generation parameters: the official names and files in, one checked dict out, one-line errors otherwise."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from acestep_models.v1.params import (
    OFFICIAL_DEFAULTS,
    OFFICIAL_KEYS,
    ParamsError,
    fix_random,
    load_params,
    parse_flag,
    to_official_file,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "golden" / "params" / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*/*.json"))


def write_song(path: Path, seconds: float, rate: int = 48000) -> Path:
    soundfile.write(str(path), np.zeros((int(seconds * rate), 2), np.float32), rate, subtype="FLOAT")
    return path


@pytest.fixture
def song(tmp_path) -> Path:
    """A 10 s source song (108 latent frames = 10.03 s once padded, as the official encode counts)."""
    return write_song(tmp_path / "song.wav", 10.0)


def test_defaults_are_the_official_ones():
    params = load_params({})
    assert list(params) == list(OFFICIAL_KEYS)
    expected = dict(OFFICIAL_DEFAULTS, prompt="", lyrics="", oss_steps=[])  # the forms the engine runs with
    assert params == expected
    assert params["infer_step"] == 60 and params["guidance_scale"] == 15.0 and params["cfg_type"] == "apg"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_official_example_file_loads(path):
    raw = json.loads(path.read_text(encoding="utf-8"))
    params = load_params(path)
    assert params["manual_seeds"] == raw["actual_seeds"]  # the official file's name for the seeds used
    assert params["prompt"] == raw["prompt"] and params["lyrics"] == raw["lyrics"]
    assert params["audio_duration"] == raw["audio_duration"] and params["task"] == "text2music"
    assert params["guidance_interval"] == raw["guidance_interval"]
    assert params["lora_name_or_path"] == raw.get(
        "lora_name_or_path", "none"
    )  # a path on the author's machine
    for record in ("timecosts", "audio_path", "format", "actual_seeds"):
        assert record not in params


def test_the_examples_are_all_there():
    assert len(EXAMPLE_FILES) == 37
    ref = os.environ.get("ACESTEP_REF")
    if not ref:
        pytest.skip("ACESTEP_REF not set: cannot compare with the official examples")
    official = sorted(Path(ref, "examples").glob("*/input_params/*.json"))
    assert [(p.parent.parent.name, p.name) for p in official] == [
        (p.parent.name, p.name) for p in EXAMPLE_FILES
    ]
    for ours, theirs in zip(EXAMPLE_FILES, official):
        assert ours.read_bytes() == theirs.read_bytes()


def test_defaults_match_the_official_signature():
    """OFFICIAL_DEFAULTS is ACEStepPipeline.__call__'s keywords and defaults (read from the source, not run)."""
    ref = os.environ.get("ACESTEP_REF")
    if not ref:
        pytest.skip("ACESTEP_REF not set")
    tree = ast.parse(Path(ref, "acestep", "pipeline_ace_step.py").read_text(encoding="utf-8"))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "__call__")
    names = [a.arg for a in call.args.args[1:]]
    defaults = [ast.literal_eval(d) for d in call.args.defaults]
    official = {k: v for k, v in zip(names, defaults) if k not in ("format", "save_path", "debug")}
    assert official == OFFICIAL_DEFAULTS and list(official) == list(OFFICIAL_DEFAULTS)


def test_the_pipeline_uses_these_defaults():
    pipeline = pytest.importorskip("acestep_models.v1.pipeline")
    assert pipeline.OFFICIAL_DEFAULTS == OFFICIAL_DEFAULTS


def test_values_take_one_form():
    params = load_params(
        {
            "manual_seeds": "11, 12",
            "retake_seeds": 7,
            "oss_steps": "16, 29, 52",
            "infer_step": 27.0,
            "guidance_scale": 7,
        }
    )
    assert params["manual_seeds"] == [11, 12] and params["retake_seeds"] == [7]  # official set_seeds strings
    assert params["oss_steps"] == [16, 29, 52] and params["infer_step"] == 27
    assert isinstance(params["guidance_scale"], float)
    assert load_params({"manual_seeds": []})["manual_seeds"] is None  # empty: random, as the official code
    assert load_params({"manual_seeds": ""})["manual_seeds"] is None


def test_overrides_go_on_top_of_the_file(tmp_path):
    path = tmp_path / "take_input_params.json"
    path.write_text(json.dumps({"prompt": "jazz", "infer_step": 60, "actual_seeds": [1, 2], "timecosts": {}}))
    params = load_params(path, overrides={"infer_step": 27, "manual_seeds": [5]})
    assert params["prompt"] == "jazz" and params["infer_step"] == 27 and params["manual_seeds"] == [5]
    with pytest.raises(ParamsError, match="^infer_steps=27: unknown parameter"):
        load_params(path, overrides={"infer_steps": 27})


def test_relative_paths_follow_the_file_and_flags_follow_the_working_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    write_song(project / "song.wav", 10.0)
    path = project / "repaint.json"
    path.write_text(
        json.dumps({"task": "repaint", "src_audio_path": "song.wav", "repaint_start": 2, "repaint_end": 4})
    )
    monkeypatch.chdir(tmp_path)
    assert load_params(path)["src_audio_path"] == str(project / "song.wav")
    assert load_params(json.loads(path.read_text()), base_dir=project)["src_audio_path"] == str(
        project / "song.wav"
    )
    write_song(tmp_path / "other.wav", 10.0)
    params = load_params(path, overrides={"src_audio_path": "other.wav"})
    assert params["src_audio_path"] == str(tmp_path / "other.wav")


def test_audio2audio_is_chosen_as_the_official_call_does(tmp_path, song):
    params = load_params({"audio2audio_enable": True, "ref_audio_input": str(song)})
    assert params["task"] == "audio2audio"
    # Without a reference file the official code ignores the switch and makes a song from text.
    assert load_params({"audio2audio_enable": True})["task"] == "text2music"


def test_the_official_file_format_reads_back_the_same(song):
    params = load_params(
        {"task": "repaint", "src_audio_path": str(song), "repaint_end": 5, "manual_seeds": 3}
    )
    written = to_official_file(params, audio_path="out.wav", format="wav", timecosts={"diffusion": 1.0})
    assert written["actual_seeds"] == [3] and "manual_seeds" not in written
    assert load_params(json.loads(json.dumps(written))) == params


def test_fix_random_makes_a_run_repeatable():
    params = fix_random(load_params({"audio_duration": -1, "manual_seeds": [4, 5], "batch_size": 3}))
    assert params["manual_seeds"] == [4, 5, 5]  # the last seed repeats (official set_seeds)
    assert len(params["retake_seeds"]) == 3 and all(0 <= s < 2**32 for s in params["retake_seeds"])
    assert 30 <= params["audio_duration"] < 240
    assert fix_random(params) == params


def test_flags_are_parsed_by_the_key_they_set():
    assert parse_flag("infer_step", "27") == 27 and parse_flag("guidance_scale", "7.5") == 7.5
    assert parse_flag("use_erg_lyric", "false") is False and parse_flag("audio2audio_enable", "yes") is True
    assert parse_flag("manual_seeds", "1,2") == "1,2" and parse_flag("manual_seeds", "random") is None
    assert parse_flag("src_audio_path", "none") is None and parse_flag("lora_name_or_path", "none") == "none"
    with pytest.raises(ParamsError, match='^use_erg_tag="maybe": expected true or false$'):
        parse_flag("use_erg_tag", "maybe")
    with pytest.raises(ParamsError, match='^infer_step="many": expected a number$'):
        parse_flag("infer_step", "many")


BAD = [  # (params, the one-line message); {song} is a 10 s source file
    ({"infer_steps": 27}, "infer_steps=27: unknown parameter (the official names are those of ACEStepPipeline"),
    ({"infer_step": "27"}, 'infer_step="27": expected a number'),
    ({"infer_step": 27.5}, "infer_step=27.5: expected a whole number"),
    ({"infer_step": 0}, "infer_step=0: expected 1..1000"),
    ({"guidance_scale": float("nan")}, "guidance_scale=NaN: expected a finite number"),
    ({"guidance_scale": True}, "guidance_scale=true: expected a number"),
    ({"guidance_scale": -2}, "guidance_scale=-2.0: expected 0 or more"),
    ({"guidance_interval": 1.5}, "guidance_interval=1.5: expected a value in [0, 1]"),
    ({"use_erg_tag": "yes"}, 'use_erg_tag="yes": expected true or false'),
    ({"prompt": 5}, "prompt=5: expected a string"),
    ({"task": "remix"}, 'task="remix": expected one of text2music, retake, repaint, extend, edit, audio2audio'),
    ({"scheduler_type": "ddim"}, 'scheduler_type="ddim": expected one of euler, heun, pingpong'),
    ({"cfg_type": "cfgpp"}, 'cfg_type="cfgpp": expected one of apg, cfg, cfg_star'),
    ({"manual_seeds": "1,x"}, 'manual_seeds="1,x": expected seeds separated by commas'),
    ({"manual_seeds": [-1]}, "manual_seeds=[-1]: seeds must be in 0..2**64-1 (got -1)"),
    ({"manual_seeds": [1.5]}, "manual_seeds=[1.5]: expected seeds: a list of whole numbers"),
    ({"actual_seeds": [1], "manual_seeds": [2]}, "actual_seeds=[1]: differs from manual_seeds"),
    ({"oss_steps": [0, 10]}, "oss_steps=[0, 10]: step numbers must be in 1..1000 (got 0)"),
    ({"batch_size": 0}, "batch_size=0: expected 1 or more"),
    ({"audio_duration": 600}, "audio_duration=600.0: longer than the 240 s the model supports"),
    ({"audio_duration": 0.05}, "audio_duration=0.05: shorter than one latent frame"),
    ({"task": "repaint"}, "src_audio_path=null: task repaint needs a source audio file"),
    ({"task": "edit", "src_audio_path": "missing.wav"}, 'src_audio_path="{tmp}/missing.wav": file not found'),
    ({"task": "text2music", "src_audio_path": "{song}"}, 'src_audio_path="{song}": task text2music takes no source audio'),
    ({"task": "repaint", "src_audio_path": "{song}", "repaint_start": -1, "repaint_end": 5}, "repaint_start=-1.0: before the song's start (use task extend"),
    ({"task": "repaint", "src_audio_path": "{song}", "repaint_start": 2, "repaint_end": 12}, "repaint_end=12.0: after the song's end (10.03 s; use task extend"),
    ({"task": "repaint", "src_audio_path": "{song}", "repaint_start": 4, "repaint_end": 4}, "repaint_end=4.0: not after repaint_start=4"),
    ({"task": "extend", "src_audio_path": "{song}", "repaint_start": 0, "repaint_end": 10}, "repaint_end=10.0: nothing to extend"),
    ({"task": "extend", "src_audio_path": "{song}", "repaint_start": 3, "repaint_end": 30}, "repaint_start=3.0: extend keeps the song"),
    ({"task": "extend", "src_audio_path": "{song}", "repaint_start": -300, "repaint_end": 10}, "repaint_start=-300.0: extends by more than 240 s"),
    ({"task": "edit", "src_audio_path": "{song}"}, "edit_target_prompt=null: task edit needs the target prompt"),
    ({"task": "edit", "src_audio_path": "{song}", "edit_target_prompt": "rock", "edit_n_min": 0.8, "edit_n_max": 0.5}, "edit_n_min=0.8: above edit_n_max=0.5"),
    ({"task": "audio2audio"}, 'task="audio2audio": needs audio2audio_enable true and a ref_audio_input file'),
    ({"task": "repaint", "audio2audio_enable": True, "ref_audio_input": "{song}"}, 'task="repaint": audio2audio_enable with ref_audio_input runs audio2audio'),
    ({"audio2audio_enable": True, "ref_audio_input": "{song}", "ref_audio_strength": 0.99, "infer_step": 27}, "ref_audio_strength=0.99: leaves no sampling step of infer_step=27"),
]  # fmt: skip


@pytest.mark.parametrize("bad, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_each_bad_value_is_one_line_naming_the_key(bad, message, tmp_path, song):
    def fill(v):
        return v.replace("{song}", str(song)).replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v

    bad = {k: fill(v) for k, v in bad.items()}
    with pytest.raises(ParamsError) as caught:
        load_params(bad, base_dir=tmp_path)
    text = str(caught.value)
    assert text.startswith(fill(message)) and "\n" not in text
    assert caught.value.key == text.split("=")[0]


def test_bad_files_say_which_file(tmp_path):
    with pytest.raises(ParamsError, match="^params=.*nothing.json.: file not found$"):
        load_params(tmp_path / "nothing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"infer_step": 27,}')
    with pytest.raises(ParamsError, match="broken.json.: not valid JSON: .*line 1"):
        load_params(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ParamsError, match="expected a JSON object"):
        load_params(listed)


def test_good_source_tasks(song):
    extend = load_params(
        {"task": "extend", "src_audio_path": str(song), "repaint_start": -5, "repaint_end": 40}
    )
    assert extend["repaint_start"] == -5.0 and extend["repaint_end"] == 40.0
    edit = load_params({"task": "edit", "src_audio_path": str(song), "edit_target_prompt": "rock"})
    assert edit["edit_target_lyrics"] == ""  # the official code needs a string
    repaint = load_params(
        {"task": "repaint", "src_audio_path": str(song), "repaint_start": 0, "repaint_end": 10}
    )
    assert repaint["repaint_end"] == 10.0  # inside the padded source (10.03 s)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"guidance_scale": float("nan")}, "guidance_scale=NaN: expected a finite number from 0 to 200"),
        ({"omega_scale": float("inf")}, "omega_scale=Infinity: expected a finite number from -100 to 100"),
        ({"retake_variance": float("nan")}, "retake_variance=NaN: expected a finite number in [0, 1]"),
        ({"edit_n_avg": float("nan")}, "edit_n_avg=NaN: expected a finite number"),
        ({"omega_scale": 1e9}, "omega_scale=1000000000.0: expected a value from -100 to 100"),
        ({"guidance_scale_text": 1e300}, "guidance_scale_text=1e+300: expected a value from 0 to 200"),
        ({"lora_weight": -50}, "lora_weight=-50.0: expected a value from -10 to 10"),
        ({"batch_size": 10**6}, "batch_size=1000000: expected at most 64"),
        ({"lyrics": "la " * 20000}, 'lyrics="la la la'),
        ({"edit_target_lyrics": "x" * 20000}, 'edit_target_lyrics="xxx'),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_every_number_is_finite_and_in_range_and_lyrics_fit(bad, message):
    with pytest.raises(ParamsError) as caught:
        load_params(bad)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    if "lyrics" in message:
        assert "ACE-Step v1 reads at most 4096 lyric tokens" in str(caught.value)


def test_a_source_cut_short_is_refused(tmp_path):
    cut = tmp_path / "cut.wav"
    cut.write_bytes(write_song(tmp_path / "whole.wav", 3.0).read_bytes()[:300])
    with pytest.raises(
        ParamsError, match=r"src_audio_path=.*cut.wav.: it holds only .* its header announces 3.00 s"
    ):
        load_params({"task": "repaint", "src_audio_path": str(cut), "repaint_start": 0, "repaint_end": 1})
