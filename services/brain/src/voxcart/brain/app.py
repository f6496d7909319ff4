"""``voxcart serve brain``: run a brain worker replica."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from zoneinfo import ZoneInfo

from voxcart.common.bus import RedisBus, keys
from voxcart.common.seed import SeedError, load_seed
from voxcart.common.settings import Settings
from voxcart.common.worker import CallContext, CallHandler, Worker

from .dialog import Dialog, sample_utterances, vocabulary
from .language import catalogue
from .store import Clock, FixedClock, SqliteStore, demo_seed_path, system_clock
from .worker import BrainHandler

__all__ = ["build_dialog", "publish_language", "run"]


def build_dialog(settings: Settings) -> Dialog:
    """Load the store from ``STORE_SEED`` (default: the demo store) and build the dialog; exits on a bad seed."""
    if settings.store_url:
        raise SystemExit("STORE_URL (PostgreSQL) is not supported yet; use STORE_SEED")
    path = settings.store_seed or str(demo_seed_path())
    try:
        seed = load_seed(path)
    except SeedError as exc:
        raise SystemExit(f"STORE_SEED: {exc}") from None
    except OSError as exc:
        raise SystemExit(f"STORE_SEED: cannot read {path}: {exc}") from None
    clock: Clock = system_clock
    if settings.store_today:
        try:
            day = dt.date.fromisoformat(settings.store_today)
        except ValueError:
            raise SystemExit(f"STORE_TODAY={settings.store_today!r}: expected an ISO date like 2026-11-20") from None
        clock = FixedClock(dt.datetime.combine(day, dt.time(12), ZoneInfo(seed.store.timezone)))
    store = SqliteStore(seed, clock=clock)
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
