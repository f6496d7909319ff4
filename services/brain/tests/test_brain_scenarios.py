"""The scenario format, the store facts and the runner (the suite itself is tests/test_scenarios.py)."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from voxcart.brain.language import spell_digits
from voxcart.brain.phrasing import say_date, say_tracking
from voxcart.brain.scenarios import (
    FactMissing,
    Facts,
    ScenarioFailed,
    ScriptError,
    default_today,
    parse_scenarios,
    prepare,
    run_scenario,
)
from voxcart.common.seed import Seed

SCRIPT = """
# a comment
== one
job: order_status
about: a shipped order
caller: {order.shipped.customer.phone}
xfail[other]: only there
> where is order {order.shipped.number|spelled}
< says: {order.shipped.carrier}
< expect: yes_no
> (keys 12#)
> (silence)
< stays
"""


def test_parse_reads_headers_turns_and_checks() -> None:
    (scenario,) = parse_scenarios(SCRIPT, "s.txt")
    assert scenario.name == "one" and scenario.job == "order_status" and scenario.source == "s.txt:3"
    assert scenario.caller == "{order.shipped.customer.phone}" and scenario.xfail == {"other": "only there"}
    assert [s.kind for s in scenario.steps] == ["say", "keys", "silence"]
    assert scenario.steps[1].text == "12#"
    assert [(c.name, c.arg) for c in scenario.steps[0].checks] == [
        ("says", "{order.shipped.carrier}"),
        ("expect", "yes_no"),
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("== a\njob: order_status\n< says: x\n", "s.txt:3: a check ('<') must follow"),
        ("== a\njob: order_status\n> hi\n< sounds: x\n", "s.txt:4: unknown check 'sounds'"),
        ("== a\njob: dancing\n> hi\n", "s.txt:2: unknown job 'dancing'"),
        ("== a\n> hi\n", "s.txt:1: scenario 'a' has no 'job:'"),
        ("== a\njob: return\n", "s.txt:1: scenario 'a' has no turns"),
        ("== a\nwho: me\n", "s.txt:2: expected a header"),
        ("> hi\n", "s.txt:1: expected '== name'"),
        ("== a\njob: return\n> hi\n== a\n", "s.txt:4: duplicate scenario name 'a'"),
        ("== a\njob: return\n> (dance)\n", "s.txt:3: expected '(keys DIGITS)'"),
        ("== a\njob: return\n> hi\njob: cancel\n", "s.txt:4: expected '>' or '<'"),
    ],
)
def test_parse_errors_name_file_and_line(text: str, error: str) -> None:
    with pytest.raises(ScriptError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_scenarios(text, "s.txt")


def test_facts_resolve_roles_fields_and_formats(seed: Seed) -> None:
    facts = Facts(seed, default_today(seed))
    order = next(o for o in seed.orders if o.status == "shipped" and o.tracking and o.carrier and o.eta)
    customer = next(c for c in seed.customers if c.id == order.customer)
    assert facts.resolve("{order.shipped.number|spelled}") == spell_digits(order.number)
    assert facts.resolve("{order.shipped.tracking|tracking}") == say_tracking(order.tracking or "")
    assert order.eta is not None and facts.resolve("{order.shipped.eta|date}") == say_date(order.eta, today=facts.today)
    assert facts.resolve("zip {order.shipped.customer.zip}") == f"zip {customer.zip}"
    stranger = facts.value("order.shipped.stranger")
    assert stranger.id != customer.id and stranger.zip != customer.zip
    assert facts.value("order.unknown.number") not in {o.number for o in seed.orders}
    assert not [o for o in seed.orders if o.number == facts.value("order.unknown.number")]


def test_facts_date_expression(seed: Seed) -> None:
    facts = Facts(seed, default_today(seed))
    delivered = facts.value("order.returnable.delivered")
    window = seed.policies.return_window_days
    expr = "{order.returnable.delivered} + {policies.return_window_days} + 1"
    assert facts.date_expr(expr) == delivered + dt.timedelta(days=window + 1)
    assert facts.date_expr("2026-01-10 - 3 + 1") == dt.date(2026, 1, 8)
    with pytest.raises(ValueError, match="expected 'DATE"):
        facts.date_expr("tomorrow")


def test_facts_errors(seed: Seed) -> None:
    facts = Facts(seed, default_today(seed))
    with pytest.raises(ValueError, match="unknown order role 'lost'"):
        facts.resolve("{order.lost.number}")
    with pytest.raises(ValueError, match="has no field 'colour'"):
        facts.resolve("{order.shipped.colour}")
    with pytest.raises(ValueError, match="unknown format 'loud'"):
        facts.resolve("{order.shipped.number|loud}")
    with pytest.raises(ValueError, match="unknown root"):
        facts.resolve("{warehouse.name}")
    bare = msgspec.structs.replace(seed, orders=[o for o in seed.orders if o.status != "processing"])
    with pytest.raises(FactMissing, match="no order.processing"):
        Facts(bare, default_today(seed)).resolve("{order.processing.number}")


def test_run_reports_the_failed_check_with_the_transcript(seed: Seed) -> None:
    (scenario,) = parse_scenarios(
        "== leaky\njob: verification\ncaller: {order.shipped.customer.phone}\n"
        "> where is my order {order.shipped.number|spelled}\n< hides: order.shipped\n",
        "leaky.txt",
    )
    with pytest.raises(ScenarioFailed) as failed:
        run_scenario(prepare(scenario, seed))
    message = str(failed.value)
    assert "leaky.txt:1" in message and "check at line 5 (hides: order.shipped)" in message
    assert "caller: where is my order" in message and "agent:" in message


def test_run_checks_store_state(seed: Seed) -> None:
    done, wrong = parse_scenarios(
        "== cancel\njob: cancel\ncaller: {order.processing.customer.phone}\n"
        "> cancel order {order.processing.number|spelled}\n> yes\n"
        "< status: {order.processing.number} cancelled\n< returns: {order.processing.number} +0\n"
        "== wrong\njob: cancel\ncaller: {order.processing.customer.phone}\n"
        "> cancel order {order.processing.number|spelled}\n< status: {order.processing.number} cancelled\n",
        "c.txt",
    )
    run_scenario(prepare(done, seed))
    with pytest.raises(ScenarioFailed, match="to be 'cancelled', it is 'processing'"):
        run_scenario(prepare(wrong, seed))
