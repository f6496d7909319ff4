"""The scenario text format: conversations written as data, with placeholders for the store's facts.

A file holds scenarios; each starts with ``== name`` and has header lines, then turns::

    # a comment line
    == status-shipped-known-caller
    job: order_status
    about: a caller whose number is on file asks where their shipped order is
    caller: {order.shipped.customer.phone}
    today: {order.returnable.delivered} + {policies.return_window_days} + 1
    time: 22:00
    xfail: job not implemented yet: change shipping address
    xfail[other]: only fails against the store named "other"

    > where is my order {order.shipped.number|spelled}
    < intent: order_status
    < says: {order.shipped.carrier}
    > (keys 10023#)
    > (silence)
    < ends

Turns: ``> text`` (the caller says text), ``> (keys DIGITS)`` (DTMF) or ``> (silence)``. Checks (``< ...``) apply
to the reply of the turn above them; see :data:`CHECKS`. Placeholders (``{path|format}``) are resolved per store
by :class:`~voxcart.brain.scenarios.Facts`.

Invariants: parsing is pure and checks only the shape (header keys, check names, a turn before a check, a
``job`` from :data:`JOBS`); a malformed file raises :class:`ScriptError` naming the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

__all__ = ["CHECKS", "JOBS", "Check", "Scenario", "ScriptError", "Step", "load_scenarios", "parse_scenarios"]

JOBS: Final = (
    "order_status",
    "verification",
    "return",
    "refund_status",
    "availability",
    "policy",
    "cancel",
    "change_address",
    "human",
    "message",
    "repeat",
    "goodbye",
)
"""What a scenario exercises; every job must be covered against every store."""

CHECKS: Final = {
    "says": "the reply contains the text (case-insensitive)",
    "not": "the reply does not contain the text (case-insensitive)",
    "any": "the reply contains at least one of the ' | '-separated texts",
    "intent": "the reply's intent",
    "expect": "the reply's expect (free, digits, yes_no, product)",
    "ends": "the reply ends the call (end_call)",
    "transfers": "the reply transfers the call, to the argument or else the store's handoff number",
    "stays": "the reply neither ends nor transfers the call",
    "silent": "the reply says nothing",
    "repeats": "the reply says the same sentences as the last reply that said something",
    "hides": "the reply tells nothing private about the order named by the role (e.g. order.shipped)",
    "status": "the store's order (first word) now has the status (second word)",
    "returns": "the number of returns on the order (first word) changed by the signed count (second word)",
}
"""The checks a ``< name: argument`` line may use."""

_HEADERS: Final = frozenset({"job", "about", "caller", "today", "time", "xfail"})
_XFAIL: Final = re.compile(r"^xfail(?:\[(\w+)\])?$")
_KEYS: Final = re.compile(r"^\(keys ([0-9*#{][^()]*)\)$")


class ScriptError(ValueError):
    """A scenario file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Check:
    """One expectation on a reply."""

    name: str
    arg: str
    line: int


@dataclass
class Step:
    """One caller turn and the checks on the agent's reply."""

    kind: Literal["say", "keys", "silence"]
    text: str
    line: int
    checks: list[Check] = field(default_factory=list)


@dataclass
class Scenario:
    """One conversation, unresolved (placeholders are filled per store when it runs)."""

    name: str
    job: str
    source: str
    """``file:line`` of the ``==`` line."""
    about: str = ""
    caller: str = ""
    """The calling number (a placeholder or literal); empty means withheld."""
    today: str = ""
    """An expression for today's date (see :meth:`Facts.date_expr`); empty for the default."""
    time: str = ""
    """``HH:MM`` in the store's timezone; empty for the default."""
    xfail: dict[str, str] = field(default_factory=dict)
    """Expected failures: reason per store name, ``"*"`` for every store."""
    steps: list[Step] = field(default_factory=list)


def parse_scenarios(text: str, source: str = "<text>") -> list[Scenario]:
    """Parse scenario text.

    Args:
        text: the file's content.
        source: its name, for error messages.

    Returns:
        The scenarios, in file order.

    Raises:
        ScriptError: a malformed line, a duplicate name, a missing ``job``, or a scenario without turns.
    """
    scenarios: list[Scenario] = []
    current: Scenario | None = None

    def fail(line: int, message: str) -> ScriptError:
        return ScriptError(f"{source}:{line}: {message}")

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("=="):
            name = line[2:].strip()
            if not name:
                raise fail(number, "a scenario needs a name after '=='")
            if any(s.name == name for s in scenarios):
                raise fail(number, f"duplicate scenario name {name!r}")
            current = Scenario(name=name, job="", source=f"{source}:{number}")
            scenarios.append(current)
            continue
        if current is None:
            raise fail(number, "expected '== name' to start a scenario")
        if line.startswith(">"):
            step = _step(line[1:].strip(), number)
            if step is None:
                raise fail(number, f"expected '(keys DIGITS)' or '(silence)', got {line[1:].strip()!r}")
            current.steps.append(step)
        elif line.startswith("<"):
            if not current.steps:
                raise fail(number, "a check ('<') must follow a caller turn ('>')")
            name, _, arg = line[1:].strip().partition(":")
            name = name.strip()
            if name not in CHECKS:
                raise fail(number, f"unknown check {name!r} (known: {', '.join(CHECKS)})")
            current.steps[-1].checks.append(Check(name=name, arg=arg.strip(), line=number))
        else:
            if current.steps:
                raise fail(number, f"expected '>' or '<' after the first turn, got {line!r}")
            key, sep, value = line.partition(":")
            key, value = key.strip(), value.strip()
            xfail = _XFAIL.match(key)
            if not sep or (key not in _HEADERS and xfail is None):
                raise fail(number, f"expected a header ({', '.join(sorted(_HEADERS))}), got {line!r}")
            if xfail is not None:
                current.xfail[xfail.group(1) or "*"] = value
            elif key == "job":
                if value not in JOBS:
                    raise fail(number, f"unknown job {value!r} (known: {', '.join(JOBS)})")
                current.job = value
            else:
                setattr(current, key, value)
    for scenario in scenarios:
        if not scenario.job:
            raise ScriptError(f"{scenario.source}: scenario {scenario.name!r} has no 'job:'")
        if not scenario.steps:
            raise ScriptError(f"{scenario.source}: scenario {scenario.name!r} has no turns")
    return scenarios


def _step(text: str, line: int) -> Step | None:
    if text == "(silence)":
        return Step(kind="silence", text="", line=line)
    keys = _KEYS.match(text)
    if keys:
        return Step(kind="keys", text=keys.group(1), line=line)
    if text.startswith("("):
        return None
    return Step(kind="say", text=text, line=line)


def load_scenarios(*paths: Path) -> list[Scenario]:
    """Parse scenario files (``*.txt`` of each directory given, or the files given), names unique across them.

    Raises:
        ScriptError: a malformed file, or a name used twice.
    """
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.txt")) if path.is_dir() else [path])
    scenarios: list[Scenario] = []
    seen: dict[str, str] = {}
    for file in files:
        for scenario in parse_scenarios(file.read_text(encoding="utf-8"), file.name):
            if scenario.name in seen:
                raise ScriptError(
                    f"{scenario.source}: scenario name {scenario.name!r} also used at {seen[scenario.name]}"
                )
            seen[scenario.name] = scenario.source
            scenarios.append(scenario)
    return scenarios
