"""``voxcart serve stt``: run an stt worker replica."""

from __future__ import annotations

import asyncio
import json
import logging

from voxcart.common.bus import RedisBus, keys
from voxcart.common.settings import Settings
from voxcart.common.worker import CallContext, CallHandler, Worker

from .recognizer import RecognizerModel
from .worker import SttHandler

__all__ = ["run"]

log = logging.getLogger("voxcart.stt.app")


async def _caller_language(bus: RedisBus) -> tuple[list[str], list[str]]:
    """What callers say, as published by brain at its start; waits for it."""
    waited = 0.0
    while True:
        raw = await bus.hgetall(keys.LANGUAGE)
        if "samples" in raw:
            return json.loads(raw["samples"]), json.loads(raw.get("words", b"[]"))
        if waited == 0 or waited % 10 < 0.25:
            log.info("waiting for brain to publish the caller language (%s)", keys.LANGUAGE)
        await asyncio.sleep(0.25)
        waited += 0.25


async def run(settings: Settings) -> None:
    if settings.stt_provider != "pocketsphinx":
        raise SystemExit(f"STT_PROVIDER={settings.stt_provider!r} is not available yet; use 'pocketsphinx'")
    bus = RedisBus(settings.redis_dsn)
    samples, words = await _caller_language(bus)
    model = await asyncio.to_thread(RecognizerModel.build, samples, words)

    async def factory(ctx: CallContext) -> CallHandler:
        return SttHandler(ctx, model, settings.stt_end_silence_ms)

    worker = Worker(bus, "stt", settings, lambda sid: [keys.audio_in(sid)], factory)
    try:
        await worker.run()
    finally:
        model.close()
        await bus.close()
