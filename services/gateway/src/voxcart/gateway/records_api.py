"""``GET /calls`` and ``GET /calls/{CallSid}``: call records, stored and live, behind ``API_TOKEN``.

Filters of ``GET /calls`` (all optional): ``since`` / ``until`` (on the call's start; ISO 8601 such as
``2026-11-25T13:00:00Z`` or a date, or epoch milliseconds; ``since`` inclusive, ``until`` exclusive),
``outcome`` (``completed``, ``transferred``, ``abandoned``, ``failed``), ``status``, ``from`` (the caller's
number, E.164; a ``+`` sent unencoded arrives as a space and is taken back), ``limit`` (1-500, default 50) and
``cursor`` (the ``next_cursor`` of the previous page). The answer is ``{"calls": [...], "next_cursor": ...}``.

Invariants: a bad filter gets 400 naming the parameter and what was expected; a failing store gets 503.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import JSONResponse

from voxcart.common.bus import Bus

from .records import get_record, list_records
from .records_store import OUTCOMES, RecordQuery, RecordStore, RecordStoreError, decode_cursor, encode_cursor

__all__ = ["MAX_LIMIT", "parse_query", "parse_time", "records_router"]

MAX_LIMIT = 500


class BadFilter(ValueError):
    """A query parameter of ``GET /calls`` is malformed; the message names it."""


def parse_time(name: str, text: str) -> float:
    """Epoch milliseconds from ISO 8601 (a naive time or a date is UTC) or from epoch milliseconds.

    Raises:
        BadFilter: neither.
    """
    value = text.strip()
    try:
        return float(value) if value.replace(".", "", 1).isdigit() else _iso_ms(value)
    except ValueError:
        raise BadFilter(
            f"{name}={text[:40]!r}: expected an ISO 8601 time (2026-11-25T13:00:00Z), a date or epoch milliseconds"
        ) from None


def _iso_ms(value: str) -> float:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp() * 1000.0


def parse_query(
    *,
    since: str | None = None,
    until: str | None = None,
    outcome: str | None = None,
    status: str | None = None,
    from_number: str | None = None,
    limit: str | None = None,
    cursor: str | None = None,
) -> RecordQuery:
    """The :class:`RecordQuery` of ``GET /calls``'s parameters.

    Raises:
        BadFilter: a parameter is malformed or out of range (the message names it).
    """
    since_ms = parse_time("since", since) if since else None
    until_ms = parse_time("until", until) if until else None
    if since_ms is not None and until_ms is not None and until_ms <= since_ms:
        raise BadFilter(f"until={until!r} is not after since={since!r}")
    if outcome and outcome not in OUTCOMES:
        raise BadFilter(f"outcome={outcome[:40]!r}: expected one of {', '.join(OUTCOMES)}")
    count = 50
    if limit:
        # isdecimal, not isdigit ('²' is a digit int() refuses); 6 digits at most (int() refuses over 4300)
        if not (limit.strip().isdecimal() and len(limit.strip()) <= 6) or not 1 <= int(limit) <= MAX_LIMIT:
            raise BadFilter(f"limit={limit[:40]!r}: expected an integer from 1 to {MAX_LIMIT}")
        count = int(limit)
    numbers: tuple[str, ...] = ()
    if from_number:
        number = from_number.strip()
        digits = number.removeprefix("+")
        if not digits.isdigit() or len(digits) > 20:
            raise BadFilter(f"from={from_number[:40]!r}: expected a phone number such as +15555550123")
        numbers = (number,) if number.startswith("+") else (f"+{digits}", digits)
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError as exc:
        raise BadFilter(str(exc)) from None
    return RecordQuery(
        since_ms=since_ms,
        until_ms=until_ms,
        outcome=outcome or None,
        status=status or None,
        from_numbers=numbers,
        after=after,
        limit=count,
    )


def records_router(bus: Bus, store: RecordStore, authorize: Callable[[str | None], None]) -> APIRouter:
    """The two record endpoints; ``authorize(authorization_header)`` raises 401 when the bearer token is wrong."""
    router = APIRouter()

    @router.get("/calls")
    async def calls(
        authorization: Annotated[str | None, Header()] = None,
        since: str | None = None,
        until: str | None = None,
        outcome: str | None = None,
        status: str | None = None,
        from_number: Annotated[str | None, Query(alias="from")] = None,
        limit: str | None = None,
        cursor: str | None = None,
    ) -> JSONResponse:
        authorize(authorization)
        try:
            query = parse_query(
                since=since,
                until=until,
                outcome=outcome,
                status=status,
                from_number=from_number,
                limit=limit,
                cursor=cursor,
            )
        except BadFilter as exc:
            raise HTTPException(400, str(exc)) from None
        try:
            page = await list_records(bus, store, query)
        except RecordStoreError as exc:
            raise HTTPException(503, f"call records unavailable: {exc}") from None
        return JSONResponse(
            {
                "calls": [r.summary_json() for r in page.records],
                "next_cursor": encode_cursor(page.next_cursor) if page.next_cursor is not None else None,
            }
        )

    @router.get("/calls/{call_sid}")
    async def call(call_sid: str, authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
        authorize(authorization)
        try:
            record = await get_record(bus, store, call_sid)
        except RecordStoreError as exc:
            raise HTTPException(503, f"call records unavailable: {exc}") from None
        if record is None:
            raise HTTPException(404, f"no call {call_sid!r}")
        return JSONResponse(record)

    return router
