"""JSGF grammars for the narrow expectations: digits (order numbers, ZIP codes), yes/no, and product answers.

When the brain has asked a question with a known kind of answer, the recognizer decodes the answer with one
of these grammars as well as with the domain language model (see ``recognizer``). On piper caller speech
through the 8 kHz μ-law path, 5- and 6-digit strings said in every style ("one zero zero two three", "one oh
oh two three", "one double oh two three", "ten oh two three", "ten thousand twenty three") came out exactly
right 13 times in 14 with :func:`digits_grammar` against 9-10 in 14 with the domain LM; product answers
("size nine", "large please", "the black one in size ten") 19 in 20 with :func:`product_grammar` against 14
in 17 with the LM. Real recorded digits (Debian ``asterisk-core-sounds-en-wav``) spliced into 25 5-digit
strings: 12 exactly right decoding each string whole, 7 through the streaming recognizer, against 1-2 with
the LM (speech.md's best was 4 of 25): read numbers back to the caller. Real recorded isolated numbers
("zero" ... "twenty", "thirty" ... "ninety", the same set) decoded as one call: 24 of 28 exactly right under
``"digits"``, 19 with the LM alone.

Invariants:
- Grammars are deterministic functions of their arguments (same catalogue, same text), so a replaying
  recognizer rebuilds exactly the search the original used.
- Every word of a grammar must be in the decoder's dictionary (PocketSphinx refuses the grammar otherwise):
  :data:`GRAMMAR_PHRASES` lists the fixed phrases, whose words the model adds to its dictionary, and
  :func:`product_grammar` keeps only phrases whose every word is in the ``known`` vocabulary.
- Words are lower case, numbers spelled out ("ten and a half"), as the language model's words are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CARRIER_WORDS",
    "DIGITS",
    "GRAMMAR_PHRASES",
    "PRODUCT",
    "YES_NO",
    "Catalogue",
    "digits_grammar",
    "grammar_words",
    "jsgf_words",
    "product_grammar",
    "yes_no_grammar",
]

DIGITS: Final = "digits"
YES_NO: Final = "yes_no"
PRODUCT: Final = "product"
"""Search names: the same as the :data:`voxcart.common.events.Expect` values they serve."""

_DIGIT_CARRIERS: Final = (
    "it's", "it is", "its", "my order number is", "the order number is", "order number", "order", "the number is",
    "my zip code is", "the zip code is", "zip code", "my zip is", "yes it's", "yeah it's", "sure it's",
    "i think it's", "okay it's", "um", "uh",
)  # fmt: skip
_DIGITS: Final = ("zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS: Final = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                 "nineteen")  # fmt: skip
_TENS: Final = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_YES: Final = (
    "yes", "yeah", "yep", "yup", "sure", "correct", "right", "okay", "absolutely", "of course", "please do",
    "go ahead", "sure go ahead", "yes please", "yes it is", "yeah sure", "that's right", "that's correct",
    "yes that's right", "yes that's correct", "that is right", "that is correct", "sounds good", "definitely",
    "please", "yes go ahead", "do it",
)  # fmt: skip
_NO: Final = (
    "no", "nope", "nah", "no thanks", "no thank you", "not right now", "no that's wrong", "that's wrong",
    "no it's not", "not really", "never mind", "no that's not right", "wrong", "no don't", "don't",
)  # fmt: skip
_BEFORE: Final = ("um", "uh", "oh", "well", "actually")
_AFTER: Final = ("please", "thanks", "thank you")
_PRODUCT_BEFORE: Final = (
    "um", "uh", "i'll take", "i will take", "i want", "i'd like", "i need", "can i get", "do you have",
    "how about", "what about", "let me get", "i'm looking for",
)  # fmt: skip

GRAMMAR_PHRASES: Final = tuple(
    dict.fromkeys(
        [*_DIGIT_CARRIERS, *_DIGITS, *_TEENS, *_TENS, "double", "triple", "hundred", "thousand", "and", *_YES, *_NO,
         *_BEFORE, *_AFTER, *_PRODUCT_BEFORE, "the", "a", "an", "one", "in", "size"]
    )
)  # fmt: skip
"""Every fixed phrase of the grammars; the model's dictionary must hold their words."""

CARRIER_WORDS: Final = (
    frozenset(
        w
        for phrase in (
            *_DIGIT_CARRIERS,
            *_BEFORE,
            *_AFTER,
            *_PRODUCT_BEFORE,
            "the a an in and one of it is that's do go",
        )
        for w in phrase.split()
    )
    - frozenset(_DIGITS)
    - frozenset(p for p in (*_YES, *_NO) if " " not in p and p != "please")
)
"""Words a grammar wraps its answers in ("it's", "please", "i'd like", "the"): hearing them says nothing about
whether the caller gave the kind of answer the grammar is for (a digit, a yes or no, a product)."""

_WORD: Final = re.compile(r"[a-z]+(?:'[a-z]+)?")


@dataclass(frozen=True, slots=True)
class Catalogue:
    """What a product answer names: product names and aliases, colours, spoken sizes (lower-case words).

    Example: ``Catalogue(names=("trail hoodie", "hoodie"), colors=("blue",), sizes=("medium", "ten and a half"))``.
    """

    names: tuple[str, ...] = ()
    colors: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.names or self.colors or self.sizes)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Sequence[str]]) -> Catalogue:
        """From the brain's published form, ``{"names": [...], "colors": [...], "sizes": [...]}``.

        Raises:
            ValueError: a key other than those three, or a value that is not a list of strings.
        """
        unknown = set(data) - {"names", "colors", "sizes"}
        if unknown:
            raise ValueError(f"Catalogue: unknown key(s) {sorted(unknown)}, expected names, colors, sizes")
        lists: dict[str, tuple[str, ...]] = {}
        for key, value in data.items():
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"Catalogue: {key} must be a list of strings, got {value!r:.80}")
            lists[key] = tuple(value)
        return cls(**lists)


def grammar_words(phrases: Iterable[str] = GRAMMAR_PHRASES) -> list[str]:
    """The distinct words of ``phrases``, in first-seen order."""
    return list(dict.fromkeys(w for p in phrases for w in _WORD.findall(p.lower())))


def jsgf_words(jsgf: str) -> frozenset[str]:
    """Every word a JSGF grammar can produce (rule names, keywords and the header left out)."""
    words: set[str] = set()
    for line in jsgf.splitlines():
        _, equals, body = line.partition("=")
        if equals:
            words.update(_WORD.findall(re.sub(r"<[^>]*>", " ", body)))
    return frozenset(words)


def _alternatives(phrases: Iterable[str]) -> str:
    return " | ".join(dict.fromkeys(" ".join(_WORD.findall(p.lower())) for p in phrases if _WORD.search(p.lower())))


def _header(name: str) -> str:
    return f"#JSGF V1.0;\ngrammar {name};\n"


def digits_grammar() -> str:
    """Order numbers, ZIP codes and numbers after an optional carrier phrase ("it's", "my order number is"):
    digits one by one ("oh" for zero, "double"/"triple" repeats), optionally led by a teen ("ten oh two
    three"); a number alone ("forty", "twenty three") or with "thousand"/"hundred" ("ten thousand twenty
    three"); or digits in pairs ("twenty three forty five", "ten twenty three", "one oh oh twenty three").

    Teens and tens only lead a digit string, end one of at least two digits, or come in pairs whose later
    pairs are tens: in a free loop of all number words a slow human "seven" came out "ten ten" (real recorded
    digits spliced into 5-digit strings: 12 in 25 exactly right with this structure, 2 in 25 with the loop),
    and allowing any pair after any digits turned recorded "three", "seven", "sixty" into "three eighteen",
    "ten ten", "two sixteen" (isolated numbers 22 of 28 right against 24). Piper callers saying 20 numbers in
    these styles: 17 exactly right, 12 without the pairs ("twenty three forty five" came out "23 please").
    (PocketSphinx all but ignores JSGF weights: ``/0.01/`` on the pairs changed none of these results.)
    """
    return (
        _header(DIGITS)
        + "public <answer> = [<carrier>] <number> [<after>];\n"
        + f"<carrier> = {_alternatives(_DIGIT_CARRIERS)};\n"
        + "<number> = [<lead>] <sequence> | <small> [(thousand | hundred) [[and] <small>]] | <paired>;\n"
        + "<paired> = (<teen> | <pair>) <pair>+ | <digit> <sequence> (<teen> | <pair>);\n"
        + "<pair> = <tens> [<unit>];\n"
        + "<lead> = <teen>;\n"
        + "<sequence> = (<digit> | double <digit> | triple <digit>)+;\n"
        + "<small> = <unit> | <teen> | <tens> [<unit>];\n"
        + f"<digit> = {_alternatives(_DIGITS)};\n"
        + f"<unit> = {_alternatives(_DIGITS[2:])};\n"
        + f"<teen> = {_alternatives(_TEENS)};\n"
        + f"<tens> = {_alternatives(_TENS)};\n"
        + f"<after> = {_alternatives(_AFTER)};\n"
    )


def yes_no_grammar() -> str:
    """A yes or a no and their common variants ("yep", "that's right", "not right now", "go ahead")."""
    return (
        _header(YES_NO)
        + "public <answer> = [<before>] (<yes> | <no>) [<after>];\n"
        + f"<before> = {_alternatives(_BEFORE)};\n"
        + f"<yes> = {_alternatives(_YES)};\n"
        + f"<no> = {_alternatives(_NO)};\n"
        + f"<after> = {_alternatives(_AFTER)};\n"
    )


def product_grammar(catalogue: Catalogue, known: frozenset[str], keyterms: Sequence[str] = ()) -> str | None:
    """Answers to "which product / colour / size?": a name, "the blue one", "size nine", "large please",
    "the black one in size ten", "i'll take the grey one in medium".

    Args:
        catalogue: the store's names, colours and sizes.
        known: the dictionary's words; phrases with any other word are left out.
        keyterms: more product names (from the brain's ``listen``), used like catalogue names.

    Returns:
        The JSGF text, or ``None`` when no name, colour or size is left.
    """

    def usable(phrases: Iterable[str]) -> list[str]:
        out = []
        for phrase in phrases:
            words = _WORD.findall(phrase.lower())
            if words and all(w in known for w in words):
                out.append(" ".join(words))
        return sorted(set(out))

    names = usable([*catalogue.names, *keyterms])
    colors = usable(catalogue.colors)
    sizes = usable(catalogue.sizes)
    if not (names or colors or sizes):
        return None
    # One instance of each list where possible: every word instance costs the decoder memory (a rule
    # referenced three times is three copies), so the lists are referenced as few times as the phrasing allows.
    variants = [r for r, ok in (("<color>", colors), ("<size>", sizes)) if ok]
    qualifiers = [r for r, ok in (("<color>", colors), ("[size] <size>", sizes)) if ok]
    head = f"[{' | '.join(variants)}] " if variants else ""
    thing = "(<name> | one)" if names else "one"
    named = f"[the | a | an] {head}{thing}" + (f" [in ({' | '.join(qualifiers)})]" if qualifiers else "")
    alone = f"[in | size | a] ({' | '.join(variants)})" if variants else ""
    rules = [
        _header(PRODUCT),
        "public <answer> = [<before>] <item> [<after>];\n",
        f"<item> = {named}" + (f" | {alone}" if alone else "") + ";\n",
        f"<before> = {_alternatives(_PRODUCT_BEFORE)};\n",
        f"<after> = {_alternatives(_AFTER)};\n",
    ]
    for rule, phrases in (("name", names), ("color", colors), ("size", sizes)):
        if phrases:
            rules.append(f"<{rule}> = {' | '.join(phrases)};\n")
    return "".join(rules)
