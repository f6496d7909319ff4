"""The store seed format (``docs/store.md``): typed Structs, parsing and validation.

A seed is the whole of a shop's data in one JSON file: the store, its policies, products with variants and
stock, customers, orders and returns. It is a contract: a shop hands voxcart its own file, and tests hand it
stores voxcart has never seen.

Invariants of a :class:`Seed` returned by :func:`parse_seed` / :func:`load_seed`:

- Unknown fields are ignored; every known field has the documented type (dates are ``datetime.date``).
- Identifiers are unique: product ids, variant SKUs, customer ids, order numbers, return ids.
- References resolve: an order's ``customer`` is a customer id, every item SKU is a variant SKU, a return's
  ``order`` is an order number and its ``sku`` is an item of that order.
- An order number is a string of digits; an order's ``status`` is one of :data:`ORDER_STATUSES`; a
  ``delivered`` order has a ``delivered`` date, and no date of an order is before its ``placed`` date.
- Phone numbers are E.164 (``+15555550123``); the store's ``timezone`` is a known IANA zone.
- Counts (stock, quantities) are at most 10**9 and ``return_window_days`` at most 3650.

Anything else is refused with a :class:`SeedError` (and nothing but a :class:`SeedError`, whatever the bytes)
whose message names the source and the JSON path of the offending field, e.g.
``store.json: $.orders[2].status: expected one of processing, shipped, ...``.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Final, Literal, get_args

import msgspec

__all__ = [
    "ORDER_STATUSES",
    "RETURN_STATUSES",
    "Customer",
    "FaqEntry",
    "Order",
    "OrderItem",
    "OrderStatus",
    "Policies",
    "Product",
    "Return",
    "ReturnStatus",
    "Seed",
    "SeedError",
    "ShippingOption",
    "StoreInfo",
    "Variant",
    "load_seed",
    "parse_seed",
]

OrderStatus = Literal["processing", "shipped", "delivered", "cancelled", "returned"]
"""Where an order is in its life."""

ReturnStatus = Literal[
    "requested", "pending", "approved", "in_transit", "received", "refunded", "rejected", "cancelled"
]
"""Where a return is: asked for, on its way back, received, refunded (or rejected / cancelled)."""

ORDER_STATUSES: Final[tuple[str, ...]] = get_args(OrderStatus)
RETURN_STATUSES: Final[tuple[str, ...]] = get_args(ReturnStatus)

# Counts are bounded: a bigger int does not fit SQLite's INTEGER (the store would fail to load), and a return
# window beyond ~10 years overflows the deadline's date arithmetic.
_NonNegInt = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
_PosInt = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]
_Days = Annotated[int, msgspec.Meta(ge=0, le=3650)]
_Money = Annotated[float, msgspec.Meta(ge=0)]
_Text = Annotated[str, msgspec.Meta(min_length=1)]


class SeedError(ValueError):
    """A seed file that cannot be used; the message names the source and the field path."""


class StoreInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The shop itself."""

    name: _Text
    timezone: _Text
    """IANA zone (``America/New_York``); "today" is the store's clock in this zone."""
    hours: str | None = None
    """Opening hours as they should be spoken ("Monday to Friday, 9 am to 6 pm")."""
    handoff_number: str | None = None
    """E.164 number a caller is transferred to when they ask for a person."""


class ShippingOption(msgspec.Struct, frozen=True, kw_only=True):
    method: _Text
    days: _Text
    """Spoken delivery time ("3 to 5 business days")."""
    price: _Money


class FaqEntry(msgspec.Struct, frozen=True, kw_only=True):
    question: _Text
    answer: _Text


class Policies(msgspec.Struct, frozen=True, kw_only=True):
    return_window_days: _Days
    """Days after delivery during which an item may be returned."""
    returnable_conditions: list[str] = msgspec.field(default_factory=list)
    non_returnable_categories: list[str] = msgspec.field(default_factory=list)
    refund_days: str | None = None
    shipping: list[ShippingOption] = msgspec.field(default_factory=list)
    ships_to: list[str] = msgspec.field(default_factory=list)
    """ISO 3166 country codes."""
    faq: list[FaqEntry] = msgspec.field(default_factory=list)


class Variant(msgspec.Struct, frozen=True, kw_only=True):
    sku: _Text
    color: str | None = None
    size: str | None = None
    stock: _NonNegInt = 0
    restock_date: dt.date | None = None


class Product(msgspec.Struct, frozen=True, kw_only=True):
    id: _Text
    name: _Text
    category: str = ""
    price: _Money
    aliases: list[str] = msgspec.field(default_factory=list)
    variants: Annotated[list[Variant], msgspec.Meta(min_length=1)]


class Customer(msgspec.Struct, frozen=True, kw_only=True):
    id: _Text
    name: _Text
    phone: str | None = None
    email: str | None = None
    zip: str | None = None


class OrderItem(msgspec.Struct, frozen=True, kw_only=True):
    sku: _Text
    qty: _PosInt = 1
    price: _Money


class Order(msgspec.Struct, frozen=True, kw_only=True):
    number: _Text
    customer: _Text
    placed: dt.date
    status: OrderStatus
    items: Annotated[list[OrderItem], msgspec.Meta(min_length=1)]
    carrier: str | None = None
    tracking: str | None = None
    eta: dt.date | None = None
    delivered: dt.date | None = None


class Return(msgspec.Struct, frozen=True, kw_only=True):
    id: _Text
    order: _Text
    sku: _Text
    status: ReturnStatus
    refund_amount: _Money | None = None
    updated: dt.date


class Seed(msgspec.Struct, frozen=True, kw_only=True):
    """A whole store, validated (see the module invariants)."""

    store: StoreInfo
    policies: Policies
    products: list[Product] = msgspec.field(default_factory=list)
    customers: list[Customer] = msgspec.field(default_factory=list)
    orders: list[Order] = msgspec.field(default_factory=list)
    returns: list[Return] = msgspec.field(default_factory=list)


_decoder: Final = msgspec.json.Decoder(Seed)
_E164: Final = re.compile(r"^\+[1-9][0-9]{6,14}$")
_EMAIL: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DIGITS: Final = re.compile(r"^[0-9]+$")
_ENUMS: Final[list[tuple[re.Pattern[str], tuple[str, ...]]]] = [
    (re.compile(r"^\$\.orders\[\d+\]\.status$"), ORDER_STATUSES),
    (re.compile(r"^\$\.returns\[\d+\]\.status$"), RETURN_STATUSES),
]


def load_seed(path: str | Path) -> Seed:
    """Read and validate a seed file.

    Args:
        path: the JSON file.

    Returns:
        The validated seed.

    Raises:
        SeedError: the file cannot be read, is not JSON, or breaks the format; the message starts with the
            path and names the offending field.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SeedError(f"{path}: cannot read the seed file: {exc.strerror or exc}") from exc
    return parse_seed(data, source=str(path))


def parse_seed(data: bytes | str, *, source: str = "<seed>") -> Seed:
    """Parse and validate a seed held in memory.

    Args:
        data: the JSON document.
        source: the name used in error messages (normally the file name).

    Returns:
        The validated seed.

    Raises:
        SeedError: the document is not JSON or breaks the format (message: ``<source>: <path>: <problem>``).
    """
    try:
        raw = data.encode() if isinstance(data, str) else data
    except UnicodeEncodeError as exc:
        raise SeedError(f"{source}: not valid text: {exc.reason} at character {exc.start}") from None
    try:
        seed = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise SeedError(_explain_validation(str(exc), source)) from exc
    except msgspec.DecodeError as exc:
        raise SeedError(f"{source}: not valid JSON: {_explain_syntax(str(exc), raw)}") from exc
    except RecursionError:
        raise SeedError(f"{source}: not a seed: JSON nested too deeply") from None
    problems = list(_check(seed))
    if problems:
        path, problem = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise SeedError(f"{source}: {path}: {problem}{more}")
    return seed


def _explain_validation(message: str, source: str) -> str:
    text, sep, where = message.rpartition(" - at `")
    path = where.rstrip("`") if sep else "$"
    text = text if sep else message
    if text.startswith("Invalid enum value"):
        allowed = next((values for pattern, values in _ENUMS if pattern.match(path)), None)
        got = text.removeprefix("Invalid enum value").strip()
        if allowed:
            return f"{source}: {path}: expected one of {', '.join(allowed)}; got {got}"
    if "date" in text and "Invalid" in text:
        return f"{source}: {path}: expected an ISO date like 2026-11-26"
    if text.startswith("Object missing required field"):
        field = text.removeprefix("Object missing required field").strip().strip("`")
        return f"{source}: {path}: missing required field '{field}'"
    return f"{source}: {path}: {text[:1].lower()}{text[1:]}"


def _explain_syntax(message: str, raw: bytes) -> str:
    found = re.search(r"\(byte (\d+)\)", message)
    if not found:
        return message
    offset = int(found.group(1))
    before = raw[:offset]
    line = before.count(b"\n") + 1
    column = offset - (before.rfind(b"\n") + 1) + 1
    return f"{message} at line {line}, column {column}"


def _check(seed: Seed) -> Iterable[tuple[str, str]]:
    """Yield ``(json path, problem)`` for every rule the decoder cannot express."""
    yield from _check_store(seed.store)
    seen_products: dict[str, str] = {}
    skus: dict[str, str] = {}
    for i, product in enumerate(seed.products):
        yield from _unique(seen_products, product.id, f"$.products[{i}].id", "product id")
        for j, variant in enumerate(product.variants):
            yield from _unique(skus, variant.sku, f"$.products[{i}].variants[{j}].sku", "sku")
    customers: dict[str, str] = {}
    for i, customer in enumerate(seed.customers):
        where = f"$.customers[{i}]"
        yield from _unique(customers, customer.id, f"{where}.id", "customer id")
        if customer.phone is not None and not _E164.match(customer.phone):
            yield (
                f"{where}.phone",
                f"expected an E.164 phone number like +15555550123; got {customer.phone!r}",
            )
        if customer.email is not None and not _EMAIL.match(customer.email):
            yield f"{where}.email", f"not an email address: {customer.email!r}"
    orders: dict[str, str] = {}
    order_skus: dict[str, set[str]] = {}
    for i, order in enumerate(seed.orders):
        yield from _check_order(order, f"$.orders[{i}]", orders, customers, skus)
        order_skus[order.number] = {item.sku for item in order.items}
    return_ids: dict[str, str] = {}
    for i, ret in enumerate(seed.returns):
        where = f"$.returns[{i}]"
        yield from _unique(return_ids, ret.id, f"{where}.id", "return id")
        if ret.order not in order_skus:
            yield f"{where}.order", f"unknown order {ret.order!r}"
        elif ret.sku not in order_skus[ret.order]:
            yield f"{where}.sku", f"sku {ret.sku!r} is not an item of order {ret.order!r}"


def _check_store(store: StoreInfo) -> Iterable[tuple[str, str]]:
    try:
        zoneinfo.ZoneInfo(store.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        yield "$.store.timezone", f"unknown time zone {store.timezone!r} (an IANA name like America/New_York)"
    if store.handoff_number is not None and not _E164.match(store.handoff_number):
        yield "$.store.handoff_number", f"expected an E.164 phone number; got {store.handoff_number!r}"


def _check_order(
    order: Order, where: str, orders: dict[str, str], customers: dict[str, str], skus: dict[str, str]
) -> Iterable[tuple[str, str]]:
    yield from _unique(orders, order.number, f"{where}.number", "order number")
    if not _DIGITS.match(order.number):
        yield f"{where}.number", f"an order number is a string of digits; got {order.number!r}"
    if order.customer not in customers:
        yield f"{where}.customer", f"unknown customer {order.customer!r}"
    for k, item in enumerate(order.items):
        if item.sku not in skus:
            yield f"{where}.items[{k}].sku", f"unknown sku {item.sku!r}"
    if order.status == "delivered" and order.delivered is None:
        yield f"{where}.delivered", "a delivered order needs its delivered date"
    for name in ("eta", "delivered"):
        value: dt.date | None = getattr(order, name)
        if value is not None and value < order.placed:
            yield f"{where}.{name}", f"{value.isoformat()} is before the order was placed ({order.placed})"


def _unique(seen: dict[str, str], key: str, where: str, what: str) -> Iterable[tuple[str, str]]:
    if key in seen:
        yield where, f"duplicate {what} {key!r} (first at {seen[key]})"
    else:
        seen[key] = where
