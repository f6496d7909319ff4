"""Worker capacity reports: what a running worker publishes (and, stopping, that it takes no more calls), and how
a service's capacity is summed from its replicas' reports."""

from __future__ import annotations

import asyncio

from voxcart.common import events as ev
from voxcart.common.bus import Bus, Entry, keys
from voxcart.common.capacity import CapacityReport, ServiceCapacity, decode_report, encode_report, summarize
from voxcart.common.settings import load_settings
from voxcart.common.worker import CallContext, CallHandler, Worker

NOW = 1_800_000_000_000


def test_common_capacity_report_round_trip_and_garbage() -> None:
    report = CapacityReport(3, 50, False, NOW)
    assert decode_report(encode_report(report)) == report
    assert decode_report(b"not json") is None
    assert decode_report(b'{"owned": 1}') is None
    assert decode_report(encode_report(CapacityReport(-1, 50, False, NOW))) is None


def test_common_capacity_summarize_counts_live_replicas_only() -> None:
    raw = {
        "a": encode_report(CapacityReport(2, 5, False, NOW - 1000)),
        "b": encode_report(CapacityReport(1, 5, False, NOW)),
        "draining": encode_report(CapacityReport(4, 5, True, NOW)),
        "dead": encode_report(CapacityReport(0, 50, False, NOW - 5001)),
        "garbage": b"\x00",
    }
    capacity, dead = summarize(raw, NOW)
    assert capacity == ServiceCapacity(replicas=3, owned=7, max_calls=10)
    assert sorted(dead) == ["dead", "garbage"]
    assert summarize({"dead": raw["dead"]}, NOW) == (None, ["dead"])
    assert summarize({}, NOW) == (None, [])


class _Idle:
    async def handle(self, entry: Entry, event: ev.Event) -> None:
        """Nothing to do."""

    async def close(self, reason: str) -> None:
        """Nothing to release."""

    def peek(self, event: ev.Event) -> None:
        """Nothing to see."""


async def _idle(ctx: CallContext) -> CallHandler:
    return _Idle()


async def test_common_capacity_worker_reports_then_drains(bus: Bus) -> None:
    settings = load_settings({"MAX_CALLS": "7", "REPLICA_ID": "stt-test", "HOST": "127.0.0.1"}, env_file=None)
    worker = Worker(bus, "stt", settings, lambda sid: [keys.audio_in(sid)], _idle)
    running = asyncio.create_task(worker.run(install_signals=False))
    try:
        async with asyncio.timeout(5):
            while not (raw := await bus.hgetall(keys.capacity("stt"))):
                await asyncio.sleep(0.02)
        report = decode_report(raw["stt-test"])
        assert report is not None and (report.owned, report.max_calls, report.draining) == (0, 7, False)
        assert abs(report.at_ms - ev.now_ms()) < 5000
    finally:
        worker.request_stop()
        async with asyncio.timeout(10):
            await running
    final = decode_report((await bus.hgetall(keys.capacity("stt")))["stt-test"])
    assert final is not None and final.draining  # stopping: no room for new calls here
    capacity, _ = summarize(await bus.hgetall(keys.capacity("stt")), ev.now_ms())
    assert capacity is not None and capacity.max_calls == 0
