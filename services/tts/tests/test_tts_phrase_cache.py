"""PhraseCache: hits replay the same bytes with no engine call; only completed sentences are stored; LRU by
entries and bytes; pinned warm-up phrases; personal text bypasses it; and over real espeak."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from voxcart.tts.phrase_cache import PhraseCache, looks_personal
from voxcart.tts.synth import EspeakSynthesizer
from voxcart.tts.voice import ThreadedVoice, Voice, VoiceError, aclosing_stream

SID = "CAttscache0001"


class CountingVoice:
    """One 160-byte chunk per 5 characters of text; a new rendering every time (the call number is in it)."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_after: int | None = None
        self.ended: list[str] = []
        self.closed = False

    async def synthesize(self, text: str, *, call_sid: str, cancel: threading.Event) -> AsyncIterator[bytes]:
        self.calls.append(text)
        for i in range(max(1, len(text) // 5)):
            if self.fail_after == i:
                raise VoiceError("counting: dropped", chunks_yielded=i)
            if cancel.is_set():
                return
            yield bytes([len(self.calls) % 256, i % 256]) * 80

    async def end_call(self, call_sid: str) -> None:
        self.ended.append(call_sid)

    async def aclose(self) -> None:
        self.closed = True


async def speak(voice: Voice, text: str, cancel: threading.Event | None = None) -> list[bytes]:
    async with aclosing_stream(voice.synthesize(text, call_sid=SID, cancel=cancel or threading.Event())) as chunks:
        return [chunk async for chunk in chunks]


def lookups(result: str) -> float:
    return REGISTRY.get_sample_value("voxcart_tts_phrase_cache_total", {"result": result}) or 0.0


async def test_hit_replays_identical_bytes_without_the_engine() -> None:
    inner = CountingVoice()
    cache = PhraseCache(inner, 10)
    hits, misses = lookups("hit"), lookups("miss")
    first = await speak(cache, "Thanks for calling the shop.")
    assert len(first) == 5 and len(inner.calls) == 1
    assert await speak(cache, "Thanks  for calling\nthe shop.") == first  # same text, other whitespace
    assert len(inner.calls) == 1
    assert lookups("hit") - hits == 1 and lookups("miss") - misses == 1
    assert "Thanks for calling the shop." in cache and len(cache) == 1 and cache.size_bytes == 5 * 160
    await speak(cache, "thanks for calling the shop?")  # case and punctuation change the speech: a miss
    assert len(inner.calls) == 2


async def test_cancelled_failed_or_abandoned_sentences_are_not_stored() -> None:
    inner = CountingVoice()
    cache = PhraseCache(inner, 10)
    cancel = threading.Event()
    async with aclosing_stream(cache.synthesize("Please hold for a moment.", call_sid=SID, cancel=cancel)) as s:
        async for _ in s:
            cancel.set()
    assert "Please hold for a moment." not in cache

    inner.fail_after = 2
    with pytest.raises(VoiceError, match="dropped"):
        await speak(cache, "Please hold for a moment.")
    assert len(cache) == 0
    inner.fail_after = None

    async with aclosing_stream(
        cache.synthesize("Please hold for a moment.", call_sid=SID, cancel=threading.Event())
    ) as s:
        async for _ in s:
            break  # the consumer stopped reading (a fenced commit)
    assert len(cache) == 0 and len(inner.calls) == 3
    await speak(cache, "Please hold for a moment.")
    assert len(cache) == 1


async def test_cancel_during_a_hit_stops_the_replay() -> None:
    cache = PhraseCache(CountingVoice(), 10)
    text = "Is there anything else I can help you with?"
    full = await speak(cache, text)
    cancel = threading.Event()
    got = []
    async with aclosing_stream(cache.synthesize(text, call_sid=SID, cancel=cancel)) as s:
        async for chunk in s:
            got.append(chunk)
            if len(got) == 2:
                cancel.set()
    assert got == full[:2]


async def test_lru_by_entries() -> None:
    inner = CountingVoice()
    cache = PhraseCache(inner, 2)
    for text in ("Sentence A.", "Sentence B."):
        await speak(cache, text)
    await speak(cache, "Sentence A.")  # A is now the most recently used
    await speak(cache, "Sentence C.")
    assert "Sentence A." in cache and "Sentence C." in cache and "Sentence B." not in cache
    assert len(cache) == 2


async def test_lru_by_bytes() -> None:
    inner = CountingVoice()
    cache = PhraseCache(inner, 100, max_bytes=5 * 160)
    await speak(cache, "Ten chars.")  # 2 chunks
    await speak(cache, "Fifteen chars..")  # 3 chunks: 5 in all, full
    await speak(cache, "Ten again.")  # 2 more: the oldest goes
    assert "Ten chars." not in cache and "Fifteen chars.." in cache and "Ten again." in cache
    assert cache.size_bytes == 5 * 160
    await speak(cache, "This one is far too long to fit in the cache.")  # bigger than max_bytes: not stored
    assert len(cache) == 2 and cache.size_bytes == 5 * 160


async def test_warm_pins_phrases() -> None:
    inner = CountingVoice()
    cache = PhraseCache(inner, 3)
    assert await cache.warm(["Hi there, welcome.", "One moment, please.", "   "]) == 2
    assert len(inner.calls) == 2
    for text in ("Order detail one.", "Order detail two.", "Order detail three."):
        await speak(cache, text)
    assert "Hi there, welcome." in cache and "One moment, please." in cache  # pinned: never evicted
    assert len(cache) == 3 and "Order detail three." in cache
    hits = lookups("hit")
    await speak(cache, "One moment, please.")
    assert lookups("hit") - hits == 1 and len(inner.calls) == 5


async def test_warm_skips_failures_and_stops_when_full() -> None:
    inner = CountingVoice()
    cache = PhraseCache(inner, 2)
    inner.fail_after = 0
    assert await cache.warm(["Hello."]) == 0
    inner.fail_after = None
    assert await cache.warm(["One.", "Two.", "Three."]) == 2
    assert len(cache) == 2 and "Three." not in cache


@pytest.mark.parametrize(
    ("text", "personal"),
    [
        ("Your order 48213 shipped yesterday.", True),
        ("Call us at 555-123-4567.", True),
        ("The card ending in 4 2 4 2.", True),
        ("I sent it to jane@example.com.", True),
        ("Thanks for calling, how can I help you today?", False),
        ("Press 1 for orders or 2 for returns.", False),
        ("That is 59 dollars.", False),
    ],
)
def test_looks_personal(text: str, personal: bool) -> None:
    assert looks_personal(text) is personal


async def test_personal_text_is_spoken_but_never_stored() -> None:
    inner = CountingVoice()
    cache = PhraseCache(inner, 10)
    bypass = lookups("bypass")
    text = "Your order 48213 shipped yesterday."
    assert await speak(cache, text) and await speak(cache, text)
    assert len(inner.calls) == 2 and len(cache) == 0 and lookups("bypass") - bypass == 2


async def test_end_call_and_aclose_pass_through() -> None:
    inner = CountingVoice()
    cache = PhraseCache(inner, 10)
    await speak(cache, "Goodbye now.")
    await cache.end_call(SID)
    assert inner.ended == [SID] and len(cache) == 1
    await cache.aclose()
    assert inner.closed and len(cache) == 0 and cache.size_bytes == 0


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries and max_bytes must be >= 1"):
        PhraseCache(CountingVoice(), 0)


async def test_over_real_espeak() -> None:
    synth = EspeakSynthesizer()
    cache = PhraseCache(ThreadedVoice(synth, "espeak"), 10)
    started = time.perf_counter()
    miss = await speak(cache, "Thanks for calling, how can I help you today?")
    missed_in = time.perf_counter() - started
    started = time.perf_counter()
    hit = await speak(cache, "Thanks for calling, how can I help you today?")
    hit_in = time.perf_counter() - started
    print(f"\nphrase cache over espeak: miss {missed_in * 1e3:.1f} ms, hit {hit_in * 1e3:.2f} ms ({len(hit)} chunks)")
    assert hit == miss and len(hit) > 10
