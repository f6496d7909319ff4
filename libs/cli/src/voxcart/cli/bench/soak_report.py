"""The soak's report: built from what the run observed (:func:`build_report`, what ``--json`` writes), and as
text (:func:`render`): calls, memory and CPU per process, Redis keys, errors, findings and the verdict.

Invariants: :func:`render` reads only the report dict, so the text and the JSON never disagree; a figure that
could not be measured is shown as ``-``, never as zero; the verdict is :func:`~.soak_measure.verdict`'s.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from .report import table
from .soak_measure import memory_growth, percentiles, verdict
from .soak_plan import SoakOptions, SoakTarget
from .soak_probe import count_log_errors

__all__ = ["UNBOUNDED", "build_report", "render"]

UNBOUNDED: Final = ("redis", "caller")
"""Processes whose memory is reported but not bounded: Redis holds the designed 24 h deduplication keys and the
capped streams; ``caller`` is the bench itself."""


def _pcts(stats: Mapping[str, Any], unit: str = "s") -> str:
    if not stats.get("n"):
        return "-"
    return f"{stats['p50']:g} / {stats['p95']:g} / {stats['max']:g} {unit} (n={stats['n']})"


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _calls(report: Mapping[str, Any]) -> list[str]:
    c = report["calls"]
    ended = ", ".join(f"{who} {n}" for who, n in sorted(c["ended_by"].items())) or "-"
    lines = [
        f"calls: {c['completed']} completed, {c['failed']} failed of {c['planned']}; "
        f"{c['lines_answered']} caller lines answered, {c['greetings']} greetings; ended by {ended}; "
        f"{c['calls_per_minute'] or 0:g} calls/min",
        f"  on hold: {c['held_calls']} call(s)" + (f", held {_pcts(c['held_s'])}" if c["held_calls"] else ""),
        f"  reply latency p50 / p95 / max: {_pcts(c['reply_latency_s'])}; "
        f"greeting: {_pcts(c['greeting_latency_s'])}; call length {_pcts(c['duration_s'])}",
    ]
    lines += [f"  FAILED call {f['index']} ({f['sid'] or '-'}): {f['problem']}" for f in c["failures"]]
    if c["failed"] > len(c["failures"]):
        lines.append(f"  ... and {c['failed'] - len(c['failures'])} more failed calls (see the JSON)")
    return lines


def _memory(report: Mapping[str, Any]) -> list[str]:
    mem = report["memory"]
    bound = report["bounds"]["memory_growth_pct"]
    warmup = report["options"]["warmup_calls"]
    rows = []
    for proc, m in mem["processes"].items():
        bounded = proc not in mem["unbounded"]
        growth = "-" if m["growth_pct"] is None else f"{m['growth_pct']:+.1f} %"
        verdict = ("ok" if m["ok"] else "FAIL") if bounded else "(not bounded)"
        slope = _num(m["slope_mib_per_100_calls"], "{:+.2f}")
        rows.append(
            [
                f"{proc} [{m['pid']}]",
                _num(m.get("cpu_cores"), "{:.2f}"),
                _num(m["start_mib"]),
                _num(m["warmup_mib"]),
                _num(m["end_mib"]),
                _num(m["last_mib"]),
                growth,
                slope,
                verdict,
            ]
        )
    heads = [
        "process [pid]",
        "CPU cores",
        "start",
        "warm-up",
        "end",
        "idle",
        "growth",
        "MiB/100 calls",
        f"<= {bound:g} %",
    ]
    cpu = report["cpu"]
    info = mem["redis_info"]
    used = " -> ".join(f"{info[k]['used_mib']:.1f}" for k in ("start", "warmup", "end") if k in info)
    nkeys = " -> ".join(str(info[k]["keys"]) for k in ("start", "warmup", "end") if k in info)
    return [
        f"memory (RSS MiB; warm-up = highest sample over the first {warmup} calls, end = highest after them, "
        f"idle = after the last call's retention; {mem['samples']} samples) and CPU over the calls:",
        table(heads, rows),
        f"  redis used_memory MiB start -> warm-up -> end: {used}; keys {nkeys}",
        f"  machine busy {_num(cpu['host_busy_cores'], '{:.2f}')} of {_num(cpu['host_cores'], '{:.2f}')} cores "
        f"during the calls, {_num(cpu['others_cores'], '{:.2f}')} of them by other processes",
    ]


def _keys(report: Mapping[str, Any]) -> list[str]:
    k = report["keys"]
    lines = ["redis keys:"]
    for scan in k["scans"]:
        bad = scan["without_ttl"]
        names = "" if not bad else ": " + ", ".join(b["name"] for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
        lines.append(f"  {scan['at']}: {scan['keys']} keys, {len(bad)} without a TTL (not global by design){names}")
    left = k["leftover"]
    if left["count"]:
        lines.append(f"  LEFT after retention: {left['count']} key(s) of {left['calls']} call(s), e.g.:")
        lines += [f"    {e['name']} (TTL {e['ttl_s']:g} s)" for e in left["examples"][:10]]
    else:
        lines.append(
            f"  every call's own keys gone after retention ({_num(left['gone_after_s'])} s after the last call ended)"
        )
    held = ", ".join(f"{name} {n}" for name, n in k["holding"].items())
    lines.append(f"  ended calls still held: {held}; vc:calls:index {k['index_held']}")
    lines.append("  global keys without a TTL by design (at the end):")
    for name, g in k["globals"].items():
        length = "-" if g["length"] is None else g["length"]
        lines.append(f"    {name} ({g['type']}, {length} entries, {g['bytes'] or 0} B): {g['why']}")
    rows = [
        [fam, str(f["keys"]), str(f["no_ttl"]), _num(f["max_ttl_s"], "{:g}"), str(f["bytes"])]
        for fam, f in k["families"].items()
    ]
    lines += ["  key families at the end:", table(["family", "keys", "no TTL", "max TTL s", "bytes"], rows)]
    return lines


def _errors(report: Mapping[str, Any]) -> list[str]:
    e = report["errors"]
    log = e["log"]
    logged = (
        "service log not read (stack not started here)"
        if log is None
        else f"service log: {log['errors']} error(s), {log['tracebacks']} traceback(s), {log['warnings']} warning(s)"
    )
    lines = [f"errors: {logged}; dead letters {e['dead_letters']}; protocol warnings {e['protocol_errors']}"]
    if log is not None:
        lines += [f"  {n:6d} x {summary}" for summary, n in log["top"].items()]
    return lines


def render(report: Mapping[str, Any]) -> str:
    """The report as text (see the module invariants)."""
    o = report["options"]
    host = report["host"]
    head = (
        f"soak: {o['calls']} calls, {o['concurrency']} at a time, calls took {report['calls_duration_s']:.0f} s "
        f"(total {report['duration_s']:.0f} s); stack {o['gateway_url']}, retention {o['retention_s']:g} s; "
        f"{host['cpus']} CPUs, load {host['load_avg_before'][0]:.1f} -> {host['load_avg_after'][0]:.1f}"
    )
    out = [head, "", *_calls(report), "", *_memory(report), "", *_keys(report), "", *_errors(report)]
    if report["findings"]:
        out += ["", "findings (reported, not bounds):", *(f"  - {f}" for f in report["findings"])]
    v = report["verdict"]
    out += ["", "verdict: PASS (every bound met)" if v["ok"] else "verdict: FAIL"]
    out += [f"  - {reason}" for reason in v["reasons"]]
    return "\n".join(out)


def _log_errors(target: SoakTarget) -> dict[str, Any] | None:
    if not target.log_path or not Path(target.log_path).exists():
        return None
    with open(target.log_path, encoding="utf-8", errors="replace") as log:
        log.seek(target.log_offset)
        found = count_log_errors(log)
    return {
        "path": target.log_path,
        "errors": found.errors,
        "warnings": found.warnings,
        "tracebacks": found.tracebacks,
        "top": found.top,
    }


def build_report(
    options: SoakOptions, target: SoakTarget, observed: dict[str, Any], load_before: Sequence[float], total_s: float
) -> dict[str, Any]:
    """The report (what ``--json`` writes and :func:`~.soak_report.render` prints) from what :func:`_soak` saw."""
    calls: list[dict[str, Any]] = observed["calls"]
    ok = [c for c in calls if c["ok"]]
    failed = [c for c in calls if not c["ok"]]
    ended_by: dict[str, int] = {}
    for c in calls:
        if c.get("ended_by"):
            ended_by[c["ended_by"]] = ended_by.get(c["ended_by"], 0) + 1
    processes = memory_growth(observed["samples"], options.warmup, options.max_growth_pct)
    for label, mem in processes.items():
        mem["pid"] = target.procs.get(label, os.getpid() if label == "caller" else 0)
        mem["cpu_cores"] = observed["cpu"]["cores"].get(label)
    dead_letters = sum(v["length"] for k, v in observed["globals"].items() if k.startswith("vc:dlq:"))
    findings = []
    if observed["index_held"]:
        findings.append(
            f"vc:calls:index still holds {observed['index_held']} of the {len(calls)} calls after their retention: "
            "one member per call, never trimmed, so it grows without bound (not in design.md's key table)"
        )
    report: dict[str, Any] = {
        "bench": "soak",
        "version": 1,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg())},
        "options": {
            "calls": options.calls,
            "concurrency": options.concurrency,
            "warmup_calls": options.warmup,
            "retention_s": target.retention_s,
            "stagger_s": options.stagger_s,
            "reply_timeout_s": options.reply_timeout_s,
            "short": options.short,
            "gateway_url": options.gateway_url or "(started here)",
            "stack_env": target.env,
        },
        "bounds": {
            "memory_growth_pct": options.max_growth_pct,
            "failed_calls": 0,
            "keys_without_ttl": 0,
            "keys_left_after_retention": 0,
        },  # fmt: skip
        "duration_s": round(total_s, 1),
        "calls_duration_s": round(observed["calls_s"], 1),
        "calls": {
            "planned": options.calls,
            "completed": len(ok),
            "failed": len(failed),
            "failures": [{"index": c["index"], "sid": c["sid"], "problem": c["problem"]} for c in failed[:20]],
            "lines_answered": sum(c.get("answered", 0) for c in calls),
            "greetings": sum(bool(c.get("greeted")) for c in calls),
            "held_calls": sum(bool(c.get("holds")) for c in calls),
            "held_s": percentiles(c["held_s"] for c in calls if c.get("holds")),
            "ended_by": ended_by,
            "duration_s": percentiles(c["duration_s"] for c in ok),
            "reply_latency_s": percentiles(x for c in calls for x in c.get("latencies_s", [])),
            "greeting_latency_s": percentiles(c["greeting_s"] for c in calls if c.get("greeting_s") is not None),
            "calls_per_minute": round(60 * len(calls) / observed["calls_s"], 1) if observed["calls_s"] else None,
        },
        "cpu": {k: v for k, v in observed["cpu"].items() if k != "cores"},
        "memory": {
            "processes": processes,
            "unbounded": list(UNBOUNDED),
            "samples": len(observed["samples"]),
            "redis_info": observed["redis"],
            "series": [{"t": s.t_s, "done": s.done, "rss_kib": dict(s.rss_kib)} for s in observed["samples"]],
        },
        "keys": {
            "scans": observed["scans"],
            "leftover": observed["leftover"],
            "holding": observed["holding"],
            "index_held": observed["index_held"],
            "globals": observed["globals"],
            "families": observed["families"],
        },
        "errors": {
            "log": _log_errors(target) if target.started_here else None,
            "dead_letters": dead_letters,
            "protocol_errors": sum(c.get("protocol_errors", 0) for c in calls),
        },
        "findings": findings,
    }
    passed, reasons = verdict(report)
    report["verdict"] = {"ok": passed, "reasons": reasons}
    return report
