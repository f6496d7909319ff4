"""The store seed format: what is accepted, and how a broken file is refused (source + JSON path)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxcart.common.seed import ORDER_STATUSES, Seed, SeedError, load_seed, parse_seed


def _valid() -> dict[str, Any]:
    return {
        "store": {
            "name": "Test Shop",
            "timezone": "Europe/Berlin",
            "hours": "daily, 8 to 8",
            "handoff_number": "+4930123456",
        },
        "policies": {
            "return_window_days": 14,
            "non_returnable_categories": ["socks"],
            "shipping": [{"method": "post", "days": "2 days", "price": 4}],
            "faq": [{"question": "Is it nice?", "answer": "Very."}],
        },
        "products": [
            {
                "id": "A",
                "name": "Alpha Cap",
                "aliases": ["cap"],
                "category": "hats",
                "price": 10,
                "variants": [
                    {"sku": "A-1", "color": "red", "size": "M", "stock": 2},
                    {"sku": "A-2", "color": "red", "size": "L", "stock": 0, "restock_date": "2030-01-02"},
                ],
            },
            {"id": "B", "name": "Beta Socks", "category": "socks", "price": 5.5, "variants": [{"sku": "B-1"}]},
        ],
        "customers": [
            {"id": "u1", "name": "Ann Example", "phone": "+4930999999", "email": "ann@example.com", "zip": "10115"},
            {"id": "u2", "name": "Bob Example"},
        ],
        "orders": [
            {
                "number": "777",
                "customer": "u1",
                "placed": "2030-01-01",
                "status": "delivered",
                "items": [{"sku": "A-1", "qty": 1, "price": 10}, {"sku": "B-1", "qty": 3, "price": 5.5}],
                "carrier": "DHL",
                "tracking": "JJD000",
                "eta": "2030-01-04",
                "delivered": "2030-01-03",
            },
            {
                "number": "0778",
                "customer": "u2",
                "placed": "2030-01-05",
                "status": "processing",
                "items": [{"sku": "A-2", "price": 10}],
            },
        ],  # fmt: skip
        "returns": [
            {
                "id": "R9",
                "order": "777",
                "sku": "B-1",
                "status": "received",
                "refund_amount": 16.5,
                "updated": "2030-01-09",
            }
        ],
    }


def _parse(doc: dict[str, Any]) -> Seed:
    return parse_seed(json.dumps(doc).encode(), source="store.json")


def test_valid_seed_is_typed() -> None:
    seed = _parse(_valid())
    assert seed.store.name == "Test Shop"
    assert seed.policies.shipping[0].price == 4.0
    assert seed.products[0].variants[1].restock_date == dt.date(2030, 1, 2)
    assert seed.products[1].variants[0].color is None and seed.products[1].variants[0].stock == 0
    order = seed.orders[0]
    assert order.delivered == dt.date(2030, 1, 3) and order.items[1].qty == 3
    assert seed.orders[1].number == "0778" and seed.orders[1].items[0].qty == 1
    assert seed.returns[0].refund_amount == 16.5
    assert seed.customers[1].phone is None


def test_unknown_fields_are_ignored() -> None:
    doc = _valid()
    doc["version"] = 3
    doc["store"]["logo"] = "owl.png"
    doc["orders"][0]["gift_message"] = {"to": "x"}
    doc["products"][0]["variants"][0]["weight_g"] = 120
    assert _parse(doc) == _parse(_valid())


def test_str_input_and_default_source() -> None:
    assert parse_seed(json.dumps(_valid())).store.timezone == "Europe/Berlin"
    with pytest.raises(SeedError, match=r"^<seed>: "):
        parse_seed("{}")


_DELETE = object()

_BROKEN: list[tuple[str, tuple[str | int, ...], object, str]] = [
    (
        "bad order status",
        ("orders", 1, "status"),
        "lost",
        r"store\.json: \$\.orders\[1\]\.status: expected one of processing, shipped, delivered, cancelled, returned",
    ),
    ("bad return status", ("returns", 0, "status"), "gone", r"\$\.returns\[0\]\.status: expected one of"),
    ("bad date", ("orders", 0, "eta"), "26/11/2030", r"\$\.orders\[0\]\.eta: expected an ISO date"),
    ("impossible date", ("orders", 0, "placed"), "2030-02-30", r"\$\.orders\[0\]\.placed: .*ISO date"),
    ("missing field", ("store", "name"), _DELETE, r"\$\.store: missing required field 'name'"),
    ("wrong type", ("policies", "return_window_days"), "30", r"return_window_days: expected `int`"),
    ("negative stock", ("products", 0, "variants", 0, "stock"), -1, r"variants\[0\]\.stock: expected `int` >= 0"),
    ("zero qty", ("orders", 0, "items", 0, "qty"), 0, r"\$\.orders\[0\]\.items\[0\]\.qty"),
    ("no items", ("orders", 0, "items"), [], r"\$\.orders\[0\]\.items"),
    ("unknown customer", ("orders", 1, "customer"), "u9", r"\$\.orders\[1\]\.customer: unknown customer 'u9'"),
    ("unknown sku", ("orders", 0, "items", 1, "sku"), "Z-9", r"\$\.orders\[0\]\.items\[1\]\.sku: unknown sku 'Z-9'"),
    (
        "duplicate sku",
        ("products", 1, "variants", 0, "sku"),
        "A-1",
        r"\$\.products\[1\]\.variants\[0\]\.sku: duplicate sku 'A-1' "
        r"\(first at \$\.products\[0\]\.variants\[0\]\.sku\)",
    ),
    ("duplicate product", ("products", 1, "id"), "A", r"\$\.products\[1\]\.id: duplicate product id"),
    ("duplicate order", ("orders", 1, "number"), "777", r"\$\.orders\[1\]\.number: duplicate order number"),
    ("non-digit order number", ("orders", 1, "number"), "A-778", r"\$\.orders\[1\]\.number: .*digits"),
    ("return of unknown order", ("returns", 0, "order"), "999", r"\$\.returns\[0\]\.order: unknown order '999'"),
    ("return sku not in order", ("returns", 0, "sku"), "A-2", r"\$\.returns\[0\]\.sku: sku 'A-2' is not an item"),
    ("bad timezone", ("store", "timezone"), "Mars/Olympus", r"\$\.store\.timezone: unknown time zone"),
    ("bad phone", ("customers", 0, "phone"), "555-0123", r"\$\.customers\[0\]\.phone: expected an E\.164"),
    ("bad handoff", ("store", "handoff_number"), "0", r"\$\.store\.handoff_number"),
    ("bad email", ("customers", 0, "email"), "ann", r"\$\.customers\[0\]\.email"),
    ("delivered without date", ("orders", 0, "delivered"), None, r"\$\.orders\[0\]\.delivered: a delivered order"),
    ("eta before placed", ("orders", 0, "eta"), "2029-12-31", r"\$\.orders\[0\]\.eta: 2029-12-31 is before"),
    ("not an object", ("orders",), {"a": 1}, r"\$\.orders: expected `array`, got `object`"),
    ("duplicate customer", ("customers", 1, "id"), "u1", r"\$\.customers\[1\]\.id: duplicate customer id 'u1'"),
    ("delivered before placed", ("orders", 0, "delivered"), "2029-01-01", r"\$\.orders\[0\]\.delivered: 2029-01-01 is"),
    ("bad restock date", ("products", 0, "variants", 1, "restock_date"), "soon", r"variants\[1\]\.restock_date: .*ISO"),
    ("bad return date", ("returns", 0, "updated"), 20300109, r"\$\.returns\[0\]\.updated: expected `date`"),
    ("missing return date", ("returns", 0, "updated"), _DELETE, r"\$\.returns\[0\]: missing required field 'updated'"),
    ("missing nested field", ("orders", 1, "placed"), _DELETE, r"\$\.orders\[1\]: missing required field 'placed'"),
    ("negative price", ("products", 1, "price"), -5.5, r"\$\.products\[1\]\.price: expected `float` >= 0"),
    ("empty name", ("store", "name"), "", r"\$\.store\.name: expected `str` of length >= 1"),
    ("bool for int", ("policies", "return_window_days"), True, r"return_window_days: expected `int`, got `bool`"),
    ("list item of wrong type", ("customers", 1), "Bob", r"\$\.customers\[1\]: expected `object`, got `str`"),
    ("status of wrong type", ("orders", 0, "status"), 3, r"\$\.orders\[0\]\.status: expected `str`, got `int`"),
    ("no variants", ("products", 1, "variants"), [], r"\$\.products\[1\]\.variants: expected `array` of length >= 1"),
    ("huge window", ("policies", "return_window_days"), 10**9, r"\$\.policies\.return_window_days: .*<= 3650"),
    (
        "huge stock",
        ("products", 0, "variants", 0, "stock"),
        2**64,
        r"variants\[0\]\.stock: expected `int` <= 1000000000",
    ),
]


@pytest.mark.parametrize(("path", "value", "message"), [c[1:] for c in _BROKEN], ids=[c[0] for c in _BROKEN])
def test_broken_seed_names_file_and_path(path: tuple[str | int, ...], value: object, message: str) -> None:
    doc = copy.deepcopy(_valid())
    parent: Any = doc
    for key in path[:-1]:
        parent = parent[key]
    if value is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with pytest.raises(SeedError, match=message) as info:
        _parse(doc)
    assert str(info.value).startswith("store.json: ")


def test_several_problems_are_counted() -> None:
    doc = _valid()
    doc["orders"][0]["customer"] = "nobody"
    doc["orders"][1]["customer"] = "nobody"
    with pytest.raises(SeedError, match=r"orders\[0\]\.customer: .*\(and 1 more problem\(s\)\)"):
        _parse(doc)


def test_invalid_json_reports_line_and_column() -> None:
    with pytest.raises(SeedError, match=r"^shop\.json: not valid JSON: .* at line 3, column 5"):
        parse_seed(b'{\n  "store": {\n    ,\n  }\n}', source="shop.json")


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(SeedError, match=r"^s\.json: \$: expected `object`, got `array`"):
        parse_seed(b"[]", source="s.json")


def test_load_seed_from_file(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    path.write_text(json.dumps(_valid()))
    assert load_seed(path) == _parse(_valid())
    doc = _valid()
    doc["orders"][0]["status"] = "teleported"
    path.write_text(json.dumps(doc))
    with pytest.raises(SeedError, match=rf"^{path}: \$\.orders\[0\]\.status"):
        load_seed(path)


def test_missing_file() -> None:
    with pytest.raises(SeedError, match=r"^/nonexistent/store\.json: cannot read the seed file"):
        load_seed("/nonexistent/store.json")


def test_every_documented_status_is_accepted() -> None:
    for status in ORDER_STATUSES:
        doc = _valid()
        doc["orders"][1]["status"] = status
        doc["orders"][1]["delivered"] = "2030-01-07"
        assert _parse(doc).orders[1].status == status


# -- generated bad input -------------------------------------------------------------------------------------

_FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=1500)


def _paths(doc: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    items: list[tuple[str | int, Any]] = []
    if isinstance(doc, dict):
        items = list(doc.items())
    elif isinstance(doc, list):
        items = list(enumerate(doc))
    out: list[tuple[str | int, ...]] = []
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _json_path(path: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


@_FUZZ
@given(path=st.sampled_from(_paths(_valid())), delete=st.booleans())
def test_common_seed_any_field_broken_is_refused_at_its_path(path: tuple[str | int, ...], delete: bool) -> None:
    """Any field removed, or given a value of another JSON type: refused naming that field (or its object)."""
    doc = _valid()
    parent: Any = doc
    for key in path[:-1]:
        parent = parent[key]
    where, key = _json_path(path), path[-1]
    if delete:
        del parent[key]
    else:  # an object where anything but an object is expected, and an array where an object is
        parent[key] = [1] if isinstance(parent[key], dict) else {"x": 1}
    try:
        _parse(doc)
    except SeedError as exc:
        message = str(exc)
        assert message.startswith("store.json: $"), message
        if not delete:
            assert f" {where}: expected " in message, message
        elif isinstance(key, str):  # (a deleted list item shifts the others: any path may be named then)
            missing = f" {_json_path(path[:-1])}: missing required field '{key}'"
            dangling = re.search(r": (unknown (customer|sku|order) |sku .* is not an item of order )", message)
            assert f" {where}: " in message or missing in message or dangling, message
        return
    assert delete, "a value of the wrong type was accepted"


@_FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200),
        st.sampled_from(["[" * 5000, '{"store":' * 3000, '{"x":' + "[" * 5000 + "]" * 5000 + "}", '"\ud800"']),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(list(_valid())), inner, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda value: json.dumps(value)),
    )
)
def test_common_seed_junk_raises_only_seed_error(data: bytes | str) -> None:
    with pytest.raises(SeedError, match=r"^store\.json: "):
        parse_seed(data, source="store.json")
