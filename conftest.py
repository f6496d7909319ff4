"""Fixtures shared by every test directory: a real Redis (and a real Redis Cluster) for integration tests.

A fresh ``redis-server`` is started on a free port for the test session (so tests may flush it freely);
``VOXCART_TEST_REDIS_URL`` points the tests at an existing one instead (it will be flushed). Likewise a
three-node Cluster is started the first time a test asks for ``redis_cluster_url`` (about 2 s), unless
``VOXCART_TEST_REDIS_CLUSTER_URL`` names one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from voxcart.common.bus import RedisBus
from voxcart.common.localredis import start_redis, start_redis_cluster


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


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    url = os.environ.get("VOXCART_TEST_REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    cluster = start_redis_cluster()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
async def redis_bus(redis_url: str) -> AsyncIterator[RedisBus]:
    bus = RedisBus(redis_url)
    await bus.redis.flushdb()
    try:
        yield bus
    finally:
        await bus.close()
