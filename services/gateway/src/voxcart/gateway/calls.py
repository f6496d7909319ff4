"""The gateway process's live calls: one outbound reader, one heartbeat, the call lifecycle on the bus.

Invariants:
- One ``XREAD`` covers the ``audio.out`` and ``control`` streams of every socket this process holds.
- Every second the process re-asserts its live calls in ``vc:calls:active``; workers sweep that set to find
  calls whose owner died, and reap calls whose gateway stopped beating.
- ``call.started`` is published once per call, however often Twilio retries the webhook.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import Gauge

from voxcart.common import events as ev
from voxcart.common.bus import Bus, BusError, Output, keys
from voxcart.common.bus.writer import Writer
from voxcart.common.metrics import DEDUPE_HITS
from voxcart.common.tasks import cancel_and_wait

from .session import CallSession

__all__ = ["CallRegistry"]

log = logging.getLogger("voxcart.gateway.calls")

ACTIVE_CALLS = Gauge("voxcart_active_calls", "Media sockets open on this gateway process.")


class CallRegistry:
    """Live calls of this gateway process and their bus plumbing."""

    def __init__(self, bus: Bus, block_ms: int = 50, on_ended: Callable[[str], None] | None = None) -> None:
        self.bus = bus
        self.on_ended = on_ended
        """Called with the CallSid once a call's end is on the bus (the call records hook)."""
        self.writer = Writer(bus, ttl_ms=keys.CALL_TTL_MS)
        self.sessions: dict[str, CallSession] = {}
        ACTIVE_CALLS.set_function(lambda: len(self.sessions))
        self._block_ms = block_ms
        self._tasks: list[asyncio.Task[None]] = []
        self._latency_writes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.writer.start()
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="gateway-out"),
            asyncio.create_task(self._heartbeat_loop(), name="gateway-heartbeat"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self.writer.close()

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def call_started(self, sid: str, from_number: str, to_number: str, account_sid: str) -> bool:
        """Record a new call and publish ``call.started`` once; ``False`` for a repeat of the same call."""
        now = ev.now_ms()
        # the numbers first: a worker may claim the call the instant call.started is published
        await self.bus.hset(keys.meta(sid), {"from": from_number, "to": to_number}, ttl_ms=keys.CALL_TTL_MS)
        event = ev.CallStarted(call_sid=sid, from_number=from_number, to_number=to_number, account_sid=account_sid)
        first = await self.bus.start_call_once(keys.started(sid), keys.LIFECYCLE, ev.encode(event), keys.CALL_TTL_MS)
        if not first:
            DEDUPE_HITS.labels("webhook").inc()
            return False
        await self.bus.hset(keys.meta(sid), {"started": now, "status": "ringing"})
        await self.bus.zadd(keys.CALLS_INDEX, {sid: now})
        await self.bus.zadd(keys.ACTIVE_CALLS, {sid: now})
        return True

    async def attach(self, session: CallSession) -> None:
        """A media socket started: read its outputs from where this generation should begin."""
        sid = session.sid
        old = self.sessions.get(sid)
        if old is not None:
            await old.aclose()
        if session.gen == 1:
            positions = {keys.audio_out(sid): "0-0", keys.control(sid): "0-0"}
        else:
            # a reconnected stream: old audio is stale; brain repeats the cut-off prompt
            positions = {s: (await self.bus.last_id(s)) or "0-0" for s in (keys.audio_out(sid), keys.control(sid))}
            reconnected = ev.StreamReconnected(call_sid=sid, gen=session.gen)
            self.writer.put(Output(keys.events(sid), ev.encode(reconnected), maxlen=keys.EVENTS_MAXLEN))
        session.start(positions)
        self.sessions[sid] = session
        await self.bus.zadd(keys.ACTIVE_CALLS, {sid: ev.now_ms()})
        await self.bus.hset(keys.meta(sid), {"status": "in-progress", "gen": session.gen})

    async def detach(self, session: CallSession, reason: str) -> None:
        """The socket closed: end the call on the bus (unless a newer socket of the call took over)."""
        await session.aclose()
        if self.sessions.get(session.sid) is not session:
            return
        del self.sessions[session.sid]
        sid = session.sid
        outcome = "transferred" if session.transfer_to else reason
        await self.writer.flush()
        try:
            await self.bus.zrem(keys.ACTIVE_CALLS, [sid])
            await self.bus.publish([Output(keys.LIFECYCLE, ev.encode(ev.CallEnded(call_sid=sid, reason=outcome)))])
            await self.bus.hset(keys.meta(sid), {"status": "completed", "ended": ev.now_ms(), "outcome": outcome})
            await self.bus.expire(keys.per_call_keys(sid), keys.ENDED_CALL_TTL_MS)
        except BusError as exc:
            log.error("could not record the end of a call: %s", exc, extra={"call_sid": sid})
        if self.on_ended is not None:
            self.on_ended(sid)
        for stream in (session.audio_in, session.events):
            self.writer.forget(stream)

    async def remember_transfer(self, sid: str, number: str) -> None:
        await self.bus.hset(keys.meta(sid), {"transfer_to": number})

    def record_latency(self, sid: str, turn_no: int, seconds: float) -> None:
        task = asyncio.create_task(self.bus.hset(keys.meta(sid), {f"latency:{turn_no}": round(seconds, 4)}))
        self._latency_writes.add(task)
        task.add_done_callback(self._latency_writes.discard)

    # -- loops ----------------------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        while True:
            positions = {s: p for session in self.sessions.values() for s, p in session.positions.items()}
            if not positions:
                await asyncio.sleep(self._block_ms / 1000)
                continue
            try:
                entries = await self.bus.read(positions, count=500, block_ms=self._block_ms)
            except BusError as exc:
                log.warning("outbound read failed: %s", exc)
                await asyncio.sleep(0.2)
                continue
            for entry in entries:
                sid = keys.sid_of(entry.stream)
                session = self.sessions.get(sid)
                if session is None or entry.stream not in session.positions:
                    continue
                session.positions[entry.stream] = entry.id
                try:
                    await session.deliver(ev.decode(entry.data))
                except ev.EventDecodeError as exc:
                    log.error("bad outbound entry %s: %s", entry.id, exc, extra={"call_sid": sid})
                except Exception:
                    log.exception("delivering outbound entry failed", extra={"call_sid": sid})

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if not self.sessions:
                continue
            try:
                await self.bus.zadd(keys.ACTIVE_CALLS, {sid: ev.now_ms() for sid in self.sessions})
            except BusError as exc:
                log.warning("heartbeat failed: %s", exc)
