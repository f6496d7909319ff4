"""Both store backends (embedded SQLite, PostgreSQL) against both seeds, by the very same tests: look-ups, fuzzy
product names, clock, and guarded actions. PostgreSQL-only behaviour (seed loading, replicas, errors) is in
``test_brain_store_postgres.py``.
"""

from __future__ import annotations

import datetime as dt
import threading
import zoneinfo
from collections.abc import Callable

import pytest

from voxcart.brain.store import (
    ActionRefused,
    FixedClock,
    OrderNotFound,
    PostgresStore,
    SqliteStore,
    Store,
    check_return,
    demo_seed_path,
    phone_key,
)
from voxcart.common.seed import Order, Seed, load_seed

MakeStore = Callable[..., Store]


@pytest.fixture
def store(make_store: MakeStore, seed: Seed, clock: FixedClock) -> Store:
    """This module's stores come from both backends (conftest's ``make_store``), not only SQLite."""
    return make_store(seed, clock)


def _order(seed: Seed, status: str) -> Order:
    return next(o for o in seed.orders if o.status == status)


def _returnable(seed: Seed, store: Store) -> tuple[Order, str]:
    """A delivered order with an item that is returnable the day after delivery."""
    for order in seed.orders:
        if order.status != "delivered" or order.delivered is None:
            continue
        for item in order.items:
            check = check_return(
                order, item.sku, store.product_for_sku(item.sku), seed.policies, order.delivered,
                store.returns_for_order(order.number),
            )  # fmt: skip
            if check.eligible:
                return order, item.sku
    raise AssertionError("seed has no returnable item")


def test_store_satisfies_protocol(seed: Seed, store: Store) -> None:
    assert isinstance(store, SqliteStore | PostgresStore)  # both are checked against Store by mypy
    assert store.info == seed.store and store.policies == seed.policies


def test_lookups_return_the_seed(seed: Seed, store: Store) -> None:
    for order in seed.orders:
        assert store.get_order(order.number) == order
    assert store.get_order("0") is None
    assert store.products() == seed.products
    for customer in seed.customers:
        assert store.get_customer(customer.id) == customer
        mine = store.orders_for_customer(customer.id)
        assert {o.number for o in mine} == {o.number for o in seed.orders if o.customer == customer.id}
        assert [o.placed for o in mine] == sorted((o.placed for o in mine), reverse=True)
    for ret in seed.returns:
        assert ret in store.returns_for_order(ret.order)
    for product in seed.products:
        for variant in product.variants:
            assert store.product_for_sku(variant.sku) == product


def test_customer_by_phone_tolerates_formats(seed: Seed, store: Store) -> None:
    customer = next(c for c in seed.customers if c.phone and c.phone.startswith("+1"))
    assert customer.phone is not None
    local = customer.phone[2:]
    for form in (customer.phone, customer.phone[1:], local, f"({local[:3]}) {local[3:6]}-{local[6:]}"):
        assert store.customer_by_phone(form) == customer, form
    assert store.customer_by_phone("+19999999999") is None
    assert store.customer_by_phone("anonymous") is None
    assert phone_key("+1 555 555 0123") == phone_key("5555550123") == "15555550123"


def test_find_products_by_name_alias_case_and_plural(seed: Seed, store: Store) -> None:
    for product in seed.products:
        for said in (product.name, product.name.upper(), product.name.lower() + "s", f"do you have the {product.name}"):
            assert store.find_products(said)[0].product.id == product.id, said
        for alias in product.aliases:
            top = store.find_products(f"i am looking for {alias}")
            assert top and top[0].exact and product.id in {m.product.id for m in top if m.score == top[0].score}
    assert store.find_products("a surfboard and a kayak") == []


def test_partial_and_misspelt_names(seed: Seed, store: Store) -> None:
    product = max(seed.products, key=lambda p: len(p.name.split()))
    last = product.name.split()[-1]
    assert product.id in {m.product.id for m in store.find_products(last)}
    longest = max(product.name.split(), key=len)
    if len(longest) >= 6:
        typo = longest[:-2] + longest[-1] + longest[-2]  # swap the last two letters
        assert product.id in {m.product.id for m in store.find_products(typo)}


def test_variants_filter(seed: Seed, store: Store) -> None:
    product = next(p for p in seed.products if len({v.color for v in p.variants}) > 1)
    color = product.variants[0].color
    assert color is not None
    got = store.variants(product.id, color=color.upper())
    assert got == [v for v in product.variants if v.color == color]
    size = product.variants[0].size
    if size is not None:
        assert store.variants(product.id, color=color, size=size.lower()) == [product.variants[0]]
    assert store.variants(product.id) == product.variants
    assert store.variants(product.id, color="no such colour") == []


def test_today_is_in_the_store_timezone(seed: Seed, make_store: MakeStore) -> None:
    late_utc = dt.datetime(2030, 6, 1, 3, 30, tzinfo=dt.UTC)
    store = make_store(seed, FixedClock(late_utc))
    expected = late_utc.astimezone(zoneinfo.ZoneInfo(seed.store.timezone)).date()
    assert store.today() == expected == dt.date(2030, 5, 31)  # both seeds are in American zones
    with pytest.raises(ValueError, match="timezone-aware"):
        FixedClock(dt.datetime(2030, 1, 1))


def test_create_return_is_idempotent_by_key(seed: Seed, store: Store, clock: FixedClock) -> None:
    order, sku = _returnable(seed, store)
    assert order.delivered is not None
    clock.now = FixedClock.on(order.delivered + dt.timedelta(days=1), seed.store.timezone).now
    before = store.returns_for_order(order.number)
    first = store.create_return(order.number, sku, key="call-1:return")
    again = store.create_return(order.number, sku, key="call-1:return")
    assert again == first
    assert first.status == "requested" and first.updated == store.today() and first.sku == sku
    assert first.id not in {r.id for r in seed.returns}
    assert store.returns_for_order(order.number) == [*before, first]
    with pytest.raises(ActionRefused) as refused:
        store.create_return(order.number, sku, key="call-2:return")
    assert refused.value.reason == "has_return"
    other = next((i.sku for i in order.items if i.sku != sku), None)
    if other is not None:
        with pytest.raises(ActionRefused) as reused:
            store.create_return(order.number, other, key="call-1:return")
        assert reused.value.reason == "key_reused"


def test_create_return_concurrent_same_key(seed: Seed, store: Store, clock: FixedClock) -> None:
    order, sku = _returnable(seed, store)
    assert order.delivered is not None
    clock.now = FixedClock.on(order.delivered, seed.store.timezone).now
    results = []

    def worker() -> None:
        results.append(store.create_return(order.number, sku, key="same"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.id for r in results}) == 1 and len(results) == 8


def test_create_return_refusals(seed: Seed, store: Store, clock: FixedClock) -> None:
    order, sku = _returnable(seed, store)
    assert order.delivered is not None
    deadline = order.delivered + dt.timedelta(days=seed.policies.return_window_days)
    clock.now = FixedClock.on(deadline + dt.timedelta(days=1), seed.store.timezone).now
    with pytest.raises(ActionRefused) as late:
        store.create_return(order.number, sku, key="late")
    assert late.value.reason == "window_closed"
    clock.now = FixedClock.on(deadline, seed.store.timezone).now  # the last day still counts
    assert store.create_return(order.number, sku, key="last-day").status == "requested"
    shipped = _order(seed, "shipped")
    with pytest.raises(ActionRefused) as early:
        store.create_return(shipped.number, shipped.items[0].sku, key="early")
    assert early.value.reason == "not_delivered"
    with pytest.raises(ActionRefused) as foreign:
        store.create_return(order.number, "NOT-IN-ORDER", key="foreign")
    assert foreign.value.reason == "not_in_order"
    with pytest.raises(OrderNotFound):
        store.create_return("0", sku, key="nothing")


def test_non_returnable_category_is_refused(seed: Seed, store: Store, clock: FixedClock) -> None:
    banned = {c.lower() for c in seed.policies.non_returnable_categories}
    order, sku = next(
        (o, i.sku)
        for o in seed.orders
        for i in o.items
        if o.status == "delivered" and (p := store.product_for_sku(i.sku)) and p.category.lower() in banned
    )
    assert order.delivered is not None
    clock.now = FixedClock.on(order.delivered, seed.store.timezone).now
    with pytest.raises(ActionRefused) as refused:
        store.create_return(order.number, sku, key="banned")
    assert refused.value.reason == "non_returnable"


def test_cancel_only_while_processing(seed: Seed, store: Store) -> None:
    processing = _order(seed, "processing")
    cancelled = store.cancel_order(processing.number)
    assert cancelled.status == "cancelled" and store.get_order(processing.number) == cancelled
    assert store.cancel_order(processing.number) == cancelled  # repeating is harmless
    for status in ("shipped", "delivered", "returned"):
        order = _order(seed, status)
        with pytest.raises(ActionRefused) as refused:
            store.cancel_order(order.number)
        assert refused.value.reason == "not_processing"
        assert store.get_order(order.number) == order
    with pytest.raises(OrderNotFound):
        store.cancel_order("0")


def test_sqlite_stores_are_independent(seed: Seed) -> None:
    a, b = SqliteStore(seed), SqliteStore(seed)  # PostgreSQL replicas share one database instead
    number = _order(seed, "processing").number
    a.cancel_order(number)
    assert b.get_order(number) == _order(seed, "processing")


def test_from_file_and_demo_data(make_store: MakeStore) -> None:
    demo = load_seed(demo_seed_path())
    assert SqliteStore.from_file(demo_seed_path()).products() == demo.products
    store = make_store(demo)
    assert store.info == demo.store
    # The demo store is what the docs describe: order 10023 shipped, for the caller +15555550123.
    order = store.get_order("10023")
    assert order is not None and order.status == "shipped"
    customer = store.customer_by_phone("+15555550123")
    assert customer is not None and customer.id == order.customer
    assert 10 <= len(demo.products) <= 15 and 6 <= len(demo.customers) <= 10 and len(demo.orders) >= 12
    assert {o.status for o in demo.orders} == {"processing", "shipped", "delivered", "cancelled", "returned"}
