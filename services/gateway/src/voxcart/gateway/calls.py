"""The gateway process's live calls: one outbound reader, one heartbeat, the call lifecycle on the bus.

Invariants:
- One ``XREAD`` covers the ``audio.out`` and ``control`` streams of every socket this process holds.
- Every second the process re-asserts its live calls in ``vc:calls:active``; workers sweep that set to find
  calls whose owner died, and reap calls whose gateway stopped beating.
- ``call.started`` is published once per call, however often Twilio retries the webhook.
- A call has one current socket: the one with the highest ``gen``. A newer socket on this process supersedes the
  old one at its ``start``; one on another replica is noticed by the next heartbeat (the meta hash's ``gen``).
  A superseded socket is closed and its end ends nothing: the call goes on on the newer socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from prometheus_client import Gauge

from voxcart.common import events as ev
from voxcart.common.bus import Bus, BusError, Entry, Output, keys
from voxcart.common.bus.writer import Writer
from voxcart.common.metrics import DEDUPE_HITS, BusStreamMetrics
from voxcart.common.tasks import cancel_and_wait

from .reconnect import ENDING_FIELD
from .session import CallSession

__all__ = ["CallRegistry"]

log = logging.getLogger("voxcart.gateway.calls")

ACTIVE_CALLS = Gauge("voxcart_active_calls", "Media sockets open on this gateway process.")
ORPHAN_AFTER_MS = 3000
_DELIVER_SLICE = 32
"""Entries of one outbound read handed to the pacers before the loop lets other tasks run (a read of 500 entries
delivered at once held every pacer up for tens of ms at 200 calls)."""
"""A live call's heartbeat older than this: the gateway replica that served its socket is gone (beats every 1 s)."""


class CallRegistry:
    """Live calls of this gateway process and their bus plumbing."""

    def __init__(
        self,
        bus: Bus,
        block_ms: int = 50,
        on_ended: Callable[[str], None] | None = None,
        retention_ms: int = keys.ENDED_CALL_TTL_MS,
    ) -> None:
        self.bus = bus
        self.retention_ms = retention_ms
        """A call's keys expire this long after its end (``CALL_RETENTION_MS``)."""
        self.on_ended = on_ended
        """Called with the CallSid once a call's end is on the bus (the call records hook)."""
        self.writer = Writer(bus, ttl_ms=keys.CALL_TTL_MS)
        self.sessions: dict[str, CallSession] = {}
        ACTIVE_CALLS.set_function(lambda: len(self.sessions))
        self._block_ms = block_ms
        self.streams = BusStreamMetrics("gateway", ["audio.out", "control"])
        """Lag and backlog of the outbound streams this process reads."""
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
            log.info("media socket gen %d supersedes gen %d", session.gen, old.gen, extra={"call_sid": sid})
            await old.supersede()
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
        if session.superseded or await self._newer_socket(session):
            log.info("superseded media socket gen %d closed (%s)", session.gen, reason, extra={"call_sid": sid})
            for stream in (session.audio_in, session.events):
                self.writer.forget(stream)
            return
        await self.writer.flush()
        await self.end_call(sid, "transferred" if session.transfer_to else reason)
        for stream in (session.audio_in, session.events):
            self.writer.forget(stream)

    async def end_call(self, sid: str, outcome: str) -> None:
        """End the call on the bus once (``call.ended``, status, expiry, the records hook), whichever path gets
        there first: its socket closing here, or, when the socket died with its replica, the ``<Connect action>``
        request that hangs up or transfers (:mod:`.reconnect`), on any replica."""
        try:
            if not await self.bus.set_nx(keys.dedupe("ended", sid), outcome, keys.CALL_TTL_MS):
                return
            await self.bus.zrem(keys.ACTIVE_CALLS, [sid])
            await self.bus.publish([Output(keys.LIFECYCLE, ev.encode(ev.CallEnded(call_sid=sid, reason=outcome)))])
            await self.bus.hset(keys.meta(sid), {"status": "completed", "ended": ev.now_ms(), "outcome": outcome})
            await self.bus.expire(keys.per_call_keys(sid), self.retention_ms)
        except BusError as exc:
            log.error("could not record the end of a call: %s", exc, extra={"call_sid": sid})
        if self.on_ended is not None:
            self.on_ended(sid)

    async def twilio_ended(self, sid: str) -> None:
        """Twilio reports the call over (status callback): end it on the bus if its socket died with a gateway
        replica (no live socket here, and its heartbeat older than :data:`ORPHAN_AFTER_MS`). A call whose socket
        is still served somewhere ends when that socket closes, with the outcome it knows."""
        if sid in self.sessions:
            return
        try:
            (beat,) = await self.bus.zscores(keys.ACTIVE_CALLS, [sid])
        except BusError as exc:
            log.warning("could not check an ended call's heartbeat: %s", exc, extra={"call_sid": sid})
            return
        if beat is not None and ev.now_ms() - beat > ORPHAN_AFTER_MS:
            await self.end_call(sid, "caller hung up")

    async def remember_transfer(self, sid: str, number: str) -> None:
        """Record how the agent ends the call (``number`` to transfer to, ``""`` to hang up) before its socket
        closes: the ``<Connect action>`` request then dials or hangs up instead of reconnecting."""
        ending: dict[str, str | bytes | float | int] = {ENDING_FIELD: "transfer" if number else "hangup"}
        if number:
            ending["transfer_to"] = number
        await self.bus.hset(keys.meta(sid), ending)

    async def _newer_socket(self, session: CallSession) -> bool:
        """A socket of the call with a higher ``gen`` than ``session``'s has started (on any replica)."""
        try:
            raw = await self.bus.hget(keys.meta(session.sid), "gen")
        except BusError:
            return False
        return raw is not None and int(raw) > session.gen

    async def _supersede_stale(self) -> None:
        """Close this process's sockets whose call started a newer socket on another replica."""
        for sid, session in list(self.sessions.items()):
            if await self._newer_socket(session) and self.sessions.get(sid) is session:
                log.info("media socket gen %d superseded on another replica", session.gen, extra={"call_sid": sid})
                await session.supersede()

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
            waiting = deque(keys.stream_kind(entry.stream) for entry in entries)
            for kind in waiting:
                self.streams.waiting(kind, 1)
            try:
                for n, entry in enumerate(entries, 1):
                    kind = waiting.popleft()
                    self.streams.waiting(kind, -1)
                    await self._deliver(entry, kind)
                    if n % _DELIVER_SLICE == 0:
                        await asyncio.sleep(0)  # let the pacers send between slices of a big read
            finally:
                for kind in waiting:  # cancelled mid-batch
                    self.streams.waiting(kind, -1)

    async def _deliver(self, entry: Entry, kind: str) -> None:
        sid = keys.sid_of(entry.stream)
        session = self.sessions.get(sid)
        if session is None or entry.stream not in session.positions:
            return
        session.positions[entry.stream] = entry.id
        try:
            event = ev.decode(entry.data)
            self.streams.handled(kind, event.ts, ev.now_ms())
            await session.deliver(event)
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
                continue
            await self._supersede_stale()
