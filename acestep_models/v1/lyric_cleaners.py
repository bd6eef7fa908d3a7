"""Per-language text cleaning in front of the ACE-Step v1 lyric BPE.

The official tokenizer (``acestep/models/lyrics_utils/lyric_tokenizer.py``, taken from coqui XTTS) spells out
numbers, currency, ordinals, abbreviations and a few symbols per language with num2words, turns Chinese into
tone-numbered pinyin (after the XTTS/WeNet Chinese number normaliser), Korean into academic romanisation and
Japanese into romaji before BPE. This module reproduces that text, character for character: the id parity
tests run it over the official examples and a multilingual corpus (tests/golden/lyrics/).

The tables below are data read off the official file; the error handling mirrors it on purpose (a failing
step leaves the text as it was before that step), because that decides the ids the model was trained on.
"""

from __future__ import annotations

import re
import string
from functools import cache

from num2words import num2words

# Languages that go through the multilingual cleaners; "ja" and "hi" have their own paths.
CLEANED_LANGS = ("ar", "cs", "de", "en", "es", "fr", "hu", "it", "nl", "pl", "pt", "ru", "tr", "zh", "ko")

# ---------------------------------------------------------------------------------------------------------
# Tables (official lyric_tokenizer.py: _abbreviations, _symbols_multilingual, _ordinal_re, _currency_re)
# ---------------------------------------------------------------------------------------------------------
# fmt: off
_ABBREVIATIONS: dict[str, list[tuple[str, str]]] = {
    "en": [
        ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
        ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"),
        ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"),
        ("esq", "esquire"), ("ltd", "limited"), ("col", "colonel"), ("ft", "fort"),
    ],
    "es": [
        ("sra", "señora"), ("sr", "señor"), ("dr", "doctor"), ("dra", "doctora"), ("st", "santo"),
        ("co", "compañía"), ("jr", "junior"), ("ltd", "limitada"),
    ],
    "fr": [
        ("mme", "madame"), ("mr", "monsieur"), ("dr", "docteur"), ("st", "saint"), ("co", "compagnie"),
        ("jr", "junior"), ("ltd", "limitée"),
    ],
    "de": [("fr", "frau"), ("dr", "doktor"), ("st", "sankt"), ("co", "firma"), ("jr", "junior")],
    "pt": [
        ("sra", "senhora"), ("sr", "senhor"), ("dr", "doutor"), ("dra", "doutora"), ("st", "santo"),
        ("co", "companhia"), ("jr", "júnior"), ("ltd", "limitada"),
    ],
    "it": [
        ("sig", "signore"), ("dr", "dottore"), ("st", "santo"), ("co", "compagnia"), ("jr", "junior"),
        ("ltd", "limitata"),
    ],
    "pl": [("p", "pani"), ("m", "pan"), ("dr", "doktor"), ("sw", "święty"), ("jr", "junior")],
    "ar": [],
    "zh": [],
    "cs": [("dr", "doktor"), ("ing", "inženýr"), ("p", "pan")],
    "ru": [("г-жа", "госпожа"), ("г-н", "господин"), ("д-р", "доктор")],
    "nl": [("dhr", "de heer"), ("mevr", "mevrouw"), ("dr", "dokter"), ("jhr", "jonkheer")],
    "tr": [("b", "bay"), ("byk", "büyük"), ("dr", "doktor")],
    "hu": [("dr", "doktor"), ("b", "bácsi"), ("nőv", "nővér")],
    "ko": [],
}
# fmt: on
# Official patterns: r"\b<abbr>\." (Russian: r"\b<abbr>\b"), case-insensitive, applied in list order.
_ABBREVIATION_RES = {
    lang: [(re.compile(rf"\b{a}\b" if lang == "ru" else rf"\b{a}\.", re.IGNORECASE), r) for a, r in pairs]
    for lang, pairs in _ABBREVIATIONS.items()
}

_SYMBOL_CHARS = ("&", "@", "%", "#", "$", "£", "°")  # order of application
_SYMBOL_WORDS = {
    "en": ("and", "at", "percent", "hash", "dollar", "pound", "degree"),
    "es": ("y", "arroba", "por ciento", "numeral", "dolar", "libra", "grados"),
    "fr": ("et", "arobase", "pour cent", "dièse", "dollar", "livre", "degrés"),
    "de": ("und", "at", "prozent", "raute", "dollar", "pfund", "grad"),
    "pt": ("e", "arroba", "por cento", "cardinal", "dólar", "libra", "graus"),
    "it": ("e", "chiocciola", "per cento", "cancelletto", "dollaro", "sterlina", "gradi"),
    "pl": ("i", "małpa", "procent", "krzyżyk", "dolar", "funt", "stopnie"),
    "ar": ("و", "على", "في المئة", "رقم", "دولار", "جنيه", "درجة"),
    "zh": ("和", "在", "百分之", "号", "美元", "英镑", "度"),
    "cs": ("a", "na", "procento", "křížek", "dolar", "libra", "stupně"),
    "ru": ("и", "собака", "процентов", "номер", "доллар", "фунт", "градус"),
    "nl": ("en", "bij", "procent", "hekje", "dollar", "pond", "graden"),
    "tr": ("ve", "at", "yüzde", "diyez", "dolar", "sterlin", "derece"),
    "hu": ("és", "kukac", "százalék", "kettőskereszt", "dollár", "font", "fok"),
    "ko": ("그리고", "에", "퍼센트", "번호", "달러", "파운드", "도"),
}

_ORDINAL_RES = {
    lang: re.compile(p)
    for lang, p in {
        "en": r"([0-9]+)(st|nd|rd|th)",
        "es": r"([0-9]+)(º|ª|er|o|a|os|as)",
        "fr": r"([0-9]+)(º|ª|er|re|e|ème)",
        "de": r"([0-9]+)(st|nd|rd|th|º|ª|\.(?=\s|$))",
        "pt": r"([0-9]+)(º|ª|o|a|os|as)",
        "it": r"([0-9]+)(º|°|ª|o|a|i|e)",
        "pl": r"([0-9]+)(º|ª|st|nd|rd|th)",
        "ar": r"([0-9]+)(ون|ين|ث|ر|ى)",
        "cs": r"([0-9]+)\.(?=\s|$)",
        "ru": r"([0-9]+)(-й|-я|-е|-ое|-ье|-го)",
        "nl": r"([0-9]+)(de|ste|e)",
        "tr": r"([0-9]+)(\.|inci|nci|uncu|üncü|\.)",
        "hu": r"([0-9]+)(\.|adik|edik|odik|edik|ödik|ödike|ik)",
        "ko": r"([0-9]+)(번째|번|차|째)",
    }.items()
}
_CURRENCY_RES = (  # applied in this order
    ("GBP", re.compile(r"((£[0-9\.\,]*[0-9]+)|([0-9\.\,]*[0-9]+£))")),
    ("USD", re.compile(r"((\$[0-9\.\,]*[0-9]+)|([0-9\.\,]*[0-9]+\$))")),
    ("EUR", re.compile(r"(([0-9\.\,]*[0-9]+€)|((€[0-9\.\,]*[0-9]+)))")),
)
# The joiner num2words puts between units and cents; whole amounts are cut at its last occurrence.
_CURRENCY_AND = {"es": " con ", "fr": " et ", "de": " und ", "pt": " e ", "it": " e "}  # others: ", "

_NUMBER_RE = re.compile(r"[0-9]+")
_COMMA_NUMBER_RE = re.compile(r"\b\d{1,3}(,\d{3})*(\.\d+)?\b")  # en, ru: 1,000.5
# others: 1.000,5 (the unescaped "." matching any character is official)
_DOT_NUMBER_RE = re.compile(r"\b\d{1,3}(.\d{3})*(\,\d+)?\b")
_DECIMAL_RE = re.compile(r"([0-9]+[.,][0-9]+)")
_WHITESPACE_RE = re.compile(r"\s+")


def _n2w_lang(lang: str) -> str:
    return "cz" if lang == "cs" else lang  # num2words' code for Czech


def _currency_words(match: re.Match, lang: str, currency: str) -> str:
    amount = float(re.sub(r"[^\d.]", "", match.group(0).replace(",", ".")))
    words = num2words(amount, to="currency", currency=currency, lang=_n2w_lang(lang))
    if amount.is_integer():
        cut = words.rfind(_CURRENCY_AND.get(lang, ", "))
        if cut != -1:
            words = words[:cut]
    return words


def expand_numbers(text: str, lang: str) -> str:
    """Numbers, currency, decimals and ordinals spelled out; raises where the official code raises."""
    if lang == "zh":
        return zh_normalize(text)
    text = re.sub(
        _COMMA_NUMBER_RE if lang in ("en", "ru") else _DOT_NUMBER_RE,
        lambda m: m.group(0).replace("," if lang in ("en", "ru") else ".", ""),
        text,
    )
    try:  # num2words has no currency for some languages: the official code then keeps what it has so far
        for currency, pattern in _CURRENCY_RES:
            text = pattern.sub(lambda m, c=currency: _currency_words(m, lang, c), text)
    except Exception:
        pass
    n2w = _n2w_lang(lang)
    if lang != "tr":
        text = _DECIMAL_RE.sub(lambda m: num2words(float(m.group(1).replace(",", ".")), lang=n2w), text)
    text = _ORDINAL_RES[lang].sub(lambda m: num2words(int(m.group(1)), ordinal=True, lang=n2w), text)
    return _NUMBER_RE.sub(lambda m: num2words(int(m.group(0)), lang=n2w), text)


def expand_abbreviations(text: str, lang: str) -> str:
    for pattern, replacement in _ABBREVIATION_RES[lang]:
        text = pattern.sub(replacement, text)
    return text


def expand_symbols(text: str, lang: str) -> str:
    for char, word in zip(_SYMBOL_CHARS, _SYMBOL_WORDS[lang]):
        text = text.replace(char, f" {word} ").replace("  ", " ")
    return text.strip()


def multilingual_clean(text: str, lang: str) -> str:
    """The official ``multilingual_cleaners``: each step that fails leaves the text unchanged."""
    text = text.replace('"', "")
    if lang == "tr":
        text = text.replace("İ", "i").replace("Ö", "ö").replace("Ü", "ü")
    text = text.lower()
    for step in (expand_numbers, expand_abbreviations, expand_symbols):
        try:
            text = step(text, lang)
        except Exception:
            pass
    return _WHITESPACE_RE.sub(" ", text)


# The versions of the dictionary-carrying packages whose output the lyric corpus test proved equal to the official
# token ids (requirements.txt asks for these ranges; a pack beside ours may have installed others).
PROVED_VERSIONS = {
    "py3langid": ((0, 2, 2), (0, 4)),
    "pypinyin": ((0, 49), (0, 54)),
    "num2words": ((0, 5, 14), (0, 5, 15)),
    "langsegment-backup": ((0, 3, 5), (0, 3, 6)),
    "fugashi": ((1, 5, 2), (1, 5, 3)),
    "unidic-lite": ((1, 0, 8), (1, 0, 9)),
    "cutlet": ((0, 5, 2), (0, 5, 3)),
}


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def dictionary_warnings() -> list[str]:
    """One line per installed dictionary package outside the versions proved to give the official ids."""
    from importlib import metadata

    out = []
    for name, (low, high) in PROVED_VERSIONS.items():
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if not low <= _release(version) < high:
            out.append(
                f"{name} {version} is installed; lyric token ids were proved equal to the official ones with "
                f"{'.'.join(map(str, low))} <= {name} < {'.'.join(map(str, high))}, so some lines may tokenize "
                "differently (see requirements.txt)"
            )
    return out


class MissingDependency(RuntimeError):
    """A package a lyric line needs is not installed: an install problem, so never a line left out quietly."""


def clean(text: str, lang: str) -> str:
    """The text the official ``VoiceBpeTokenizer.preprocess_text`` hands to the BPE for ``lang``."""
    if lang in CLEANED_LANGS:
        text = multilingual_clean(text, lang)
        if lang == "zh":
            text = to_pinyin(text)
        elif lang == "ko":
            text = _korean_transliter().translit(text)
        return text
    if lang == "ja":
        try:
            romaji = _cutlet()
        except ImportError as e:
            raise MissingDependency(
                f"the Japanese lyric line {text!r} needs the cutlet package for its romaji: {e}"
            ) from e
        return romaji.romaji(text).lower()
    if lang == "hi":
        return _WHITESPACE_RE.sub(" ", text.lower())
    raise NotImplementedError(f"Language '{lang}' is not supported.")


def to_pinyin(text: str) -> str:
    """Chinese characters to pinyin with tone numbers (5 = neutral), syllables glued together."""
    import pypinyin

    syllables = pypinyin.pinyin(
        text, style=pypinyin.Style.TONE3, heteronym=False, neutral_tone_with_five=True
    )
    return "".join(s[0] for s in syllables)


@cache
def _korean_transliter():
    from hangul_romanize import Transliter
    from hangul_romanize.rule import academic

    return Transliter(academic)


# cutlet's one use of mojimoji (``normalize_text``) runs on NFKC-normalised text, where zen_to_han(kana=False) then
# han_to_zen(digit=False, ascii=False) change exactly three characters (checked over every code point and every pair
# of kana and width marks: tests/acestep_models/v1/test_lyric_tokenizer.py). mojimoji has no Python 3.13 wheel, so
# where it is missing this stands in for it, giving cutlet's romaji unchanged.
_MOJIMOJI_AFTER_NFKC = str.maketrans({"\u2018": "`", "\u2019": "'", "\u201d": '"'})


def _width_shim():
    import types

    shim = types.ModuleType("mojimoji")
    shim.__doc__ = "Stand-in for mojimoji in cutlet's normalize_text (exact on NFKC-normalised text only)."
    shim.zen_to_han = lambda text, kana=True, digit=True, ascii=True: text.translate(_MOJIMOJI_AFTER_NFKC)
    shim.han_to_zen = lambda text, kana=True, digit=True, ascii=True: text
    return shim


CUTLET_HINT = (
    "install it with `pip install --no-deps cutlet==0.5.2` (its mojimoji dependency has no wheel for Python 3.13 "
    "or Linux aarch64, so the requirements leave cutlet out there; this pack stands in for mojimoji exactly)"
)


@cache
def _cutlet():
    import importlib.util
    import sys

    if importlib.util.find_spec("mojimoji") is None:
        sys.modules.setdefault("mojimoji", _width_shim())
    try:
        import cutlet  # loads the MeCab dictionary: only when a Japanese line shows up
    except ImportError as e:
        raise ImportError(f"{e}; {CUTLET_HINT}") from e
    return cutlet.Cutlet()


# ---------------------------------------------------------------------------------------------------------
# Chinese numbers (the XTTS zh_num2words ``TextNorm()`` with default options: normalize_nsw, then every
# punctuation mark becomes ",")
# ---------------------------------------------------------------------------------------------------------
_ZH_DIGITS = "零一二三四五六七八九"
_ZH_LIANG = "两"  # "2" before a unit other than 十
_ZH_POINT = "点"
# (power of ten, character): 十百千万, then the "mid" numbering system's 亿兆京垓秭穰沟涧正载 (10^8, 10^12, ...)
_ZH_UNITS = [(p + 1, c) for p, c in enumerate("十百千万")] + [
    ((i + 2) * 4, c) for i, c in enumerate("亿兆京垓秭穰沟涧正载")
]
_ZH_UNIT_CHARS = dict(_ZH_UNITS)

_ZH_CURRENCY_UNITS = (
    "((亿|千万|百万|万|千|百)|(亿|千万|百万|万|千|百|)元|(亿|千万|百万|万|千|百|)块|角|毛|分)"
)
_ZH_QUANTIFIERS = (
    "(匹|张|座|回|场|尾|条|个|首|阙|阵|网|炮|顶|丘|棵|只|支|袭|辆|挑|担|颗|壳|窠|曲|墙|群|腔|"
    "砣|座|客|贯|扎|捆|刀|令|打|手|罗|坡|山|岭|江|溪|钟|队|单|双|对|出|口|头|脚|板|跳|枝|件|贴|"
    "针|线|管|名|位|身|堂|课|本|页|家|户|层|丝|毫|厘|分|钱|两|斤|担|铢|石|钧|锱|忽|(千|毫|微)克|"
    "毫|厘|分|寸|尺|丈|里|寻|常|铺|程|(千|分|厘|毫|微)米|撮|勺|合|升|斗|石|盘|碗|碟|叠|桶|笼|盆|"
    "盒|杯|钟|斛|锅|簋|篮|盘|桶|罐|瓶|壶|卮|盏|箩|箱|煲|啖|袋|钵|年|月|日|季|刻|时|周|天|秒|分|旬|"
    "纪|岁|世|更|夜|春|夏|秋|冬|代|伏|辈|丸|泡|粒|颗|幢|堆|条|根|支|道|面|片|张|颗|块)"
)
_ZH_PUNCTUATION = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃《》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿"
    "–—‘’‛“”„‟…‧﹏·〈〉-" + string.punctuation
)
_ZH_PUNCTUATION_TO_COMMA = str.maketrans(_ZH_PUNCTUATION, "," * len(_ZH_PUNCTUATION))

_ZH_DATE_RE = re.compile(r"\D+((([089]\d|(19|20)\d{2})年)?(\d{1,2}月(\d{1,2}[日号])?)?)")
_ZH_MONEY_RE = re.compile(
    r"\D+((\d+(\.\d+)?)[多余几]?" + _ZH_CURRENCY_UNITS + r"(\d" + _ZH_CURRENCY_UNITS + r"?)?)"
)
_ZH_MOBILE_RE = re.compile(r"\D((\+?86 ?)?1([38]\d|5[0-35-9]|7[678]|9[89])\d{8})\D")
_ZH_LANDLINE_RE = re.compile(r"\D((0(10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})\D")
_ZH_FRACTION_RE = re.compile(r"(\d+/\d+)")
_ZH_PERCENT_RE = re.compile(r"(\d+(\.\d+)?%)")
_ZH_QUANTITY_RE = re.compile(r"(\d+(\.\d+)?)[多余几]?" + _ZH_QUANTIFIERS)
_ZH_DIGIT_STRING_RE = re.compile(r"(\d{4,32})")
_ZH_NUMBER_RE = re.compile(r"(\d+(\.\d+)?)")
_ZH_LATIN_TWO_RE = re.compile(r"(([a-zA-Z]+)二([a-zA-Z]+))")  # P2P, B2B: the "2" is put back


def zh_digits(number: str) -> str:
    """Digit by digit (phone numbers, years, long digit strings): 2024 -> 二零二四."""
    return "".join(_ZH_DIGITS[int(c)] for c in number)


def zh_cardinal(number: str) -> str:
    """A decimal number read as a Chinese amount: 12 -> 十二, 2000 -> 两千, 3.05 -> 三点零五."""
    int_part, *rest = number.split(".")
    if len(rest) > 1:
        raise ValueError(f"invalid input num string with more than one dot: {number}")
    # symbols: ("d", digit) | ("u", power) | ("p", None) for the decimal point
    symbols = _zh_amount(int_part) if len(int_part) > 1 else [("d", int(c)) for c in int_part]
    if rest and rest[0]:
        symbols += [("p", None)] + [("d", int(c)) for c in rest[0]]
    out = []
    for i, (kind, value) in enumerate(symbols):
        if kind == "d":
            nxt = symbols[i + 1] if i + 1 < len(symbols) else None
            prev = symbols[i - 1] if i > 0 else None
            liang = (
                value == 2
                and nxt is not None
                and nxt[0] == "u"
                and nxt[1] != 1
                and (prev is None or (prev[0] == "u" and prev[1] != 1))
            )
            out.append(_ZH_LIANG if liang else _ZH_DIGITS[value])
        elif kind == "u":
            out.append(_ZH_UNIT_CHARS[value])
        else:
            out.append(_ZH_POINT)
    text = "".join(out)
    if text.startswith(_ZH_POINT):
        return _ZH_DIGITS[0] + text
    if len(text) >= 2 and text[1] == "十" and text[0] == "一":  # 一十二 -> 十二
        text = text[1:]
    return text


def _zh_amount(digits: str) -> list:
    """Digits to digit/unit symbols, recursing on the largest unit below the length (leading zeros read 零)."""
    significant = digits.lstrip("0")
    if not significant:
        return []
    if len(significant) == 1:
        zero = [("d", 0)] if len(digits) != len(significant) else []
        return zero + [("d", int(significant))]
    power = next(p for p, _ in reversed(_ZH_UNITS) if p < len(significant))
    return _zh_amount(digits[:-power]) + [("u", power)] + _zh_amount(significant[-power:])


def _zh_date(date: str) -> str:
    try:
        year, other = date.strip().split("年", 1)
        year = zh_digits(year) + "年"
    except ValueError:
        other, year = date, ""
    month = day = ""
    if other:
        try:
            month, day = other.strip().split("月", 1)
            month = zh_cardinal(month) + "月"
        except ValueError:
            day, month = date, ""
        if day:
            day = zh_cardinal(day[:-1]) + day[-1]
    return year + month + day


def _zh_money(money: str) -> str:
    for number, _ in _ZH_NUMBER_RE.findall(money):
        money = money.replace(number, zh_cardinal(number))  # every occurrence, as the official code does
    return money


def _zh_phone(number: str, landline: bool) -> str:
    parts = number.split("-") if landline else number.strip("+").split()
    return "".join(zh_digits(p) for p in parts)


def zh_normalize(text: str) -> str:
    """Dates, money, phone numbers, fractions, percentages and numbers in Chinese words; punctuation -> ","."""
    text = "^" + text + "$"

    def each(pattern: re.Pattern, convert, group: int | None = 0) -> None:
        # Matches are found once on the text before this pass, then each replaces its first occurrence.
        nonlocal text
        for m in pattern.findall(text):
            found = m if group is None else m[group]
            text = text.replace(found, convert(found), 1)

    each(_ZH_DATE_RE, _zh_date)
    each(_ZH_MONEY_RE, _zh_money)
    each(_ZH_MOBILE_RE, lambda s: _zh_phone(s, landline=False))
    each(_ZH_LANDLINE_RE, lambda s: _zh_phone(s, landline=True))
    each(
        _ZH_FRACTION_RE, lambda s: zh_cardinal(s.split("/")[1]) + "分之" + zh_cardinal(s.split("/")[0]), None
    )
    text = text.replace("％", "%")
    each(_ZH_PERCENT_RE, lambda s: "百分之" + zh_cardinal(s.strip().strip("%")))
    each(_ZH_QUANTITY_RE, zh_cardinal)
    each(_ZH_DIGIT_STRING_RE, zh_digits, None)
    each(_ZH_NUMBER_RE, zh_cardinal)
    for whole, left, right in _ZH_LATIN_TWO_RE.findall(text):
        text = text.replace(whole, left + "2" + right, 1)
    return text.lstrip("^").rstrip("$").translate(_ZH_PUNCTUATION_TO_COMMA)
