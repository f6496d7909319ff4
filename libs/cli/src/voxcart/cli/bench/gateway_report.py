"""``voxcart bench gateway``'s result as a table (the JSON is the result itself).

Invariants: :func:`render` reads only the report dict (what ``--json`` writes); what was not measured is ``-``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .report import table

__all__ = ["render"]


def render(report: Mapping[str, Any]) -> str:
    """The report as a table (one row per step) and the reasons a step missed the target."""
    out = [
        f"gateway bench: {len(report['steps'])} step(s) in {report['duration_s']:.0f} s on {report['host']['cpus']} "
        f"CPUs (load {report['host']['load_avg_before'][0]:.1f} before); the gateway alone, a stand-in agent "
        "talking on every call",
        "",
    ]
    rows = []
    for s in report["steps"]:
        g, jitter = s["gateway"], s["jitter_ms"]
        rows.append(
            [
                str(s["calls"]),
                f"{s['connected']}",
                f"{g['cores']:.2f}",
                "-" if g["calls_per_core"] is None else f"{g['calls_per_core']:.0f}",
                f"{g['rss_mib_per_call']:.2f}",
                "-" if not jitter.get("n") else f"{jitter['p99']:.1f}",
                f"{s['underruns']['callers']} / {s['underruns']['gateway']:g}",
                "-" if g.get("waited_for_cpu_ms_per_s") is None else f"{g['waited_for_cpu_ms_per_s']:.0f}",
                "-" if not s["callers"]["tick_late_ms"].get("n") else f"{s['callers']['tick_late_ms']['p99']:.1f}",
                "yes" if s["target"]["met"] else "NO",
            ]
        )
    headers = ["calls", "connected", "gw cores", "calls/core", "MiB/call", "jitter p99 ms", "underruns caller/gw"]
    out.append(table([*headers, "gw waited for CPU ms/s", "caller tick late p99", "target"], rows))
    for s in report["steps"]:
        if not s["target"]["met"]:
            out.append(f"{s['calls']} calls miss the target: {'; '.join(s['target']['reasons'])}")
        for error in s["errors"][:3]:
            out.append(f"  {error}")
    out.append(
        "(the gateway waiting for a CPU, or callers late to tick, mean the machine was short of CPU: jitter and "
        "underruns then say more about the machine than about the gateway)"
    )
    priority = report.get("priority", {}).get("gateway")
    if priority:
        out.append(f"(the gateway ran ahead of other work on its CPU: {priority})")
    t = report["target"]
    out.append(
        f"target: jitter p99 <= {t['jitter_p99_ms']:g} ms, no underrun, <= {t['rss_mib_per_call']:g} MiB a call, "
        f"within {t['cores']:g} core (issue 8: 200 calls per core)"
    )
    return "\n".join(out)
