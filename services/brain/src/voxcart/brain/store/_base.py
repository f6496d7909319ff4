"""The store interface the dialog talks to, and the clock it reads "today" from.

Invariants:
- Every implementation (embedded SQLite, PostgreSQL; commerce APIs later) returns the seed's Structs
  (:mod:`voxcart.common.seed`), so the dialog never sees rows or JSON.
- "Today" is ``clock()`` converted to the store's timezone; nothing reads the wall clock directly.
- Actions are safe to repeat: :meth:`Store.create_return`, :meth:`Store.change_address` and
  :meth:`Store.leave_message` are idempotent by their key, and cancelling an order that is already cancelled
  returns it unchanged. Refusals are :class:`ActionRefused` with a stable ``reason`` code, never a silent no-op.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Protocol
from zoneinfo import ZoneInfo

import msgspec

from voxcart.common.seed import Customer, Order, Policies, Product, Return, StoreInfo, Variant

__all__ = [
    "ActionRefused",
    "AddressChange",
    "Clock",
    "FixedClock",
    "Message",
    "OrderNotFound",
    "ProductMatch",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "system_clock",
]

Clock = Callable[[], dt.datetime]
"""Returns the current instant as a timezone-aware datetime."""


def system_clock() -> dt.datetime:
    """The wall clock, in UTC."""
    return dt.datetime.now(dt.UTC)


class FixedClock:
    """A clock that says what it is told; for tests and for demos pinned to a date.

    Args:
        now: the instant to report (must be timezone-aware).
    """

    def __init__(self, now: dt.datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware datetime")
        self.now = now

    @classmethod
    def on(cls, day: dt.date, timezone: str, hour: int = 12) -> FixedClock:
        """A clock at ``hour`` o'clock on ``day`` in ``timezone`` (an IANA name)."""
        return cls(dt.datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(timezone)))

    def advance(self, *, days: int = 0, seconds: float = 0.0) -> None:
        """Move the clock forward."""
        self.now += dt.timedelta(days=days, seconds=seconds)

    def __call__(self) -> dt.datetime:
        return self.now


class StoreError(Exception):
    """A store operation failed."""


class StoreUnavailable(StoreError):
    """The store's database cannot be used: unreachable, refusing the login, or not holding a store.

    The message says where (host, port, database) and what to do; it never contains a password.
    """


class OrderNotFound(StoreError, LookupError):
    """No order has this number."""

    def __init__(self, number: str) -> None:
        super().__init__(f"no order {number!r}")
        self.number = number


class ActionRefused(StoreError):
    """An action the store's rules do not allow.

    Attributes:
        reason: a stable code: ``not_processing`` (cancel or address change after shipping), ``not_in_order``,
            ``not_delivered``, ``window_closed``, ``non_returnable``, ``cancelled``, ``already_returned``,
            ``has_return``, ``key_reused``, ``empty`` (an address or message with no words).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ProductMatch(msgspec.Struct, frozen=True, kw_only=True):
    """A product the caller may have meant."""

    product: Product
    score: float
    """Higher is better; a whole name or alias scores above any partial match."""
    phrase: str
    """The name or alias that matched."""
    exact: bool
    """A whole name or alias occurred in the text."""


class AddressChange(msgspec.Struct, frozen=True, kw_only=True):
    """A new shipping address set on an order by :meth:`Store.change_address`."""

    order: str
    """The order number."""
    address: str
    """The address as the caller gave it (spoken words, numbers as digits: "12 oak lane portland 97205")."""
    changed: dt.date
    """The store's date of the change."""


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A message a caller left for the team (outside opening hours), for someone to call back."""

    id: str
    caller_number: str
    """The number to call back (E.164 or digits as given); "" when withheld and not given."""
    text: str
    """The message, as recognized."""
    created: dt.datetime
    """When it was left (timezone-aware, the store's clock)."""
    order_number: str | None = None
    """The order the call was about, if one was discussed and verified."""


class Store(Protocol):
    """Everything the dialog reads and does; implementations must follow the module invariants."""

    @property
    def info(self) -> StoreInfo:
        """The shop (name, timezone, hours, handoff number)."""
        ...

    @property
    def policies(self) -> Policies:
        """Return, refund and shipping policies, and the FAQ."""
        ...

    @property
    def clock(self) -> Clock:
        """The clock "today" is read from."""
        ...

    def today(self) -> dt.date:
        """Today's date in the store's timezone."""
        ...

    def get_order(self, number: str) -> Order | None:
        """The order with this number, if any."""
        ...

    def orders_for_customer(self, customer_id: str) -> list[Order]:
        """A customer's orders, newest first."""
        ...

    def get_customer(self, customer_id: str) -> Customer | None:
        """The customer with this id, if any."""
        ...

    def customer_by_phone(self, phone: str) -> Customer | None:
        """The customer whose phone matches ``phone`` (compared by digits; a missing +1 is tolerated)."""
        ...

    def products(self) -> list[Product]:
        """The whole catalogue, in seed order."""
        ...

    def get_product(self, product_id: str) -> Product | None:
        """The product with this id, if any."""
        ...

    def product_for_sku(self, sku: str) -> Product | None:
        """The product one of whose variants has this SKU."""
        ...

    def find_products(self, text: str) -> list[ProductMatch]:
        """Products named in spoken or typed ``text`` (name or alias, any case, plural or singular), best first."""
        ...

    def variants(self, product_id: str, *, color: str | None = None, size: str | None = None) -> list[Variant]:
        """A product's variants, optionally only those of ``color`` and/or ``size`` (case-insensitive)."""
        ...

    def returns_for_order(self, number: str) -> list[Return]:
        """Returns filed against an order, oldest first."""
        ...

    def create_return(self, order_number: str, sku: str, *, key: str) -> Return:
        """Start a return of one item; repeating with the same ``key`` returns the same return.

        Raises:
            OrderNotFound: no such order.
            ActionRefused: the item is not in the order, or not returnable today, or already being returned.
        """
        ...

    def cancel_order(self, number: str) -> Order:
        """Cancel an order that is still processing; an already cancelled order is returned unchanged.

        Raises:
            OrderNotFound: no such order.
            ActionRefused: ``not_processing``: it has shipped, been delivered or returned.
        """
        ...

    def change_address(self, number: str, address: str, *, key: str) -> AddressChange:
        """Set a new shipping address on an order that has not shipped; repeating with the same ``key`` returns
        the first change.

        Args:
            number: the order number.
            address: the new address as one line of words (leading/trailing space is dropped).
            key: idempotency key (the dialog derives it from the call and the order).

        Raises:
            OrderNotFound: no such order.
            ActionRefused: ``not_processing`` (shipped, delivered or returned), ``cancelled``, ``empty`` (no
                address), or ``key_reused`` (the key was used for another order or address).
        """
        ...

    def address_changes(self, number: str) -> list[AddressChange]:
        """The address changes made to an order, oldest first (the last one is where it ships)."""
        ...

    def leave_message(self, caller_number: str, text: str, *, key: str, order_number: str | None = None) -> Message:
        """Record a caller's message for the team; repeating with the same ``key`` returns the first message.

        Args:
            caller_number: the number to call back ("" when unknown).
            text: the message.
            key: idempotency key (the dialog derives it from the call).
            order_number: the order the call was about, if any.

        Raises:
            ActionRefused: ``empty`` (no words), or ``key_reused`` (the key was used for a different message).
        """
        ...

    def messages(self) -> list[Message]:
        """Every message left by callers, oldest first."""
        ...
