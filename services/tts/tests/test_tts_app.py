"""tts start-up: the phrase cache warmed with the stock phrases brain publishes."""

from __future__ import annotations

import asyncio
import json
import threading

from voxcart.common.bus import MemoryBus, keys
from voxcart.common.settings import load_settings
from voxcart.tts.app import build_voice, phrase_cache_of, warm_phrases


async def test_the_cache_is_warmed_with_brains_stock_phrases_once_published() -> None:
    voice = build_voice(load_settings({"TTS_PHRASE_CACHE": "20"}, env_file=None))
    cache = phrase_cache_of(voice)
    assert cache is not None
    bus = MemoryBus()
    warming = asyncio.create_task(warm_phrases(bus, cache, wait_s=5, poll_s=0.01))
    await asyncio.sleep(0.05)
    assert not warming.done()  # brain has not published yet
    phrases = ["Are you still there?", "Sorry, I didn't catch that."]
    await bus.hset(keys.PHRASES, {"phrases": json.dumps(phrases), "version": "v1"})
    async with asyncio.timeout(10):
        assert await warming == 2
    assert all(p in cache for p in phrases)
    chunks = [c async for c in cache.synthesize(phrases[0], call_sid="CA1", cancel=threading.Event())]
    assert chunks and all(len(c) % 160 == 0 for c in chunks)
    await voice.aclose()


async def test_no_phrases_published_leaves_the_cache_empty() -> None:
    voice = build_voice(load_settings({}, env_file=None))
    cache = phrase_cache_of(voice)
    assert cache is not None
    assert await warm_phrases(MemoryBus(), cache, wait_s=0.05, poll_s=0.01) == 0
    assert len(cache) == 0
    assert phrase_cache_of(build_voice(load_settings({"TTS_PHRASE_CACHE": "0"}, env_file=None))) is None
    await voice.aclose()
