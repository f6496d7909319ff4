"""SttHandler on a MemoryBus with a real lease and the real embedded provider: events out, checkpoint, takeover."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from voxcart.common import events as ev
from voxcart.common.bus import Entry, MemoryBus, keys
from voxcart.common.bus.ownership import Ownership, OwnershipConfig
from voxcart.common.worker import CallContext
from voxcart.stt.embedded import PocketsphinxProvider
from voxcart.stt.recognizer import RecognizerModel
from voxcart.stt.worker import SttHandler

SID = "CAsttworker0001"
Entries = list[tuple[str, bytes, float]]


async def _context(bus: MemoryBus, replica: str) -> CallContext:
    async def nothing(sid: str, reason: str) -> None:
        pass

    own = Ownership(bus, "stt", replica, OwnershipConfig(lease_ttl_ms=60_000), nothing, nothing)
    assert await own.try_acquire(SID, "claimed")
    raw = await bus.hgetall(keys.checkpoint("stt", SID))
    return CallContext(SID, "stt", bus, own, "claimed", {k: v.decode() for k, v in raw.items()})


async def _feed(handler: SttHandler, entries: Entries) -> None:
    for entry_id, payload, arrived in entries:
        frame = ev.AudioFrame(call_sid=SID, gen=1, chunk=0, payload=payload, media_ts=0, arrived=arrived)
        await handler.handle(Entry(keys.audio_in(SID), entry_id, ev.encode(frame)), frame)


async def _events(bus: MemoryBus) -> list[ev.Event]:
    return [ev.decode(e.data) for e in await bus.range(keys.events(SID))]


async def test_speech_becomes_events_and_the_checkpoint_holds_resume_and_listen(
    model: RecognizerModel, speech: Callable[[str], bytes], to_entries: Callable[..., Entries]
) -> None:
    bus = MemoryBus()
    handler = SttHandler(await _context(bus, "a"), PocketsphinxProvider(model, 600))
    listen = ev.Listen(call_sid=SID, turn_no=1, expect="yes_no", keyterms=[])
    await handler.handle(Entry(keys.listen(SID), "1-0", ev.encode(listen)), listen)
    await _feed(handler, to_entries(speech("where is my order")))

    events = await _events(bus)
    assert [type(e).__name__ for e in events if not isinstance(e, ev.TranscriptPartial | ev.SpeechProgress)] == [
        "SpeechStarted",
        "TranscriptFinal",
    ]
    final = events[-1]
    assert isinstance(final, ev.TranscriptFinal) and "order" in final.text
    assert final.utterance_id.startswith(f"{SID}:1-")
    checkpoint = {k: v.decode() for k, v in (await bus.hgetall(keys.checkpoint("stt", SID))).items()}
    assert checkpoint[keys.audio_in(SID)].startswith("1-")
    assert checkpoint[keys.listen(SID)] == "1-0"
    assert msgspec.json.decode(checkpoint["listen"]) == ["yes_no", []]
    assert checkpoint["resume"] == handler.stt.resume and checkpoint["resume"] != model.cmn
    await handler.close("ended")


async def test_a_new_owner_replays_from_the_checkpoint_with_the_same_utterance_ids(
    model: RecognizerModel, speech: Callable[[str], bytes], to_entries: Callable[..., Entries]
) -> None:
    entries = to_entries(speech("i want to return my shoes") + speech("goodbye"))
    reference_bus = MemoryBus()
    reference = SttHandler(await _context(reference_bus, "ref"), PocketsphinxProvider(model, 600))
    await _feed(reference, entries)
    original = [e for e in await _events(reference_bus) if isinstance(e, ev.TranscriptFinal)]
    assert len(original) == 2

    # replica a dies some frames after its first final; b takes over from the checkpoint a committed
    bus = MemoryBus()
    a_ctx = await _context(bus, "a")
    a = SttHandler(a_ctx, PocketsphinxProvider(model, 600))
    fed = 0
    while not [e for e in await _events(bus) if isinstance(e, ev.TranscriptFinal)]:
        await _feed(a, entries[fed : fed + 1])
        fed += 1
    await _feed(a, entries[fed : fed + 10])
    lease = a_ctx.ownership.owned[SID]
    assert await bus.release_lease(lease.key, lease.value)
    b_ctx = await _context(bus, "b")
    b = SttHandler(b_ctx, PocketsphinxProvider(model, 600))
    position = b_ctx.checkpoint[keys.audio_in(SID)]
    resume_at = [entry_id for entry_id, _, _ in entries].index(position) + 1
    assert resume_at < fed
    await _feed(b, entries[resume_at:])
    finals = [e for e in await _events(bus) if isinstance(e, ev.TranscriptFinal)]
    assert [(f.utterance_id, f.text) for f in finals] == [(f.utterance_id, f.text) for f in original]
