"""The load bench's numbers, from what was observed: percentiles, pacing at the caller, per-turn timelines,
Prometheus deltas, the real-time verdict and the comparison with an earlier run.

Definitions (all times in ms):

- **turn latency** (caller side): the caller's last voiced frame sent -> the first voiced reply frame received
  (:attr:`~voxcart.cli.simulator.TurnResult.latency_s`; the end-of-speech silence is included).
- **turn timeline** (exact, from the call's own bus entries): ``A`` last voiced frame's arrival at the gateway,
  ``B`` end of speech decided (stt), ``C`` final text ready, ``Cc`` final committed (its entry id), ``D`` reply
  decided (brain), ``Dc`` reply committed (its ``say`` entry id), ``E`` synthesis started (tts), ``F`` first
  reply frame sent (gateway). Segments: ``endpointing`` B-A, ``recognition`` C-B, ``stt_commit`` Cc-C,
  ``brain`` D-Cc (bus hop and decision), ``brain_commit`` Dc-D, ``tts_hop`` E-Dc, ``delivery`` F-E (synthesis to
  first chunk, the ``audio.out`` hop, pacing); ``eos_to_first_frame`` F-B and ``gateway_turn`` F-A.
- **pacing** (caller side), per run of one agent turn's media: the caller plays frames at real time from the
  first one's arrival; an **underrun** is a frame that arrives after everything before it has played (by more
  than :data:`UNDERRUN_TOLERANCE_MS`); **jitter** is each frame's lateness against the best schedule seen so far
  in its run (``arrival - audio before it`` minus its running minimum), so the pacer's initial lead burst counts
  as on time; an underrun restarts the schedule.

Invariants: the functions here are pure (no I/O, no clock); a statistic over no values is ``{"n": 0}``, never
zeros; every ratio names what it divides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from voxcart.cli.simulator import WireEvent
from voxcart.common.audio import SAMPLE_RATE

from .bargein_measure import histogram_delta, histogram_quantile, media_turns

__all__ = [
    "BOUNDS",
    "COMPARED",
    "SEGMENTS",
    "TARGETS",
    "UNDERRUN_TOLERANCE_MS",
    "Pacing",
    "TurnTiming",
    "compare",
    "hist_summary",
    "metric_histogram",
    "metric_value",
    "pacing",
    "parse_metrics",
    "realtime_verdict",
    "stats",
    "targets",
    "timeline_breakdown",
]

UNDERRUN_TOLERANCE_MS: Final = 1.0
"""A frame this much later than the end of what was already playing is an underrun (as the gateway's pacer)."""

BOUNDS: Final = {"turn_p95_ms": 800.0, "underruns": 0}
"""A step holds real time: no failed call or unanswered line, no underrun, caller-side turn latency p95 within
this. (The p50 target is a target, not a bound: with the default 600 ms end-of-speech silence no load meets it.)"""

SEGMENTS: Final = (
    "endpointing",
    "recognition",
    "stt_commit",
    "brain",
    "brain_commit",
    "tts_hop",
    "delivery",
)
"""The turn timeline's consecutive segments, in order (they add up to ``gateway_turn``)."""


def stats(values: Iterable[float], *, digits: int = 1) -> dict[str, float | int]:
    """``n``, ``p50``, ``p95``, ``p99``, ``max``, ``mean`` of ``values`` (linear percentiles); ``{"n": 0}`` if none."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if not x.size:
        return {"n": 0}
    out: dict[str, float | int] = {"n": int(x.size)}
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        out[name] = round(float(np.percentile(x, q)), digits)
    out["max"] = round(float(x.max()), digits)
    out["mean"] = round(float(x.mean()), digits)
    return out


# -- pacing at the caller ----------------------------------------------------------------------------------------


@dataclass
class Pacing:
    """Pacing as the caller heard it, over any number of calls."""

    frames: int = 0
    runs: int = 0
    """Runs of one agent turn's media (split by a ``clear``, a change of turn, or an underrun)."""
    underruns: int = 0
    underruns_between_sentences: int = 0
    """Underruns whose late frame was the first after a mark (the next sentence came late, not a frame of one)."""
    underrun_ms: float = 0.0
    lateness_ms: list[float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "runs": self.runs,
            "underruns": self.underruns,
            "underruns_between_sentences": self.underruns_between_sentences,
            "underrun_ms": round(self.underrun_ms, 1),
            "jitter_ms": stats(self.lateness_ms or [], digits=2),
        }


def pacing(calls: Iterable[Sequence[WireEvent]], into: Pacing | None = None) -> Pacing:
    """Underruns and jitter of the agent's media in each call's wire log (see the module docstring)."""
    out = into or Pacing(lateness_ms=[])
    lateness = out.lateness_ms if out.lateness_ms is not None else []
    out.lateness_ms = lateness
    for wire in calls:
        turns = media_turns(wire)
        run_turn: int | None = None
        started = after_mark = False
        play_end = sent = best = 0.0
        for i, event in enumerate(wire):
            if event.kind == "clear":
                started = False
                continue
            if event.kind == "mark":
                after_mark = True
            if event.kind != "media" or not event.nbytes:
                continue
            t = event.t * 1000
            duration = event.nbytes * 1000 / SAMPLE_RATE
            out.frames += 1
            if not started or turns[i] != run_turn:
                started, run_turn = True, turns[i]
                out.runs += 1
                play_end, sent, best = t, 0.0, t
            elif t > play_end + UNDERRUN_TOLERANCE_MS:
                out.underruns += 1
                out.underruns_between_sentences += after_mark
                out.underrun_ms += t - play_end
                out.runs += 1
                play_end, sent, best = t, 0.0, t  # the caller's playback restarts here
            relative = t - sent
            best = min(best, relative)
            lateness.append(relative - best)
            play_end = max(play_end, t) + duration
            sent += duration
            after_mark = False
    return out


# -- the turn timeline -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnTiming:
    """One answered caller utterance's timeline (epoch ms; ``None`` where the bus held no trace)."""

    call_sid: str
    turn_no: int
    last_voiced: float
    endpointed: float
    recognized: float
    final_committed: float | None
    decided: float | None
    say_committed: float | None
    synth_started: float | None
    first_frame: float | None

    def segments(self) -> dict[str, float | None]:
        """Each segment of :data:`SEGMENTS`, plus ``eos_to_first_frame`` and ``gateway_turn`` (ms)."""
        points = [
            self.last_voiced,
            self.endpointed,
            self.recognized,
            self.final_committed,
            self.decided,
            self.say_committed,
            self.synth_started,
            self.first_frame,
        ]
        out: dict[str, float | None] = {}
        for name, a, b in zip(SEGMENTS, points[:-1], points[1:], strict=True):
            out[name] = b - a if a is not None and b is not None else None
        out["eos_to_first_frame"] = self.first_frame - self.endpointed if self.first_frame is not None else None
        out["gateway_turn"] = self.first_frame - self.last_voiced if self.first_frame is not None else None
        return out


def timeline_breakdown(timings: Iterable[TurnTiming]) -> dict[str, dict[str, float | int]]:
    """:func:`stats` of every segment over ``timings`` (segments with no value are reported with ``n`` 0)."""
    values: dict[str, list[float]] = {name: [] for name in (*SEGMENTS, "eos_to_first_frame", "gateway_turn")}
    for timing in timings:
        for name, value in timing.segments().items():
            if value is not None:
                values[name].append(value)
    return {name: stats(v) for name, v in values.items()}


# -- Prometheus text ---------------------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    """Every sample of a Prometheus text exposition: ``{"name{labels}": value}`` (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        try:
            out[series] = out.get(series, 0.0) + float(value)
        except ValueError:
            continue
    return out


def _labels(series: str) -> tuple[str, dict[str, str]]:
    name, _, rest = series.partition("{")
    labels: dict[str, str] = {}
    for part in rest.rstrip("}").split(","):
        key, _, value = part.partition("=")
        if key:
            labels[key.strip()] = value.strip().strip('"')
    return name, labels


def metric_value(samples: Mapping[str, float], name: str) -> float:
    """The sum of every series of counter or gauge ``name`` (0 when absent)."""
    return sum(v for s, v in samples.items() if _labels(s)[0] == name)


def metric_histogram(samples: Mapping[str, float], name: str) -> tuple[dict[float, float], float, float]:
    """Histogram ``name``'s cumulative buckets ``{le: count}``, ``_sum`` and ``_count``, summed over label sets."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for series, value in samples.items():
        base, labels = _labels(series)
        if base == f"{name}_bucket" and "le" in labels:
            le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
        elif base == f"{name}_sum":
            total += value
        elif base == f"{name}_count":
            count += value
    return buckets, total, count


def hist_summary(before: Mapping[str, float], after: Mapping[str, float], name: str) -> dict[str, Any]:
    """What histogram ``name`` (seconds) observed between two scrapes: ``count``, the exact ``mean_ms``, and
    bucket-resolution upper bounds ``p50_le_ms``, ``p95_le_ms``, ``p99_le_ms`` (``"inf"`` past the last bucket)."""
    b0, s0, c0 = metric_histogram(before, name)
    b1, s1, c1 = metric_histogram(after, name)
    count = c1 - c0
    if count <= 0:
        return {"count": 0}
    delta = histogram_delta(b0, b1)
    out: dict[str, Any] = {"count": int(count), "mean_ms": round((s1 - s0) / count * 1000, 2)}
    for key, q in (("p50_le_ms", 0.5), ("p95_le_ms", 0.95), ("p99_le_ms", 0.99)):
        le = histogram_quantile(delta, q)
        out[key] = None if le is None else "inf" if le == math.inf else round(le * 1000, 1)
    return out


# -- verdict and comparison --------------------------------------------------------------------------------------


def realtime_verdict(step: Mapping[str, Any], bounds: Mapping[str, float] = BOUNDS) -> tuple[bool, list[str]]:
    """Whether a step held real time: no failed call or unanswered turn, no underrun (gateway or caller side),
    caller-side turn latency p95 within ``bounds``; returns the verdict and the reasons it failed."""
    reasons: list[str] = []
    if step.get("failed_calls"):
        reasons.append(f"{len(step['failed_calls'])} call(s) failed")
    if step.get("timed_out_turns"):
        reasons.append(f"{step['timed_out_turns']} turn(s) got no reply")
    gateway_underruns = step.get("pacing", {}).get("gateway_underruns") or 0
    caller_underruns = step.get("pacing", {}).get("caller", {}).get("underruns") or 0
    if gateway_underruns > bounds["underruns"] or caller_underruns > bounds["underruns"]:
        reasons.append(f"underruns: gateway {gateway_underruns:g}, caller {caller_underruns}")
    latency = step.get("turn_latency_ms", {})
    if not latency.get("n"):
        reasons.append("no turn latency measured")
    else:
        if latency["p95"] > bounds["turn_p95_ms"]:
            reasons.append(f"turn latency p95 {latency['p95']:.0f} ms > {bounds['turn_p95_ms']:.0f} ms")
    return not reasons, reasons


COMPARED: Final = (
    ("turn latency p50 (ms)", ("turn_latency_ms", "p50")),
    ("turn latency p95 (ms)", ("turn_latency_ms", "p95")),
    ("turn latency p99 (ms)", ("turn_latency_ms", "p99")),
    ("end of speech -> first frame p95 (ms)", ("breakdown_ms", "eos_to_first_frame", "p95")),
    ("barge-in reaction p95 (ms)", ("barge_in_ms", "p95")),
    ("pacing jitter p99 (ms)", ("pacing", "caller", "jitter_ms", "p99")),
    ("underruns (gateway)", ("pacing", "gateway_underruns")),
    ("inbound bus age mean (ms)", ("histograms", "stt", "voxcart_bus_frame_age_seconds", "mean_ms")),
    ("CPU per call (% core)", ("resources", "total", "cpu_pct_per_call")),
    ("memory per call (MiB)", ("resources", "total", "rss_mib_per_call")),
)
"""What ``--compare`` sets side by side, per number of calls: a label and the path in a step."""


def _at(tree: Any, path: Sequence[str]) -> float | None:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return float(tree) if isinstance(tree, int | float) and not isinstance(tree, bool) else None


def compare(now: Mapping[str, Any], earlier: Mapping[str, Any]) -> list[list[str]]:
    """Rows ``[calls, measure, earlier, now, now/earlier]`` for every step of ``now`` that ``earlier`` also ran
    (matched on the number of calls), then the largest real-time N and the bus cost against the baseline.

    Raises:
        ValueError: ``earlier`` is not a load bench result (no ``steps``).
    """
    if not isinstance(earlier.get("steps"), list):
        raise ValueError("not a `voxcart bench load` result: it has no 'steps' list")
    old_steps = {s.get("calls"): s for s in earlier["steps"] if isinstance(s, Mapping)}
    rows: list[list[str]] = []

    def row(calls: str, label: str, a: float | None, b: float | None) -> None:
        if a is None and b is None:
            return
        ratio = "-" if a is None or b is None or a == 0 else f"{b / a:.2f}x"
        rows.append([calls, label, "-" if a is None else f"{a:g}", "-" if b is None else f"{b:g}", ratio])

    for step in now.get("steps", []):
        old = old_steps.get(step.get("calls"))
        if old is None:
            continue
        for label, path in COMPARED:
            row(str(step["calls"]), label, _at(old, path), _at(step, path))
    row("-", "largest real-time N", _at(earlier, ("max_realtime_calls",)), _at(now, ("max_realtime_calls",)))
    for key in ("p50", "p99"):
        path = ("baseline", "bus_added_ms", key)
        row("-", f"bus added per turn {key} (ms)", _at(earlier, path), _at(now, path))
    return rows


TARGETS: Final = (
    ("turn latency p50 <= 500 ms", 10, ("turn_latency_ms", "p50"), 500.0),
    ("turn latency p95 <= 800 ms", 10, ("turn_latency_ms", "p95"), 800.0),
    ("end of speech decided -> first frame p95 <= 150 ms", 10, ("breakdown_ms", "eos_to_first_frame", "p95"), 150.0),
    ("CPU per call <= 5 % of a core (stack)", 20, ("resources", "total", "cpu_pct_per_call"), 5.0),
    ("memory per call <= 20 MiB (stack)", 20, ("resources", "total", "rss_mib_per_call"), 20.0),
)
"""Issue 8's targets on one step: a label, the number of calls it is stated at, the path in a step, the bound."""


def targets(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue 8's targets against a report: each measured at the step with its number of calls, else at the step
    nearest to it (``at`` says which); ``ok`` is ``None`` when nothing was measured."""
    steps = [s for s in report.get("steps", []) if isinstance(s, Mapping)]
    out: list[dict[str, Any]] = []
    for label, calls, path, bound in TARGETS:
        chosen = min(steps, key=lambda s: (abs(s["calls"] - calls), -s["calls"]), default=None)
        value = _at(chosen, path) if chosen is not None else None
        at = chosen["calls"] if chosen is not None else None
        out.append({"target": label, "stated_at": calls, "at": at, "value": value, "ok": _ok(value, bound)})
    best = report.get("max_realtime_calls")
    out.append(
        {"target": "whole stack >= 20 calls real time", "stated_at": 20, "at": None, "value": best, "ok": _ok(20, best)}
    )
    added = report.get("baseline", {}).get("bus_added_ms", {})
    out.append(
        {
            "target": "bus adds <= 10 ms p99 per turn over inproc",
            "stated_at": 50,
            "at": added.get("calls"),
            "value": added.get("p99"),
            "ok": _ok(added.get("p99"), 10.0),
        }
    )
    return out


def _ok(value: float | None, bound: float | None) -> bool | None:
    return None if value is None or bound is None else value <= bound
