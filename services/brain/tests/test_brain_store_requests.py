"""The store's caller requests on both backends (SQLite and PostgreSQL, via ``make_store``): address changes and
messages (idempotent, refused by rule)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from voxcart.brain.store import ActionRefused, FixedClock, OrderNotFound, Store
from voxcart.common.seed import Order, Seed

MakeStore = Callable[..., Store]


@pytest.fixture
def store(make_store: MakeStore, seed: Seed, clock: FixedClock) -> Store:
    """This module's stores come from both backends (conftest's ``make_store``), not only SQLite."""
    return make_store(seed, clock)


def _order(seed: Seed, status: str) -> Order:
    return next(o for o in seed.orders if o.status == status)


def test_change_address_of_a_processing_order(seed: Seed, store: Store) -> None:
    order = _order(seed, "processing")
    change = store.change_address(order.number, "  12 oak lane   portland 97205 ", key="CA1:a")
    assert change.order == order.number and change.address == "12 oak lane portland 97205"
    assert change.changed == store.today()
    assert store.change_address(order.number, "12 oak lane portland 97205", key="CA1:a") == change  # replayed
    second = store.change_address(order.number, "4 elm street boston 02139", key="CA1:b")
    assert store.address_changes(order.number) == [change, second]
    assert store.get_order(order.number) == order  # the order itself is unchanged
    assert store.address_changes(_order(seed, "shipped").number) == []


@pytest.mark.parametrize(
    ("status", "reason"),
    [("shipped", "not_processing"), ("delivered", "not_processing"), ("returned", "not_processing"),
     ("cancelled", "cancelled")],
)  # fmt: skip
def test_change_address_refused_once_shipped_or_cancelled(seed: Seed, store: Store, status: str, reason: str) -> None:
    order = _order(seed, status)
    with pytest.raises(ActionRefused) as refused:
        store.change_address(order.number, "12 oak lane portland 97205", key="CA1:x")
    assert refused.value.reason == reason
    assert store.address_changes(order.number) == []


def test_change_address_bad_requests(seed: Seed, store: Store) -> None:
    order = _order(seed, "processing")
    known = {o.number for o in seed.orders}
    missing = next(str(n) for n in range(90000, 99999) if str(n) not in known)
    with pytest.raises(OrderNotFound):
        store.change_address(missing, "12 oak lane", key="k1")
    with pytest.raises(ActionRefused) as empty:
        store.change_address(order.number, "   ", key="k2")
    assert empty.value.reason == "empty"
    store.change_address(order.number, "12 oak lane", key="k3")
    with pytest.raises(ActionRefused) as reused:
        store.change_address(order.number, "99 other road", key="k3")
    assert reused.value.reason == "key_reused"


def test_messages_are_kept_in_order_and_idempotent(seed: Seed, store: Store, clock: FixedClock) -> None:
    assert store.messages() == []
    first = store.leave_message("+15550001111", "Call me about my refund.", key="CA1:message:0", order_number="1")
    clock.advance(seconds=90)
    second = store.leave_message("", " Please  call back ", key="CA2:message:0")
    assert store.leave_message("+15550001111", "Call me about my refund.", key="CA1:message:0") == first
    assert store.messages() == [first, second]
    assert (first.id, second.id) == ("M1", "M2")
    assert second.text == "Please call back" and second.caller_number == "" and second.order_number is None
    assert first.created.tzinfo is not None and second.created - first.created == dt.timedelta(seconds=90)
    with pytest.raises(ActionRefused) as reused:
        store.leave_message("", "something else", key="CA1:message:0")
    assert reused.value.reason == "key_reused"
    with pytest.raises(ActionRefused) as empty:
        store.leave_message("", " ", key="CA3:message:0")
    assert empty.value.reason == "empty"
