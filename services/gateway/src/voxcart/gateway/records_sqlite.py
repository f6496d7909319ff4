"""Call records in an embedded SQLite file (the default store).

Invariants:
- WAL journal and a 5 s busy timeout: several gateway replicas of one machine read and write the same file.
- One connection per store, used under a lock (the gateway calls it from worker threads).
- The parent folder is created; a path that cannot be opened raises :class:`RecordStoreError` naming it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

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

__all__ = ["SqliteRecordStore"]

T = TypeVar("T")

_CHUNK = 500
"""Parameters per ``IN (...)`` (older SQLite builds allow 999 in all)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS call_records (
    call_sid TEXT PRIMARY KEY,
    started_ms REAL NOT NULL,
    ended_ms REAL NOT NULL,
    outcome TEXT,
    status TEXT NOT NULL,
    from_number TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS call_records_started ON call_records (started_ms DESC, call_sid DESC);
CREATE INDEX IF NOT EXISTS call_records_from ON call_records (from_number, started_ms DESC);
"""

_UPSERT = f"""
INSERT INTO call_records ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (call_sid) DO UPDATE SET
    started_ms = excluded.started_ms, ended_ms = excluded.ended_ms, outcome = excluded.outcome,
    status = excluded.status, from_number = excluded.from_number, body = excluded.body
WHERE excluded.ended_ms >= call_records.ended_ms
"""


class SqliteRecordStore:
    """Call records in the SQLite file at ``path`` (``:memory:`` for a private, in-memory one)."""

    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        try:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self._path, timeout=5.0, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise RecordStoreError(f"cannot open the call records file {self._path} (RECORDS_PATH): {exc}") from None

    @property
    def where(self) -> str:
        return f"SQLite {self._path}"

    def save(self, record: CallRecord) -> None:
        self._run(lambda c: c.execute(_UPSERT, row_values(record)))

    def get(self, call_sid: str) -> CallRecord | None:
        sql = "SELECT body FROM call_records WHERE call_sid = ?"
        rows = self._run(lambda c: c.execute(sql, (call_sid,)).fetchall())
        return decode_body(rows[0][0]) if rows else None

    def known(self, call_sids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(call_sids), _CHUNK):
            chunk = tuple(call_sids[start : start + _CHUNK])
            sql = f"SELECT call_sid FROM call_records WHERE call_sid IN ({', '.join('?' * len(chunk))})"
            found.update(row[0] for row in self._fetch(sql, chunk))
        return found

    def list(self, query: RecordQuery) -> RecordPage:
        where, params = where_clause(query, "?")
        sql = f"SELECT body FROM call_records{where} ORDER BY started_ms DESC, call_sid DESC LIMIT ?"
        rows = self._run(lambda c: c.execute(sql, (*params, query.limit + 1)).fetchall())
        return page_of([decode_body(row[0]) for row in rows], query.limit)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _fetch(self, sql: str, params: tuple[object, ...]) -> Sequence[Any]:
        return self._run(lambda c: c.execute(sql, params).fetchall())

    def _run(self, action: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return action(self._conn)
            except sqlite3.Error as exc:
                raise RecordStoreError(f"call records file {self._path}: {exc}") from None
