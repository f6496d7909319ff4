"""Seed Structs to table rows and back, shared by the SQL stores (SQLite and PostgreSQL).

Invariants:
- Both SQL schemas have the same tables with the same columns in the same order, so :func:`seed_rows` fills
  either; each backend only adapts values (SQLite stores dates as ISO text and aliases as JSON).
- Positions (``pos``, ``line``, ``seq``) keep seed order: the catalogue, variants, items, returns and
  customers (for :func:`phone_key` ties) come back in the order the seed lists them.
- Rows read back become the seed's Structs again (``row -> Struct`` here), so a store returns exactly what it
  was loaded with.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Final

from voxcart.common.seed import Customer, Order, OrderItem, Product, Return, Seed, Variant

__all__ = [
    "COLUMNS",
    "TABLES",
    "as_date",
    "customer_from_row",
    "order_from_row",
    "phone_key",
    "product_from_row",
    "return_from_row",
    "seed_rows",
    "variant_from_row",
]

COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "products": ("id", "pos", "name", "category", "price", "aliases"),
    "variants": ("sku", "product_id", "pos", "color", "size", "stock", "restock_date"),
    "customers": ("id", "pos", "name", "phone", "phone_key", "email", "zip"),
    "orders": ("number", "customer_id", "placed", "status", "carrier", "tracking", "eta", "delivered"),
    "order_items": ("order_number", "line", "sku", "qty", "price"),
    "returns": ("id", "seq", "order_number", "sku", "status", "refund_amount", "updated", "idem_key"),
}
"""Every table of a SQL store and its columns, in insert order (parents before children)."""

TABLES: Final = tuple(COLUMNS)

Row = Sequence[Any]


def phone_key(phone: str) -> str | None:
    """Digits of a phone number with a North American ``1`` added to 10-digit numbers; None if too short."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    if len(digits) == 10:
        digits = "1" + digits
    return digits if len(digits) >= 7 else None


def as_date(value: str | dt.date | None) -> dt.date | None:
    """A date column as a date (SQLite hands back ISO text, PostgreSQL a date); None stays None."""
    if value is None or value == "":
        return None
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def _required_date(value: str | dt.date | None) -> dt.date:
    day = as_date(value)
    if day is None:
        raise ValueError("a required date column is empty")
    return day


def seed_rows(seed: Seed, adapt: Callable[[Any], Any] = lambda value: value) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of every table for ``seed`` (seed returns have no idempotency key).

    Args:
        seed: the validated store data.
        adapt: applied to every value (e.g. dates to ISO text for SQLite); identity by default.

    Returns:
        ``{table: rows}`` for every table of :data:`COLUMNS`, in its column order.
    """
    rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in TABLES}
    for pos, p in enumerate(seed.products):
        rows["products"].append((p.id, pos, p.name, p.category, p.price, list(p.aliases)))
        for i, v in enumerate(p.variants):
            rows["variants"].append((v.sku, p.id, i, v.color, v.size, v.stock, v.restock_date))
    for pos, c in enumerate(seed.customers):
        rows["customers"].append((c.id, pos, c.name, c.phone, phone_key(c.phone or ""), c.email, c.zip))
    for o in seed.orders:
        rows["orders"].append((o.number, o.customer, o.placed, o.status, o.carrier, o.tracking, o.eta, o.delivered))
        for i, it in enumerate(o.items):
            rows["order_items"].append((o.number, i, it.sku, it.qty, it.price))
    for i, r in enumerate(seed.returns):
        rows["returns"].append((r.id, i, r.order, r.sku, r.status, r.refund_amount, r.updated, None))
    return {table: [tuple(adapt(value) for value in row) for row in table_rows] for table, table_rows in rows.items()}


def customer_from_row(row: Row) -> Customer:
    """``(id, name, phone, email, zip)`` as a Customer."""
    return Customer(id=row[0], name=row[1], phone=row[2], email=row[3], zip=row[4])


def variant_from_row(row: Row) -> Variant:
    """``(sku, color, size, stock, restock_date)`` as a Variant."""
    return Variant(sku=row[0], color=row[1], size=row[2], stock=row[3], restock_date=as_date(row[4]))


def product_from_row(row: Row, aliases: list[str], variants: list[Variant]) -> Product:
    """``(id, name, category, price, ...)`` with its aliases and variants as a Product."""
    return Product(id=row[0], name=row[1], category=row[2], price=row[3], aliases=aliases, variants=variants)


def order_from_row(row: Row, items: list[OrderItem]) -> Order:
    """``(number, customer_id, placed, status, carrier, tracking, eta, delivered)`` with its items as an Order."""
    return Order(
        number=row[0], customer=row[1], placed=_required_date(row[2]), status=row[3], items=items, carrier=row[4],
        tracking=row[5], eta=as_date(row[6]), delivered=as_date(row[7]),
    )  # fmt: skip


def return_from_row(row: Row) -> Return:
    """``(id, order_number, sku, status, refund_amount, updated)`` as a Return."""
    return Return(
        id=row[0], order=row[1], sku=row[2], status=row[3], refund_amount=row[4], updated=_required_date(row[5])
    )
