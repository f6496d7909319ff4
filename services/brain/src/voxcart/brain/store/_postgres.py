"""The production store: the shop's data in PostgreSQL, shared by every brain replica.

Invariants:
- The same :class:`~voxcart.brain.store.Store` behaviour as the embedded SQLite store: the same rows
  (:mod:`._rows`), the same action rules (:mod:`._actions`, :mod:`._requests`), the same matching
  (:mod:`._match`); only the SQL and the locking differ.
- Every method runs in one transaction on the store's connection (one per store, guarded by a lock, so a
  store is safe to call from any thread). Several replicas (processes) share one database safely:
  - an idempotent action (return, address change, message) first takes its table's ``SHARE ROW EXCLUSIVE``
    lock, so two replicas given the same key serialize and the second returns the first's result; the
    ``idem_key`` UNIQUE constraint backs this up;
  - an action on an order locks the order's row (``FOR UPDATE``) and decides on the status it reads under that
    lock, so a cancel racing a shipment or another cancel never overwrites a newer status.
- A lost connection is reopened once per call and the call repeated (safe: actions are idempotent); a database
  that stays unreachable raises :class:`~voxcart.brain.store.StoreUnavailable` naming host, port and database.
- Messages never contain the password of the connection string.
- Info and policies are read once, at start; everything else is read live.
- How the data gets there (seed or not) is :mod:`._pgschema`'s rule.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo

import msgspec
import psycopg

from voxcart.brain.store import _pgschema
from voxcart.brain.store._actions import must_cancel, new_return, returnable_item, reuse_return
from voxcart.brain.store._base import (
    AddressChange,
    Clock,
    Message,
    OrderNotFound,
    ProductMatch,
    StoreError,
    StoreUnavailable,
    system_clock,
)
from voxcart.brain.store._match import match_products
from voxcart.brain.store._pgconn import Target, first_line
from voxcart.brain.store._requests import (
    address_change,
    clean_text,
    new_message,
    reuse_address_change,
    reuse_message,
)
from voxcart.brain.store._rows import (
    as_date,
    customer_from_row,
    order_from_row,
    phone_key,
    product_from_row,
    return_from_row,
    variant_from_row,
)
from voxcart.common.metrics import ProviderMetrics
from voxcart.common.seed import Customer, Order, OrderItem, Policies, Product, Return, Seed, StoreInfo, Variant

__all__ = ["PostgresStore"]

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]

_CONNECT_TIMEOUT: Final = 5
_ORDER_COLUMNS: Final = "number, customer_id, placed, status, carrier, tracking, eta, delivered"
_RETURN_COLUMNS: Final = "id, order_number, sku, status, refund_amount, updated"
_MESSAGE_COLUMNS: Final = "id, caller_number, text, created, order_number"
METRICS: Final = ProviderMetrics("brain", "postgres")
"""``voxcart_provider_requests_total{provider="postgres"}``: one request per transaction attempt (a reconnect
repeats it), counted when it ends; a transaction's duration is its first response."""


class PostgresStore:
    """A :class:`~voxcart.brain.store.Store` in a PostgreSQL database.

    Args:
        conninfo: a libpq connection string: ``postgresql://user:password@host:port/database`` (query
            parameters such as ``sslmode`` or ``options=-csearch_path%3Dshop`` allowed) or ``key=value`` pairs.
        seed: load this seed first (tables created if missing; see :mod:`._pgschema` for when it replaces the
            data). None: use the store already in the database.
        clock: where "now" comes from (converted to the store's timezone for "today").

    Raises:
        StoreError: ``conninfo`` is not a connection string.
        StoreUnavailable: the server cannot be reached or refuses the login, or the database holds no store.
    """

    seed_loaded: bool
    """True when this store loaded its seed into the database; False when it was already there (or none given)."""

    def __init__(self, conninfo: str, *, seed: Seed | None = None, clock: Clock = system_clock) -> None:
        self._conninfo = conninfo
        self._target = Target.parse(conninfo)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: Connection | None = self._connect()
        try:
            if seed is not None:
                self.seed_loaded = _pgschema.prepare(self._conn, seed)
            else:
                self.seed_loaded = False
                _pgschema.check(self._conn)
            self._info, self._policies = _pgschema.read_shop(self._conn)
        except psycopg.Error as exc:
            self.close()
            raise StoreUnavailable(f"PostgreSQL {self._target}: {first_line(exc)}") from None
        except BaseException:
            self.close()
            raise
        self._tz = ZoneInfo(self._info.timezone)

    def close(self) -> None:
        """Close the connection (a later call reopens it)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        return self._run(lambda conn: _order(conn, number))

    def orders_for_customer(self, customer_id: str) -> list[Order]:
        """A customer's orders, newest first."""
        return self._run(
            lambda conn: _orders(conn, "WHERE customer_id = %s ORDER BY placed DESC, number DESC", (customer_id,))
        )

    def get_customer(self, customer_id: str) -> Customer | None:
        """The customer with this id, if any."""
        row = self._run(
            lambda conn: conn.execute(
                "SELECT id, name, phone, email, zip FROM customers WHERE id = %s", (customer_id,)
            ).fetchone()
        )
        return customer_from_row(row) if row else None

    def customer_by_phone(self, phone: str) -> Customer | None:
        """The customer whose phone has the same digits as ``phone``."""
        key = phone_key(phone)
        if key is None:
            return None
        row = self._run(
            lambda conn: conn.execute(
                "SELECT id, name, phone, email, zip FROM customers WHERE phone_key = %s ORDER BY pos LIMIT 1", (key,)
            ).fetchone()
        )
        return customer_from_row(row) if row else None

    def products(self) -> list[Product]:
        """The whole catalogue, in seed order."""
        return self._run(lambda conn: _products(conn, "", ()))

    def get_product(self, product_id: str) -> Product | None:
        """The product with this id, if any."""
        found = self._run(lambda conn: _products(conn, "WHERE id = %s", (product_id,)))
        return found[0] if found else None

    def product_for_sku(self, sku: str) -> Product | None:
        """The product one of whose variants has this SKU."""
        return self._run(lambda conn: _product_for_sku(conn, sku))

    def find_products(self, text: str) -> list[ProductMatch]:
        """Products named in ``text``, best first."""
        return match_products(text, self.products())

    def variants(self, product_id: str, *, color: str | None = None, size: str | None = None) -> list[Variant]:
        """A product's variants, optionally filtered by colour and size (case-insensitive)."""
        query = "SELECT sku, color, size, stock, restock_date FROM variants WHERE product_id = %s"
        args: list[Any] = [product_id]
        if color is not None:
            query += " AND lower(color) = lower(%s)"
            args.append(color)
        if size is not None:
            query += " AND lower(size) = lower(%s)"
            args.append(size)
        rows = self._run(lambda conn: conn.execute(query + " ORDER BY pos", args).fetchall())
        return [variant_from_row(row) for row in rows]

    def returns_for_order(self, number: str) -> list[Return]:
        """Returns filed against an order, oldest first."""
        return self._run(lambda conn: _returns(conn, number))

    def create_return(self, order_number: str, sku: str, *, key: str) -> Return:
        """Start a return of one item, idempotently by ``key`` (see :class:`~voxcart.brain.store.Store`)."""

        def work(conn: Connection) -> Return:
            conn.execute("LOCK TABLE returns IN SHARE ROW EXCLUSIVE MODE")
            row = conn.execute(f"SELECT {_RETURN_COLUMNS} FROM returns WHERE idem_key = %s", (key,)).fetchone()
            existing = reuse_return(return_from_row(row) if row else None, order_number, sku, key)
            if existing is not None:
                return existing
            item = returnable_item(
                _order(conn, order_number, lock=True), order_number, sku, _product_for_sku(conn, sku),
                self._policies, self.today(), _returns(conn, order_number),
            )  # fmt: skip
            (seq,) = _one(conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM returns"))
            ret = new_return(order_number, item, self.today(), seq, _ids_from(conn, "returns", "R", seq))
            conn.execute(
                "INSERT INTO returns (id, seq, order_number, sku, status, refund_amount, updated, idem_key) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (ret.id, seq, ret.order, ret.sku, ret.status, ret.refund_amount, ret.updated, key),
            )
            return ret

        return self._run(work)

    def cancel_order(self, number: str) -> Order:
        """Cancel an order still processing; a cancelled order is returned as it is."""

        def work(conn: Connection) -> Order:
            order = _order(conn, number, lock=True)
            if order is None:
                raise OrderNotFound(number)
            if not must_cancel(order):
                return order
            conn.execute("UPDATE orders SET status = 'cancelled' WHERE number = %s", (number,))
            return msgspec.structs.replace(order, status="cancelled")

        return self._run(work)

    def change_address(self, number: str, address: str, *, key: str) -> AddressChange:
        """Set a new shipping address on an order still processing, idempotently by ``key``."""
        cleaned = clean_text(address, "address")

        def work(conn: Connection) -> AddressChange:
            conn.execute("LOCK TABLE address_changes IN SHARE ROW EXCLUSIVE MODE")
            row = conn.execute(
                "SELECT order_number, address, changed FROM address_changes WHERE idem_key = %s", (key,)
            ).fetchone()
            existing = reuse_address_change(_address_change(row) if row else None, number, cleaned, key)
            if existing is not None:
                return existing
            change = address_change(_order(conn, number, lock=True), number, cleaned, self.today())
            conn.execute(
                "INSERT INTO address_changes (order_number, address, changed, idem_key) VALUES (%s, %s, %s, %s)",
                (change.order, change.address, change.changed, key),
            )
            return change

        return self._run(work)

    def address_changes(self, number: str) -> list[AddressChange]:
        """The address changes made to an order, oldest first."""
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT order_number, address, changed FROM address_changes WHERE order_number = %s ORDER BY seq",
                (number,),
            ).fetchall()
        )
        return [_address_change(row) for row in rows]

    def leave_message(self, caller_number: str, text: str, *, key: str, order_number: str | None = None) -> Message:
        """Record a caller's message for the team, idempotently by ``key``."""
        cleaned = clean_text(text, "message")

        def work(conn: Connection) -> Message:
            conn.execute("LOCK TABLE messages IN SHARE ROW EXCLUSIVE MODE")
            row = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE idem_key = %s", (key,)).fetchone()
            existing = reuse_message(self._message(row) if row else None, cleaned, key)
            if existing is not None:
                return existing
            (seq,) = _one(conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM messages"))
            taken = _ids_from(conn, "messages", "M", seq)
            message = new_message(caller_number, cleaned, order_number, self._clock(), seq, taken)
            conn.execute(
                "INSERT INTO messages (id, seq, caller_number, text, created, order_number, idem_key) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (message.id, seq, message.caller_number, message.text, message.created, message.order_number, key),
            )
            return message

        return self._run(work)

    def messages(self) -> list[Message]:
        """Every message left by callers, oldest first."""
        rows = self._run(lambda conn: conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages ORDER BY seq").fetchall())
        return [self._message(row) for row in rows]

    # -- connection ------------------------------------------------------------------------------------------

    def _connect(self) -> Connection:
        extra: dict[str, Any] = {"application_name": "voxcart-brain"}
        if "connect_timeout" not in self._target.params:
            extra["connect_timeout"] = _CONNECT_TIMEOUT
        try:
            return psycopg.connect(self._conninfo, autocommit=True, **extra)
        except psycopg.Error as exc:
            raise StoreUnavailable(self._target.explain(exc)) from None

    def _run(self, work: Callable[[Connection], T]) -> T:
        """``work`` in one transaction, reconnecting once if the connection was lost (see the invariants)."""
        with self._lock:
            for attempt in (1, 2):
                started = time.monotonic()
                if self._conn is None or self._conn.closed:
                    try:
                        self._conn = self._connect()
                    except StoreUnavailable:
                        METRICS.request("error")
                        raise
                conn = self._conn
                try:
                    with conn.transaction():
                        value = work(conn)
                except psycopg.OperationalError as exc:
                    timed_out = isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.ConnectionTimeout)
                    METRICS.request("dropped" if conn.broken else "timeout" if timed_out else "error")
                    if conn.broken and attempt == 1:
                        conn.close()
                        self._conn = None
                        continue
                    raise StoreUnavailable(f"PostgreSQL {self._target}: {first_line(exc)}") from None
                except psycopg.Error as exc:
                    METRICS.request("error")
                    raise StoreError(f"PostgreSQL {self._target}: {first_line(exc)}") from None
                except Exception:  # the store's own rules (an order not found...): the database did its part
                    METRICS.request("ok")
                    raise
                METRICS.first_response(time.monotonic() - started)
                METRICS.request("ok")
                return value
            raise StoreUnavailable(f"PostgreSQL {self._target}: the connection was lost twice")

    def _message(self, row: Any) -> Message:
        created: dt.datetime = row[3]
        return Message(
            id=row[0], caller_number=row[1], text=row[2], created=created.astimezone(self._tz), order_number=row[4]
        )


def _one(cur: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    row = cur.fetchone()
    if row is None:
        raise StoreError("an aggregate query returned no row")
    return row


def _ids_from(conn: Connection, table: str, prefix: str, seq: int) -> list[str]:
    """Ids of ``table`` that ``<prefix><n>`` for ``n > seq`` could collide with (the rest cannot)."""
    rows = conn.execute(
        f"SELECT id FROM {table} WHERE id ~ %s AND substring(id FROM 2)::numeric > %s",
        (f"^{prefix}[0-9]{{1,30}}$", seq),
    ).fetchall()
    return [rid for (rid,) in rows]


def _orders(conn: Connection, where: str, args: tuple[Any, ...], *, lock: bool = False) -> list[Order]:
    rows = conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders {where}{' FOR UPDATE' if lock else ''}", args).fetchall()
    if not rows:
        return []
    items: dict[str, list[OrderItem]] = {row[0]: [] for row in rows}
    for number, sku, qty, price in conn.execute(
        "SELECT order_number, sku, qty, price FROM order_items WHERE order_number = ANY(%s) "
        "ORDER BY order_number, line",
        (list(items),),
    ):
        items[number].append(OrderItem(sku=sku, qty=qty, price=price))
    return [order_from_row(row, items[row[0]]) for row in rows]


def _order(conn: Connection, number: str, *, lock: bool = False) -> Order | None:
    found = _orders(conn, "WHERE number = %s", (number,), lock=lock)
    return found[0] if found else None


def _products(conn: Connection, where: str, args: tuple[Any, ...]) -> list[Product]:
    rows = conn.execute(
        f"SELECT id, name, category, price, aliases FROM products {where} ORDER BY pos", args
    ).fetchall()
    if not rows:
        return []
    variants: dict[str, list[Variant]] = {row[0]: [] for row in rows}
    for product_id, *variant in conn.execute(
        "SELECT product_id, sku, color, size, stock, restock_date FROM variants WHERE product_id = ANY(%s) "
        "ORDER BY product_id, pos",
        (list(variants),),
    ):
        variants[product_id].append(variant_from_row(variant))
    return [product_from_row(row, list(row[4]), variants[row[0]]) for row in rows]


def _product_for_sku(conn: Connection, sku: str) -> Product | None:
    found = _products(conn, "WHERE id = (SELECT product_id FROM variants WHERE sku = %s)", (sku,))
    return found[0] if found else None


def _returns(conn: Connection, number: str) -> list[Return]:
    rows = conn.execute(
        f"SELECT {_RETURN_COLUMNS} FROM returns WHERE order_number = %s ORDER BY seq", (number,)
    ).fetchall()
    return [return_from_row(row) for row in rows]


def _address_change(row: Any) -> AddressChange:
    changed = as_date(row[2])
    if changed is None:
        raise StoreError("an address change has no date")
    return AddressChange(order=row[0], address=row[1], changed=changed)
