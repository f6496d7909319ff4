"""The call record: who said what, when, the outcome and per-turn latency; live from the bus, then persisted.

Brain writes the turns (``vc:call:{sid}:turns``) in its fenced commits, so a turn appears as soon as it is
final; the gateway writes the call's numbers, status, end reason and measured latencies (``...:meta``). Once the
call has ended, :mod:`voxcart.gateway.recorder` copies the record into the :class:`RecordStore`, which keeps it
after the Redis keys expire.

Invariants:
- Reads prefer the store; a call without a stored record (live, or ended and not yet written) is read from Redis.
- A listing merges both by (started_ms, CallSid) descending, each call once (the stored record wins).
"""

from __future__ import annotations

import asyncio
from typing import Any

from voxcart.common import events as ev
from voxcart.common.bus import Bus, keys

from .records_store import CallRecord, LatencySummary, Outcome, RecordPage, RecordQuery, RecordStore, Turn, page_of

__all__ = ["classify_outcome", "get_record", "list_records", "read_record"]

FAILED_REASONS = frozenset({"protocol error", "failed", "error"})
"""End reasons that mean the call broke on our side."""


def classify_outcome(end_reason: str | None, turns: tuple[Turn, ...] | list[Turn]) -> Outcome:
    """What came of a call, from how its stream ended and its turns.

    - ``transferred``: handed to a person.
    - ``failed``: the stream broke (a protocol error), the agent's last word was a store-failure apology, or the
      caller spoke and the agent never answered.
    - ``abandoned``: the agent hung up after two silences, or the caller hung up before the agent's goodbye.
    - ``completed``: the agent said goodbye (the job done, or the caller's goodbye) or ended the call.

    Args:
        end_reason: the gateway's reason (``agent ended``, ``caller hung up``, ``socket closed``, ``transferred``,
            ``protocol error``).
        turns: the call's turns in order.

    Returns:
        One of :data:`voxcart.gateway.records_store.OUTCOMES`.
    """
    if end_reason == "transferred":
        return "transferred"
    if end_reason in FAILED_REASONS:
        return "failed"
    agent = [i for i, t in enumerate(turns) if t.speaker == "agent"]
    if not agent:
        return "failed" if turns else "abandoned"
    last = turns[agent[-1]]
    if last.intent == "store_error":
        return "failed"
    if last.intent == "goodbye":
        before = turns[agent[-1] - 1] if agent[-1] > 0 else None
        if before is not None and before.speaker == "agent" and before.intent == "silence":
            return "abandoned"
        return "completed"
    return "completed" if end_reason == "agent ended" else "abandoned"


async def read_record(bus: Bus, sid: str) -> CallRecord | None:
    """The call's record as Redis holds it now (``None`` once its keys are gone); outcome set once it ended."""
    raw = await bus.hgetall(keys.meta(sid))
    if not raw:
        return None
    meta = {k: v.decode() for k, v in raw.items()}
    latencies = {int(k.split(":", 1)[1]): float(v) for k, v in meta.items() if k.startswith("latency:")}
    turns: list[Turn] = []
    for entry in await bus.range(keys.turns(sid)):
        try:
            turn = ev.decode(entry.data)
        except ev.EventDecodeError:
            continue
        if not isinstance(turn, ev.TurnRecord):
            continue
        caller = turn.speaker == "caller"
        turns.append(
            Turn(
                speaker=turn.speaker,
                text=turn.text,
                turn_no=turn.turn_no,
                started_ms=turn.started,
                ended_ms=turn.ended,
                intent=None if caller else turn.intent,
                confidence=turn.confidence if caller else None,
                latency_s=None if caller else latencies.get(turn.turn_no),
            )
        )
    status = meta.get("status", "unknown")
    end_reason = meta.get("outcome")  # the meta field keeps its historical name
    ended = status == "completed"
    return CallRecord(
        call_sid=sid,
        from_number=meta.get("from", ""),
        to_number=meta.get("to", ""),
        status=status,
        outcome=classify_outcome(end_reason, turns) if ended else None,
        end_reason=end_reason,
        transfer_to=meta.get("transfer_to") or None,
        started_ms=float(meta["started"]) if "started" in meta else None,
        ended_ms=float(meta["ended"]) if "ended" in meta else None,
        turns=tuple(turns),
        latency=LatencySummary.of(latencies.values()),
    )


async def get_record(bus: Bus, store: RecordStore, sid: str) -> dict[str, Any] | None:
    """``GET /calls/{sid}``: the stored record, else the live one; ``None`` for an unknown call.

    Raises:
        RecordStoreError: the store failed.
    """
    record = await asyncio.to_thread(store.get, sid)
    if record is None:
        record = await read_record(bus, sid)
    return record.to_json() if record is not None else None


async def list_records(bus: Bus, store: RecordStore, query: RecordQuery) -> RecordPage:
    """``GET /calls``: one page of stored and live calls matching ``query`` (see the module invariants).

    Raises:
        RecordStoreError: the store failed.
    """
    stored = await asyncio.to_thread(store.list, query)
    live = await _unstored(bus, store, query)
    merged = sorted([*live, *stored.records], key=lambda r: r.sort_key, reverse=True)
    if stored.next_cursor is not None and len(merged) <= query.limit:
        return RecordPage(merged, merged[-1].sort_key)
    return page_of(merged, query.limit)


async def _unstored(bus: Bus, store: RecordStore, query: RecordQuery) -> list[CallRecord]:
    """Calls of the Redis index (live, or ended and not yet stored) on this page of ``query``."""
    high = query.after[0] if query.after is not None else float("inf")
    if query.until_ms is not None:
        high = min(high, query.until_ms)
    low = query.since_ms if query.since_ms is not None else float("-inf")
    candidates = await bus.zrange_by_score(keys.CALLS_INDEX, low, high, reverse=True, limit=query.limit * 2 + 1)
    sids = [sid for sid, _ in candidates]
    known = await asyncio.to_thread(store.known, sids) if sids else set()
    out: list[CallRecord] = []
    for sid in sids:
        if sid in known:
            continue
        record = await read_record(bus, sid)
        if record is not None and query.matches(record):
            out.append(record)
    return out
