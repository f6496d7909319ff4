"""The loop every bus worker (stt, brain, tts) runs: own calls, read their inputs, hand entries to a handler.

Invariants:
- One ``XREAD`` per replica covers every owned call's input streams (never a blocking connection per call).
- Each call's entries are handled in order, one at a time, on that call's own task; a slow call never delays
  the reader or another call. The handler does its CPU work in a thread. A :class:`BatchHandler` is handed what
  has queued up for its call (at most :data:`BATCH_MAX` entries, in order) in one call, so it can do one thread
  hop per batch instead of one per entry.
- With ``read_interval_ms`` (stt: ``STT_READ_INTERVAL_MS``) two reads start at least that far apart unless the
  last one came back empty (it waited for data already) or full (a backlog), so under load each ``XREAD`` (whose
  arguments grow with the calls owned) returns a batch rather than one entry: reads per second stay flat as calls
  are added, instead of growing with them.
- Reading starts at the call's checkpoint, so a replica that takes a call over replays what the previous owner
  had not committed; handlers drop what they already produced by deterministic ids.
- An entry whose handling fails three times goes to the dead-letter stream and is skipped; but when Redis fails
  mid-entry (a :class:`BusError`) the entry is never handled again by the same handler: the call is released and
  its next owner replays it from the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from . import events as ev
from .bus import keys
from .bus.base import Bus, BusError, Entry, Output
from .bus.ownership import Ownership, OwnershipConfig
from .bus.unsafe import without_guards
from .capacity import CapacityReport, publish_report
from .memtrim import start_trimming
from .metrics import COMMITS, BusStreamMetrics, HealthServer
from .settings import Settings
from .tasks import cancel_and_wait

__all__ = ["BATCH_MAX", "BatchHandler", "CallContext", "CallHandler", "HandlerFactory", "Worker"]

log = logging.getLogger("voxcart.common.worker")

_RETRIES = 3
_READ_COUNT = 200
BATCH_MAX = 50
"""Entries of one call handed to :meth:`BatchHandler.handle_batch` at most (a second of audio)."""


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
    give_up: Callable[[], None] = lambda: None
    """Release the call to be replayed from its checkpoint by its next owner: for a handler's own task (a timer)
    that met a :class:`BusError`, as the worker does for an entry. Set by the worker once the call runs."""

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


@runtime_checkable
class BatchHandler(CallHandler, Protocol):
    async def handle_batch(self, items: Sequence[tuple[Entry, ev.Event]]) -> None:
        """Handle entries in order, with the same effects as :meth:`handle` on each, in fewer hops.

        If it raises :class:`BusError` the call is given up, as for :meth:`handle`. If it raises anything else,
        the worker hands the batch's entries to :meth:`handle` one at a time (with the usual retries and the
        dead-letter stream): so :meth:`handle` must skip an entry this already took in.
        """
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
        self.batched = isinstance(handler, BatchHandler)
        self.given_up = False
        """No entry is handled any more: Redis failed mid-entry (the call is being released, to be replayed from its
        checkpoint), or a commit of the call's own task was fenced out."""


class Worker:
    """Runs one service replica.

    Args:
        bus: the bus.
        svc: ``stt``, ``brain`` or ``tts``.
        settings: the service settings (replica id, capacity, lease and read tunables, metrics port).
        inputs: the input streams of a call, given its sid.
        factory: builds the handler of a newly owned call.
        peeks: call :meth:`CallHandler.peek` on every entry as it is read.
        read_interval_ms: start two reads at least this far apart unless the last one came back empty or full (0:
            read again at once).
    """

    def __init__(
        self,
        bus: Bus,
        svc: str,
        settings: Settings,
        inputs: InputStreams,
        factory: HandlerFactory,
        peeks: bool = False,
        read_interval_ms: int = 0,
    ) -> None:
        if not 0 <= read_interval_ms <= 1000:
            raise ValueError(f"Worker: read_interval_ms must be 0..1000, got {read_interval_ms}")
        self._read_interval_s = read_interval_ms / 1000
        bus = without_guards(bus, settings.unsafe_disabled)  # tests only: VOXCART_UNSAFE_DISABLE
        self.bus = bus
        self._giving_up: set[asyncio.Task[None]] = set()
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
        # the kinds of a call's input streams do not depend on its sid: any placeholder names them
        self.streams = BusStreamMetrics(svc, [keys.stream_kind(s) for s in inputs("-")])
        """Lag and backlog of the input streams (``voxcart_bus_lag_seconds``, ``voxcart_bus_backlog_entries``)."""
        for result in ("ok", "fenced"):  # exported at 0 from the start
            COMMITS.labels(svc, result)
        self.health = HealthServer(settings.host, settings.metrics_port, lambda: self.ownership.healthy)

    async def _acquired(self, sid: str, reason: str) -> None:
        raw = await self.bus.hgetall(keys.checkpoint(self.svc, sid))
        ctx = CallContext(sid, self.svc, self.bus, self.ownership, reason, {k: v.decode() for k, v in raw.items()})
        handler = await self._factory(ctx)
        call = _Call(ctx, handler, self._inputs(sid))
        ctx.give_up = lambda: self._give_up(call)
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
        if call.task is asyncio.current_task():
            # fenced out by a commit of its own task: cancelling (and awaiting) itself would abort the close below
            # and the caller's bookkeeping; the task stops once the entry in hand returns
            call.given_up = True
        elif call.task is not None:
            await cancel_and_wait(call.task)
        while not call.queue.empty():  # read but never handled: no longer waiting here
            self.streams.waiting(keys.stream_kind(call.queue.get_nowait().stream), -1)
        try:
            await call.handler.close(reason)
        except Exception:
            log.exception("closing a call failed", extra={"call_sid": sid})

    async def _run_call(self, call: _Call) -> None:
        while not call.given_up:
            batch = [await call.queue.get()]
            while call.batched and len(batch) < BATCH_MAX and not call.queue.empty():
                batch.append(call.queue.get_nowait())
            try:
                if len(batch) == 1:
                    await self._handle(call, batch[0])
                else:
                    await self._handle_batch(call, batch)
            finally:
                for entry in batch:
                    call.queue.task_done()
                    self.streams.waiting(keys.stream_kind(entry.stream), -1)

    async def _decoded(self, call: _Call, entry: Entry) -> ev.Event | None:
        """The entry's event (``None``: it does not decode, and went to the dead-letter stream)."""
        try:
            event = ev.decode(entry.data)
        except ev.EventDecodeError as exc:
            await self.ownership.dead_letter(entry.stream, entry.id, call.ctx.sid, str(exc), 1, entry.data)
            return None
        self.streams.handled(keys.stream_kind(entry.stream), event.ts, ev.now_ms())
        return event

    async def _handle_batch(self, call: _Call, batch: Sequence[Entry]) -> None:
        assert isinstance(call.handler, BatchHandler)
        items = [(entry, event) for entry in batch if (event := await self._decoded(call, entry)) is not None]
        try:
            await call.handler.handle_batch(items)
            return
        except asyncio.CancelledError:
            raise
        except BusError as exc:
            log.warning(
                "Redis failed mid-batch (%s): replaying the call from its checkpoint",
                exc,
                extra={"call_sid": call.ctx.sid},
            )
            self._give_up(call)
            return
        except Exception as exc:
            log.warning(
                "handling a batch failed, handling it entry by entry: %r", exc, extra={"call_sid": call.ctx.sid}
            )
        for entry, event in items:
            if call.given_up:
                return
            await self._attempts(call, entry, event)

    async def _handle(self, call: _Call, entry: Entry) -> None:
        event = await self._decoded(call, entry)
        if event is not None:
            await self._attempts(call, entry, event)

    async def _attempts(self, call: _Call, entry: Entry, event: ev.Event) -> None:
        """Handle one entry: retried, then dead-lettered; a :class:`BusError` gives the call up."""
        for attempt in range(1, _RETRIES + 1):
            try:
                await call.handler.handle(entry, event)
                return
            except asyncio.CancelledError:
                raise
            except BusError as exc:
                # Redis failed mid-entry: the commit may or may not have landed, and the handler's memory has moved
                # on either way (a final marked answered, audio fed to the recognizer), so handling the entry again
                # here would skip or repeat what it does. Give the call up: its next owner (this replica's sweep or
                # a peer's) replays it from the checkpoint, which the atomic commit keeps consistent.
                log.warning(
                    "Redis failed mid-entry (%s): replaying the call from its checkpoint",
                    exc,
                    extra={"call_sid": call.ctx.sid},
                )
                self._give_up(call)
                return
            except Exception as exc:
                if attempt == _RETRIES:
                    log.exception("giving up on an entry", extra={"call_sid": call.ctx.sid, "entry": entry.id})
                    await self.ownership.dead_letter(
                        entry.stream, entry.id, call.ctx.sid, repr(exc), attempt, entry.data
                    )
                    return
                log.warning("handling failed, retrying: %r", exc, extra={"call_sid": call.ctx.sid})
                await asyncio.sleep(0.05 * 2**attempt)

    def _give_up(self, call: _Call) -> None:
        """Stop handling ``call`` and release it (on a task of its own: the release cancels the call's task)."""
        if call.given_up:
            return
        call.given_up = True
        task = asyncio.create_task(self.ownership.release(call.ctx.sid, "lost"), name=f"{self.svc}-give-up")
        self._giving_up.add(task)
        task.add_done_callback(self._giving_up.discard)

    async def _read_loop(self) -> None:
        block = self.settings.xread_block_ms
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            positions = {s: p for call in self.calls.values() for s, p in call.positions.items()}
            if not positions:
                await asyncio.sleep(block / 1000)
                continue
            started = loop.time()
            try:
                entries = await self.bus.read(positions, count=_READ_COUNT, block_ms=block)
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
                self.streams.waiting(keys.stream_kind(entry.stream), 1)
            # an empty read waited for data already; a full one means a backlog: read on at once after either
            if self._read_interval_s and 0 < len(entries) < _READ_COUNT:
                wait = started + self._read_interval_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)

    async def _heartbeat(self) -> None:
        """Tell the gateway this replica is alive (readiness, and capacity for overload decisions)."""
        while True:
            try:
                await self.bus.zadd(keys.workers(self.svc), {self.settings.replica_id: ev.now_ms()})
                await self._report_capacity()
            except BusError as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(1.0)

    async def _report_capacity(self) -> None:
        """Calls owned and at most (none once stopping), for the gateway's admission control."""
        owned, draining = len(self.ownership.owned), self._stop.is_set()
        report = CapacityReport(owned, self.settings.max_calls, draining, int(ev.now_ms()))
        await publish_report(self.bus, self.svc, self.settings.replica_id, report)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, install_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or :meth:`request_stop`), then drain and release every call."""
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        await self.health.start()
        # What was built at start (models, language model, store, phrase cache) lives as long as the process: out
        # of the collector's sight, a full collection does not walk it (measured: 34 ms for the three services'
        # start-up objects in one process, 0 after the freeze) and never pauses the calls' loop for it. Only when
        # the worker owns the process (its signals): a test or a tool embedding one keeps its collector as it was.
        if install_signals:
            gc.collect()
            gc.freeze()
            start_trimming()
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
            with contextlib.suppress(BusError):
                await self._report_capacity()  # draining: no room for new calls here
            await self.ownership.drain()
            await cancel_and_wait(reader, beat)
            with contextlib.suppress(BusError):
                await self.bus.zrem(keys.workers(self.svc), [self.settings.replica_id])
            await self.ownership.stop()
            await self.health.close()
