"""``voxcart bench load``: statistics, pacing at the caller, turn timelines, Prometheus deltas, the verdict, the
comparison, resources, the JSON, the table and the chart on made-up data; one short run against the real stack
(e2e)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from voxcart.cli.bench.load import LoadOptions, ScriptItem, parse_ramp, read_script, run_load_bench
from voxcart.cli.bench.load_chart import draw_chart
from voxcart.cli.bench.load_measure import (
    SEGMENTS,
    TurnTiming,
    compare,
    hist_summary,
    metric_value,
    pacing,
    parse_metrics,
    realtime_verdict,
    stats,
    targets,
    timeline_breakdown,
)
from voxcart.cli.bench.load_probe import discover, join_timeline, metrics_targets, read_proc, resource_report
from voxcart.cli.bench.load_report import render
from voxcart.cli.main import build_parser
from voxcart.cli.simulator import WireEvent
from voxcart.common import events as ev
from voxcart.common.settings import load_settings

FRAME = 320  # the gateway's 40 ms frames


def media(t: float) -> WireEvent:
    return WireEvent(t, "media", nbytes=FRAME, voiced=True)


def mark(t: float, name: str) -> WireEvent:
    return WireEvent(t, "mark", name=name)


# -- statistics and pacing ----------------------------------------------------------------------------------------


def test_cli_bench_load_stats_percentiles_and_empty() -> None:
    s = stats([float(x) for x in range(1, 101)])
    assert s["n"] == 100 and s["p50"] == 50.5 and s["p95"] == 95.0 and s["p99"] == 99.0 and s["max"] == 100.0
    assert stats([]) == {"n": 0}
    assert stats([float("inf"), 3.0])["n"] == 1, "non-finite values are not averaged in"


def test_cli_bench_load_pacing_lead_burst_then_steady_is_on_time() -> None:
    # 3 frames at once (the pacer's 120 ms lead), then one every 40 ms, then the sentence's mark
    wire = [media(0.0), media(0.0), media(0.0)] + [media(0.040 * k) for k in range(1, 10)] + [mark(0.4, "t1-s0")]
    p = pacing([wire])
    assert p.frames == 12 and p.runs == 1 and p.underruns == 0
    assert p.lateness_ms is not None and max(p.lateness_ms) == pytest.approx(0.0, abs=1e-6)


def test_cli_bench_load_pacing_counts_a_gap_inside_a_turn_and_its_jitter() -> None:
    # one frame 5 ms late (jitter, no gap: 80 ms of audio still queued), then a 300 ms stall (an underrun)
    wire = [media(0.0), media(0.0), media(0.0), media(0.045), media(0.080), media(0.5), media(0.5), mark(0.6, "t1-s0")]
    p = pacing([wire])
    assert p.underruns == 1
    assert p.underrun_ms == pytest.approx(500 - 200, abs=0.01), "the queue ran dry at 200 ms; the frame came at 500"
    assert p.lateness_ms is not None and max(p.lateness_ms) == pytest.approx(5.0, abs=1e-6)
    assert p.runs == 2, "the caller's playback restarts after the gap"
    assert p.underruns_between_sentences == 0
    late_sentence = [media(0.0), mark(0.01, "t1-s0"), media(0.3), mark(0.35, "t1-s1")]
    assert pacing([late_sentence]).underruns_between_sentences == 1, "the next sentence came late"


def test_cli_bench_load_pacing_new_turn_or_clear_is_not_an_underrun() -> None:
    turn1 = [media(0.0), media(0.0), mark(0.05, "t1-s0")]
    turn2 = [media(3.0), media(3.0), mark(3.05, "t2-s0")]  # the next reply, seconds later
    cleared = [media(5.0), WireEvent(5.01, "clear"), media(7.0), mark(7.1, "t4-s0")]
    p = pacing([[*turn1, *turn2, *cleared]])
    assert p.underruns == 0 and p.runs == 4 and p.frames == 6
    assert p.as_dict()["jitter_ms"]["n"] == 6


# -- the turn timeline ---------------------------------------------------------------------------------------------


def timing(**kw: float | None) -> TurnTiming:
    base: dict[str, Any] = dict(
        call_sid="CA1", turn_no=2, last_voiced=1000.0, endpointed=1600.0, recognized=1630.0, final_committed=1631.0,
        decided=1633.0, say_committed=1634.0, synth_started=1635.0, first_frame=1640.0,
    )  # fmt: skip
    return TurnTiming(**{**base, **kw})


def test_cli_bench_load_timeline_segments_add_up() -> None:
    seg = timing().segments()
    assert [seg[k] for k in SEGMENTS] == [600.0, 30.0, 1.0, 2.0, 1.0, 1.0, 5.0]
    assert sum(seg[k] or 0.0 for k in SEGMENTS) == seg["gateway_turn"] == 640.0
    assert seg["eos_to_first_frame"] == 40.0
    missing = timing(synth_started=None, first_frame=None).segments()
    assert missing["tts_hop"] is None and missing["delivery"] is None and missing["gateway_turn"] is None
    table = timeline_breakdown([timing(), timing(first_frame=1740.0)])
    assert table["gateway_turn"]["n"] == 2 and table["gateway_turn"]["max"] == 740.0
    assert timeline_breakdown([])["endpointing"] == {"n": 0}


def test_cli_bench_load_join_timeline_matches_finals_to_their_replies() -> None:
    def final(last: float) -> ev.TranscriptFinal:
        return ev.TranscriptFinal(
            call_sid="CA1", utterance_id=f"CA1:{last}", text="hi", confidence=0.9, first_voiced_arrived=last - 900,
            last_voiced_arrived=last, endpointed_at=last + 600, recognized_at=last + 630,
        )  # fmt: skip

    def say(turn: int, seq: int, voiced: float) -> ev.Say:
        return ev.Say(
            call_sid="CA1", turn_id=f"CA1:{turn}", turn_no=turn, seq=seq, text="x", last=seq == 1,
            reply_to_voiced=voiced, decided_at=voiced + 640,
        )  # fmt: skip

    chunk = ev.AudioChunk(call_sid="CA1", turn_no=2, seq=0, k=0, payload=b"\xff", synth_started=5650.0)
    finals = [("5631-0", final(5000.0)), ("9631-0", final(9000.0))]  # the second was never answered
    says = [("100-0", say(1, 0, 0.0)), ("5641-0", say(2, 0, 5000.0)), ("5641-1", say(2, 1, 5000.0))]
    (t,) = join_timeline("CA1", finals, says, {2: chunk}, {2: 0.7})
    assert t.turn_no == 2 and t.final_committed == 5631.5 and t.say_committed == 5641.5
    assert t.synth_started == 5650.0 and t.first_frame == pytest.approx(5700.0)
    assert t.segments()["delivery"] == pytest.approx(50.0)


# -- Prometheus ----------------------------------------------------------------------------------------------------

METRICS_BEFORE = """# HELP voxcart_x_seconds x
# TYPE voxcart_x_seconds histogram
voxcart_x_seconds_bucket{le="0.01"} 1.0
voxcart_x_seconds_bucket{le="0.1"} 2.0
voxcart_x_seconds_bucket{le="+Inf"} 2.0
voxcart_x_seconds_count 2.0
voxcart_x_seconds_sum 0.05
voxcart_pacing_underruns_total 3.0
voxcart_bus_frame_age_seconds_bucket{le="0.01",svc="stt"} 0.0
"""
METRICS_AFTER = """voxcart_x_seconds_bucket{le="0.01"} 5.0
voxcart_x_seconds_bucket{le="0.1"} 10.0
voxcart_x_seconds_bucket{le="+Inf"} 12.0
voxcart_x_seconds_count 12.0
voxcart_x_seconds_sum 1.05
voxcart_pacing_underruns_total 4.0
voxcart_owned_calls{svc="stt"} 2.0
voxcart_owned_calls{svc="brain"} 3.0
"""


def test_cli_bench_load_histogram_and_counter_deltas() -> None:
    before, after = parse_metrics(METRICS_BEFORE), parse_metrics(METRICS_AFTER)
    h = hist_summary(before, after, "voxcart_x_seconds")
    assert h["count"] == 10 and h["mean_ms"] == 100.0
    assert h["p50_le_ms"] == 100.0 and h["p99_le_ms"] == "inf", "4 of 10 below 10 ms, 6 below 100 ms, 2 above"
    assert hist_summary(before, before, "voxcart_x_seconds") == {"count": 0}
    assert (
        metric_value(after, "voxcart_pacing_underruns_total") - metric_value(before, "voxcart_pacing_underruns_total")
        == 1
    )
    assert metric_value(after, "voxcart_owned_calls") == 5.0, "summed over label sets"
    assert metric_value(after, "voxcart_absent") == 0.0


# -- verdict, comparison, resources ---------------------------------------------------------------------------


def step(calls: int, p50: float, p95: float, underruns: float = 0, **extra: Any) -> dict[str, Any]:
    return {
        "calls": calls,
        "failed_calls": [],
        "timed_out_turns": 0,
        "turn_latency_ms": {"n": 20, "p50": p50, "p95": p95, "p99": p95 + 50, "max": p95 + 60, "mean": p50},
        "breakdown_ms": {"eos_to_first_frame": {"n": 20, "p95": 60.0}},
        "barge_in_ms": {"n": 0},
        "pacing": {"gateway_underruns": underruns, "caller": {"underruns": 0, "jitter_ms": {"n": 3, "p99": 2.0}}},
        "resources": {"total": {"cpu_pct_per_call": 4.0, "rss_mib_per_call": 10.0}},
        **extra,
    }


def test_cli_bench_load_realtime_verdict_names_what_failed() -> None:
    assert realtime_verdict(step(10, 650, 700)) == (True, []), "p50 is a target, not a real-time bound"
    holds, reasons = realtime_verdict(step(20, 650, 900, underruns=2, timed_out_turns=1))
    assert not holds
    assert reasons == ["1 turn(s) got no reply", "underruns: gateway 2, caller 0", "turn latency p95 900 ms > 800 ms"]
    assert realtime_verdict({**step(5, 1, 1), "turn_latency_ms": {"n": 0}})[1] == ["no turn latency measured"]


def test_cli_bench_load_compare_prints_ratios_for_matching_steps() -> None:
    earlier = {"steps": [step(10, 400, 800), step(30, 500, 900)], "max_realtime_calls": 10}
    now = {"steps": [step(10, 200, 400), step(20, 300, 600)], "max_realtime_calls": 20}
    rows = compare(now, earlier)
    assert ["10", "turn latency p50 (ms)", "400", "200", "0.50x"] in rows
    assert ["-", "largest real-time N", "10", "20", "2.00x"] in rows
    assert not any(r[0] in ("20", "30") for r in rows), "steps are compared only at the same number of calls"
    assert not any("barge-in" in r[1] for r in rows), "nothing measured on either side: no row"
    with pytest.raises(ValueError, match="no 'steps' list"):
        compare(now, {"summary": {}})


def test_cli_bench_load_targets_are_read_at_their_number_of_calls_or_the_nearest() -> None:
    report = {
        "steps": [step(5, 300, 500), step(10, 620, 790), step(30, 900, 1500)],
        "max_realtime_calls": 10,
        "baseline": {"bus_added_ms": {"calls": 30, "p99": 8.0}},
    }
    by = {t["target"]: t for t in targets(report)}
    p50 = by["turn latency p50 <= 500 ms"]
    assert (p50["at"], p50["value"], p50["ok"]) == (10, 620.0, False)
    assert by["turn latency p95 <= 800 ms"]["ok"] is True
    cpu = by["CPU per call <= 5 % of a core (stack)"]
    assert cpu["stated_at"] == 20 and cpu["at"] == 30 and cpu["ok"] is True, "20 is nearest to 30 of 5, 10, 30"
    assert by["whole stack >= 20 calls real time"]["ok"] is False
    assert by["bus adds <= 10 ms p99 per turn over inproc"] == {
        "target": "bus adds <= 10 ms p99 per turn over inproc", "stated_at": 50, "at": 30, "value": 8.0, "ok": True
    }  # fmt: skip
    nothing = {t["target"]: t["ok"] for t in targets({"steps": []})}
    assert set(nothing.values()) == {None}, "nothing measured is neither met nor missed"


def test_cli_bench_load_resource_report_per_service_and_per_call() -> None:
    r = resource_report(
        {"gateway": 2.0, "stt": 8.0, "caller": 4.0}, 20.0, {"gateway": 80.0, "stt": 140.0, "caller": 300.0},
        {"gateway": 90.0, "stt": 180.0, "caller": 310.0}, 10.0,
    )  # fmt: skip
    assert r["services"]["stt"] == {
        "cpu_cores": 0.4,
        "cpu_pct_per_call": 4.0,
        "rss_mib_idle": 140.0,
        "rss_mib_peak": 180.0,
        "rss_mib_per_call": 4.0,
    }
    assert r["total"]["cpu_cores"] == 0.5 and r["total"]["cpu_pct_per_call"] == 5.0, "the bench itself is not summed"
    assert r["total"]["rss_mib_per_call"] == 5.0


def test_cli_bench_load_reads_proc_and_finds_a_stack_by_its_redis(tmp_path: Path) -> None:
    me = read_proc(os.getpid())
    assert me is not None and me.cpu_s > 0 and me.rss_mib > 10
    assert read_proc(10**9) is None

    def proc(pid: int, cmdline: list[str], env: dict[str, str]) -> None:
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in cmdline) + b"\0")
        (d / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in env.items()))

    mine, other = "redis://127.0.0.1:7001/0", "redis://127.0.0.1:7002/0"
    proc(11, ["python", "-m", "voxcart.cli.main", "serve", "gateway"], {"REDIS_URL": mine, "PORT": "8081"})
    proc(12, ["voxcart", "serve", "stt"], {"REDIS_URL": mine, "METRICS_PORT": "9101"})
    proc(13, ["python", "-m", "voxcart.stt"], {"REDIS_URL": mine, "METRICS_PORT": "9102"})
    proc(14, ["python", "-m", "voxcart.cli.main", "serve", "brain"], {"REDIS_URL": other})
    proc(15, ["/usr/bin/redis-server", "--port", "7001", "--bind", "127.0.0.1"], {})
    proc(16, ["/usr/bin/redis-server", "--port", "7002"], {})
    found = discover(mine, tmp_path)
    assert found == {"gateway": [11], "stt": [12, 13], "redis": [15]}
    targets = metrics_targets(found, "127.0.0.1:8081", tmp_path)
    assert targets == {
        "gateway": ["127.0.0.1:8081"],
        "stt": ["127.0.0.1:9101", "127.0.0.1:9102"],
        "brain": [],
        "tts": [],
    }


# -- options, JSON, table, chart ------------------------------------------------------------------------------


def test_cli_bench_load_options_and_script_are_checked(tmp_path: Path) -> None:
    assert parse_ramp("5, 10,20") == [5, 10, 20]
    with pytest.raises(ValueError, match="--ramp"):
        parse_ramp("5,ten")
    assert LoadOptions(ramp=[5, 10]).steps == [5, 10] and LoadOptions(calls=3).steps == [3]
    for bad, match in (
        ({"ramp": [10, 5]}, "ascending"),
        ({"calls": 0}, "1..500"),
        ({"baseline": "docker"}, "inproc"),
        ({"script": [ScriptItem("hi", over_ms=100.0)]}, "first item"),
    ):
        with pytest.raises(ValueError, match=match):
            LoadOptions(**bad)
    script = tmp_path / "lines.txt"
    script.write_text("# a call\nwhere is my order\n\n> what are your opening hours\ngoodbye\n")
    assert read_script(str(script)) == [
        ScriptItem("where is my order"),
        ScriptItem("what are your opening hours", 1500.0),
        ScriptItem("goodbye"),
    ]
    with pytest.raises(ValueError, match="no caller line"):
        (tmp_path / "empty.txt").write_text("# nothing\n")
        read_script(str(tmp_path / "empty.txt"))
    args = build_parser().parse_args(["bench", "load", "--ramp", "5,10", "--baseline", "inproc", "--chart", "x.png"])
    assert args.ramp == "5,10" and args.baseline == "inproc" and args.chart == "x.png"


def sample_report() -> dict[str, Any]:
    services = {
        svc: {
            "cpu_cores": c,
            "cpu_pct_per_call": c * 10,
            "rss_mib_idle": m,
            "rss_mib_peak": m + 5,
            "rss_mib_per_call": 0.5,
        }
        for svc, c, m in (("gateway", 0.1, 80.0), ("stt", 0.4, 140.0), ("caller", 0.2, 300.0))
    }
    steps = []
    for n, p50 in ((5, 610.0), (10, 650.0)):
        s = step(n, p50, p50 + 100)
        s["breakdown_ms"] = {
            k: {"n": 4, "p50": v, "p95": v, "p99": v} for k, v in zip(SEGMENTS, [600, 30, 1, 2, 1, 1, 5], strict=True)
        }
        s["breakdown_ms"]["eos_to_first_frame"] = {"n": 4, "p50": 40.0, "p95": 50.0, "p99": 52.0}
        s["breakdown_ms"]["gateway_turn"] = {"n": 4, "p50": 640.0, "p95": 650.0, "p99": 652.0}
        s["pacing"]["gateway_underrun_ms"] = 0.0
        total = {"cpu_cores": 0.5, "cpu_pct_per_call": 5.0, "rss_mib_idle": 220.0, "rss_mib_peak": 230.0}
        s["resources"] = {
            "services": services,
            "total": {**total, "rss_mib_per_call": 1.0},
            "window_s": 30.0,
            "calls_in_progress": n * 0.9,
        }
        s.update(
            breakdown_turns=4,
            breakdown_note=None,
            histograms={"stt": {"voxcart_bus_frame_age_seconds": {"count": 0}}},
            unseen_services=[],
            caller_loop_lag_ms={"n": 10, "p50": 0.5, "p99": 2.0},
            latencies_ms=[p50 - 20, p50, p50 + 30],
            realtime={"holds": n == 5, "reasons": [] if n == 5 else ["slow"]},
        )
        steps.append(s)
    return {
        "bench": "load",
        "duration_s": 80.0,
        "host": {"cpus": 2, "load_avg_before": [0.5, 0.4, 0.3]},
        "script": [{"text": "hi", "over_ms": None}, {"text": "wait", "over_ms": 1500.0}],
        "steps": steps,
        "max_realtime_calls": 5,
        "baseline": {
            "calls": 10,
            "turns": 20,
            "timed_out_turns": 0,
            "errors": [],
            "turn_ms": [600.0, 610.0, 640.0],
            "segments_ms": {"turn": {"n": 3, "p50": 610.0, "p95": 640.0, "p99": 640.0}},
            "bus_added_ms": {"calls": 10, "p50": 30.0, "p95": 10.0, "p99": 12.0, "ratio_p50": 1.05, "ratio_p99": 1.02},
        },  # fmt: skip
    }


def test_cli_bench_load_table_and_json_come_from_the_same_report() -> None:
    report = sample_report()
    report["compare"] = {"file": "old.json", "rows": compare(report, sample_report())}
    text = render(json.loads(json.dumps(report)))
    assert "largest N that held real time: 5" in text
    assert "10 calls not real time: slow" in text
    assert "bus, websocket and pacer add per turn: p50 +30 ms, p99 +12 ms" in text
    assert "against old.json" in text and "1.00x" in text
    assert "(over) wait" in text


def test_cli_bench_load_chart_draws_four_panels(tmp_path: Path) -> None:
    path = tmp_path / "load.png"
    draw_chart(sample_report(), str(path))
    with Image.open(path) as png:
        image = png.convert("RGB")
    assert image.size == (1200, 860)
    for box in ((0, 0, 600, 430), (600, 0, 1200, 430), (0, 430, 600, 860), (600, 430, 1200, 860)):
        colors = image.crop(box).getcolors(maxcolors=1 << 16) or []
        coloured = sum(n for n, (r, g, b) in colors if max(r, g, b) - min(r, g, b) > 60)
        assert coloured > 50, f"panel {box} drew no data"
    empty = tmp_path / "empty.png"
    draw_chart({"steps": []}, str(empty))
    with Image.open(empty) as png:
        assert png.size == (1200, 860)


# -- the real stack -----------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_cli_bench_load_two_short_calls_against_the_real_stack(tmp_path: Path) -> None:
    out, chart = tmp_path / "load.json", tmp_path / "load.png"
    options = LoadOptions(
        calls=2,
        script=[ScriptItem("thank you goodbye")],  # the greeting, one line, the agent's goodbye: ~12 s a call
        baseline="inproc",
        json_path=str(out),
        chart_path=str(chart),
        log_path=str(tmp_path / "svc.log"),
    )
    report = run_load_bench(options, load_settings())
    (s,) = report["steps"]
    assert not s["failed_calls"] and not s["protocol_errors"] and s["timed_out_turns"] == 0
    assert s["turn_latency_ms"]["n"] == 2 and s["greeting_latency_ms"]["n"] == 2
    b = s["breakdown_ms"]
    assert b["gateway_turn"]["n"] == 2, "every answered line has its timeline from the bus"
    assert 0 < b["endpointing"]["p50"] < 3000 and 0 < b["eos_to_first_frame"]["p50"] < b["gateway_turn"]["p50"]
    assert abs(b["gateway_turn"]["p50"] - s["turn_latency_ms"]["p50"]) < 250, "caller side and gateway side agree"
    assert s["pacing"]["caller"]["frames"] > 100 and s["pacing"]["caller"]["jitter_ms"]["n"] > 100
    assert s["pacing"]["caller"]["runs"] >= 4, "2 calls x (greeting + goodbye)"
    assert s["histograms"]["stt"]["voxcart_bus_frame_age_seconds"]["count"] > 500
    res = s["resources"]["services"]
    assert {"gateway", "stt", "brain", "tts", "redis", "caller"} <= set(res) and res["stt"]["cpu_cores"] > 0
    base = report["baseline"]
    assert base["calls"] == 2 and base["turns"] == 2 and not base["errors"] and base["timed_out_turns"] == 0
    turn = base["segments_ms"]["turn"]
    assert b["endpointing"]["p50"] * 0.5 < base["segments_ms"]["endpointing"]["p50"] < turn["p50"] < 3000
    assert "p99" in base["bus_added_ms"] and base["resources"]["cpu_cores"] > 0
    assert json.loads(out.read_text())["steps"][0]["turn_latency_ms"] == s["turn_latency_ms"]
    with Image.open(chart) as png:
        assert png.size == (1200, 860)
    assert "turn breakdown at 2 calls" in render(report)
