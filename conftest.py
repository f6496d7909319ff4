"""Fixtures shared by every test directory: a real Redis for integration tests.

A fresh ``redis-server`` is started on a free port for the test session (so tests may flush it freely);
``VOXCART_TEST_REDIS_URL`` points the tests at an existing one instead (it will be flushed).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from voxcart.common.bus import RedisBus
from voxcart.common.localredis import start_redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("VOXCART_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = start_redis(appendonly=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def redis_bus(redis_url: str) -> AsyncIterator[RedisBus]:
    bus = RedisBus(redis_url)
    await bus.redis.flushdb()
    try:
        yield bus
    finally:
        await bus.close()
