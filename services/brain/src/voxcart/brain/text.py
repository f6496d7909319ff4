"""Text normalization shared by the store's product matching and the dialog's understanding.

Recognizers hand us lower-case words without punctuation; typed text (``voxcart chat``) has both. Everything is
brought to one form before it is compared:

- :func:`normalize` lower-cases, expands common contractions ("where's" -> "where is"), turns hyphens and
  punctuation into spaces and keeps decimals ("10.5") and digit strings intact.
- :func:`stem` folds plural and singular to one key ("hoodies"/"hoodie", "shoes"/"shoe", "berries"/"berry");
  it is a matching key, never shown to anyone.
- :func:`find_phrase` finds a phrase as a contiguous run of stemmed tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

__all__ = ["find_phrase", "key_tokens", "normalize", "stem", "tokens"]

_CONTRACTIONS: Final[dict[str, str]] = {
    "what's": "what is",
    "where's": "where is",
    "when's": "when is",
    "how's": "how is",
    "that's": "that is",
    "it's": "it is",
    "there's": "there is",
    "i'm": "i am",
    "i've": "i have",
    "i'd": "i would",
    "i'll": "i will",
    "you're": "you are",
    "we're": "we are",
    "they're": "they are",
    "don't": "do not",
    "doesn't": "does not",
    "didn't": "did not",
    "can't": "can not",
    "cannot": "can not",
    "won't": "will not",
    "isn't": "is not",
    "aren't": "are not",
    "wasn't": "was not",
    "haven't": "have not",
    "hasn't": "has not",
    "let's": "let us",
}
_WORD: Final = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_APOSTROPHE_WORD: Final = re.compile(r"[a-z]+'[a-z]+")
_NO_STEM: Final = frozenset({"yes", "this", "us", "is", "was", "has", "does", "its", "his", "plus", "bus", "gas"})


def normalize(text: str) -> str:
    """Lower-case, expand contractions, drop punctuation; tokens are separated by single spaces."""
    lowered = text.lower().replace("\u2019", "'").replace("`", "'")
    lowered = _APOSTROPHE_WORD.sub(lambda m: _CONTRACTIONS.get(m.group(0), m.group(0).replace("'s", "")), lowered)
    return " ".join(_WORD.findall(lowered.replace("'", "")))


def tokens(text: str) -> list[str]:
    """The normalized tokens of ``text``."""
    return normalize(text).split()


def stem(word: str) -> str:
    """A plural/singular-insensitive key for one normalized token."""
    if len(word) <= 3 or word in _NO_STEM or word[-1].isdigit():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "ie"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ie"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def key_tokens(text: str) -> list[str]:
    """Normalized, stemmed tokens: the form phrases are compared in."""
    return [stem(t) for t in tokens(text)]


def find_phrase(haystack: Sequence[str], phrase: Sequence[str]) -> int:
    """Index of the first contiguous occurrence of ``phrase`` in ``haystack`` (both key tokens), or -1."""
    n = len(phrase)
    if n == 0 or n > len(haystack):
        return -1
    first = phrase[0]
    for i in range(len(haystack) - n + 1):
        if haystack[i] == first and list(haystack[i : i + n]) == list(phrase):
            return i
    return -1
