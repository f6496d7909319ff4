"""The embedded store: an in-memory SQLite database loaded from a seed.

Invariants:
- One connection per store, guarded by a lock: every method is atomic and safe to call from any thread.
- The seed is loaded once, in one transaction, at construction; the store's own actions (returns, cancels)
  are the only writes, and each commits before returning.
- Returns created here get ids ``R<n>`` not used by the seed, status ``requested``, and ``updated`` = today;
  messages get ids ``M<n>``; address changes and messages are kept in their own tables (the seed has neither).
- ``idem_key`` is unique: a second :meth:`SqliteStore.create_return` with the same key returns the first
  return (or refuses with ``key_reused`` if it names a different order or item); the same holds for
  :meth:`SqliteStore.change_address` and :meth:`SqliteStore.leave_message`.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from voxcart.brain.store._actions import must_cancel, new_return, returnable_item, reuse_return
from voxcart.brain.store._base import AddressChange, Clock, Message, OrderNotFound, ProductMatch, system_clock
from voxcart.brain.store._match import match_products
from voxcart.brain.store._requests import (
    address_change,
    clean_text,
    new_message,
    reuse_address_change,
    reuse_message,
)
from voxcart.brain.store._rows import (
    COLUMNS,
    customer_from_row,
    order_from_row,
    phone_key,
    product_from_row,
    return_from_row,
    seed_rows,
    variant_from_row,
)
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

__all__ = ["SqliteStore"]

_SCHEMA: Final = """
CREATE TABLE products (id TEXT PRIMARY KEY, pos INTEGER NOT NULL, name TEXT NOT NULL, category TEXT NOT NULL,
                       price REAL NOT NULL, aliases TEXT NOT NULL);
CREATE TABLE variants (sku TEXT PRIMARY KEY, product_id TEXT NOT NULL REFERENCES products(id), pos INTEGER NOT NULL,
                       color TEXT, size TEXT, stock INTEGER NOT NULL, restock_date TEXT);
CREATE INDEX variants_product ON variants(product_id, pos);
CREATE TABLE customers (id TEXT PRIMARY KEY, pos INTEGER NOT NULL, name TEXT NOT NULL, phone TEXT, phone_key TEXT,
                        email TEXT, zip TEXT);
CREATE INDEX customers_phone ON customers(phone_key, pos);
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
CREATE TABLE address_changes (seq INTEGER PRIMARY KEY, order_number TEXT NOT NULL REFERENCES orders(number),
                              address TEXT NOT NULL, changed TEXT NOT NULL, idem_key TEXT UNIQUE NOT NULL);
CREATE INDEX address_changes_order ON address_changes(order_number, seq);
CREATE TABLE messages (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, caller_number TEXT NOT NULL, text TEXT NOT NULL,
                       created TEXT NOT NULL, order_number TEXT, idem_key TEXT UNIQUE NOT NULL);
"""


def _sqlite_value(value: Any) -> Any:
    """Dates as ISO text, lists (aliases) as JSON: what the SQLite schema stores."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return json.dumps(value)
    return value


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
        for table, rows in seed_rows(seed, _sqlite_value).items():
            marks = ", ".join("?" * len(COLUMNS[table]))
            db.executemany(f"INSERT INTO {table} ({', '.join(COLUMNS[table])}) VALUES ({marks})", rows)
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
        return customer_from_row(row) if row else None

    def customer_by_phone(self, phone: str) -> Customer | None:
        """The customer whose phone has the same digits as ``phone``."""
        key = phone_key(phone)
        if key is None:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, phone, email, zip FROM customers WHERE phone_key = ? ORDER BY pos LIMIT 1", (key,)
            ).fetchone()
        return customer_from_row(row) if row else None

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
        return [variant_from_row(row) for row in rows]

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
            existing = reuse_return(return_from_row(row) if row else None, order_number, sku, key)
            if existing is not None:
                return existing
            item = returnable_item(
                self._order(order_number), order_number, sku, self._product_for_sku(sku), self._policies,
                self.today(), self._returns(order_number),
            )  # fmt: skip
            return self._insert_return(order_number, item, key)

    def cancel_order(self, number: str) -> Order:
        """Cancel an order still processing; a cancelled order is returned as it is."""
        with self._lock:
            order = self._order(number)
            if order is None:
                raise OrderNotFound(number)
            if not must_cancel(order):
                return order
            self._db.execute("UPDATE orders SET status = 'cancelled' WHERE number = ?", (number,))
            return msgspec.structs.replace(order, status="cancelled")

    def change_address(self, number: str, address: str, *, key: str) -> AddressChange:
        """Set a new shipping address on an order still processing, idempotently by ``key``."""
        cleaned = clean_text(address, "address")
        with self._lock:
            row = self._db.execute(
                "SELECT order_number, address, changed FROM address_changes WHERE idem_key = ?", (key,)
            ).fetchone()
            existing = reuse_address_change(_address_change(row) if row else None, number, cleaned, key)
            if existing is not None:
                return existing
            change = address_change(self._order(number), number, cleaned, self.today())
            self._db.execute(
                "INSERT INTO address_changes (order_number, address, changed, idem_key) VALUES (?, ?, ?, ?)",
                (change.order, change.address, change.changed.isoformat(), key),
            )
            return change

    def address_changes(self, number: str) -> list[AddressChange]:
        """The address changes made to an order, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT order_number, address, changed FROM address_changes WHERE order_number = ? ORDER BY seq",
                (number,),
            ).fetchall()
        return [_address_change(row) for row in rows]

    def leave_message(self, caller_number: str, text: str, *, key: str, order_number: str | None = None) -> Message:
        """Record a caller's message for the team, idempotently by ``key``."""
        cleaned = clean_text(text, "message")
        with self._lock:
            row = self._db.execute(
                "SELECT id, caller_number, text, created, order_number FROM messages WHERE idem_key = ?", (key,)
            ).fetchone()
            existing = reuse_message(_message(row) if row else None, cleaned, key)
            if existing is not None:
                return existing
            taken = [mid for (mid,) in self._db.execute("SELECT id FROM messages")]
            (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM messages").fetchone()
            message = new_message(caller_number, cleaned, order_number, self._clock(), seq, taken)
            self._db.execute(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                (message.id, seq, message.caller_number, message.text, message.created.isoformat(),
                 message.order_number, key),
            )  # fmt: skip
            return message

    def messages(self) -> list[Message]:
        """Every message left by callers, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, caller_number, text, created, order_number FROM messages ORDER BY seq"
            ).fetchall()
        return [_message(row) for row in rows]

    # -- helpers (caller holds the lock) ---------------------------------------------------------------------

    def _insert_return(self, order_number: str, item: OrderItem, key: str) -> Return:
        taken = [rid for (rid,) in self._db.execute("SELECT id FROM returns")]
        (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM returns").fetchone()
        ret = new_return(order_number, item, self.today(), seq, taken)
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
        return order_from_row(row, items)

    def _product(self, product_id: str) -> Product | None:
        row = self._db.execute(
            "SELECT id, name, category, price, aliases FROM products WHERE id = ?", (product_id,)
        ).fetchone()
        if row is None:
            return None
        variants = [
            variant_from_row(v)
            for v in self._db.execute(
                "SELECT sku, color, size, stock, restock_date FROM variants WHERE product_id = ? ORDER BY pos",
                (product_id,),
            )
        ]
        return product_from_row(row, json.loads(row[4]), variants)

    def _product_for_sku(self, sku: str) -> Product | None:
        row = self._db.execute("SELECT product_id FROM variants WHERE sku = ?", (sku,)).fetchone()
        return self._product(row[0]) if row else None

    def _returns(self, number: str) -> list[Return]:
        rows = self._db.execute(
            "SELECT id, order_number, sku, status, refund_amount, updated FROM returns WHERE order_number = ? "
            "ORDER BY seq",
            (number,),
        ).fetchall()
        return [return_from_row(row) for row in rows]


def _address_change(row: Any) -> AddressChange:
    return AddressChange(order=row[0], address=row[1], changed=dt.date.fromisoformat(row[2]))


def _message(row: Any) -> Message:
    return Message(
        id=row[0], caller_number=row[1], text=row[2], created=dt.datetime.fromisoformat(row[3]), order_number=row[4]
    )
