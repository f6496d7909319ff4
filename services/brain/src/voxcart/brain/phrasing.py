"""How things are said: dates, money, sizes, lists, codes, in words a TTS voice reads naturally.

Invariants: every function returns plain text without markdown, symbols or abbreviations a voice would
mangle ("$", "e.g.", "#"); numbers that a voice reads well as digits ("59 dollars", "4 left") stay digits;
codes (order numbers, tracking numbers) are spelled out one character at a time, grouped with commas so
that the voice pauses.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Final

from voxcart.brain.numbers import number_words, spoken_digits

__all__ = [
    "country_name",
    "join_and",
    "join_or",
    "ordinal",
    "say_date",
    "say_day",
    "say_order_number",
    "say_phone",
    "say_price",
    "say_size",
    "say_tracking",
    "size_phrases",
    "split_sentences",
]

_SIZE_WORDS: Final[dict[str, str]] = {
    "xxs": "double extra small",
    "xs": "extra small",
    "s": "small",
    "m": "medium",
    "l": "large",
    "xl": "extra large",
    "xxl": "double extra large",
    "2xl": "double extra large",
    "xxxl": "triple extra large",
    "3xl": "triple extra large",
    "os": "one size",
}
_SIZE_EXTRA: Final[dict[str, list[str]]] = {
    "xxs": ["x x s", "xx small"],
    "xs": ["x small", "x s"],
    "xl": ["x large", "x l"],
    "xxl": ["x x l", "two x l", "2xl", "extra extra large", "xx large"],
    "2xl": ["x x l", "two x l", "xxl", "extra extra large", "xx large"],
    "xxxl": ["x x x l", "three x l", "3xl"],
    "3xl": ["x x x l", "three x l", "xxxl"],
}
_COUNTRIES: Final[dict[str, str]] = {
    "US": "the United States",
    "CA": "Canada",
    "MX": "Mexico",
    "GB": "the United Kingdom",
    "UK": "the United Kingdom",
    "IE": "Ireland",
    "AU": "Australia",
    "NZ": "New Zealand",
    "DE": "Germany",
    "FR": "France",
    "ES": "Spain",
    "IT": "Italy",
    "NL": "the Netherlands",
    "JP": "Japan",
}
_NUMERIC_SIZE: Final = re.compile(r"^(\d{1,2})(?:\.(5))?$")


def ordinal(n: int) -> str:
    """``26`` -> ``"26th"``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def say_date(day: dt.date, *, today: dt.date | None = None, weekday: bool = True) -> str:
    """A date as spoken: "Thursday, November 26th"; "today"/"tomorrow"/"yesterday" near ``today``.

    The year is said only when it differs from ``today``'s.
    """
    if today is not None:
        delta = (day - today).days
        if delta in (-1, 0, 1):
            return {-1: "yesterday", 0: "today", 1: "tomorrow"}[delta]
    text = f"{day.strftime('%B')} {ordinal(day.day)}"
    if weekday:
        text = f"{day.strftime('%A')}, {text}"
    if today is not None and day.year != today.year:
        text = f"{text}, {day.year}"
    return text


def say_day(day: dt.date, *, today: dt.date | None = None) -> str:
    """Like :func:`say_date`, prefixed with "on" unless it is today/tomorrow/yesterday."""
    text = say_date(day, today=today)
    return text if text in ("today", "tomorrow", "yesterday") else f"on {text}"


def say_price(amount: float) -> str:
    """``59.0`` -> ``"59 dollars"``, ``12.5`` -> ``"12 dollars and 50 cents"``, ``1`` -> ``"1 dollar"``."""
    cents_total = round(amount * 100)
    dollars, cents = divmod(cents_total, 100)
    parts = []
    if dollars or not cents:
        parts.append(f"{dollars} dollar" + ("" if dollars == 1 else "s"))
    if cents:
        parts.append(f"{cents} cent" + ("" if cents == 1 else "s"))
    return " and ".join(parts)


def say_order_number(number: str) -> str:
    """Order numbers are read digit by digit: ``"10023"`` -> ``"1 0 0 2 3"``."""
    return spoken_digits(number)


def say_phone(number: str) -> str:
    """A phone number read back in the groups people say it in: ``"+15555550123"`` -> ``"1, 5 5 5, 5 5 5, 0 1 2 3"``
    (the last four digits, then threes from the right)."""
    digits = "".join(ch for ch in number if ch.isdigit())
    groups: list[str] = []
    end = len(digits)
    size = 4
    while end > 0:
        groups.insert(0, spoken_digits(digits[max(0, end - size) : end]))
        end -= size
        size = 3
    return ", ".join(groups)


def say_tracking(code: str, group: int = 3) -> str:
    """A tracking number read slowly: characters one by one, groups of ``group`` separated by commas."""
    chars = spoken_digits(code).split()
    groups = [" ".join(chars[i : i + group]) for i in range(0, len(chars), group)]
    return ", ".join(groups)


def say_size(size: str) -> str:
    """``"M"`` -> ``"medium"``, ``"10.5"`` -> ``"10 and a half"``; other sizes as written."""
    key = size.strip().lower()
    if key in _SIZE_WORDS:
        return _SIZE_WORDS[key]
    numeric = _NUMERIC_SIZE.match(key)
    if numeric:
        return numeric.group(1) + (" and a half" if numeric.group(2) else "")
    return size.strip()


def size_phrases(size: str) -> list[str]:
    """Every way a caller may say ``size`` (normalized words), longest first."""
    key = size.strip().lower()
    phrases = {say_size(size).lower(), key, f"size {key}"}
    if key in _SIZE_WORDS:
        phrases.update(_SIZE_EXTRA.get(key, []))
        phrases.add(f"size {_SIZE_WORDS[key]}")
        phrases.discard(key)  # a bare letter ("m", "l") is not evidence of a size
        if len(key) > 1:
            phrases.add(key)
    if any(t.isdigit() for t in key.split()) and not _NUMERIC_SIZE.match(key):
        phrases.add(" ".join(number_words(int(t)) if t.isdigit() and int(t) < 1000 else t for t in key.split()))
    numeric = _NUMERIC_SIZE.match(key)
    if numeric:
        whole = int(numeric.group(1))
        words = number_words(whole)
        if numeric.group(2):
            phrases.update({f"{words} and a half", f"{words} point five", f"{whole} and a half", key})
        else:
            phrases.update({words, str(whole)})
    return sorted(phrases, key=lambda p: (-len(p.split()), -len(p), p))


def join_and(items: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    return _join(items, "and")


def join_or(items: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b or c"``."""
    return _join(items, "or")


def _join(items: Sequence[str], word: str) -> str:
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


def country_name(code: str) -> str:
    """An ISO country code as spoken ("US" -> "the United States"); unknown codes letter by letter."""
    return _COUNTRIES.get(code.upper(), spoken_digits(code))


_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Split free text (an FAQ answer) into sentences, one per spoken chunk."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]
