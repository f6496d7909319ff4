"""BrainHandler turn-taking on a MemoryBus: an onset alone does not touch the agent (it pauses it only with
``Policy.pause_on_onset``), sustained speech cuts the turn once (cancel + clear), noise, music and backchannels
leave it playing (resume it if paused) unanswered, the memory of a cut reply is what the caller heard, and silence
re-prompts then says goodbye with a hang-up after the last turn."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import msgspec
import pytest

from voxcart.brain import worker as worker_mod
from voxcart.brain.dialog import Dialog, DialogState
from voxcart.brain.store import FixedClock, SqliteStore, demo_seed_path
from voxcart.brain.turntaking import Policy
from voxcart.brain.worker import BrainHandler
from voxcart.common import events as ev
from voxcart.common.bus import Entry, MemoryBus, Output, keys
from voxcart.common.bus.ownership import Ownership, OwnershipConfig
from voxcart.common.seed import load_seed
from voxcart.common.worker import CallContext

SID = "CAbrainturns0001"


@pytest.fixture
def dialog() -> Dialog:
    seed = load_seed(demo_seed_path())
    today = max(o.placed for o in seed.orders) + dt.timedelta(days=2)
    clock = FixedClock.on(today, seed.store.timezone, hour=11)
    return Dialog(SqliteStore.from_file(demo_seed_path(), clock=clock))


@pytest.fixture
async def handler(dialog: Dialog) -> AsyncIterator[BrainHandler]:
    bus = MemoryBus()

    async def nothing(sid: str, reason: str) -> None:
        pass

    own = Ownership(bus, "brain", "r1", OwnershipConfig(lease_ttl_ms=60_000), nothing, nothing)
    assert await own.try_acquire(SID, "claimed")
    made = await BrainHandler.create(CallContext(SID, "brain", bus, own, "claimed", {}), dialog)
    yield made
    await made.close("ended")


async def send(handler: BrainHandler, event: ev.Event) -> None:
    data = ev.encode(event)
    [entry_id] = await handler.ctx.bus.publish([Output(keys.events(SID), data)])
    assert entry_id is not None
    await handler.handle(Entry(keys.events(SID), entry_id, data), event)


async def control(handler: BrainHandler) -> list[ev.Event]:
    return [ev.decode(e.data) for e in await handler.ctx.bus.range(keys.control(SID))]


async def tts(handler: BrainHandler) -> list[ev.Event]:
    return [ev.decode(e.data) for e in await handler.ctx.bus.range(keys.tts(SID))]


def started(uid: str, at: float = 10_000.0) -> ev.SpeechStarted:
    return ev.SpeechStarted(call_sid=SID, utterance_id=uid, first_voiced_arrived=at)


def progress(uid: str, voiced: float, text: str = "", at: float = 10_000.0, prob: float = 0.95) -> ev.SpeechProgress:
    return ev.SpeechProgress(
        call_sid=SID, utterance_id=uid, first_voiced_arrived=at, voiced_ms=voiced, prob=prob, text=text
    )


def final(uid: str, text: str, at: float = 10_000.0, ms: float = 800.0, confidence: float = 0.9) -> ev.TranscriptFinal:
    return ev.TranscriptFinal(
        call_sid=SID,
        utterance_id=uid,
        text=text,
        confidence=confidence,
        first_voiced_arrived=at,
        last_voiced_arrived=at + ms,
        endpointed_at=at + ms + 560,
        recognized_at=at + ms + 600,
    )


def mark(turn: int, seq: int, played: bool = True) -> ev.Mark:
    return ev.Mark(call_sid=SID, name=f"t{turn}-s{seq}", turn_no=turn, seq=seq, played=played)


def kinds(events: list[ev.Event]) -> list[tuple[str, int]]:
    return [(type(e).__name__, getattr(e, "turn_no", -1)) for e in events if not isinstance(e, ev.Say | ev.Hangup)]


async def test_brain_noise_onset_leaves_the_agent_playing(handler: BrainHandler) -> None:
    await send(handler, started("u1"))
    await send(handler, ev.SpeechEnded(call_sid=SID, utterance_id="u1", voiced_ms=120.0))
    assert await control(handler) == []
    assert not [e for e in await tts(handler) if isinstance(e, ev.Cancel)]


async def test_brain_noise_onset_pauses_then_resumes_the_agent_when_asked_to(handler: BrainHandler) -> None:
    handler.policy = Policy(pause_on_onset=True)
    await send(handler, started("u1"))
    await send(handler, ev.SpeechEnded(call_sid=SID, utterance_id="u1", voiced_ms=120.0))
    assert kinds(await control(handler)) == [("Pause", 1), ("Resume", 1)]
    assert not [e for e in await tts(handler) if isinstance(e, ev.Cancel)]
    pause = (await control(handler))[0]
    assert isinstance(pause, ev.Pause) and pause.voiced_arrived == 10_000.0


async def test_brain_sustained_speech_cuts_the_turn_once_and_is_answered(handler: BrainHandler) -> None:
    greeting = list(handler.state.dialog.last_sentences)
    assert len(greeting) >= 2
    await send(handler, mark(1, 0))  # the caller heard the first sentence of the greeting
    await send(handler, started("u1"))
    await send(handler, progress("u1", 200.0))  # could still be "uh huh"
    await send(handler, progress("u1", 400.0))  # or "mm hmm"
    assert kinds(await control(handler)) == []
    await send(handler, progress("u1", 600.0))
    assert kinds(await control(handler)) == [("Clear", 1)]
    clear = (await control(handler))[-1]
    assert isinstance(clear, ev.Clear) and clear.voiced_arrived == 10_000.0
    assert [e.turn_no for e in await tts(handler) if isinstance(e, ev.Cancel)] == [1]
    # the memory of the cut greeting: the sentence heard and the one cut, not what never played
    assert handler.state.dialog.last_sentences == greeting[:2]

    await send(handler, progress("u1", 800.0))
    await send(handler, final("u1", "what did you say"))
    assert kinds(await control(handler)) == [("Clear", 1)]  # cut once only
    repeat = [e.text for e in await tts(handler) if isinstance(e, ev.Say) and e.turn_no == 2]
    # "you were saying": what was heard, up to where it was cut, then the question the caller never heard
    assert repeat == [*greeting[:2], greeting[-1]]


async def test_brain_words_interrupt_early(handler: BrainHandler) -> None:
    await send(handler, started("u1"))
    await send(handler, progress("u1", 200.0, "wait"))
    assert kinds(await control(handler)) == [("Clear", 1)]


@pytest.mark.parametrize("pausing", [False, True])
async def test_brain_backchannel_final_is_not_answered(handler: BrainHandler, pausing: bool) -> None:
    handler.policy = Policy(pause_on_onset=pausing)
    await send(handler, started("u1"))
    await send(handler, progress("u1", 200.0, "uh"))
    await send(handler, final("u1", "uh huh", ms=300.0))
    assert kinds(await control(handler)) == ([("Pause", 1), ("Resume", 1)] if pausing else [])
    assert {e.turn_no for e in await tts(handler) if isinstance(e, ev.Say)} == {1}  # no reply
    assert handler.state.turn_no == 1 and "u1" in handler.state.answered


async def test_brain_music_the_recognizer_made_words_of_is_not_answered(handler: BrainHandler) -> None:
    await send(handler, started("u1"))
    await send(handler, progress("u1", 200.0, prob=0.66))  # hold-music tones: Silero is unsure
    await send(handler, final("u1", "old", ms=260.0, confidence=0.98))  # the bench's tones, as recognized
    assert await control(handler) == []
    assert {e.turn_no for e in await tts(handler) if isinstance(e, ev.Say)} == {1}  # no reply
    # the caller's voice saying the same is answered
    await send(handler, started("u2", 14_000.0))
    await send(handler, progress("u2", 200.0, prob=0.95, at=14_000.0))
    await send(handler, final("u2", "old", at=14_000.0, ms=260.0, confidence=0.98))
    assert kinds(await control(handler)) == [("Clear", 1)]
    assert handler.state.turn_no == 2


async def test_brain_repeated_noise_stops_pausing(handler: BrainHandler) -> None:
    handler.policy = Policy(pause_on_onset=True)
    for k, at in enumerate([10_000.0, 11_000.0, 12_000.0]):
        await send(handler, started(f"n{k}", at))
        await send(handler, ev.SpeechEnded(call_sid=SID, utterance_id=f"n{k}"))
    assert kinds(await control(handler)) == [("Pause", 1), ("Resume", 1), ("Pause", 1), ("Resume", 1)]
    # speech that carries on still interrupts
    await send(handler, started("u1", 12_500.0))
    await send(handler, progress("u1", 600.0, at=12_500.0))
    assert kinds(await control(handler))[-1] == ("Clear", 1)


async def test_brain_speech_after_the_agent_finished_changes_nothing(handler: BrainHandler) -> None:
    last = handler.state.last_seq
    await send(handler, mark(1, last))
    await send(handler, started("u1"))
    await send(handler, progress("u1", 600.0, "where is my"))
    await send(handler, final("u1", "okay"))
    assert await control(handler) == []
    assert not [e for e in await tts(handler) if isinstance(e, ev.Cancel)]
    assert handler.state.turn_no == 2  # "okay" after the agent finished is a turn, answered


async def test_brain_silence_reprompts_then_says_goodbye_and_hangs_up(
    handler: BrainHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_mod, "SILENCE_TIMEOUT_S", 0.05)
    await send(handler, mark(1, handler.state.last_seq))
    await asyncio.sleep(0.2)
    reprompt = [e for e in await tts(handler) if isinstance(e, ev.Say) and e.turn_no == 2]
    assert reprompt and reprompt[0].text == "Are you still there?"
    # an onset that turns out to be noise does not reset the wait
    await send(handler, started("n1"))
    await send(handler, ev.SpeechEnded(call_sid=SID, utterance_id="n1"))
    await send(handler, mark(2, handler.state.last_seq))
    await asyncio.sleep(0.2)
    bye = [e for e in await tts(handler) if isinstance(e, ev.Say) and e.turn_no == 3]
    assert bye and bye[-1].last
    hangups = [e for e in await control(handler) if isinstance(e, ev.Hangup)]
    assert [h.after_turn for h in hangups] == [3] and handler.state.finished


async def _two_halves(handler: BrainHandler, dialog: Dialog, *, heard: bool) -> tuple[list[str], list[str], list[str]]:
    """The caller says "i want to return", pauses 700 ms (a final), and goes on "my shoes" over the reply."""
    await send(handler, mark(1, handler.state.last_seq))  # the greeting has played
    before = msgspec.msgpack.decode(msgspec.msgpack.encode(handler.state.dialog), type=DialogState)
    await send(handler, final("u1", "i want to return", at=20_000.0, ms=900.0))
    after_first = msgspec.msgpack.decode(msgspec.msgpack.encode(handler.state.dialog), type=DialogState)
    if heard:
        await send(handler, mark(2, 0))
    await send(handler, started("u2", at=21_600.0))
    await send(handler, progress("u2", 400.0, at=21_600.0))
    await send(handler, final("u2", "my shoes", at=21_600.0, ms=500.0))
    said = [e.text for e in await tts(handler) if isinstance(e, ev.Say) and e.turn_no == 3]
    merged = dialog.on_text(before, "i want to return my shoes", 0.9).sentences
    separate = dialog.on_text(after_first, "my shoes", 0.9).sentences
    return said, merged, separate


async def test_brain_a_continuation_is_merged_with_the_final_it_continues(
    handler: BrainHandler, dialog: Dialog
) -> None:
    said, merged, separate = await _two_halves(handler, dialog, heard=False)
    assert merged != separate  # the test tells the two apart
    assert said == merged
    assert kinds(await control(handler))[-1] == ("Clear", 2)


async def test_brain_a_reply_the_caller_began_to_hear_is_not_merged_over(handler: BrainHandler, dialog: Dialog) -> None:
    said, merged, separate = await _two_halves(handler, dialog, heard=True)
    assert said == separate and said != merged


async def test_brain_a_yes_during_the_closing_question_answers_it(handler: BrainHandler) -> None:
    last = handler.state.last_seq
    assert handler.state.asks and last >= 1  # the greeting ends by asking how it can help
    await send(handler, mark(1, last - 1))  # everything but the question has played
    await send(handler, started("u1"))
    await send(handler, final("u1", "yeah", ms=240.0))
    assert handler.state.turn_no == 2, "the answer to the question was not ignored as a backchannel"
    assert kinds(await control(handler)) == [("Clear", 1)]  # the question's tail is cut


async def test_brain_a_yes_to_a_one_sentence_question_is_answered(dialog: Dialog) -> None:
    seed = load_seed(demo_seed_path())
    owner = next(c for c in seed.customers if c.id == next(o for o in seed.orders if o.number == "10023").customer)
    assert owner.phone
    bus = MemoryBus()
    await bus.hset(keys.meta(SID), {"from": owner.phone})

    async def nothing(sid: str, reason: str) -> None:
        pass

    own = Ownership(bus, "brain", "r1", OwnershipConfig(lease_ttl_ms=60_000), nothing, nothing)
    assert await own.try_acquire(SID, "claimed")
    handler = await BrainHandler.create(CallContext(SID, "brain", bus, own, "claimed", {}), dialog)
    try:
        await send(handler, mark(1, handler.state.last_seq))
        await send(handler, final("u1", "where is my order", at=20_000.0))
        assert handler.state.turn_no == 2 and handler.state.asks and handler.state.last_seq == 0
        await send(handler, started("u2", at=25_000.0))  # the question's mark has not echoed yet
        await send(handler, progress("u2", 200.0, "yeah", at=25_000.0))
        await send(handler, final("u2", "yep", at=25_000.0, ms=240.0))
        assert handler.state.turn_no == 3, "the yes was ignored as a backchannel"
    finally:
        await handler.close("ended")
