"""The embedded store: an in-memory SQLite database loaded from a seed.

Invariants:
- One connection per store, guarded by a lock: every method is atomic and safe to call from any thread.
- The seed is loaded once, in one transaction, at construction; the store's own actions (returns, cancels)
  are the only writes, and each commits before returning.
- Returns created here get ids ``R<n>`` not used by the seed, status ``requested``, and ``updated`` = today.
- ``idem_key`` is unique: a second :meth:`SqliteStore.create_return` with the same key returns the first
  return (or refuses with ``key_reused`` if it names a different order or item).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from voxcart.brain.store._base import ActionRefused, Clock, OrderNotFound, ProductMatch, system_clock
from voxcart.brain.store._match import match_products
from voxcart.brain.store._policy import check_return
from voxcart.common.seed import (
    Customer,
    Order,
    OrderItem,
    Policies,
    Product,
    Return,
    Seed,
    StoreInfo,
    Variant,
    load_seed,
)

__all__ = ["SqliteStore", "phone_key"]

_SCHEMA: Final = """
CREATE TABLE products (id TEXT PRIMARY KEY, pos INTEGER NOT NULL, name TEXT NOT NULL, category TEXT NOT NULL,
                       price REAL NOT NULL, aliases TEXT NOT NULL);
CREATE TABLE variants (sku TEXT PRIMARY KEY, product_id TEXT NOT NULL REFERENCES products(id), pos INTEGER NOT NULL,
                       color TEXT, size TEXT, stock INTEGER NOT NULL, restock_date TEXT);
CREATE INDEX variants_product ON variants(product_id, pos);
CREATE TABLE customers (id TEXT PRIMARY KEY, name TEXT NOT NULL, phone TEXT, phone_key TEXT, email TEXT, zip TEXT);
CREATE INDEX customers_phone ON customers(phone_key);
CREATE TABLE orders (number TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id),
                     placed TEXT NOT NULL, status TEXT NOT NULL, carrier TEXT, tracking TEXT, eta TEXT,
                     delivered TEXT);
CREATE INDEX orders_customer ON orders(customer_id, placed);
CREATE TABLE order_items (order_number TEXT NOT NULL REFERENCES orders(number), line INTEGER NOT NULL,
                          sku TEXT NOT NULL REFERENCES variants(sku), qty INTEGER NOT NULL, price REAL NOT NULL,
                          PRIMARY KEY (order_number, line));
CREATE TABLE returns (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, order_number TEXT NOT NULL REFERENCES orders(number),
                      sku TEXT NOT NULL, status TEXT NOT NULL, refund_amount REAL, updated TEXT NOT NULL,
                      idem_key TEXT UNIQUE);
CREATE INDEX returns_order ON returns(order_number, seq);
"""


def phone_key(phone: str) -> str | None:
    """Digits of a phone number with a North American ``1`` added to 10-digit numbers; None if too short."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    if len(digits) == 10:
        digits = "1" + digits
    return digits if len(digits) >= 7 else None


def _date(value: Any) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None


class SqliteStore:
    """A :class:`~voxcart.brain.store.Store` in an in-memory SQLite database.

    Args:
        seed: the validated store data.
        clock: where "now" comes from (converted to the store's timezone for "today").
    """

    def __init__(self, seed: Seed, *, clock: Clock = system_clock) -> None:
        self._info = seed.store
        self._policies = seed.policies
        self._clock = clock
        self._tz = ZoneInfo(seed.store.timezone)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.executescript(_SCHEMA)
        self._load(seed)

    @classmethod
    def from_file(cls, path: str | Path, *, clock: Clock = system_clock) -> SqliteStore:
        """Load and validate a seed file (raises :class:`~voxcart.common.seed.SeedError`) into a new store."""
        return cls(load_seed(path), clock=clock)

    def _load(self, seed: Seed) -> None:
        db = self._db
        db.execute("BEGIN")
        for pos, p in enumerate(seed.products):
            db.execute(
                "INSERT INTO products VALUES (?, ?, ?, ?, ?, ?)",
                (p.id, pos, p.name, p.category, p.price, json.dumps(p.aliases)),
            )
            db.executemany(
                "INSERT INTO variants VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(v.sku, p.id, i, v.color, v.size, v.stock, _iso(v.restock_date)) for i, v in enumerate(p.variants)],
            )
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)",
            [(c.id, c.name, c.phone, phone_key(c.phone or ""), c.email, c.zip) for c in seed.customers],
        )
        for o in seed.orders:
            db.execute(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (o.number, o.customer, o.placed.isoformat(), o.status, o.carrier, o.tracking, _iso(o.eta),
                 _iso(o.delivered)),
            )  # fmt: skip
            db.executemany(
                "INSERT INTO order_items VALUES (?, ?, ?, ?, ?)",
                [(o.number, i, it.sku, it.qty, it.price) for i, it in enumerate(o.items)],
            )
        db.executemany(
            "INSERT INTO returns VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            [
                (r.id, i, r.order, r.sku, r.status, r.refund_amount, r.updated.isoformat())
                for i, r in enumerate(seed.returns)
            ],
        )
        db.execute("COMMIT")

    # -- the Store protocol ----------------------------------------------------------------------------------

    @property
    def info(self) -> StoreInfo:
        """The shop."""
        return self._info

    @property
    def policies(self) -> Policies:
        """The shop's policies."""
        return self._policies

    @property
    def clock(self) -> Clock:
        """The clock "today" is read from."""
        return self._clock

    def today(self) -> dt.date:
        """Today's date in the store's timezone."""
        return self._clock().astimezone(self._tz).date()

    def get_order(self, number: str) -> Order | None:
        """The order with this number, if any."""
        with self._lock:
            return self._order(number)

    def orders_for_customer(self, customer_id: str) -> list[Order]:
        """A customer's orders, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT number FROM orders WHERE customer_id = ? ORDER BY placed DESC, number DESC", (customer_id,)
            ).fetchall()
            return [o for (number,) in rows if (o := self._order(number)) is not None]

    def get_customer(self, customer_id: str) -> Customer | None:
        """The customer with this id, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, phone, email, zip FROM customers WHERE id = ?", (customer_id,)
            ).fetchone()
        return _customer(row) if row else None

    def customer_by_phone(self, phone: str) -> Customer | None:
        """The customer whose phone has the same digits as ``phone``."""
        key = phone_key(phone)
        if key is None:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, phone, email, zip FROM customers WHERE phone_key = ? ORDER BY rowid LIMIT 1", (key,)
            ).fetchone()
        return _customer(row) if row else None

    def products(self) -> list[Product]:
        """The whole catalogue, in seed order."""
        with self._lock:
            ids = [pid for (pid,) in self._db.execute("SELECT id FROM products ORDER BY pos")]
            return [p for pid in ids if (p := self._product(pid)) is not None]

    def get_product(self, product_id: str) -> Product | None:
        """The product with this id, if any."""
        with self._lock:
            return self._product(product_id)

    def product_for_sku(self, sku: str) -> Product | None:
        """The product one of whose variants has this SKU."""
        with self._lock:
            return self._product_for_sku(sku)

    def find_products(self, text: str) -> list[ProductMatch]:
        """Products named in ``text``, best first."""
        return match_products(text, self.products())

    def variants(self, product_id: str, *, color: str | None = None, size: str | None = None) -> list[Variant]:
        """A product's variants, optionally filtered by colour and size (case-insensitive)."""
        query = "SELECT sku, color, size, stock, restock_date FROM variants WHERE product_id = ?"
        args: list[Any] = [product_id]
        if color is not None:
            query += " AND lower(color) = lower(?)"
            args.append(color)
        if size is not None:
            query += " AND lower(size) = lower(?)"
            args.append(size)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY pos", args).fetchall()
        return [_variant(row) for row in rows]

    def returns_for_order(self, number: str) -> list[Return]:
        """Returns filed against an order, oldest first."""
        with self._lock:
            return self._returns(number)

    def create_return(self, order_number: str, sku: str, *, key: str) -> Return:
        """Start a return of one item, idempotently by ``key`` (see :class:`~voxcart.brain.store.Store`)."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, order_number, sku, status, refund_amount, updated FROM returns WHERE idem_key = ?", (key,)
            ).fetchone()
            if row:
                existing = _return(row)
                if existing.order != order_number or existing.sku != sku:
                    raise ActionRefused("key_reused", f"return key {key!r} was used for {existing.id}")
                return existing
            order = self._order(order_number)
            if order is None:
                raise OrderNotFound(order_number)
            items = [item for item in order.items if item.sku == sku]
            if not items:
                raise ActionRefused("not_in_order", f"{sku!r} is not an item of order {order_number!r}")
            product = self._product_for_sku(sku)
            check = check_return(order, sku, product, self._policies, self.today(), self._returns(order_number))
            if not check.eligible:
                raise ActionRefused(check.verdict, f"{sku!r} of order {order_number!r}: {check.verdict}")
            return self._insert_return(order_number, items[0], key)

    def cancel_order(self, number: str) -> Order:
        """Cancel an order still processing; a cancelled order is returned as it is."""
        with self._lock:
            order = self._order(number)
            if order is None:
                raise OrderNotFound(number)
            if order.status == "cancelled":
                return order
            if order.status != "processing":
                raise ActionRefused("not_processing", f"order {number!r} is {order.status}; it can't be cancelled")
            self._db.execute("UPDATE orders SET status = 'cancelled' WHERE number = ?", (number,))
            cancelled = self._order(number)
            assert cancelled is not None
            return cancelled

    # -- helpers (caller holds the lock) ---------------------------------------------------------------------

    def _insert_return(self, order_number: str, item: OrderItem, key: str) -> Return:
        taken = {rid for (rid,) in self._db.execute("SELECT id FROM returns")}
        (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM returns").fetchone()
        n = seq + 1
        while f"R{n}" in taken:
            n += 1
        ret = Return(
            id=f"R{n}",
            order=order_number,
            sku=item.sku,
            status="requested",
            refund_amount=round(item.price * item.qty, 2),
            updated=self.today(),
        )
        self._db.execute(
            "INSERT INTO returns VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ret.id, seq, ret.order, ret.sku, ret.status, ret.refund_amount, ret.updated.isoformat(), key),
        )
        return ret

    def _order(self, number: str) -> Order | None:
        row = self._db.execute(
            "SELECT number, customer_id, placed, status, carrier, tracking, eta, delivered "
            "FROM orders WHERE number = ?",
            (number,),
        ).fetchone()
        if row is None:
            return None
        items = [
            OrderItem(sku=sku, qty=qty, price=price)
            for sku, qty, price in self._db.execute(
                "SELECT sku, qty, price FROM order_items WHERE order_number = ? ORDER BY line", (number,)
            )
        ]
        placed = _date(row[2])
        assert placed is not None
        return Order(
            number=row[0], customer=row[1], placed=placed, status=row[3], items=items, carrier=row[4],
            tracking=row[5], eta=_date(row[6]), delivered=_date(row[7]),
        )  # fmt: skip

    def _product(self, product_id: str) -> Product | None:
        row = self._db.execute(
            "SELECT id, name, category, price, aliases FROM products WHERE id = ?", (product_id,)
        ).fetchone()
        if row is None:
            return None
        variants = [
            _variant(v)
            for v in self._db.execute(
                "SELECT sku, color, size, stock, restock_date FROM variants WHERE product_id = ? ORDER BY pos",
                (product_id,),
            )
        ]
        return Product(
            id=row[0], name=row[1], category=row[2], price=row[3], aliases=json.loads(row[4]), variants=variants
        )

    def _product_for_sku(self, sku: str) -> Product | None:
        row = self._db.execute("SELECT product_id FROM variants WHERE sku = ?", (sku,)).fetchone()
        return self._product(row[0]) if row else None

    def _returns(self, number: str) -> list[Return]:
        rows = self._db.execute(
            "SELECT id, order_number, sku, status, refund_amount, updated FROM returns WHERE order_number = ? "
            "ORDER BY seq",
            (number,),
        ).fetchall()
        return [_return(row) for row in rows]


def _customer(row: Any) -> Customer:
    return Customer(id=row[0], name=row[1], phone=row[2], email=row[3], zip=row[4])


def _variant(row: Any) -> Variant:
    return Variant(sku=row[0], color=row[1], size=row[2], stock=row[3], restock_date=_date(row[4]))


def _return(row: Any) -> Return:
    updated = _date(row[5])
    assert updated is not None
    return Return(id=row[0], order=row[1], sku=row[2], status=row[3], refund_amount=row[4], updated=updated)
