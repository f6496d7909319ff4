"""How long a silence ends the caller's turn, by what the agent just asked (adaptive endpointing).

After a yes/no question the answer is short and the caller waits for the agent: a shorter end-of-speech silence
answers sooner. While the caller reads out digits or an address they pause between groups and words ("one zero
zero ... two three", "twelve oak street ... springfield"): a longer one keeps the whole entry in one utterance
instead of answering its first half. Everything else uses the endpointer's own silence.

This is the most an utterance waits. Under the expectations without an entry read out in groups (``"free"``,
``"yes_no"``, ``"product"``) it ends sooner, at the endpointer's early mark, when its words already make a complete
request (``early_end``).

Invariant: the silence depends only on the expectation in force at the utterance's start and the configured
knobs, so a replaying owner (which sets the same expectation) endpoints the same.
"""

from __future__ import annotations

from voxcart.common.events import Expect

__all__ = ["ADDRESS_END_SILENCE_MS", "YES_NO_END_SILENCE_MS", "end_silence_ms"]

YES_NO_END_SILENCE_MS = 400
"""After a yes/no question ("yes", "no thanks"): at most this."""
ADDRESS_END_SILENCE_MS = 1000
"""While the caller reads out an address: at least this (the same as digits)."""


def end_silence_ms(expect: Expect, base_ms: int, digits_ms: int | None) -> int | None:
    """The end-of-speech silence of an utterance under ``expect`` (``None``: the endpointer's own, ``base_ms``).

    Args:
        expect: the expectation in force at the utterance's start.
        base_ms: the endpointer's configured end silence.
        digits_ms: the silence under ``"digits"`` (``None``: the base one).
    """
    if expect == "digits":
        return digits_ms
    if expect == "address":
        return max(ADDRESS_END_SILENCE_MS, base_ms)
    if expect == "yes_no":
        return min(YES_NO_END_SILENCE_MS, base_ms)
    return None
