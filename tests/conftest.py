"""The real stack for end-to-end tests: its own redis-server (or Redis Cluster) and one process per service replica."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from voxcart.cli.stack import Stack
from voxcart.common.localredis import LocalRedis, LocalRedisCluster, start_redis, start_redis_cluster

BASE_ENV = {"STORE_TODAY": "2026-11-20", "LOG_FORMAT": "text", "API_TOKEN": ""}


@contextlib.contextmanager
def running_stack(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    replicas: Mapping[str, int],
    env: Mapping[str, str] | None = None,
    cluster: bool = False,
) -> Iterator[Stack]:
    """A stack on its own redis-server, with ``env`` over :data:`BASE_ENV`; its logs' path is printed at the end.
    Its call records go to a SQLite file beside the logs unless ``env`` sets ``RECORDS_PATH``. ``cluster``: on a
    three-node Redis Cluster of its own instead (``REDIS_URL=redis+cluster://...``)."""
    server: LocalRedis | LocalRedisCluster = start_redis_cluster() if cluster else start_redis(appendonly=False)
    log = Path(tmp_path_factory.mktemp(name)) / "services.log"
    full_env = {**BASE_ENV, "RECORDS_PATH": str(log.with_name("records.sqlite3")), **(env or {})}
    stack = Stack(redis_url=server.url, port=0, replicas=dict(replicas), env=full_env, log_path=str(log))
    try:
        stack.start(timeout=90)
        yield stack
    finally:
        stack.stop()
        server.stop()
        print(f"service logs: {log}")


StackRunner = Callable[..., contextlib.AbstractContextManager[Stack]]


@pytest.fixture(scope="session")
def stack_runner(tmp_path_factory: pytest.TempPathFactory) -> StackRunner:
    """``with stack_runner(name, replicas, env) as stack:`` — a stack of its own (see :func:`running_stack`)."""
    return functools.partial(running_stack, tmp_path_factory)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory, "stack", {"stt": 2, "brain": 1, "tts": 1}) as running:
        yield running
