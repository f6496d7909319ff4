"""RedisBus on a real Redis: more concurrent commands than the pool has connections wait for one, not fail (a
worker renews every lease at once while each of its calls commits); the one-script publish answers each output
as the pipeline did (its id, ``None`` for an id not above the top, an error for anything else)."""

from __future__ import annotations

import asyncio

import pytest

from voxcart.common.bus import BusError, Output, RedisBus, keys

pytestmark = pytest.mark.redis


async def test_a_burst_beyond_the_pool_waits_for_connections_instead_of_failing(redis_url: str) -> None:
    bus = RedisBus(redis_url)
    try:
        stream = keys.audio_in("CApoolburst")
        # 100 blocking reads hold 100 connections for 100 ms each: the pool has 64
        results = await asyncio.gather(*(bus.read({stream: "$"}, count=1, block_ms=100) for _ in range(100)))
    finally:
        await bus.close()
    assert results == [[]] * 100


async def test_publish_answers_each_output_and_names_a_real_error(redis_url: str) -> None:
    bus = RedisBus(redis_url)
    try:
        await bus.redis.delete("pub:a", "pub:b", "pub:str")
        outputs = [Output("pub:a", b"1", id="1-1"), Output("pub:b", b"x"), Output("pub:a", b"0", id="1-1")]
        first, auto, duplicate = await bus.publish(outputs, ttl_ms=60_000)
        assert (first, duplicate) == ("1-1", None) and auto is not None and auto.endswith("-0")
        assert 0 < await bus.redis.pttl("pub:a") <= 60_000 and 0 < await bus.redis.pttl("pub:b") <= 60_000
        assert [e.data for e in await bus.range("pub:a")] == [b"1"]
        await bus.redis.set("pub:str", "not a stream")
        with pytest.raises(BusError, match="WRONGTYPE"):
            await bus.publish([Output("pub:a", b"2", id="1-2"), Output("pub:str", b"y")])
        assert [e.data for e in await bus.range("pub:a")] == [b"1", b"2"]  # the others went in, as in a pipeline
    finally:
        await bus.close()
