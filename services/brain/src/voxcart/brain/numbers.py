"""Numbers as callers say them, and as the agent says them: the brain's view of
:mod:`voxcart.common.spoken_numbers` (the rules live there, shared with the recognizer).

:func:`digit_runs` turns every stretch of spoken or written digits in a sentence into a string of digits:
"one zero zero two three", "one oh oh two three", "ten thousand twenty three", "ten oh two three" and
"10023" all read as ``"10023"``; "double"/"triple" repeat the next digit.

Invariants: pure functions of the text; text is normalized with :func:`voxcart.brain.text.normalize` first
(typed text with punctuation and contractions reads like recognized text).
"""

from __future__ import annotations

from voxcart.brain.text import normalize
from voxcart.common.spoken_numbers import NUMBER_WORDS, number_spans, number_words, spoken_digits

__all__ = ["NUMBER_WORDS", "digit_runs", "longest_digit_run", "number_words", "spoken_digits"]


def digit_runs(text: str, *, homophones: bool = False) -> list[str]:
    """Every run of spoken or written digits in ``text``, in order, as digit strings.

    Args:
        text: recognized or typed text.
        homophones: also read "to"/"too" as 2, "for" as 4, "won" as 1 and "ate" as 8 (recognizers confuse
            them); use it only where digits are expected.

    Returns:
        One string per run, e.g. ``"my order is one oh oh two three"`` -> ``["10023"]``.
    """
    return [span.digits for span in number_spans(normalize(text).split(), homophones=homophones)]


def longest_digit_run(text: str, *, min_len: int = 1, homophones: bool = False) -> str | None:
    """The longest digit run in ``text`` (the last one on ties), if it has at least ``min_len`` digits."""
    best: str | None = None
    for run in digit_runs(text, homophones=homophones):
        if len(run) >= min_len and (best is None or len(run) >= len(best)):
            best = run
    return best
