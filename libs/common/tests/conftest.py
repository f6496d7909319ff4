"""The bus every contract test runs against: the in-memory fake and a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from voxcart.common.bus import Bus, MemoryBus, RedisBus


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "memory":
        yield MemoryBus()
        return
    real = RedisBus(request.getfixturevalue("redis_url"))
    await real.redis.flushdb()
    try:
        yield real
    finally:
        await real.close()
