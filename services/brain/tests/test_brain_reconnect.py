"""``stream.reconnected`` (a new media socket replaced one that died with its gateway replica): brain stops the cut
turn and repeats the cut-off prompt once; a turn that had played is not repeated, only its question."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from voxcart.brain.dialog import Dialog
from voxcart.brain.store import FixedClock, SqliteStore, demo_seed_path
from voxcart.brain.worker import BrainHandler
from voxcart.common import events as ev
from voxcart.common.bus import Entry, MemoryBus, Output, keys
from voxcart.common.bus.ownership import Ownership, OwnershipConfig
from voxcart.common.seed import load_seed
from voxcart.common.worker import CallContext

SID = "CAbrainreconnect01"
CUT = "Sorry, we got cut off."


@pytest.fixture
async def handler() -> AsyncIterator[BrainHandler]:
    seed = load_seed(demo_seed_path())
    today = max(o.placed for o in seed.orders) + dt.timedelta(days=2)
    dialog = Dialog(SqliteStore.from_file(demo_seed_path(), clock=FixedClock.on(today, seed.store.timezone, hour=11)))
    bus = MemoryBus()

    async def nothing(sid: str, reason: str) -> None:
        pass

    own = Ownership(bus, "brain", "r1", OwnershipConfig(lease_ttl_ms=60_000), nothing, nothing)
    assert await own.try_acquire(SID, "claimed")
    made = await BrainHandler.create(CallContext(SID, "brain", bus, own, "claimed", {}), dialog)
    yield made
    await made.close("ended")


async def _feed(handler: BrainHandler, event: ev.Event) -> None:
    bus = handler.ctx.bus
    data = ev.encode(event)
    [entry_id] = await bus.publish([Output(keys.events(SID), data)])
    assert entry_id is not None
    await handler.handle(Entry(keys.events(SID), entry_id, data), event)


async def _read(handler: BrainHandler, stream: str) -> list[ev.Event]:
    return [ev.decode(e.data) for e in await handler.ctx.bus.range(stream)]


async def test_brain_reconnect_during_a_turn_cuts_it_and_says_it_again(handler: BrainHandler) -> None:
    greeting = [e.text for e in await _read(handler, keys.tts(SID)) if isinstance(e, ev.Say)]
    await _feed(handler, ev.StreamReconnected(call_sid=SID, gen=2))  # the greeting never finished playing

    tts = await _read(handler, keys.tts(SID))
    assert [e.turn_no for e in tts if isinstance(e, ev.Cancel)] == [1]
    again = [(e.turn_no, e.text) for e in tts if isinstance(e, ev.Say) and e.turn_no == 2]
    assert [text for _, text in again] == [CUT, *greeting]
    assert [e.turn_no for e in await _read(handler, keys.control(SID)) if isinstance(e, ev.Clear)] == [1]
    checkpoint = await handler.ctx.bus.hgetall(keys.checkpoint("brain", SID))
    assert checkpoint[keys.events(SID)]  # committed with the reply: a replay says nothing twice


async def test_brain_reconnect_after_a_played_turn_repeats_its_question(handler: BrainHandler) -> None:
    says = [e for e in await _read(handler, keys.tts(SID)) if isinstance(e, ev.Say)]
    last = says[-1]
    played = ev.Mark(call_sid=SID, name=f"t{last.turn_no}-s{last.seq}", turn_no=last.turn_no, seq=last.seq, played=True)
    await _feed(handler, played)
    await _feed(handler, ev.StreamReconnected(call_sid=SID, gen=2))

    tts = await _read(handler, keys.tts(SID))
    assert not [e for e in tts if isinstance(e, ev.Cancel)]
    again = [e.text for e in tts if isinstance(e, ev.Say) and e.turn_no == 2]
    assert again[0] == CUT and again[1:] == handler.state.dialog.last_prompt and again[-1].endswith("?")
    assert not [e for e in await _read(handler, keys.control(SID)) if isinstance(e, ev.Clear)]
