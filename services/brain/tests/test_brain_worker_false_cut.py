"""BrainHandler on a MemoryBus: speech that cut the agent's turn and then turns out to be no interruption (it ends
without words, or as a backchannel) makes the agent say the turn again from the sentence cut, instead of leaving
the caller in a silence nobody ends; a real answer is still answered; the silence re-prompt honours the handler's
own timeout (``BRAIN_SILENCE_TIMEOUT_MS``)."""

from __future__ import annotations

import asyncio
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

SID = "CAbrainfalsecut01"


@pytest.fixture
def dialog() -> Dialog:
    seed = load_seed(demo_seed_path())
    today = max(o.placed for o in seed.orders) + dt.timedelta(days=2)
    clock = FixedClock.on(today, seed.store.timezone, hour=11)
    return Dialog(SqliteStore.from_file(demo_seed_path(), clock=clock))


async def _handler(dialog: Dialog, silence_s: float | None = None) -> BrainHandler:
    bus = MemoryBus()

    async def nothing(sid: str, reason: str) -> None:
        pass

    own = Ownership(bus, "brain", "r1", OwnershipConfig(lease_ttl_ms=60_000), nothing, nothing)
    assert await own.try_acquire(SID, "claimed")
    return await BrainHandler.create(CallContext(SID, "brain", bus, own, "claimed", {}), dialog, silence_s=silence_s)


@pytest.fixture
async def handler(dialog: Dialog) -> AsyncIterator[BrainHandler]:
    made = await _handler(dialog)
    yield made
    await made.close("ended")


async def send(handler: BrainHandler, event: ev.Event) -> None:
    data = ev.encode(event)
    [entry_id] = await handler.ctx.bus.publish([Output(keys.events(SID), data)])
    assert entry_id is not None
    await handler.handle(Entry(keys.events(SID), entry_id, data), event)


async def stream(handler: BrainHandler, key: str) -> list[ev.Event]:
    return [ev.decode(e.data) for e in await handler.ctx.bus.range(key)]


async def said(handler: BrainHandler, turn: int) -> list[str]:
    return [e.text for e in await stream(handler, keys.tts(SID)) if isinstance(e, ev.Say) and e.turn_no == turn]


async def clears(handler: BrainHandler) -> list[int]:
    return [e.turn_no for e in await stream(handler, keys.control(SID)) if isinstance(e, ev.Clear)]


async def agent_intents(handler: BrainHandler) -> list[str]:
    turns = await stream(handler, keys.turns(SID))
    return [t.intent for t in turns if isinstance(t, ev.TurnRecord) and t.speaker == "agent"]


def started(uid: str, at: float = 10_000.0) -> ev.SpeechStarted:
    return ev.SpeechStarted(call_sid=SID, utterance_id=uid, first_voiced_arrived=at)


def progress(uid: str, voiced: float, text: str = "", at: float = 10_000.0) -> ev.SpeechProgress:
    return ev.SpeechProgress(call_sid=SID, utterance_id=uid, first_voiced_arrived=at, voiced_ms=voiced, prob=0.95,
                             text=text)  # fmt: skip


def final(uid: str, text: str, at: float = 10_000.0, ms: float = 800.0, confidence: float = 0.9) -> ev.TranscriptFinal:
    return ev.TranscriptFinal(call_sid=SID, utterance_id=uid, text=text, confidence=confidence,
                              first_voiced_arrived=at, last_voiced_arrived=at + ms, endpointed_at=at + ms + 560,
                              recognized_at=at + ms + 600)  # fmt: skip


def mark(turn: int, seq: int, played: bool = True) -> ev.Mark:
    return ev.Mark(call_sid=SID, name=f"t{turn}-s{seq}", turn_no=turn, seq=seq, played=played)


async def _cut_after_first_sentence(handler: BrainHandler) -> list[str]:
    """The caller heard the greeting's first sentence; 600 ms of wordless voice then cut the second."""
    greeting = list(handler.state.dialog.last_sentences)
    assert len(greeting) >= 3
    await send(handler, mark(1, 0))
    await send(handler, started("u1"))
    await send(handler, progress("u1", 600.0))
    assert await clears(handler) == [1]
    assert handler.state.dialog.last_sentences == greeting[:2]  # heard, and the one cut
    return greeting


async def test_brain_a_cut_that_ends_without_words_says_the_turn_again_from_the_sentence_cut(
    handler: BrainHandler,
) -> None:
    greeting = await _cut_after_first_sentence(handler)
    await send(handler, ev.SpeechEnded(call_sid=SID, utterance_id="u1", voiced_ms=640.0))
    assert await said(handler, 2) == greeting[1:], "from the sentence cut to the end, the question included"
    assert handler.state.dialog.last_sentences == greeting, "the memory of the turn is whole again"
    assert await clears(handler) == [1] and (await agent_intents(handler))[-1] == "resumed"
    assert handler.state.asks, "the turn said again ends with the greeting's question"


async def test_brain_a_cut_that_ends_as_a_backchannel_carries_on_without_answering_it(handler: BrainHandler) -> None:
    greeting = await _cut_after_first_sentence(handler)
    await send(handler, final("u1", "uh huh", ms=700.0))
    assert await said(handler, 2) == greeting[1:]
    assert await agent_intents(handler) == ["greeting", "resumed"], "the backchannel itself was not answered"
    assert "u1" in handler.state.answered
    # once carried on, a later noise that ends without words changes nothing
    await send(handler, started("n2", 20_000.0))
    await send(handler, ev.SpeechEnded(call_sid=SID, utterance_id="n2"))
    assert handler.state.turn_no == 2 and await clears(handler) == [1]


async def test_brain_a_real_utterance_that_cut_the_turn_is_answered(handler: BrainHandler) -> None:
    await _cut_after_first_sentence(handler)
    await send(handler, final("u1", "where is my order"))
    assert (await agent_intents(handler))[-1] == "order_status"
    assert not any("help you today" in s for s in await said(handler, 2))


async def test_brain_a_yes_that_cut_the_closing_question_answers_it(handler: BrainHandler) -> None:
    last = handler.state.last_seq
    await send(handler, mark(1, last - 1))  # all but the question has played
    await send(handler, started("u1"))
    await send(handler, progress("u1", 600.0))
    assert await clears(handler) == [1]
    await send(handler, final("u1", "yeah", ms=650.0))
    assert (await agent_intents(handler))[-1] != "resumed", "the yes to the question was taken for a backchannel"


async def test_brain_the_handlers_own_silence_timeout_reprompts(dialog: Dialog) -> None:
    handler = await _handler(dialog, silence_s=0.05)
    try:
        await send(handler, mark(1, handler.state.last_seq))
        await asyncio.sleep(0.3)
        assert (await said(handler, 2))[:1] == ["Are you still there?"]
    finally:
        await handler.close("ended")
