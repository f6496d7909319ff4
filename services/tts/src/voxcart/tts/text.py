"""Text normalization for speech: what a reply says, written the way a speech engine should read it.

:func:`normalize_text` is a pure function of its input; its passes run in a fixed order:

1. markup and pictographs go: markdown emphasis, code, links, headings, bullets, HTML tags and emoji
   (line breaks become sentence pauses);
2. dates that slipped through as digits (``2024-05-03``, ``05/03/2024``, ``5/3``, ``Jan. 5``) become
   ``May 3rd, 2024``;
3. identifiers are spelled one character at a time in groups of three or four separated by commas (the pause):
   order and tracking numbers, phone numbers, ``#12345``, any run of five or more digits, and three or more
   digits after a cue word such as "order" or "ending in";
4. prices become words around the number: ``$59.00`` -> ``59 dollars``, ``$5.25`` -> ``5 dollars and 25 cents``;
5. abbreviations are expanded (``Mr.``, ``St.``, ``Dr.``, ``e.g.``, ``oz``...), ``&`` becomes "and";
6. whitespace is collapsed.

Plain numbers (``3``, ``1,299``, ``10.5``) are left to the engine, which reads them well. Identifier spelling
runs before prices, so digits after a currency sign are never spelled out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping

__all__ = ["ESPEAK_LETTER_NAMES", "normalize_text", "spell_out"]

ESPEAK_LETTER_NAMES: Mapping[str, str] = {"A": "eh"}
"""Letter spellings for espeak-ng English, which reads a lone "A" among letters and digits as the article."""

_MONTHS = "January February March April May June July August September October November December".split()
_MONTH_ABBR = {m[:3].lower(): i + 1 for i, m in enumerate(_MONTHS)}

# --- 1. markup and pictographs -------------------------------------------------------------------------

_MARKUP: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"```[^\n]*\n?|```"), ""),  # code fences (the code inside is kept as text)
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),  # [text](url), ![alt](url)
    (re.compile(r"<[a-zA-Z/][^<>]*>"), " "),  # HTML tags
    (re.compile(r"https?://(?:www\.)?([^/\s]+)\S*"), r"\1"),  # a URL is read as its host
    (re.compile(r"`([^`]*)`"), r"\1"),
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<!\w)_(?=\S)([^_\n]+?)(?<=\S)_(?!\w)"), r"\1"),
    (re.compile(r"~~(.+?)~~"), r"\1"),
    (re.compile(r"^[ \t]*(?:#{1,6}|>+|[-*+•]|\d{1,2}[.)])[ \t]+", re.MULTILINE), ""),  # headings, quotes, bullets
    (re.compile(r"^[ \t]*(?:[-*_][ \t]*){3,}$", re.MULTILINE), ""),  # horizontal rules
    (re.compile(r"[ \t]*\|[ \t]*"), ", "),  # table cells
]
_LEFTOVER_MARKS = re.compile(r"[*`~^]+|(?<=\w)_+(?=\w)|(?<!\w)#+(?!\w)")
_LINE_END = re.compile(r"([^\s.!?:;,])[ \t]*\n+")
_EMOJI_EXTRA = frozenset("\u200d\ufe0e\ufe0f\u20e3")  # zero-width joiner, variation selectors, keycap


def _strip_markup(text: str) -> str:
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    text = _LINE_END.sub(r"\1. ", text)  # a line break (a list item, a heading) is a sentence pause
    text = _LEFTOVER_MARKS.sub(" ", text)
    return "".join(" " if _is_pictograph(c) else c for c in text)


def _is_pictograph(char: str) -> bool:
    if char in _EMOJI_EXTRA or 0x1F3FB <= ord(char) <= 0x1F3FF:  # skin-tone modifiers are "Sk"
        return True
    category = unicodedata.category(char)
    return category in ("So", "Cn", "Co") and char not in "©®°"  # Cn: emoji newer than this unicodedata


# --- 2. dates -------------------------------------------------------------------------------------------


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _say_date(month: int, day: int, year: str | None = None) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    said = f"{_MONTHS[month - 1]} {_ordinal(day)}"
    if year is not None:
        said += f", {'20' + year if len(year) == 2 else year}"
    return said


_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_US_DATE = re.compile(r"(?<![\d/])(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})(?![\d/])")
# Without a year, "5/3" is a date only after a word that introduces one ("1/2 price" is not).
_US_DATE_CUED = re.compile(
    r"\b((?:on|by|before|after|until|till|from|since|through|arrives|arrived|delivered|shipped|due)\s+)"
    r"(\d{1,2})/(\d{1,2})(?![\d/])",
    re.IGNORECASE,
)
_MONTH_NAME = "|".join([*_MONTHS, *(m[:3] for m in _MONTHS), "Sept"])
_NAMED_DATE = re.compile(
    rf"\b({_MONTH_NAME})\b\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?!\s*(?:[:.]\d|%))(?:,?\s+(\d{{4}})\b)?",
    re.IGNORECASE,
)


def _dates(text: str) -> str:
    def iso(m: re.Match[str]) -> str:
        return _say_date(int(m[2]), int(m[3]), m[1]) or m[0]

    def us(m: re.Match[str]) -> str:
        return _say_date(int(m[1]), int(m[2]), m[3]) or m[0]

    def us_cued(m: re.Match[str]) -> str:
        said = _say_date(int(m[2]), int(m[3]))
        return m[1] + said if said else m[0]

    def named(m: re.Match[str]) -> str:
        if m[1] == "may" or m[1].islower() and len(m[1]) <= 4:  # "you may 3", "mar", "jan": not dates
            return m[0]
        return _say_date(_MONTH_ABBR[m[1][:3].lower()], int(m[2]), m[3]) or m[0]

    text = _ISO_DATE.sub(iso, text)
    text = _US_DATE.sub(us, text)
    text = _US_DATE_CUED.sub(us_cued, text)
    return _NAMED_DATE.sub(named, text)


# --- 3. identifiers ------------------------------------------------------------------------------------


def _groups(chars: str) -> list[str]:
    """Split into groups of three, never leaving a single character alone at the end (7 -> 3+4)."""
    if len(chars) <= 4:
        return [chars]
    groups = [chars[i : i + 3] for i in range(0, len(chars), 3)]
    if len(groups[-1]) == 1:
        groups[-2:] = [groups[-2] + groups[-1]]
    return groups


def spell_out(identifier: str, letter_names: Mapping[str, str] | None = None) -> str:
    """Spell an identifier character by character, in comma-separated groups (the commas are pauses).

    Separators inside the identifier (``-``, ``.``, spaces, parentheses) become group boundaries; other
    characters that are neither letters nor digits are dropped.

    Args:
        identifier: e.g. ``"48213"``, ``"1Z999AA1"``, ``"555-123-4567"``.
        letter_names: how to write particular (upper-case) letters for the engine, e.g. :data:`ESPEAK_LETTER_NAMES`.

    Returns:
        e.g. ``"4 8 2, 1 3"``, ``"5 5 5, 1 2 3, 4 5 6 7"``.
    """
    names = letter_names or {}
    parts = [p for p in re.split(r"[\s\-.()/]+", identifier.upper()) if p]
    groups = [g for part in parts for g in _groups("".join(c for c in part if c.isalnum()))]
    return ", ".join(" ".join(names.get(c, c) for c in g) for g in groups if g)


_CUE = (
    r"(?:order|confirmation|tracking|reference|ref|account|invoice|receipt|zip|postcode|pin|code|"
    r"ending in|ends in|last (?:four|4)(?: digits)?)"
)
_CONNECTOR = r"(?:\s+(?:number|no\.?|num|id|is|was))*"
_IDENTIFIERS = re.compile(
    r"(?P<phone>(?<![\w$€£])(?:\+1[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\w))"
    r"|(?P<hash>#)\s?(?P<hashed>(?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]*)"
    rf"|(?P<cued>\b(?P<cue>{_CUE}){_CONNECTOR}:?\s*)(?P<cuedid>\d{{3,}})(?![\w,.]\d|\w)"
    r"|(?<![\w$€£,.])(?P<alnum>(?=[A-Z0-9-]*\d[A-Z0-9-]*\d[A-Z0-9-]*\d[A-Z0-9-]*\d)"  # 4+ digits
    r"(?=[A-Z0-9-]*[A-Z])[A-Z0-9]+(?:-[A-Z0-9]+)*)(?![\w-])"  # and a letter
    r"|(?<![\w$€£,.])(?P<digits>\d{5,})(?!\w|[,.]\d)",
    re.IGNORECASE,
)


def _identifiers(text: str, letter_names: Mapping[str, str] | None) -> str:
    def sub(m: re.Match[str]) -> str:
        if m["phone"]:
            return spell_out(m["phone"].removeprefix("+1").strip(), letter_names)
        if m["hash"]:
            return "number " + spell_out(m["hashed"], letter_names)
        if m["cued"]:
            if m["cue"].lower() == "order" and m["cued"].strip().lower() == "order" and len(m["cuedid"]) < 4:
                return m[0]  # "order 100 shirts" is a quantity; "order number 100" is not
            return m["cued"] + spell_out(m["cuedid"], letter_names)
        if m["alnum"]:
            if not m["alnum"].replace("-", "").isupper():  # IGNORECASE let lower case through
                return m[0]
            return spell_out(m["alnum"], letter_names)
        return spell_out(m["digits"], letter_names)

    return _IDENTIFIERS.sub(sub, text)


# --- 4. prices -----------------------------------------------------------------------------------------

_CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
               "£": ("pound", "pounds", "penny", "pence")}  # fmt: skip
_PRICE = re.compile(r"(?P<sign>[$€£])\s?(?P<whole>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d{1,2}))?(?!\d)")


def _prices(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        one, many, sub_one, sub_many = _CURRENCIES[m["sign"]]
        whole = int(m["whole"].replace(",", ""))
        cents = int(m["frac"].ljust(2, "0")) if m["frac"] else 0
        words = [f"{whole} {one if whole == 1 else many}"] if whole or not cents else []
        if cents:
            words.append(f"{cents} {sub_one if cents == 1 else sub_many}")
        return " and ".join(words)

    return _PRICE.sub(sub, text)


# --- 5. abbreviations ----------------------------------------------------------------------------------

_ABBREVIATIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r) for p, r in (
        (r"\bMr\.", "Mister"), (r"\bMrs\.", "Missus"), (r"\bMs\.", "Miz"), (r"\bJr\.", "Junior"),
        (r"\bSr\.", "Senior"), (r"\b(?:Ave|Av)\.", "Avenue"), (r"\bRd\.", "Road"), (r"\bBlvd\.", "Boulevard"),
        (r"\bLn\.", "Lane"), (r"\bApt\.", "Apartment"), (r"\bSte\.", "Suite"), (r"\bNo\.(?=\s*\d)", "number"),
        (r"\be\.g\.", "for example"), (r"\bi\.e\.", "that is"), (r"\betc\.", "et cetera"),
        (r"\bvs\.", "versus"), (r"\bapprox\.", "approximately"), (r"\bqty\b\.?", "quantity"),
        (r"\b1\s?oz\b\.?", "1 ounce"), (r"(?<=\d)\s?oz\b\.?", " ounces"),
        (r"\b1\s?lbs?\b\.?", "1 pound"), (r"(?<=\d)\s?lbs?\b\.?", " pounds"),
        (r"(?<=\d)\s?pcs\b\.?", " pieces"), (r"\bw/(?=\s)", "with"), (r"\s&\s", " and "),
    )
]  # fmt: skip
# "St."/"Dr." after a capitalized word or a number name a road ("Main St.", "5th St."), unless that word starts
# the sentence ("Visit St. Louis", "Ask Dr. Lee"); otherwise a saint or a doctor.
_PLACE_OR_PERSON = re.compile(r"(?P<before>\b(?:[A-Z][a-z]+|\d+(?:st|nd|rd|th)?)\s+)?\b(?P<abbr>St|Dr)\.")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s*)$")


def _abbreviations(text: str) -> str:
    def place_or_person(m: re.Match[str]) -> str:
        before = m["before"] or ""
        follows_name = re.match(r"\s+[A-Z]", m.string[m.end() :]) is not None
        road = bool(before) and not (follows_name and _SENTENCE_START.search(m.string[: m.start()]))
        if road:
            word = "Street" if m["abbr"] == "St" else "Drive"
        else:
            word = "Saint" if m["abbr"] == "St" else "Doctor"
        return before + word + ("." if not m.string[m.end() :].strip() else "")

    def expand(repl: str) -> Callable[[re.Match[str]], str]:
        # the abbreviation's period also ended the text: keep one
        return lambda m: repl + ("." if m[0].endswith(".") and not m.string[m.end() :].strip() else "")

    text = _PLACE_OR_PERSON.sub(place_or_person, text)
    for pattern, repl in _ABBREVIATIONS:
        text = pattern.sub(expand(repl), text)
    return text


# --- the pipeline --------------------------------------------------------------------------------------

_SPACES = re.compile(r"[ \t\r\n]+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.!?;:])")
_REPEATED_PUNCT = re.compile(r"([,.!?;:])(?:\s*[,.])+")


def normalize_text(text: str, letter_names: Mapping[str, str] | None = None) -> str:
    """Rewrite ``text`` the way a speech engine should read it (see the module docstring for the passes).

    Args:
        text: a reply sentence or paragraph, possibly with markdown, emoji, prices, dates and identifiers.
        letter_names: engine-specific spellings of letters inside spelled identifiers, e.g.
            :data:`ESPEAK_LETTER_NAMES`.

    Returns:
        The normalized text on one line; empty when nothing speakable is left.

    Raises:
        TypeError: ``text`` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_text: expected str, got {type(text).__name__}")
    text = unicodedata.normalize("NFC", text)
    text = _strip_markup(text)
    text = _dates(text)
    text = _identifiers(text, letter_names)
    text = _prices(text)
    text = _abbreviations(text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _REPEATED_PUNCT.sub(r"\1", text)
    return text.strip(" ,;:")
