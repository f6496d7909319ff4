"""What callers of a given store are likely to say: a vocabulary and templated sample sentences.

Recognizers narrow their search with these (a pocketsphinx domain language model is built from
:func:`sample_utterances`; :func:`vocabulary` lists the words and phrases it must know).

Callers say the same requests in endless ways, so besides the templates the samples hold requests built from
parts (an opener, a lead-in, a request: "um i was wondering if you could look up order ...", "i would like to
exchange it because it is too small") and, once each, a backbone of everyday spoken English ("i do not know",
"because", "i bought it last week"), so that words and turns no template has still exist in the LM. None of
them are taken from any test corpus. Measured (piper caller, 8 kHz μ-law, demo store, ``voxcart bench speech``'s
clean in-domain sentences): WER on phrasings not in the samples 21.2 % -> 12.3 %, on those in them 4.3 % ->
3.3 %; 1176 samples instead of 464, the decoder of a speaking call 9.3 MB instead of 9.0 MB.

Invariants: both are deterministic functions of the store (same store, same lists, same order); all text is
lower-case words without punctuation (hyphens become spaces, digits are spelled out, contractions written
out: recognizers add the contracted forms themselves) -- the form a recognizer produces; every intent of
:mod:`voxcart.brain.nlu` has sample sentences; every product name and alias, colour and size of the store
occurs in them, in several phrasings, whatever the store sells; order numbers and ZIP codes are made-up
digit strings said the ways callers say them (digit by digit, "oh" for zero, "double", in groups, as
numbers), so no customer data ends up in a language model.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from typing import Final

from voxcart.brain.caller_phrasings import BACKBONE, PHRASINGS, TEMPLATES, combined_phrasings
from voxcart.brain.nlu import CUES
from voxcart.brain.numbers import number_words
from voxcart.brain.phrasing import country_name, say_size, size_phrases
from voxcart.brain.store import Store
from voxcart.brain.text import normalize
from voxcart.common.seed import Product

__all__ = ["catalogue", "sample_utterances", "say_digits", "spell_digits", "spoken_form", "vocabulary"]

_DIGIT_WORDS: Final = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_EXTRA_WORDS: Final = [
    "yes", "no", "yeah", "yep", "yup", "nope", "sure", "okay", "please", "thanks", "thank you", "correct",
    "right", "wrong", "oh", "double", "triple", "hundred", "thousand", "at", "dot", "com", "zip code", "email",
    "order number", "pound", "hello", "hi", "um", "uh", "actually",
]  # fmt: skip
_LETTER_SIZES: Final = frozenset({"s", "m", "l", "os"})
"""Size codes that are not said as letters ("size m" is "size medium")."""


def spell_digits(value: str) -> str:
    """Digits as words, one by one ("10023" -> "one zero zero two three")."""
    return " ".join(_DIGIT_WORDS[int(ch)] for ch in value if ch.isdigit())


def say_digits(value: str, style: int) -> str:
    """A digit string as a caller may say it; ``style`` (any int, taken modulo 5) picks the way.

    0: digit by digit ("one zero zero two three"); 1: "oh" for zero ("one oh oh two three");
    2: "double"/"triple" for repeats ("one double oh two three"); 3: the first two digits as a number, then
    digit by digit ("ten oh two three"); 4: as a number ("ten thousand twenty three", up to 6 digits).
    A style that does not apply (no zero, no repeat, a leading zero) falls back to digit by digit.
    """
    digits = "".join(ch for ch in value if ch.isdigit())
    style %= 5
    if style == 1 and "0" in digits:
        return " ".join("oh" if d == "0" else _DIGIT_WORDS[int(d)] for d in digits)
    if style == 2 and any(a == b for a, b in itertools.pairwise(digits)):
        words: list[str] = []
        for digit, group in itertools.groupby(digits):
            n = len(list(group))
            while n >= 2:
                take = 3 if n == 3 else 2
                words += ["triple" if take == 3 else "double", "oh" if digit == "0" else _DIGIT_WORDS[int(digit)]]
                n -= take
            words += [_DIGIT_WORDS[int(digit)]] * n
        return " ".join(words)
    tens = len(digits) >= 4 and digits[0] != "0" and (digits[1] != "0" or digits[0] == "1" or digits[2] == "0")
    if style == 3 and tens:  # "twenty" + "three" would merge into 23, so "20" is said this way only before "oh"
        rest = " ".join("oh" if d == "0" else _DIGIT_WORDS[int(d)] for d in digits[2:])
        return f"{number_words(int(digits[:2]))} {rest}"
    if style == 4 and 4 <= len(digits) <= 6 and digits[0] != "0":
        return number_words(int(digits))
    return spell_digits(digits)


def spoken_form(text: str) -> str:
    """Text as a recognizer would hear it: normalized, numbers as words ("Size 10.5" -> "size ten point five")."""
    words = []
    for word in normalize(text).split():
        if word.isdigit() and int(word) < 1_000_000:
            words.append(number_words(int(word)))
        elif "." in word:
            whole, _, frac = word.partition(".")
            words.append(f"{number_words(int(whole))} point {spell_digits(frac)}")
        else:
            words.append(word)
    return " ".join(words)


def _names(product: Product) -> list[str]:
    return list(dict.fromkeys(spoken_form(n) for n in [product.name, *product.aliases] if spoken_form(n)))


def _colors(product: Product) -> list[str]:
    return list(dict.fromkeys(spoken_form(v.color) for v in product.variants if v.color))


def _sizes(product: Product) -> list[str]:
    return list(dict.fromkeys(spoken_form(say_size(v.size)) for v in product.variants if v.size))


def _size_words(size: str) -> list[str]:
    """Spoken forms of ``size`` a caller may use, without bare letter codes ("size m")."""
    out = []
    for phrase in size_phrases(size):
        words = spoken_form(phrase).split()
        if words and words[0] == "size":
            words = words[1:]
        if words and not (len(words) == 1 and words[0] in _LETTER_SIZES):
            out.append(spoken_form(phrase))
    return out


def vocabulary(store: Store) -> list[str]:
    """Words and phrases a caller of ``store`` is likely to say, sorted and without duplicates.

    Includes product names and aliases, colours, spoken sizes, digit and number words, the intent cue
    phrases, yes/no words and the countries the store ships to.
    """
    phrases: set[str] = set(_DIGIT_WORDS) | set(_EXTRA_WORDS)
    phrases.update(number_words(n) for n in range(10, 100, 10))
    phrases.update(number_words(n) for n in range(11, 20))
    for product in store.products():
        phrases.update(_names(product))
        phrases.update(_colors(product))
        for variant in product.variants:
            if variant.size:
                phrases.update(_size_words(variant.size))
    for cues in CUES.values():
        phrases.update(normalize(phrase) for phrase, _ in cues)
    phrases.update(normalize(country_name(c)) for c in store.policies.ships_to)
    phrases.update(normalize(option.method) for option in store.policies.shipping)
    phrases.discard("")
    return sorted(phrases)


def catalogue(store: Store) -> dict[str, list[str]]:
    """What a caller may answer to "which product / colour / size?", for recognizers' product grammars.

    Returns:
        ``{"names": [...], "colors": [...], "sizes": [...]}``: spoken product names and aliases, colours, and
        spoken sizes ("medium", "extra large", "ten and a half", "twelve ounce"), each sorted, no duplicates.
    """
    products = store.products()
    names = {n for p in products for n in _names(p)}
    colors = {c for p in products for c in _colors(p)}
    sizes = {w.removeprefix("size ") for p in products for v in p.variants if v.size for w in _size_words(v.size)}
    return {"names": sorted(names), "colors": sorted(colors), "sizes": sorted(s for s in sizes if s)}


def _cycle(items: Iterable[str]) -> Iterator[str]:
    pool = list(items) or [""]
    return itertools.cycle(pool)


def sample_utterances(store: Store, *, per_template: int = 3) -> list[str]:
    """A few hundred caller sentences for ``store``, covering every intent (deterministic).

    Args:
        store: the shop whose products, colours, sizes and policies fill the templates (order numbers and
            ZIP codes are made-up digit strings, so no customer data ends up in a language model).
        per_template: how many fills of each slotted template to produce.

    Returns:
        Lower-case sentences without punctuation, without duplicates, in a stable order.
    """
    products = store.products()
    rng = random.Random(len(products))
    names = _cycle(n for p in products for n in _names(p))
    colors = _cycle(c for p in products for c in _colors(p))
    sizes = _cycle(s for p in products for s in _sizes(p))
    combos = _cycle(
        f"{color} {name}|{size}"
        for p in products
        for color, size in itertools.zip_longest(_colors(p), _sizes(p), fillvalue="")
        for name in _names(p)[:2]
    )
    lengths = itertools.cycle((5, 6, 5, 4, 5, 6, 7, 5))
    styles = itertools.count()
    numbers = (say_digits(str(rng.randrange(10 ** (n - 1), 10**n)), next(styles)) for n in lengths)
    zips = (say_digits(f"{rng.randrange(100000):05d}", next(styles) % 3) for _ in itertools.count())
    out: list[str] = []

    def add(template: str, n: int = per_template) -> None:
        for _ in range(n if "{" in template else 1):
            combo = next(combos).split("|")
            text = template.format(
                product=next(names), variant=combo[0].strip(), size=combo[1] or next(sizes) or "medium",
                color=next(colors) or "blue", number=next(numbers), zip=next(zips),
            )  # fmt: skip
            out.append(" ".join(text.split()))

    for template in TEMPLATES:
        add(template)
    out.extend(PHRASINGS)
    for template in combined_phrasings():
        add(template, 1)
    out.extend(BACKBONE)
    for product in products:
        for i, name in enumerate(_names(product)):
            out.append(f"do you have the {name} in stock" if i % 2 == 0 else f"i am looking for the {name}")
        for size in _sizes(product):
            out += [f"size {size}", size]
        for color in _colors(product):
            out += [f"in {color}", f"the {color} one"]
    for entry in store.policies.faq:
        out.append(normalize(entry.question))
    for code in store.policies.ships_to:
        out.append(f"do you ship to {normalize(country_name(code)).removeprefix('the ')}")
    for option in store.policies.shipping:
        out.append(f"how much is {normalize(option.method)} shipping")
    return list(dict.fromkeys(s for s in out if s))
