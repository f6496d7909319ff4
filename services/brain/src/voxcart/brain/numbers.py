"""Numbers as callers say them, and as the agent says them.

Callers give order numbers and ZIP codes digit by digit ("one zero zero two three", "oh" is 0, "double
zero" is 00), as numbers ("ten thousand twenty three"), in groups ("ten oh twenty three"), or as digits in
typed text. :func:`digit_runs` turns every such stretch of a sentence into a string of digits.

Rules (deterministic, no guessing of lengths):

- Each digit word, "oh"/"o", and each digit string in the text is its own chunk; chunks next to each other
  are concatenated ("one zero zero" -> "100", "10023" -> "10023").
- A cardinal phrase is one chunk: tens take a following unit ("twenty three" -> 23), "hundred" and
  "thousand" multiply ("ten thousand twenty three" -> 10023, "one hundred and five" -> 105). A unit after a
  unit starts a new chunk, so "one two" is "12", never 3.
- "double"/"triple" repeat the next digit. Any other word ends the run.
"""

from __future__ import annotations

from typing import Final

from voxcart.brain.text import normalize

__all__ = ["digit_runs", "longest_digit_run", "number_words", "spoken_digits"]

_UNITS: Final[dict[str, int]] = {
    "zero": 0, "oh": 0, "o": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
_TEENS: Final[dict[str, int]] = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS: Final[dict[str, int]] = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_REPEAT: Final[dict[str, int]] = {"double": 2, "triple": 3}
_SCALES: Final[dict[str, int]] = {"hundred": 100, "thousand": 1000}
_HOMOPHONES: Final[dict[str, str]] = {"to": "two", "too": "two", "for": "four", "won": "one", "ate": "eight"}
NUMBER_WORDS: Final = frozenset([*_UNITS, *_TEENS, *_TENS, *_REPEAT, *_SCALES, "and"])


class _Cardinal:
    """A cardinal phrase being read ("ten thousand twenty three")."""

    def __init__(self) -> None:
        self.total = 0
        self.current = 0
        self.last = ""  # "unit", "teen", "tens", "hundred", "thousand"
        self.active = False

    def value(self) -> str:
        return str(self.total + self.current)

    def accepts(self, kind: str) -> bool:
        """Whether a word of ``kind`` continues this phrase (else it starts a new chunk)."""
        if not self.active:
            return True
        if kind == "unit":
            return self.last in ("tens", "hundred", "thousand") and (self.current % 10 == 0)
        if kind in ("teen", "tens"):
            return self.last in ("hundred", "thousand") and self.current % 100 == 0
        if kind == "hundred":
            return self.last in ("unit", "teen", "tens") and 0 < self.current < 100
        return self.last != "thousand" and self.total == 0 and 0 < self.current < 1000  # thousand

    def add(self, kind: str, value: int) -> None:
        if kind == "hundred":
            self.current *= 100
        elif kind == "thousand":
            self.total = self.current * 1000
            self.current = 0
        else:
            self.current += value
        self.last = kind
        self.active = True


def digit_runs(text: str, *, homophones: bool = False) -> list[str]:
    """Every run of spoken or written digits in ``text``, in order, as digit strings.

    Args:
        text: recognized or typed text.
        homophones: also read "to"/"too" as 2, "for" as 4, "won" as 1 and "ate" as 8 (recognizers confuse
            them); use it only where digits are expected.

    Returns:
        One string per run, e.g. ``"my order is one oh oh two three"`` -> ``["10023"]``.
    """
    words = normalize(text).split()
    if homophones:
        words = [_HOMOPHONES.get(w, w) for w in words]
    runs: list[str] = []
    chunks: list[str] = []
    card: _Cardinal | None = None
    repeat = 1

    def close_card() -> None:
        nonlocal card
        if card is not None and card.active:
            chunks.append(card.value())
        card = None

    def close_run() -> None:
        close_card()
        if chunks:
            runs.append("".join(chunks))
            chunks.clear()

    for i, word in enumerate(words):
        if word.isdigit():
            close_card()
            chunks.append(word * repeat)
            repeat = 1
        elif word in _REPEAT:
            close_card()
            repeat = _REPEAT[word]
        elif word in _UNITS and (word != "o" or chunks or card is not None or _next_is_number(words, i)):
            unit = _UNITS[word]
            if repeat > 1 or word in ("oh", "o") or card is None or not card.accepts("unit"):
                close_card()
                if repeat > 1 or word in ("oh", "o"):
                    chunks.append(str(unit) * repeat)
                    repeat = 1
                    continue
                card = _Cardinal()
            card.add("unit", unit)
        elif word in _TEENS or word in _TENS:
            kind, value = ("teen", _TEENS[word]) if word in _TEENS else ("tens", _TENS[word])
            if card is None or not card.accepts(kind):
                close_card()
                card = _Cardinal()
            card.add(kind, value)
        elif word in _SCALES:
            kind = "hundred" if word == "hundred" else "thousand"
            if card is None:
                card = _Cardinal()
                card.add("unit", 1)  # "a hundred", "thousand" alone
            if card.accepts(kind):
                card.add(kind, 0)
        elif word == "and" and card is not None and card.last in ("hundred", "thousand"):
            continue
        else:
            close_run()
            repeat = 1
    close_run()
    return runs


def _next_is_number(words: list[str], i: int) -> bool:
    return i + 1 < len(words) and (words[i + 1] in NUMBER_WORDS or words[i + 1].isdigit())


def longest_digit_run(text: str, *, min_len: int = 1, homophones: bool = False) -> str | None:
    """The longest digit run in ``text`` (the last one on ties), if it has at least ``min_len`` digits."""
    best: str | None = None
    for run in digit_runs(text, homophones=homophones):
        if len(run) >= min_len and (best is None or len(run) >= len(best)):
            best = run
    return best


def spoken_digits(value: str) -> str:
    """Digits and letters one by one, for reading back ("10023" -> "1 0 0 2 3")."""
    return " ".join(ch.upper() for ch in value if ch.isalnum())


_ONES_WORDS: Final = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]  # fmt: skip
_TENS_WORDS: Final = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """English words for ``0 <= n < 1_000_000`` ("ten thousand twenty three")."""
    if n < 0 or n >= 1_000_000:
        raise ValueError(f"number_words supports 0..999999, got {n}")
    if n < 20:
        return _ONES_WORDS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS_WORDS[tens] + (f" {_ONES_WORDS[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES_WORDS[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    return f"{number_words(thousands)} thousand" + (f" {number_words(rest)}" if rest else "")
