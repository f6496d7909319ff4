"""The rules of the store's caller requests (change an order's address, leave a message), shared by every store.

Invariants: like :mod:`._actions`, a store reads what these functions need inside its transaction (or under its
lock), calls them, and writes only what they decide, so every backend refuses the same things with the same
``reason`` codes; an address can change only while the order is ``processing``; addresses and messages are kept
as given, with runs of whitespace collapsed, and neither may be empty.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from voxcart.brain.store._base import ActionRefused, AddressChange, Message, OrderNotFound
from voxcart.common.seed import Order

__all__ = ["address_change", "clean_text", "new_message", "reuse_address_change", "reuse_message"]


def clean_text(text: str, what: str) -> str:
    """``text`` with whitespace collapsed.

    Raises:
        ActionRefused: ``empty``: nothing but whitespace (``what`` names the field in the message).
    """
    cleaned = " ".join(text.split())
    if not cleaned:
        raise ActionRefused("empty", f"the {what} is empty")
    return cleaned


def reuse_address_change(existing: AddressChange | None, number: str, address: str, key: str) -> AddressChange | None:
    """The change already made with ``key``, if any.

    Raises:
        ActionRefused: ``key_reused``: the key was used for another order or another address.
    """
    if existing is not None and (existing.order != number or existing.address != address):
        raise ActionRefused("key_reused", f"address key {key!r} was used for order {existing.order!r}")
    return existing


def address_change(order: Order | None, number: str, address: str, today: dt.date) -> AddressChange:
    """The change to make: only an order still being prepared can be sent elsewhere.

    Args:
        order: the order as read (None when there is none).
        number: the number asked for.
        address: the new address, already cleaned with :func:`clean_text`.
        today: today in the store's timezone.

    Raises:
        OrderNotFound: no such order.
        ActionRefused: ``cancelled``, or ``not_processing`` (shipped, delivered or returned).
    """
    if order is None:
        raise OrderNotFound(number)
    if order.status == "cancelled":
        raise ActionRefused("cancelled", f"order {number!r} is cancelled; its address can't be changed")
    if order.status != "processing":
        raise ActionRefused("not_processing", f"order {number!r} is {order.status}; its address can't be changed")
    return AddressChange(order=number, address=address, changed=today)


def reuse_message(existing: Message | None, text: str, key: str) -> Message | None:
    """The message already left with ``key``, if any.

    Raises:
        ActionRefused: ``key_reused``: the key was used for a different message.
    """
    if existing is not None and existing.text != text:
        raise ActionRefused("key_reused", f"message key {key!r} was used for {existing.id}")
    return existing


def new_message(
    caller_number: str, text: str, order_number: str | None, now: dt.datetime, seq: int, taken: Iterable[str]
) -> Message:
    """The message a store records: id ``M<n>`` (``n`` from ``seq + 1``, skipping ``taken`` ids).

    Args:
        caller_number: the number to call back ("" when unknown).
        text: the message, already cleaned with :func:`clean_text`.
        order_number: the order the call was about, if any.
        now: when it was left (timezone-aware).
        seq: the new message's position among all messages (0 for the first).
        taken: every message id already in the store.
    """
    used = set(taken)
    n = seq + 1
    while f"M{n}" in used:
        n += 1
    return Message(
        id=f"M{n}", caller_number=caller_number.strip(), text=text, created=now, order_number=order_number or None
    )
