"""The rules of the store's actions (start a return, cancel an order), shared by every store implementation.

Invariants: a store reads what these functions need inside its transaction (or under its lock), calls them,
and writes only what they decide; so every backend refuses the same things with the same ``reason`` codes
(:class:`~voxcart.brain.store.ActionRefused`), and return eligibility is :func:`check_return`'s verdict.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from voxcart.brain.store._base import ActionRefused, OrderNotFound
from voxcart.brain.store._policy import check_return
from voxcart.common.seed import Order, OrderItem, Policies, Product, Return

__all__ = ["must_cancel", "new_return", "reuse_return", "returnable_item"]


def reuse_return(existing: Return | None, order_number: str, sku: str, key: str) -> Return | None:
    """The return already made with ``key``, if any.

    Raises:
        ActionRefused: ``key_reused``: the key was used for a return of another order or item.
    """
    if existing is not None and (existing.order != order_number or existing.sku != sku):
        raise ActionRefused("key_reused", f"return key {key!r} was used for {existing.id}")
    return existing


def returnable_item(
    order: Order | None,
    order_number: str,
    sku: str,
    product: Product | None,
    policies: Policies,
    today: dt.date,
    returns: list[Return],
) -> OrderItem:
    """The order's item ``sku`` when it can be returned today.

    Args:
        order: the order as read (None when there is none).
        order_number: the number asked for.
        sku: the item to return.
        product: the item's product (for its category).
        policies: the store's policies.
        today: today in the store's timezone.
        returns: the returns already filed against the order.

    Raises:
        OrderNotFound: no such order.
        ActionRefused: ``not_in_order`` or the verdict of :func:`check_return`.
    """
    if order is None:
        raise OrderNotFound(order_number)
    items = [item for item in order.items if item.sku == sku]
    if not items:
        raise ActionRefused("not_in_order", f"{sku!r} is not an item of order {order_number!r}")
    check = check_return(order, sku, product, policies, today, returns)
    if not check.eligible:
        raise ActionRefused(check.verdict, f"{sku!r} of order {order_number!r}: {check.verdict}")
    return items[0]


def new_return(order_number: str, item: OrderItem, today: dt.date, seq: int, taken: Iterable[str]) -> Return:
    """The return a store creates: id ``R<n>`` (``n`` from ``seq + 1``, skipping ``taken`` ids), ``requested``.

    Args:
        order_number: the order.
        item: the item returned (its price times quantity is the refund).
        today: the ``updated`` date.
        seq: the new return's position among all returns (0 for the first).
        taken: every return id already in the store.
    """
    used = set(taken)
    n = seq + 1
    while f"R{n}" in used:
        n += 1
    return Return(
        id=f"R{n}",
        order=order_number,
        sku=item.sku,
        status="requested",
        refund_amount=round(item.price * item.qty, 2),
        updated=today,
    )


def must_cancel(order: Order) -> bool:
    """Whether ``order`` is to be cancelled now (False: it already is; it is returned unchanged).

    Raises:
        ActionRefused: ``not_processing``: it has shipped, been delivered or returned.
    """
    if order.status == "cancelled":
        return False
    if order.status != "processing":
        raise ActionRefused("not_processing", f"order {order.number!r} is {order.status}; it can't be cancelled")
    return True
