"""Fixtures: every brain test runs against the demo store AND a second, unrelated store.

Tests read what they need from the seed (an order of some status, a product with colours and sizes) rather
than hard-coding demo values. "Today" is two days after the latest order was placed, in the store's zone.

PostgreSQL (``postgres`` marker): ``postgres_url`` is a fresh database for the session, dropped at the end, on
the server ``VOXCART_TEST_POSTGRES_URL`` names, else the one answering on 127.0.0.1:5432, else a throwaway
server started from the installed binaries; tests skip only when there are none. ``postgres_schema`` is a
fresh empty schema of it per test (a URL whose ``search_path`` is that schema). ``make_store`` builds stores
of either backend (parametrized: ``sqlite``, ``postgres``); a test module runs on both by overriding ``store``
with ``make_store(seed, clock)``.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from voxcart.brain.dialog import Conversation, Dialog
from voxcart.brain.localpostgres import PostgresNotFound, postgres_answers, start_postgres
from voxcart.brain.store import Clock, FixedClock, PostgresStore, SqliteStore, Store, demo_seed_path, system_clock
from voxcart.common.seed import Seed, load_seed

SEEDS = {"demo": demo_seed_path(), "other": Path(__file__).parent / "data" / "other_store.json"}
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


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


def postgres_url_for(base: str, *, dbname: str | None = None, schema: str | None = None) -> str:
    """``base`` (a URL or key=value conninfo) as a ``postgresql://`` URL, with another database and/or schema."""
    params = {k: str(v) for k, v in conninfo_to_dict(base).items()}
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", "")
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host, port = params.pop("host", "127.0.0.1"), params.pop("port", "5432")
    name = dbname or params.pop("dbname", "postgres")
    params.pop("dbname", None)
    if schema is not None:
        params["options"] = f"-csearch_path={schema}"
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return f"postgresql://{auth}{host}:{port}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Superuser URL of a PostgreSQL server (see the module docstring for which one)."""
    url = os.environ.get("VOXCART_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    if postgres_answers(LOCAL_POSTGRES):
        yield LOCAL_POSTGRES
        return
    try:
        server = start_postgres()
    except PostgresNotFound as exc:
        pytest.skip(f"no PostgreSQL to test against: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh database for this test session (dropped at the end, connections or not)."""
    name = f"voxcart_test_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield postgres_url_for(postgres_server, dbname=name)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """A URL whose ``search_path`` is a fresh, empty schema of the session database (dropped after the test)."""
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield postgres_url_for(postgres_url, schema=name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_store(request: pytest.FixtureRequest) -> Iterator[Callable[..., Store]]:
    """``make_store(seed, clock=system_clock)`` for one backend. PostgreSQL stores of one test share the test's
    fresh schema (a second store is another replica of the same data) and are closed after the test."""
    if request.param == "sqlite":
        yield lambda seed, clock=system_clock: SqliteStore(seed, clock=clock)
        return
    url: str = request.getfixturevalue("postgres_schema")
    opened: list[PostgresStore] = []

    def make(seed: Seed, clock: Clock = system_clock) -> Store:
        opened.append(PostgresStore(url, seed=seed, clock=clock))
        return opened[-1]

    try:
        yield make
    finally:
        for store in opened:
            store.close()
