"""Word error rate, tolerant of how a recognizer writes numbers.

A recognizer may say "one zero zero two three", "one oh oh two three" or "10023" for the same order number, and
"size ten" or "size 10" for the same size; the reference may use either form too. So both sides are brought to
one canonical token list before they are aligned:

- text is normalized the way the brain reads a transcript (:func:`voxcart.brain.text.normalize`: lower case,
  contractions expanded, punctuation and hyphens dropped), after recognizer markup (``<sil>``, ``[noise]``,
  ``word(2)``) is removed; hesitations (:data:`HESITATIONS`: "uh", "um" ...) are dropped, as NIST scoring
  treats them as optional, since no reference transcribes them;
- every stretch of number words and digit strings becomes its digits, one token per digit
  (:func:`voxcart.brain.numbers.digit_runs`): "10023", "one zero zero two three" and "ten thousand twenty three"
  all become ``1 0 0 2 3``; "ten" and "10" both become ``1 0``. A number error therefore costs one error per
  wrong digit, and the reference's length is counted in these tokens, not in words.

Invariants: :func:`canonical_tokens` is a pure function; :func:`align` returns a minimal edit script (its
``errors`` is the Levenshtein distance); :class:`WordErrors` adds up over utterances so a corpus WER is the
total errors over the total reference tokens, never a mean of per-utterance rates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from voxcart.brain.numbers import digit_runs
from voxcart.brain.text import normalize

__all__ = ["HESITATIONS", "WordErrors", "align", "canonical_tokens", "word_errors"]

_MARKUP: Final = re.compile(r"<[^>]*>|\[[^\]]*\]|\(\d+\)")
_NUMBER_WORDS: Final = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand".split()
)
_ZERO_LETTERS: Final = frozenset({"oh", "o"})
"""Zero, but only next to another number ("one oh five"); alone it is an interjection or a letter."""
_REPEATERS: Final = frozenset({"double", "triple"})
HESITATIONS: Final = frozenset({"uh", "um", "er", "erm", "ah", "hmm", "mm", "uhm"})
"""Filled pauses, left out of both sides."""


def _is_number(word: str) -> bool:
    return word.isdigit() or word in _NUMBER_WORDS


def _span_end(words: Sequence[str], i: int) -> int:
    """The end of the number stretch starting at ``words[i]`` (``i`` itself when none starts there)."""
    j = i
    while j < len(words):
        word = words[j]
        nxt = words[j + 1] if j + 1 < len(words) else ""
        prev = words[j - 1] if j > i else ""
        if _is_number(word):
            j += 1
        elif word in _ZERO_LETTERS and (_is_number(nxt) or (j > i and _is_number(prev)) or nxt in _ZERO_LETTERS):
            j += 1
        elif word in _REPEATERS and (_is_number(nxt) or nxt in _ZERO_LETTERS):
            j += 1
        elif word == "and" and prev in ("hundred", "thousand") and _is_number(nxt):
            j += 1
        else:
            break
    return j


def _decimal(word: str) -> list[str] | None:
    """``"10.5"`` -> ``["1", "0", "point", "5"]`` (how "ten point five" canonicalizes); None otherwise."""
    whole, dot, frac = word.partition(".")
    if dot and whole.isdigit() and frac.isdigit():
        return [*whole, "point", *frac]
    return None


def canonical_tokens(text: str) -> list[str]:
    """The tokens WER is computed on: normalized words, numbers as single digits.

    ``canonical_tokens("Order #10023, size 10.5")`` and ``canonical_tokens("order one oh oh two three size
    ten point five")`` are both ``["order", "1", "0", "0", "2", "3", "size", "1", "0", "point", "5"]``.
    """
    words = [w for w in normalize(_MARKUP.sub(" ", text)).split() if w not in HESITATIONS]
    out: list[str] = []
    i = 0
    while i < len(words):
        end = _span_end(words, i)
        if end > i:
            out.extend("".join(digit_runs(" ".join(words[i:end]))))
            i = end
            continue
        decimal = _decimal(words[i])
        out.extend(decimal if decimal is not None else [words[i]])
        i += 1
    return out


@dataclass(slots=True)
class WordErrors:
    """Edit counts against a reference; add them up over a corpus with ``+=``.

    Attributes:
        substitutions: reference tokens recognized as another token.
        deletions: reference tokens missing from the hypothesis.
        insertions: hypothesis tokens with no reference token.
        reference: reference tokens (the WER denominator).
    """

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference: int = 0

    @property
    def errors(self) -> int:
        """Substitutions + deletions + insertions."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Errors per reference token (0.0 for an empty reference with no insertions; may exceed 1.0)."""
        if self.reference == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference

    def __iadd__(self, other: WordErrors) -> WordErrors:
        self.substitutions += other.substitutions
        self.deletions += other.deletions
        self.insertions += other.insertions
        self.reference += other.reference
        return self

    def as_dict(self) -> dict[str, float | int]:
        """JSON form: the counts and ``wer`` (a fraction, rounded to 4 places)."""
        return {
            "wer": round(self.wer, 4) if self.reference else 0.0,
            "reference_tokens": self.reference,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
        }


def align(reference: Sequence[str], hypothesis: Sequence[str]) -> WordErrors:
    """Minimal edit script from ``reference`` to ``hypothesis`` (Levenshtein, unit costs).

    Among edit scripts of minimal length, the one with the most substitutions is counted (the usual NIST
    convention: a wrong word is one substitution, not a deletion plus an insertion).
    """
    n, m = len(reference), len(hypothesis)
    # cell: (errors, -substitutions, substitutions, deletions, insertions); min() picks fewest errors, then
    # most substitutions.
    Cell = tuple[int, int, int, int, int]
    prev: list[Cell] = [(j, 0, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        row: list[Cell] = [(i, 0, 0, i, 0)]
        for j in range(1, m + 1):
            d = prev[j]
            ins = row[j - 1]
            sub = prev[j - 1]
            same = reference[i - 1] == hypothesis[j - 1]
            row.append(
                min(
                    (d[0] + 1, d[1], d[2], d[3] + 1, d[4]),
                    (ins[0] + 1, ins[1], ins[2], ins[3], ins[4] + 1),
                    (sub[0], sub[1], sub[2], sub[3], sub[4])
                    if same
                    else (sub[0] + 1, sub[1] - 1, sub[2] + 1, sub[3], sub[4]),
                )
            )
        prev = row
    _, _, subs, dels, inss = prev[m]
    return WordErrors(substitutions=subs, deletions=dels, insertions=inss, reference=n)


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """:func:`align` on the :func:`canonical_tokens` of both texts."""
    return align(canonical_tokens(reference), canonical_tokens(hypothesis))
