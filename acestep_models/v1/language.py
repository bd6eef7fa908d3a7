"""The language the official ACE-Step v1 pipeline gives a lyric line.

The official pipeline (``ACEStepPipeline.get_lang``) runs LangSegment 0.3.5 over each line with every language
py3langid knows as its filter, takes the language with the largest character count (the second one when the
first is English), and falls back to English when anything fails. We use the same LangSegment 0.3.5 from PyPI
(``langsegment-backup``: the same code as the copy bundled in the official repository, proved id-for-id by the
parity tests in tests/golden/lyrics/) rather than a port of its several hundred lines of heuristics.

Known behaviour worth telling users: a line with no letters at all (digits, punctuation, emoji) comes out as
"zh", so a bare number is read as Chinese.
"""

from __future__ import annotations

import importlib
from functools import cache

# Token id of each language's "[lang]" marker in the lyric vocabulary; also the set of languages the lyric
# tokenizer accepts (official pipeline_ace_step.py SUPPORT_LANGUAGES). Anything else is encoded as English.
SUPPORTED_LANGUAGES = {
    "en": 259, "de": 260, "fr": 262, "es": 284, "it": 285, "pt": 286, "pl": 294, "tr": 295, "ru": 267,
    "cs": 293, "nl": 297, "ar": 5022, "zh": 5023, "ja": 5412, "hu": 5753, "ko": 6152, "hi": 6680,
}  # fmt: skip

# The version bundled in the official repository (acestep/language_segmentation/__init__.py).
LANGSEGMENT_VERSION = "0.3.5"


@cache
def _segmenter():
    """LangSegment's class (its state lives on the class) and the official filter list."""
    try:
        package = importlib.import_module("LangSegment")
    except ImportError as e:
        raise ImportError(
            "Lyric language detection needs LangSegment 0.3.5: pip install langsegment-backup==0.3.5.post1"
        ) from e
    version = getattr(package, "__version__", "?")
    if version != LANGSEGMENT_VERSION:
        raise ImportError(
            f"LangSegment {version} is installed but the official ACE-Step code uses {LANGSEGMENT_VERSION} "
            "(another package may have installed `langsegment`); run: "
            "pip install --force-reinstall langsegment-backup==0.3.5.post1"
        )
    module = importlib.import_module("LangSegment.LangSegment")
    # The official filter list (acestep/language_segmentation/language_filters.py) is py3langid's class list.
    return module.LangSegment, list(module.langid.nb_classes)


def detect_language(line: str) -> str:
    """What the official ``get_lang`` returns for one (stripped, non-empty) line; may be any py3langid code."""
    try:
        seg, filters = _segmenter()
        # LangSegment keeps its settings on the class: put back the official ones in case another user of the
        # package in this process (another custom node) changed them, and drop its one-text cache.
        seg.Langfilters, seg.isLangMerge, seg.keepPinyin = filters, True, False
        seg.EnablePreview, seg.LangPriorityThreshold = False, 0.89
        seg._clears()
        seg.getTexts(line)
        counts = seg.getCounts()
        lang = counts[0][0]
        if len(counts) > 1 and lang == "en":
            lang = counts[1][0]
        return lang
    except ImportError:
        raise
    except Exception:
        return "en"


def line_language(line: str) -> str:
    """The language the official pipeline encodes a lyric line with (a key of ``SUPPORTED_LANGUAGES``)."""
    lang = detect_language(line)
    return lang if lang in SUPPORTED_LANGUAGES else "en"
