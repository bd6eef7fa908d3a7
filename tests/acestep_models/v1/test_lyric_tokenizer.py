"""Lyrics to token ids, checked id for id against the official ACE-Step v1 pipeline.

The golden corpus (tests/golden/lyrics/, made by tests/golden/make_lyrics.py with the official code) holds every
lyric of the official examples plus lines in the 17 supported languages and beyond: numbers, currency,
ordinals, abbreviations, symbols, structure tags, mixed languages, emoji, odd unicode, empty lines.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import acestep_models.v1.lyric_tokenizer as lyric_tokenizer
from acestep_models.v1.language import SUPPORTED_LANGUAGES, detect_language, line_language
from acestep_models.v1.lyric_cleaners import clean, zh_cardinal
from acestep_models.v1.lyric_tokenizer import LINE_END_ID, START_ID, LyricTokenizer, find_lyric_vocab

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
LYRICS = GOLDEN / "lyrics"
OFFICIAL = json.loads((LYRICS / "official_ids.json").read_text(encoding="utf-8"))


def read_lyrics(rel: str) -> str:
    with open(LYRICS / rel, encoding="utf-8", newline="") as f:  # exactly as written: no newline translation
        return f.read()


@pytest.fixture(scope="module")
def tokenizer(lyric_vocab) -> LyricTokenizer:
    return LyricTokenizer.from_vocab(lyric_vocab)


@pytest.mark.parametrize("rel", sorted(OFFICIAL["files"]))
def test_ids_match_official(tokenizer, rel):
    lyrics = read_lyrics(rel)
    official = OFFICIAL["files"][rel]
    assert tokenizer.tokenize(lyrics) == official["ids"]

    # Line by line: the ids (plus the separator, or nothing for a dropped line) and the language used.
    reports = tokenizer.analyse(lyrics)
    assert len(reports) == len(official["lines"]) == len(lyrics.split("\n"))
    for report, line in zip(reports, official["lines"]):
        assert ([] if report.error else report.ids + [LINE_END_ID]) == line["ids"], report.text
        if line["lang"] is None:
            assert report.lang is None and report.ids == [] and report.text == ""
        elif not report.text.startswith("["):
            assert report.lang == (line["lang"] if line["lang"] in SUPPORTED_LANGUAGES else "en"), report.text


@pytest.mark.parametrize("rel", sorted(OFFICIAL["forced_clean"]))
def test_cleaned_text_matches_official_in_every_language(rel):
    """Each line cleaned as each language, whatever its own: numbers, currency, ordinals, symbols."""
    for row in OFFICIAL["forced_clean"][rel]:
        for lang, expected in row["clean"].items():
            try:
                got = clean(row["line"], lang)
            except Exception as e:
                got = f"ERROR {type(e).__name__}"
            assert got == expected, (row["line"], lang)


@pytest.mark.parametrize("case", OFFICIAL["inline"], ids=lambda c: repr(c["lyrics"]))
def test_whole_lyrics_edge_cases(tokenizer, case):
    assert tokenizer.tokenize(case["lyrics"]) == case["ids"]


def test_raw_language_detection_matches_official():
    """The raw LangSegment answer, before the fallback to English (e.g. Thai, Vietnamese, Greek)."""
    checked = 0
    for rel in ("corpus/mixed.txt", "corpus/unicode.txt", "corpus/symbols_digits.txt", "corpus/ja.txt"):
        for line, official in zip(read_lyrics(rel).split("\n"), OFFICIAL["files"][rel]["lines"]):
            if line.strip():
                assert detect_language(line.strip()) == official["lang"], line
                checked += 1
    assert checked > 50


def test_what_the_pipeline_feeds(tokenizer):
    # Empty lyrics: official pipeline_ace_step.py:1516-1518 feeds ids [[0]] and mask [[0]].
    ids, mask = tokenizer.lyric_ids_and_mask("")
    assert ids.tolist() == [[0]] and mask.tolist() == [[0]]
    assert ids.dtype == mask.dtype == torch.long

    ids, mask = tokenizer.lyric_ids_and_mask("[verse]\nHello world")
    assert ids.shape == mask.shape == (1, len(tokenizer.tokenize("[verse]\nHello world")))
    assert ids[0].tolist() == tokenizer.tokenize("[verse]\nHello world")
    assert ids[0, 0] == START_ID and ids[0, -1] == LINE_END_ID and bool(mask.all())
    # Only the empty string counts as no lyrics (pipeline_ace_step.py:1518 tests len(lyrics) > 0).
    assert tokenizer.lyric_ids_and_mask(" ")[0].tolist() == [[START_ID, LINE_END_ID]]


def test_line_reports(tokenizer):
    reports = tokenizer.analyse("[verse]\n\n  你好 2024年  \n😀 love\n[chorus] 你好\nΕλληνικά")
    verse, empty, chinese, emoji, tag, greek = reports
    assert (verse.lang, verse.text, verse.ids) == ("en", "[verse]", [SUPPORTED_LANGUAGES["en"], 6683])
    assert (empty.lang, empty.text, empty.ids, empty.unknown) == (None, "", [], 0)
    assert chinese.text == "你好 2024年" and chinese.lang == "zh"
    assert chinese.ids[0] == 5023 and chinese.unknown == 0  # "[zh-cn]" + pinyin
    assert emoji.unknown == 1 == emoji.ids.count(tokenizer.unk_id)
    # A line starting with a tag is encoded as English whatever follows: the Chinese becomes [UNK].
    assert tag.lang == "en" and tag.unknown == 2
    assert greek.lang == "en" and greek.unknown > 0  # Greek is no supported language: English, mostly [UNK]
    assert all(r.error is None for r in reports)


def test_a_line_that_fails_is_left_out(tokenizer, monkeypatch):
    """Official pipeline_ace_step.py:467-468 prints the error and skips the line, separator included."""
    real_clean = lyric_tokenizer.clean

    def failing(text, lang):
        if "boom" in text:
            raise RuntimeError("cannot clean")
        return real_clean(text, lang)

    monkeypatch.setattr(lyric_tokenizer, "clean", failing)
    reports = tokenizer.analyse("hello\nboom\nworld")
    assert reports[1].error == "RuntimeError: cannot clean" and reports[1].ids == []
    assert tokenizer.tokenize("hello\nboom\nworld") == [START_ID] + reports[0].ids + [2] + reports[2].ids + [
        2
    ]


def test_language_rules():
    assert line_language("123") == "zh"  # no letters: LangSegment says Chinese, so numbers become pinyin
    assert line_language("สวัสดีครับ ผมรักคุณ") == "en"  # Thai is detected but not supported
    assert detect_language("สวัสดีครับ ผมรักคุณ") == "th"
    assert clean("200个", "zh") == "liang3bai3ge4"
    assert clean("2000", "zh") == "er4ling2ling2ling2"  # 4 digits and more are read digit by digit
    assert zh_cardinal("10") == "十" and zh_cardinal("00.5") == "零点五" and zh_cardinal("20000") == "两万"


# ---------------------------------------------------------------------------------------------------------
# Finding the vocabulary
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def no_comfy(monkeypatch):
    monkeypatch.setattr(lyric_tokenizer, "_comfy_package_dir", lambda: None)
    monkeypatch.delenv("COMFYUI_PATH", raising=False)


def test_find_vocab_explicit(lyric_vocab, tmp_path):
    assert find_lyric_vocab(lyric_vocab) == lyric_vocab
    shutil.copy(lyric_vocab, tmp_path / "vocab.json")
    assert find_lyric_vocab(str(tmp_path)) == tmp_path / "vocab.json"  # a folder holding it
    with pytest.raises(FileNotFoundError, match="nothing-here.json"):
        find_lyric_vocab(tmp_path / "nothing-here.json")


def test_find_vocab_beside_checkpoint(lyric_vocab, tmp_path, no_comfy):
    checkpoint = tmp_path / "ace_step_v1_3.5b.safetensors"
    checkpoint.write_bytes(b"")
    (tmp_path / "vocab.json").write_text('{"model": {"vocab": {}}}')  # some other tokenizer's vocab: skipped
    (tmp_path / "ace_lyrics_tokenizer").mkdir()
    shutil.copy(lyric_vocab, tmp_path / "ace_lyrics_tokenizer" / "vocab.json")
    assert find_lyric_vocab(near=checkpoint) == tmp_path / "ace_lyrics_tokenizer" / "vocab.json"
    assert find_lyric_vocab(near=tmp_path) == tmp_path / "ace_lyrics_tokenizer" / "vocab.json"


def test_find_vocab_through_comfyui_path(lyric_vocab, tmp_path, monkeypatch, no_comfy):
    comfyui = lyric_vocab.parents[3]  # <ComfyUI>/comfy/text_encoders/ace_lyrics_tokenizer/vocab.json
    monkeypatch.setenv("COMFYUI_PATH", str(comfyui))
    assert find_lyric_vocab(near=tmp_path).resolve() == lyric_vocab.resolve()


def test_find_vocab_inside_comfyui(lyric_vocab, monkeypatch):
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.syspath_prepend(str(lyric_vocab.parents[3]))  # as inside ComfyUI: `comfy` importable
    assert find_lyric_vocab().resolve() == lyric_vocab.resolve()


def test_find_vocab_error_lists_every_place(tmp_path, no_comfy):
    with pytest.raises(FileNotFoundError) as err:
        find_lyric_vocab(near=tmp_path / "model.safetensors")
    message = str(err.value)
    for place in (tmp_path / "vocab.json", tmp_path / "ace_lyrics_tokenizer" / "vocab.json"):
        assert f"{place} (missing)" in message
    assert "comfy` package (not importable)" in message and "$COMFYUI_PATH (not set)" in message
    assert "--vocab" in message and "\n" not in message


def test_wrong_vocabulary_is_refused(tmp_path):
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE(vocab={"[UNK]": 0, "a": 1}, merges=[], unk_token="[UNK]")).save(
        str(tmp_path / "v.json")
    )
    with pytest.raises(ValueError, match="not the ACE-Step lyric vocabulary"):
        LyricTokenizer.from_vocab(tmp_path / "v.json")


# ---------------------------------------------------------------------------------------------------------
# Live parity (only with the official code at hand)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(
    not os.environ.get("ACESTEP_REF"), reason="set ACESTEP_REF (and ACESTEP_REF_PYTHON) to run"
)
def test_live_parity_with_official_code(tokenizer, tmp_path):
    """Fresh random lines (a seed the golden corpus does not use) through the official code and ours."""
    sys.path.insert(0, str(GOLDEN))
    try:
        import make_lyrics
    finally:
        sys.path.remove(str(GOLDEN))
    rng = random.Random(int(os.environ.get("LYRICS_LIVE_SEED", "7")))
    lyrics = [
        "\n".join(
            make_lyrics.fuzz_mixed(rng) if rng.random() < 0.7 else make_lyrics.fuzz_numbers(rng)
            for _ in range(6)
        )
        for _ in range(40)
    ]
    (tmp_path / "lyrics.json").write_text(json.dumps(lyrics, ensure_ascii=False), encoding="utf-8")
    python = os.environ.get("ACESTEP_REF_PYTHON", sys.executable)
    run = subprocess.run(
        [python, str(GOLDEN / "make_lyrics.py"), "--ids-of", str(tmp_path / "lyrics.json")],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    official = json.loads(run.stdout.strip().splitlines()[-1])
    for text, ids in zip(lyrics, official):
        assert tokenizer.tokenize(text) == ids, text


# --- Japanese without mojimoji (Python 3.13: no wheel) -------------------------------------------------------------


def test_the_mojimoji_stand_in_equals_mojimoji_after_nfkc():
    """cutlet calls mojimoji only on NFKC-normalised text; there the stand-in gives mojimoji's result for every code
    point and every pair of kana and width marks."""
    import unicodedata

    mojimoji = pytest.importorskip("mojimoji")  # the real one, where a wheel exists (Python <= 3.12)
    from acestep_models.v1.lyric_cleaners import _width_shim

    shim = _width_shim()

    def both(text):
        t = unicodedata.normalize("NFKC", text)
        real = mojimoji.han_to_zen(mojimoji.zen_to_han(t, kana=False), digit=False, ascii=False)
        return real, shim.han_to_zen(shim.zen_to_han(t, kana=False), digit=False, ascii=False)

    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    assert [c for c in chars if both(c)[0] != both(c)[1]] == []
    kana = [chr(c) for c in [*range(0x3040, 0x3100), *range(0xFF61, 0xFFA0), 0x3099, 0x309A]]
    assert [a + b for a in kana for b in kana if both(a + b)[0] != both(a + b)[1]] == []


@pytest.fixture
def without_mojimoji(monkeypatch):
    """As on Python 3.13: mojimoji not installed (cutlet installed with --no-deps)."""
    import importlib.util

    from acestep_models.v1 import lyric_cleaners

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "mojimoji" else real_find_spec(n, *a)
    )
    for name in [m for m in sys.modules if m == "mojimoji" or m.split(".")[0] == "cutlet"]:
        monkeypatch.delitem(sys.modules, name)
    lyric_cleaners._cutlet.cache_clear()
    yield lyric_cleaners
    lyric_cleaners._cutlet.cache_clear()


def test_japanese_ids_stay_official_without_mojimoji(tokenizer, without_mojimoji):
    assert sys.modules.get("mojimoji") is None
    for rel in [r for r in sorted(OFFICIAL["files"]) if "ja" in Path(r).stem or "mixed" in r]:
        assert tokenizer.tokenize(read_lyrics(rel)) == OFFICIAL["files"][rel]["ids"], rel
    assert sys.modules["mojimoji"].__doc__.startswith("Stand-in")


def test_japanese_without_cutlet_says_how_to_install_it(tokenizer, without_mojimoji, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cutlet(name, *args, **kwargs):
        if name == "cutlet":
            raise ModuleNotFoundError("No module named 'cutlet'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cutlet)
    with pytest.raises(
        without_mojimoji.MissingDependency, match=r"'こんにちは'.*pip install --no-deps cutlet==0\.5\.2"
    ):
        tokenizer.tokenize("hello\nこんにちは")


def test_a_dictionary_package_outside_the_proved_versions_is_reported(monkeypatch):
    from importlib import metadata

    from acestep_models.v1.lyric_cleaners import dictionary_warnings

    assert dictionary_warnings() == []  # the versions the requirements ask for
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda n: "0.55.0" if n == "pypinyin" else real(n))
    (line,) = dictionary_warnings()
    assert line.startswith("pypinyin 0.55.0 is installed") and "0.49 <= pypinyin < 0.54" in line


# --- the longest lyrics the model takes ------------------------------------------------------------------------------


def test_lyrics_longer_than_the_model_takes_are_refused_where_the_count_passes_the_limit(tokenizer):
    from acestep_models.v1.lyric_tokenizer import MAX_LYRIC_TOKENS, LyricsTooLong

    # the official training cut (text2music_dataset.py: lyric_token_idx[:4096])
    assert MAX_LYRIC_TOKENS == 4096
    lyrics = "[verse]\n" + "\n".join(f"line number {i} of many" for i in range(600))
    ids = tokenizer.tokenize(lyrics)  # without a limit: all of them (tokenize-lyrics, Check Lyrics)
    assert len(ids) > MAX_LYRIC_TOKENS
    with pytest.raises(LyricsTooLong) as caught:
        tokenizer.lyric_ids_and_mask(lyrics, limit=MAX_LYRIC_TOKENS)
    line = next(n for n in range(1, 602) if len(tokenizer.tokenize("\n".join(lyrics.split("\n")[:n]))) > 4096)
    assert f"they pass it at line {line} of 601" in str(caught.value)
    fits = "\n".join(lyrics.split("\n")[: line - 1])
    assert tokenizer.lyric_ids_and_mask(fits, limit=MAX_LYRIC_TOKENS)[0].shape[1] <= MAX_LYRIC_TOKENS


def test_text_too_long_to_fit_is_refused_without_tokenizing_it(tokenizer, monkeypatch):
    from acestep_models.v1.lyric_tokenizer import LyricsTooLong, check_length

    monkeypatch.setattr(tokenizer, "reports", lambda lyrics: pytest.fail("tokenized"))
    huge = "la " * 20000  # 50,000 characters asked the lyric encoder for 57.6 GB
    with pytest.raises(
        LyricsTooLong, match="the lyrics are 59,999 characters long; ACE-Step v1 reads at most 4096"
    ):
        tokenizer.tokenize(huge, limit=4096)
    # blank lines and spaces do not count (each blank line is one token: the count stops those)
    check_length("\n" * 100_000 + "  la  ")
