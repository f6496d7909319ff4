"""Changing an order's shipping address: only before it ships, taken as spoken, read back and confirmed.

Invariants:
- Only reached for a verified caller's order (see :mod:`._orders`), and the order's customer is checked again
  before the change is made.
- The address is what the caller said, with spoken numbers written as digits ("one twenty three main street"
  -> "123 main street") and lead-ins dropped ("my new address is"); it must hold a number (a house number or
  ZIP code) and at least three words. It is read back (numbers digit by digit) and changed only after a yes,
  through :meth:`Store.change_address`, whose refusal (the order shipped meanwhile) is explained, never hidden.
- Two unusable or rejected addresses for one order offer a person (or a message, outside hours).
"""

from __future__ import annotations

import zlib
from typing import Final

from voxcart.brain.dialog._state import Reply
from voxcart.brain.dialog._turn import Turn
from voxcart.brain.nlu import yes_or_no
from voxcart.brain.phrasing import say_day, say_order_number
from voxcart.brain.store import ActionRefused, OrderNotFound
from voxcart.brain.text import tokens
from voxcart.common.seed import Order
from voxcart.common.spoken_numbers import numbers_to_digits, spoken_digits

__all__ = ["address_flow", "address_key", "on_address_answer", "on_new_address", "say_address", "written_address"]

_ASK: Final = "What's the new shipping address? Please say the street address, the city and the ZIP code."
_LEAD_INS: Final = [
    "my new address is", "the new address is", "new address is", "the address is", "my address is", "address is",
    "please send it to", "please ship it to", "send it to", "ship it to", "deliver it to", "it should go to",
    "it is", "it's", "that is", "yes", "yeah", "okay", "ok", "so", "um", "uh", "no", "sorry", "actually",
]  # fmt: skip
_MIN_WORDS: Final = 3


def written_address(text: str) -> str | None:
    """The address in what the caller said, numbers as digits; None when it cannot be an address."""
    words = numbers_to_digits(tokens(text), digits_expected=True)
    stripped = True
    while stripped and words:
        stripped = False
        for lead in _LEAD_INS:
            n = len(lead.split())
            if words[:n] == lead.split():
                words, stripped = words[n:], True
                break
    if len(words) < _MIN_WORDS or not any(w[0].isdigit() for w in words):
        return None
    return " ".join(words)


def address_key(call_id: str, number: str, address: str) -> str:
    """The idempotency key of changing order ``number`` to ``address`` in call ``call_id`` (rules and LLM mode
    alike, so one change is never made twice in a call)."""
    return f"{call_id or 'call'}:address:{number}:{zlib.crc32(address.encode()):08x}"


def say_address(address: str) -> str:
    """An address read back: numbers of three or more digits one digit at a time ("1 2 3 main street")."""
    return " ".join(spoken_digits(w) if w.isdigit() and len(w) >= 3 else w for w in address.split())


def address_flow(turn: Turn, order: Order, prefix: list[str]) -> Reply:
    """Tell a verified caller whether ``order``'s address can still change, and ask for the new one."""
    st = turn.state
    st.job = "change_address"
    number = say_order_number(order.number)
    if order.status == "processing":
        st.new_address = None
        return turn.reply(
            [*prefix, f"Order {number} hasn't shipped yet, so I can still change where it goes."],
            "change_address",
            ask=[_ASK],
            pending="new_address",
            expect="address",
        )
    if order.status == "shipped":
        carrier = f" with {order.carrier}" if order.carrier else ""
        return turn.offer_human(
            [*prefix, f"Order {number} has already shipped{carrier}, so I can't change its address anymore."],
            "change_address",
        )
    if order.status == "delivered":
        when = f" {say_day(order.delivered, today=turn.today)}" if order.delivered else ""
        return turn.finish([*prefix, f"Order {number} was already delivered{when}."], "change_address")
    if order.status == "cancelled":
        return turn.finish([*prefix, f"Order {number} was cancelled, so there's nothing to send."], "change_address")
    return turn.finish([*prefix, f"Order {number} was returned, so there's nothing to send."], "change_address")


def on_new_address(turn: Turn, text: str) -> Reply:
    """The caller said the new address: read it back and ask them to confirm it."""
    st = turn.state
    address = written_address(text)
    if address is None:
        if yes_or_no(text) is False:
            st.new_address = None
            return turn.finish(["Okay, I'll leave the address as it is."], "change_address")
        return _again(turn, ["Sorry, I didn't get the whole address."])
    st.new_address = address
    return turn.reply(
        [f"I have {say_address(address)}."],
        "change_address",
        ask=["Is that right?"],
        pending="confirm_address",
        expect="yes_no",
    )


def on_address_answer(turn: Turn, text: str) -> Reply | None:
    """The answer to "is that right?" after the read-back; a "no" with an address in it is a corrected address.

    Returns:
        None when the answer is neither yes, no, nor an address.
    """
    st = turn.state
    answer = yes_or_no(text)
    if answer is True and written_address(text) is None:
        return _change(turn)
    if written_address(text) is not None:
        return on_new_address(turn, text)
    if answer is False:
        return _again(turn, ["Sorry about that."])
    return None if st.new_address else _again(turn, [])


def _again(turn: Turn, sentences: list[str]) -> Reply:
    st = turn.state
    st.address_attempts += 1
    st.new_address = None
    if st.address_attempts >= 2:
        st.address_attempts = 0
        return turn.offer_human(["I'm sorry, I couldn't get the address right."], "change_address")
    return turn.reply(
        sentences,
        "change_address",
        ask=["Please say the new address again: the street address, the city and the ZIP code."],
        pending="new_address",
        expect="address",
    )


def _change(turn: Turn) -> Reply:
    st = turn.state
    order = turn.store.get_order(st.order_number or "")
    address = st.new_address
    if order is None or address is None or not turn.is_verified(order.customer):
        return turn.finish(["I'm sorry, I can't change that order."], "change_address")
    key = address_key(st.call_id, order.number, address)
    try:
        turn.store.change_address(order.number, address, key=key)
    except ActionRefused:
        fresh = turn.store.get_order(order.number) or order
        return address_flow(turn, fresh, [])
    except OrderNotFound:
        return turn.finish(["I'm sorry, I can't find that order anymore."], "change_address")
    st.new_address = None
    st.address_attempts = 0
    number = say_order_number(order.number)
    return turn.finish([f"Done. Order {number} will ship to {say_address(address)}."], "change_address")
