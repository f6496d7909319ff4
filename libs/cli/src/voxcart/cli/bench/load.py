"""``voxcart bench load``: N concurrent simulated calls through the real Twilio protocol against the real stack.

Each call is the same scripted conversation (:data:`SCRIPT`: three questions, one of them talked over, and a
goodbye) played by :mod:`voxcart.cli.simulator` against the stack, started here on a Redis of its own (as
``voxcart bench bargein`` does) or reached at ``--gateway-url``. Per step (N calls, started ``stagger_s``
apart) the bench reports, with the definitions of :mod:`~voxcart.cli.bench.load_measure`:

- caller-side turn latency p50/p95/p99, and its breakdown from each call's own bus entries (endpointing,
  recognition, brain, tts, delivery; end of speech decided -> first reply frame sent);
- barge-in reaction (interruption onset -> ``clear`` received), as the barge-in bench measures it;
- outbound pacing: jitter and underruns as the caller heard them, and the gateway pacer's own underrun counter;
- the services' Prometheus histograms over the step (inbound bus age, publish time, decision, first chunk);
- CPU and memory per service and per call (``/proc``), and the bench's own (``caller``);
- whether the step held real time (:data:`~voxcart.cli.bench.load_measure.BOUNDS`).

``--ramp 5,10,20`` runs steps of growing N and stops after the first that does not hold real time: the largest
that held is ``max_realtime_calls``. ``--runs 3`` runs each step three times and reports the medians
(:mod:`~voxcart.cli.bench.load_runs`); ``--replicas stt=2`` starts two stt processes (a stack started here).
``--baseline inproc`` then runs the largest N again in this process without the bus
(:mod:`~voxcart.cli.bench.load_inproc`, after the stack is stopped), and reports what the bus adds per turn.
``--compare FILE`` prints ratios against an earlier ``--json``; ``--chart FILE`` draws a PNG.

Invariants: the callers' audio is synthesized before any call starts; the table is rendered from the same dict
``--json`` writes; the bench reports, it does not assert: the exit code is 1 only when a step could not measure
any turn, or a call failed outright.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

from voxcart.cli.calling import DEV_AUTH_TOKEN
from voxcart.cli.simulator import CallResult, Line, Overlap, SimulatorConfig, SimulatorError, simulate_call
from voxcart.common.settings import Settings

from .bargein_measure import measure_call
from .load_measure import (
    BOUNDS,
    Pacing,
    TurnTiming,
    compare,
    hist_summary,
    metric_value,
    pacing,
    realtime_verdict,
    targets,
    timeline_breakdown,
)
from .load_measure import stats as stats_of
from .load_probe import ResourceSampler, discover, metrics_targets, resource_report, scrape, turn_timings
from .load_report import render
from .load_runs import median_step
from .load_script import QUICK_SCRIPT, SCRIPT, LoadOptions, ScriptItem, parse_ramp, parse_replicas, read_script

__all__ = [
    "QUICK_SCRIPT",
    "SCRIPT",
    "LoadOptions",
    "ScriptItem",
    "main",
    "parse_ramp",
    "parse_replicas",
    "read_script",
    "render",
    "run_load_bench",
]


HISTOGRAMS: Final = {
    "gateway": ("voxcart_turn_latency_seconds", "voxcart_turn_reply_delivery_seconds", "voxcart_bus_publish_seconds"),
    "stt": ("voxcart_bus_frame_age_seconds", "voxcart_stt_endpointing_seconds", "voxcart_stt_recognition_seconds"),
    "brain": ("voxcart_brain_decision_seconds",),
    "tts": ("voxcart_tts_first_chunk_seconds",),
}
"""The services' histograms reported per step."""


# -- the stack -------------------------------------------------------------------------------------------------


@dataclass
class _Target:
    url: str
    redis_url: str
    procs: dict[str, list[int]]
    metrics: dict[str, list[str]]
    stop: Callable[[], None] = lambda: None


def _start_stack(options: LoadOptions, settings: Settings, err: TextIO) -> _Target:
    from voxcart.cli.stack import Stack, StackError
    from voxcart.common.localredis import RedisNotFound, start_redis

    redis = None
    redis_url = settings.redis_url
    if not redis_url:  # a Redis of its own: workers of another stack must not take these calls
        try:
            redis = start_redis(appendonly=False)
        except RedisNotFound as exc:
            raise StackError(str(exc)) from exc
        redis_url = redis.url
    replicas = {svc: options.replicas.get(svc, 1) for svc in ("stt", "brain", "tts")}
    stack = Stack(redis_url=redis_url, port=0, replicas=replicas, log_path=options.log_path)
    print(f"starting the stack (service logs in {options.log_path})...", file=err, flush=True)

    def stop() -> None:
        stack.stop()
        if redis is not None:
            redis.stop()

    try:
        stack.start(timeout=90)
    except BaseException:
        stop()
        raise
    procs = {svc: [p.pid for p in ps] for svc, ps in stack.processes.items()}
    procs["redis"] = [redis.process.pid] if redis is not None else discover(redis_url).get("redis", [])
    return _Target(stack.gateway_url, redis_url, procs, stack.metrics_targets(), stop)


def _existing_stack(options: LoadOptions, settings: Settings) -> _Target:
    assert options.gateway_url is not None
    redis_url = options.redis_url or settings.redis_url
    procs = discover(redis_url) if redis_url else {}
    netloc = urlsplit(options.gateway_url).netloc
    return _Target(options.gateway_url, redis_url, procs, metrics_targets(procs, netloc))


# -- one step --------------------------------------------------------------------------------------------------


def _items(script: Sequence[ScriptItem], voice: Callable[[str], bytes]) -> list[Line | Overlap]:
    return [
        Line(voice(s.text), s.text) if s.over_ms is None else Overlap(voice(s.text), "interruption", s.over_ms, s.text)
        for s in script
    ]


async def _loop_lag(samples: list[float], stop: asyncio.Event) -> None:
    """How late this process's event loop wakes from 10 ms sleeps (the callers' own timing error)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(0.01)
        samples.append((loop.time() - start - 0.01) * 1000)


async def _wait_idle(target: _Target, timeout_s: float = 30.0) -> None:
    """Until the gateway has no live media socket (the previous step's calls are gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        gateway = (await scrape({"gateway": target.metrics.get("gateway", [])})).get("gateway", {})
        if metric_value(gateway, "voxcart_active_calls") <= 0:
            return
        await asyncio.sleep(0.5)


async def _timelines(redis_url: str, sids: Sequence[str]) -> tuple[list[TurnTiming], str | None]:
    if not redis_url:
        return [], "no Redis URL for this stack (set REDIS_URL or --redis-url): no per-turn breakdown"
    from voxcart.common.bus import RedisBus

    bus = RedisBus(redis_url)
    try:
        timings = [t for sid in sids for t in await turn_timings(bus, sid)]
    except Exception as exc:
        return [], f"could not read the calls' bus entries: {exc}"
    finally:
        await bus.close()
    return timings, None


async def run_step(
    target: _Target,
    settings: Settings,
    items: Sequence[Line | Overlap],
    calls: int,
    stagger_s: float,
    err: TextIO,
    fresh_rss: dict[str, float],
) -> dict[str, Any]:
    """``calls`` concurrent calls of ``items``; the step's report (see the module docstring).

    Memory per call is the growth over ``fresh_rss``, the stack's memory before its first step (filled in by the
    first step): Python seldom gives memory back, so a later step measured from its own start would understate.
    """
    await _wait_idle(target)
    before = await scrape(target.metrics)
    sampler = ResourceSampler(target.procs)
    lag: list[float] = []
    stop_lag = asyncio.Event()
    lag_task = asyncio.create_task(_loop_lag(lag, stop_lag))
    done = 0
    block = 100 + secrets.randbelow(900)  # fresh caller numbers per step: the gateway rate-limits each number

    async def one(k: int) -> CallResult | str:
        nonlocal done
        await asyncio.sleep(k * stagger_s)
        config = SimulatorConfig(
            gateway_url=target.url,
            auth_token=settings.twilio_auth_token or DEV_AUTH_TOKEN,
            public_url=settings.public_url or None,
            from_number=f"+1555{block}{k:04d}",
            api_token=settings.api_token or None,
            reply_timeout_s=15.0,
            greeting_timeout_s=15.0,
            fetch_record=False,
        )
        try:
            result: CallResult | str = await simulate_call(config, items)
        except SimulatorError as exc:
            result = f"call {k} failed: {exc}"
        done += 1
        if done % max(1, calls // 5) == 0 or done == calls:
            print(f"  {done}/{calls} calls done", file=err, flush=True)
        return result

    print(f"placing {calls} call(s), {stagger_s:g} s apart...", file=err, flush=True)
    sampler.start()
    for svc, rss in sampler.idle_rss.items():
        sampler.idle_rss[svc] = fresh_rss.setdefault(svc, rss)
    results = await asyncio.gather(*(one(k) for k in range(calls)))
    cpu_s, wall_s = await sampler.stop()
    stop_lag.set()
    await lag_task
    after = await scrape(target.metrics)
    ok = [r for r in results if isinstance(r, CallResult)]
    timings, timeline_note = await _timelines(target.redis_url, [r.call_sid for r in ok])
    in_progress = sum(r.duration_s for r in ok) / wall_s if wall_s > 0 else 0.0
    caller_pacing = pacing((r.wire for r in ok), Pacing(lateness_ms=[]))
    reactions = [o.reaction_s * 1000 for r in ok for o in measure_call(r) if o.reaction_s is not None]
    overlapped = [o for r in ok for o in measure_call(r) if o.kind == "interruption" and o.overlapped]
    latencies = [t.latency_s * 1000 for r in ok for t in r.turns if t.latency_s is not None and t.kind != "greeting"]
    gw = after.get("gateway", {})
    gw0 = before.get("gateway", {})
    step: dict[str, Any] = {
        "calls": calls,
        "stagger_s": stagger_s,
        "duration_s": round(wall_s, 1),
        "call_duration_s": stats_of(r.duration_s for r in ok),
        "failed_calls": [r for r in results if isinstance(r, str)],
        "protocol_errors": sorted({e for r in ok for e in r.errors})[:10],
        "timed_out_turns": sum(t.timed_out for r in ok for t in r.turns if t.kind != "interruption"),
        "turn_latency_ms": stats_of(latencies),
        "greeting_latency_ms": stats_of(
            t.latency_s * 1000 for r in ok for t in r.turns if t.kind == "greeting" and t.latency_s is not None
        ),
        "breakdown_ms": timeline_breakdown(timings),
        "breakdown_turns": len(timings),
        "breakdown_note": timeline_note,
        "barge_in_ms": stats_of(reactions),
        "barge_in_missed": sum(o.missed for o in overlapped),
        "interruptions": len(overlapped),
        "pacing": {
            "caller": caller_pacing.as_dict(),
            "gateway_underruns": metric_value(gw, "voxcart_pacing_underruns_total")
            - metric_value(gw0, "voxcart_pacing_underruns_total"),
            "gateway_underrun_ms": round(
                1000
                * (
                    metric_value(gw, "voxcart_pacing_underrun_seconds_total")
                    - metric_value(gw0, "voxcart_pacing_underrun_seconds_total")
                ),
                1,
            ),
        },
        "histograms": {
            svc: {name: hist_summary(before.get(svc, {}), after.get(svc, {}), name) for name in names}
            for svc, names in HISTOGRAMS.items()
        },
        "resources": resource_report(cpu_s, wall_s, sampler.idle_rss, sampler.peak_rss, in_progress),
        "unseen_services": sorted({"gateway", "stt", "brain", "tts", "redis"} - set(target.procs)),
        "caller_loop_lag_ms": stats_of(lag, digits=2),
        "latencies_ms": [round(x, 1) for x in latencies],
    }
    holds, reasons = realtime_verdict(step)
    step["realtime"] = {"holds": holds, "reasons": reasons}
    return step


def _bus_added(step: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """What the bus (and the websocket, the pacer) add per turn: the stack's gateway-side turn (last voiced frame
    arrived -> first reply frame sent) minus the in-process turn (last voiced frame fed -> first chunk ready)."""
    stack = step["breakdown_ms"].get("gateway_turn", {})
    inproc = baseline["segments_ms"].get("turn", {})
    out: dict[str, Any] = {"calls": step["calls"]}
    if not stack.get("n") or not inproc.get("n"):
        out["note"] = "no turn measured on one side"
        return out
    for key in ("p50", "p95", "p99"):
        out[key] = round(stack[key] - inproc[key], 1)
        out[f"ratio_{key}"] = round(stack[key] / inproc[key], 3) if inproc[key] > 0 else None
    return out


# -- the run ---------------------------------------------------------------------------------------------------


def _voice() -> Callable[[str], bytes]:
    from voxcart.cli.caller_voice import synthesize_caller

    @functools.cache
    def say(text: str) -> bytes:
        return synthesize_caller(text, lead_ms=200, tail_ms=100)

    return say


def run_load_bench(options: LoadOptions, settings: Settings, err: TextIO = sys.stderr) -> dict[str, Any]:
    """Run the bench; returns its JSON-able report (also written to ``options.json_path``).

    Raises:
        StackError: the stack could not be started.
        ValueError: ``compare_path`` is not a readable load bench result.
    """
    earlier = _read_earlier(options.compare_path) if options.compare_path else None
    started = time.monotonic()
    print("synthesizing the caller's lines...", file=err, flush=True)
    voice = _voice()
    items = _items(options.script, voice)
    target = _start_stack(options, settings, err) if options.gateway_url is None else _existing_stack(options, settings)
    steps: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    fresh_rss: dict[str, float] = {}
    try:
        for calls in options.steps:
            runs = []
            for run in range(options.runs):
                if options.runs > 1:
                    print(f"{calls} calls, run {run + 1} of {options.runs}", file=err, flush=True)
                runs.append(asyncio.run(run_step(target, settings, items, calls, options.stagger_s, err, fresh_rss)))
            step = median_step(runs)
            steps.append(step)
            verdict = (
                "holds" if step["realtime"]["holds"] else "NOT real time: " + "; ".join(step["realtime"]["reasons"])
            )
            print(f"{calls} calls: {verdict}", file=err, flush=True)
            if not step["realtime"]["holds"]:
                break
    finally:
        target.stop()
    held = [s["calls"] for s in steps if s["realtime"]["holds"]]
    report: dict[str, Any] = {
        "bench": "load",
        "version": 1,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg())},
        "gateway_url": options.gateway_url or "(started here)",
        "runs": options.runs,
        "replicas": {svc: options.replicas.get(svc, 1) for svc in ("stt", "brain", "tts")}
        if not options.gateway_url
        else None,
        "script": [{"text": s.text, "over_ms": s.over_ms} for s in options.script],
        "bounds": dict(BOUNDS),
        "steps": steps,
        "max_realtime_calls": max(held) if held else None,
    }
    if options.baseline == "inproc" and steps:
        from .load_inproc import run_inproc

        calls = steps[-1]["calls"]
        print(f"in-process baseline: {calls} call(s) without the bus...", file=err, flush=True)
        lines = [voice(s.text) for s in options.script]
        baseline = asyncio.run(run_inproc(settings, lines, calls, stagger_s=options.stagger_s))
        baseline["bus_added_ms"] = _bus_added(steps[-1], baseline)
        report["baseline"] = baseline
    report["targets"] = targets(report)
    report["duration_s"] = round(time.monotonic() - started, 1)
    if earlier is not None:
        report["compare"] = {"file": options.compare_path, "rows": compare(report, earlier)}
    if options.json_path:
        Path(options.json_path).write_text(json.dumps(report, indent=1))
    if options.chart_path:
        from .load_chart import draw_chart

        draw_chart(report, options.chart_path)
    return report


def _read_earlier(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"--compare {path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("bench") != "load":
        raise ValueError(f"--compare {path}: not a `voxcart bench load --json` result")
    return data


def main(settings: Settings, options: LoadOptions, out: TextIO = sys.stdout) -> int:
    """The CLI entry (``voxcart bench load``): run, print the table, write the JSON; returns the exit code."""
    from voxcart.cli.stack import StackError

    try:
        report = run_load_bench(options, settings)
    except (StackError, ValueError) as exc:
        print(f"voxcart bench load: {exc}", file=sys.stderr)
        return 1
    print(render(report), file=out)
    for what, path in (("JSON", options.json_path), ("chart", options.chart_path)):
        if path:
            print(f"{what} written to {path}", file=out)
    measured = all(s["turn_latency_ms"].get("n") for s in report["steps"])
    failed = any(s["failed_calls"] for s in report["steps"])
    return 0 if measured and not failed and report["steps"] else 1
