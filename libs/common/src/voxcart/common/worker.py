"""The loop every bus worker (stt, brain, tts) runs: own calls, read their inputs, hand entries to a handler.

Invariants:
- One ``XREAD`` per replica covers every owned call's input streams (never a blocking connection per call).
- Each call's entries are handled in order, one at a time, on that call's own task; a slow call never delays
  the reader or another call. The handler does its CPU work in a thread.
- Reading starts at the call's checkpoint, so a replica that takes a call over replays what the previous owner
  had not committed; handlers drop what they already produced by deterministic ids.
- An entry whose handling fails three times goes to the dead-letter stream and is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from . import events as ev
from .bus import keys
from .bus.base import Bus, BusError, Entry, Output
from .bus.ownership import Ownership, OwnershipConfig
from .metrics import BUS_BACKLOG, COMMITS, HealthServer
from .settings import Settings
from .tasks import cancel_and_wait

__all__ = ["CallContext", "CallHandler", "HandlerFactory", "Worker"]

log = logging.getLogger("voxcart.common.worker")

_RETRIES = 3


@dataclass
class CallContext:
    """What a handler knows about the call it serves."""

    sid: str
    svc: str
    bus: Bus
    ownership: Ownership
    reason: str
    """How the call was acquired: ``claimed`` or ``takeover``."""
    checkpoint: dict[str, str] = field(default_factory=dict)
    """Last durable input id per input stream, as loaded at acquisition."""

    async def commit(
        self,
        outputs: Sequence[Output],
        checkpoint: Mapping[str, str] | None = None,
        state: Mapping[str, bytes] | None = None,
    ) -> bool:
        """Fenced commit; ``False`` when the call is no longer ours (stop working on it)."""
        ok = await self.ownership.commit(self.sid, outputs, checkpoint or {}, state)
        COMMITS.labels(self.svc, "ok" if ok else "fenced").inc()
        if ok and checkpoint:
            self.checkpoint.update(checkpoint)
        return ok


class CallHandler(Protocol):
    async def handle(self, entry: Entry, event: ev.Event) -> None:
        """Handle one input entry, committing outputs and the checkpoint through the context."""
        ...

    async def close(self, reason: str) -> None:
        """The call stops being ours: ``ended``, ``drain``, ``lost`` (do not commit) or ``error``."""
        ...

    def peek(self, event: ev.Event) -> None:
        """Called by the reader as soon as an entry arrives, before it is queued (e.g. to act on a ``cancel``
        while earlier entries are still being handled). Must not block."""
        ...


HandlerFactory = Callable[[CallContext], Awaitable[CallHandler]]
InputStreams = Callable[[str], list[str]]


class _Call:
    def __init__(self, ctx: CallContext, handler: CallHandler, streams: list[str]) -> None:
        self.ctx = ctx
        self.handler = handler
        self.positions = {s: ctx.checkpoint.get(s, "0-0") for s in streams}
        self.queue: asyncio.Queue[Entry] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None


class Worker:
    """Runs one service replica.

    Args:
        bus: the bus.
        svc: ``stt``, ``brain`` or ``tts``.
        settings: the service settings (replica id, capacity, lease and read tunables, metrics port).
        inputs: the input streams of a call, given its sid.
        factory: builds the handler of a newly owned call.
        peeks: call :meth:`CallHandler.peek` on every entry as it is read.
    """

    def __init__(
        self,
        bus: Bus,
        svc: str,
        settings: Settings,
        inputs: InputStreams,
        factory: HandlerFactory,
        peeks: bool = False,
    ) -> None:
        self.bus = bus
        self._peeks = peeks
        self.svc = svc
        self.settings = settings
        self._inputs = inputs
        self._factory = factory
        self.calls: dict[str, _Call] = {}
        self.ownership = Ownership(
            bus,
            svc,
            settings.replica_id,
            OwnershipConfig(
                max_calls=settings.max_calls,
                lease_ttl_ms=settings.lease_ttl_ms,
                sweep_interval_ms=settings.sweep_interval_ms,
            ),
            self._acquired,
            self._dropped,
        )
        self._stop = asyncio.Event()
        self._backlog = BUS_BACKLOG.labels(svc)
        for result in ("ok", "fenced"):  # exported at 0 from the start
            COMMITS.labels(svc, result)
        self.health = HealthServer(settings.host, settings.metrics_port, lambda: self.ownership.healthy)

    async def _acquired(self, sid: str, reason: str) -> None:
        raw = await self.bus.hgetall(keys.checkpoint(self.svc, sid))
        ctx = CallContext(sid, self.svc, self.bus, self.ownership, reason, {k: v.decode() for k, v in raw.items()})
        handler = await self._factory(ctx)
        call = _Call(ctx, handler, self._inputs(sid))
        call.task = asyncio.create_task(self._run_call(call), name=f"{self.svc}-call")
        self.calls[sid] = call

    async def _dropped(self, sid: str, reason: str) -> None:
        call = self.calls.pop(sid, None)
        if call is None:
            return
        if reason == "ended":
            # Finish what was read before the call ended (bounded), then close.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await call.queue.join()
        if call.task is not None:
            await cancel_and_wait(call.task)
        try:
            await call.handler.close(reason)
        except Exception:
            log.exception("closing a call failed", extra={"call_sid": sid})

    async def _run_call(self, call: _Call) -> None:
        while True:
            entry = await call.queue.get()
            try:
                await self._handle(call, entry)
            finally:
                call.queue.task_done()
                self._backlog.dec()

    async def _handle(self, call: _Call, entry: Entry) -> None:
        try:
            event = ev.decode(entry.data)
        except ev.EventDecodeError as exc:
            await self.ownership.dead_letter(entry.stream, entry.id, call.ctx.sid, str(exc), 1, entry.data)
            return
        for attempt in range(1, _RETRIES + 1):
            try:
                await call.handler.handle(entry, event)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == _RETRIES:
                    log.exception("giving up on an entry", extra={"call_sid": call.ctx.sid, "entry": entry.id})
                    await self.ownership.dead_letter(
                        entry.stream, entry.id, call.ctx.sid, repr(exc), attempt, entry.data
                    )
                    return
                log.warning("handling failed, retrying: %r", exc, extra={"call_sid": call.ctx.sid})
                await asyncio.sleep(0.05 * 2**attempt)

    async def _read_loop(self) -> None:
        block = self.settings.xread_block_ms
        while not self._stop.is_set():
            positions = {s: p for call in self.calls.values() for s, p in call.positions.items()}
            if not positions:
                await asyncio.sleep(block / 1000)
                continue
            try:
                entries = await self.bus.read(positions, count=200, block_ms=block)
            except BusError as exc:
                log.warning("read failed: %s", exc)
                await asyncio.sleep(0.2)
                continue
            for entry in entries:
                sid = keys.sid_of(entry.stream)
                call = self.calls.get(sid)
                if call is None or entry.stream not in call.positions:
                    continue
                call.positions[entry.stream] = entry.id
                if self._peeks:
                    try:
                        call.handler.peek(ev.decode(entry.data))
                    except ev.EventDecodeError:
                        pass  # dead-lettered when handled
                call.queue.put_nowait(entry)
                self._backlog.inc()

    async def _heartbeat(self) -> None:
        """Tell the gateway this replica is alive (readiness, and capacity for overload decisions)."""
        while True:
            try:
                await self.bus.zadd(keys.workers(self.svc), {self.settings.replica_id: ev.now_ms()})
            except BusError as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(1.0)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, install_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or :meth:`request_stop`), then drain and release every call."""
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        await self.health.start()
        await self.ownership.start()
        reader = asyncio.create_task(self._read_loop(), name=f"{self.svc}-read")
        beat = asyncio.create_task(self._heartbeat(), name=f"{self.svc}-heartbeat")
        log.info(
            "%s worker %s running",
            self.svc,
            self.settings.replica_id,
            extra={"metrics_port": self.health.port},
        )
        try:
            await self._stop.wait()
        finally:
            log.info("draining %d calls", len(self.calls))
            await self.ownership.drain()
            await cancel_and_wait(reader, beat)
            with contextlib.suppress(BusError):
                await self.bus.zrem(keys.workers(self.svc), [self.settings.replica_id])
            await self.ownership.stop()
            await self.health.close()
