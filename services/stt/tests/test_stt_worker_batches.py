"""SttHandler.handle_batch on a MemoryBus with a real lease and the real embedded provider: a batch commits what
frame-by-frame handling commits (events in order, the same checkpoint), an entry handed over again is skipped, a
failed batch handled again entry by entry loses and repeats nothing, and a takeover from batches replays the same
utterances."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import pytest

from voxcart.common import events as ev
from voxcart.common.bus import Entry, MemoryBus, Output, keys
from voxcart.common.bus.ownership import Ownership, OwnershipConfig
from voxcart.common.worker import CallContext
from voxcart.stt.embedded import PocketsphinxProvider
from voxcart.stt.recognizer import RecognizerModel
from voxcart.stt.worker import SttHandler, entry_order

SID = "CAsttbatches001"
Entries = list[tuple[str, bytes, float]]
Items = list[tuple[Entry, ev.Event]]


class CountingContext(CallContext):
    """Counts its commits."""

    commits = 0

    async def commit(
        self,
        outputs: Sequence[Output],
        checkpoint: Mapping[str, str] | None = None,
        state: Mapping[str, bytes] | None = None,
    ) -> bool:
        self.commits += 1
        return await super().commit(outputs, checkpoint, state)


async def _context(bus: MemoryBus, replica: str) -> CountingContext:
    async def nothing(sid: str, reason: str) -> None:
        pass

    own = Ownership(bus, "stt", replica, OwnershipConfig(lease_ttl_ms=60_000), nothing, nothing)
    assert await own.try_acquire(SID, "claimed")
    raw = await bus.hgetall(keys.checkpoint("stt", SID))
    return CountingContext(SID, "stt", bus, own, "claimed", {k: v.decode() for k, v in raw.items()})


def _items(entries: Entries) -> Items:
    out: Items = []
    for entry_id, payload, arrived in entries:
        frame = ev.AudioFrame(call_sid=SID, gen=1, chunk=0, payload=payload, media_ts=0, arrived=arrived)
        out.append((Entry(keys.audio_in(SID), entry_id, ev.encode(frame)), frame))
    return out


def _listen(entry_id: str, expect: ev.Expect) -> tuple[Entry, ev.Event]:
    listen = ev.Listen(call_sid=SID, turn_no=1, expect=expect, keyterms=[])
    return Entry(keys.listen(SID), entry_id, ev.encode(listen)), listen


def _chunks(items: Items, size: int) -> list[Items]:
    return [items[k : k + size] for k in range(0, len(items), size)]


async def _events(bus: MemoryBus) -> list[tuple[str, str, str]]:
    """Each event's kind, utterance and text (what brain acts on; timestamps differ run to run)."""
    out = []
    for entry in await bus.range(keys.events(SID)):
        event = ev.decode(entry.data)
        out.append((type(event).__name__, getattr(event, "utterance_id", ""), getattr(event, "text", "")))
    return out


async def _checkpoint(bus: MemoryBus) -> dict[str, str]:
    return {k: v.decode() for k, v in (await bus.hgetall(keys.checkpoint("stt", SID))).items()}


async def test_batches_commit_what_frame_by_frame_handling_commits_in_fewer_commits(
    model: RecognizerModel, speech: Callable[[str], bytes], to_entries: Callable[..., Entries]
) -> None:
    items = _items(to_entries(speech("where is my order") + speech("yes please")))
    middle = len(items) // 2
    items = [*items[:middle], _listen("1-0", "yes_no"), *items[middle:]]

    one_bus = MemoryBus()
    one_ctx = await _context(one_bus, "one")
    one = SttHandler(one_ctx, PocketsphinxProvider(model, 600))
    for entry, event in items:
        await one.handle(entry, event)

    batch_bus = MemoryBus()
    batch_ctx = await _context(batch_bus, "batch")
    batched = SttHandler(batch_ctx, PocketsphinxProvider(model, 600))
    for chunk in _chunks(items, 7):
        await batched.handle_batch(chunk)

    events = await _events(one_bus)
    assert [kind for kind, _, _ in events].count("TranscriptFinal") == 2
    assert await _events(batch_bus) == events
    assert await _checkpoint(batch_bus) == await _checkpoint(one_bus)
    assert (await _checkpoint(batch_bus))[keys.listen(SID)] == "1-0"
    assert batch_ctx.commits < one_ctx.commits
    await one.close("ended")
    await batched.close("ended")


async def test_a_failed_batch_handed_over_entry_by_entry_loses_and_repeats_nothing(
    model: RecognizerModel, speech: Callable[[str], bytes], to_entries: Callable[..., Entries]
) -> None:
    items = _items(to_entries(speech("i want to return my shoes")))
    broken_id = items[61][0].id  # in the speech; its payload is not a multiple of 160 bytes
    broken = ev.AudioFrame(call_sid=SID, gen=1, chunk=0, payload=b"\xff" * 100, media_ts=0, arrived=0.0)
    reference_bus = MemoryBus()
    reference = SttHandler(await _context(reference_bus, "ref"), PocketsphinxProvider(model, 600))
    for entry, event in [*items[:61], *items[62:]]:  # what the line carried, less the entry dead-lettered
        await reference.handle(entry, event)

    bus = MemoryBus()
    handler = SttHandler(await _context(bus, "a"), PocketsphinxProvider(model, 600))
    items[61] = (Entry(keys.audio_in(SID), broken_id, ev.encode(broken)), broken)
    for chunk in _chunks(items, 10):
        try:
            await handler.handle_batch(chunk)
        except ValueError as exc:  # what the worker does: hand the entries over one by one
            assert broken_id in str(exc)
            for entry, event in chunk:
                if entry.id == broken_id:
                    with pytest.raises(ValueError, match=broken_id):
                        await handler.handle(entry, event)
                else:
                    await handler.handle(entry, event)
    assert await _events(bus) == await _events(reference_bus)
    assert await _checkpoint(bus) == await _checkpoint(reference_bus)
    await reference.close("ended")
    await handler.close("ended")


async def test_an_entry_already_taken_in_is_skipped(
    model: RecognizerModel, speech: Callable[[str], bytes], to_entries: Callable[..., Entries]
) -> None:
    bus = MemoryBus()
    handler = SttHandler(await _context(bus, "a"), PocketsphinxProvider(model, 600))
    items = _items(to_entries(speech("goodbye")))
    for chunk in _chunks(items, 25):
        await handler.handle_batch(chunk)
        await handler.handle_batch(chunk)  # handed over again: nothing more
        for entry, event in chunk:
            await handler.handle(entry, event)
    kinds = [kind for kind, _, _ in await _events(bus)]
    assert kinds.count("SpeechStarted") == 1 and kinds.count("TranscriptFinal") == 1
    await handler.close("ended")


async def test_a_new_owner_replays_batches_from_the_checkpoint_with_the_same_utterances(
    model: RecognizerModel, speech: Callable[[str], bytes], to_entries: Callable[..., Entries]
) -> None:
    items = _items(to_entries(speech("i want to return my shoes") + speech("goodbye")))
    reference_bus = MemoryBus()
    reference = SttHandler(await _context(reference_bus, "ref"), PocketsphinxProvider(model, 600))
    for entry, event in items:
        await reference.handle(entry, event)
    original = [e for e in await _events(reference_bus) if e[0] == "TranscriptFinal"]
    assert len(original) == 2

    # replica a, fed batches of 9, dies a batch after its first final; b takes over from the checkpoint
    bus = MemoryBus()
    a_ctx = await _context(bus, "a")
    a = SttHandler(a_ctx, PocketsphinxProvider(model, 600))
    chunks = _chunks(items, 9)
    fed = 0
    while not [e for e in await _events(bus) if e[0] == "TranscriptFinal"]:
        await a.handle_batch(chunks[fed])
        fed += 1
    await a.handle_batch(chunks[fed])
    lease = a_ctx.ownership.owned[SID]
    assert await bus.release_lease(lease.key, lease.value)
    b_ctx = await _context(bus, "b")
    b = SttHandler(b_ctx, PocketsphinxProvider(model, 600))
    position = entry_order(b_ctx.checkpoint[keys.audio_in(SID)])
    rest = [item for item in items if entry_order(item[0].id) > position]
    assert len(rest) > len(items) - (fed + 1) * 9  # some of a's frames are replayed
    for chunk in _chunks(rest, 9):
        await b.handle_batch(chunk)
    finals = [e for e in await _events(bus) if e[0] == "TranscriptFinal"]
    assert finals == original
    await reference.close("ended")


async def test_close_waits_for_a_decoding_in_progress(
    model: RecognizerModel, speech: Callable[[str], bytes], to_entries: Callable[..., Entries]
) -> None:
    handler = SttHandler(await _context(MemoryBus(), "a"), PocketsphinxProvider(model, 600))
    items: Sequence[tuple[Entry, ev.Event]] = _items(to_entries(speech("is the blue hoodie in stock in medium")))
    task = asyncio.create_task(handler.handle_batch(items))
    while handler._decoding is None:
        await asyncio.sleep(0)
    task.cancel()
    await handler.close("lost")  # the decoders go back to the pool only after the thread is done with them
    assert handler._decoding.done()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_entry_ids_order_like_the_stream() -> None:
    assert entry_order("0-0") < entry_order("1-9") < entry_order("1-10") < entry_order("2-1")
