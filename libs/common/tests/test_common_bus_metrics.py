"""Bus lag and backlog per stream kind, and the provider metrics helpers.

Checked: stream keys map to a small fixed set of kinds; a worker observes each input entry's age when it starts
handling it and counts entries read but not handled (back to 0 when handled, or when the call is dropped with
entries still queued); the lifecycle group's lag is exported per service; provider series exist at 0 from the
start and refuse a result outside the fixed set.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import REGISTRY

from voxcart.common import events as ev
from voxcart.common.bus import Bus, Entry, MemoryBus, Output, keys
from voxcart.common.bus.ownership import Ownership, OwnershipConfig
from voxcart.common.metrics import (
    PROVIDER_RESULTS,
    STREAM_KINDS,
    BusStreamMetrics,
    ProviderMetrics,
    status_result,
)
from voxcart.common.settings import Settings
from voxcart.common.worker import CallContext, CallHandler, Worker

SID = "CAbusmetrics"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def wait_until(what: str, check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        await asyncio.sleep(0.02)


# -- kinds and helpers -------------------------------------------------------------------------------------
def test_stream_kinds_are_a_small_fixed_set() -> None:
    per_call = (keys.audio_in, keys.listen, keys.events, keys.tts, keys.audio_out, keys.control)
    assert [keys.stream_kind(stream(SID)) for stream in per_call] == [
        "audio.in",
        "listen",
        "events",
        "tts",
        "audio.out",
        "control",
    ]
    assert keys.stream_kind(keys.LIFECYCLE) == "lifecycle"
    for other in (keys.turns(SID), keys.dlq("stt"), "vc:call:{x}:nonsense", "free text", ""):
        assert keys.stream_kind(other) == "other", other
    assert {keys.stream_kind(s(SID)) for s in per_call} | {"lifecycle", "other"} == set(STREAM_KINDS)


def test_status_results() -> None:
    assert [status_result(s) for s in (429, 401, 403, 408, 504, 500, 400, None)] == [
        "rate_limited",
        "auth",
        "auth",
        "timeout",
        "timeout",
        "error",
        "error",
        "error",
    ]


def test_provider_series_exist_at_zero_and_results_are_checked() -> None:
    metrics = ProviderMetrics("test", "acme-unit", fallback=True)
    families = {family.name: family for family in REGISTRY.collect()}
    requests = {
        sample.labels["result"]
        for sample in families["voxcart_provider_requests"].samples
        if sample.name.endswith("_total") and sample.labels["provider"] == "acme-unit"
    }
    assert requests == set(PROVIDER_RESULTS)
    assert REGISTRY.get_sample_value("voxcart_provider_fallbacks_total", {"svc": "test", "provider": "acme-unit"}) == 0
    labels = {"svc": "test", "provider": "acme-unit"}
    assert REGISTRY.get_sample_value("voxcart_provider_first_response_seconds_count", labels) == 0
    metrics.request("rate_limited")
    metrics.first_response(0.25)
    metrics.fallback()
    assert sample("voxcart_provider_requests_total", **labels, result="rate_limited") == 1
    assert sample("voxcart_provider_first_response_seconds_sum", **labels) == 0.25
    assert sample("voxcart_provider_fallbacks_total", **labels) == 1
    with pytest.raises(ValueError, match="'throttled'.*rate_limited"):
        metrics.request("throttled")


def test_stream_metrics_refuse_unknown_kinds() -> None:
    with pytest.raises(ValueError, match=r"unknown stream kinds \['vc:call:\{CA1\}:events'\]"):
        BusStreamMetrics("test", ["vc:call:{CA1}:events"])


# -- the consumer group's lag --------------------------------------------------------------------------------
async def test_group_lag_counts_entries_not_yet_delivered(bus: Bus) -> None:
    assert await bus.group_lag("life", "stt") == 0  # no stream, no group
    await bus.ensure_group("life", "stt")
    assert await bus.group_lag("life", "stt") == 0
    await bus.publish([Output("life", b"a"), Output("life", b"b"), Output("life", b"c")])
    assert await bus.group_lag("life", "stt") == 3
    assert len(await bus.read_group("life", "stt", "A", 1, 0)) == 1
    assert await bus.group_lag("life", "stt") == 2  # delivered, even if not acknowledged
    assert await bus.group_lag("life", "brain") == 0  # no such group


async def test_lifecycle_lag_and_backlog_of_a_full_replica() -> None:
    bus = MemoryBus()
    svc = "lifecycle-metrics"

    async def nothing(sid: str, reason: str) -> None:
        pass

    replica = Ownership(bus, svc, "A", OwnershipConfig(max_calls=1, sweep_interval_ms=5000), nothing, nothing)
    labels = {"svc": svc, "stream": "lifecycle"}
    assert REGISTRY.get_sample_value("voxcart_bus_backlog_entries", labels) == 0
    old = ev.now_ms() - 1500  # a call.started that waited 1.5 s before a replica read it
    for sid in ("CAlife1", "CAlife2", "CAlife3"):
        data = ev.encode(ev.CallStarted(call_sid=sid, ts=old))
        assert await bus.start_call_once(keys.started(sid), keys.LIFECYCLE, data, 60_000)
    await replica.start()
    try:
        await wait_until("one call claimed", lambda: len(replica.owned) == 1)
        # full: the other two starts wait in the group
        await wait_until("the group's lag exported", lambda: sample("voxcart_bus_backlog_entries", **labels) == 2)
    finally:
        await replica.stop()
    assert sample("voxcart_bus_lag_seconds_count", **labels) == 1
    assert sample("voxcart_bus_lag_seconds_sum", **labels) >= 1.5


# -- a worker's input streams --------------------------------------------------------------------------------
class Blocking:
    """Handles entries only while ``go`` is set."""

    def __init__(self, go: asyncio.Event, handled: list[str]) -> None:
        self.go = go
        self.handled = handled

    async def handle(self, entry: Entry, event: ev.Event) -> None:
        await self.go.wait()
        self.handled.append(entry.id)

    async def close(self, reason: str) -> None:
        pass

    def peek(self, event: ev.Event) -> None:
        pass


@contextlib.asynccontextmanager
async def running_worker(bus: MemoryBus, svc: str, go: asyncio.Event, handled: list[str]) -> AsyncIterator[Worker]:
    async def factory(ctx: CallContext) -> CallHandler:
        return Blocking(go, handled)

    settings = Settings(host="127.0.0.1", replica_id=f"{svc}-1", lease_ttl_ms=600, sweep_interval_ms=100)
    worker = Worker(bus, svc, settings, lambda sid: [keys.events(sid)], factory)
    task = asyncio.create_task(worker.run(install_signals=False))
    try:
        yield worker
    finally:
        worker.request_stop()
        go.set()
        await asyncio.wait_for(task, 10)


async def publish_events(bus: MemoryBus, sid: str, ages_ms: list[float]) -> None:
    now = ev.now_ms()
    outputs = [
        Output(keys.events(sid), ev.encode(ev.Dtmf(call_sid=sid, digit="1", arrived=now - age, ts=now - age)))
        for age in ages_ms
    ]
    assert all(await bus.publish(outputs))


async def start_call(bus: MemoryBus, sid: str) -> None:
    assert await bus.start_call_once(keys.started(sid), keys.LIFECYCLE, ev.encode(ev.CallStarted(call_sid=sid)), 60_000)
    await bus.zadd(keys.ACTIVE_CALLS, {sid: ev.now_ms()})


async def test_a_worker_exports_the_lag_and_backlog_of_its_input_streams() -> None:
    bus, svc, go, handled = MemoryBus(), "worker-metrics", asyncio.Event(), list[str]()
    labels = {"svc": svc, "stream": "events"}
    async with running_worker(bus, svc, go, handled) as worker:
        assert REGISTRY.get_sample_value("voxcart_bus_backlog_entries", labels) == 0  # exported before any call
        assert REGISTRY.get_sample_value("voxcart_bus_lag_seconds_count", labels) == 0
        await start_call(bus, SID)
        await wait_until("the call owned", lambda: SID in worker.calls)
        await publish_events(bus, SID, [2000.0, 2000.0, 0.0])
        await wait_until("3 entries waiting", lambda: sample("voxcart_bus_backlog_entries", **labels) == 3)
        await asyncio.sleep(0.3)  # the handler is stuck: the entries keep waiting, and ageing
        assert sample("voxcart_bus_backlog_entries", **labels) == 3
        go.set()
        await wait_until("all handled", lambda: len(handled) == 3)
        await wait_until("none waiting", lambda: sample("voxcart_bus_backlog_entries", **labels) == 0)
    assert sample("voxcart_bus_lag_seconds_count", **labels) == 3
    # the first started at once (2 s old), the second waited behind it (>= 2.3 s), the third too (>= 0.3 s)
    assert sample("voxcart_bus_lag_seconds_sum", **labels) >= 2.0 + 2.3 + 0.3
    assert sample("voxcart_bus_lag_seconds_bucket", **labels, le="1.0") == 1  # the third only


async def test_entries_queued_for_a_dropped_call_stop_counting_as_waiting() -> None:
    bus, svc, go, handled = MemoryBus(), "worker-drop-metrics", asyncio.Event(), list[str]()
    labels = {"svc": svc, "stream": "events"}
    async with running_worker(bus, svc, go, handled) as worker:
        await start_call(bus, SID)
        await wait_until("the call owned", lambda: SID in worker.calls)
        await publish_events(bus, SID, [0.0] * 5)
        await wait_until("5 entries waiting", lambda: sample("voxcart_bus_backlog_entries", **labels) == 5)
        await bus.zrem(keys.ACTIVE_CALLS, [SID])  # so no sweep takes the call back
        await worker.ownership.release(SID, "lost")
        assert SID not in worker.calls
        assert sample("voxcart_bus_backlog_entries", **labels) == 0
    assert handled == []
