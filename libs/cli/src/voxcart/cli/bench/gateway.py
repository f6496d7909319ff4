"""``voxcart bench gateway``: the gateway alone under N calls of media, against issue 8's gateway target.

Started here: a Redis of its own and one gateway process, nothing else. A stand-in downstream
(:mod:`~voxcart.cli.bench.gateway_downstream`) makes the agent talk on every call through ``audio.out`` as tts does,
so the gateway paces a reply the whole call long; callers in several processes
(:mod:`~voxcart.cli.bench.gateway_callers`) send a media frame every 20 ms and play what comes back at real time.
Per step (N calls) it reports:

- the gateway's CPU (cores, and calls per core) and memory (growth per call over the fresh gateway), over the
  window in which all N calls are up;
- pacing as the callers heard it: jitter p99 and underruns (the load bench's definitions), and the gateway
  pacer's own underrun counter;
- whether the callers kept time themselves (their tick lateness and loop lag: a late caller looks like a late
  gateway) and whether every call connected;
- the verdict against :data:`TARGET`: jitter p99 <= 10 ms, no underrun, <= 1 MB per call, the calls within one
  core (cores used <= 1).

Invariants: the table is rendered from the dict ``--json`` writes; the bench reports, it does not assert (exit
code 1 only when a step connected no call).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import math
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

from voxcart.cli.calling import DEV_AUTH_TOKEN

from .gateway_callers import CallerPlan, CallerReport, run_callers
from .gateway_downstream import FakeDownstream
from .gateway_report import render
from .gateway_sched import NICE, RT_PRIORITY, raise_priority, realtime
from .load_measure import metric_value, stats
from .load_probe import ResourceSampler, scrape

__all__ = ["TARGET", "GatewayOptions", "main", "parse_steps", "render", "run_gateway_bench", "schedstat", "verdict"]

TARGET: Final = {"jitter_p99_ms": 10.0, "underruns": 0, "rss_mib_per_call": 1.0, "cores": 1.0}
"""Issue 8's gateway target: 200 calls on one core, jitter p99 <= 10 ms at the callers, no underrun, <= 1 MB a call."""
CALLS_PER_PROCESS: Final = 50


@dataclass
class GatewayOptions:
    """What to run.

    Args:
        steps: numbers of calls, one step each.
        hold_s: each call's length once its socket started.
        stagger_s: between two calls' starts.
        procs: caller processes (default: one per :data:`CALLS_PER_PROCESS` calls, at least 2).
        pin: run the gateway alone on one CPU and everything else (Redis, the callers, the stand-in agent) on the
            others, so the callers do not take the gateway's time; and, where allowed, the gateway ahead of other
            work on its CPU (real-time) and each caller process in a session of its own ahead of other work on the
            machine (:mod:`.gateway_sched`): the gateway cannot move away from a busy CPU (see
            ``waited_for_cpu_ms_per_s``).
        json_path: where the result goes (``None``: nowhere).
        log_path: the gateway's log.

    Raises:
        ValueError: an option out of range (the message names it).
    """

    steps: Sequence[int] = (50, 100, 200)
    hold_s: float = 30.0
    stagger_s: float = 0.02
    procs: int | None = None
    pin: bool = False
    json_path: str | None = "voxcart-bench-gateway.json"
    log_path: str = "voxcart-bench-gateway.log"

    def __post_init__(self) -> None:
        if not self.steps or any(not 1 <= n <= 1000 for n in self.steps):
            raise ValueError(f"--calls: each step must be 1..1000 calls; got {list(self.steps)}")
        if not 5 <= self.hold_s <= 600:
            raise ValueError(f"--hold must be 5..600 s; got {self.hold_s}")
        if not 0 <= self.stagger_s <= 1:
            raise ValueError(f"--stagger must be 0..1 s; got {self.stagger_s}")
        if self.procs is not None and not 1 <= self.procs <= 64:
            raise ValueError(f"--procs must be 1..64; got {self.procs}")
        if max(self.steps) * self.stagger_s + 5 >= self.hold_s:
            raise ValueError(
                f"--hold {self.hold_s:g} s is too short: the calls take {max(self.steps) * self.stagger_s:g} s to "
                "start, and the window with every call up needs 5 s more"
            )

    def processes(self, calls: int) -> int:
        return self.procs or max(2, math.ceil(calls / CALLS_PER_PROCESS))


def parse_steps(text: str) -> list[int]:
    """``"50,100,200"`` -> ``[50, 100, 200]``.

    Raises:
        ValueError: not a comma-separated list of whole numbers.
    """
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--calls: expected numbers of calls like 50,100,200; got {text!r}") from None


def verdict(step: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """Whether a step meets :data:`TARGET`; the verdict and what missed it."""
    reasons: list[str] = []
    if step["connected"] < step["calls"]:
        reasons.append(f"{step['calls'] - step['connected']} call(s) did not connect")
    jitter = step["jitter_ms"].get("p99")
    if jitter is None:
        reasons.append("no agent audio measured at the callers")
    elif jitter > TARGET["jitter_p99_ms"]:
        reasons.append(f"jitter p99 {jitter:.1f} ms > {TARGET['jitter_p99_ms']:g} ms")
    underruns = max(step["underruns"]["callers"], step["underruns"]["gateway"])
    if underruns > TARGET["underruns"]:
        reasons.append(f"underruns: callers {step['underruns']['callers']}, gateway {step['underruns']['gateway']:g}")
    if step["gateway"]["rss_mib_per_call"] > TARGET["rss_mib_per_call"]:
        reasons.append(f"{step['gateway']['rss_mib_per_call']:.2f} MiB per call > {TARGET['rss_mib_per_call']:g}")
    if step["gateway"]["cores"] > TARGET["cores"]:
        reasons.append(f"the gateway used {step['gateway']['cores']:.2f} cores > {TARGET['cores']:g}")
    return not reasons, reasons


# -- one step --------------------------------------------------------------------------------------------------


def _merge(reports: Sequence[CallerReport]) -> dict[str, Any]:
    lateness = [x for r in reports for x in r.lateness_ms]
    paced = [r.pacing for r in reports if r.pacing]
    return {
        "connected": sum(r.connected for r in reports),
        "errors": [e for r in reports for e in r.errors][:10],
        "frames_sent": sum(r.frames_sent for r in reports),
        "media_received": sum(r.media_received for r in reports),
        "marks_echoed": sum(r.marks_echoed for r in reports),
        "jitter_ms": stats(lateness, digits=2),
        "runs": sum(p["runs"] for p in paced),
        "caller_underruns": sum(p["underruns"] for p in paced),
        "caller_underrun_ms": round(sum(p["underrun_ms"] for p in paced), 1),
        "tick_late_ms": stats((x for r in reports for x in r.tick_late_ms), digits=2),
        "loop_lag_ms": stats((x for r in reports for x in r.loop_lag_ms), digits=2),
    }


async def run_step(
    options: GatewayOptions,
    calls: int,
    gateway: tuple[str, int, int],
    redis_url: str,
    fresh_rss: dict[str, float],
    err: TextIO,
) -> dict[str, Any]:
    """``calls`` calls against the gateway (``(url, pid, redis pid)``); the step's report."""
    from voxcart.common.bus import RedisBus

    url, pid, redis_pid = gateway
    bus = RedisBus(redis_url)
    downstream = FakeDownstream(bus)
    await downstream.start()
    procs = options.processes(calls)
    start_at = time.time() + 4.0  # the caller processes start (import) meanwhile
    block = 100 + secrets.randbelow(900)
    plans, first = [], 0
    ramp_s = calls * options.stagger_s
    window = (start_at + ramp_s + 2.0, start_at + options.hold_s - 1.0)  # every call up, its first turn going
    for p in range(procs):
        n = calls // procs + (p < calls % procs)
        plans.append(
            CallerPlan(
                url,
                DEV_AUTH_TOKEN,
                first,
                n,
                start_at,
                options.stagger_s,
                options.hold_s,
                window,
                block,
                nice=NICE if options.pin else None,
            )
        )
        first += n
    print(f"{calls} calls from {procs} processes, {options.hold_s:g} s each...", file=err, flush=True)
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    sampler = ResourceSampler({"gateway": [pid], "redis": [redis_pid]})
    for svc, now in sampler.sample().items():  # before any call: growth per call is measured from here
        fresh_rss.setdefault(svc, now.rss_mib)
    with concurrent.futures.ProcessPoolExecutor(max_workers=procs, mp_context=context) as pool:
        futures = [loop.run_in_executor(pool, run_callers, plan) for plan in plans]
        await asyncio.sleep(max(0.0, window[0] - time.time()))
        before = await scrape({"gateway": [urlsplit(url).netloc]})
        sched0 = schedstat(pid)
        sampler.start()
        sampler.idle_rss.update({svc: fresh_rss[svc] for svc in sampler.idle_rss if svc in fresh_rss})
        await asyncio.sleep(max(1.0, window[1] - time.time()))
        cpu_s, wall_s = await sampler.stop()
        sched1 = schedstat(pid)
        after = await scrape({"gateway": [urlsplit(url).netloc]})
        reports: list[CallerReport] = list(await asyncio.gather(*futures))
    await downstream.stop()
    await bus.close()
    merged = _merge(reports)
    gw0, gw1 = before.get("gateway", {}), after.get("gateway", {})

    def delta(name: str) -> float:
        return metric_value(gw1, name) - metric_value(gw0, name)

    cores = cpu_s.get("gateway", 0.0) / wall_s if wall_s > 0 else 0.0
    idle, peak = sampler.idle_rss.get("gateway", 0.0), sampler.peak_rss.get("gateway", 0.0)
    callers_cpu = sum(r.cpu_s for r in reports)
    step: dict[str, Any] = {
        "calls": calls,
        "caller_processes": procs,
        "window_s": round(wall_s, 1),
        "connected": merged["connected"],
        "errors": merged["errors"],
        "gateway": {
            "cores": round(cores, 3),
            "calls_per_core": round(calls / cores, 1) if cores > 0 else None,
            "cpu_ms_per_call_second": round(1000 * cores / calls, 3),
            "rss_mib_idle": round(idle, 1),
            "rss_mib_peak": round(peak, 1),
            "rss_mib_per_call": round(max(0.0, peak - idle) / calls, 3),
            "frames_out_per_s": round(delta("voxcart_ws_frames_out_total") / wall_s, 1) if wall_s > 0 else None,
            "frames_in_per_s": round(delta("voxcart_ws_frames_in_total") / wall_s, 1) if wall_s > 0 else None,
            "waited_for_cpu_ms_per_s": round(1000 * (sched1[1] - sched0[1]) / wall_s, 1)
            if sched0 and sched1 and wall_s > 0
            else None,
        },
        "redis_cores": round(cpu_s.get("redis", 0.0) / wall_s, 3) if wall_s > 0 else None,
        "jitter_ms": merged["jitter_ms"],
        "underruns": {
            "callers": merged["caller_underruns"],
            "callers_ms": merged["caller_underrun_ms"],
            "gateway": delta("voxcart_pacing_underruns_total"),
        },
        "agent_audio": {
            "written_s": round(downstream.bytes / 8000, 1),
            "received_s": round(merged["media_received"] * 0.04, 1),
            "runs": merged["runs"],
            "marks_echoed": merged["marks_echoed"],
        },
        "callers": {
            "frames_sent": merged["frames_sent"],
            "cpu_cores": round(callers_cpu / max(1e-9, options.hold_s + ramp_s), 3),
            "prioritized": sum(r.prioritized for r in reports),
            "tick_late_ms": merged["tick_late_ms"],
            "loop_lag_ms": merged["loop_lag_ms"],
        },
        "host_load_avg": list(os.getloadavg()),
    }
    ok, reasons = verdict(step)
    step["target"] = {"met": ok, "reasons": reasons}
    return step


# -- the run ---------------------------------------------------------------------------------------------------


def schedstat(pid: int, proc: Path = Path("/proc")) -> tuple[float, float] | None:
    """Seconds process ``pid`` has run on a CPU and waited for one (all its threads; ``/proc/<pid>/task/*/
    schedstat``); ``None`` if it is gone or the kernel does not say."""
    ran = waited = 0.0
    try:
        for task in (proc / str(pid) / "task").iterdir():
            fields = (task / "schedstat").read_text().split()
            ran, waited = ran + int(fields[0]) / 1e9, waited + int(fields[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None
    return ran, waited


def _cpus(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """``(the gateway's CPUs, everyone else's)`` when pinning on 2 CPUs or more, else ``(None, None)``."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    if not pin or len(allowed) < 2:
        return None, None
    gateway = {max(allowed)}
    return gateway, allowed - gateway


@contextlib.contextmanager
def _gateway(redis_url: str, log_path: str, cpus: set[int] | None) -> Iterator[tuple[str, int]]:
    """One gateway process (``voxcart serve gateway``) on a free port (on ``cpus`` only, if given), its records in a
    temporary folder; its URL and pid. Stopped (SIGTERM, then SIGKILL after 10 s) on the way out.

    Raises:
        StackError: it exited, or did not answer ``/healthz`` within 30 s.
    """
    from voxcart.cli.stack import Stack, StackError
    from voxcart.common.localredis import free_port

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="voxcart-bench-gateway-") as folder, open(log_path, "ab") as log:
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "PORT": str(port),
            "TWILIO_AUTH_TOKEN": DEV_AUTH_TOKEN,
            "RATE_LIMIT_CALLS": "0",
            "RECORDS_PATH": str(Path(folder) / "records.sqlite3"),
            "LOG_FORMAT": "text",
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        }
        cmd = [sys.executable, "-m", "voxcart.cli.main", "serve", "gateway"]
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None  # before exec: every thread inherits it
        # a session of its own: a scheduling group of its own, not one shared with the callers (.gateway_sched)
        proc = subprocess.Popen(  # noqa: PLW1509
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin, start_new_session=True
        )
        try:
            if proc.poll() is not None:
                raise StackError(f"the gateway exited with code {proc.returncode} (see {log_path})")
            Stack(redis_url=redis_url, port=port).wait_gateway(port)
            yield f"http://127.0.0.1:{port}", proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _prioritize(pid: int) -> str | None:
    """Put the gateway ahead of other work on its CPU (:mod:`.gateway_sched`); how, or ``None`` if not allowed."""
    autogroup = raise_priority(pid)  # also what holds if the real-time policy is refused
    if realtime(pid):
        return f"SCHED_RR {RT_PRIORITY}"
    return f"autogroup nice {NICE}" if autogroup else None


def run_gateway_bench(options: GatewayOptions, err: TextIO = sys.stderr) -> dict[str, Any]:
    """Start Redis and a gateway, run the steps, stop them; the report (also written to ``options.json_path``).

    Raises:
        StackError: Redis or the gateway could not be started.
    """
    from voxcart.cli.stack import StackError
    from voxcart.common.localredis import RedisNotFound, start_redis

    started = time.monotonic()
    gateway_cpus, other_cpus = _cpus(options.pin)
    if other_cpus:
        os.sched_setaffinity(0, other_cpus)  # this process, and what it starts from now on (Redis, the callers)
    try:
        redis = start_redis(appendonly=False)
    except RedisNotFound as exc:
        raise StackError(str(exc)) from exc
    steps: list[dict[str, Any]] = []
    gateway_priority: str | None = None
    load_before = os.getloadavg()
    try:
        print(f"starting Redis and a gateway (its log in {options.log_path})...", file=err, flush=True)
        with _gateway(redis.url, options.log_path, gateway_cpus) as (url, pid):
            if options.pin:
                gateway_priority = _prioritize(pid)
            fresh: dict[str, float] = {}
            for calls in options.steps:
                step = asyncio.run(run_step(options, calls, (url, pid, redis.process.pid), redis.url, fresh, err))
                steps.append(step)
                met = "meets the target" if step["target"]["met"] else "misses: " + "; ".join(step["target"]["reasons"])
                print(f"{calls} calls: {met}", file=err, flush=True)
    finally:
        redis.stop()
    report: dict[str, Any] = {
        "bench": "gateway",
        "version": 1,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg())},
        "options": asdict(options),
        "cpus": {"gateway": sorted(gateway_cpus or []), "others": sorted(other_cpus or [])},
        "priority": {"gateway": gateway_priority, "callers_autogroup_nice": NICE if options.pin else None},
        "target": dict(TARGET),
        "steps": steps,
        "duration_s": round(time.monotonic() - started, 1),
    }
    if options.json_path:
        Path(options.json_path).write_text(json.dumps(report, indent=1))
    return report


def main(options: GatewayOptions, out: TextIO = sys.stdout) -> int:
    """The CLI entry (``voxcart bench gateway``): run, print the table, write the JSON; returns the exit code."""
    from voxcart.cli.stack import StackError

    try:
        report = run_gateway_bench(options)
    except StackError as exc:
        print(f"voxcart bench gateway: {exc}", file=sys.stderr)
        return 1
    print(render(report), file=out)
    if options.json_path:
        print(f"JSON written to {options.json_path}", file=out)
    return 0 if all(s["connected"] for s in report["steps"]) else 1
