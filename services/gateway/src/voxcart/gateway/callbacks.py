"""Calls that never reached the agent because every line was busy, kept in the call records store.

- A caller on hold who pressed 1 gets a record with status ``callback-requested`` (no outcome yet: nobody has
  called back). ``GET /callbacks`` lists them, newest first, *with the full number* (the point is to call it back),
  behind ``API_TOKEN`` like ``/calls``; ``GET /calls?status=callback-requested`` lists them too, masked.
- A call that waited the longest allowed and was ended politely is ``completed``/``failed``; one whose caller hung
  up on hold (Twilio's status callback says so) is ``completed``/``abandoned``. Both show in ``GET /calls``.

Invariants: records are upserts keyed by CallSid that keep the latest end, so a call that timed out and then
pressed 1 ends up ``callback-requested``; a store failure raises :class:`RecordStoreError` (the caller is not
promised a call back that was not saved).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

import msgspec
from fastapi import APIRouter, Header, HTTPException
from fastapi.responses import JSONResponse

from .records_api import BadFilter, parse_query
from .records_store import CallRecord, Outcome, RecordStore, RecordStoreError, encode_cursor

__all__ = ["CALLBACK_STATUS", "callbacks_router", "record_callback", "record_unanswered"]

CALLBACK_STATUS = "callback-requested"


async def record_callback(
    store: RecordStore, sid: str, from_number: str, to_number: str, arrival_ms: float, now_ms: float
) -> None:
    """Keep the request of ``from_number`` to be called back (raises :class:`RecordStoreError`)."""
    record = CallRecord(
        call_sid=sid,
        from_number=from_number,
        to_number=to_number,
        status=CALLBACK_STATUS,
        end_reason="asked to be called back: all lines were busy",
        started_ms=arrival_ms,
        ended_ms=now_ms,
    )
    await asyncio.to_thread(store.save, record)


async def record_unanswered(
    store: RecordStore,
    sid: str,
    from_number: str,
    to_number: str,
    arrival_ms: float,
    now_ms: float,
    outcome: Outcome,
    reason: str,
) -> None:
    """Keep a call that ended on hold: ``failed`` (we ended it) or ``abandoned`` (the caller hung up)."""
    record = CallRecord(
        call_sid=sid,
        from_number=from_number,
        to_number=to_number,
        status="completed",
        outcome=outcome,
        end_reason=reason,
        started_ms=arrival_ms,
        ended_ms=now_ms,
    )
    await asyncio.to_thread(store.save, record)


def callbacks_router(store: RecordStore, authorize: Callable[[str | None], None]) -> APIRouter:
    """``GET /callbacks`` (``limit`` 1-500, ``cursor``, ``since``, ``until`` as for ``GET /calls``)."""
    router = APIRouter()

    @router.get("/callbacks")
    async def callbacks(
        authorization: Annotated[str | None, Header()] = None,
        since: str | None = None,
        until: str | None = None,
        limit: str | None = None,
        cursor: str | None = None,
    ) -> JSONResponse:
        authorize(authorization)
        try:
            query = parse_query(since=since, until=until, limit=limit, cursor=cursor)
        except BadFilter as exc:
            raise HTTPException(400, str(exc)) from None
        query = msgspec.structs.replace(query, status=CALLBACK_STATUS)
        try:
            page = await asyncio.to_thread(store.list, query)
        except RecordStoreError as exc:
            raise HTTPException(503, f"call records unavailable: {exc}") from None
        items = [
            {
                "call_sid": r.call_sid,
                "from": r.from_number,
                "to": r.to_number,
                "requested_ms": r.ended_ms,
                "waited_s": round(((r.ended_ms or 0) - (r.started_ms or 0)) / 1000, 1),
            }
            for r in page.records
        ]
        next_cursor = encode_cursor(page.next_cursor) if page.next_cursor is not None else None
        return JSONResponse({"callbacks": items, "next_cursor": next_cursor})

    return router
