"""The load bench's result as text tables (``voxcart bench load`` prints it; the JSON is the result itself).

Invariants: :func:`render` reads only the report dict (what ``--json`` writes); a part that was not measured is
rendered as ``-`` or a line saying why, never as zeros.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .report import table

__all__ = ["render"]


def _q(stats: Mapping[str, Any], *keys: str) -> str:
    if not stats.get("n"):
        return "-"
    return " / ".join(f"{stats[k]:.0f}" for k in keys)


def _hist(h: Mapping[str, Any]) -> str:
    if not h.get("count"):
        return "-"
    return f"mean {h['mean_ms']:.1f}, p50 <= {h['p50_le_ms']}, p99 <= {h['p99_le_ms']} ({h['count']})"


def render(report: Mapping[str, Any]) -> str:
    """The report as tables: one row per step, then the last step's breakdown and resources, the baseline and
    the comparison."""
    out = [
        f"load bench: {len(report['steps'])} step(s) in {report['duration_s']:.0f} s on {report['host']['cpus']} "
        f"CPUs (load {report['host']['load_avg_before'][0]:.1f} before); script: "
        + " | ".join(("(over) " if s["over_ms"] is not None else "") + s["text"] for s in report["script"]),
    ]
    if report.get("runs", 1) > 1:
        out.append(f"each step: the medians of {report['runs']} runs (each run's verdict under runs in the JSON)")
    if report.get("replicas"):
        out.append("worker processes: " + ", ".join(f"{svc} {n}" for svc, n in report["replicas"].items()))
    out.append("")
    rows = []
    for s in report["steps"]:
        p = s["pacing"]
        r = s["resources"]["total"]
        rows.append(
            [
                str(s["calls"]),
                _q(s["turn_latency_ms"], "p50", "p95", "p99"),
                _q(s["breakdown_ms"].get("eos_to_first_frame", {}), "p50", "p95"),
                _q(s["barge_in_ms"], "p50", "p95"),
                "-" if not p["caller"]["jitter_ms"].get("n") else f"{p['caller']['jitter_ms']['p99']:.1f}",
                f"{p['gateway_underruns']:g} / {p['caller']['underruns']}",
                f"{r['cpu_pct_per_call']:.1f}",
                f"{r['rss_mib_per_call']:.1f}",
                "yes" if s["realtime"]["holds"] else "NO",
            ]
        )
    headers = [
        "calls",
        "turn p50/p95/p99 ms",
        "EOS->frame p50/p95",
        "barge-in p50/p95",
        "jitter p99",
        "underruns gw/caller",
    ]
    out.append(table([*headers, "CPU %/call", "MiB/call", "real time"], rows))
    for s in report["steps"]:
        if not s["realtime"]["holds"]:
            out.append(f"{s['calls']} calls not real time: {'; '.join(s['realtime']['reasons'])}")
        if s.get("runs"):
            held = sum(1 for r in s["runs"] if r["holds"])
            p95s = ", ".join("-" if r["turn_p95_ms"] is None else f"{r['turn_p95_ms']:.0f}" for r in s["runs"])
            out.append(f"{s['calls']} calls: {held} of {len(s['runs'])} runs held real time; turn p95 by run {p95s} ms")
        caller = s["pacing"]["caller"]
        if caller["underruns"] or s["pacing"]["gateway_underruns"]:
            out.append(
                f"{s['calls']} calls: underruns heard by the callers {caller['underruns']} "
                f"({caller['underrun_ms']:.0f} ms; "
                f"{caller.get('underruns_between_sentences', 0)} where the next sentence came late), counted by the "
                f"gateway's pacer {s['pacing']['gateway_underruns']:g} ({s['pacing']['gateway_underrun_ms']:.0f} ms)"
            )
        for failure in s["failed_calls"][:5]:
            out.append(f"  FAILED: {failure}")
    best = report["max_realtime_calls"]
    out.append(f"largest N that held real time: {best if best is not None else 'none'}")
    last = report["steps"][-1] if report["steps"] else None
    if last is not None:
        out += ["", f"turn breakdown at {last['calls']} calls ({last['breakdown_turns']} turns), ms:"]
        if last["breakdown_note"]:
            out.append(f"  {last['breakdown_note']}")
        else:
            b = last["breakdown_ms"]
            out.append(
                table(
                    ["segment", "p50", "p95", "p99"],
                    [[k, _q(v, "p50"), _q(v, "p95"), _q(v, "p99")] for k, v in b.items()],
                )
            )
        hist_rows = [[f"{svc} {name}", _hist(h)] for svc, hs in last["histograms"].items() for name, h in hs.items()]
        out += ["", table(["histogram over the step (ms)", "value"], hist_rows)]
        res = last["resources"]
        res_rows = [
            [
                svc,
                f"{v['cpu_cores']:.2f}",
                f"{v['cpu_pct_per_call']:.2f}",
                f"{v['rss_mib_idle']:.0f}",
                f"{v['rss_mib_peak']:.0f}",
                f"{v['rss_mib_per_call']:.2f}",
            ]
            for svc, v in {**res["services"], "total (stack)": res["total"]}.items()
        ]
        out += [
            "",
            f"resources at {last['calls']} calls ({res['calls_in_progress']:.1f} in progress on average over "
            f"{res['window_s']:.0f} s):",
            table(["service", "cores", "% core/call", "RSS before MiB", "peak MiB", "MiB/call"], res_rows),
        ]
        if last["unseen_services"]:
            out.append(f"  not measured (processes not found): {', '.join(last['unseen_services'])}")
        lag = last["caller_loop_lag_ms"]
        if lag.get("n"):
            out.append(
                f"  the callers' own loop lag: p50 {lag['p50']:.1f} ms, p99 {lag['p99']:.1f} ms (their timing error)"
            )
    base = report.get("baseline")
    if base is not None:
        seg = base["segments_ms"]
        added = base["bus_added_ms"]
        out += ["", f"in-process baseline ({base['calls']} calls, {base['turns']} turns, no bus), ms:"]
        out.append(
            table(
                ["segment", "p50", "p95", "p99"],
                [[k, _q(v, "p50"), _q(v, "p95"), _q(v, "p99")] for k, v in seg.items()],
            )
        )
        if "p99" in added:
            out.append(
                f"bus, websocket and pacer add per turn: p50 {added['p50']:+.0f} ms, p99 {added['p99']:+.0f} ms "
                f"(stack/inproc: p50 {added['ratio_p50']}x, p99 {added['ratio_p99']}x)"
            )
        if base["errors"] or base["timed_out_turns"]:
            out.append(f"  baseline: {base['timed_out_turns']} line(s) unanswered; errors: {base['errors'][:3]}")
    rows = []
    for t in report.get("targets", []):
        verdict = "-" if t["ok"] is None else "ok" if t["ok"] else "MISSED"
        at = (
            "" if t["at"] is None or t["at"] == t["stated_at"] else f" (at {t['at']} calls, stated at {t['stated_at']})"
        )
        rows.append([t["target"] + at, "-" if t["value"] is None else f"{t['value']:g}", verdict])
    if rows:
        out += ["", table(["issue 8 target", "measured", ""], rows)]
    if "compare" in report:
        out += [
            "",
            f"against {report['compare']['file']}:",
            table(["calls", "measure", "earlier", "now", "ratio"], report["compare"]["rows"]),
        ]
    return "\n".join(out)
