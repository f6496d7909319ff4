"""What only a Redis Cluster asks of the bus: reads over slots on several nodes, one-slot commits, the once-marker
of ``call.started`` beside the lifecycle stream, cluster failures as ``BusError``, and choosing the bus from
the URL. The shared contract (test_common_bus_contract.py) runs on the Cluster too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from voxcart.common.bus import BusError, ClusterBus, Output, RedisBus, keys, open_bus
from voxcart.common.bus.cluster import once_marker
from voxcart.common.localredis import free_port


@pytest.fixture
async def cluster(redis_cluster_url: str) -> AsyncIterator[ClusterBus]:
    bus = ClusterBus(redis_cluster_url)
    await bus.redis.flushdb()
    try:
        yield bus
    finally:
        await bus.close()


async def streams_on_three_nodes(bus: ClusterBus) -> list[str]:
    """Three stream names, each served by a different node."""
    await bus.cluster.initialize()
    by_node: dict[str, str] = {}
    for i in range(1000):
        name = f"s:{{{i}}}"
        node = bus.cluster.get_node_from_key(name)
        assert node is not None
        by_node.setdefault(node.name, name)
        if len(by_node) == 3:
            return list(by_node.values())
    raise AssertionError(f"the cluster has fewer than three nodes: {sorted(by_node)}")


async def getkeys_calls(bus: ClusterBus) -> int:
    """``COMMAND GETKEYS`` round trips served so far (redis-py's way to find an XREAD's keys when not told)."""
    total = 0
    for node in bus.cluster.get_primaries():
        stats = await bus.cluster.info("commandstats", target_nodes=node)
        total += int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0))
    return total


def test_the_url_or_the_setting_picks_the_cluster() -> None:
    assert type(open_bus("redis://127.0.0.1:1/0")) is RedisBus
    assert isinstance(open_bus("redis+cluster://127.0.0.1:1"), ClusterBus)
    assert isinstance(open_bus("rediss+cluster://user:pw@127.0.0.1:1/0"), ClusterBus)
    assert isinstance(open_bus("redis://127.0.0.1:1", cluster=True), ClusterBus)
    with pytest.raises(ValueError, match="only database 0"):
        open_bus("redis+cluster://127.0.0.1:1/2")
    with pytest.raises(ValueError, match="expected redis\\+cluster://"):
        ClusterBus("http://127.0.0.1:1")


@pytest.mark.redis
async def test_reads_span_nodes_in_order_and_wake_on_a_publish(cluster: ClusterBus) -> None:
    a, b, c = await streams_on_three_nodes(cluster)
    await cluster.publish([Output(c, b"c1"), Output(a, b"a1"), Output(b, b"b1"), Output(a, b"a2")])
    before = await getkeys_calls(cluster)
    entries = await cluster.read({b: "0-0", a: "0-0", c: "0-0"}, count=10, block_ms=0)
    assert [(e.stream, e.data) for e in entries] == [(b, b"b1"), (a, b"a1"), (a, b"a2"), (c, b"c1")]
    tops = {s: (await cluster.last_id(s)) or "" for s in (a, b, c)}

    async def later() -> None:
        await asyncio.sleep(0.1)
        await cluster.publish([Output(c, b"c2")])

    task = asyncio.create_task(later())
    started = time.monotonic()
    woke = await cluster.read(tops, count=10, block_ms=2000)
    waited = time.monotonic() - started
    await task
    assert [(e.stream, e.data) for e in woke] == [(c, b"c2")]
    assert waited < 0.1 + 0.1, f"a multi-slot read woke {waited:.3f} s after the start (publish at 0.1 s)"
    started = time.monotonic()
    assert await cluster.read({a: tops[a], b: tops[b], c: woke[-1].id}, count=10, block_ms=80) == []
    assert 0.07 < time.monotonic() - started < 0.5, "an empty multi-slot read waits out block_ms, no longer"
    one = await cluster.read({c: tops[c]}, count=10, block_ms=50)  # one slot: a plain XREAD on its node
    assert [e.data for e in one] == [b"c2"]
    assert await getkeys_calls(cluster) == before, "reads name their node: no COMMAND GETKEYS round trip"


@pytest.mark.redis
async def test_a_commit_across_slots_is_refused_and_writes_nothing(cluster: ClusterBus) -> None:
    lease = keys.lease("stt", "CA1")
    assert await cluster.acquire_lease(lease, "me:1", 5000)
    stray = [Output(keys.events("CA1"), b"ok"), Output(keys.events("CA2"), b"another call")]
    with pytest.raises(BusError, match=r"one Cluster slot.*vc:call:\{CA2\}:events \(slot \d+\)"):
        await cluster.commit(lease, "me:1", stray, keys.checkpoint("stt", "CA1"), {"in": "1-0"})
    assert await cluster.range(keys.events("CA1")) == [] and await cluster.hgetall(keys.checkpoint("stt", "CA1")) == {}
    own = [Output(keys.events("CA1"), b"ok", id="1-0")]
    assert await cluster.commit(lease, "me:1", own, keys.checkpoint("stt", "CA1"), {"in": "1-0"}, ttl_ms=60_000)
    assert [e.data for e in await cluster.range(keys.events("CA1"))] == [b"ok"]


@pytest.mark.redis
async def test_call_started_goes_out_once_from_the_lifecycle_slot(cluster: ClusterBus) -> None:
    started, data = keys.started("CA7"), b"call.started"
    assert await cluster.start_call_once(started, keys.LIFECYCLE, data, 60_000)
    assert not await cluster.start_call_once(started, keys.LIFECYCLE, data, 60_000)
    assert [e.data for e in await cluster.range(keys.LIFECYCLE)] == [data]
    marker = once_marker(keys.LIFECYCLE, started)
    assert marker == "vc:once:{vc:calls:lifecycle}:vc:call:CA7:started"
    assert cluster.cluster.keyslot(marker) == cluster.cluster.keyslot(keys.LIFECYCLE)
    assert 0 < await cluster.cluster.pttl(marker) <= 60_000


async def test_an_unreachable_cluster_is_a_bus_error() -> None:
    bus = ClusterBus(f"redis+cluster://127.0.0.1:{free_port()}")
    try:
        started = time.monotonic()
        assert not await bus.ping()
        with pytest.raises(BusError, match="redis: "):
            await bus.publish([Output(keys.audio_in("CA1"), b"frame")])
        with pytest.raises(BusError, match="redis: "):
            await bus.read({keys.audio_in("CA1"): "0-0", keys.audio_in("CA2"): "0-0"}, count=10, block_ms=50)
        with pytest.raises(BusError, match="redis: "):
            await bus.acquire_lease(keys.lease("stt", "CA1"), "me:1", 3000)
        with pytest.raises(BusError, match="redis: "):
            await bus.leases_exist([keys.lease("stt", "CA1"), keys.lease("stt", "CA2")])
        assert time.monotonic() - started < 5.0
    finally:
        await bus.close()
