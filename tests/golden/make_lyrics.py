"""Official ACE-Step v1 lyric token ids for the corpus in tests/golden/lyrics/ (see the README there).

Run with the reference environment (official code importable from $ACESTEP_REF):

    ACESTEP_REF=/path/to/ACE-Step CUDA_VISIBLE_DEVICES="" \\
        /work/venvs/ref/bin/python tests/golden/make_lyrics.py [--write-corpus]

``--ids-of LIST.json`` prints the official ids of each lyrics string in a JSON list (the live parity test).
``--write-corpus`` first (re)writes the generated corpus files: the lyrics of every ``examples/**/*.json`` of
the official repository (``lyrics`` field, one file per distinct text) and the seeded random lines. Without it
only ``official_ids.json`` is rebuilt from the committed ``*.txt`` files. Nothing here re-implements the
official tokenizer: every id and cleaned text is what the official functions return.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "lyrics"
EXAMPLES = HERE / "examples"
CORPUS = HERE / "corpus"
OUT = HERE / "official_ids.json"
# Files whose every line is also cleaned in each of the 17 languages (official preprocess_text), whatever
# language the line would be detected as: this checks the per-language number/symbol rules everywhere.
FORCED = ("corpus/fuzz_numbers.txt", "corpus/symbols_digits.txt")
# Whole-lyrics strings checked as they are (the empty string is the pipeline's no-lyrics case).
INLINE = ["", " ", "\n", "\n\n", "a\r\nb\r\n", "\t[verse]\t", "hello\rworld", "你好\n\n\nworld"]
SEED = 20250426


def official():
    ref = os.environ.get("ACESTEP_REF")
    if not ref:
        sys.exit(
            "Set ACESTEP_REF to a checkout of the official ACE-Step repository (and use its environment)."
        )
    sys.path.insert(0, ref)
    import acestep.pipeline_ace_step as pipeline
    from acestep.language_segmentation import LangSegment, language_filters
    from acestep.models.lyrics_utils.lyric_tokenizer import VoiceBpeTokenizer

    # The pipeline's tokenizer state without loading any model: what load_checkpoint sets up.
    pipe = pipeline.ACEStepPipeline.__new__(pipeline.ACEStepPipeline)
    segmenter = LangSegment()
    segmenter.setfilters(language_filters.default)
    pipe.lang_segment = segmenter
    pipe.lyric_tokenizer = VoiceBpeTokenizer()
    return pipe, list(pipeline.SUPPORT_LANGUAGES), Path(ref)


def read(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def write_corpus(ref: Path) -> None:
    seen = {}
    for old in EXAMPLES.glob("*.txt"):
        old.unlink()
    for src in sorted(glob.glob(str(ref / "examples" / "**" / "*.json"), recursive=True)):
        lyrics = json.load(open(src, encoding="utf-8")).get("lyrics")
        rel = Path(src).relative_to(ref / "examples")
        if not lyrics or lyrics in seen:
            print(f"skip {rel}: {'no lyrics' if not lyrics else 'same lyrics as ' + seen[lyrics]}")
            continue
        stamp = rel.stem.split("_")[1]  # output_<stamp>_0_input_params
        name = f"{rel.parts[0]}_{stamp}.txt"
        seen[lyrics] = name
        write(EXAMPLES / name, lyrics)
    rng = random.Random(SEED)
    write(CORPUS / "fuzz_mixed.txt", "\n".join(fuzz_mixed(rng) for _ in range(300)) + "\n")
    write(CORPUS / "fuzz_numbers.txt", "\n".join(fuzz_numbers(rng) for _ in range(300)) + "\n")


# Random lines: words of many languages glued with numbers, currency, ordinals, abbreviations and symbols.
PIECES = (
    "12.5 1,000 1.000 100,000.5 1.234.567,89 $20 20$ $20.15 20€ 20,15€ €3 £3.50 3£ 1st 2nd 3rd 4th 21st 1. 1er "
    "1re 2e 3ème 1º 2ª 1o 5a 3-й 7-го 1ste 2de 5inci 3üncü 4edik 1번째 2번 3차 50% %14 100％ 36.6° C# #1 a&b me@x.com "
    "2024年8月24日 2024年 8月 12月5号 95年 13812345678 +86\u00a013912345678 010-12345678 0755-1234567 3/4 12个 3.5斤 "
    "20多岁 5块 2块5 3元 100万元 12345 2000 20000 200 22 2 0 00 007 00.5 10 11 101 1001 10086 3.14159 "
    "99999999999999999999 P2P B2B Dr. Mr. Mrs. St. Sr. Sra. Mme. Fr. Sig. P. M. Sw. Ing. г-н г-жа д-р Dhr. Mevr. "
    "B. Byk. Nőv. Jr. Ltd. Co. Capt. drs. １２３ ２０２４年 ٣ ² ½ … —— ～ 「」 （） () [] [verse] (oo-yeah!) İstanbul "
    "ÖZGÜR Über \"quoted\" 'single' “curly” e\u0301 a\u200db 😀 🎵🎶 👨\u200d👩\u200d👧 ❤️ ♪"
).split(" ")
WORDS = {
    "en": "love night city fire dance heart the you and I forever baby light",
    "zh": "我 你 爱 夜晚 城市 火焰 跳舞 心 永远 光 的 了 是 在 一 二 两 十 百",
    "ja": "愛 夜 街 こころ ありがとう さくら カタカナ 東京 です ます の は 踊る",
    "ko": "사랑 밤 도시 불 춤 마음 영원히 빛 안녕 하세요 오빠",
    "de": "Liebe Nacht Stadt Feuer tanzen Herz für immer Licht schön",
    "fr": "amour nuit ville feu danser cœur toujours lumière été",
    "es": "amor noche ciudad fuego bailar corazón siempre luz niño",
    "pt": "amor noite cidade fogo dançar coração sempre luz não",
    "it": "amore notte città fuoco ballare cuore sempre luce perché",
    "ru": "любовь ночь город огонь танцевать сердце всегда свет",
    "pl": "miłość noc miasto ogień tańczyć serce zawsze światło",
    "tr": "aşk gece şehir ateş dans kalp sonsuza ışık güzel",
    "nl": "liefde nacht stad vuur dansen hart altijd licht",
    "cs": "láska noc město oheň tančit srdce vždy světlo",
    "ar": "حب ليل مدينة نار رقص قلب دائما ضوء",
    "hu": "szerelem éjszaka város tűz táncolni szív mindig fény",
    "hi": "प्यार रात शहर आग नाचना दिल हमेशा रोशनी",
    "th": "รัก คืน เมือง",
    "vi": "tình yêu đêm thành phố",
}
SEPARATORS = [" ", " ", " ", "", ", ", "，", "。", "! ", "? ", "-", "...", "、"]
NUMBER_ATOMS = (
    list("0123456789") * 6
    + list(".,/%％-+ :：")
    + (
        "年 月 日 号 元 块 角 毛 分 万 千 百 亿 个 多 余 几 斤 岁 米 千克 人民币 美元 $ € £ ° st nd rd th er e o a º ª -й -го "
        "번째 번 ste de . inci ik & # @ P B x 我 的 爱 ١ ２ ５ ² 86 138 010 0755 Dr. mr. p. г-н"
    ).split(" ")
)


def fuzz_mixed(rng: random.Random) -> str:
    langs = list(WORDS)
    main = rng.choice(langs)
    line = ""
    for _ in range(rng.randint(1, 9)):
        r = rng.random()
        if r < 0.55:
            word = rng.choice(WORDS[main].split())
        elif r < 0.7:
            word = rng.choice(WORDS[rng.choice(langs)].split())
        else:
            word = rng.choice(PIECES)
        line += word + rng.choice(SEPARATORS)
    if rng.random() < 0.1:
        line = rng.choice(["[verse] ", "[chorus]", "(Chorus) "]) + line
    return line.strip() if rng.random() < 0.3 else line


def fuzz_numbers(rng: random.Random) -> str:
    return "".join(rng.choice(NUMBER_ATOMS) for _ in range(rng.randint(1, 14)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--write-corpus", action="store_true", help="rewrite examples/ and the fuzz files first"
    )
    parser.add_argument(
        "--ids-of", metavar="JSON", help="only print the official ids of each lyrics string in this JSON list"
    )
    args = parser.parse_args()
    pipe, languages, ref = official()
    if args.ids_of:  # used by the live parity test
        lyrics = json.load(open(args.ids_of, encoding="utf-8"))
        print(json.dumps([pipe.tokenize_lyrics(text) for text in lyrics]))
        return
    if args.write_corpus:
        write_corpus(ref)

    def lines_of(text: str) -> list[dict]:
        # Each line alone through the official tokenize_lyrics: [START] + its ids + [SPACE] (nothing when the
        # official code drops the line); get_lang is the raw LangSegment answer, before the fallback to "en".
        return [
            {
                "lang": pipe.get_lang(line.strip()) if line.strip() else None,
                "ids": pipe.tokenize_lyrics(line)[1:],
            }
            for line in text.split("\n")
        ]

    files = {}
    for path in sorted([*EXAMPLES.glob("*.txt"), *CORPUS.glob("*.txt")]):
        rel = path.relative_to(HERE).as_posix()
        text = read(path)
        files[rel] = {"ids": pipe.tokenize_lyrics(text), "lines": lines_of(text)}
        print(f"{rel}: {len(files[rel]['ids'])} ids")
    forced = {
        rel: [
            {"line": line, "clean": {lang: clean_or_error(pipe, line, lang) for lang in languages}}
            for line in read(HERE / rel).split("\n")
        ]
        for rel in FORCED
    }
    inline = [{"lyrics": text, "ids": pipe.tokenize_lyrics(text)} for text in INLINE]
    with open(OUT, "w", encoding="utf-8") as f:
        f.write('{"files": {\n')
        f.write(",\n".join(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in files.items()))
        f.write('\n},\n"inline": ' + json.dumps(inline, ensure_ascii=False))
        f.write(',\n"forced_clean": ' + json.dumps(forced, ensure_ascii=False) + "}\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


def clean_or_error(pipe, line: str, lang: str) -> str:
    try:
        return pipe.lyric_tokenizer.preprocess_text(line, lang)
    except Exception as e:
        return f"ERROR {type(e).__name__}"


if __name__ == "__main__":
    main()
