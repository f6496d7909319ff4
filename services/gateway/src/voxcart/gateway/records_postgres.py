"""Call records in PostgreSQL (``DATABASE_URL``): one table, ``call_records``, in the connection's schema.

Invariants:
- The schema is created under a transaction-scoped advisory lock, so replicas starting together do not race.
- One connection per store, used under a lock; a connection found broken is reopened once per operation.
- No message built here contains the connection string's password (libpq may echo it: it is masked).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .records_store import (
    COLUMNS,
    CallRecord,
    RecordPage,
    RecordQuery,
    RecordStoreError,
    decode_body,
    page_of,
    row_values,
    where_clause,
)

__all__ = ["PostgresRecordStore"]

T = TypeVar("T")

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS call_records (
        call_sid TEXT PRIMARY KEY,
        started_ms DOUBLE PRECISION NOT NULL,
        ended_ms DOUBLE PRECISION NOT NULL,
        outcome TEXT,
        status TEXT NOT NULL,
        from_number TEXT NOT NULL,
        body TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS call_records_started ON call_records (started_ms DESC, call_sid DESC)",
    "CREATE INDEX IF NOT EXISTS call_records_from ON call_records (from_number, started_ms DESC)",
]

_UPSERT = f"""
INSERT INTO call_records ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (call_sid) DO UPDATE SET
    started_ms = excluded.started_ms, ended_ms = excluded.ended_ms, outcome = excluded.outcome,
    status = excluded.status, from_number = excluded.from_number, body = excluded.body
WHERE excluded.ended_ms >= call_records.ended_ms
"""


class PostgresRecordStore:
    """Call records in the PostgreSQL database ``conninfo`` names (a URL or ``key=value`` string).

    Raises:
        RecordStoreError: the string does not parse, or the server refuses or cannot be reached (the message names
            host, port and database, never the password).
    """

    def __init__(self, conninfo: str, connect_timeout: int = 5) -> None:
        found = re.match(r"^\w+://[^:/@]*:([^@]*)@", conninfo)
        self._password = found.group(1) if found else ""
        try:
            params: dict[str, Any] = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            message = f"DATABASE_URL is not a valid PostgreSQL connection string: {self._mask(exc)}"
            raise RecordStoreError(message) from None
        self._password = str(params.get("password") or self._password)
        host = params.get("host") or params.get("hostaddr") or "the local socket"
        dbname = params.get("dbname") or "(default)"
        self._where = f"PostgreSQL at {host}:{params.get('port') or 5432} (database {dbname!r})"
        self._conninfo = conninfo
        self._timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        with self._lock:
            conn = self._connect()
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext('voxcart.call_records'))")
                    for statement in _SCHEMA:
                        conn.execute(statement)
            except psycopg.Error as exc:
                message = f"{self._where}: cannot create the call_records table: {self._mask(exc)}"
                raise RecordStoreError(message) from None

    @property
    def where(self) -> str:
        return self._where

    def save(self, record: CallRecord) -> None:
        self._run(lambda c: c.execute(_UPSERT, row_values(record)))

    def get(self, call_sid: str) -> CallRecord | None:
        sql = "SELECT body FROM call_records WHERE call_sid = %s"
        rows = self._run(lambda c: c.execute(sql, (call_sid,)).fetchall())
        return decode_body(rows[0][0]) if rows else None

    def known(self, call_sids: Sequence[str]) -> set[str]:
        if not call_sids:
            return set()
        sql = "SELECT call_sid FROM call_records WHERE call_sid = ANY(%s)"
        return {row[0] for row in self._run(lambda c: c.execute(sql, (list(call_sids),)).fetchall())}

    def list(self, query: RecordQuery) -> RecordPage:
        where, params = where_clause(query, "%s")
        sql = f"SELECT body FROM call_records{where} ORDER BY started_ms DESC, call_sid DESC LIMIT %s"
        rows = self._run(lambda c: c.execute(sql, (*params, query.limit + 1)).fetchall())
        return page_of([decode_body(row[0]) for row in rows], query.limit)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- internals ----------------------------------------------------------------------------------------------
    def _mask(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split())
        return text.replace(self._password, "***") if self._password else text

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=self._timeout)
        except psycopg.Error as exc:
            raise RecordStoreError(f"cannot connect to {self._where} (DATABASE_URL): {self._mask(exc)}") from None
        return self._conn

    def _run(self, action: Callable[[psycopg.Connection[Any]], T]) -> T:
        with self._lock:
            for attempt in (1, 2):
                conn = self._connect()
                try:
                    return action(conn)
                except psycopg.OperationalError as exc:
                    if attempt == 2 or not conn.closed:
                        raise RecordStoreError(f"{self._where}: {self._mask(exc)}") from None
                    self._conn = None  # the connection broke: reconnect once
                except psycopg.Error as exc:
                    raise RecordStoreError(f"{self._where}: {self._mask(exc)}") from None
            raise AssertionError("unreachable")
