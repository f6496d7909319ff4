"""The gateway's outbound reader on a MemoryBus: a big read is handed to the calls in order, in slices with the
event loop free in between (so 200 calls' pacers are not held up by one read of 500 chunks)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from voxcart.common import events as ev
from voxcart.common.bus import MemoryBus, Output, keys
from voxcart.gateway.calls import _DELIVER_SLICE, CallRegistry
from voxcart.gateway.session import CallSession

SID = "CAoutslices01"


class Recorder:
    """Stands in for a call's session: records each chunk with how often the loop let another task run."""

    def __init__(self, ticks: list[int]) -> None:
        self.sid = SID
        self.positions = {keys.audio_out(SID): "0-0", keys.control(SID): "0-0"}
        self.ticks = ticks
        self.seen: list[tuple[int, int]] = []

    async def deliver(self, event: ev.Event) -> None:
        assert isinstance(event, ev.AudioChunk)
        self.seen.append((event.k, self.ticks[0]))


async def test_a_big_read_is_delivered_in_order_in_slices() -> None:
    bus = MemoryBus()
    registry = CallRegistry(bus, block_ms=20)
    ticks = [0]
    session = Recorder(ticks)
    n = 4 * _DELIVER_SLICE
    chunks = [
        Output(
            keys.audio_out(SID),
            ev.encode(ev.AudioChunk(call_sid=SID, turn_no=1, seq=0, k=k, payload=b"\xff" * 160)),
            id=f"1-{k + 1}",
        )
        for k in range(n)
    ]
    assert all(await bus.publish(chunks))  # there before the first read: one read of them all

    async def ticker() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(ticker())
    registry.sessions[SID] = cast(CallSession, cast(Any, session))
    await registry.start()
    try:
        async with asyncio.timeout(5):
            while len(session.seen) < n:
                await asyncio.sleep(0.01)
    finally:
        await registry.stop()
        other.cancel()
    assert [k for k, _ in session.seen] == list(range(n))
    slices = [[t for k, t in session.seen if k // _DELIVER_SLICE == i] for i in range(4)]
    assert all(len(set(s)) == 1 for s in slices)  # within a slice, nothing else ran
    assert len({s[0] for s in slices}) == 4  # between slices, the loop was free
