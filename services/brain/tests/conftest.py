"""Fixtures: every brain test runs against the demo store AND a second, unrelated store.

Tests read what they need from the seed (an order of some status, a product with colours and sizes) rather
than hard-coding demo values. "Today" is two days after the latest order was placed, in the store's zone.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from voxcart.brain.dialog import Conversation, Dialog
from voxcart.brain.store import FixedClock, SqliteStore, demo_seed_path
from voxcart.common.seed import Seed, load_seed

SEEDS = {"demo": demo_seed_path(), "other": Path(__file__).parent / "data" / "other_store.json"}


@pytest.fixture(params=sorted(SEEDS), scope="session")
def seed(request: pytest.FixtureRequest) -> Seed:
    return load_seed(SEEDS[request.param])


@pytest.fixture
def clock(seed: Seed) -> FixedClock:
    today = max(o.placed for o in seed.orders) + dt.timedelta(days=2)
    return FixedClock.on(today, seed.store.timezone, hour=11)


@pytest.fixture
def store(seed: Seed, clock: FixedClock) -> SqliteStore:
    return SqliteStore(seed, clock=clock)


@pytest.fixture
def dialog(store: SqliteStore) -> Dialog:
    return Dialog(store)


@pytest.fixture
def convo(dialog: Dialog) -> Conversation:
    return Conversation(dialog, call_id="CAtest")
