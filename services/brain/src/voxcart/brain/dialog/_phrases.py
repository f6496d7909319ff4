"""Sentences about orders, items, variants and returns, built from the store's data.

Invariants: only called for orders whose customer is verified (the callers check); every sentence is short,
plain and speakable (see :mod:`voxcart.brain.phrasing`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from voxcart.brain.dialog._turn import Turn
from voxcart.brain.phrasing import join_and, say_date, say_day, say_order_number, say_price, say_size
from voxcart.common.seed import Order, Return, Variant

__all__ = ["describe_items", "describe_variant", "item_name", "return_sentences", "status_sentences"]

_ONE_SIZE = {"os", "one size", "onesize"}


def describe_variant(variant: Variant) -> str:
    """The variant after a product name: " in blue, size medium", " in blue", " in size 10" or ""."""
    size = variant.size if variant.size and variant.size.strip().lower() not in _ONE_SIZE else None
    if variant.color and size:
        return f" in {variant.color}, size {say_size(size)}"
    if variant.color:
        return f" in {variant.color}"
    return f" in size {say_size(size)}" if size else ""


def item_name(turn: Turn, sku: str) -> str:
    """The product name of an item ("Trail Hoodie"), or the SKU spelled out if unknown."""
    product = turn.store.product_for_sku(sku)
    return product.name if product else f"item {say_order_number(sku)}"


def _plural(name: str) -> str:
    if name.endswith("s"):
        return name
    if name.endswith("y") and name[-2:-1] not in tuple("aeiou"):
        return name[:-1] + "ies"
    return name + "s"


def describe_items(turn: Turn, order: Order) -> str:
    """ "the Trail Hoodie in blue, size medium, and 2 Everyday Tees in black, size medium"."""
    parts = []
    for item in order.items:
        product = turn.store.product_for_sku(item.sku)
        if product is None:
            parts.append(f"item {say_order_number(item.sku)}")
            continue
        variant = next((v for v in product.variants if v.sku == item.sku), None)
        detail = describe_variant(variant) if variant else ""
        if item.qty == 1:
            parts.append(f"the {product.name}{detail}")
        else:
            parts.append(f"{item.qty} {_plural(product.name)}{detail}")
    if len(parts) > 2:
        return join_and(parts)
    return " and ".join(parts)


def status_sentences(turn: Turn, order: Order) -> list[str]:
    """Where an order is: status, dates, carrier (tracking is added by the caller of this)."""
    today = turn.today
    number = say_order_number(order.number)
    items = f"It has {describe_items(turn, order)}."
    if order.status == "processing":
        placed = say_day(order.placed, today=today)
        sentences = [f"Order {number} was placed {placed} and is being prepared.", items, "It hasn't shipped yet."]
        shipping = turn.store.policies.shipping
        if order.eta is not None and order.eta >= today:
            sentences.append(_eta(order.eta, today))
        elif shipping:
            sentences.append(f"Once it ships, {shipping[0].method} shipping takes {shipping[0].days}.")
        return sentences
    if order.status == "shipped":
        carrier = f" with {order.carrier}" if order.carrier else ""
        sentences = [f"Order {number} has shipped{carrier}.", items]
        if order.eta is not None:
            if order.eta >= today:
                sentences.append(_eta(order.eta, today))
            else:
                sentences.append(f"It was due on {say_date(order.eta, today=today)}, so it's running late.")
        return sentences
    if order.status == "delivered":
        when = f" {say_day(order.delivered, today=today)}" if order.delivered else ""
        return [f"Order {number} was delivered{when}.", items]
    if order.status == "cancelled":
        return [f"Order {number} was cancelled, so it won't be shipped.", items]
    returns = turn.store.returns_for_order(order.number)
    return [f"Order {number} was returned.", *return_sentences(turn, returns)]


def _eta(eta: dt.date, today: dt.date) -> str:
    if eta == today:
        return "It's due to arrive today."
    spoken = say_date(eta, today=today)
    return f"It should arrive {spoken if spoken == 'tomorrow' else f'on {spoken}'}."


def return_sentences(turn: Turn, returns: Sequence[Return]) -> list[str]:
    """Where each return stands, including its refund."""
    sentences: list[str] = []
    refund_days = turn.store.policies.refund_days
    for ret in returns:
        name = item_name(turn, ret.sku)
        on = say_day(ret.updated, today=turn.today)
        amount = f" of {say_price(ret.refund_amount)}" if ret.refund_amount is not None else ""
        if ret.status == "refunded":
            sentences.append(f"Your return of the {name} was refunded {on}.")
            if ret.refund_amount is not None:
                sentences.append(f"The refund was {say_price(ret.refund_amount)}, back to your original payment.")
        elif ret.status == "received":
            sentences.append(f"We received your return of the {name} {on}.")
            wait = f" within {refund_days}" if refund_days else " soon"
            sentences.append(f"Your refund{amount} should arrive{wait}.")
        elif ret.status == "in_transit":
            sentences.append(f"Your return of the {name} is on its way back to us.")
            if refund_days:
                sentences.append(f"Once it arrives, your refund{amount} takes {refund_days}.")
        elif ret.status in ("requested", "pending", "approved"):
            sentences.append(f"Your return of the {name} was opened {on}.")
            sentences.append("We're waiting to receive the item; please send it with the label we emailed you.")
        elif ret.status == "rejected":
            sentences.append(f"Your return of the {name} wasn't accepted.")
        else:
            sentences.append(f"The return of the {name} was cancelled.")
    return sentences
