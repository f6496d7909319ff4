"""BrainHandler's silence timer across owners and faults: a replica that takes a call over while the caller is
silent after the last reply arms the re-prompt again (the old owner's timer died with it), and a timer whose
commit meets a Redis failure releases the call for replay instead of dying silently."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence

import pytest

from voxcart.brain.dialog import Dialog
from voxcart.brain.store import FixedClock, SqliteStore, demo_seed_path
from voxcart.brain.worker import BrainHandler
from voxcart.common import events as ev
from voxcart.common.bus import BusError, Entry, MemoryBus, Output, keys
from voxcart.common.bus.ownership import Ownership, OwnershipConfig
from voxcart.common.seed import load_seed
from voxcart.common.worker import CallContext

SID = "CAbraintimers0001"


class FailingBus(MemoryBus):
    """A MemoryBus whose commits raise :class:`BusError` once ``failing`` is set (Redis gone)."""

    failing = False

    async def commit(
        self,
        lease_key: str,
        lease_value: str,
        outputs: Sequence[Output],
        checkpoint_key: str,
        checkpoint: Mapping[str, str],
        state_key: str | None = None,
        state: Mapping[str, bytes] | None = None,
        ttl_ms: int = 0,
        ttl_anchor: str | None = None,
    ) -> bool:
        if self.failing:
            raise BusError("redis: Connection refused")
        return await super().commit(
            lease_key, lease_value, outputs, checkpoint_key, checkpoint, state_key, state, ttl_ms, ttl_anchor
        )


@pytest.fixture
def dialog() -> Dialog:
    seed = load_seed(demo_seed_path())
    today = max(o.placed for o in seed.orders) + dt.timedelta(days=2)
    return Dialog(SqliteStore.from_file(demo_seed_path(), clock=FixedClock.on(today, seed.store.timezone, hour=11)))


async def owner(bus: MemoryBus, name: str, dialog: Dialog, reason: str, silence_s: float) -> BrainHandler:
    async def nothing(sid: str, why: str) -> None:
        pass

    own = Ownership(bus, "brain", name, OwnershipConfig(lease_ttl_ms=60_000), nothing, nothing)
    assert await own.try_acquire(SID, reason)
    raw = await bus.hgetall(keys.checkpoint("brain", SID))
    ctx = CallContext(SID, "brain", bus, own, reason, {k: v.decode() for k, v in raw.items()})
    return await BrainHandler.create(ctx, dialog, silence_s=silence_s)


async def played(handler: BrainHandler, turn: int, seq: int) -> None:
    event = ev.Mark(call_sid=SID, name=f"{turn}-{seq}", turn_no=turn, seq=seq, played=True)
    data = ev.encode(event)
    [entry_id] = await handler.ctx.bus.publish([Output(keys.events(SID), data)])
    assert entry_id is not None
    await handler.handle(Entry(keys.events(SID), entry_id, data), event)


async def said(bus: MemoryBus, turn: int) -> list[str]:
    return [
        e.text
        for x in await bus.range(keys.tts(SID))
        if isinstance(e := ev.decode(x.data), ev.Say) and e.turn_no == turn
    ]


async def test_a_takeover_after_the_last_reply_played_rearms_the_silence_reprompt(dialog: Dialog) -> None:
    bus = MemoryBus()
    first = await owner(bus, "r1", dialog, "claimed", silence_s=30.0)
    await played(first, 1, first.state.last_seq)  # the greeting played; the caller says nothing
    await first.ctx.ownership.release(SID, "drain")
    await first.close("drain")
    assert await said(bus, 2) == []

    second = await owner(bus, "r2", dialog, "takeover", silence_s=0.05)
    try:
        await asyncio.sleep(0.3)
        assert (await said(bus, 2))[:1] == ["Are you still there?"]
    finally:
        await second.close("ended")


async def test_a_takeover_mid_reply_waits_for_the_reply_to_play(dialog: Dialog) -> None:
    bus = MemoryBus()
    first = await owner(bus, "r1", dialog, "claimed", silence_s=30.0)
    await first.ctx.ownership.release(SID, "drain")  # the greeting is still playing
    await first.close("drain")
    second = await owner(bus, "r2", dialog, "takeover", silence_s=0.05)
    try:
        await asyncio.sleep(0.3)
        assert await said(bus, 2) == [], "no re-prompt over a reply that has not finished playing"
    finally:
        await second.close("ended")


async def test_a_timer_that_meets_a_redis_failure_gives_the_call_up(dialog: Dialog) -> None:
    bus = FailingBus()
    handler = await owner(bus, "r1", dialog, "claimed", silence_s=0.05)
    given_up: list[bool] = []
    handler.ctx.give_up = lambda: given_up.append(True)
    try:
        await played(handler, 1, handler.state.last_seq)
        bus.failing = True
        await asyncio.sleep(0.3)
        assert given_up == [True], "the call is released for its next owner to continue"
        assert await said(bus, 2) == []
    finally:
        await handler.close("ended")
