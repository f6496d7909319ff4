"""The scenario suite: every conversation of tests/scenarios/ against the demo store and a store it was not
written for.

Each scenario is data (see :mod:`voxcart.brain.scenarios`): its facts are placeholders resolved from the store
under test, so passing against both seeds shows the dialog follows the data rather than the demo. Scenarios for
jobs the dialog does not do yet carry ``xfail:`` and run as strict expected failures (a pass is an error, so
the mark is removed when the job lands). A scenario whose fact a store lacks is skipped for that store, and
:func:`test_every_job_runs_against_every_store` keeps skips from hiding a job.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from voxcart.brain.scenarios import JOBS, FactMissing, Scenario, ScenarioFailed, load_scenarios, prepare, run_scenario
from voxcart.brain.store import demo_seed_path
from voxcart.common.seed import Seed, load_seed

SCENARIOS = load_scenarios(Path(__file__).parent / "scenarios")
SEEDS = {
    "demo": demo_seed_path(),
    "other": Path(__file__).parents[1] / "services" / "brain" / "tests" / "data" / "other_store.json",
}
MIN_SCENARIOS = 60


@functools.cache
def _seed(name: str) -> Seed:
    return load_seed(SEEDS[name])


def _params() -> list[object]:
    params: list[object] = []
    for scenario in SCENARIOS:
        for store in SEEDS:
            reason = scenario.xfail.get(store) or scenario.xfail.get("*")
            marks = [pytest.mark.xfail(reason=reason, strict=True, raises=ScenarioFailed)] if reason else []
            params.append(pytest.param(scenario, store, id=f"{scenario.name}[{store}]", marks=marks))
    return params


@pytest.mark.parametrize(("scenario", "store"), _params())
def test_scenario(scenario: Scenario, store: str) -> None:
    try:
        prepared = prepare(scenario, _seed(store))
    except FactMissing as missing:
        pytest.skip(f"not applicable to the {store} store: {missing}")
    run_scenario(prepared)


def test_suite_size() -> None:
    assert len(SCENARIOS) >= MIN_SCENARIOS, f"{len(SCENARIOS)} scenarios, the suite needs {MIN_SCENARIOS}"


@pytest.mark.parametrize("store", sorted(SEEDS))
def test_every_job_runs_against_every_store(store: str) -> None:
    """Every job has a scenario that applies to the store and is not an expected failure for it."""
    covered: set[str] = set()
    for scenario in SCENARIOS:
        if scenario.xfail.get(store) or scenario.xfail.get("*"):
            continue
        try:
            prepare(scenario, _seed(store))
        except FactMissing:
            continue
        covered.add(scenario.job)
    assert covered == set(JOBS), f"jobs without an applicable scenario in the {store} store: {set(JOBS) - covered}"
