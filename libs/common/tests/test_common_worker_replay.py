"""The worker when a commit does not go through: Redis failing mid-entry makes the call replay from its checkpoint
(the entry is never handled twice by the handler whose memory already moved on), and a commit fenced out from the
call's own task closes the handler and stops the task cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from voxcart.common import events as ev
from voxcart.common.bus import BusError, Entry, MemoryBus, Output, keys
from voxcart.common.settings import Settings
from voxcart.common.worker import CallContext, CallHandler, Worker

SID = "CAreplay"
OUT = "vc:test:out"


def digit(d: str) -> Output:
    return Output(keys.events(SID), ev.encode(ev.Dtmf(call_sid=SID, digit=d, arrived=ev.now_ms())))


class FlakyBus(MemoryBus):
    """Fails the next ``fail`` commits as an unreachable Redis would (after applying them when ``applied``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = 0
        self.applied = False

    async def commit(
        self,
        lease_key: str,
        lease_value: str,
        outputs: Sequence[Output],
        checkpoint_key: str,
        checkpoint: Mapping[str, str],
        state_key: str | None = None,
        state: Mapping[str, bytes] | None = None,
        ttl_ms: int = 0,
        ttl_anchor: str | None = None,
    ) -> bool:
        if self.fail:
            self.fail -= 1
            if self.applied:  # the commit landed; only its reply was lost
                await super().commit(lease_key, lease_value, outputs, checkpoint_key, checkpoint, state_key, state)
            raise BusError("redis: Connection closed by server.")
        return await super().commit(
            lease_key, lease_value, outputs, checkpoint_key, checkpoint, state_key, state, ttl_ms, ttl_anchor
        )


class Recorder:
    """A handler that answers each input once (its memory of what it answered moves before the commit)."""

    instances: list[Recorder] = []

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.answered: set[str] = set()
        self.seen: list[str] = []
        self.closed: list[str] = []
        Recorder.instances.append(self)

    def peek(self, event: ev.Event) -> None:
        pass

    async def handle(self, entry: Entry, event: ev.Event) -> None:
        self.seen.append(entry.id)
        if entry.id in self.answered:  # what a retry on this handler would do: skip it
            await self.ctx.commit([], {entry.stream: entry.id})
            return
        self.answered.add(entry.id)
        await self.ctx.commit([Output(OUT, entry.data)], {entry.stream: entry.id})

    async def close(self, reason: str) -> None:
        self.closed.append(reason)


async def run_worker(bus: MemoryBus) -> tuple[Worker, asyncio.Task[None]]:
    Recorder.instances = []

    async def factory(ctx: CallContext) -> CallHandler:
        return Recorder(ctx)

    # a long lease: renewal (every 10 s) never gets in first; a released call is re-acquired by the 50 ms sweep
    settings = Settings(replica_id="w1", lease_ttl_ms=30_000, sweep_interval_ms=50, host="127.0.0.1", metrics_port=0)
    worker = Worker(bus, "stt", settings, lambda sid: [keys.events(sid)], factory)
    task = asyncio.create_task(worker.run(install_signals=False))
    started = ev.encode(ev.CallStarted(call_sid=SID, from_number="+15555550123"))
    assert await bus.start_call_once(keys.started(SID), keys.LIFECYCLE, started, 60_000)
    await bus.zadd(keys.ACTIVE_CALLS, {SID: ev.now_ms() + 60_000})
    return worker, task


async def until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def stop(worker: Worker, task: asyncio.Task[None]) -> None:
    worker.request_stop()
    await asyncio.wait_for(task, 5)


async def test_a_commit_that_fails_is_replayed_from_the_checkpoint_by_a_fresh_handler() -> None:
    bus = FlakyBus()
    worker, task = await run_worker(bus)
    try:
        await until(lambda: Recorder.instances)
        bus.fail = 1
        await bus.publish([digit("1")])
        await until(lambda: len(Recorder.instances) == 2 and Recorder.instances[1].seen)
        first, second = Recorder.instances
        assert first.seen == second.seen, "the entry went to the new handler, never twice to the first"
        assert first.closed == ["lost"]
        await asyncio.sleep(0.2)
        assert len(await bus.range(OUT)) == 1, "answered once, not skipped"
    finally:
        await stop(worker, task)


async def test_a_commit_that_landed_before_failing_is_not_repeated() -> None:
    bus = FlakyBus()
    bus.applied = True
    worker, task = await run_worker(bus)
    try:
        await until(lambda: Recorder.instances)
        bus.fail = 1
        await bus.publish([digit("1")])
        await until(lambda: len(Recorder.instances) == 2)
        await asyncio.sleep(0.3)
        assert Recorder.instances[1].seen == [], "the checkpoint had moved: nothing to replay"
        assert len(await bus.range(OUT)) == 1
    finally:
        await stop(worker, task)


async def test_a_commit_fenced_out_from_the_calls_own_task_closes_the_handler() -> None:
    bus = FlakyBus()
    worker, task = await run_worker(bus)
    try:
        await until(lambda: Recorder.instances)
        first = Recorder.instances[0]
        lease = keys.lease("stt", SID)
        bus.values[lease] = "someone-else:1"  # taken over while this replica was not looking
        await bus.publish([digit("2")])
        await until(lambda: first.closed)
        assert first.closed == ["lost"] and first.seen
        assert await bus.range(OUT) == [], "the late write was fenced"
    finally:
        await stop(worker, task)
