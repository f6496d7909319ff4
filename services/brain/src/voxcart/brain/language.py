"""What callers of a given store are likely to say: a vocabulary and templated sample sentences.

Recognizers narrow their search with these (a pocketsphinx domain language model is built from
:func:`sample_utterances`; :func:`vocabulary` lists the words and phrases it must know).

Invariants: both are deterministic functions of the store (same store, same lists, same order); all text is
lower-case words without punctuation (hyphens become spaces, digits are spelled out) -- the form a
recognizer produces; every intent of :mod:`voxcart.brain.nlu` has sample sentences, and every product,
alias, colour and size of the store occurs in them.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from typing import Final

from voxcart.brain.nlu import CUES
from voxcart.brain.numbers import number_words
from voxcart.brain.phrasing import country_name, say_size, size_phrases
from voxcart.brain.store import Store
from voxcart.brain.text import normalize
from voxcart.common.seed import Product

__all__ = ["sample_utterances", "spell_digits", "spoken_form", "vocabulary"]

_DIGIT_WORDS: Final = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_EXTRA_WORDS: Final = [
    "yes", "no", "yeah", "nope", "sure", "okay", "please", "thanks", "thank you", "correct", "right", "wrong",
    "oh", "double", "hundred", "thousand", "at", "dot", "com", "zip code", "email", "order number", "pound",
    "hello", "hi", "um", "uh",
]  # fmt: skip


def spell_digits(value: str) -> str:
    """Digits as words, one by one ("10023" -> "one zero zero two three")."""
    return " ".join(_DIGIT_WORDS[int(ch)] for ch in value if ch.isdigit())


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
    return [spoken_form(n) for n in [product.name, *product.aliases]]


def _colors(product: Product) -> list[str]:
    return list(dict.fromkeys(spoken_form(v.color) for v in product.variants if v.color))


def _sizes(product: Product) -> list[str]:
    return list(dict.fromkeys(spoken_form(say_size(v.size)) for v in product.variants if v.size))


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
                phrases.update(spoken_form(p) for p in size_phrases(variant.size))
    for cues in CUES.values():
        phrases.update(normalize(phrase) for phrase, _ in cues)
    phrases.update(normalize(country_name(c)) for c in store.policies.ships_to)
    phrases.update(normalize(option.method) for option in store.policies.shipping)
    phrases.discard("")
    return sorted(phrases)


def _cycle(items: Iterable[str]) -> Iterator[str]:
    pool = list(items) or [""]
    return itertools.cycle(pool)


def sample_utterances(store: Store, *, per_template: int = 4) -> list[str]:
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
    combos = _cycle(
        f"{color} {name}|{size}"
        for p in products
        for color, size in itertools.zip_longest(_colors(p), _sizes(p), fillvalue="")
        for name in _names(p)[:2]
    )
    numbers = _cycle(spell_digits(str(rng.randrange(10 ** (n - 1), 10**n))) for n in (5, 6, 5, 4, 5, 6, 7, 5))
    zips = _cycle(spell_digits(f"{rng.randrange(100000):05d}") for _ in range(8))
    out: list[str] = []

    def add(template: str, n: int = per_template) -> None:
        for _ in range(n if "{" in template else 1):
            combo = next(combos).split("|")
            text = template.format(
                product=next(names), variant=combo[0].strip(), size=combo[1] or "medium", number=next(numbers),
                zip=next(zips),
            )  # fmt: skip
            out.append(" ".join(text.split()))

    for template in _TEMPLATES:
        add(template)
    for product in products:
        for name in _names(product):
            out.append(f"do you have the {name} in stock")
        for size in _sizes(product):
            out.append(f"size {size}")
        for color in _colors(product):
            out.append(f"in {color}")
    for entry in store.policies.faq:
        out.append(normalize(entry.question))
    for code in store.policies.ships_to:
        out.append(f"do you ship to {normalize(country_name(code)).removeprefix('the ')}")
    return list(dict.fromkeys(s for s in out if s))


_TEMPLATES: Final = [
    # order status
    "where is my order", "where is my order {number}", "i want to check the status of order {number}",
    "what is the status of my order", "track my package", "when will my order arrive", "has my order shipped",
    "my order number is {number}", "{number}", "it is {number}", "the order number is {number}",
    "i have not received my package", "can you give me the tracking number",
    # identity
    "my zip code is {zip}", "{zip}", "the zip code is {zip}", "my email is jay smith at example dot com",
    # returns and refunds
    "i want to return my {product}", "how do i return the {product}", "i want to return order {number}",
    "can i return my order", "i need to send back the {product}", "i want to make a return",
    "the {product} does not fit", "where is my refund", "what is the status of my return",
    "when will i get my refund", "did you get my return",
    # cancel
    "cancel my order", "i want to cancel order {number}", "please cancel my order", "can i cancel my order",
    # products
    "do you have the {variant} in size {size}", "is the {variant} in stock", "do you have {product} in stock",
    "how much is the {product}", "is the {product} available in {size}", "what colors does the {product} come in",
    "what sizes do you have for the {product}", "what about in {size}", "do you have it in {size}",
    # policies
    "what is your return policy", "how long do i have to return something", "how long does shipping take",
    "how much is shipping", "do you have express shipping", "what are your hours", "when are you open",
    "are you open on saturday", "what time do you close",
    # people, yes/no, goodbye, repeat, help
    "i want to talk to a person", "can i speak to a human", "transfer me to an agent", "representative",
    "operator", "yes", "no", "yes please", "no thanks", "yeah", "that is right", "no that is wrong", "sure",
    "goodbye", "that is all thank you", "no that is all", "bye", "thank you", "can you repeat that",
    "say that again", "what can you do", "help",
]  # fmt: skip
