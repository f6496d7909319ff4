"""Return rules, as pure functions of an order, its products, the policies and today's date.

Invariants: an item is returnable only when its order was delivered, today is no later than
``delivered + return_window_days`` (the last day counts), its product's category is not one of the
policy's non-returnable categories (compared case- and plural-insensitively), and no open return exists for
it. Every store implementation and the dialog use these functions, so what the caller is told is what the
store enforces.
"""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal

import msgspec

from voxcart.brain.text import key_tokens
from voxcart.common.seed import Order, Policies, Product, Return

__all__ = ["CLOSED_RETURN_STATUSES", "ReturnCheck", "ReturnVerdict", "check_return", "open_return_for"]

ReturnVerdict = Literal[
    "ok", "not_delivered", "window_closed", "non_returnable", "cancelled", "already_returned", "has_return"
]

CLOSED_RETURN_STATUSES: Final = frozenset({"rejected", "cancelled"})
"""Return statuses that do not block a new return of the same item."""


class ReturnCheck(msgspec.Struct, frozen=True, kw_only=True):
    """Whether one item of an order can be returned today, and why not."""

    sku: str
    verdict: ReturnVerdict
    deadline: dt.date | None = None
    """Last day a return is accepted (delivered orders only)."""
    category: str = ""

    @property
    def eligible(self) -> bool:
        """True when the item can be returned today."""
        return self.verdict == "ok"


def _is_non_returnable(category: str, policies: Policies) -> bool:
    key = key_tokens(category)
    return bool(key) and any(key_tokens(c) == key for c in policies.non_returnable_categories)


def open_return_for(returns: list[Return], sku: str) -> Return | None:
    """The return of ``sku`` that is still open or done (not rejected or cancelled), if any."""
    for ret in returns:
        if ret.sku == sku and ret.status not in CLOSED_RETURN_STATUSES:
            return ret
    return None


def check_return(
    order: Order, sku: str, product: Product | None, policies: Policies, today: dt.date, returns: list[Return]
) -> ReturnCheck:
    """Decide whether ``sku`` of ``order`` can be returned on ``today``.

    Args:
        order: the order the item belongs to.
        sku: the item.
        product: the item's product (for its category), if known.
        policies: the store's policies.
        today: today's date in the store's timezone.
        returns: the returns already filed against the order.

    Returns:
        The verdict, with the deadline when the order was delivered.
    """
    category = product.category if product else ""
    deadline = None
    if order.delivered is not None:
        deadline = order.delivered + dt.timedelta(days=policies.return_window_days)
    if order.status == "cancelled":
        verdict: ReturnVerdict = "cancelled"
    elif order.status == "returned":
        verdict = "already_returned"
    elif order.status != "delivered" or order.delivered is None:
        verdict = "not_delivered"
    elif open_return_for(returns, sku) is not None:
        verdict = "has_return"
    elif _is_non_returnable(category, policies):
        verdict = "non_returnable"
    elif deadline is not None and today > deadline:
        verdict = "window_closed"
    else:
        verdict = "ok"
    return ReturnCheck(sku=sku, verdict=verdict, deadline=deadline, category=category)
