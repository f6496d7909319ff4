"""Numbers as callers say them: finding digit runs in words, writing them as digits, and saying numbers.

Callers give order numbers and ZIP codes digit by digit ("one zero zero two three", "oh" is 0, "double
zero" is 00), as numbers ("ten thousand twenty three"), in groups ("ten oh twenty three"), or as digits in
typed text. :func:`number_spans` finds every such stretch of a sentence and the digit string it stands for;
the brain reads order numbers with it, and the recognizer writes them as digits (:func:`numbers_to_digits`).

Reading rules (deterministic, no guessing of lengths):

- Each digit word, "oh"/"o", and each digit string is its own chunk; chunks next to each other are
  concatenated ("one zero zero" -> "100", "10023" -> "10023"). A lone "o" counts only next to other numbers.
- A cardinal phrase is one chunk: tens take a following unit ("twenty three" -> 23), "hundred" and
  "thousand" multiply ("ten thousand twenty three" -> 10023, "one hundred and five" -> 105). A unit after a
  unit starts a new chunk, so "one two" is "12", never 3.
- "double"/"triple" repeat the next digit. Any other word ends the run.

Writing rules (:func:`numbers_to_digits`): a run of two or more number words becomes its digits ("one zero
zero two three", "ten oh two three", "ten thousand twenty three" -> "10023"; "size thirty two" -> "size 32");
a single number word stays a word ("the blue one", "one of them", "size ten", "two hoodies"), unless digits
are expected (the caller was asked for a number), when it becomes a digit too; a lone "oh" always stays a word
("oh okay"). Input words are lower case, as recognizers and :func:`voxcart.brain.text.normalize` give them.

Invariants: pure functions of their arguments; ``number_spans(words)`` never overlap and are in order;
``numbers_to_digits`` changes only the words inside a span, and reading its output gives the same digit runs
as reading its input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "HOMOPHONES",
    "NUMBER_WORDS",
    "NumberSpan",
    "number_spans",
    "number_words",
    "numbers_to_digits",
    "spoken_digits",
]

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
_SCALES: Final = frozenset({"hundred", "thousand"})
_ZEROS: Final = frozenset({"oh", "o"})

HOMOPHONES: Final[dict[str, str]] = {"to": "two", "too": "two", "for": "four", "won": "one", "ate": "eight"}
"""Words recognizers put where a digit was said."""

NUMBER_WORDS: Final = frozenset([*_UNITS, *_TEENS, *_TENS, *_REPEAT, *_SCALES, "and"])
"""Every word that can be part of a spoken number."""


@dataclass(frozen=True, slots=True)
class NumberSpan:
    """One spoken or written number in a list of words.

    Attributes:
        start: index of its first word.
        end: index after its last word.
        digits: the digit string it stands for.
        number_words: how many of its words are numbers (digit words, tens, scales, digit strings, "double");
            "and" and a leading "a" ("a hundred") are not counted.
    """

    start: int
    end: int
    digits: str
    number_words: int


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


class _Reader:
    """Reads number spans out of a word list, one word at a time (the rules in the module docstring)."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words = words
        self.spans: list[NumberSpan] = []
        self.chunks: list[str] = []
        self.card: _Cardinal | None = None
        self.repeat = 1
        self.repeat_at = -1
        self.start = -1
        self.end = 0
        self.count = 0

    def mark(self, i: int) -> None:
        """Word ``i`` belongs to the current run (a pending "double" before it too)."""
        first = self.repeat_at if self.repeat_at >= 0 else i
        if self.start < 0:
            self.start = first
        self.end = i + 1
        self.count += 1 + (self.repeat_at >= 0)
        self.repeat_at = -1

    def close_card(self) -> None:
        if self.card is not None and self.card.active:
            self.chunks.append(self.card.value())
        self.card = None

    def close_run(self) -> None:
        self.close_card()
        if self.chunks:
            self.spans.append(NumberSpan(self.start, self.end, "".join(self.chunks), self.count))
        self.chunks.clear()
        self.start, self.end, self.count = -1, 0, 0

    def read(self) -> list[NumberSpan]:
        words = self.words
        for i, word in enumerate(words):
            if word.isdigit():
                self.close_card()
                self.mark(i)
                self.chunks.append(word * self.repeat)
                self.repeat = 1
            elif word in _REPEAT:
                self.close_card()
                self.repeat, self.repeat_at = _REPEAT[word], i
            elif word in _UNITS and (word != "o" or self.chunks or self.card is not None or _next_is_number(words, i)):
                self._unit(i, word)
            elif word in _TEENS or word in _TENS:
                kind, value = ("teen", _TEENS[word]) if word in _TEENS else ("tens", _TENS[word])
                if self.card is None or not self.card.accepts(kind):
                    self.close_card()
                    self.card = _Cardinal()
                self.mark(i)
                self.card.add(kind, value)
            elif word in _SCALES:
                kind = "hundred" if word == "hundred" else "thousand"
                if self.card is None:
                    self.card = _Cardinal()
                    self.card.add("unit", 1)  # "a hundred", "thousand" alone
                    if self.start < 0 and i > 0 and words[i - 1] == "a":
                        self.start = i - 1
                self.mark(i)
                if self.card.accepts(kind):
                    self.card.add(kind, 0)
            elif word == "and" and self.card is not None and self.card.last in ("hundred", "thousand"):
                continue
            else:
                self.close_run()
                self.repeat, self.repeat_at = 1, -1
        self.close_run()
        return self.spans

    def _unit(self, i: int, word: str) -> None:
        unit = _UNITS[word]
        self.mark(i)
        if self.repeat > 1 or word in _ZEROS or self.card is None or not self.card.accepts("unit"):
            self.close_card()
            if self.repeat > 1 or word in _ZEROS:
                self.chunks.append(str(unit) * self.repeat)
                self.repeat = 1
                return
            self.card = _Cardinal()
        self.card.add("unit", unit)


def _next_is_number(words: Sequence[str], i: int) -> bool:
    return i + 1 < len(words) and (words[i + 1] in NUMBER_WORDS or words[i + 1].isdigit())


def number_spans(words: Sequence[str], *, homophones: bool = False) -> list[NumberSpan]:
    """Every run of spoken or written digits in ``words``, in order.

    Args:
        words: lower-case words ("my order is one oh oh two three".split()).
        homophones: also read "to"/"too" as 2, "for" as 4, "won" as 1 and "ate" as 8 (recognizers confuse
            them); use it only where digits are expected.

    Returns:
        One span per run, e.g. ``my order is one oh oh two three`` -> ``[NumberSpan(3, 8, "10023", 5)]``.
    """
    if homophones:
        words = [HOMOPHONES.get(w, w) for w in words]
    return _Reader(words).read()


def numbers_to_digits(words: Sequence[str], *, digits_expected: bool = False) -> list[str]:
    """``words`` with spoken numbers written as digit strings (the writing rules of the module docstring).

    Args:
        words: lower-case words, as a recognizer gives them.
        digits_expected: the caller was asked for a number: single number words become digits too, and
            homophones ("for", "to") next to a number word are read as digits.

    Returns:
        The rewritten words: ``"my order is ten oh two three"`` -> ``["my", "order", "is", "10023"]``.
    """
    words = list(words)
    if digits_expected:
        words = [_homophone_digit(words, i) for i in range(len(words))]
    out: list[str] = []
    at = 0
    for span in number_spans(words):
        out.extend(words[at : span.start])
        lone_oh = span.end - span.start == 1 and words[span.start] in _ZEROS
        if (span.number_words >= 2 or digits_expected) and not lone_oh:
            out.append(span.digits)
        else:
            out.extend(words[span.start : span.end])
        at = span.end
    out.extend(words[at:])
    return out


def _homophone_digit(words: Sequence[str], i: int) -> str:
    """``words[i]`` as a digit word if it is a homophone next to a (non-homophone) number word."""
    word = words[i]
    if word not in HOMOPHONES:
        return word
    for j in (i - 1, i + 1):
        if 0 <= j < len(words) and words[j] not in HOMOPHONES and (words[j] in _NUMBERS or words[j].isdigit()):
            return HOMOPHONES[word]
    return word


_NUMBERS: Final = NUMBER_WORDS - {"and", "o"}


def spoken_digits(value: str) -> str:
    """Digits and letters one by one, for reading back ("10023" -> "1 0 0 2 3")."""
    return " ".join(ch.upper() for ch in value if ch.isalnum())


_ONES_WORDS: Final = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]  # fmt: skip
_TENS_WORDS: Final = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """English words for ``0 <= n < 1_000_000`` ("ten thousand twenty three").

    Raises:
        ValueError: ``n`` is out of range.
    """
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
