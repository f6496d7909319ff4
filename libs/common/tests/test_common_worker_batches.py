"""The worker's read cadence and batches, on a MemoryBus with real ownership: reads start at most once per
``read_interval_ms`` (a full read is followed at once), a :class:`BatchHandler` gets what queued up for its call in
order, a batch that fails is handled again entry by entry, and a Redis failure mid-batch gives the call up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import pytest

from voxcart.common import events as ev
from voxcart.common.bus import Entry, MemoryBus, Output, keys
from voxcart.common.bus.base import BusError
from voxcart.common.settings import Settings
from voxcart.common.worker import BATCH_MAX, CallContext, CallHandler, Worker

SID = "CAworkerbatches"


class CountingBus(MemoryBus):
    """Counts the reads of the calls' input streams (not the lifecycle group's)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def read(self, positions: Mapping[str, str], count: int, block_ms: int) -> list[Entry]:
        self.reads += 1
        return await super().read(positions, count, block_ms)


class Recorder:
    """Records entry ids: single ones in ``handled``, batches in ``batches``; ``fail`` makes batches raise it
    (the first one only, with ``once``); ``gate`` holds single entries until it is set."""

    def __init__(self, fail: Exception | None = None, gate: asyncio.Event | None = None, once: bool = False) -> None:
        self.handled: list[str] = []
        self.batches: list[list[str]] = []
        self.fail = fail
        self.once = None if once else fail
        self.gate = gate

    async def handle(self, entry: Entry, event: ev.Event) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.handled.append(entry.id)

    async def handle_batch(self, items: Sequence[tuple[Entry, ev.Event]]) -> None:
        if self.fail is not None:
            fail, self.fail = self.fail, self.once
            raise fail
        self.batches.append([entry.id for entry, _ in items])

    async def close(self, reason: str) -> None:
        pass

    def peek(self, event: ev.Event) -> None:
        pass


class Single:
    """A plain :class:`CallHandler` (no batches)."""

    def __init__(self) -> None:
        self.handled: list[str] = []

    async def handle(self, entry: Entry, event: ev.Event) -> None:
        self.handled.append(entry.id)

    async def close(self, reason: str) -> None:
        pass

    def peek(self, event: ev.Event) -> None:
        pass


async def wait_until(what: str, check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(bus: MemoryBus, handler: CallHandler, interval_ms: int = 0) -> AsyncIterator[Worker]:
    async def factory(ctx: CallContext) -> CallHandler:
        return handler

    settings = Settings(host="127.0.0.1", replica_id="w-1", lease_ttl_ms=3000, sweep_interval_ms=100)
    worker = Worker(
        bus, "worker-batches", settings, lambda sid: [keys.events(sid)], factory, read_interval_ms=interval_ms
    )
    task = asyncio.create_task(worker.run(install_signals=False))
    try:
        assert await bus.start_call_once(
            keys.started(SID), keys.LIFECYCLE, ev.encode(ev.CallStarted(call_sid=SID)), 60_000
        )
        await bus.zadd(keys.ACTIVE_CALLS, {SID: ev.now_ms()})  # live (the gateway's heartbeat)
        await wait_until("the call owned", lambda: SID in worker.calls)
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 10)


async def publish(bus: MemoryBus, first: int, n: int) -> list[str]:
    """``n`` entries with explicit ids ``<first>-0``, ``<first + 1>-0``...; their ids."""
    ids = [f"{first + k}-0" for k in range(n)]
    outputs = [Output(keys.events(SID), ev.encode(ev.Dtmf(call_sid=SID, digit="1", arrived=0.0)), id=i) for i in ids]
    assert all(await bus.publish(outputs))
    return ids


async def test_reads_start_at_most_once_per_interval_under_a_steady_stream() -> None:
    bus, handler = CountingBus(), Single()
    async with running(bus, handler, interval_ms=20):
        reads_before = bus.reads
        loop = asyncio.get_running_loop()
        started, ids = loop.time(), []
        for k in range(100):  # an entry every ~3 ms: reading at once would read about one entry each time
            ids += await publish(bus, k + 1, 1)
            await asyncio.sleep(0.003)
        await wait_until("all handled", lambda: len(handler.handled) == len(ids))
        elapsed = loop.time() - started
        reads = bus.reads - reads_before
    assert handler.handled == ids  # in order, each once
    assert reads <= elapsed / 0.020 + 2, (reads, elapsed)
    assert reads < len(ids) / 2  # so each read brought several entries


async def test_a_full_read_is_followed_at_once() -> None:
    bus, handler = CountingBus(), Single()
    async with running(bus, handler, interval_ms=1000):
        await asyncio.sleep(1.1)  # past the wait after the first (empty) reads
        loop = asyncio.get_running_loop()
        started = loop.time()
        ids = await publish(bus, 1, 450)  # the reader takes 200 at a time
        await wait_until("all handled", lambda: len(handler.handled) == len(ids), timeout=0.9)
        assert loop.time() - started < 0.9  # not one read per second
    assert handler.handled == ids


async def test_a_batch_handler_gets_what_queued_up_for_its_call_in_order() -> None:
    bus, gate = MemoryBus(), asyncio.Event()
    handler = Recorder(gate=gate)
    async with running(bus, handler):
        first = await publish(bus, 1, 1)
        await asyncio.sleep(0.05)  # the call's task holds the first entry (held at the gate)
        rest = await publish(bus, 2, BATCH_MAX + 10)
        await asyncio.sleep(0.1)  # all read and queued behind it
        gate.set()
        await wait_until("all handled", lambda: len(handler.handled) + sum(map(len, handler.batches)) == 1 + len(rest))
    assert handler.handled == first
    assert [len(b) for b in handler.batches] == [BATCH_MAX, 10]
    assert [i for b in handler.batches for i in b] == rest


async def test_a_batch_that_fails_is_handled_entry_by_entry() -> None:
    bus, gate = MemoryBus(), asyncio.Event()
    handler = Recorder(fail=ValueError("no batch today"), gate=gate)
    async with running(bus, handler):
        ids = await publish(bus, 1, 1)
        await asyncio.sleep(0.05)
        ids += await publish(bus, 2, 5)
        await asyncio.sleep(0.1)
        gate.set()
        await wait_until("all handled", lambda: len(handler.handled) == len(ids))
    assert handler.handled == ids and handler.batches == []


async def test_a_redis_failure_mid_batch_gives_the_call_up_to_be_replayed_from_its_checkpoint() -> None:
    bus, gate = MemoryBus(), asyncio.Event()
    handler = Recorder(fail=BusError("redis: connection reset"), gate=gate, once=True)
    async with running(bus, handler):
        await publish(bus, 1, 1)
        await asyncio.sleep(0.05)
        ids = await publish(bus, 2, 5)
        await asyncio.sleep(0.1)
        gate.set()
        await wait_until("the call replayed", lambda: handler.batches == [["1-0", *ids]])
    # given up after the failed batch (not handled entry by entry), taken back by the sweep and replayed from its
    # checkpoint (none: from the start), all queued at once by then
    assert handler.handled == ["1-0"]


def test_a_read_interval_out_of_range_is_refused() -> None:
    async def factory(ctx: CallContext) -> CallHandler:
        return Single()

    with pytest.raises(ValueError, match="read_interval_ms must be 0..1000, got 5000"):
        Worker(MemoryBus(), "stt", Settings(), lambda sid: [keys.events(sid)], factory, read_interval_ms=5000)
