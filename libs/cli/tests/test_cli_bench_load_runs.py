"""``voxcart bench load --runs N --replicas svc=N``: a step as the medians of its runs, the verdict judged again on
them, and the options checked (made-up steps; the real stack is run by test_cli_bench_load.py)."""

from __future__ import annotations

from typing import Any

import pytest

from voxcart.cli.bench.load import LoadOptions, parse_replicas
from voxcart.cli.bench.load_report import render
from voxcart.cli.bench.load_runs import median_step
from voxcart.cli.main import build_parser


def run(p95: float, underruns: float, cpu: float, failed: list[str] | None = None, inf: bool = False) -> dict[str, Any]:
    """One run of a 10-call step, as ``run_step`` reports it (the parts the merge and the verdict read)."""
    return {
        "calls": 10,
        "duration_s": 30.0,
        "failed_calls": failed or [],
        "protocol_errors": ["late mark"],
        "timed_out_turns": 0,
        "turn_latency_ms": {"n": 20, "p50": p95 - 100, "p95": p95, "p99": p95 + 10},
        "breakdown_ms": {"eos_to_first_frame": {"n": 20, "p50": 50.0, "p95": p95 / 10, "p99": p95 / 9}},
        "pacing": {"caller": {"underruns": int(underruns), "jitter_ms": {"n": 0}}, "gateway_underruns": underruns},
        "histograms": {
            "stt": {"age": {"count": 100, "mean_ms": 5.0, "p50_le_ms": 5.0, "p99_le_ms": "inf" if inf else 50.0}}
        },
        "resources": {"total": {"cpu_pct_per_call": cpu}},
        "breakdown_note": None,
        "latencies_ms": [p95 - 100, p95],
        "realtime": {"holds": underruns == 0 and p95 <= 800 and not failed, "reasons": []},
    }


def test_cli_bench_load_runs_a_step_is_the_median_of_its_runs() -> None:
    step = median_step([run(700.0, 0, 3.0), run(900.0, 4, 2.0, inf=True), run(750.0, 0, 4.0)])
    assert step["turn_latency_ms"] == {"n": 20, "p50": 650.0, "p95": 750.0, "p99": 760.0}
    assert step["breakdown_ms"]["eos_to_first_frame"]["p95"] == 75.0
    assert step["pacing"]["gateway_underruns"] == 0 and step["pacing"]["caller"]["underruns"] == 0
    assert step["resources"]["total"]["cpu_pct_per_call"] == 3.0
    assert step["histograms"]["stt"]["age"]["p99_le_ms"] == 50.0  # one "inf" of three: the median is finite
    assert step["latencies_ms"] == [600.0, 700.0, 800.0, 900.0, 650.0, 750.0]  # every turn of every run
    assert step["protocol_errors"] == ["late mark"]
    assert step["realtime"] == {"holds": True, "reasons": []}
    assert [r["holds"] for r in step["runs"]] == [True, False, True]
    assert [r["turn_p95_ms"] for r in step["runs"]] == [700.0, 900.0, 750.0]


def test_cli_bench_load_runs_one_failed_call_fails_the_step() -> None:
    step = median_step([run(700.0, 0, 3.0), run(700.0, 0, 3.0, failed=["call 3 failed: no greeting"])])
    assert step["failed_calls"] == ["call 3 failed: no greeting"]
    assert step["realtime"] == {"holds": False, "reasons": ["1 call(s) failed"]}
    assert step["histograms"]["stt"]["age"]["p99_le_ms"] == 50.0
    half_inf = median_step([run(700.0, 0, 3.0, inf=True), run(700.0, 0, 3.0, inf=True)])
    assert half_inf["histograms"]["stt"]["age"]["p99_le_ms"] == "inf"


def test_cli_bench_load_runs_one_run_is_the_step_itself_and_mixed_steps_are_refused() -> None:
    only = run(700.0, 0, 3.0)
    assert median_step([only]) == only
    with pytest.raises(ValueError, match="no run"):
        median_step([])
    other = {**run(700.0, 0, 3.0), "calls": 20}
    with pytest.raises(ValueError, match=r"different steps \(\[10, 20\] calls\)"):
        median_step([only, other])


def test_cli_bench_load_runs_and_replicas_options_are_checked() -> None:
    assert parse_replicas("stt=2, brain=1") == {"stt": 2, "brain": 1}
    for text in ("stt", "stt=two", "stt=2,,brain"):
        with pytest.raises(ValueError, match="service=number"):
            parse_replicas(text)
    assert LoadOptions(runs=3, replicas={"stt": 2}).runs == 3
    for bad, match in (
        ({"runs": 0}, "--runs must be 1..20"),
        ({"replicas": {"gateway": 2}}, "gateway cannot be replicated here; only stt, brain, tts"),
        ({"replicas": {"stt": 9}}, "1..8 processes"),
        ({"replicas": {"stt": 2}, "gateway_url": "http://127.0.0.1:8080"}, "cannot be given with --gateway-url"),
    ):
        with pytest.raises(ValueError, match=match):
            LoadOptions(**bad)
    args = build_parser().parse_args(["bench", "load", "--runs", "3", "--replicas", "stt=2"])
    assert args.runs == 3 and args.replicas == "stt=2"


def test_cli_bench_load_runs_the_table_says_medians_and_each_run() -> None:
    step = median_step([run(700.0, 0, 3.0), run(900.0, 4, 2.0), run(750.0, 0, 4.0)])
    step.update(
        barge_in_ms={"n": 0},
        resources={
            "total": {
                k: 1.0 for k in ("cpu_cores", "cpu_pct_per_call", "rss_mib_idle", "rss_mib_peak", "rss_mib_per_call")
            },
            "services": {},
            "window_s": 30.0,
            "calls_in_progress": 9.0,
        },
        breakdown_turns=20,
        unseen_services=[],
        caller_loop_lag_ms={"n": 0},
    )
    step["pacing"]["caller"].update(underrun_ms=0.0)
    step["pacing"]["gateway_underrun_ms"] = 0.0
    report = {
        "duration_s": 100.0,
        "host": {"cpus": 2, "load_avg_before": [1.0]},
        "script": [{"text": "hi", "over_ms": None}],
        "runs": 3,
        "replicas": {"stt": 2, "brain": 1, "tts": 1},
        "steps": [step],
        "max_realtime_calls": 10,
    }
    text = render(report)
    assert "each step: the medians of 3 runs" in text
    assert "worker processes: stt 2, brain 1, tts 1" in text
    assert "10 calls: 2 of 3 runs held real time; turn p95 by run 700, 900, 750 ms" in text
