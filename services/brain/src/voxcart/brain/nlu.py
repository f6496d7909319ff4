"""Understanding one caller utterance: intent by weighted keywords, yes/no, emails, ZIP codes.

The recognizer is weak (lower-case words, no punctuation, some wrong), so understanding is keyword-robust
rather than grammatical:

- Each intent has cue phrases with weights (:data:`CUES`); an utterance scores the sum of the weights of
  the cues it contains (phrases are compared on stemmed tokens, so plural/singular do not matter), plus
  dynamic cues (a product of the catalogue for ``availability``; "refund"/"return" with a status word for
  ``refund_status``; an FAQ question's content words for ``faq``).
- The best score wins if it reaches :data:`MIN_SCORE`; ties go to the intent listed first in :data:`INTENTS`
  (so "i want to return my hoodie" is a return, not a product question).
- Everything here is a pure function of the text (and the store for catalogue cues).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, Literal

import msgspec

from voxcart.brain.numbers import longest_digit_run
from voxcart.brain.text import find_phrase, key_tokens, normalize, tokens
from voxcart.common.seed import FaqEntry

__all__ = [
    "CUES",
    "INTENTS",
    "MIN_SCORE",
    "Intent",
    "IntentScore",
    "extract_email",
    "extract_zip",
    "faq_match",
    "is_correction",
    "ordinal_choice",
    "mentioned_countries",
    "score_intents",
    "yes_or_no",
]

Intent = Literal[
    "human", "goodbye", "repeat", "cancel", "change_address", "message", "refund_status", "return_policy",
    "return", "order_status", "shipping", "hours", "availability", "faq", "help", "thanks", "unknown",
]  # fmt: skip
INTENTS: Final[tuple[str, ...]] = (
    "human", "goodbye", "repeat", "cancel", "change_address", "message", "refund_status", "return_policy",
    "return", "order_status", "shipping", "hours", "availability", "faq", "help", "thanks",
)  # fmt: skip
"""Intents in tie-break priority order."""

MIN_SCORE: Final = 2.0
"""An utterance below this score for every intent is not understood."""

CUES: Final[dict[str, list[tuple[str, float]]]] = {
    "human": [
        ("human", 4), ("person", 4), ("real person", 1), ("agent", 4), ("representative", 4), ("operator", 4),
        ("somebody", 2), ("someone", 2), ("manager", 4), ("customer service", 3), ("talk to", 1),
        ("speak to", 1), ("speak with", 1), ("transfer", 3), ("associate", 3), ("live", 1),
    ],
    "goodbye": [
        ("bye", 5), ("goodbye", 5), ("good bye", 5), ("that is all", 5), ("that is it", 4), ("nothing else", 5),
        ("hang up", 5), ("i am done", 4), ("all set", 3), ("that will be all", 5),
    ],
    "repeat": [
        ("repeat", 5), ("say that again", 5), ("say again", 4), ("come again", 3), ("what did you say", 5),
        ("pardon", 3), ("one more time", 3), ("again", 1), ("you were saying", 5), ("go on", 4), ("carry on", 4),
        ("were you saying", 5), ("what was that", 4), ("did not catch", 4),
    ],
    "cancel": [("cancel", 6), ("cancellation", 6), ("cancelled", 3), ("stop my order", 4)],
    "change_address": [
        ("address", 4), ("new address", 1), ("wrong address", 1), ("different address", 1), ("moved", 2),
        ("redirect", 3), ("your address", -5), ("email address", -5), ("store address", -5),
        ("address of the store", -5),
    ],
    "message": [
        ("message", 3), ("leave a message", 3), ("call me back", 5), ("call back", 3), ("callback", 4),
        ("get back to me", 3),
    ],
    "refund_status": [("refund", 2), ("my money", 2), ("money back", 3)],
    "return_policy": [
        ("return policy", 6), ("refund policy", 6), ("policy", 2), ("return window", 6), ("how many days", 3),
        ("how long do i have", 4), ("returnable", 4), ("can i return", 1), ("rule", 2),
        ("policy on return", 6), ("policy for return", 6), ("how long do refund", 4), ("how long does refund", 4),
        ("how long does a refund", 4), ("refund take", 2),
    ],
    "return": [
        ("return", 3), ("returning", 3), ("send back", 4), ("send it back", 4), ("exchange", 3),
        ("take back", 3), ("refund", 1), ("does not fit", 3), ("wrong size", 3),
    ],
    "order_status": [
        ("order", 1), ("my order", 2), ("package", 3), ("parcel", 3), ("track", 3), ("tracking", 3),
        ("where is", 1), ("status", 2), ("arrive", 3), ("arrived", 3), ("arriving", 3), ("delivery", 1),
        ("delivered", 2), ("shipped", 2), ("when will", 1), ("eta", 2), ("late", 2), ("not received", 3),
        ("check on", 2), ("update on", 2), ("get here", 3), ("show up", 2), ("showed up", 2),
    ],
    "shipping": [
        ("shipping", 3), ("ship", 2), ("express", 3), ("overnight", 2), ("ship to", 2), ("delivery time", 3),
        ("how long does delivery", 3), ("shipping cost", 2), ("free shipping", 3), ("international", 3),
        ("deliver to", 2),
    ],
    "hours": [
        ("hour", 4), ("open", 3), ("close", 3), ("closed", 3), ("closing", 3), ("opening", 3),
        ("what time", 2),
    ],
    "availability": [
        ("stock", 4), ("in stock", 1), ("available", 3), ("availability", 3), ("do you have", 3),
        ("do you sell", 3), ("do you carry", 3), ("come in", 3), ("comes in", 3), ("size", 2), ("color", 2),
        ("colour", 2), ("price", 3), ("cost", 2), ("how much", 2), ("buy", 2), ("looking for", 2),
        ("sold out", 4),
    ],
    "help": [("help", 1), ("what can you do", 4), ("option", 2), ("menu", 2)],
    "thanks": [("thank", 2), ("thank you", 1), ("appreciate", 2)],
}  # fmt: skip
"""Cue phrases and weights per intent."""

_CUE_KEYS: Final = {intent: [(key_tokens(phrase), weight) for phrase, weight in cues] for intent, cues in CUES.items()}
_STATUS_WORDS: Final = frozenset(
    "where status yet when check received receive get got happened still processed back".split()
)
_YES: Final = [
    key_tokens(p)
    for p in (
        "yes", "yeah", "yep", "yup", "sure", "correct", "right", "okay", "ok", "please", "absolutely",
        "definitely", "go ahead", "do it", "sounds good", "uh huh", "affirmative", "of course", "yes please",
    )
]  # fmt: skip
_NO: Final = [
    key_tokens(p)
    for p in ("no", "nope", "nah", "not", "wrong", "incorrect", "negative", "do not", "never mind", "nevermind")
]
_STOP: Final = frozenset(
    "a an the i you we do does did is are am to of for on in it my your our can could would will be with "
    "and or any what how when where there this that have has me us please".split()
)
_CORRECTIONS: Final = [
    key_tokens(p)
    for p in (
        "wrong number", "wrong order", "not my order", "not the right", "that is not right", "that is wrong",
        "you heard wrong", "i said", "not what i said", "incorrect", "that is not it", "not correct",
        "you got it wrong", "misheard",
    )
]  # fmt: skip
_NOT_A_CORRECTION: Final = frozenset({"zip", "email", "code", "postal"})
_EMAIL: Final = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CONNECTORS: Final[dict[str, str]] = {"dot": ".", "period": ".", "underscore": "_", "dash": "-", "hyphen": "-"}
_COUNTRY_WORDS: Final[dict[str, str]] = {
    "canada": "CA", "united states": "US", "america": "US", "usa": "US", "mexico": "MX", "england": "GB",
    "united kingdom": "GB", "uk": "GB", "britain": "GB", "ireland": "IE", "australia": "AU",
    "new zealand": "NZ", "germany": "DE", "france": "FR", "spain": "ES", "italy": "IT", "japan": "JP",
    "netherlands": "NL",
}  # fmt: skip


class IntentScore(msgspec.Struct, frozen=True):
    """An intent and how strongly the utterance points at it."""

    intent: str
    score: float


def score_intents(text: str, *, product_score: float = 0.0, faq: Sequence[FaqEntry] = ()) -> list[IntentScore]:
    """Score every intent for ``text``, best first (ties in :data:`INTENTS` order).

    Args:
        text: the utterance.
        product_score: catalogue evidence (3 when a product name or alias occurs, 2 for a partial match).
        faq: the store's FAQ, for the ``faq`` intent.

    Returns:
        One entry per intent with a positive score; ``[IntentScore("unknown", 0)]`` when none.
    """
    said = key_tokens(text)
    scores = {intent: 0.0 for intent in INTENTS}
    for intent, cues in _CUE_KEYS.items():
        scores[intent] = sum(weight for words, weight in cues if find_phrase(said, words) >= 0)
    if ("refund" in said or "return" in said) and _STATUS_WORDS.intersection(said):
        scores["refund_status"] += 3
    scores["availability"] += product_score
    if faq:
        index, overlap = faq_match(text, faq)
        if index is not None:
            scores["faq"] = 2.0 * overlap
    ranked = [IntentScore(i, s) for i, s in scores.items() if s > 0]
    ranked.sort(key=lambda x: (-x.score, INTENTS.index(x.intent)))
    return ranked or [IntentScore("unknown", 0.0)]


def faq_match(text: str, faq: Sequence[FaqEntry]) -> tuple[int | None, int]:
    """The FAQ entry whose question shares the most content words with ``text``.

    Returns:
        ``(index, overlap)``; index is None unless at least two content words, and half of the question's,
        are shared.
    """
    said = {t for t in key_tokens(text) if t not in _STOP}
    best: tuple[int | None, int] = (None, 0)
    for i, entry in enumerate(faq):
        words = {t for t in key_tokens(entry.question) if t not in _STOP}
        overlap = len(words & said)
        if overlap >= 2 and overlap * 2 >= len(words) and overlap > best[1]:
            best = (i, overlap)
    return best


def yes_or_no(text: str) -> bool | None:
    """True for a yes, False for a no, None when neither (or both at the same position) is said."""
    said = key_tokens(text)
    yes = min((i for p in _YES if (i := find_phrase(said, p)) >= 0), default=None)
    no = min((i for p in _NO if (i := find_phrase(said, p)) >= 0), default=None)
    if yes is None and no is None:
        return None
    if no is None:
        return True
    if yes is None:
        return False
    return yes < no if yes != no else None


def is_correction(text: str) -> bool:
    """Whether the caller says what was read back to them is wrong ("no, that's the wrong number", "no, it's
    one zero zero two four", "i said ..."); a ZIP code or email given after a "no" is an answer, not a correction."""
    said = key_tokens(text)
    if _NOT_A_CORRECTION.intersection(said):
        return False
    if any(find_phrase(said, p) >= 0 for p in _CORRECTIONS):
        return True
    return yes_or_no(text) is False and longest_digit_run(text, min_len=3) is not None


_ORDINALS: Final[dict[str, int]] = {
    "first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3, "last": -1,
}  # fmt: skip


def ordinal_choice(text: str, count: int) -> int | None:
    """The position ("the first one", "the second", "the last one") a caller picked among ``count`` options
    read out to them, if any and in range."""
    for word in tokens(text):
        if word in _ORDINALS:
            index = _ORDINALS[word] % count if count else 0
            return index if count and _ORDINALS[word] < count else None
    return None


def extract_email(text: str) -> str | None:
    """An email address written ("dana@example.com") or spoken ("dana at example dot com"), lower-cased."""
    written = _EMAIL.search(text.lower())
    if written:
        return written.group(0).strip(".")
    words = normalize(text).split()
    if "at" not in words:
        return None
    at = len(words) - 1 - words[::-1].index("at")
    if at == 0 or at == len(words) - 1:
        return None
    local = [words[at - 1]]
    i = at - 2
    while i >= 1 and words[i] in _CONNECTORS:
        local[:0] = [words[i - 1], _CONNECTORS[words[i]]]
        i -= 2
    domain = [words[at + 1]]
    j = at + 2
    while j + 1 < len(words) and words[j] in _CONNECTORS:
        domain += [_CONNECTORS[words[j]], words[j + 1]]
        j += 2
    if "." not in domain:
        return None
    return "".join(local) + "@" + "".join(domain)


def extract_zip(text: str) -> str | None:
    """The longest run of spoken or written digits (3 or more) in ``text``, e.g. a ZIP code."""
    return longest_digit_run(text, min_len=3, homophones=True)


def mentioned_countries(text: str) -> list[str]:
    """ISO codes of countries named in ``text``."""
    said = tokens(text)
    return [code for name, code in _COUNTRY_WORDS.items() if find_phrase(said, name.split()) >= 0]
