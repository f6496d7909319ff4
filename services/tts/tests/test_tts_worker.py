"""TtsHandler with real espeak (a ThreadedVoice) on a MemoryBus + Ownership lease: chunk ids, replay, cancel,
fencing, end_call."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import pytest

from voxcart.common import events as ev
from voxcart.common.bus import Entry, MemoryBus, Output, keys
from voxcart.common.bus.ownership import Ownership, OwnershipConfig
from voxcart.common.worker import CallContext
from voxcart.tts import EspeakSynthesizer
from voxcart.tts.voice import ThreadedVoice, VoiceError
from voxcart.tts.worker import TtsHandler

SID = "CAttsworker0001"


@pytest.fixture(scope="module")
def voice() -> ThreadedVoice:
    return ThreadedVoice(EspeakSynthesizer(), "espeak")


class ScriptedVoice:
    """Yields ``chunks``, then raises ``error`` if given; records how it ended and what it was told. It ignores
    ``cancel``, so the handler's own check (and its closing of the stream) is what stops it."""

    name = "scripted"

    def __init__(self, chunks: list[bytes], error: VoiceError | None = None) -> None:
        self.chunks, self.error = chunks, error
        self.ended: list[str] = []
        self.closed_early = 0

    async def synthesize(self, text: str, *, call_sid: str, cancel: threading.Event) -> AsyncIterator[bytes]:
        finished = False
        try:
            for chunk in self.chunks:
                yield chunk
            finished = True
        finally:
            self.closed_early += not finished
        if self.error is not None:
            raise self.error

    async def end_call(self, call_sid: str) -> None:
        self.ended.append(call_sid)

    async def aclose(self) -> None:
        pass


async def _noop(sid: str, reason: str) -> None:
    pass


@pytest.fixture
async def ctx() -> CallContext:
    bus = MemoryBus()
    own = Ownership(bus, "tts", "t1", OwnershipConfig(lease_ttl_ms=60_000), _noop, _noop)
    assert await own.try_acquire(SID, "claimed")
    return CallContext(SID, "tts", bus, own, "claimed")


@pytest.fixture
async def handler(ctx: CallContext, voice: ThreadedVoice) -> AsyncIterator[TtsHandler]:
    h = TtsHandler(ctx, voice)
    yield h
    await h.close("ended")


async def say(bus: MemoryBus, turn: int, seq: int, text: str, last: bool) -> tuple[Entry, ev.Say]:
    event = ev.Say(
        call_sid=SID,
        turn_id=f"{SID}:{turn}",
        turn_no=turn,
        seq=seq,
        text=text,
        last=last,
        reply_to_voiced=4321.0,
        decided_at=4400.0,
    )
    data = ev.encode(event)
    [entry_id] = await bus.publish([Output(keys.tts(SID), data)])
    assert entry_id is not None
    return Entry(keys.tts(SID), entry_id, data), event


async def chunks(bus: MemoryBus) -> list[tuple[str, ev.AudioChunk]]:
    out = []
    for entry in await bus.range(keys.audio_out(SID)):
        event = ev.decode(entry.data)
        assert isinstance(event, ev.AudioChunk)
        out.append((entry.id, event))
    return out


async def checkpoint(bus: MemoryBus) -> str | None:
    raw = await bus.hgetall(keys.checkpoint("tts", SID))
    value = raw.get(keys.tts(SID))
    return value.decode() if value is not None else None


def _bus(ctx: CallContext) -> MemoryBus:
    assert isinstance(ctx.bus, MemoryBus)
    return ctx.bus


async def test_tts_worker_say_produces_chunks_with_ids(ctx: CallContext, handler: TtsHandler) -> None:
    bus = _bus(ctx)
    entry0, say0 = await say(bus, 3, 0, "Thanks for calling, how can I help you today?", last=False)
    await handler.handle(entry0, say0)
    first = await chunks(bus)
    assert len(first) > 10  # several commits' worth (the first chunk alone, then batches)
    assert [cid for cid, _ in first] == [f"3-{k}" for k in range(len(first))]
    assert [c.k for _, c in first] == list(range(len(first)))
    assert all(c.turn_no == 3 and c.seq == 0 and c.reply_to_voiced == 4321.0 for _, c in first)
    assert all(len(c.payload) == 800 for _, c in first[:-1])  # 100 ms of μ-law 8 kHz
    assert [c.last_in_sentence for _, c in first] == [False] * (len(first) - 1) + [True]
    assert not any(c.last_in_turn for _, c in first)  # Say.last was False
    assert first[-1][1].text == say0.text
    assert await checkpoint(bus) == entry0.id

    entry1, say1 = await say(bus, 3, 1, "Goodbye.", last=True)
    await handler.handle(entry1, say1)
    second = (await chunks(bus))[len(first) :]
    assert second
    assert [cid for cid, _ in second] == [f"3-{1000 + k}" for k in range(len(second))]
    assert second[-1][1].last_in_sentence and second[-1][1].last_in_turn
    assert not any(c.last_in_turn or c.last_in_sentence for _, c in second[:-1])
    assert await checkpoint(bus) == entry1.id


async def test_tts_worker_replay_adds_no_duplicates(ctx: CallContext, handler: TtsHandler) -> None:
    bus = _bus(ctx)
    entry, event = await say(bus, 1, 0, "Hello there, this is the shop.", last=True)
    await handler.handle(entry, event)
    before = await chunks(bus)
    await handler.handle(entry, event)  # a replay after a takeover re-renders the sentence
    after = await chunks(bus)
    assert [cid for cid, _ in after] == [cid for cid, _ in before]
    assert [c.payload for _, c in after] == [c.payload for _, c in before]
    assert await checkpoint(bus) == entry.id


async def test_tts_worker_replay_on_new_owner(ctx: CallContext, voice: ThreadedVoice) -> None:
    """A takeover replays the say with a fresh handler; Redis drops every chunk already written."""
    bus = _bus(ctx)
    entry, event = await say(bus, 2, 0, "Your order has shipped.", last=True)
    await TtsHandler(ctx, voice).handle(entry, event)
    before = [cid for cid, _ in await chunks(bus)]
    await ctx.ownership.release(SID, "drain")
    own2 = Ownership(bus, "tts", "t2", OwnershipConfig(lease_ttl_ms=60_000), _noop, _noop)
    assert await own2.try_acquire(SID, "takeover")
    ctx2 = CallContext(SID, "tts", bus, own2, "takeover")
    await TtsHandler(ctx2, voice).handle(entry, event)
    assert [cid for cid, _ in await chunks(bus)] == before


async def test_tts_worker_cancelled_turn_no_audio(ctx: CallContext, handler: TtsHandler) -> None:
    bus = _bus(ctx)
    handler.peek(ev.Cancel(call_sid=SID, turn_no=4))
    entry, event = await say(bus, 4, 0, "You will never hear this.", last=True)
    await handler.handle(entry, event)
    assert await chunks(bus) == []
    assert await checkpoint(bus) == entry.id
    # an older turn is cancelled too; a later turn is spoken
    old, old_event = await say(bus, 3, 1, "Nor this.", last=True)
    await handler.handle(old, old_event)
    assert await chunks(bus) == []
    new, new_event = await say(bus, 5, 0, "But this.", last=True)
    await handler.handle(new, new_event)
    spoken = await chunks(bus)
    assert spoken and {c.turn_no for _, c in spoken} == {5}
    assert spoken[-1][1].last_in_turn
    assert await checkpoint(bus) == new.id


async def test_tts_worker_fenced_commit_stops(ctx: CallContext, handler: TtsHandler) -> None:
    bus = _bus(ctx)
    lease = ctx.ownership.owned[SID]
    assert await bus.release_lease(lease.key, lease.value)
    other = Ownership(bus, "tts", "t2", OwnershipConfig(lease_ttl_ms=60_000), _noop, _noop)
    assert await other.try_acquire(SID, "takeover")
    entry, event = await say(bus, 1, 0, "Hello there.", last=True)
    await handler.handle(entry, event)
    assert await chunks(bus) == []
    assert await checkpoint(bus) is None


async def test_tts_worker_single_chunk_sentence_is_finished(ctx: CallContext) -> None:
    bus = _bus(ctx)
    handler = TtsHandler(ctx, ThreadedVoice(EspeakSynthesizer(chunk_ms=2000), "espeak"))  # "Hi." fits in one chunk
    entry, event = await say(bus, 1, 0, "Hi.", last=True)
    await handler.handle(entry, event)
    out = await chunks(bus)
    assert len(out) == 1
    assert out[-1][1].last_in_sentence and out[-1][1].last_in_turn
    assert await checkpoint(bus) == entry.id


async def test_tts_worker_cancel_mid_sentence_closes_the_stream(ctx: CallContext) -> None:
    bus = _bus(ctx)
    voice = ScriptedVoice([bytes([k]) * 160 for k in range(30)])
    handler = TtsHandler(ctx, voice)
    entry, event = await say(bus, 2, 0, "A long sentence.", last=True)
    commit = ctx.commit
    commits = 0

    async def commit_then_cancel(*args: object, **kwargs: object) -> bool:
        nonlocal commits
        commits += 1
        ok = await commit(*args, **kwargs)  # type: ignore[arg-type]
        if commits == 1:  # the first chunk went out alone; the caller barges in
            assert len(await chunks(bus)) == 1
            handler.peek(ev.Cancel(call_sid=SID, turn_no=2))
        return ok

    ctx.commit = commit_then_cancel  # type: ignore[method-assign]
    await handler.handle(entry, event)
    out = await chunks(bus)
    assert len(out) == 1 and not out[0][1].last_in_sentence
    assert voice.closed_early == 1  # the handler stopped reading and closed the voice's stream
    assert await checkpoint(bus) == entry.id


async def test_tts_worker_voice_error_leaves_the_checkpoint(ctx: CallContext) -> None:
    """A voice that fails (fallback included) fails the entry: the worker retries it, the checkpoint stays."""
    bus = _bus(ctx)
    handler = TtsHandler(ctx, ScriptedVoice([b"\xff" * 160] * 3, VoiceError("scripted: 500")))
    entry, event = await say(bus, 1, 0, "Hello.", last=True)
    with pytest.raises(VoiceError, match="scripted: 500"):
        await handler.handle(entry, event)
    assert [c.k for _, c in await chunks(bus)] == [0]  # only the first chunk had been committed
    assert await checkpoint(bus) is None


async def test_tts_worker_close_ends_the_call_on_the_voice(ctx: CallContext) -> None:
    voice = ScriptedVoice([])
    handler = TtsHandler(ctx, voice)
    await handler.close("ended")
    assert voice.ended == [SID]
