"""The real stack for end-to-end tests: its own redis-server and one process per service replica."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from voxcart.cli.stack import Stack
from voxcart.common.localredis import start_redis


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server = start_redis(appendonly=False)
    log = Path(tmp_path_factory.mktemp("stack")) / "services.log"
    stack = Stack(
        redis_url=server.url,
        port=0,
        replicas={"stt": 2, "brain": 1, "tts": 1},
        env={"STORE_TODAY": "2026-11-20", "LOG_FORMAT": "text", "API_TOKEN": ""},
        log_path=str(log),
    )
    try:
        stack.start(timeout=90)
        yield stack
    finally:
        stack.stop()
        server.stop()
        print(f"service logs: {log}")
