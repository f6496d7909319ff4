"""``voxcart bench load --runs N``: one step's figures as the medians of N runs of it (issue 8 states medians of 3).

Invariants: every number of the merged step is the median over the runs that measured it (percentiles, means,
counts and resources alike; ``"inf"`` bucket bounds count as infinite); lists are joined (a call that failed in
any run is a failed call of the step, every latency of every run is kept); anything else is the first run's.
The real-time verdict is judged again on the merged step, so one run that failed a call fails the step; each
run's own verdict and headline figures stay under ``runs``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from .load_measure import realtime_verdict

__all__ = ["median_step"]


def _number(value: Any) -> float | None:
    """``value`` as a number if it is one (``"inf"`` included), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if value == "inf":
        return math.inf
    return None


def _median(values: Sequence[float], like: Sequence[Any]) -> Any:
    middle = statistics.median(values)
    if math.isinf(middle):
        return "inf" if any(v == "inf" for v in like) else middle
    if all(isinstance(v, int) and not isinstance(v, bool) for v in like) and middle == int(middle):
        return int(middle)
    return round(middle, 3)


def _merge(values: Sequence[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, Mapping) for v in present):
        merged_keys = list(dict.fromkeys(k for v in present for k in v))
        return {k: _merge([v[k] for v in present if k in v]) for k in merged_keys}
    if all(isinstance(v, list) for v in present):
        joined = [item for v in present for item in v]
        if all(isinstance(item, str) for item in joined):
            return list(dict.fromkeys(joined))  # failures and errors: each once
        return joined
    numbers = [_number(v) for v in present]
    if all(n is not None for n in numbers):
        return _median([n for n in numbers if n is not None], present)
    return present[0]


def _headline(step: Mapping[str, Any]) -> dict[str, Any]:
    latency = step.get("turn_latency_ms", {})
    return {
        "holds": step["realtime"]["holds"],
        "reasons": step["realtime"]["reasons"],
        "turn_p50_ms": latency.get("p50"),
        "turn_p95_ms": latency.get("p95"),
        "gateway_underruns": step.get("pacing", {}).get("gateway_underruns"),
        "cpu_pct_per_call": step.get("resources", {}).get("total", {}).get("cpu_pct_per_call"),
        "failed_calls": len(step.get("failed_calls", [])),
    }


def median_step(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The step that ``runs`` (each a :func:`~voxcart.cli.bench.load.run_step` report of the same step) add up to.

    Raises:
        ValueError: no run, or runs of different numbers of calls.
    """
    if not runs:
        raise ValueError("median_step: no run to merge")
    calls = {run["calls"] for run in runs}
    if len(calls) != 1:
        raise ValueError(f"median_step: the runs are of different steps ({sorted(calls)} calls)")
    if len(runs) == 1:
        return dict(runs[0])
    merged: dict[str, Any] = _merge([{k: v for k, v in run.items() if k not in ("realtime", "runs")} for run in runs])
    holds, reasons = realtime_verdict(merged)
    merged["realtime"] = {"holds": holds, "reasons": reasons}
    merged["runs"] = [_headline(run) for run in runs]
    return merged
