"""The voxcart store's tables in PostgreSQL: creating them, checking them, and loading a seed into them.

Invariants:
- Tables are created unqualified, in the first schema of the connection's ``search_path`` (so one database can
  hold several shops, one per schema: ``?options=-csearch_path%3Dshop_a``). :func:`prepare` creates what is
  missing; :func:`check` never changes anything.
- The seed rule: the ``shop`` row records the SHA-256 of the seed last loaded. Loading a seed whose digest is
  already recorded changes nothing (returns, cancels and address changes made since are kept); loading any
  other seed replaces every table the seed describes (and the returns and address changes, which refer to
  its orders) in the same transaction, so the data is never duplicated or half-loaded. Callers' messages are
  kept: they are not the shop's data.
- :func:`prepare` runs in one transaction under a transaction-scoped advisory lock, so replicas that start
  together create the tables and load the seed exactly once.
- Column sets are checked against :data:`EXPECTED`: a table of the same name that is not voxcart's is
  refused with its missing columns named, never written to.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from voxcart.brain.store._base import StoreUnavailable
from voxcart.brain.store._rows import COLUMNS, seed_rows
from voxcart.common.seed import ORDER_STATUSES, RETURN_STATUSES, Policies, Seed, StoreInfo

__all__ = ["EXPECTED", "check", "prepare", "read_shop", "seed_digest"]

Connection = psycopg.Connection[tuple[Any, ...]]

_LOCK_KEY: Final = 0x766F78636172  # "voxcar": the advisory lock held while tables are created and a seed loaded


def _one_of(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


_SCHEMA: Final[tuple[str, ...]] = (
    """CREATE TABLE IF NOT EXISTS shop (
        id integer PRIMARY KEY CHECK (id = 1), info jsonb NOT NULL, policies jsonb NOT NULL,
        seed_digest text NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS products (
        id text PRIMARY KEY, pos integer NOT NULL, name text NOT NULL, category text NOT NULL,
        price double precision NOT NULL CHECK (price >= 0), aliases text[] NOT NULL DEFAULT '{}')""",
    """CREATE TABLE IF NOT EXISTS variants (
        sku text PRIMARY KEY, product_id text NOT NULL REFERENCES products (id), pos integer NOT NULL,
        color text, size text, stock integer NOT NULL CHECK (stock >= 0), restock_date date)""",
    "CREATE INDEX IF NOT EXISTS variants_product ON variants (product_id, pos)",
    """CREATE TABLE IF NOT EXISTS customers (
        id text PRIMARY KEY, pos integer NOT NULL, name text NOT NULL, phone text, phone_key text, email text,
        zip text)""",
    "CREATE INDEX IF NOT EXISTS customers_phone ON customers (phone_key, pos)",
    f"""CREATE TABLE IF NOT EXISTS orders (
        number text PRIMARY KEY, customer_id text NOT NULL REFERENCES customers (id), placed date NOT NULL,
        status text NOT NULL CHECK (status IN ({_one_of(ORDER_STATUSES)})), carrier text, tracking text,
        eta date, delivered date)""",
    "CREATE INDEX IF NOT EXISTS orders_customer ON orders (customer_id, placed)",
    """CREATE TABLE IF NOT EXISTS order_items (
        order_number text NOT NULL REFERENCES orders (number), line integer NOT NULL,
        sku text NOT NULL REFERENCES variants (sku), qty integer NOT NULL CHECK (qty >= 1),
        price double precision NOT NULL, PRIMARY KEY (order_number, line))""",
    f"""CREATE TABLE IF NOT EXISTS returns (
        id text PRIMARY KEY, seq integer NOT NULL, order_number text NOT NULL REFERENCES orders (number),
        sku text NOT NULL, status text NOT NULL CHECK (status IN ({_one_of(RETURN_STATUSES)})),
        refund_amount double precision, updated date NOT NULL, idem_key text UNIQUE)""",
    "CREATE INDEX IF NOT EXISTS returns_order ON returns (order_number, seq)",
    """CREATE TABLE IF NOT EXISTS address_changes (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, order_number text NOT NULL REFERENCES orders (number),
        address text NOT NULL, changed date NOT NULL, idem_key text UNIQUE NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS address_changes_order ON address_changes (order_number, seq)",
    """CREATE TABLE IF NOT EXISTS messages (
        id text PRIMARY KEY, seq integer NOT NULL, caller_number text NOT NULL, text text NOT NULL,
        created timestamptz NOT NULL, order_number text, idem_key text UNIQUE NOT NULL)""",
)

EXPECTED: Final[dict[str, tuple[str, ...]]] = {
    "shop": ("id", "info", "policies", "seed_digest", "loaded_at"),
    **COLUMNS,
    "address_changes": ("seq", "order_number", "address", "changed", "idem_key"),
    "messages": ("id", "seq", "caller_number", "text", "created", "order_number", "idem_key"),
}
"""Every table of a PostgreSQL store and the columns voxcart reads and writes."""

_REPLACED: Final = ("address_changes", "returns", "order_items", "orders", "customers", "variants", "products", "shop")
"""Tables emptied when a different seed is loaded, children first (messages are kept)."""


def seed_digest(seed: Seed) -> str:
    """SHA-256 of the seed's canonical JSON: equal for equal data, whatever the file's layout."""
    return hashlib.sha256(msgspec.json.encode(seed)).hexdigest()


def prepare(conn: Connection, seed: Seed) -> bool:
    """Create the tables if missing and load ``seed`` unless it is already there (see the module invariants).

    Args:
        conn: an open connection in autocommit mode (this function opens its own transaction).
        seed: the validated store data.

    Returns:
        True when the seed was loaded now, False when the database already held it.

    Raises:
        StoreUnavailable: a table of the same name exists but is not voxcart's.
    """
    digest = seed_digest(seed)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        _require_schema(conn)
        _check_columns(conn)  # before creating: an index on a foreign table of the same name would fail obscurely
        for statement in _SCHEMA:
            conn.execute(statement)
        row = conn.execute("SELECT seed_digest FROM shop WHERE id = 1").fetchone()
        if row is not None and row[0] == digest:
            return False
        for table in _REPLACED:
            conn.execute(f"DELETE FROM {table}")
        with conn.cursor() as cur:
            for table, rows in seed_rows(seed).items():
                with cur.copy(f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN") as copy:
                    for values in rows:
                        copy.write_row(values)
        conn.execute(
            "INSERT INTO shop (id, info, policies, seed_digest) VALUES (1, %s, %s, %s)",
            (Jsonb(msgspec.to_builtins(seed.store)), Jsonb(msgspec.to_builtins(seed.policies)), digest),
        )
        return True


def check(conn: Connection) -> None:
    """Check that the database holds a voxcart store (every table, its columns, and the shop row).

    Raises:
        StoreUnavailable: tables are missing, are not voxcart's, or hold no shop; the message says what to do.
    """
    with conn.transaction():
        _require_schema(conn)
        _check_columns(conn, require_all=True)
        if conn.execute("SELECT 1 FROM shop WHERE id = 1").fetchone() is None:
            raise StoreUnavailable(
                f"{_where(conn)} has the voxcart tables but no shop in them: "
                "start once with STORE_SEED set to load a seed"
            )


def read_shop(conn: Connection) -> tuple[StoreInfo, Policies]:
    """The shop's info and policies from the ``shop`` row.

    Raises:
        StoreUnavailable: no shop row, or one that does not decode (the message names the field).
    """
    row = conn.execute("SELECT info, policies FROM shop WHERE id = 1").fetchone()
    if row is None:
        raise StoreUnavailable(f"{_where(conn)} holds no shop: start once with STORE_SEED set to load a seed")
    try:
        return msgspec.convert(row[0], StoreInfo), msgspec.convert(row[1], Policies)
    except msgspec.ValidationError as exc:
        raise StoreUnavailable(f"{_where(conn)}: table shop: {exc}") from None


def _where(conn: Connection) -> str:
    schema = conn.execute("SELECT current_schema()").fetchone()
    info = conn.info
    return f"database {info.dbname!r} at {info.host}:{info.port} (schema {schema[0] if schema else None!r})"


def _require_schema(conn: Connection) -> None:
    row = conn.execute("SELECT current_schema(), current_setting('search_path')").fetchone()
    if row is None or row[0] is None:
        path = row[1] if row else "?"
        raise StoreUnavailable(
            f"database {conn.info.dbname!r} at {conn.info.host}:{conn.info.port}: no schema of the search_path "
            f"({path}) exists: create it (CREATE SCHEMA ...) or fix options=-csearch_path in the URL"
        )


def _check_columns(conn: Connection, *, require_all: bool = False) -> None:
    rows = conn.execute(
        "SELECT t.name, a.attname FROM unnest(%s::text[]) AS t (name) LEFT JOIN pg_attribute a "
        "ON a.attrelid = to_regclass(quote_ident(current_schema()) || '.' || t.name) "
        "AND a.attnum > 0 AND NOT a.attisdropped",
        (list(EXPECTED),),
    ).fetchall()
    found: dict[str, set[str]] = {table: set() for table in EXPECTED}
    for table, column in rows:
        if column is not None:
            found[table].add(column)
    missing_tables = [table for table in EXPECTED if not found[table]]
    if require_all and missing_tables:
        what = "no voxcart store" if len(missing_tables) == len(EXPECTED) else "an incomplete voxcart store"
        raise StoreUnavailable(
            f"{_where(conn)} has {what}: missing table(s) {', '.join(missing_tables)}; "
            "start once with STORE_SEED set to create them and load a seed"
        )
    for table in EXPECTED:
        lacking = [c for c in EXPECTED[table] if found[table] and c not in found[table]]
        if lacking:
            raise StoreUnavailable(
                f"{_where(conn)}: table {table} has no column(s) {', '.join(lacking)}: it is not a voxcart table; "
                "use a database or schema of its own for voxcart (e.g. ?options=-csearch_path%3Dvoxcart)"
            )
