"""One contract, three buses: everything here runs against the in-memory bus, a real Redis and a real Cluster."""

from __future__ import annotations

import asyncio
import time

import pytest

from voxcart.common.bus import Bus, Output, RedisBus


async def test_publish_then_read_in_order(bus: Bus) -> None:
    ids = await bus.publish([Output("s1", b"a"), Output("s1", b"b"), Output("s2", b"c")])
    assert all(ids)
    entries = await bus.read({"s1": "0-0", "s2": "0-0"}, count=10, block_ms=0)
    assert [(e.stream, e.data) for e in entries] == [("s1", b"a"), ("s1", b"b"), ("s2", b"c")]
    after = await bus.read({"s1": entries[0].id}, count=10, block_ms=0)
    assert [e.data for e in after] == [b"b"]


async def test_explicit_ids_reject_replays(bus: Bus) -> None:
    first = await bus.publish([Output("a", b"1", id="1-1"), Output("a", b"2", id="1-2")])
    assert first == ["1-1", "1-2"]
    again = await bus.publish(
        [Output("a", b"2 again", id="1-2"), Output("a", b"old", id="1-1"), Output("a", b"3", id="1-3")]
    )
    assert again == [None, None, "1-3"]
    assert [e.data for e in await bus.range("a")] == [b"1", b"2", b"3"]
    assert await bus.last_id("a") == "1-3"
    # a newer generation fences the old one out
    assert await bus.publish([Output("a", b"gen2", id="2-1"), Output("a", b"gen1 late", id="1-4")]) == ["2-1", None]


async def test_blocking_read_wakes_on_publish(bus: Bus) -> None:
    async def later() -> None:
        await asyncio.sleep(0.05)
        await bus.publish([Output("wake", b"x")])

    task = asyncio.create_task(later())
    started = time.monotonic()
    entries = await bus.read({"wake": "0-0"}, count=10, block_ms=2000)
    await task
    assert [e.data for e in entries] == [b"x"]
    assert time.monotonic() - started < 1.5
    assert await bus.read({"nothing": "0-0"}, count=10, block_ms=30) == []


async def test_consumer_group_delivers_once_and_autoclaims(bus: Bus) -> None:
    await bus.ensure_group("life", "stt")
    await bus.ensure_group("life", "stt")  # idempotent
    await bus.publish([Output("life", b"e1"), Output("life", b"e2")])
    a = await bus.read_group("life", "stt", "A", 1, 0)
    b = await bus.read_group("life", "stt", "B", 1, 0)
    assert [e.data for e in a] == [b"e1"] and [e.data for e in b] == [b"e2"]
    await bus.ack("life", "stt", [b[0].id])
    assert await bus.autoclaim("life", "stt", "B", min_idle_ms=10_000, count=10) == []
    await asyncio.sleep(0.05)
    claimed = await bus.autoclaim("life", "stt", "B", min_idle_ms=10, count=10)
    assert [(c.data, c.deliveries) for c in claimed] == [(b"e1", 2)]


async def test_leases_belong_to_their_holder(bus: Bus) -> None:
    assert await bus.acquire_lease("L", "me:1", 1000)
    assert not await bus.acquire_lease("L", "you:1", 1000)
    assert not await bus.renew_lease("L", "you:1", 1000)
    assert await bus.renew_lease("L", "me:1", 1000)
    assert not await bus.release_lease("L", "you:1")
    assert await bus.leases_exist(["L", "other"]) == [True, False]
    assert await bus.release_lease("L", "me:1")
    assert await bus.acquire_lease("L", "you:1", 60)
    await asyncio.sleep(0.15)
    assert await bus.leases_exist(["L"]) == [False]
    assert not await bus.renew_lease("L", "you:1", 1000)


async def test_leases_renew_in_one_call(bus: Bus) -> None:
    assert await bus.acquire_lease("L1:{CA1}", "me:1", 150)
    assert await bus.acquire_lease("L2:{CA2}", "you:1", 150)
    assert await bus.renew_leases([], 1000) == []
    renewed = await bus.renew_leases([("L1:{CA1}", "me:1"), ("L2:{CA2}", "me:1"), ("L3:{CA3}", "me:1")], 5000)
    assert renewed == [True, False, False], "only a lease this value holds is renewed"
    await asyncio.sleep(0.3)
    assert await bus.exists(["L1:{CA1}", "L2:{CA2}"]) == [True, False], "the renewed one outlived its first TTL"


async def test_a_late_commit_does_not_outlive_the_calls_retention(bus: Bus) -> None:
    lease, ckpt, out, late = "lease:{CA5}", "ckpt:{CA5}", "out:{CA5}", "late:{CA5}"
    await bus.acquire_lease(lease, "me:1", 5000)
    assert await bus.commit(lease, "me:1", [Output(out, b"a")], ckpt, {"in": "1-0"}, ttl_ms=60_000)
    await bus.expire([ckpt, out], 200)  # the call ended: its keys are cut to their retention
    # a replica still working through its backlog commits to a stream the call never had
    assert await bus.commit(lease, "me:1", [Output(late, b"late")], ckpt, {"in": "2-0"}, ttl_ms=60_000)
    assert [e.data for e in await bus.range(late)] == [b"late"]
    await asyncio.sleep(0.35)
    assert await bus.exists([ckpt, out, late]) == [False, False, False], "the late key expired with the call"
    # a call's first commit still gives its keys the full TTL
    assert await bus.commit(lease, "me:1", [Output(out, b"b")], ckpt, {"in": "3-0"}, ttl_ms=60_000)
    await asyncio.sleep(0.3)
    assert await bus.exists([ckpt, out]) == [True, True]


async def test_a_first_commit_after_the_call_ended_does_not_outlive_its_retention(bus: Bus) -> None:
    lease, meta, ckpt, out = "lease:{CA6}", "meta:{CA6}", "ckpt:{CA6}", "out:{CA6}"
    await bus.hset(meta, {"from": "+15555550123"}, ttl_ms=60_000)  # the gateway's, from the call's start
    await bus.expire([meta], 200)  # the call ended before this replica committed anything for it
    await bus.acquire_lease(lease, "me:1", 5000)
    assert await bus.commit(lease, "me:1", [Output(out, b"x")], ckpt, {"in": "1-0"}, ttl_ms=60_000, ttl_anchor=meta)
    await asyncio.sleep(0.35)
    assert await bus.exists([meta, ckpt, out]) == [False, False, False]


async def test_commit_is_fenced_and_atomic(bus: Bus) -> None:
    # one call's keys, its sid in braces: one Cluster slot, as keys.py names them
    lease, ckpt, state, out = "lease:{CA1}", "ckpt:{CA1}", "state:{CA1}", "out:{CA1}"
    await bus.acquire_lease(lease, "me:1", 5000)
    outs = [Output(out, b"a", id="1-0"), Output(out, b"b", id="1-1")]
    assert await bus.commit(lease, "me:1", outs, ckpt, {"in": "5-5"}, state, {"dialog": b"\x01"}, ttl_ms=60_000)
    # a replay after takeover: the same outputs are dropped, the new one lands
    replay = [Output(out, b"a", id="1-0"), Output(out, b"b", id="1-1"), Output(out, b"c", id="1-2")]
    assert await bus.commit(lease, "me:1", replay, ckpt, {"in": "5-9"})
    # a zombie with a stale lease value writes nothing
    assert not await bus.commit(lease, "zombie:0", [Output(out, b"z", id="9-0")], ckpt, {"in": "9-9"})
    assert [e.data for e in await bus.range(out)] == [b"a", b"b", b"c"]
    assert await bus.hgetall(ckpt) == {"in": b"5-9"}
    assert await bus.hgetall(state) == {"dialog": b"\x01"}


async def test_start_call_once(bus: Bus) -> None:
    assert await bus.start_call_once("started:{CA1}", "life", b"start", 60_000)
    assert not await bus.start_call_once("started:{CA1}", "life", b"start", 60_000)
    assert [e.data for e in await bus.range("life")] == [b"start"]


async def test_dedupe_counters_hashes_and_zsets(bus: Bus) -> None:
    assert await bus.set_nx("d:1", "x", 10_000)
    assert not await bus.set_nx("d:1", "x", 10_000)
    assert await bus.incr("gen", 10_000) == 1
    assert await bus.incr("gen", 10_000) == 2
    await bus.hset("h", {"a": "1", "b": 2.5}, ttl_ms=10_000)
    assert await bus.hgetall("h") == {"a": b"1", "b": b"2.5"}
    assert (
        await bus.hget("h", "b") == b"2.5" and await bus.hget("h", "zz") is None and await bus.hget("nope", "a") is None
    )
    await bus.zadd("z", {"CA1": 100.0, "CA2": 200.0, "CA3": 300.0})
    assert await bus.zrange_by_score("z", 150, float("inf")) == [("CA2", 200.0), ("CA3", 300.0)]
    assert await bus.zrange_by_score("z", float("-inf"), float("inf"), reverse=True, limit=1) == [("CA3", 300.0)]
    await bus.zrem("z", ["CA2"])
    assert await bus.zscores("z", ["CA1", "CA2"]) == [100.0, None]
    await bus.expire(["h"], 50)
    await asyncio.sleep(0.12)
    assert await bus.hgetall("h") == {}


@pytest.mark.redis
async def test_redis_stream_ttl_applies_once(redis_bus: RedisBus) -> None:
    await redis_bus.publish([Output("s", b"a")], ttl_ms=100_000)
    ttl1 = await redis_bus.redis.pttl("s")
    await redis_bus.redis.pexpire("s", 5000)
    await redis_bus.publish([Output("s", b"b")], ttl_ms=100_000)
    assert 90_000 < ttl1 <= 100_000
    assert await redis_bus.redis.pttl("s") <= 5000
