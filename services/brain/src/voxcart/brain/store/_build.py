"""Open the store the settings name: embedded SQLite from ``STORE_SEED`` (default) or PostgreSQL by ``STORE_URL``.

Invariants:
- ``STORE_URL`` unset: an in-memory SQLite store loaded from ``STORE_SEED`` (default: the demo store).
- ``STORE_URL`` set: a :class:`~voxcart.brain.store.PostgresStore`; with ``STORE_SEED`` also set, the seed is
  loaded into the database first (once: an unchanged seed leaves the data and the actions made since alone);
  without it, the database must already hold a store.
- ``STORE_TODAY`` pins "today" to noon of that date in the store's own timezone, whichever backend.
- Every failure is a :class:`~voxcart.brain.store.StoreError` whose message starts with the setting at fault
  (``STORE_SEED: ...``, ``STORE_URL: ...``, ``STORE_TODAY: ...``) and never shows a password.
"""

from __future__ import annotations

import datetime as dt
from typing import Final
from zoneinfo import ZoneInfo

from voxcart.brain.store._base import Clock, FixedClock, Store, StoreError, StoreUnavailable, system_clock
from voxcart.brain.store._pgconn import mask, url_password
from voxcart.brain.store._postgres import PostgresStore
from voxcart.brain.store._sqlite import SqliteStore
from voxcart.common.seed import Seed, SeedError, load_seed
from voxcart.common.settings import Settings

__all__ = ["build_store"]

_SCHEMES: Final = ("postgresql://", "postgres://")


def build_store(settings: Settings, *, default_seed: str | None = None) -> Store:
    """The store ``settings`` describe (see the module invariants).

    Args:
        settings: ``STORE_URL``, ``STORE_SEED`` and ``STORE_TODAY`` are read.
        default_seed: the seed used when ``STORE_SEED`` is empty and there is no ``STORE_URL`` (the demo store).

    Returns:
        A ready store; a :class:`~voxcart.brain.store.PostgresStore` holds a connection until closed.

    Raises:
        StoreError: a setting is wrong or the database cannot be used; the message names the setting.
    """
    day = _pinned_day(settings.store_today)
    url = settings.store_url.strip()
    seed_path = settings.store_seed or (None if url else default_seed)
    seed = _load(seed_path) if seed_path else None
    # The pinned clock needs the store's timezone, known only once the store is open: pin it afterwards.
    pinned = FixedClock(dt.datetime.combine(day, dt.time(12), dt.UTC)) if day else None
    clock: Clock = pinned or system_clock
    if url:
        store: Store = _open_postgres(url, seed, clock)
    elif seed is not None:
        store = SqliteStore(seed, clock=clock)
    else:
        raise StoreError("STORE_SEED: no seed file given (set STORE_SEED, or STORE_URL for PostgreSQL)")
    if pinned is not None and day is not None:
        pinned.now = dt.datetime.combine(day, dt.time(12), ZoneInfo(store.info.timezone))
    return store


def _pinned_day(value: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise StoreError(f"STORE_TODAY={value!r}: expected an ISO date like 2026-11-20") from None


def _load(path: str) -> Seed:
    try:
        return load_seed(path)
    except SeedError as exc:
        raise StoreError(f"STORE_SEED: {exc}") from None


def _open_postgres(url: str, seed: Seed | None, clock: Clock) -> PostgresStore:
    if not url.startswith(_SCHEMES):
        shown = mask(url, url_password(url))
        raise StoreError(f"STORE_URL={shown!r}: expected postgresql://user:password@host:port/database")
    try:
        return PostgresStore(url, seed=seed, clock=clock)
    except StoreUnavailable as exc:
        raise StoreUnavailable(f"STORE_URL: {exc}") from None
    except StoreError as exc:
        raise StoreError(f"STORE_URL: {exc}") from None
