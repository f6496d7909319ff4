"""Facts of a store that scenarios name by role, so one scenario runs against any store.

A placeholder is ``{path}`` or ``{path|format}``. A path starts at a root and follows fields of the seed's
Structs (:mod:`voxcart.common.seed`) or the derived fields below, separated by dots:

- roots: ``store`` (:class:`StoreInfo`), ``policies``, ``order.<role>``, ``variant.<role>``,
  ``product.<role>``; roles are listed in :data:`ORDER_ROLES`, :data:`VARIANT_ROLES` and
  :data:`PRODUCT_ROLES`;
- derived: on an order ``customer``, ``item`` (the product of its first line), ``eligible`` (the product of
  its first item returnable on the day after delivery), ``banned`` (the product of an item of a
  non-returnable category), ``ret`` (its first return), ``total``, ``stranger`` (another customer with a
  different ZIP code and email); on a return ``product``; on a variant ``product`` and ``sibling`` (an in-stock
  variant of the same product in the same colour, else the same size); on a product ``missing_color`` (a
  common colour it does not come in); on a customer ``first_name``; on policies ``unshipped_country`` (a
  country it does not ship to, by name); on a list ``first`` and ``last``.

Formats (:data:`FORMATS`) say a value the way the caller or the agent does: ``spelled`` ("one zero zero two
three"), ``said`` ("1 0 0 2 3"), ``tracking``, ``words`` ("ten thousand twenty three"), ``date``, ``day``,
``price``, ``size``, ``spoken``, ``email`` ("dana at example dot com"), ``lower``.

Invariants: roles pick the first matching entity in seed order, so a store always resolves the same way; a
fact the store does not have raises :class:`FactMissing` (the scenario does not apply to that store), never
a guess.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import Any, Final

import msgspec

from voxcart.brain.language import spell_digits, spoken_form
from voxcart.brain.numbers import number_words
from voxcart.brain.phrasing import country_name, say_date, say_day, say_order_number, say_price, say_size, say_tracking
from voxcart.brain.store import COMMON_COLORS, check_return, match_products
from voxcart.common.seed import Customer, Order, Policies, Product, Return, Seed, Variant

__all__ = ["FORMATS", "ORDER_ROLES", "PRODUCT_ROLES", "VARIANT_ROLES", "FactMissing", "Facts"]

_PLACEHOLDER: Final = re.compile(r"\{([^{}]+)\}")
_DATE_TERM: Final = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})((?:\s*[+-]\s*\d+)*)\s*$")
_UNSOLD: Final = ("surfboard", "lawn mower", "grand piano", "kayak", "telescope", "microwave oven")
_COUNTRIES: Final = ("MX", "GB", "JP", "AU", "DE", "FR")


class FactMissing(LookupError):
    """The store has no entity or value for a placeholder's path."""


class Facts:
    """Resolves placeholders against one store's seed on one day.

    Args:
        seed: the store's data.
        today: today's date for the scenario (for date formats and today-dependent roles).
    """

    def __init__(self, seed: Seed, today: dt.date) -> None:
        self.seed = seed
        self.today = today
        self._products = {p.id: p for p in seed.products}
        self._by_sku = {v.sku: p for p in seed.products for v in p.variants}
        self._customers = {c.id: c for c in seed.customers}

    # -- resolving -------------------------------------------------------------------------------------------

    def resolve(self, template: str) -> str:
        """``template`` with every ``{path|format}`` replaced.

        Raises:
            FactMissing: a path has no value in this store.
            ValueError: an unknown root, field or format.
        """
        return _PLACEHOLDER.sub(lambda m: self._placeholder(m.group(1)), template)

    def _placeholder(self, inner: str) -> str:
        path, _, fmt = inner.partition("|")
        value = self.value(path.strip())
        fmt = fmt.strip()
        if not fmt:
            return value.isoformat() if isinstance(value, dt.date) else str(value)
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r} in {{{inner}}} (known: {', '.join(FORMATS)})")
        return FORMATS[fmt](self, value)

    def value(self, path: str) -> Any:
        """The value at ``path`` (see the module docstring).

        Raises:
            FactMissing: no such entity or an empty value.
            ValueError: an unknown root or field.
        """
        parts = path.split(".")
        root, rest = parts[0], parts[1:]
        value: Any
        if root == "store":
            value = self.seed.store
        elif root == "policies":
            value = self.seed.policies
        elif root in ("order", "variant", "product"):
            if not rest:
                raise ValueError(f"{path!r}: {root} needs a role, e.g. {root}.{next(iter(_ROLES[root]))}")
            role, rest = rest[0], rest[1:]
            if role not in _ROLES[root]:
                raise ValueError(f"{path!r}: unknown {root} role {role!r} (known: {', '.join(_ROLES[root])})")
            value = _ROLES[root][role](self)
            if value is None:
                raise FactMissing(f"this store has no {root}.{role}")
        else:
            raise ValueError(f"{path!r}: unknown root {root!r} (known: store, policies, order, variant, product)")
        where = ".".join(parts[: len(parts) - len(rest)])
        for name in rest:
            where = f"{where}.{name}"
            value = self._field(value, name, where)
        if value is None or value == "" or value == []:
            raise FactMissing(f"this store has no value for {path}")
        return value

    def _field(self, value: Any, name: str, where: str) -> Any:
        derived = _DERIVED.get((type(value), name))
        if derived is not None:
            result = derived(self, value)
        elif isinstance(value, list) and name in ("first", "last"):
            result = (value[0] if name == "first" else value[-1]) if value else None
        elif isinstance(value, msgspec.Struct) and name in value.__struct_fields__:
            result = getattr(value, name)
        else:
            raise ValueError(f"{where!r}: {type(value).__name__} has no field {name!r}")
        if result is None:
            raise FactMissing(f"this store has no value for {where}")
        return result

    def date_expr(self, expr: str) -> dt.date:
        """Evaluate a ``today:`` header: a date placeholder plus or minus whole days.

        Example: ``{order.returnable.delivered} + {policies.return_window_days} + 1``.

        Raises:
            FactMissing: a placeholder has no value in this store.
            ValueError: the expression is not a date followed by ``+ N``/``- N`` terms.
        """
        resolved = self.resolve(expr)
        match = _DATE_TERM.match(resolved)
        if match is None:
            raise ValueError(f"today: expected 'DATE + N - M', got {resolved!r} (from {expr!r})")
        days = sum(int(t.replace(" ", "")) for t in re.findall(r"[+-]\s*\d+", match.group(2)))
        return dt.date.fromisoformat(match.group(1)) + dt.timedelta(days=days)

    # -- entities ----------------------------------------------------------------------------------------------

    def customer(self, order: Order) -> Customer | None:
        """The customer of ``order``."""
        return self._customers.get(order.customer)

    def product_for_sku(self, sku: str) -> Product | None:
        """The product one of whose variants has ``sku``."""
        return self._by_sku.get(sku)

    def returns_of(self, order: Order) -> list[Return]:
        """The seed's returns on ``order``."""
        return [r for r in self.seed.returns if r.order == order.number]

    def eligible_skus(self, order: Order) -> list[str]:
        """SKUs of ``order`` returnable on the day after its delivery (none if not delivered)."""
        if order.delivered is None:
            return []
        day = order.delivered + dt.timedelta(days=1)
        returns = self.returns_of(order)
        policies = self.seed.policies
        skus = dict.fromkeys(i.sku for i in order.items)
        return [s for s in skus if check_return(order, s, self.product_for_sku(s), policies, day, returns).eligible]

    def banned_skus(self, order: Order) -> list[str]:
        """SKUs of ``order`` whose product's category the policies exclude from returns."""
        banned = {c.lower() for c in self.seed.policies.non_returnable_categories}
        return [i.sku for i in order.items if (p := self.product_for_sku(i.sku)) and p.category.lower() in banned]

    def orders(self, status: str | None = None) -> Iterator[Order]:
        """Orders in seed order, optionally only those of ``status``."""
        return (o for o in self.seed.orders if status is None or o.status == status)


def _two_way(product: Product) -> bool:
    return (
        len({v.color for v in product.variants if v.color}) > 1
        and len({v.size for v in product.variants if v.size}) > 1
    )


def _variants(facts: Facts, keep: Callable[[Product, Variant], bool]) -> Variant | None:
    return next((v for p in facts.seed.products if _two_way(p) for v in p.variants if keep(p, v)), None)


def _unknown_number(facts: Facts) -> str | None:
    known = {o.number for o in facts.seed.orders}
    length = max((len(n) for n in known), default=5)
    for n in range(10**length - 1, 10 ** (length - 1), -7):
        number = str(n)
        if number not in known and number[1:] not in known and not number.startswith("4"):
            return number
    return None


ORDER_ROLES: Final[dict[str, Callable[[Facts], Any]]] = {
    "processing": lambda f: next(f.orders("processing"), None),
    "shipped": lambda f: next((o for o in f.orders("shipped") if o.tracking and o.carrier and o.eta), None),
    "delivered": lambda f: next((o for o in f.orders("delivered") if o.delivered), None),
    "cancelled": lambda f: next(f.orders("cancelled"), None),
    "returned": lambda f: next(f.orders("returned"), None),
    "returnable": lambda f: next(
        (o for o in f.orders("delivered") if len(f.eligible_skus(o)) == 1 == len({i.sku for i in o.items})), None
    ),
    "non_returnable": lambda f: next((o for o in f.orders("delivered") if f.banned_skus(o)), None),
    "multi_item": lambda f: next(
        (o for o in f.orders("delivered") if len({i.sku for i in o.items}) > 1 and f.eligible_skus(o)), None
    ),
    "refunded": lambda f: next((o for o in f.orders() if any(r.status == "refunded" for r in f.returns_of(o))), None),
    "return_open": lambda f: next(
        (
            o
            for o in f.orders()
            if any(r.status in ("requested", "pending", "approved", "in_transit", "received") for r in f.returns_of(o))
        ),
        None,
    ),
    "no_return": lambda f: next((o for o in f.orders("delivered") if o.delivered and not f.returns_of(o)), None),
    "unknown": lambda f: (
        (n := _unknown_number(f)) and Order(number=n, customer="", placed=f.today, status="processing", items=[])
    ),
}
"""Order roles: the first order of the seed that fits (``unknown`` is a number no order has)."""

VARIANT_ROLES: Final[dict[str, Callable[[Facts], Any]]] = {
    "in_stock": lambda f: _variants(f, lambda p, v: v.stock > 3 and bool(v.color and v.size)),
    "restocking": lambda f: _variants(
        f, lambda p, v: v.stock == 0 and v.restock_date is not None and v.restock_date > f.today + dt.timedelta(days=1)
    ),
    "no_restock": lambda f: _variants(f, lambda p, v: v.stock == 0 and v.restock_date is None),
}
"""Variants (of products that come in several colours and sizes): in stock, out with or without a date."""

PRODUCT_ROLES: Final[dict[str, Callable[[Facts], Any]]] = {
    "first": lambda f: next(iter(f.seed.products), None),
    "aliased": lambda f: next((p for p in f.seed.products if p.aliases), None),
    "unsold": lambda f: next((n for n in _UNSOLD if not match_products(n, f.seed.products)), None),
}
"""Products: the first of the catalogue, the first with an alias, and ``unsold``, a thing the shop doesn't sell."""

_ROLES: Final[dict[str, dict[str, Callable[[Facts], Any]]]] = {
    "order": ORDER_ROLES,
    "variant": VARIANT_ROLES,
    "product": PRODUCT_ROLES,
}


def _sibling(facts: Facts, variant: Variant) -> Variant | None:
    product = facts.product_for_sku(variant.sku)
    if product is None:
        return None
    others = [v for v in product.variants if v.stock > 0 and v.sku != variant.sku]
    return next((v for v in others if v.color == variant.color), None) or next(
        (v for v in others if v.size == variant.size), None
    )


def _stranger(facts: Facts, order: Order) -> Customer | None:
    mine = facts.customer(order)
    return next(
        (
            c
            for c in facts.seed.customers
            if c.id != order.customer
            and c.zip
            and c.email
            and (mine is None or (c.zip != mine.zip and c.email != mine.email))
        ),
        None,
    )


def _missing_color(facts: Facts, product: Product) -> str | None:
    has = {(v.color or "").lower() for v in product.variants}
    return next((c for c in ("purple", "orange", "pink", "teal", "gold") if c in COMMON_COLORS and c not in has), None)


def _unshipped(facts: Facts, policies: Policies) -> str | None:
    ships = {c.upper() for c in policies.ships_to}
    return next((country_name(c) for c in _COUNTRIES if ships and c not in ships), None)


_DERIVED: Final[dict[tuple[type, str], Callable[[Facts, Any], Any]]] = {
    (Order, "customer"): lambda f, o: f.customer(o),
    (Order, "item"): lambda f, o: f.product_for_sku(o.items[0].sku) if o.items else None,
    (Order, "eligible"): lambda f, o: next((f.product_for_sku(s) for s in f.eligible_skus(o)), None),
    (Order, "banned"): lambda f, o: next((f.product_for_sku(s) for s in f.banned_skus(o)), None),
    (Order, "ret"): lambda f, o: next(iter(f.returns_of(o)), None),
    (Order, "total"): lambda f, o: sum(i.price * i.qty for i in o.items),
    (Order, "stranger"): _stranger,
    (Return, "product"): lambda f, r: f.product_for_sku(r.sku),
    (Variant, "product"): lambda f, v: f.product_for_sku(v.sku),
    (Variant, "sibling"): _sibling,
    (Product, "missing_color"): _missing_color,
    (Customer, "first_name"): lambda f, c: c.name.split()[0],
    (Policies, "unshipped_country"): _unshipped,
}


def _email(value: Any) -> str:
    local, _, domain = str(value).partition("@")
    return f"{local} at {domain}".replace(".", " dot ").replace("  ", " ")


FORMATS: Final[dict[str, Callable[[Facts, Any], str]]] = {
    "spelled": lambda f, v: spell_digits(str(v)),
    "said": lambda f, v: say_order_number(str(v)),
    "tracking": lambda f, v: say_tracking(str(v)),
    "words": lambda f, v: number_words(int(v)),
    "date": lambda f, v: say_date(v, today=f.today),
    "day": lambda f, v: say_day(v, today=f.today),
    "price": lambda f, v: say_price(float(v)),
    "size": lambda f, v: say_size(str(v)),
    "spoken": lambda f, v: spoken_form(str(v)),
    "email": lambda f, v: _email(v),
    "lower": lambda f, v: str(v).lower(),
}
"""How a value is put into text."""
