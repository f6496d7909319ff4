"""The bus every contract test runs against: the in-memory fake, a real Redis and a real three-node Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from voxcart.common.bus import Bus, ClusterBus, MemoryBus, RedisBus


@pytest.fixture(
    params=["memory", pytest.param("redis", marks=pytest.mark.redis), pytest.param("cluster", marks=pytest.mark.redis)]
)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "memory":
        yield MemoryBus()
        return
    if request.param == "cluster":
        real: RedisBus = ClusterBus(request.getfixturevalue("redis_cluster_url"))
    else:
        real = RedisBus(request.getfixturevalue("redis_url"))
    await real.redis.flushdb()
    try:
        yield real
    finally:
        await real.close()
