"""What the load bench reads from the running stack: its processes' CPU and memory (``/proc``), each service's
``/metrics``, and each call's timeline from its own bus entries.

Processes are those the bench started, or, for a stack reached at ``--gateway-url``, found in ``/proc``: the
``serve <svc>`` processes whose ``REDIS_URL`` is the stack's, and the ``redis-server`` on that URL's port (a
stack in containers is not found: the report then says which services it could not see).

Invariants: CPU is ``utime + stime`` of every thread of a process (``/proc/<pid>/stat``), memory is ``VmRSS``;
a process that is gone reads as absent, never as zero; a call's timeline is read only from entries the services
wrote for that call (their payload times and, for auto ids, the time Redis stamped them).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from voxcart.common import events as ev
from voxcart.common.bus import Bus, keys

from .load_measure import TurnTiming, parse_metrics

__all__ = [
    "ProcSample",
    "ResourceSampler",
    "discover",
    "join_timeline",
    "metrics_targets",
    "read_proc",
    "resource_report",
    "scrape",
    "turn_timings",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_SERVE = re.compile(r"(?:voxcart(?:\.cli\.main)?\s+serve\s+|-m\s+voxcart\.)(gateway|stt|brain|tts)\b")


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float
    rss_mib: float


def read_proc(pid: int, proc: Path = Path("/proc")) -> ProcSample | None:
    """CPU seconds so far and resident memory of process ``pid``; ``None`` if it is gone."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3, utime 14, stime 15
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    rss = next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)
    return ProcSample(cpu, rss)


def _environ(pid: str, proc: Path) -> dict[str, str]:
    try:
        raw = (proc / pid / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def discover(redis_url: str, proc: Path = Path("/proc")) -> dict[str, list[int]]:
    """The processes of the stack on ``redis_url``, by service (``redis`` too), found in ``/proc``."""
    port = str(urlsplit(redis_url).port or 6379)
    found: dict[str, list[int]] = {}
    for entry in sorted(proc.iterdir(), key=lambda p: p.name):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "redis-server" in cmdline.split(" ", 1)[0] and re.search(rf"(?:^|\s|:){port}(?:\s|$)", cmdline):
            found.setdefault("redis", []).append(int(entry.name))
            continue
        match = _SERVE.search(cmdline)
        if match and _environ(entry.name, proc).get("REDIS_URL") == redis_url:
            found.setdefault(match.group(1), []).append(int(entry.name))
    return found


def metrics_targets(
    procs: Mapping[str, Sequence[int]], gateway: str, proc: Path = Path("/proc")
) -> dict[str, list[str]]:
    """``host:port`` of each service's ``/metrics``: the gateway at ``gateway``, each worker on the
    ``METRICS_PORT`` in its environment (a worker without one is skipped)."""
    targets = {"gateway": [gateway]}
    for svc in ("stt", "brain", "tts"):
        ports = [_environ(str(pid), proc).get("METRICS_PORT", "") for pid in procs.get(svc, [])]
        targets[svc] = [f"127.0.0.1:{port}" for port in ports if port.isdigit()]
    return targets


@dataclass
class ResourceSampler:
    """Samples the stack's processes (and this one, as ``caller``) every ``interval_s`` while running: CPU at the
    start and end of the window, the idle memory before it and the peak memory during it, by service."""

    procs: Mapping[str, Sequence[int]]
    interval_s: float = 0.5
    start_cpu: dict[str, float] = field(default_factory=dict)
    idle_rss: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, float] = field(default_factory=dict)
    started: float = 0.0
    _task: asyncio.Task[None] | None = None

    def _all(self) -> dict[str, Sequence[int]]:
        return {**self.procs, "caller": [os.getpid()]}

    def sample(self) -> dict[str, ProcSample]:
        """The summed CPU and memory of each service's live processes now."""
        out: dict[str, ProcSample] = {}
        for svc, pids in self._all().items():
            samples = [s for s in (read_proc(pid) for pid in pids) if s is not None]
            if samples:
                out[svc] = ProcSample(sum(s.cpu_s for s in samples), sum(s.rss_mib for s in samples))
        return out

    def start(self) -> None:
        now = self.sample()
        self.started = time.monotonic()
        self.start_cpu = {svc: s.cpu_s for svc, s in now.items()}
        self.idle_rss = {svc: s.rss_mib for svc, s in now.items()}
        self.peak_rss = dict(self.idle_rss)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            for svc, s in self.sample().items():
                self.peak_rss[svc] = max(self.peak_rss.get(svc, 0.0), s.rss_mib)

    async def stop(self) -> tuple[dict[str, float], float]:
        """End the window: CPU seconds used by each service in it, and its length in seconds."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        wall = time.monotonic() - self.started
        end = self.sample()
        for svc, s in end.items():
            self.peak_rss[svc] = max(self.peak_rss.get(svc, 0.0), s.rss_mib)
        used = {svc: end[svc].cpu_s - cpu for svc, cpu in self.start_cpu.items() if svc in end}
        return used, wall


def resource_report(
    cpu_s: Mapping[str, float],
    wall_s: float,
    idle_rss: Mapping[str, float],
    peak_rss: Mapping[str, float],
    calls: float,
) -> dict[str, Any]:
    """CPU (cores, % of a core per call) and memory (idle, peak, growth per call) by service and summed over the
    stack's services (``total``: every service but ``caller``, the bench itself).

    Args:
        cpu_s: CPU seconds each service used in the window.
        wall_s: the window's length.
        idle_rss: memory (MiB) before the window.
        peak_rss: the highest memory (MiB) sampled during it.
        calls: calls in progress on average over the window (the per-call denominator).
    """
    services: dict[str, dict[str, float]] = {}
    for svc in sorted(cpu_s):
        cores = cpu_s[svc] / wall_s if wall_s > 0 else 0.0
        idle, peak = idle_rss.get(svc, 0.0), peak_rss.get(svc, 0.0)
        services[svc] = {
            "cpu_cores": round(cores, 3),
            "cpu_pct_per_call": round(100 * cores / calls, 2) if calls else 0.0,
            "rss_mib_idle": round(idle, 1),
            "rss_mib_peak": round(peak, 1),
            "rss_mib_per_call": round(max(0.0, peak - idle) / calls, 2) if calls else 0.0,
        }
    stack = [v for k, v in services.items() if k != "caller"]
    total = {
        key: round(sum(s[key] for s in stack), 3 if key == "cpu_cores" else 2)
        for key in ("cpu_cores", "cpu_pct_per_call", "rss_mib_idle", "rss_mib_peak", "rss_mib_per_call")
    }
    return {"services": services, "total": total, "window_s": round(wall_s, 1), "calls_in_progress": round(calls, 2)}


async def scrape(targets: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Every target's ``/metrics``, parsed and summed by service (a target that does not answer is skipped)."""
    out: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(timeout=5.0) as http:
        for svc, hosts in targets.items():
            merged: dict[str, float] = {}
            for host in hosts:
                try:
                    r = await http.get(f"http://{host}/metrics")
                except httpx.HTTPError:
                    continue
                if r.status_code != 200:
                    continue
                for series, value in parse_metrics(r.text).items():
                    merged[series] = merged.get(series, 0.0) + value
            out[svc] = merged
    return out


def _entry_ms(entry_id: str) -> float:
    """When Redis stamped an auto id: its whole millisecond, so the middle of it (error at most 0.5 ms)."""
    return float(entry_id.partition("-")[0]) + 0.5


def join_timeline(
    sid: str,
    finals: Sequence[tuple[str, ev.TranscriptFinal]],
    says: Sequence[tuple[str, ev.Say]],
    first_chunks: Mapping[int, ev.AudioChunk],
    latencies_s: Mapping[int, float],
) -> list[TurnTiming]:
    """The timelines of a call's answered utterances: each final joined to the first ``say`` answering it (same
    ``reply_to_voiced``), that turn's first audio chunk and the gateway's measured latency.

    Args:
        sid: the CallSid.
        finals: ``(entry id, final)`` from the call's ``events`` stream (auto ids: stamped at commit).
        says: ``(entry id, say)`` from its ``tts`` stream.
        first_chunks: the first ``audio.out`` chunk of each turn.
        latencies_s: the gateway's turn latencies by turn (first frame sent - ``reply_to_voiced``).
    """
    first_say: dict[float, tuple[str, ev.Say]] = {}
    for entry_id, say in says:
        if say.seq == 0 and say.reply_to_voiced > 0:
            first_say.setdefault(say.reply_to_voiced, (entry_id, say))
    out: list[TurnTiming] = []
    for final_id, final in finals:
        answer = first_say.get(final.last_voiced_arrived)
        if answer is None:
            continue  # not answered (merged into the next utterance, or the call ended)
        say_id, say = answer
        chunk = first_chunks.get(say.turn_no)
        latency = latencies_s.get(say.turn_no)
        out.append(
            TurnTiming(
                call_sid=sid,
                turn_no=say.turn_no,
                last_voiced=final.last_voiced_arrived,
                endpointed=final.endpointed_at,
                recognized=final.recognized_at,
                final_committed=_entry_ms(final_id),
                decided=say.decided_at or None,
                say_committed=_entry_ms(say_id),
                synth_started=chunk.synth_started if chunk is not None and chunk.synth_started else None,
                first_frame=say.reply_to_voiced + latency * 1000 if latency is not None else None,
            )
        )
    return out


async def turn_timings(bus: Bus, sid: str) -> list[TurnTiming]:
    """:func:`join_timeline` of call ``sid`` as its streams hold it now (they live 10 minutes after the call)."""
    finals: list[tuple[str, ev.TranscriptFinal]] = []
    for entry in await bus.range(keys.events(sid)):
        event = _decoded(entry.data)
        if isinstance(event, ev.TranscriptFinal):
            finals.append((entry.id, event))
    says: list[tuple[str, ev.Say]] = []
    for entry in await bus.range(keys.tts(sid)):
        event = _decoded(entry.data)
        if isinstance(event, ev.Say):
            says.append((entry.id, event))
    chunks: dict[int, ev.AudioChunk] = {}
    for turn in {say.turn_no for _, say in says if say.seq == 0}:
        for entry in await bus.range(keys.audio_out(sid), f"{turn}-0", f"{turn}-0"):
            event = _decoded(entry.data)
            if isinstance(event, ev.AudioChunk):
                chunks[turn] = event
    meta = await bus.hgetall(keys.meta(sid))
    latencies: dict[int, float] = {}
    for key, value in meta.items():
        if key.startswith("latency:"):
            latencies[int(key.split(":", 1)[1])] = float(value)
    return join_timeline(sid, finals, says, chunks, latencies)


def _decoded(data: bytes) -> ev.Event | None:
    try:
        return ev.decode(data)
    except ev.EventDecodeError:
        return None
