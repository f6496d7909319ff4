"""Finding products, colours and sizes in what a caller said.

Invariants:
- Matching is on stemmed, normalized tokens (:mod:`voxcart.brain.text`), so case, punctuation and plural
  or singular never matter ("Hoodies", "hoodie", "HOODIE").
- A whole name or alias occurring in the text always outranks a partial match; among whole matches, the
  longer phrase wins ("trail running shoe" over "shoe"). Partial matches need a distinctive word of the
  name (not a filler or colour word); a misspelt word close to a name word (similarity >= 0.84, 5+
  letters) counts as partial.
- Pure functions of the text and the catalogue: implementations of the store share them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Final

from voxcart.brain.phrasing import size_phrases
from voxcart.brain.store._base import ProductMatch
from voxcart.brain.text import find_phrase, key_tokens
from voxcart.common.seed import Product

__all__ = ["COMMON_COLORS", "match_colors", "match_products", "match_size", "unknown_colors"]

COMMON_COLORS: Final = frozenset(
    "red blue green black white grey gray navy pink purple yellow orange brown tan beige olive maroon "
    "charcoal cream khaki teal gold silver burgundy ivory lavender mint coral turquoise violet indigo".split()
)
"""Colour words recognized even when no product comes in them (so "purple" can be answered "not in purple")."""

_FILLER: Final = frozenset(
    "the a an and of with for in on my your our new classic original men women mens womens kid kids unisex "
    "size color colour".split()
)
_SYNONYMS: Final[dict[str, str]] = {"gray": "grey", "colour": "color"}


def _canon(tokens: Iterable[str]) -> list[str]:
    return [_SYNONYMS.get(t, t) for t in tokens]


def _similar(a: str, b: str) -> bool:
    return len(a) >= 5 and len(b) >= 5 and difflib.SequenceMatcher(None, a, b).ratio() >= 0.84


def match_products(text: str, products: Sequence[Product]) -> list[ProductMatch]:
    """Products named in ``text``, best first (see the module invariants).

    Args:
        text: what the caller said or typed.
        products: the catalogue to search.

    Returns:
        Matches with a positive score, best first; ties keep catalogue order.
    """
    said = _canon(key_tokens(text))
    if not said:
        return []
    matches: list[ProductMatch] = []
    for product in products:
        best: ProductMatch | None = None
        for phrase in [product.name, *product.aliases]:
            words = _canon(key_tokens(phrase))
            if not words:
                continue
            if find_phrase(said, words) >= 0:
                score = 100.0 + 10 * len(words) + (1 if phrase == product.name else 0)
                candidate = ProductMatch(product=product, score=score, phrase=phrase, exact=True)
            else:
                distinctive = [w for w in words if w not in _FILLER and w not in COMMON_COLORS]
                hits = sum(1 for w in distinctive if w in said)
                near = sum(1 for w in distinctive if w not in said and any(_similar(w, s) for s in said))
                if not hits and not near:
                    continue
                score = 10.0 * hits + 6.0 * near - 0.5 * (len(distinctive) - hits - near)
                candidate = ProductMatch(product=product, score=score, phrase=phrase, exact=False)
            if best is None or candidate.score > best.score:
                best = candidate
        if best is not None and best.score > 0:
            matches.append(best)
    order = {id(p): i for i, p in enumerate(products)}
    matches.sort(key=lambda m: (-m.score, order[id(m.product)]))
    return matches


def match_colors(text: str, colors: Iterable[str]) -> list[str]:
    """The colours of ``colors`` named in ``text`` (longest phrases first, no overlaps), in spoken order."""
    said = _canon(key_tokens(text))
    found: list[tuple[int, str]] = []
    used: set[int] = set()
    for color in sorted(set(colors), key=lambda c: -len(c.split())):
        words = _canon(key_tokens(color))
        at = find_phrase(said, words)
        if at >= 0 and not used.intersection(range(at, at + len(words))):
            used.update(range(at, at + len(words)))
            found.append((at, color))
    return [color for _, color in sorted(found)]


def unknown_colors(text: str, known: Iterable[str]) -> list[str]:
    """Common colour words in ``text`` that are not part of any of the ``known`` colours."""
    known_words = {w for color in known for w in _canon(key_tokens(color))}
    return [w for w in _canon(key_tokens(text)) if w in COMMON_COLORS and w not in known_words]


def match_size(text: str, sizes: Iterable[str]) -> str | None:
    """The size of ``sizes`` named in ``text`` (the longest spoken form wins), if any."""
    said = key_tokens(text)
    best: tuple[int, str] | None = None
    for size in set(sizes):
        for phrase in size_phrases(size):
            words = key_tokens(phrase)
            if find_phrase(said, words) >= 0 and (best is None or len(words) > best[0]):
                best = (len(words), size)
    return best[1] if best else None
