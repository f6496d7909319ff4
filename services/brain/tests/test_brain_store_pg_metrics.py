"""``voxcart_provider_requests_total{provider="postgres"}`` on a real PostgreSQL: one request per transaction
attempt, counted when it ends (a query ``ok`` and timed; a connection the server killed ``dropped``, then the
repeated transaction ``ok``)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from prometheus_client import REGISTRY

from voxcart.brain.store import PostgresStore, demo_seed_path
from voxcart.common.seed import load_seed

pytestmark = pytest.mark.postgres

LABELS = {"svc": "brain", "provider": "postgres"}
RESULTS = ("ok", "error", "timeout", "rate_limited", "auth", "dropped", "cancelled")
DEMO = load_seed(demo_seed_path())


def counts() -> dict[str, float]:
    return {
        r: REGISTRY.get_sample_value("voxcart_provider_requests_total", {**LABELS, "result": r}) or 0.0 for r in RESULTS
    }


def delta(before: dict[str, float]) -> dict[str, float]:
    return {r: n - before[r] for r, n in counts().items() if n != before[r]}


@pytest.fixture
def store(postgres_schema: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(postgres_schema, seed=DEMO)
    yield opened
    opened.close()


def test_transactions_are_counted_and_a_killed_connection_is_dropped(
    store: PostgresStore, postgres_schema: str
) -> None:
    number = DEMO.orders[0].number
    before = counts()
    timed = REGISTRY.get_sample_value("voxcart_provider_first_response_seconds_count", LABELS) or 0.0
    assert store.get_order(number) == DEMO.orders[0]
    assert delta(before) == {"ok": 1}
    assert REGISTRY.get_sample_value("voxcart_provider_first_response_seconds_count", LABELS) == timed + 1

    with psycopg.connect(postgres_schema, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'voxcart-brain' AND datname = current_database()"
        ).fetchall()
    assert killed
    before = counts()
    assert store.get_order(number) == DEMO.orders[0]
    assert delta(before) == {"dropped": 1, "ok": 1}
