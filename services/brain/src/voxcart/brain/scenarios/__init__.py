"""Scenario conversations as data, runnable against any store: the format, the store facts, the runner.

Usage::

    for scenario in load_scenarios(Path("tests/scenarios")):
        prepared = prepare(scenario, load_seed("my_store.json"))  # FactMissing: not applicable to this store
        run_scenario(prepared)                                      # ScenarioFailed: a reply missed a check

Scenarios name facts by role (``{order.shipped.tracking|tracking}``), never by value, so the same suite
checks the demo store and a shop's own seed. See :mod:`._script` for the format and :mod:`._facts` for the
placeholders.
"""

from __future__ import annotations

from voxcart.brain.scenarios._facts import FORMATS, ORDER_ROLES, PRODUCT_ROLES, VARIANT_ROLES, FactMissing, Facts
from voxcart.brain.scenarios._run import DEFAULT_HOUR, Prepared, ScenarioFailed, default_today, prepare, run_scenario
from voxcart.brain.scenarios._script import (
    CHECKS,
    JOBS,
    Check,
    Scenario,
    ScriptError,
    Step,
    load_scenarios,
    parse_scenarios,
)

__all__ = [
    "CHECKS",
    "DEFAULT_HOUR",
    "FORMATS",
    "JOBS",
    "ORDER_ROLES",
    "PRODUCT_ROLES",
    "VARIANT_ROLES",
    "Check",
    "FactMissing",
    "Facts",
    "Prepared",
    "Scenario",
    "ScenarioFailed",
    "ScriptError",
    "Step",
    "default_today",
    "load_scenarios",
    "parse_scenarios",
    "prepare",
    "run_scenario",
]
