"""Store policies: shipping, opening hours, returns, and the shop's FAQ.

Invariants: answers come only from the store's seed (nothing invented); a policy the store did not give is
said to be unknown rather than guessed; no identity is needed.
"""

from __future__ import annotations

from typing import Final

from voxcart.brain.dialog._state import Reply
from voxcart.brain.dialog._turn import Turn
from voxcart.brain.hours import parse_hours
from voxcart.brain.nlu import faq_match, mentioned_countries
from voxcart.brain.phrasing import country_name, join_and, say_price, split_sentences
from voxcart.brain.text import tokens

__all__ = ["faq", "hours", "return_policy", "shipping"]

_NOW: Final = frozenset({"now", "currently", "still", "today", "tonight", "yet"})
"""Words that ask whether the shop is open at this moment."""


def shipping(turn: Turn, text: str) -> Reply:
    """Shipping methods, times and prices, and where the shop ships."""
    policies = turn.store.policies
    ships_to = [c.upper() for c in policies.ships_to]
    sentences: list[str] = []
    asked = [c for c in mentioned_countries(text) if ships_to]
    for code in asked:
        if code in ships_to:
            sentences.append(f"Yes, we ship to {country_name(code)}.")
        else:
            sentences.append(f"I'm sorry, we don't ship to {country_name(code)}.")
    for option in policies.shipping:
        price = "is free" if option.price == 0 else f"costs {say_price(option.price)}"
        sentences.append(f"{option.method.capitalize()} shipping takes {option.days} and {price}.")
    if not policies.shipping:
        sentences.append("I don't have our shipping times in front of me.")
    if ships_to and (not asked or any(c not in ships_to for c in asked)):
        sentences.append(f"We ship to {join_and([country_name(c) for c in ships_to])}.")
    return turn.finish(sentences, "shipping")


def hours(turn: Turn, text: str = "") -> Reply:
    """Opening hours, as the store wrote them; asked "are you open now?", whether the shop is open right now."""
    written = turn.store.info.hours
    sentences = [f"We're open {written}."] if written else ["I'm sorry, I don't have our opening hours."]
    parsed = parse_hours(written)
    if parsed is not None and turn.now is not None and _NOW.intersection(tokens(text)):
        sentences.insert(0, "Yes, we're open right now." if parsed.is_open(turn.now) else "We're closed right now.")
    return turn.finish(sentences, "hours")


def return_policy(turn: Turn) -> Reply:
    """The return window, conditions, exclusions and refund time."""
    policies = turn.store.policies
    sentences = [f"You can return items within {policies.return_window_days} days of delivery."]
    if policies.returnable_conditions:
        sentences.append(f"They need to be {' and '.join(policies.returnable_conditions)}.")
    if policies.non_returnable_categories:
        sentences.append(f"We can't accept returns of {join_and(policies.non_returnable_categories)}.")
    if policies.refund_days:
        sentences.append(f"Refunds take {policies.refund_days} after we receive the item.")
    return turn.finish(sentences, "return_policy")


def faq(turn: Turn, text: str) -> Reply | None:
    """The answer to the FAQ entry the caller asked, if one matches."""
    entries = turn.store.policies.faq
    index, _ = faq_match(text, entries)
    if index is None:
        return None
    return turn.finish(split_sentences(entries[index].answer), "faq")
