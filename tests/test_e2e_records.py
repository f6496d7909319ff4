"""Call records survive a restart of the whole stack: one simulated call, the stack and its Redis stopped, a new
stack (new Redis) on the same records file serves the record."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from voxcart.cli.calling import DEV_AUTH_TOKEN, build_items
from voxcart.cli.simulator import CallResult, SimulatorConfig, simulate_call
from voxcart.cli.stack import Stack
from voxcart.gateway.records_sqlite import SqliteRecordStore

pytestmark = pytest.mark.e2e

REPLICAS = {"stt": 1, "brain": 1, "tts": 1}
CALLER = "+15550004444"


def place_call(stack: Stack) -> CallResult:
    items = build_items(["goodbye"])
    config = SimulatorConfig(gateway_url=stack.gateway_url, auth_token=DEV_AUTH_TOKEN, from_number=CALLER)
    return asyncio.run(simulate_call(config, items))


def wait_stored(path: Path, sid: str, timeout: float = 15.0) -> None:
    """The gateway writes the record a moment after the call's end: wait until the file has it."""
    store = SqliteRecordStore(path)
    try:
        deadline = time.monotonic() + timeout
        while store.get(sid) is None:
            assert time.monotonic() < deadline, f"no stored record of {sid} after {timeout} s"
            time.sleep(0.2)
    finally:
        store.close()


def test_call_record_survives_a_restart_of_the_whole_stack(
    stack_runner: Callable[..., AbstractContextManager[Stack]], tmp_path: Path
) -> None:
    records = tmp_path / "records.sqlite3"
    env = {"RECORDS_PATH": str(records)}
    with stack_runner("records-before", REPLICAS, env) as stack:
        result = place_call(stack)
        assert result.record is not None, result.errors
        sid = result.call_sid
        wait_stored(records, sid)
    with stack_runner("records-after", REPLICAS, env) as stack:  # a new Redis: the call's keys are gone
        with httpx.Client(base_url=stack.gateway_url) as client:
            record = client.get(f"/calls/{sid}").json()
            listed = client.get("/calls", params={"outcome": "completed", "from": CALLER}).json()
    assert record["call_sid"] == sid and record["status"] == "completed"
    assert record["outcome"] == "completed", record
    assert [t["speaker"] for t in record["turns"]][:3] == ["agent", "caller", "agent"], record["turns"]
    assert record["turns"][-1]["intent"] == "goodbye"
    assert record["latency"]["turns"] >= 1 and record["latency"]["p95_s"] is not None
    assert [c["call_sid"] for c in listed["calls"]] == [sid]
