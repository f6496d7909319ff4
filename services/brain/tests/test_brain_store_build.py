"""``build_store``: the settings choose the backend (SQLite from STORE_SEED, PostgreSQL by STORE_URL), pin the
date, and every wrong setting is refused with its name in the message (and no password)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from voxcart.brain.app import build_dialog
from voxcart.brain.store import (
    PostgresStore,
    SqliteStore,
    StoreError,
    StoreUnavailable,
    build_store,
    demo_seed_path,
)
from voxcart.common.localredis import free_port
from voxcart.common.seed import load_seed
from voxcart.common.settings import Settings

OTHER_SEED = Path(__file__).parent / "data" / "other_store.json"
DEMO = str(demo_seed_path())


def test_default_is_the_demo_store_in_sqlite() -> None:
    store = build_store(Settings(), default_seed=DEMO)
    assert isinstance(store, SqliteStore) and store.info == load_seed(DEMO).store


def test_store_seed_and_a_pinned_day_in_the_store_timezone() -> None:
    other = load_seed(OTHER_SEED)
    store = build_store(Settings(store_seed=str(OTHER_SEED), store_today="2027-01-31"), default_seed=DEMO)
    assert store.info == other.store
    assert store.today() == dt.date(2027, 1, 31)
    assert store.clock() == dt.datetime(2027, 1, 31, 12, tzinfo=ZoneInfo(other.store.timezone))


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (Settings(store_today="31/01/2027"), "STORE_TODAY='31/01/2027': expected an ISO date"),
        (Settings(store_seed="/no/such/seed.json"), "STORE_SEED: /no/such/seed.json: cannot read"),
        (Settings(store_url="mysql://shop:s3cret@db/shop"), "STORE_URL='mysql://shop:***@db/shop': expected postgr"),
        (Settings(store_url="postgresql://u:s3cret@[bad/x"), "STORE_URL: not a valid PostgreSQL connection string"),
    ],
)
def test_wrong_settings_are_named(settings: Settings, expected: str) -> None:
    with pytest.raises(StoreError) as err:
        build_store(settings, default_seed=DEMO)
    assert str(err.value).startswith(expected) and "s3cret" not in str(err.value)


def test_a_malformed_seed_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "store.json"
    bad.write_text(OTHER_SEED.read_text().replace('"status": "shipped"', '"status": "lost"', 1))
    with pytest.raises(StoreError, match=r"STORE_SEED: .*store.json: \$\.orders\[\d+\]\.status: expected one of"):
        build_store(Settings(store_seed=str(bad)), default_seed=DEMO)


def test_an_unreachable_store_url_names_host_and_port() -> None:
    port = free_port()
    with pytest.raises(StoreUnavailable) as err:
        build_store(Settings(store_url=f"postgresql://shop:s3cret@127.0.0.1:{port}/shop"), default_seed=DEMO)
    assert str(err.value).startswith(f"STORE_URL: cannot connect to PostgreSQL at 127.0.0.1:{port}")
    assert "s3cret" not in str(err.value)


def test_build_dialog_exits_with_the_message() -> None:
    with pytest.raises(SystemExit, match="STORE_URL='redis://"):
        build_dialog(Settings(store_url="redis://localhost:6379/0"))


@pytest.mark.postgres
def test_store_url_with_a_seed_then_alone(postgres_schema: str) -> None:
    other = load_seed(OTHER_SEED)
    with_seed = Settings(store_url=postgres_schema, store_seed=str(OTHER_SEED), store_today="2027-01-31")
    loaded = build_store(with_seed, default_seed=DEMO)
    assert isinstance(loaded, PostgresStore) and loaded.seed_loaded
    assert loaded.today() == dt.date(2027, 1, 31)
    assert loaded.clock() == dt.datetime(2027, 1, 31, 12, tzinfo=ZoneInfo(other.store.timezone))
    alone = build_store(Settings(store_url=postgres_schema), default_seed=DEMO)  # the demo default is not loaded
    assert isinstance(alone, PostgresStore) and not alone.seed_loaded
    assert alone.info == other.store and alone.products() == other.products
    loaded.close()
    alone.close()


@pytest.mark.postgres
def test_store_url_alone_on_an_empty_database(postgres_schema: str) -> None:
    with pytest.raises(StoreUnavailable, match=r"^STORE_URL: .*no voxcart store.*start once with STORE_SEED"):
        build_store(Settings(store_url=postgres_schema), default_seed=DEMO)
