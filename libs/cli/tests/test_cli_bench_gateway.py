"""``voxcart bench gateway``: options, the verdict, merging the caller processes' reports, the scheduler probe and
the table on made-up data; the stand-in agent on a MemoryBus; one short run against a real gateway (e2e)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from voxcart.cli.bench.gateway import GatewayOptions, _merge, parse_steps, run_gateway_bench, schedstat, verdict
from voxcart.cli.bench.gateway_callers import CallerReport, measured
from voxcart.cli.bench.gateway_downstream import CHUNK_BYTES, FakeDownstream
from voxcart.cli.bench.gateway_report import render
from voxcart.cli.bench.gateway_sched import NICE, raise_priority, realtime
from voxcart.cli.bench.load_measure import pacing
from voxcart.cli.main import build_parser
from voxcart.cli.simulator import WireEvent
from voxcart.common import events as ev
from voxcart.common.bus import MemoryBus, Output, keys


def step(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "calls": 200,
        "connected": 200,
        "errors": [],
        "gateway": {
            "cores": 0.5,
            "calls_per_core": 400.0,
            "rss_mib_per_call": 0.1,
            "waited_for_cpu_ms_per_s": 20.0,
        },
        "jitter_ms": {"n": 1000, "p99": 4.0},
        "underruns": {"callers": 0, "gateway": 0.0},
        "callers": {"tick_late_ms": {"n": 10, "p99": 2.0}},
    }
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in ("gateway", "underruns") else value
    return base


def test_cli_bench_gateway_options_are_checked() -> None:
    assert parse_steps("50, 100,200") == [50, 100, 200]
    with pytest.raises(ValueError, match="--calls: expected numbers"):
        parse_steps("50,lots")
    assert GatewayOptions().processes(200) == 4 and GatewayOptions().processes(10) == 2
    assert GatewayOptions(procs=3).processes(200) == 3
    for bad, match in (
        ({"steps": [0]}, "1..1000 calls"),
        ({"hold_s": 1}, "--hold must be 5..600"),
        ({"stagger_s": 2}, "--stagger must be 0..1"),
        ({"procs": 0}, "--procs must be 1..64"),
        ({"steps": [500], "stagger_s": 0.1, "hold_s": 30}, "too short"),
    ):
        with pytest.raises(ValueError, match=match):
            GatewayOptions(**bad)
    args = build_parser().parse_args(["bench", "gateway", "--calls", "20", "--hold", "10", "--pin"])
    assert args.calls == "20" and args.hold == 10 and args.pin


def test_cli_bench_gateway_verdict_names_what_missed() -> None:
    assert verdict(step()) == (True, [])
    ok, reasons = verdict(
        step(
            connected=198,
            jitter_ms={"n": 10, "p99": 31.0},
            underruns={"callers": 5, "gateway": 2.0},
            gateway={"rss_mib_per_call": 1.5, "cores": 1.2},
        )
    )
    assert not ok
    assert reasons == [
        "2 call(s) did not connect",
        "jitter p99 31.0 ms > 10 ms",
        "underruns: callers 5, gateway 2",
        "1.50 MiB per call > 1",
        "the gateway used 1.20 cores > 1",
    ]
    assert "no agent audio measured at the callers" in verdict(step(jitter_ms={"n": 0}))[1]


def test_cli_bench_gateway_merges_the_caller_processes() -> None:
    a = CallerReport(calls=2, connected=2, frames_sent=100, media_received=40, lateness_ms=[1.0, 2.0])
    a.pacing = {"runs": 3, "underruns": 1, "underrun_ms": 12.5}
    b = CallerReport(calls=1, connected=0, errors=["call 2: refused"], lateness_ms=[30.0], tick_late_ms=[0.5, 9.0])
    b.pacing = {"runs": 1, "underruns": 0, "underrun_ms": 0.0}
    merged = _merge([a, b])
    assert merged["connected"] == 2 and merged["errors"] == ["call 2: refused"]
    assert merged["frames_sent"] == 100 and merged["media_received"] == 40
    assert merged["jitter_ms"]["n"] == 3 and merged["jitter_ms"]["max"] == 30.0
    assert (merged["runs"], merged["caller_underruns"], merged["caller_underrun_ms"]) == (4, 1, 12.5)
    assert merged["tick_late_ms"]["n"] == 2


def test_cli_bench_gateway_schedstat_sums_the_threads(tmp_path: Path) -> None:
    for tid, line in (("10", "2000000000 500000000 99\n"), ("11", "1000000000 250000000 7\n")):
        (tmp_path / "10" / "task" / tid).mkdir(parents=True)
        (tmp_path / "10" / "task" / tid / "schedstat").write_text(line)
    assert schedstat(10, tmp_path) == (3.0, 0.75)
    assert schedstat(12, tmp_path) is None


def _turns(starts: list[float], sentences: int = 2, frames: int = 10) -> list[WireEvent]:
    """A caller's wire log of well paced turns: each starts with the pacer's 120 ms lead burst, then a 40 ms frame
    every 40 ms (every other one 1.5 ms late), a mark after each sentence."""
    wire: list[WireEvent] = []
    for turn, start in enumerate(starts, 1):
        n = 0
        for seq in range(sentences):
            for _ in range(frames):
                t = start + (0.0 if n < 3 else (n - 2) * 0.04 + 0.0015 * (n % 2))
                wire.append(WireEvent(t, "media", nbytes=320, voiced=True))
                n += 1
            wire.append(WireEvent(wire[-1].t, "mark", name=f"t{turn}-s{seq}"))
    return wire


def test_cli_bench_gateway_measures_whole_turns_only() -> None:
    wire = _turns([0.0, 2.0, 4.0])  # turns of 20 frames: 0..0.72 s, 2..2.72 s, 4..4.72 s
    window = (0.3, 4.5)  # opens in turn 1's second sentence, closes in turn 3's second one
    kept = measured(wire, window)
    assert kept[0].kind == "mark" and kept[0].name == "t1-s1"  # turn 1's media, playing at the start, is left out
    assert kept[-1].name == "t3-s0"  # nothing after the last mark in the window: those frames' turn is unknown
    assert all(e.t >= window[0] and e.t <= window[1] for e in kept)
    assert sum(e.kind == "media" for e in kept) == 20 + 10
    assert pacing([kept]).underruns == 0
    # cut naively, each run cut by the window starts with no lead: its first late frame is an underrun
    assert pacing([[e for e in wire if window[0] <= e.t <= window[1]]]).underruns == 2


def test_cli_bench_gateway_priority_goes_through_the_autogroup_file(tmp_path: Path) -> None:
    (tmp_path / "41").mkdir()
    (tmp_path / "41" / "autogroup").write_text("/autogroup-7 nice 0\n")
    assert raise_priority(41, NICE, tmp_path)
    assert (tmp_path / "41" / "autogroup").read_text() == str(NICE)
    assert not raise_priority(42, NICE, tmp_path)  # no such process (or no autogroup): nothing raised


def test_cli_bench_gateway_realtime_says_whether_it_took(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        took = realtime(child.pid)
        assert took == (os.sched_getscheduler(child.pid) == os.SCHED_RR)  # root: it takes; otherwise: refused
    finally:
        child.kill()
        child.wait()
    assert not realtime(child.pid, proc=tmp_path)  # no such process


def test_cli_bench_gateway_own_session_leads_a_new_session() -> None:
    code = (
        "import os; from voxcart.cli.bench.gateway_sched import own_session; "
        "own_session(None); print(os.getsid(0) == os.getpid())"
    )
    # in a child process: setsid here would take pytest out of its session
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "True"


def test_cli_bench_gateway_table_shows_each_step_and_why_it_missed() -> None:
    missed = step(calls=100, jitter_ms={"n": 5, "p99": 40.0})
    report = {
        "duration_s": 90.0,
        "host": {"cpus": 2, "load_avg_before": [1.0]},
        "target": {"jitter_p99_ms": 10.0, "underruns": 0, "rss_mib_per_call": 1.0, "cores": 1.0},
        "steps": [
            {**step(), "target": {"met": True, "reasons": []}},
            {**missed, "target": {"met": False, "reasons": verdict(missed)[1]}},
        ],
    }
    text = render(report)
    assert "100 calls miss the target: jitter p99 40.0 ms > 10 ms" in text
    lines = [line.split() for line in text.splitlines() if line.startswith(("200 ", "100 "))]
    assert lines[0][:6] == ["200", "200", "0.50", "400", "0.10", "4.0"] and lines[0][-1] == "yes"
    assert lines[1][-1] == "NO"


async def test_cli_bench_gateway_stand_in_agent_talks_like_tts_until_the_call_ends() -> None:
    bus = MemoryBus()
    downstream = FakeDownstream(bus, sentences=2, sentence_s=0.3, gap_s=0.05, synth_s=0.01)
    await downstream.start()
    sid = "CAfakeagent01"
    try:
        await bus.publish([Output(keys.LIFECYCLE, ev.encode(ev.CallStarted(call_sid=sid)))])
        async with asyncio.timeout(5):
            while downstream.chunks < 12:  # two turns of two sentences of three chunks
                await asyncio.sleep(0.01)
        await bus.publish([Output(keys.LIFECYCLE, ev.encode(ev.CallEnded(call_sid=sid, reason="caller hung up")))])
        async with asyncio.timeout(5):
            while sid in downstream.calls:
                await asyncio.sleep(0.01)
        written = downstream.chunks
        await asyncio.sleep(0.5)
        assert downstream.chunks == written  # nothing more once the call ended
    finally:
        await downstream.stop()
    entries = await bus.range(keys.audio_out(sid))
    chunks = [ev.decode(e.data) for e in entries]
    assert all(isinstance(c, ev.AudioChunk) for c in chunks)
    first = [c for c in chunks if isinstance(c, ev.AudioChunk) and c.turn_no == 1]
    assert [e.id for e in entries[:6]] == ["1-0", "1-1", "1-2", "1-1000", "1-1001", "1-1002"]
    assert [(c.seq, c.k, c.last_in_sentence, c.last_in_turn) for c in first] == [
        (0, 0, False, False),
        (0, 1, False, False),
        (0, 2, True, False),
        (1, 0, False, False),
        (1, 1, False, False),
        (1, 2, True, True),
    ]
    assert all(len(c.payload) == CHUNK_BYTES for c in first)
    assert downstream.started == 1


@pytest.mark.e2e
def test_cli_bench_gateway_three_calls_against_a_real_gateway(tmp_path: Path) -> None:
    options = GatewayOptions(
        steps=[3],
        hold_s=13.0,  # the window then holds the whole first sentences of the agent's second turn (7.5 s in)
        stagger_s=0.1,
        procs=1,
        json_path=str(tmp_path / "gw.json"),
        log_path=str(tmp_path / "gw.log"),
    )
    report = run_gateway_bench(options)
    (s,) = report["steps"]
    assert s["connected"] == 3 and not s["errors"]
    assert s["jitter_ms"]["n"] > 100  # the agent's audio reached the callers, paced
    assert s["agent_audio"]["marks_echoed"] >= 3
    assert s["gateway"]["cores"] > 0 and s["gateway"]["frames_in_per_s"] > 100
    assert (tmp_path / "gw.json").is_file()
