"""Running a scenario against a store: resolve it, drive the dialog by text, check every reply.

Invariants:
- :func:`prepare` resolves every placeholder before anything runs, so a scenario that needs a fact the store
  lacks fails with :class:`FactMissing` without a turn taken (the caller decides whether that is a skip).
- Each run gets a fresh :class:`SqliteStore` on the seed and a :class:`FixedClock` at the scenario's day and
  time, so runs are independent and deterministic.
- A failed check raises :class:`ScenarioFailed` with the scenario's and the check's lines and the transcript.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Final
from zoneinfo import ZoneInfo

from voxcart.brain.dialog import Conversation, Dialog, Reply
from voxcart.brain.scenarios._facts import Facts
from voxcart.brain.scenarios._script import Check, Scenario, Step
from voxcart.brain.store import FixedClock, SqliteStore
from voxcart.common.seed import Order, Seed

__all__ = ["DEFAULT_HOUR", "Prepared", "ScenarioFailed", "default_today", "prepare", "run_scenario"]

DEFAULT_HOUR: Final = 11
"""The hour of the day scenarios run at unless they say ``time:`` (the stores under test are open then)."""

_STATUS_PHRASES: Final[dict[str, tuple[str, ...]]] = {
    "processing": ("being prepared", "hasn't shipped", "not shipped"),
    "shipped": ("has shipped", "on its way", "should arrive", "running late", "due to arrive"),
    "delivered": ("delivered",),
    "cancelled": ("cancelled", "canceled"),
    "returned": ("returned",),
}
_DIGIT_WORDS: Final = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine".split())}
_STORE_CHECK: Final = {"status": re.compile(r"^\S+ [a-z_]+$"), "returns": re.compile(r"^\S+ [+-]?\d+$")}
_STORE_FORM: Final = {"status": "'ORDER STATUS'", "returns": "'ORDER +N'"}
_KEYPAD: Final = re.compile(r"^[0-9*#]+$")
_TIME: Final = re.compile(r"^(\d{1,2}):(\d{2})$")


class ScenarioFailed(AssertionError):
    """A reply did not meet a check; the message holds the scenario, the check and the transcript."""


@dataclass
class Prepared:
    """A scenario resolved against one store: texts and check arguments with the store's facts filled in."""

    scenario: Scenario
    seed: Seed
    today: dt.date
    hour: int
    minute: int
    caller: str
    steps: list[tuple[Step, str, list[tuple[Check, str]]]] = field(default_factory=list)
    """Each step with its resolved text and its checks with resolved arguments."""
    hidden: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    """For each ``hides`` check (by line), the private details as (what, text) pairs."""


def default_today(seed: Seed) -> dt.date:
    """The day scenarios run on unless they say ``today:``: two days after the latest order was placed."""
    return max((o.placed for o in seed.orders), default=dt.date(2026, 1, 1)) + dt.timedelta(days=2)


def prepare(scenario: Scenario, seed: Seed) -> Prepared:
    """Resolve a scenario against a store.

    Raises:
        FactMissing: the store lacks a fact the scenario needs.
        ValueError: a malformed placeholder, ``today:`` or ``time:``.
    """
    base = Facts(seed, default_today(seed))
    today = base.date_expr(scenario.today) if scenario.today else base.today
    facts = Facts(seed, today)
    hour, minute = DEFAULT_HOUR, 0
    if scenario.time:
        match = _TIME.match(scenario.time)
        if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise ValueError(f"{scenario.source}: time: expected HH:MM, got {scenario.time!r}")
        hour, minute = int(match.group(1)), int(match.group(2))
    prepared = Prepared(
        scenario=scenario,
        seed=seed,
        today=today,
        hour=hour,
        minute=minute,
        caller=facts.resolve(scenario.caller) if scenario.caller else "",
    )
    for step in scenario.steps:
        checks = [(c, facts.resolve(c.arg)) for c in step.checks]
        for check, arg in checks:
            if check.name in ("status", "returns") and not _STORE_CHECK[check.name].match(arg):
                raise ValueError(f"{scenario.source}: line {check.line}: {check.name} needs {_STORE_FORM[check.name]}")
            if check.name == "hides":
                order = facts.value(check.arg)
                if not isinstance(order, Order):
                    raise ValueError(f"line {check.line}: hides needs an order role, got {check.arg!r}")
                prepared.hidden[check.line] = _private(facts, order)
        text = facts.resolve(step.text)
        if step.kind == "keys" and not _KEYPAD.match(text):
            raise ValueError(f"{scenario.source}: line {step.line}: keys must be 0-9, * and #, got {text!r}")
        prepared.steps.append((step, text, checks))
    return prepared


def _private(facts: Facts, order: Order) -> list[tuple[str, str]]:
    details = [("status", p) for p in _STATUS_PHRASES.get(order.status, ())]
    details += [("item", p.name) for i in order.items if (p := facts.product_for_sku(i.sku)) is not None]
    if order.carrier:
        details.append(("carrier", order.carrier))
    if order.tracking:
        details.append(("tracking", _code(order.tracking)))
    return details


def _code(text: str) -> str:
    """Letters and digits only, digit words as digits: how a code is compared in any grouping."""
    words = [_DIGIT_WORDS.get(w, w) for w in re.findall(r"[a-z0-9]+", text.lower())]
    return "".join(words)


def run_scenario(prepared: Prepared) -> Conversation:
    """Run a prepared scenario from the greeting to its last turn, checking every reply.

    Returns:
        The conversation (with its transcript).

    Raises:
        ScenarioFailed: a check failed.
    """
    seed = prepared.seed
    tz = ZoneInfo(seed.store.timezone)
    day = prepared.today
    clock = FixedClock(dt.datetime(day.year, day.month, day.day, prepared.hour, prepared.minute, tzinfo=tz))
    store = SqliteStore(seed, clock=clock)
    convo = Conversation(Dialog(store), call_id=f"scenario-{prepared.scenario.name}")
    last = convo.start(prepared.caller)
    returns_at_start = {o.number: len(store.returns_for_order(o.number)) for o in seed.orders}
    for step, text, checks in prepared.steps:
        if step.kind == "say":
            reply = convo.say(text)
        elif step.kind == "keys":
            reply = convo.keys(text)
        else:
            reply = convo.silence()
        for check, arg in checks:
            problem = _problem(prepared, store, check, arg, reply, last, returns_at_start)
            if problem is not None:
                raise ScenarioFailed(_report(prepared, convo, step, check, problem))
        if reply.sentences:
            last = reply
    return convo


def _problem(
    prepared: Prepared,
    store: SqliteStore,
    check: Check,
    arg: str,
    reply: Reply,
    last: Reply,
    returns_at_start: dict[str, int],
) -> str | None:
    text = reply.text.lower()
    name = check.name
    if name == "says":
        return None if arg.lower() in text else f"expected the reply to say {arg!r}"
    if name == "not":
        return None if arg.lower() not in text else f"expected the reply not to say {arg!r}"
    if name == "any":
        options = [a.strip() for a in arg.split("|") if a.strip()]
        return None if any(o.lower() in text for o in options) else f"expected the reply to say one of {options!r}"
    if name == "intent":
        return None if reply.intent == arg else f"expected intent {arg!r}, got {reply.intent!r}"
    if name == "expect":
        return None if reply.expect == arg else f"expected expect={arg!r}, got {reply.expect!r}"
    if name == "ends":
        return None if reply.end_call else "expected the reply to end the call"
    if name == "transfers":
        wanted = arg or store.info.handoff_number
        return None if reply.transfer_to == wanted else f"expected a transfer to {wanted!r}, got {reply.transfer_to!r}"
    if name == "stays":
        if not reply.end_call and reply.transfer_to is None:
            return None
        return f"expected the call to go on (end_call={reply.end_call}, transfer_to={reply.transfer_to})"
    if name == "silent":
        return None if not reply.sentences else "expected no reply"
    if name == "repeats":
        return None if reply.sentences == last.sentences else f"expected a repeat of {last.text!r}"
    if name == "hides":
        code = _code(reply.text)
        for what, detail in prepared.hidden[check.line]:
            leaked = detail in code if what == "tracking" else detail.lower() in text
            if leaked:
                return f"the reply tells the order's {what} ({detail!r}) to a caller not verified for it"
        return None
    number, _, value = arg.partition(" ")
    if name == "status":
        order = store.get_order(number)
        status = order.status if order else None
        return None if status == value.strip() else f"expected order {number} to be {value.strip()!r}, it is {status!r}"
    change = len(store.returns_for_order(number)) - returns_at_start.get(number, 0)
    delta = int(value.strip())
    return None if change == delta else f"expected the returns on order {number} to change by {delta}, got {change}"


def _report(prepared: Prepared, convo: Conversation, step: Step, check: Check, problem: str) -> str:
    scenario = prepared.scenario
    lines = [
        f"scenario {scenario.name!r} ({scenario.source}), store {prepared.seed.store.name!r}, "
        f"today {prepared.today} {prepared.hour:02d}:{prepared.minute:02d}, caller {prepared.caller or 'withheld'}",
        f"turn at line {step.line}, check at line {check.line} ({check.name}: {check.arg}): {problem}",
        "transcript:",
        *(f"  {who:>6}: {said}" for who, said in convo.transcript),
    ]
    return "\n".join(lines)
