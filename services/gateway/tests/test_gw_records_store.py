"""The call-record stores: every test runs on embedded SQLite and on a real PostgreSQL (``postgres`` marker).

PostgreSQL: the server ``VOXCART_TEST_POSTGRES_URL`` names, else the one on 127.0.0.1:5432, else a throwaway
server started from the installed binaries (``voxcart.brain.localpostgres``); each test gets a fresh schema.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from voxcart.brain.localpostgres import PostgresNotFound, postgres_answers, start_postgres
from voxcart.common.settings import load_settings
from voxcart.gateway.records_postgres import PostgresRecordStore
from voxcart.gateway.records_sqlite import SqliteRecordStore
from voxcart.gateway.records_store import (
    CallRecord,
    LatencySummary,
    RecordQuery,
    RecordStore,
    RecordStoreError,
    Turn,
    decode_cursor,
    encode_cursor,
    open_record_store,
)

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
T0 = 1_764_000_000_000.0

MakeStore = Callable[[], RecordStore]


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
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


@pytest.fixture
def postgres_schema(postgres_server: str) -> Iterator[str]:
    """A connection string whose ``search_path`` is a fresh schema (dropped after the test)."""
    name = f"gw_records_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield f"{postgres_server}?options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """``make_store()`` opens one more store on the same data (another gateway replica, or a restart)."""
    opened: list[RecordStore] = []
    if request.param == "sqlite":
        path = tmp_path / "data" / "records.sqlite3"

        def make() -> RecordStore:
            opened.append(SqliteRecordStore(path))
            return opened[-1]
    else:
        url: str = request.getfixturevalue("postgres_schema")

        def make() -> RecordStore:
            opened.append(PostgresRecordStore(url))
            return opened[-1]

    try:
        yield make
    finally:
        for store in opened:
            store.close()


def record(sid: str, started: float, **fields: object) -> CallRecord:
    base: dict[str, object] = {
        "from_number": "+15555550123",
        "to_number": "+15555550999",
        "status": "completed",
        "outcome": "completed",
        "end_reason": "agent ended",
        "started_ms": started,
        "ended_ms": started + 30_000,
    }
    return CallRecord(call_sid=sid, **{**base, **fields})  # type: ignore[arg-type]


TURNS = (
    Turn(speaker="agent", text="Hello.", turn_no=1, started_ms=T0, intent="greeting"),
    Turn(speaker="caller", text="where is my order", turn_no=2, started_ms=T0 + 2000, ended_ms=T0 + 3000,
         confidence=0.91),
    Turn(speaker="agent", text="It shipped.", turn_no=2, started_ms=T0 + 3500, intent="order_status", latency_s=0.8),
)  # fmt: skip


def test_gw_records_store_round_trip(make_store: MakeStore) -> None:
    store = make_store()
    saved = record("CAone", T0, turns=TURNS, latency=LatencySummary.of([0.8]), transfer_to=None)
    store.save(saved)
    assert store.get("CAone") == saved
    assert store.get("CAnone") is None
    assert store.known(["CAone", "CAnone"]) == {"CAone"}
    assert store.known([f"CAx{i}" for i in range(1200)] + ["CAone"]) == {"CAone"}  # more than one IN (...) holds
    assert store.known([]) == set()


def test_gw_records_store_survives_reopen_and_is_shared(make_store: MakeStore) -> None:
    first = make_store()
    first.save(record("CAkept", T0))
    first.close()
    second, third = make_store(), make_store()  # a restart, and another replica on the same data
    assert second.get("CAkept") is not None
    third.save(record("CAother", T0 + 1))
    assert second.known(["CAkept", "CAother"]) == {"CAkept", "CAother"}


def test_gw_records_store_upsert_keeps_one_record_the_latest_end(make_store: MakeStore) -> None:
    store, replica = make_store(), make_store()
    early = record("CAdup", T0, end_reason="socket closed", outcome="abandoned", ended_ms=T0 + 10_000)
    final = record("CAdup", T0, end_reason="agent ended", outcome="completed", ended_ms=T0 + 60_000)
    store.save(early)
    replica.save(final)
    store.save(final)  # the same end processed twice
    replica.save(early)  # a stale end arriving late does not overwrite
    assert store.get("CAdup") == final
    page = store.list(RecordQuery())
    assert [r.call_sid for r in page.records] == ["CAdup"]


def test_gw_records_store_lists_newest_first_and_pages_with_ties(make_store: MakeStore) -> None:
    store = make_store()
    sids = [f"CA{i:02d}" for i in range(7)]
    for i, sid in enumerate(sids):
        store.save(record(sid, T0 + (i // 2) * 1000))  # pairs share a start time
    seen: list[str] = []
    query = RecordQuery(limit=3)
    for _ in range(5):
        page = store.list(query)
        seen += [r.call_sid for r in page.records]
        if page.next_cursor is None:
            break
        cursor = decode_cursor(encode_cursor(page.next_cursor))
        assert cursor == page.next_cursor
        query = RecordQuery(limit=3, after=cursor)
    assert seen == sorted(sids, key=lambda s: (T0 + (int(s[2:]) // 2) * 1000, s), reverse=True)


def test_gw_records_store_filters(make_store: MakeStore) -> None:
    store = make_store()
    store.save(record("CAa", T0, outcome="completed"))
    store.save(record("CAb", T0 + 1000, outcome="transferred", from_number="+15550001111"))
    store.save(record("CAc", T0 + 2000, outcome="abandoned"))
    store.save(record("CAd", T0 + 3000, outcome="failed", from_number="+15550001111"))

    def sids(**filters: object) -> list[str]:
        return [r.call_sid for r in store.list(RecordQuery(**filters)).records]  # type: ignore[arg-type]

    assert sids(outcome="transferred") == ["CAb"]
    assert sids(from_numbers=("+15550001111",)) == ["CAd", "CAb"]
    assert sids(since_ms=T0 + 1000) == ["CAd", "CAc", "CAb"]
    assert sids(until_ms=T0 + 1000) == ["CAa"]
    assert sids(since_ms=T0 + 1000, until_ms=T0 + 3000, outcome="abandoned") == ["CAc"]
    assert sids(status="in-progress") == []


def test_gw_records_store_concurrent_writers(make_store: MakeStore) -> None:
    stores = [make_store(), make_store()]
    errors: list[BaseException] = []

    def write(store: RecordStore, offset: int) -> None:
        try:
            for i in range(25):
                store.save(record(f"CA{offset + i:03d}", T0 + offset + i))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, n * 100)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(stores[0].list(RecordQuery(limit=500)).records) == 50


def test_gw_records_store_sqlite_bad_path_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RecordStoreError, match="RECORDS_PATH") as info:
        SqliteRecordStore(blocker / "records.sqlite3")
    assert str(blocker) in str(info.value)


@pytest.mark.postgres
def test_gw_records_store_postgres_errors_hide_the_password(postgres_server: str) -> None:
    with pytest.raises(RecordStoreError) as info:
        PostgresRecordStore("postgresql://someone:s3cret-pw@127.0.0.1:1/records", connect_timeout=2)
    message = str(info.value)
    assert "s3cret-pw" not in message
    assert "127.0.0.1:1" in message and "'records'" in message


@pytest.mark.postgres
def test_gw_records_store_postgres_reconnects_after_a_dropped_connection(postgres_schema: str) -> None:
    name = f"gw_records_{secrets.token_hex(4)}"
    store = PostgresRecordStore(f"{postgres_schema}&application_name={name}")
    try:
        store.save(record("CAbefore", T0))
        with psycopg.connect(postgres_schema, autocommit=True) as admin:  # only this store's connection
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchall()
        assert killed == [(True,)]
        store.save(record("CAafter", T0 + 1))
        assert store.known(["CAbefore", "CAafter"]) == {"CAbefore", "CAafter"}
    finally:
        store.close()


def test_gw_records_store_opened_from_settings(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    store = open_record_store(load_settings({"RECORDS_PATH": str(path)}, env_file=None))
    try:
        assert isinstance(store, SqliteRecordStore) and path.exists()
        assert store.where == f"SQLite {path}"
    finally:
        store.close()
    with pytest.raises(RecordStoreError, match="DATABASE_URL"):
        open_record_store(load_settings({"DATABASE_URL": "not a url = = ="}, env_file=None))


def test_gw_records_latency_summary_nearest_rank() -> None:
    assert LatencySummary.of([]) == LatencySummary()
    summary = LatencySummary.of([0.5, 2.0, 1.0, 0.7])
    assert (summary.turns, summary.p50_s, summary.p95_s, summary.max_s) == (4, 0.7, 2.0, 2.0)
    twenty = LatencySummary.of([float(i) for i in range(1, 21)])
    assert (twenty.p50_s, twenty.p95_s) == (10.0, 19.0)


def test_gw_records_cursor_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="next_cursor"):
        decode_cursor("not-a-cursor!!")
