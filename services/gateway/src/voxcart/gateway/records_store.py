"""Persisted call records: the record's shape, the query, and the store interface with its two backends.

A record is written once a call has ended (see :mod:`voxcart.gateway.recorder`) and kept after the call's Redis
keys expire: embedded SQLite (``RECORDS_PATH``, WAL, shared by every gateway replica of one machine) unless
``DATABASE_URL`` names a PostgreSQL.

Invariants:
- One row per CallSid. Writing a record again is an upsert that keeps the row with the latest ``ended_ms``, so a
  call end processed twice (two replicas, a restart's backfill) leaves one record, the final one.
- Listing order is ``started_ms`` descending, then CallSid descending; a cursor is the (started_ms, CallSid) of
  the last item of a page, and the next page holds the items strictly after it in that order.
- The schema is created when missing; a store never drops or rewrites existing rows on open.
- Phone numbers are stored as received; :meth:`CallRecord.to_json` masks the caller's number.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, Protocol

import msgspec

from voxcart.common.logs import mask
from voxcart.common.settings import Settings

__all__ = [
    "COLUMNS",
    "OUTCOMES",
    "CallRecord",
    "Cursor",
    "LatencySummary",
    "Outcome",
    "RecordPage",
    "RecordQuery",
    "RecordStore",
    "RecordStoreError",
    "Turn",
    "decode_body",
    "decode_cursor",
    "default_records_path",
    "encode_cursor",
    "open_record_store",
    "page_of",
    "row_values",
    "where_clause",
]

Outcome = Literal["completed", "transferred", "abandoned", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("completed", "transferred", "abandoned", "failed")


class RecordStoreError(RuntimeError):
    """The records store cannot be opened, read or written; the message says where and why (no password)."""


class Turn(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One turn of a call: the caller's transcript or the agent's reply."""

    speaker: Literal["caller", "agent"]
    text: str
    turn_no: int
    started_ms: float | None = None
    ended_ms: float | None = None
    intent: str | None = None
    """The agent's intent (agent turns)."""
    confidence: float | None = None
    """The recognizer's confidence (caller turns)."""
    latency_s: float | None = None
    """Agent turns: end of the caller's speech to the first audio of the reply, as the gateway measured it."""

    def to_json(self) -> dict[str, object]:
        item: dict[str, object] = {
            "speaker": self.speaker,
            "text": self.text,
            "turn_no": self.turn_no,
            "started_ms": self.started_ms,
            "ended_ms": self.ended_ms,
        }
        if self.speaker == "caller":
            item["confidence"] = self.confidence
        else:
            item["intent"] = self.intent
            item["latency_s"] = self.latency_s
        return item


class LatencySummary(msgspec.Struct, frozen=True, kw_only=True):
    """Per-call reply latency (seconds) over the turns the gateway measured; nearest-rank percentiles."""

    turns: int = 0
    p50_s: float | None = None
    p95_s: float | None = None
    max_s: float | None = None

    @classmethod
    def of(cls, values: Iterable[float]) -> LatencySummary:
        ordered = sorted(values)
        if not ordered:
            return cls()

        def rank(percent: int) -> float:
            return ordered[max(0, math.ceil(percent * len(ordered) / 100) - 1)]

        return cls(turns=len(ordered), p50_s=rank(50), p95_s=rank(95), max_s=ordered[-1])


class CallRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Everything kept about one call."""

    call_sid: str
    from_number: str = ""
    to_number: str = ""
    status: str = "unknown"
    """``ringing``, ``in-progress`` while live; ``completed`` once the call has ended."""
    outcome: Outcome | None = None
    """Set once the call has ended (see :func:`voxcart.gateway.records.classify_outcome`)."""
    end_reason: str | None = None
    """How the media stream ended, as the gateway saw it (``agent ended``, ``caller hung up``, ``transferred``...)."""
    transfer_to: str | None = None
    started_ms: float | None = None
    ended_ms: float | None = None
    turns: tuple[Turn, ...] = ()
    latency: LatencySummary = msgspec.field(default_factory=LatencySummary)

    @property
    def sort_key(self) -> tuple[float, str]:
        """Position in listings (larger first): started, else ended, else 0."""
        return (self.started_ms or self.ended_ms or 0.0, self.call_sid)

    def summary_json(self) -> dict[str, object]:
        """The listing form: everything but the turns; the caller's number masked."""
        return {
            "call_sid": self.call_sid,
            "from": mask(self.from_number),
            "to": self.to_number,
            "status": self.status,
            "outcome": self.outcome,
            "end_reason": self.end_reason,
            "started_ms": self.started_ms,
            "ended_ms": self.ended_ms,
            "latency": msgspec.to_builtins(self.latency),
        }

    def to_json(self) -> dict[str, object]:
        """The full record served by ``GET /calls/{CallSid}``."""
        return {**self.summary_json(), "turns": [t.to_json() for t in self.turns]}


Cursor = tuple[float, str]


def encode_cursor(cursor: Cursor) -> str:
    """An opaque, URL-safe cursor for (started_ms, CallSid)."""
    return base64.urlsafe_b64encode(f"{cursor[0]!r}|{cursor[1]}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """Parse a cursor made by :func:`encode_cursor`.

    Raises:
        ValueError: it is not one (the message says so).
    """
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        started, sid = raw.split("|", 1)
        return float(started), sid
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError(f"cursor {text[:40]!r} is not one this API returned (use next_cursor as given)") from None


class RecordQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Filters of a listing; every field optional. ``since``/``until`` bound ``started_ms`` (inclusive/exclusive)."""

    since_ms: float | None = None
    until_ms: float | None = None
    outcome: Outcome | None = None
    status: str | None = None
    from_numbers: tuple[str, ...] = ()
    """Any of these caller numbers (exact match)."""
    after: Cursor | None = None
    limit: int = 50

    def matches(self, record: CallRecord) -> bool:
        """The same filter in Python (for live calls read from Redis)."""
        started, _ = record.sort_key
        return (
            (self.since_ms is None or started >= self.since_ms)
            and (self.until_ms is None or started < self.until_ms)
            and (self.outcome is None or record.outcome == self.outcome)
            and (self.status is None or record.status == self.status)
            and (not self.from_numbers or record.from_number in self.from_numbers)
            and (self.after is None or record.sort_key < self.after)
        )


class RecordPage(msgspec.Struct, frozen=True):
    records: list[CallRecord]
    next_cursor: Cursor | None


class RecordStore(Protocol):
    """Where ended calls are kept. Methods block (run them in a thread from async code)."""

    @property
    def where(self) -> str:
        """The store's location for logs and errors (no password)."""
        ...

    def save(self, record: CallRecord) -> None:
        """Insert or update (see the module invariants)."""
        ...

    def get(self, call_sid: str) -> CallRecord | None: ...

    def known(self, call_sids: Sequence[str]) -> set[str]:
        """Which of these calls have a record."""
        ...

    def list(self, query: RecordQuery) -> RecordPage: ...

    def close(self) -> None: ...


def default_records_path() -> Path:
    """``~/.local/share/voxcart/records.sqlite3``: per user, so every gateway replica of the machine shares it."""
    return Path.home() / ".local" / "share" / "voxcart" / "records.sqlite3"


def open_record_store(settings: Settings) -> RecordStore:
    """PostgreSQL when ``DATABASE_URL`` is set, else SQLite at ``RECORDS_PATH`` (default :func:`default_records_path`).

    Raises:
        RecordStoreError: the store cannot be opened (the message names it, never the password).
    """
    if settings.database_url:
        from .records_postgres import PostgresRecordStore

        return PostgresRecordStore(settings.database_url)
    from .records_sqlite import SqliteRecordStore

    return SqliteRecordStore(Path(settings.records_path) if settings.records_path else default_records_path())


def page_of(records: list[CallRecord], limit: int) -> RecordPage:
    """The first ``limit`` of ``records`` (fetched ``limit + 1``), and the cursor if there are more."""
    if len(records) > limit:
        records = records[:limit]
        return RecordPage(records, records[-1].sort_key)
    return RecordPage(records, None)


def where_clause(query: RecordQuery, placeholder: str) -> tuple[str, list[object]]:
    """SQL ``WHERE ...`` (or "") and its parameters for ``query``; both backends share the ``call_records`` schema."""
    parts: list[str] = []
    params: list[object] = []
    if query.since_ms is not None:
        parts.append(f"started_ms >= {placeholder}")
        params.append(query.since_ms)
    if query.until_ms is not None:
        parts.append(f"started_ms < {placeholder}")
        params.append(query.until_ms)
    if query.outcome is not None:
        parts.append(f"outcome = {placeholder}")
        params.append(query.outcome)
    if query.status is not None:
        parts.append(f"status = {placeholder}")
        params.append(query.status)
    if query.from_numbers:
        parts.append(f"from_number IN ({', '.join([placeholder] * len(query.from_numbers))})")
        params.extend(query.from_numbers)
    if query.after is not None:
        p = placeholder
        parts.append(f"(started_ms < {p} OR (started_ms = {p} AND call_sid < {p}))")
        params.extend([query.after[0], query.after[0], query.after[1]])
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


def row_values(record: CallRecord) -> tuple[object, ...]:
    """The ``call_records`` columns of a record, in :data:`COLUMNS` order."""
    started, _ = record.sort_key
    return (
        record.call_sid,
        started,
        record.ended_ms or started,
        record.outcome,
        record.status,
        record.from_number,
        msgspec.json.encode(record).decode(),
    )


COLUMNS = "call_sid, started_ms, ended_ms, outcome, status, from_number, body"


def decode_body(body: str | bytes) -> CallRecord:
    """A stored record.

    Raises:
        RecordStoreError: the stored text is not a record (a corrupt row).
    """
    try:
        return msgspec.json.decode(body, type=CallRecord)
    except msgspec.DecodeError as exc:
        raise RecordStoreError(f"a stored call record does not decode: {exc}") from None
