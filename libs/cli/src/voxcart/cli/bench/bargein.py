"""``voxcart bench bargein``: how fast and how well the agent yields to a caller who talks over it.

Scripted calls (:mod:`~voxcart.cli.bench.bargein_script`) go through the real Twilio protocol
(:mod:`voxcart.cli.simulator`) to the real stack, started here as ``voxcart demo`` does (on a Redis of its
own unless ``REDIS_URL`` is set, so no other stack's workers take its calls) or reached at ``--gateway-url``.
The caller interrupts replies early, mid and late, says "uh huh" over them, coughs, slams doors, plays
hold-music-like tones and pauses; the simulator times every websocket message, and
:mod:`~voxcart.cli.bench.bargein_measure` turns the timelines into the numbers (its docstring defines them):
barge-in reaction p50/p95/max, stale audio after ``clear``, missed interruptions, false interruptions by
backchannels and by noise. The gateway's own ``voxcart_barge_in_reaction_seconds`` histogram is scraped before
and after, for comparison (bucket-resolution quantiles).

The targets (issue 5) are printed beside the numbers; the bench reports, it does not assert them: the exit
code is 1 only when no interruption could be measured or a call failed outright.

Invariants: calls run ``concurrency`` at a time (the stack shares 2 cores with the caller's synthesis, which is
done before any call starts); the table is rendered from the same dict that ``--json`` writes.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

import httpx

from voxcart.cli.calling import DEV_AUTH_TOKEN
from voxcart.cli.simulator import CallResult, SimulatorConfig, SimulatorError, simulate_call
from voxcart.common.settings import Settings

from .bargein_measure import (
    ItemOutcome,
    histogram_delta,
    histogram_quantile,
    measure_call,
    parse_histogram,
    summarize,
)
from .bargein_script import CallPlan, plan_call
from .report import table

__all__ = ["DEFAULT_CALLS", "BargeInOptions", "main", "render", "run_bargein_bench"]

DEFAULT_CALLS: Final = 15
"""15 full calls: 60 interruptions (a few land after a short reply has ended: still >= 50 overlapping), 30
backchannels, 30 noise bursts, 15 pauses."""
GATEWAY_HISTOGRAM: Final = "voxcart_barge_in_reaction_seconds"
TARGETS: Final = {
    "reaction_p95_ms": "<= 300",
    "stale_bytes_total": "0",
    "backchannel_false_rate": "<= 5 %",
    "noise_false_rate": "<= 5 %",
    "missed_rate": "<= 5 %",
}


class BargeInOptions:
    """What to run.

    Args:
        calls: how many scripted calls (``quick`` makes it 1 short call).
        quick: one short call (2 interruptions, 1 backchannel, 1 noise burst): seconds, not minutes.
        gateway_url: a running gateway to call; ``None`` starts the stack here.
        concurrency: calls at a time.
        json_path: where to write the full result, or ``None``.
        log_path: the started stack's service logs.

    Raises:
        ValueError: ``calls`` or ``concurrency`` out of range.
    """

    def __init__(
        self,
        *,
        calls: int = DEFAULT_CALLS,
        quick: bool = False,
        gateway_url: str | None = None,
        concurrency: int = 2,
        json_path: str | None = None,
        log_path: str = "voxcart-bench-bargein.log",
    ) -> None:
        if not 1 <= calls <= 500:
            raise ValueError(f"--calls must be 1..500; got {calls}")
        if not 1 <= concurrency <= 16:
            raise ValueError(f"--concurrency must be 1..16; got {concurrency}")
        self.calls, self.quick, self.concurrency = (1 if quick else calls), quick, concurrency
        self.gateway_url = gateway_url.rstrip("/") if gateway_url else None
        self.json_path = Path(json_path) if json_path else None
        self.log_path = log_path


def _voice() -> Callable[[str], bytes]:
    from voxcart.cli.caller_voice import synthesize_caller

    @functools.cache
    def say(text: str) -> bytes:
        return synthesize_caller(text, lead_ms=200, tail_ms=100)

    return say


async def _scrape(url: str) -> dict[float, float]:
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            r = await http.get(f"{url}/metrics")
        return parse_histogram(r.text, GATEWAY_HISTOGRAM) if r.status_code == 200 else {}
    except httpx.HTTPError:
        return {}


async def _run_calls(
    url: str, settings: Settings, plans: Sequence[CallPlan], concurrency: int, err: TextIO
) -> list[CallResult | str]:
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(plan: CallPlan) -> CallResult | str:
        nonlocal done
        config = SimulatorConfig(
            gateway_url=url,
            auth_token=settings.twilio_auth_token or DEV_AUTH_TOKEN,
            public_url=settings.public_url or None,
            from_number=f"+1555020{plan.index:04d}",
            api_token=settings.api_token or None,
            reply_timeout_s=15.0,
        )
        async with gate:
            try:
                result: CallResult | str = await simulate_call(config, plan.items)
            except SimulatorError as exc:
                result = f"call {plan.index} failed: {exc}"
        done += 1
        print(f"  call {done}/{len(plans)} done", file=err, flush=True)
        return result

    return list(await asyncio.gather(*(one(p) for p in plans)))


def _turns(call: CallResult) -> list[dict[str, Any]]:
    return [
        {
            "kind": t.kind,
            "caller": t.caller,
            "agent": t.agent_text,
            "voice_start_s": t.voice_start_s,
            "caller_end_s": t.caller_end_s,
            "heard_start_s": t.heard_start_s,
            "overlapped": t.overlapped,
            "clears": t.clears,
            "timed_out": t.timed_out,
        }
        for t in call.turns
    ]


def _wire(call: CallResult) -> list[list[Any]]:
    return [[round(e.t, 4), e.kind, e.name, e.nbytes, e.voiced, e.cleared, e.turn] for e in call.wire]


def _item(outcome: ItemOutcome, position: str, at_ms: float) -> dict[str, Any]:
    return {**outcome.as_dict(), "position": position, "at_ms": at_ms}


def run_bargein_bench(options: BargeInOptions, settings: Settings, err: TextIO = sys.stderr) -> dict[str, Any]:
    """Run the bench and return its JSON-able report (also written to ``options.json_path``)."""
    started = time.monotonic()
    voice = _voice()
    print("synthesizing the caller's lines...", file=err, flush=True)
    plans = [plan_call(i, voice, quick=options.quick) for i in range(options.calls)]
    stack, redis = None, None
    if options.gateway_url is None:
        from voxcart.cli.stack import Stack, StackError
        from voxcart.common.localredis import RedisNotFound, start_redis

        redis_url = settings.redis_url
        if not redis_url:  # a Redis of its own: workers of another stack must not take these calls
            try:
                redis = start_redis(appendonly=False)
            except RedisNotFound as exc:
                raise StackError(str(exc)) from exc
            redis_url = redis.url
        stack = Stack(redis_url=redis_url, port=0, log_path=options.log_path)
        print(f"starting the stack (service logs in {options.log_path})...", file=err, flush=True)
        try:
            stack.start()
        except BaseException:
            stack.stop()
            if redis is not None:
                redis.stop()
            raise
        url = stack.gateway_url
    else:
        url = options.gateway_url
    try:
        before = asyncio.run(_scrape(url))
        calls_started = time.monotonic()
        print(f"placing {len(plans)} call(s), {options.concurrency} at a time...", file=err, flush=True)
        results = asyncio.run(_run_calls(url, settings, plans, options.concurrency, err))
        calls_s = time.monotonic() - calls_started
        after = asyncio.run(_scrape(url))
    finally:
        if stack is not None:
            stack.stop()
        if redis is not None:
            redis.stop()
    calls = [r for r in results if isinstance(r, CallResult)]
    failures = [r for r in results if isinstance(r, str)]
    items: list[dict[str, Any]] = []
    outcomes: list[ItemOutcome] = []
    per_call: list[dict[str, Any]] = []
    for plan, result in zip(plans, results, strict=True):
        if isinstance(result, str):
            continue
        measured = measure_call(result)
        outcomes += measured
        rows = [_item(o, p.position, p.at_ms) for o, p in zip(measured, plan.planned, strict=False)]
        items += rows
        bad = any(o.missed or o.false_interruption for o in measured) or any(t.timed_out for t in result.turns)
        per_call.append(
            {
                "index": plan.index,
                "call_sid": result.call_sid,
                "ok": not bad and not result.errors,
                "errors": result.errors,
                "duration_s": round(result.duration_s, 1),
                "marks_played": result.marks_played,
                "marks_cleared": result.marks_cleared,
                "cleared_bytes": result.cleared_bytes,
                "turns": _turns(result),
                # the raw timeline of a call that went wrong: [t, kind, name, nbytes, voiced, cleared, turn]
                "wire": [] if not bad and not result.errors else _wire(result),
            }
        )
    summary = summarize(outcomes, calls)
    delta = histogram_delta(before, after)
    gateway = {
        "count": int(max(delta.values(), default=0)),
        "p50_le_ms": _ms(histogram_quantile(delta, 0.5)),
        "p95_le_ms": _ms(histogram_quantile(delta, 0.95)),
    }
    positions: dict[str, list[float]] = {}
    for row in items:
        if row["kind"] == "interruption" and row["reaction_s"] is not None:
            positions.setdefault(row["position"], []).append(round(row["reaction_s"] * 1000, 1))
    report: dict[str, Any] = {
        "calls": len(plans),
        "failed_calls": failures,
        "quick": options.quick,
        "concurrency": options.concurrency,
        "gateway_url": options.gateway_url or "(started here)",
        "duration_s": round(time.monotonic() - started, 1),
        "calls_duration_s": round(calls_s, 1),
        "load_avg": list(os.getloadavg()),
        "summary": summary.as_dict(),
        "reaction_ms_by_position": positions,
        "gateway_histogram": gateway,
        "targets": TARGETS,
        "items": items,
        "per_call": per_call,
    }
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(report, indent=2, default=str))
    return report


def _ms(seconds: float | None) -> float | str | None:
    if seconds is None:
        return None
    return "inf" if seconds == float("inf") else round(seconds * 1000, 1)


def _fmt_ms(value: Any) -> str:
    return "-" if value is None else f"{value:.0f} ms" if isinstance(value, float | int) else str(value)


def _fmt_rate(hits: int, total: int, rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f} % ({hits}/{total})"


def render(report: dict[str, Any], failures_shown: int = 5) -> str:
    """The report as a table, followed by the transcripts of up to ``failures_shown`` calls that went wrong."""
    s = report["summary"]
    gw = report["gateway_histogram"]
    positions = report["reaction_ms_by_position"]
    overlapped = ", ".join(f"{k} {v}" for k, v in sorted(s["not_overlapping"].items())) or "none"
    head = (
        f"barge-in bench: {report['calls']} call(s) in {report['calls_duration_s']:.0f} s "
        f"(total {report['duration_s']:.0f} s, {report['concurrency']} at a time, load {report['load_avg'][0]:.1f}); "
        f"{s['interruptions']} interruptions, {s['backchannels']} backchannels, {s['noises']} noise bursts "
        f"overlapping the agent; not overlapping (reply already over): {overlapped}"
    )
    n = len(s["reactions_ms"])
    rows = [
        [
            "reaction p50 / p95 / max",
            f"{_fmt_ms(s['reaction_p50_ms'])} / {_fmt_ms(s['reaction_p95_ms'])} / {_fmt_ms(s['reaction_max_ms'])}"
            f" ({n} cleared)",
            "p95 <= 300 ms",
        ],
        *(
            [f"  reaction median, {pos}", f"{sorted(v)[len(v) // 2]:.0f} ms ({len(v)})", ""]
            for pos, v in sorted(positions.items())
        ),
        [
            "gateway histogram p50 / p95",
            f"<= {_fmt_ms(gw['p50_le_ms'])} / <= {_fmt_ms(gw['p95_le_ms'])} ({gw['count']} obs.)",
            "",
        ],
        [
            "stale audio after clear",
            f"{s['stale_bytes_total']} B total, {s['stale_bytes_per_interruption'] or 0:.0f} B/interruption "
            f"({s['clears']} clears; {s['unattributed_bytes_total']} B unattributed)",
            "0",
        ],
        ["missed interruptions", _fmt_rate(s["missed"], s["interruptions"], s["missed_rate"]), "<= 5 %"],
        [
            "false interruptions: backchannel",
            _fmt_rate(s["backchannel_false"], s["backchannels"], s["backchannel_false_rate"])
            + f", {s['stops'].get('backchannel', 0)} by stop",
            "<= 5 %",
        ],
        [
            "false interruptions: noise",
            _fmt_rate(s["noise_false"], s["noises"], s["noise_false_rate"]) + f", {s['stops'].get('noise', 0)} by stop",
            "<= 5 %",
        ],
        [
            "long pauses",
            f"{s['pauses']}: agent spoke into {s['pauses_agent_spoke']}, {s['pause_clears']} clears during them",
            "",
        ],
    ]
    out = [head, "", table(["measure", "value", "target"], rows)]
    for failure in report["failed_calls"]:
        out.append(f"FAILED: {failure}")
    bad = [c for c in report["per_call"] if not c["ok"]]
    items_by_call: dict[str, list[dict[str, Any]]] = {}
    for row in report["items"]:
        items_by_call.setdefault(row["call_sid"], []).append(row)
    for call in bad[:failures_shown]:
        out += ["", f"call {call['index']} ({call['call_sid']}): {', '.join(call['errors']) or 'see below'}"]
        flagged = {
            r["turn"]: r for r in items_by_call.get(call["call_sid"], []) if r["missed"] or r["false_interruption"]
        }
        for i, turn in enumerate(call["turns"]):
            note = ""
            if i in flagged:
                r = flagged[i]
                note = "  <- MISSED" if r["missed"] else "  <- FALSE INTERRUPTION" + (" (stop)" if r["stopped"] else "")
            timed = " (timed out)" if turn["timed_out"] else ""
            clears = f" [clear x{turn['clears']}]" if turn["clears"] else ""
            out.append(f"  caller ({turn['kind']}): {turn['caller'] or '-'}{note}")
            out.append(f"  agent: {turn['agent'] or '(audio)'}{clears}{timed}")
    if len(bad) > failures_shown:
        out.append(f"... and {len(bad) - failures_shown} more calls with a miss, a false interruption or a timeout")
    return "\n".join(out)


def main(
    settings: Settings,
    *,
    calls: int,
    quick: bool,
    gateway_url: str | None,
    concurrency: int,
    json_path: str | None,
    log_path: str,
    out: TextIO = sys.stdout,
) -> int:
    """The CLI entry (``voxcart bench bargein``): run, print the table, write the JSON; returns the exit code."""
    from voxcart.cli.stack import StackError

    try:
        options = BargeInOptions(
            calls=calls,
            quick=quick,
            gateway_url=gateway_url,
            concurrency=concurrency,
            json_path=json_path,
            log_path=log_path,
        )
    except ValueError as exc:
        print(f"voxcart bench bargein: {exc}", file=sys.stderr)
        return 2
    try:
        report = run_bargein_bench(options, settings)
    except StackError as exc:
        print(f"voxcart bench bargein: {exc}", file=sys.stderr)
        return 1
    print(render(report), file=out)
    if options.json_path is not None:
        print(f"JSON written to {options.json_path}", file=out)
    measured = report["summary"]["interruptions"] > 0
    return 0 if measured and not report["failed_calls"] else 1
