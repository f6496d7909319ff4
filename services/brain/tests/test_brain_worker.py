"""BrainHandler on a MemoryBus with a real Ownership lease: greeting, replies, replay, takeover, hangup, fencing."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
import pytest

from voxcart.brain.app import publish_language
from voxcart.brain.dialog import Dialog, DialogState
from voxcart.brain.store import FixedClock, SqliteStore, demo_seed_path
from voxcart.brain.worker import BrainHandler, BrainState
from voxcart.common import events as ev
from voxcart.common.bus import Entry, MemoryBus, Output, keys
from voxcart.common.bus.ownership import Ownership, OwnershipConfig
from voxcart.common.seed import Seed, load_seed
from voxcart.common.worker import CallContext

SID = "CAbrainworker0001"


@pytest.fixture(scope="module")
def seed() -> Seed:
    return load_seed(demo_seed_path())


@pytest.fixture
def dialog(seed: Seed) -> Dialog:
    today = max(o.placed for o in seed.orders) + dt.timedelta(days=2)
    clock = FixedClock.on(today, seed.store.timezone, hour=11)
    return Dialog(SqliteStore.from_file(demo_seed_path(), clock=clock))


@dataclass
class Replica:
    bus: MemoryBus
    ownership: Ownership
    dropped: list[tuple[str, str]]

    async def context(self, reason: str = "claimed") -> CallContext:
        assert await self.ownership.try_acquire(SID, reason)
        raw = await self.bus.hgetall(keys.checkpoint("brain", SID))
        checkpoint = {k: v.decode() for k, v in raw.items()}
        return CallContext(SID, "brain", self.bus, self.ownership, reason, checkpoint)


def make_replica(bus: MemoryBus, name: str) -> Replica:
    dropped: list[tuple[str, str]] = []

    async def acquired(sid: str, reason: str) -> None:
        pass

    async def on_dropped(sid: str, reason: str) -> None:
        dropped.append((sid, reason))

    own = Ownership(bus, "brain", name, OwnershipConfig(lease_ttl_ms=60_000), acquired, on_dropped)
    return Replica(bus, own, dropped)


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus()


@pytest.fixture
async def handlers() -> AsyncIterator[list[BrainHandler]]:
    """Handlers to close at the end (their timers)."""
    made: list[BrainHandler] = []
    yield made
    for handler in made:
        await handler.close("ended")


async def new_handler(
    replica: Replica, dialog: Dialog, made: list[BrainHandler], reason: str = "claimed"
) -> BrainHandler:
    handler = await BrainHandler.create(await replica.context(reason), dialog)
    made.append(handler)
    return handler


async def read(bus: MemoryBus, stream: str) -> list[ev.Event]:
    return [ev.decode(e.data) for e in await bus.range(stream)]


async def says(bus: MemoryBus) -> list[ev.Say]:
    return [e for e in await read(bus, keys.tts(SID)) if isinstance(e, ev.Say)]


async def saved_state(bus: MemoryBus) -> BrainState:
    raw = await bus.hgetall(keys.state(SID))
    return msgspec.msgpack.decode(raw["brain"], type=BrainState)


async def final(bus: MemoryBus, text: str, utterance: str, voiced: float = 1000.0) -> tuple[Entry, ev.Event]:
    event = ev.TranscriptFinal(
        call_sid=SID,
        utterance_id=utterance,
        text=text,
        confidence=0.9,
        first_voiced_arrived=voiced - 800,
        last_voiced_arrived=voiced,
        endpointed_at=voiced + 600,
        recognized_at=voiced + 650,
    )
    data = ev.encode(event)
    [entry_id] = await bus.publish([Output(keys.events(SID), data)])
    assert entry_id is not None
    return Entry(keys.events(SID), entry_id, data), event


async def test_brain_worker_greets_new_call(
    bus: MemoryBus, dialog: Dialog, seed: Seed, handlers: list[BrainHandler]
) -> None:
    customer = next(c for c in seed.customers if c.phone)
    assert customer.phone is not None
    await bus.hset(keys.meta(SID), {"from": customer.phone, "to": "+15555550999"})
    handler = await new_handler(make_replica(bus, "r1"), dialog, handlers)

    greeting = await says(bus)
    assert len(greeting) >= 2
    assert [s.turn_no for s in greeting] == [1] * len(greeting)
    assert [s.seq for s in greeting] == list(range(len(greeting)))
    assert [s.last for s in greeting] == [False] * (len(greeting) - 1) + [True]
    assert all(s.turn_id == f"{SID}:1" for s in greeting)
    assert customer.name.split()[0] in greeting[0].text  # the caller's number from meta was used

    turns = await read(bus, keys.turns(SID))
    assert len(turns) == 1 and isinstance(turns[0], ev.TurnRecord)
    assert turns[0].speaker == "agent" and turns[0].turn_no == 1 and turns[0].intent == "greeting"
    assert turns[0].text == " ".join(s.text for s in greeting)

    state = await saved_state(bus)
    assert state.turn_no == 1 and state.last_seq == len(greeting) - 1
    assert state.dialog.caller_number == customer.phone
    assert state.dialog.caller_customer == customer.id
    assert handler.state.turn_no == 1


async def test_brain_worker_greets_unknown_or_withheld_caller(
    bus: MemoryBus, dialog: Dialog, seed: Seed, handlers: list[BrainHandler]
) -> None:
    await new_handler(make_replica(bus, "r1"), dialog, handlers)  # no meta at all
    greeting = await says(bus)
    assert greeting and greeting[0].turn_no == 1
    assert not any(c.name.split()[0] in greeting[0].text for c in seed.customers)
    assert (await saved_state(bus)).dialog.caller_number == ""


async def test_brain_worker_answers_final_once(bus: MemoryBus, dialog: Dialog, handlers: list[BrainHandler]) -> None:
    handler = await new_handler(make_replica(bus, "r1"), dialog, handlers)
    before = len(await says(bus))
    entry, event = await final(bus, "what is your return policy", "u1", voiced=123_456.0)
    await handler.handle(entry, event)

    reply = (await says(bus))[before:]
    assert reply, "no reply to a final transcript"
    assert {s.turn_no for s in reply} == {2}
    assert {s.reply_to_voiced for s in reply} == {123_456.0}
    assert reply[-1].last and not any(s.last for s in reply[:-1])
    turns = [t for t in await read(bus, keys.turns(SID)) if isinstance(t, ev.TurnRecord)]
    assert [(t.speaker, t.turn_no) for t in turns] == [("agent", 1), ("caller", 2), ("agent", 2)]
    assert turns[1].text == "what is your return policy" and turns[1].ended == 123_456.0
    checkpoint = await bus.hgetall(keys.checkpoint("brain", SID))
    assert checkpoint[keys.events(SID)].decode() == entry.id
    assert (await saved_state(bus)).answered == ["u1"]

    # the same final again (a replay): no second answer, the checkpoint still moves
    tts_len, turns_len = len(await says(bus)), len(await read(bus, keys.turns(SID)))
    await handler.handle(entry, event)
    again, _ = await final(bus, "what is your return policy", "u1")
    await handler.handle(again, event)
    assert len(await says(bus)) == tts_len
    assert len(await read(bus, keys.turns(SID))) == turns_len
    assert (await bus.hgetall(keys.checkpoint("brain", SID)))[keys.events(SID)].decode() == again.id
    assert handler.state.turn_no == 2


async def test_brain_worker_barge_in_cancels_unplayed_turn(
    bus: MemoryBus, dialog: Dialog, handlers: list[BrainHandler]
) -> None:
    handler = await new_handler(make_replica(bus, "r1"), dialog, handlers)
    entry, event = await final(bus, "what is your return policy", "u1", voiced=5000.0)
    await handler.handle(entry, event)  # the greeting (turn 1) was never marked played
    cancels = [e for e in await read(bus, keys.tts(SID)) if isinstance(e, ev.Cancel)]
    clears = [e for e in await read(bus, keys.control(SID)) if isinstance(e, ev.Clear)]
    assert [c.turn_no for c in cancels] == [1]
    assert [(c.turn_no, c.voiced_arrived) for c in clears] == [(1, 4200.0)]


async def test_brain_worker_takeover_continues_saved_state(
    bus: MemoryBus, dialog: Dialog, handlers: list[BrainHandler]
) -> None:
    first = make_replica(bus, "r1")
    old = await new_handler(first, dialog, handlers)
    entry, event = await final(bus, "what is your return policy", "u1")
    await old.handle(entry, event)
    says_before = await says(bus)
    await first.ownership.release(SID, "drain")

    second = make_replica(bus, "r2")
    new = await new_handler(second, dialog, handlers, reason="takeover")
    assert await says(bus) == says_before  # no second greeting
    assert new.state.turn_no == 2
    assert new.ctx.checkpoint == {keys.events(SID): entry.id}

    # a replay of the already answered final (e.g. read again from an older checkpoint) is not answered
    await new.handle(entry, event)
    assert await says(bus) == says_before

    entry2, event2 = await final(bus, "do you have the chinos", "u2")
    await new.handle(entry2, event2)
    fresh = (await says(bus))[len(says_before) :]
    assert fresh and {s.turn_no for s in fresh} == {3}
    assert (await saved_state(bus)).answered == ["u1", "u2"]


async def test_brain_worker_goodbye_hangs_up_after_turn(
    bus: MemoryBus, dialog: Dialog, handlers: list[BrainHandler]
) -> None:
    handler = await new_handler(make_replica(bus, "r1"), dialog, handlers)
    entry, event = await final(bus, "goodbye", "u1")
    await handler.handle(entry, event)

    bye = [s for s in await says(bus) if s.turn_no == 2]
    assert bye and bye[-1].last
    hangups = [e for e in await read(bus, keys.control(SID)) if isinstance(e, ev.Hangup)]
    assert len(hangups) == 1 and hangups[0].after_turn == 2
    assert (await saved_state(bus)).finished

    # once finished, further input only moves the checkpoint
    tts_len = len(await read(bus, keys.tts(SID)))
    entry2, event2 = await final(bus, "wait, one more thing", "u2")
    await handler.handle(entry2, event2)
    assert len(await read(bus, keys.tts(SID))) == tts_len
    assert len([e for e in await read(bus, keys.control(SID)) if isinstance(e, ev.Hangup)]) == 1
    assert (await bus.hgetall(keys.checkpoint("brain", SID)))[keys.events(SID)].decode() == entry2.id


async def test_brain_worker_commit_after_lease_lost_writes_nothing(
    bus: MemoryBus, dialog: Dialog, handlers: list[BrainHandler]
) -> None:
    first = make_replica(bus, "r1")
    zombie = await new_handler(first, dialog, handlers)
    lease = first.ownership.owned[SID]
    # the lease expires (a stall) and another replica takes the call over
    assert await bus.release_lease(lease.key, lease.value)
    second = make_replica(bus, "r2")
    assert await second.ownership.try_acquire(SID, "takeover")

    snapshot = {stream: len(await bus.range(stream)) for stream in (keys.tts(SID), keys.turns(SID), keys.control(SID))}
    state_before = await bus.hgetall(keys.state(SID))
    checkpoint_before = await bus.hgetall(keys.checkpoint("brain", SID))
    entry, event = await final(bus, "goodbye", "u1")
    await zombie.handle(entry, event)

    assert {s: len(await bus.range(s)) for s in snapshot} == snapshot
    assert await bus.hgetall(keys.state(SID)) == state_before
    assert await bus.hgetall(keys.checkpoint("brain", SID)) == checkpoint_before
    assert SID not in first.ownership.owned
    assert first.dropped == [(SID, "lost")]


async def test_brain_worker_tells_stt_what_to_listen_for(
    bus: MemoryBus, dialog: Dialog, seed: Seed, handlers: list[BrainHandler]
) -> None:
    handler = await new_handler(make_replica(bus, "r1"), dialog, handlers)
    [greeting] = await read(bus, keys.listen(SID))
    assert isinstance(greeting, ev.Listen) and greeting.turn_no == 1 and greeting.expect == "free"
    assert seed.products[0].name in greeting.keyterms  # product names to boost in a cloud recognizer

    order = seed.orders[0]
    entry, event = await final(bus, f"where is order {order.number}", f"{SID}:1-5")
    await handler.handle(entry, event)
    listens = await read(bus, keys.listen(SID))
    assert len(listens) == 2
    asked = listens[-1]
    assert isinstance(asked, ev.Listen) and asked.turn_no == handler.state.turn_no == 2
    assert asked.expect == handler.state.dialog.last_expect == "digits"  # an unknown caller: ZIP code asked
    assert asked.keyterms == []


def test_stock_phrases_are_what_the_dialog_says_and_hold_nothing_personal(dialog: Dialog, seed: Seed) -> None:
    phrases = dialog.stock_phrases()
    greeting = dialog.greet(DialogState(call_id="CAstock"), "")
    assert all(s in phrases for s in greeting.sentences if "calling" not in s or "Good" in s)
    assert not any(c.name.split()[0] in p for p in phrases for c in seed.customers)
    assert not any(ch.isdigit() for p in phrases for ch in p)


async def test_brain_publishes_the_caller_language_and_stock_phrases_with_one_version(
    bus: MemoryBus, dialog: Dialog
) -> None:
    version = await publish_language(bus, dialog)
    language = await bus.hgetall(keys.LANGUAGE)
    phrases = await bus.hgetall(keys.PHRASES)
    assert language["version"].decode() == phrases["version"].decode() == version
    assert "where is my order" in " ".join(msgspec.json.decode(language["samples"]))
    assert msgspec.json.decode(phrases["phrases"]) == dialog.stock_phrases()
    assert await publish_language(bus, dialog) == version  # same store, same version: stt does not rebuild
