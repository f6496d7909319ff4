"""``voxcart bench soak``: many short calls, ``concurrency`` at a time, through the real Twilio protocol; then
whether the stack stayed flat and clean.

Each call is a short scripted conversation (:func:`~.soak_plan.plan_call`: the greeting, one question, a goodbye;
with ``--short`` the greeting and a goodbye) played by :mod:`voxcart.cli.simulator` against the stack, started
here (on a Redis of its own unless ``--redis-url`` is given, with ``MAX_CALLS`` above the concurrency, the
per-number rate limit off and ``CALL_RETENTION_MS`` cut to ``--retention``) or reached at ``--gateway-url``.
Calls vary: every call has its own caller number, and the question and goodbye rotate over a few phrasings; the
caller's audio is synthesized once per sentence, before any call starts. While the calls run, each process's
memory is sampled (:mod:`.soak_probe`) and the Redis keys are scanned at the end of warm-up and half way; after
the last call, once its retention has passed, every key is audited. The numbers and the verdict are those of
:mod:`.soak_measure`, the report :mod:`.soak_report`'s:

- every call completed (connected, every line answered, no protocol error);
- each service process's memory grew at most ``--max-growth`` % after warm-up (Redis and the bench's own
  process are reported, not bounded: Redis holds the designed 24 h deduplication keys and the capped streams);
- no key without a TTL but the global keys that live without one by design, in any scan;
- none of the calls' own keys left after their retention, and no ended call still held as active or on hold.

Invariants: calls run ``concurrency`` at a time (each slot starts its next call when its call ends); the result
is kept per call as a few numbers, never the call's audio, so the bench's own memory stays flat; the table is
rendered from the same dict ``--json`` writes; the exit code is 0 only when every bound is met.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from voxcart.cli.calling import DEV_AUTH_TOKEN
from voxcart.cli.simulator import CallResult, Line, SimulatorConfig, SimulatorError, simulate_call
from voxcart.common.settings import Settings

from .soak_measure import family_summary, leftover_keys, without_ttl
from .soak_plan import GOODBYES, QUESTIONS, CallPlan, SoakOptions, SoakTarget, plan_call, summarize_call
from .soak_probe import (
    MemorySampler,
    cpu_seconds,
    global_sizes,
    host_cpu,
    open_redis,
    redis_memory,
    scan_keys,
    still_held,
    without_ttl_confirmed,
)
from .soak_report import build_report, render

__all__ = [
    "GOODBYES",
    "QUESTIONS",
    "CallPlan",
    "SoakOptions",
    "SoakTarget",
    "build_report",
    "main",
    "plan_call",
    "run_soak",
    "summarize_call",
]

EXPIRY_MARGIN_S: Final = 3.0
"""After the last call's retention, how much longer its keys may take to go (Redis expires lazily, and workers
finish the call's last commits)."""


# -- the stack -------------------------------------------------------------------------------------------------


def _labels(procs: dict[str, list[int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for svc in ("gateway", "stt", "brain", "tts", "redis"):
        pids = procs.get(svc, [])
        for i, pid in enumerate(pids):
            out[svc if i == 0 else f"{svc}#{i + 1}"] = pid
    return out


def _start_stack(options: SoakOptions, err: TextIO) -> SoakTarget:
    from voxcart.cli.stack import Stack, StackError
    from voxcart.common.localredis import RedisNotFound, start_redis

    retention = options.retention_s or 5.0
    redis = None
    redis_url = options.redis_url
    if not redis_url:  # a Redis of its own: no other stack's workers take these calls, no other keys are audited
        try:
            redis = start_redis(appendonly=False)
        except RedisNotFound as exc:
            raise StackError(str(exc)) from exc
        redis_url = redis.url
    records = tempfile.TemporaryDirectory(prefix="voxcart-soak-")
    env = {
        "MAX_CALLS": str(max(50, options.concurrency + 10)),  # no call waits on hold for a free line
        "CALL_RETENTION_MS": str(round(retention * 1000)),
        "RATE_LIMIT_CALLS": "0",
        "RECORDS_PATH": str(Path(records.name) / "records.sqlite3"),  # not the user's call records
        "LOG_FORMAT": "text",
    }
    log_offset = Path(options.log_path).stat().st_size if Path(options.log_path).exists() else 0
    stack = Stack(redis_url=redis_url, port=0, env=env, log_path=options.log_path)
    print(f"starting the stack (service logs in {options.log_path})...", file=err, flush=True)

    def stop() -> None:
        stack.stop()
        if redis is not None:
            redis.stop()
        records.cleanup()

    try:
        stack.start(timeout=90)
    except BaseException:
        stop()
        raise
    procs = {svc: [p.pid for p in ps] for svc, ps in stack.processes.items()}
    if redis is not None:
        procs["redis"] = [redis.process.pid]
    else:
        from .load_probe import discover

        procs["redis"] = discover(redis_url).get("redis", [])
    shown = {k: v for k, v in env.items() if k != "RECORDS_PATH"}
    return SoakTarget(
        stack.gateway_url, redis_url, _labels(procs), retention, True, shown, options.log_path, log_offset, stop
    )


def _existing_stack(options: SoakOptions, settings: Settings) -> SoakTarget:
    from .load_probe import discover

    assert options.gateway_url is not None
    retention = options.retention_s or settings.call_retention_ms / 1000
    return SoakTarget(options.gateway_url, options.redis_url, _labels(discover(options.redis_url)), retention, False)


# -- the calls -------------------------------------------------------------------------------------------------


def _voice(texts: Sequence[str]) -> dict[str, bytes]:
    from voxcart.cli.caller_voice import synthesize_caller

    return {text: synthesize_caller(text, lead_ms=200, tail_ms=100) for text in texts}


async def _ttl_scan(client: Any, at: str) -> dict[str, Any]:
    keys = await scan_keys(client)
    confirmed = await without_ttl_confirmed(client, without_ttl(keys))
    return {"at": at, "keys": len(keys), "without_ttl": [{"name": k.name, "type": k.type} for k in confirmed[:50]]}


async def _soak(
    target: SoakTarget, options: SoakOptions, settings: Settings, audio: dict[str, bytes], err: TextIO
) -> dict[str, Any]:
    client = open_redis(target.redis_url)
    block = int(time.time()) % 1000
    plans = iter([plan_call(k, block, short=options.short) for k in range(options.calls)])
    calls: list[dict[str, Any]] = []
    scans: list[asyncio.Task[dict[str, Any]]] = []
    redis_mem: dict[str, Any] = {"start": await redis_memory(client)}
    procs = {**target.procs, "caller": os.getpid()}
    sampler = MemorySampler(procs, lambda: len(calls), options.sample_s)
    cpu0, host0 = {label: cpu_seconds(pid) for label, pid in procs.items()}, host_cpu()
    t0 = time.monotonic()
    marks = {options.warmup: "end of warm-up", options.calls // 2: "half way"}

    async def one(plan: CallPlan) -> dict[str, Any]:
        config = SimulatorConfig(
            gateway_url=target.url,
            auth_token=settings.twilio_auth_token or DEV_AUTH_TOKEN,
            public_url=settings.public_url or None,
            from_number=plan.from_number,
            api_token=settings.api_token or None,
            reply_timeout_s=options.reply_timeout_s,
            greeting_timeout_s=options.reply_timeout_s,
            fetch_record=False,
        )
        items = [Line(audio[text], text) for text in plan.lines]
        try:
            result: CallResult | str = await simulate_call(config, items)
        except SimulatorError as exc:
            result = f"call {plan.index} failed: {exc}"
        except Exception as exc:  # one broken call is a result, not the end of the soak
            result = f"call {plan.index} failed: {type(exc).__name__}: {exc}"
        return summarize_call(plan, result, time.monotonic() - t0)

    async def slot(j: int) -> None:
        await asyncio.sleep(j * options.stagger_s)
        for plan in plans:  # one shared iterator: each slot takes the next call when its call ends
            calls.append(await one(plan))
            done = len(calls)
            if done in marks:
                sampler.sample()
                scans.append(asyncio.create_task(_ttl_scan(client, marks[done])))
                if done == options.warmup:
                    redis_mem["warmup"] = await redis_memory(client)
            if done % max(1, options.calls // 10) == 0 or done == options.calls:
                _progress(done, options.calls, calls, sampler, time.monotonic() - t0, err)

    print(
        f"placing {options.calls} calls, {options.concurrency} at a time (retention {target.retention_s:g} s)...",
        file=err,
        flush=True,
    )
    sampler.start()
    try:
        await asyncio.gather(*(slot(j) for j in range(min(options.concurrency, options.calls))))
        calls_s = time.monotonic() - t0
        cpu = _cpu_window(procs, cpu0, host0, calls_s)
        sids = [c["sid"] for c in calls if c["sid"]]
        scan_results = list(await asyncio.gather(*scans))
        scan_results.append(await _ttl_scan(client, "end of calls"))
        print(f"waiting for the calls' keys to expire (retention {target.retention_s:g} s)...", file=err, flush=True)
        last_end = t0 + calls_s
        gone_after = await _wait_expired(client, sids, last_end, last_end + target.retention_s + EXPIRY_MARGIN_S)
        await sampler.stop()
        final = await scan_keys(client, memory=True)
        confirmed = await without_ttl_confirmed(client, without_ttl(final))
        scan_results.append(
            {
                "at": "after retention",
                "keys": len(final),
                "without_ttl": [{"name": k.name, "type": k.type} for k in confirmed[:50]],
            }
        )
        left = leftover_keys(final, sids)
        held = await still_held(client, sids)
        redis_mem["end"] = await redis_memory(client)
        globals_ = await global_sizes(client, final)
    finally:
        await sampler.stop()
        await client.aclose()
    index_held = held.pop("vc:calls:index", 0)
    return {
        "calls_s": calls_s,
        "calls": calls,
        "samples": sampler.samples,
        "scans": scan_results,
        "leftover": {
            "count": len(left),
            "calls": len({k.name.split("{", 1)[1].split("}", 1)[0] for k in left}),
            "examples": [{"name": k.name, "ttl_s": round(k.pttl_ms / 1000, 1)} for k in left[:20]],
            "gone_after_s": gone_after,
        },
        "holding": held,
        "index_held": index_held,
        "families": family_summary(final),
        "globals": globals_,
        "redis": redis_mem,
        "cpu": cpu,
    }


def _cpu_window(
    procs: dict[str, int], before: dict[str, float | None], host_before: tuple[float, float], wall_s: float
) -> dict[str, Any]:
    """CPU cores each process used over the calls (``None``: gone or unreadable) and how busy the machine was."""
    cores: dict[str, float | None] = {}
    for label, pid in procs.items():
        now, then = cpu_seconds(pid), before.get(label)
        cores[label] = round((now - then) / wall_s, 3) if now is not None and then is not None and wall_s else None
    busy, total = host_cpu()
    measured = sum(c for c in cores.values() if c is not None)
    host = round((busy - host_before[0]) / wall_s, 2) if wall_s else None
    return {
        "cores": cores,
        "host_busy_cores": host,
        "host_cores": round((total - host_before[1]) / wall_s, 2) if wall_s else None,
        "others_cores": None if host is None else round(max(0.0, host - measured), 2),
    }


async def _wait_expired(client: Any, sids: Sequence[str], since: float, deadline: float) -> float | None:
    """Poll until no per-call key of ``sids`` is left or ``deadline`` (monotonic) passes; seconds from ``since``
    (the last call's end) to when none was left (``None``: some were still there at the deadline)."""
    while True:
        if not leftover_keys(await scan_keys(client), sids):
            return round(time.monotonic() - since, 1)
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(1.0)


def _progress(
    done: int, total: int, calls: Sequence[dict[str, Any]], sampler: MemorySampler, wall: float, err: TextIO
) -> None:
    failed = sum(not c["ok"] for c in calls)
    last = sampler.samples[-1].rss_kib if sampler.samples else {}
    rss = " ".join(f"{p} {kib / 1024:.0f}" for p, kib in last.items())
    print(f"  {done}/{total} calls, {failed} failed, {wall:.0f} s; RSS MiB: {rss}", file=err, flush=True)


# -- the run ---------------------------------------------------------------------------------------------------


def run_soak(options: SoakOptions, settings: Settings, err: TextIO = sys.stderr) -> dict[str, Any]:
    """Run the soak; returns its JSON-able report (also written to ``options.json_path``).

    Raises:
        StackError: the stack could not be started.
    """
    started = time.monotonic()
    load_before = os.getloadavg()
    texts = sorted({t for k in range(options.calls) for t in plan_call(k, short=options.short).lines})
    print(f"synthesizing the caller's {len(texts)} sentences...", file=err, flush=True)
    audio = _voice(texts)
    target = _start_stack(options, err) if options.gateway_url is None else _existing_stack(options, settings)
    try:
        observed = asyncio.run(_soak(target, options, settings, audio, err))
    finally:
        target.stop()
    report = build_report(options, target, observed, load_before, time.monotonic() - started)
    if options.json_path:
        Path(options.json_path).write_text(json.dumps(report, indent=1))
    return report


def main(settings: Settings, options: SoakOptions, out: TextIO = sys.stdout) -> int:
    """The CLI entry (``voxcart bench soak``): run, print the figures, write the JSON; 0 when every bound is met."""
    from voxcart.cli.stack import StackError

    try:
        report = run_soak(options, settings)
    except (StackError, ValueError) as exc:
        print(f"voxcart bench soak: {exc}", file=sys.stderr)
        return 1
    print(render(report), file=out)
    if options.json_path:
        print(f"JSON written to {options.json_path}", file=out)
    return 0 if report["verdict"]["ok"] else 1
