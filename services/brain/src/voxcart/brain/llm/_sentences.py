"""Cut streamed text into spoken sentences as soon as each one is complete.

Invariants: a sentence is complete when a ``.``, ``!`` or ``?`` (optionally followed by closing quotes or
brackets) is followed by whitespace, or at a line break; "19.99", "e.g." inside a word and "Mr." before a name
do not end one. Text is never lost or reordered: the concatenation of everything yielded, plus :meth:`flush`,
is the input with whitespace normalized and markdown emphasis removed.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["SentenceSplitter"]

_END: Final = re.compile(r"[.!?][\"')\]]*(?=\s)|\n")
_TITLES: Final = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "e.g.", "i.e.", "vs.", "no."})
_MARKDOWN: Final = re.compile(r"[*_`#]+")


class SentenceSplitter:
    """Feed text deltas with :meth:`feed`; it returns the sentences they completed."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[str]:
        """Add a delta; returns the sentences it completed, in order."""
        self._buffer += text
        out: list[str] = []
        start = 0
        for match in _END.finditer(self._buffer):
            end = match.end()
            candidate = self._buffer[start:end]
            words = candidate.split()
            if match.group() != "\n" and words and words[-1].lower() in _TITLES:
                continue
            sentence = _clean(candidate)
            if sentence:
                out.append(sentence)
            start = end
        self._buffer = self._buffer[start:]
        return out

    def flush(self) -> list[str]:
        """The rest of the text, as a last sentence (if any)."""
        rest, self._buffer = _clean(self._buffer), ""
        return [rest] if rest else []


def _clean(text: str) -> str:
    return " ".join(_MARKDOWN.sub("", text).split())
