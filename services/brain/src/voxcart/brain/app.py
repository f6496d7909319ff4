"""``voxcart serve brain``: run a brain worker replica."""

from __future__ import annotations

import hashlib
import json

from voxcart.common.bus import RedisBus, keys
from voxcart.common.settings import Settings
from voxcart.common.worker import CallContext, CallHandler, Worker

from .dialog import Dialog, sample_utterances, vocabulary
from .language import catalogue
from .store import StoreError, build_store, demo_seed_path
from .worker import BrainHandler

__all__ = ["build_dialog", "publish_language", "run"]


def build_dialog(settings: Settings) -> Dialog:
    """Open the store (``STORE_URL``, else ``STORE_SEED``, else the demo store) and build the dialog; exits when the
    store cannot be opened, with the setting at fault named."""
    try:
        store = build_store(settings, default_seed=str(demo_seed_path()))
    except StoreError as exc:
        raise SystemExit(str(exc)) from None
    return Dialog(store, min_confidence=settings.brain_min_confidence)


async def publish_language(bus: RedisBus, dialog: Dialog) -> str:
    """Publish what callers of this store say (stt builds its domain model from it); returns its version.

    The version is a digest of the content, so every brain replica of one store publishes the same one and stt
    rebuilds only when the store really changed.
    """
    samples = json.dumps(sample_utterances(dialog.store))
    words = json.dumps(vocabulary(dialog.store))
    products = json.dumps(catalogue(dialog.store))
    version = hashlib.sha256(f"{samples}\n{words}\n{products}".encode()).hexdigest()[:16]
    await bus.hset(keys.LANGUAGE, {"samples": samples, "words": words, "catalogue": products, "version": version})
    await bus.hset(keys.PHRASES, {"phrases": json.dumps(dialog.stock_phrases()), "version": version})
    return version


async def run(settings: Settings) -> None:
    dialog = build_dialog(settings)
    bus = RedisBus(settings.redis_dsn)
    await publish_language(bus, dialog)

    async def factory(ctx: CallContext) -> CallHandler:
        return await BrainHandler.create(ctx, dialog)

    worker = Worker(bus, "brain", settings, lambda sid: [keys.events(sid)], factory)
    try:
        await worker.run()
    finally:
        await bus.close()
