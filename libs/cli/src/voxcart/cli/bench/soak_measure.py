"""The soak's numbers and verdict, from what was observed: memory growth after warm-up per process, and the audit
of the stack's Redis keys (what has no TTL, what each call left behind).

Definitions:

- **Memory** of a process is its resident set (``VmRSS``), sampled every second or so, each sample tagged with
  the calls completed so far. **Warm-up** is the first ``warmup_calls`` calls (10 % of the soak by default). The
  **warm-up level** is the highest sample taken up to the end of warm-up; the **end level** the highest sample
  taken after it. **Growth** is ``end / warm-up - 1``: a process whose memory is flat after warm-up has a growth
  near 0 whatever its level, and a leak shows even when the process gives memory back between calls (the end
  level is a high-water mark, so this is the strict reading). The **slope** is a least-squares fit of the samples
  after warm-up against calls completed (MiB per 100 calls), the trend behind the growth.
- **Key families** (:func:`classify_key`): a call's own keys (``vc:call:{sid}:*``, ``vc:ckpt:<svc>:{sid}``,
  ``vc:lease:<svc>:{sid}``), which must all be gone once the call's retention has passed; deduplication keys
  (``vc:dedupe:<scope>:<id>``), kept for their own retention (design.md: 24 h for webhooks, 1 h for events; the
  end-of-call guard lives the call TTL); and global keys. Only the global keys of :data:`GLOBAL_NO_TTL` may live
  without a TTL, by design; any other key with no TTL is a violation.

Invariants: the functions here are pure (no I/O, no clock); a process with no sample after warm-up has no growth
(``None``) and fails the bound, never passes it by default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "GLOBAL_NO_TTL",
    "HOLDING_GLOBALS",
    "KeyClass",
    "KeyInfo",
    "MemorySample",
    "classify_key",
    "family_summary",
    "leftover_keys",
    "memory_growth",
    "percentiles",
    "verdict",
    "without_ttl",
]

GLOBAL_NO_TTL: Final[Mapping[str, str]] = {
    "vc:calls:lifecycle": "call lifecycle stream with the stt/brain/tts consumer groups; trimmed by MAXLEN ~",
    "vc:calls:active": "live calls and their gateway heartbeat; a call leaves at its end (a stale one is reaped)",
    "vc:calls:index": "call start times for GET /calls; one member per call, not trimmed",
    "vc:admission:{vc:calls:active}:queue": "calls on hold; a call leaves when admitted or gone",
    "vc:admission:{vc:calls:active}:seen": "last check of each call on hold; leaves with it",
    "vc:stt:language": "the shop's caller language, published by brain at start",
    "vc:tts:phrases": "the shop's stock phrases, published by brain at start",
    "vc:workers:stt": "live stt replicas' heartbeats; a replica leaves when it stops",
    "vc:workers:brain": "live brain replicas' heartbeats; a replica leaves when it stops",
    "vc:workers:tts": "live tts replicas' heartbeats; a replica leaves when it stops",
    "vc:dlq:stt": "dead letters of stt; trimmed by MAXLEN ~10000",
    "vc:dlq:brain": "dead letters of brain; trimmed by MAXLEN ~10000",
    "vc:dlq:tts": "dead letters of tts; trimmed by MAXLEN ~10000",
}
"""Global keys that live without a TTL by design, and why (design.md's key table, ``voxcart.common.bus.keys``)."""

HOLDING_GLOBALS: Final = (
    "vc:calls:active",
    "vc:admission:{vc:calls:active}:queue",
    "vc:admission:{vc:calls:active}:seen",
)
"""Global zsets that must not hold a call once it has ended."""

_PER_CALL = re.compile(r"^vc:(?:call:\{(?P<a>[^}]+)\}:.+|ckpt:[a-z]+:\{(?P<b>[^}]+)\}|lease:[a-z]+:\{(?P<c>[^}]+)\})$")
_FAMILY_OF_CALL = re.compile(r"^vc:(call):\{[^}]+\}:(.+)$|^vc:(ckpt|lease):([a-z]+):\{")
_DEDUPE = re.compile(r"^vc:dedupe:(?P<scope>[^:]+):(?P<id>.+)$")


@dataclass(frozen=True)
class MemorySample:
    """Resident memory (KiB) of each process at one instant, with the calls completed by then."""

    t_s: float
    done: int
    rss_kib: Mapping[str, int]


@dataclass(frozen=True)
class KeyInfo:
    """One Redis key as a scan saw it: ``pttl_ms`` is Redis's ``PTTL`` (-1: no TTL; -2: gone meanwhile)."""

    name: str
    type: str
    pttl_ms: int
    bytes: int | None = None


@dataclass(frozen=True)
class KeyClass:
    """Which family a key belongs to (``call:<stream>``, ``ckpt:<svc>``, ``lease:<svc>``, ``dedupe:<scope>``,
    ``global``, ``ratelimit``, ``capacity`` or ``other``), and the CallSid it belongs to, if any."""

    family: str
    sid: str | None = None
    per_call: bool = False
    """One of a call's own keys: gone once the call's retention has passed."""


def classify_key(name: str) -> KeyClass:
    """The family of a Redis key by its name (see the module docstring)."""
    match = _PER_CALL.match(name)
    if match:
        sid = match.group("a") or match.group("b") or match.group("c")
        fam = _FAMILY_OF_CALL.match(name)
        assert fam is not None
        family = f"call:{fam.group(2)}" if fam.group(1) else f"{fam.group(3)}:{fam.group(4)}"
        return KeyClass(family, sid, per_call=True)
    dedupe = _DEDUPE.match(name)
    if dedupe:
        scope = dedupe.group("scope")
        return KeyClass(f"dedupe:{scope}", dedupe.group("id") if scope == "ended" else None)
    if name in GLOBAL_NO_TTL:
        return KeyClass("global")
    if name.startswith("vc:ratelimit:{"):
        return KeyClass("ratelimit")
    if name.startswith("vc:capacity:"):
        return KeyClass("capacity")
    return KeyClass("other")


def without_ttl(keys: Iterable[KeyInfo]) -> list[KeyInfo]:
    """Keys with no TTL that are not global keys without a TTL by design (:data:`GLOBAL_NO_TTL`)."""
    return [k for k in keys if k.pttl_ms == -1 and k.name not in GLOBAL_NO_TTL]


def leftover_keys(keys: Iterable[KeyInfo], sids: Iterable[str]) -> list[KeyInfo]:
    """The per-call keys (see :class:`KeyClass`) that belong to one of ``sids``."""
    wanted = set(sids)
    out = []
    for key in keys:
        cls = classify_key(key.name)
        if cls.per_call and cls.sid in wanted:
            out.append(key)
    return out


def family_summary(keys: Iterable[KeyInfo]) -> dict[str, dict[str, Any]]:
    """Per family: keys, how many have no TTL, the longest TTL left (s), bytes (``MEMORY USAGE``, when read)."""
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        cls = classify_key(key.name)
        family = key.name if cls.family == "global" else cls.family
        row = out.setdefault(family, {"keys": 0, "no_ttl": 0, "max_ttl_s": None, "bytes": 0})
        row["keys"] += 1
        if key.pttl_ms == -1:
            row["no_ttl"] += 1
        elif key.pttl_ms >= 0:
            row["max_ttl_s"] = max(row["max_ttl_s"] or 0.0, round(key.pttl_ms / 1000, 1))
        row["bytes"] += key.bytes or 0
    return dict(sorted(out.items()))


def percentiles(values: Iterable[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float | int]:
    """``n``, the ``p<q>`` (nearest rank) and ``max`` of ``values``; ``{"n": 0}`` when there are none."""
    x = sorted(v for v in values if math.isfinite(v))
    if not x:
        return {"n": 0}
    out: dict[str, float | int] = {"n": len(x)}
    for q in qs:
        out[f"p{q}"] = round(x[max(0, math.ceil(q / 100 * len(x)) - 1)], 3)
    out["max"] = round(x[-1], 3)
    return out


def _slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; ``None`` when x does not vary."""
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


@dataclass
class _Track:
    first: int | None = None
    warm: int | None = None
    end: int | None = None
    last: int | None = None
    points: list[tuple[float, float]] = field(default_factory=list)


def memory_growth(
    samples: Sequence[MemorySample], warmup_calls: int, bound_pct: float
) -> dict[str, dict[str, float | bool | None]]:
    """Per process: start, warm-up and end levels and the last sample (MiB), growth (%), slope (MiB per 100
    calls) and whether the growth is within ``bound_pct`` (see the module docstring).

    Args:
        samples: in time order.
        warmup_calls: calls completed that end the warm-up.
        bound_pct: the largest growth that passes.
    """
    tracks: dict[str, _Track] = {}
    for sample in samples:
        for proc, kib in sample.rss_kib.items():
            track = tracks.setdefault(proc, _Track())
            if track.first is None:
                track.first = kib
            track.last = kib
            if sample.done <= warmup_calls:
                track.warm = max(track.warm or 0, kib)
            else:
                track.end = max(track.end or 0, kib)
                track.points.append((sample.done, kib / 1024))
    out: dict[str, dict[str, float | bool | None]] = {}
    for proc, track in tracks.items():
        growth = None
        if track.warm and track.end is not None:
            growth = round(100 * (track.end / track.warm - 1), 2)
        slope = _slope(track.points)
        out[proc] = {
            "start_mib": _mib(track.first),
            "warmup_mib": _mib(track.warm),
            "end_mib": _mib(track.end),
            "last_mib": _mib(track.last),
            "growth_pct": growth,
            "slope_mib_per_100_calls": None if slope is None else round(100 * slope, 3),
            "ok": growth is not None and growth <= bound_pct,
        }
    return out


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def verdict(report: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """Whether the soak meets its bounds, and every reason it does not.

    The bounds: every call completed; every service process's memory growth after warm-up within the bound; no
    key without a TTL but the global ones of :data:`GLOBAL_NO_TTL` (in any scan); no call's own key left once
    its retention passed; no ended call still held in :data:`HOLDING_GLOBALS`.
    """
    reasons: list[str] = []
    calls = report["calls"]
    if calls["failed"]:
        reasons.append(f"{calls['failed']} of {calls['planned']} calls failed")
    if calls["completed"] + calls["failed"] < calls["planned"]:
        reasons.append(f"only {calls['completed'] + calls['failed']} of {calls['planned']} calls ran")
    bound = report["bounds"]["memory_growth_pct"]
    for proc, mem in report["memory"]["processes"].items():
        if proc in report["memory"]["unbounded"]:
            continue
        if mem["growth_pct"] is None:
            reasons.append(f"{proc}: no memory sample after warm-up")
        elif not mem["ok"]:
            reasons.append(f"{proc}: memory grew {mem['growth_pct']:+.1f} % after warm-up (bound {bound:g} %)")
    if not report["memory"]["processes"]:
        reasons.append("no service process was measured")
    keys = report["keys"]
    for scan in keys["scans"]:
        if scan["without_ttl"]:
            names = ", ".join(k["name"] for k in scan["without_ttl"][:3])
            reasons.append(f"{len(scan['without_ttl'])} key(s) without a TTL at {scan['at']}: {names}")
    if keys["leftover"]["count"]:
        reasons.append(
            f"{keys['leftover']['count']} key(s) of {keys['leftover']['calls']} call(s) left after their retention"
        )
    for name, held in keys["holding"].items():
        if held:
            reasons.append(f"{name} still holds {held} ended call(s)")
    return not reasons, reasons
