"""PostgreSQL-only store behaviour: loading a seed (twice, a different one, concurrently, failing), replicas
racing on the same action, a lost connection, and the errors a bad database gives.

The behaviour both backends share is tested on both in ``test_brain_store.py``.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import psycopg
import pytest

from voxcart.brain.localpostgres import find_binaries, start_postgres
from voxcart.brain.store import (
    ActionRefused,
    FixedClock,
    PostgresStore,
    StoreError,
    StoreUnavailable,
    check_return,
    demo_seed_path,
)
from voxcart.common.localredis import free_port
from voxcart.common.seed import Order, Seed, load_seed

pytestmark = pytest.mark.postgres

T = TypeVar("T")
OTHER_SEED = Path(__file__).parent / "data" / "other_store.json"
DEMO = load_seed(demo_seed_path())
SEED_TABLES = ("products", "variants", "customers", "orders", "order_items", "returns")


@pytest.fixture
def stores() -> Iterator[list[PostgresStore]]:
    """Stores a test opens, closed after it."""
    opened: list[PostgresStore] = []
    yield opened
    for store in opened:
        store.close()


def _open(stores: list[PostgresStore], url: str, **kwargs: Any) -> PostgresStore:
    stores.append(PostgresStore(url, **kwargs))
    return stores[-1]


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {t: _scalar(conn, f"SELECT count(*) FROM {t}") for t in (*SEED_TABLES, "address_changes", "messages")}


def _scalar(conn: psycopg.Connection[tuple[Any, ...]], query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


def _seed_counts(seed: Seed) -> dict[str, int]:
    return {
        "products": len(seed.products),
        "variants": sum(len(p.variants) for p in seed.products),
        "customers": len(seed.customers),
        "orders": len(seed.orders),
        "order_items": sum(len(o.items) for o in seed.orders),
        "returns": len(seed.returns),
    }


def _order(seed: Seed, status: str) -> Order:
    return next(o for o in seed.orders if o.status == status)


def _returnable(seed: Seed, store: PostgresStore) -> tuple[Order, str]:
    for order in seed.orders:
        if order.status == "delivered" and order.delivered is not None:
            for item in order.items:
                returns = store.returns_for_order(order.number)
                product = store.product_for_sku(item.sku)
                if check_return(order, item.sku, product, seed.policies, order.delivered, returns).eligible:
                    return order, item.sku
    raise AssertionError("seed has no returnable item")


def _in_threads(calls: Sequence[Callable[[], T]]) -> list[T | BaseException]:
    """Run the calls at once, one thread each; their results (or exceptions), in order."""
    results: list[T | BaseException] = [RuntimeError("did not finish")] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    return _joined(threads, results)


def _joined(threads: list[threading.Thread], results: list[T | BaseException]) -> list[T | BaseException]:
    for t in threads:
        t.join(15)
        assert not t.is_alive(), "a store call hung"
    return results


def _start_blocked(
    calls: Sequence[Callable[[], T]], url: str
) -> tuple[list[threading.Thread], list[T | BaseException]]:
    """Start the calls in threads and return once all of them wait on a lock held elsewhere."""
    results: list[T | BaseException] = [RuntimeError("did not finish")] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    with psycopg.connect(url, autocommit=True) as monitor:
        deadline = time.monotonic() + 10
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        while _scalar(monitor, query) < len(calls):
            assert time.monotonic() < deadline, "the calls never waited on the lock"
            time.sleep(0.02)
    return threads, results


# -- loading a seed ------------------------------------------------------------------------------------------


def test_loading_the_same_seed_again_keeps_the_data(
    seed: Seed, clock: FixedClock, postgres_schema: str, stores: list[PostgresStore]
) -> None:
    first = _open(stores, postgres_schema, seed=seed, clock=clock)
    assert first.seed_loaded
    assert _counts(postgres_schema) == {**_seed_counts(seed), "address_changes": 0, "messages": 0}
    processing = _order(seed, "processing")
    first.cancel_order(processing.number)
    order, sku = _returnable(seed, first)
    assert order.delivered is not None
    clock.now = FixedClock.on(order.delivered, seed.store.timezone).now
    made = first.create_return(order.number, sku, key="k1")

    again = _open(stores, postgres_schema, seed=seed, clock=clock)
    assert not again.seed_loaded
    expected = {**_seed_counts(seed), "returns": len(seed.returns) + 1, "address_changes": 0, "messages": 0}
    assert _counts(postgres_schema) == expected
    existing = _open(stores, postgres_schema, clock=clock)  # STORE_URL alone: what is in the database
    for store in (again, existing):
        assert not store.seed_loaded and store.info == seed.store and store.policies == seed.policies
        assert store.products() == seed.products
        cancelled = store.get_order(processing.number)
        assert cancelled is not None and cancelled.status == "cancelled"
        assert made in store.returns_for_order(order.number)


def test_a_different_seed_replaces_the_data(postgres_schema: str, stores: list[PostgresStore]) -> None:
    demo, other = DEMO, load_seed(OTHER_SEED)
    first = _open(stores, postgres_schema, seed=demo)
    processing = _order(demo, "processing")
    first.change_address(processing.number, "12 oak lane", key="a1")
    first.cancel_order(processing.number)
    first.leave_message("+15550001111", "call me back", key="m1")

    replaced = _open(stores, postgres_schema, seed=other)
    assert replaced.seed_loaded and replaced.info == other.store
    assert replaced.products() == other.products
    assert replaced.get_order(processing.number) is None
    assert _counts(postgres_schema) == {**_seed_counts(other), "address_changes": 0, "messages": 1}
    assert [m.text for m in replaced.messages()] == ["call me back"]  # callers' messages are not seed data

    back = _open(stores, postgres_schema, seed=demo)  # the demo seed again: loaded afresh, the cancel is gone
    assert back.seed_loaded and back.get_order(processing.number) == processing


def test_replicas_starting_together_load_the_seed_once(
    seed: Seed, postgres_schema: str, stores: list[PostgresStore]
) -> None:
    results = _in_threads([lambda: PostgresStore(postgres_schema, seed=seed) for _ in range(4)])
    opened = [r for r in results if isinstance(r, PostgresStore)]
    stores.extend(opened)
    assert len(opened) == 4, [r for r in results if isinstance(r, BaseException)]
    assert sum(store.seed_loaded for store in opened) == 1
    assert _counts(postgres_schema) == {**_seed_counts(seed), "address_changes": 0, "messages": 0}


def test_a_load_that_fails_leaves_the_previous_store(postgres_schema: str, stores: list[PostgresStore]) -> None:
    demo, other = DEMO, load_seed(OTHER_SEED)
    _open(stores, postgres_schema, seed=demo)
    broken_product = msgspec.structs.replace(
        other.products[-1], variants=[msgspec.structs.replace(other.products[-1].variants[0], stock=-1)]
    )
    broken = msgspec.structs.replace(other, products=[*other.products[:-1], broken_product])
    with pytest.raises(StoreUnavailable, match="variants"):
        PostgresStore(postgres_schema, seed=broken)
    kept = _open(stores, postgres_schema)
    assert kept.info == demo.store and kept.products() == demo.products


# -- replicas racing -----------------------------------------------------------------------------------------


def test_concurrent_create_return_same_key_from_two_replicas(
    seed: Seed, clock: FixedClock, postgres_schema: str, stores: list[PostgresStore]
) -> None:
    a = _open(stores, postgres_schema, seed=seed, clock=clock)
    b = _open(stores, postgres_schema, seed=seed, clock=clock)
    order, sku = _returnable(seed, a)
    assert order.delivered is not None
    clock.now = FixedClock.on(order.delivered, seed.store.timezone).now
    with psycopg.connect(postgres_schema) as blocker:  # both replicas check the key at the same moment
        blocker.execute("LOCK TABLE returns IN SHARE ROW EXCLUSIVE MODE")
        threads, results = _start_blocked(
            [lambda: a.create_return(order.number, sku, key="CA1:return"),
             lambda: b.create_return(order.number, sku, key="CA1:return")],
            postgres_schema,
        )  # fmt: skip
    first, second = _joined(threads, results)
    assert not isinstance(first, BaseException) and first == second
    with psycopg.connect(postgres_schema) as conn:
        assert _scalar(conn, "SELECT count(*) FROM returns WHERE idem_key = %s", "CA1:return") == 1
    assert a.returns_for_order(order.number) == b.returns_for_order(order.number)
    assert [r.id for r in a.returns_for_order(order.number)].count(first.id) == 1


def test_concurrent_returns_with_different_keys_get_distinct_ids(
    seed: Seed, clock: FixedClock, postgres_schema: str, stores: list[PostgresStore]
) -> None:
    replicas = [_open(stores, postgres_schema, seed=seed, clock=clock) for _ in range(3)]
    day = max(o.delivered for o in seed.orders if o.status == "delivered" and o.delivered is not None)
    clock.now = FixedClock.on(day, seed.store.timezone).now
    returnable = [
        (o.number, i.sku)
        for o in seed.orders
        for i in o.items
        if check_return(o, i.sku, replicas[0].product_for_sku(i.sku), seed.policies, day,
                        replicas[0].returns_for_order(o.number)).eligible
    ]  # fmt: skip
    assert len(returnable) >= 2, returnable
    calls = [
        functools.partial(replicas[n % 3].create_return, number, sku, key=f"k{n}")
        for n, (number, sku) in enumerate(returnable)
    ]
    made = _in_threads(calls)
    ids = [r.id for r in made if not isinstance(r, BaseException)]
    assert len(ids) == len(returnable), made
    assert len(set(ids)) == len(ids) and not set(ids) & {r.id for r in seed.returns}


def test_two_replicas_cancelling_at_once_both_see_it_cancelled(
    seed: Seed, postgres_schema: str, stores: list[PostgresStore]
) -> None:
    a = _open(stores, postgres_schema, seed=seed)
    b = _open(stores, postgres_schema, seed=seed)
    number = _order(seed, "processing").number
    with psycopg.connect(postgres_schema) as blocker:
        blocker.execute("SELECT 1 FROM orders WHERE number = %s FOR UPDATE", (number,))
        threads, results = _start_blocked(
            [lambda: a.cancel_order(number), lambda: b.cancel_order(number)], postgres_schema
        )
    first, second = _joined(threads, results)
    assert isinstance(first, Order) and first == second and first.status == "cancelled"


def test_a_cancel_racing_a_shipment_is_refused(seed: Seed, postgres_schema: str, stores: list[PostgresStore]) -> None:
    a = _open(stores, postgres_schema, seed=seed)
    b = _open(stores, postgres_schema, seed=seed)
    number = _order(seed, "processing").number
    with psycopg.connect(postgres_schema) as warehouse:  # ships the order while both replicas try to cancel it
        warehouse.execute("UPDATE orders SET status = 'shipped' WHERE number = %s", (number,))
        threads, results = _start_blocked(
            [lambda: a.cancel_order(number), lambda: b.cancel_order(number)], postgres_schema
        )
    for result in _joined(threads, results):
        assert isinstance(result, ActionRefused) and result.reason == "not_processing", result
    shipped = a.get_order(number)
    assert shipped is not None and shipped.status == "shipped"


# -- connections and errors ----------------------------------------------------------------------------------


def test_a_lost_connection_is_reopened(seed: Seed, postgres_schema: str, stores: list[PostgresStore]) -> None:
    store = _open(stores, postgres_schema, seed=seed)
    number = seed.orders[0].number
    with psycopg.connect(postgres_schema, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'voxcart-brain' AND datname = current_database()"
        ).fetchall()
    assert killed
    assert store.get_order(number) == seed.orders[0]


def test_a_throwaway_server_and_a_server_that_goes_away() -> None:
    if find_binaries() is None:
        pytest.skip("no PostgreSQL binaries to start a server with")
    server = start_postgres()
    try:
        store = PostgresStore(server.url, seed=DEMO)
        assert store.seed_loaded and store.products() == DEMO.products
    finally:
        server.stop()
    assert not server.directory.exists()
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{server.port}"):
        store.get_order(DEMO.orders[0].number)
    store.close()


def test_unreachable_server_names_host_and_port() -> None:
    port = free_port()
    with pytest.raises(StoreUnavailable) as err:
        PostgresStore(f"postgresql://postgres:s3cret@127.0.0.1:{port}/shop", seed=DEMO)
    message = str(err.value)
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}" in message and "refused" in message.lower()
    assert "s3cret" not in message


def test_an_unknown_user_is_a_refused_login(postgres_server: str) -> None:
    host = postgres_server.split("@", 1)[1]
    with pytest.raises(StoreUnavailable) as err:
        PostgresStore(f"postgresql://no_such_role_x:pw@{host}")
    assert "refused the login" in str(err.value) and "no_such_role_x" in str(err.value)
    assert "pw@" not in str(err.value)


def test_a_missing_database_says_how_to_create_it(postgres_server: str) -> None:
    base = postgres_server.rsplit("/", 1)[0]
    with pytest.raises(StoreUnavailable, match="no_such_db_x.*createdb no_such_db_x"):
        PostgresStore(f"{base}/no_such_db_x")


def test_an_empty_database_needs_a_seed(postgres_schema: str) -> None:
    with pytest.raises(StoreUnavailable, match=r"no voxcart store: missing table\(s\) shop, products.*STORE_SEED"):
        PostgresStore(postgres_schema)


def test_tables_without_a_shop_need_a_seed(postgres_schema: str) -> None:
    PostgresStore(postgres_schema, seed=DEMO).close()
    with psycopg.connect(postgres_schema) as conn:
        conn.execute("DELETE FROM shop")
    with pytest.raises(StoreUnavailable, match="no shop in them"):
        PostgresStore(postgres_schema)


def test_a_foreign_table_of_the_same_name_is_refused(postgres_schema: str) -> None:
    with psycopg.connect(postgres_schema) as conn:
        conn.execute("CREATE TABLE orders (id integer PRIMARY KEY)")
    with pytest.raises(StoreUnavailable, match="table orders has no column.*number.*not a voxcart table"):
        PostgresStore(postgres_schema, seed=DEMO)


def test_a_search_path_without_schema_is_explained(postgres_url: str) -> None:
    with pytest.raises(StoreUnavailable, match="no schema of the search_path"):
        PostgresStore(f"{postgres_url}?options=-csearch_path%3Dno_such_schema_x", seed=DEMO)


def test_a_malformed_connection_string_hides_the_password() -> None:
    with pytest.raises(StoreError) as err:
        PostgresStore("postgresql://u:s3cret@[bad/x")
    assert "not a valid PostgreSQL connection string" in str(err.value) and "s3cret" not in str(err.value)
