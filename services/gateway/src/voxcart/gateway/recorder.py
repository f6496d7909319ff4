"""Writes a call's record to the :class:`RecordStore` once the call has ended (the gateway owns the call end).

Invariants:
- A record is written a short settle time after the end (``settle_s``), so the last turn and latency a worker or
  this process had in flight are in it; on shutdown the pending ones are written at once.
- Only calls whose Redis status is ``completed`` are written; writes are upserts (one record per call), so a call
  end processed twice — two replicas, or the startup backfill after a restart — leaves one record.
- At start, :meth:`CallRecorder.backfill` writes ended calls still in Redis that have no record (a gateway that
  stopped between a call's end and its write).
- A failing store never fails the call: the error is logged and the record stays readable from Redis until its
  keys expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from voxcart.common import events as ev
from voxcart.common.bus import Bus, BusError, keys
from voxcart.common.tasks import cancel_and_wait

from .records import read_record
from .records_store import RecordStore, RecordStoreError

__all__ = ["CallRecorder"]

log = logging.getLogger("voxcart.gateway.recorder")

BACKFILL_MAX = 1000
"""Most recent calls of the Redis index the startup backfill looks at."""


class CallRecorder:
    """Persists ended calls from Redis into ``store``."""

    def __init__(self, bus: Bus, store: RecordStore, settle_s: float = 1.0) -> None:
        self.bus = bus
        self.store = store
        self._settle_s = settle_s
        self._closing = asyncio.Event()
        self._pending: set[asyncio.Task[bool]] = set()
        self._backfill: asyncio.Task[int] | None = None

    def start(self) -> None:
        """Start the backfill in the background."""
        self._backfill = asyncio.create_task(self.backfill(), name="records-backfill")

    def call_ended(self, sid: str) -> None:
        """The call ended on this gateway: write its record after the settle time."""
        task = asyncio.create_task(self._after_settle(sid), name=f"record-{sid}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def persist(self, sid: str) -> bool:
        """Write the record of ``sid`` if the call has ended; ``True`` when written.

        A store or bus failure is logged (not raised): the call's record stays readable from Redis.
        """
        try:
            record = await read_record(self.bus, sid)
            if record is None or record.status != "completed":
                return False
            await asyncio.to_thread(self.store.save, record)
        except (BusError, RecordStoreError) as exc:
            log.error("could not store the call record: %s", exc, extra={"call_sid": sid})
            return False
        log.info("call record stored (%s)", record.outcome, extra={"call_sid": sid})
        return True

    async def backfill(self) -> int:
        """Write the ended calls still in Redis that have no record; returns how many were written."""
        oldest = ev.now_ms() - keys.CALL_TTL_MS - keys.ENDED_CALL_TTL_MS
        try:
            recent = await self.bus.zrange_by_score(
                keys.CALLS_INDEX, oldest, float("inf"), reverse=True, limit=BACKFILL_MAX
            )
            sids = [sid for sid, _ in recent]
            known = await asyncio.to_thread(self.store.known, sids) if sids else set()
        except (BusError, RecordStoreError) as exc:
            log.warning("call records backfill skipped: %s", exc)
            return 0
        written = 0
        for sid in sids:
            if sid not in known and not self._closing.is_set():
                written += await self.persist(sid)
        if written:
            log.info("call records backfill wrote %d record(s)", written)
        return written

    async def close(self) -> None:
        """Write the pending records now, stop the backfill, and close the store."""
        self._closing.set()
        await cancel_and_wait(self._backfill)
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await asyncio.to_thread(self.store.close)

    async def _after_settle(self, sid: str) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settle_s):
                await self._closing.wait()
        return await self.persist(sid)
