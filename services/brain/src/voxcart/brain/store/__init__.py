"""The shop's data as the dialog sees it: the :class:`Store` interface, its embedded SQLite and PostgreSQL
implementations, and :func:`build_store`, which opens the one the settings name.

Invariants: the dialog depends only on :class:`Store`; "today" is always ``store.today()`` (the store's clock in
its timezone); return eligibility is decided by :func:`check_return` for both what is said and what is done.
"""

from __future__ import annotations

import datetime as dt
from importlib.resources import as_file, files
from pathlib import Path
from typing import Final

from voxcart.brain.store._base import (
    ActionRefused,
    AddressChange,
    Clock,
    FixedClock,
    Message,
    OrderNotFound,
    ProductMatch,
    Store,
    StoreError,
    StoreUnavailable,
    system_clock,
)
from voxcart.brain.store._build import build_store
from voxcart.brain.store._match import COMMON_COLORS, match_colors, match_products, match_size, unknown_colors
from voxcart.brain.store._policy import (
    CLOSED_RETURN_STATUSES,
    ReturnCheck,
    ReturnVerdict,
    check_return,
    open_return_for,
)
from voxcart.brain.store._postgres import PostgresStore
from voxcart.brain.store._rows import phone_key
from voxcart.brain.store._sqlite import SqliteStore

__all__ = [
    "CLOSED_RETURN_STATUSES",
    "COMMON_COLORS",
    "DEMO_TODAY",
    "ActionRefused",
    "AddressChange",
    "Clock",
    "FixedClock",
    "Message",
    "OrderNotFound",
    "PostgresStore",
    "ProductMatch",
    "ReturnCheck",
    "ReturnVerdict",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "build_store",
    "check_return",
    "demo_seed_path",
    "match_colors",
    "match_products",
    "match_size",
    "open_return_for",
    "phone_key",
    "system_clock",
    "unknown_colors",
]

DEMO_TODAY: Final = dt.date(2026, 11, 20)
"""The date the demo store's data is written around (order 10023 shipped, arriving the 26th)."""


def demo_seed_path() -> Path:
    """Path of the demo store seed shipped inside the package (``voxcart/brain/data/demo_store.json``)."""
    resource = files("voxcart.brain").joinpath("data", "demo_store.json")
    with as_file(resource) as path:
        return Path(path)
