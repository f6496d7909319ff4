"""What the soak reads from the running stack: each process's resident memory (``/proc``), the stack's Redis keys
(``SCAN``, ``TYPE``, ``PTTL``, ``MEMORY USAGE``), and the errors its services logged.

Invariants: memory is ``VmRSS`` of each process on its own (replicas are not summed, so one leaking replica shows);
a process that is gone reads as absent, never as zero; a key counts as having no TTL only when two reads of its
``PTTL`` half a second apart both say -1 (a key is created a moment before its ``PEXPIRE`` in some pipelines); the
scan only reads, it never changes a key.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from .soak_measure import GLOBAL_NO_TTL, HOLDING_GLOBALS, KeyInfo, MemorySample

__all__ = [
    "MemorySampler",
    "LogErrors",
    "count_log_errors",
    "cpu_seconds",
    "host_cpu",
    "global_sizes",
    "open_redis",
    "read_rss_kib",
    "redis_memory",
    "scan_keys",
    "still_held",
    "without_ttl_confirmed",
]

_RSS = re.compile(rb"^VmRSS:\s+(\d+)\s+kB", re.MULTILINE)


def read_rss_kib(pid: int, proc: Path = Path("/proc")) -> int | None:
    """Resident memory of process ``pid`` in KiB; ``None`` if it is gone (or is a zombie with no memory)."""
    try:
        status = (proc / str(pid) / "status").read_bytes()
    except OSError:
        return None
    match = _RSS.search(status)
    return int(match.group(1)) if match else None


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float | None:
    """CPU time (user + system, every thread) process ``pid`` has used so far; ``None`` if it is gone."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def host_cpu(proc: Path = Path("/proc")) -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine so far, summed over its CPUs (``/proc/stat``)."""
    values = [int(v) for v in (proc / "stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


@dataclass
class MemorySampler:
    """Samples the memory of ``procs`` (label -> pid) every ``interval_s`` while running, each sample tagged with
    ``done()`` (the calls completed so far)."""

    procs: Mapping[str, int]
    done: Callable[[], int]
    interval_s: float = 1.0
    samples: list[MemorySample] = field(default_factory=list)
    _t0: float = 0.0
    _task: asyncio.Task[None] | None = None

    def sample(self) -> MemorySample:
        """Take one sample now (and keep it)."""
        rss = {label: kib for label, pid in self.procs.items() if (kib := read_rss_kib(pid)) is not None}
        sample = MemorySample(round(time.monotonic() - self._t0, 2), self.done(), rss)
        self.samples.append(sample)
        return sample

    def start(self) -> None:
        self._t0 = time.monotonic()
        self.sample()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="soak-memory")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.sample()

    async def stop(self) -> None:
        """Stop sampling, after one last sample."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.sample()


def open_redis(url: str) -> aioredis.Redis:
    """A client of the stack's Redis.

    Raises:
        ValueError: a Redis Cluster URL (the soak audits one Redis).
    """
    if "+cluster" in url.split("://", 1)[0]:
        raise ValueError(f"{url}: the soak audits a single Redis, not a Redis Cluster")
    return aioredis.Redis.from_url(url, socket_timeout=10.0)


async def scan_keys(client: aioredis.Redis, *, memory: bool = False, batch: int = 500) -> list[KeyInfo]:
    """Every key of the database with its type and ``PTTL`` (and ``MEMORY USAGE`` with ``memory``); a key that
    expires between the ``SCAN`` and the reads is left out."""
    names: list[bytes] = [name async for name in client.scan_iter(count=1000)]
    out: list[KeyInfo] = []
    for start in range(0, len(names), batch):
        chunk = names[start : start + batch]
        pipe = client.pipeline(transaction=False)
        for name in chunk:
            pipe.type(name)
            pipe.pttl(name)
            if memory:
                pipe.memory_usage(name)
        replies = await pipe.execute()
        step = 3 if memory else 2
        for i, name in enumerate(chunk):
            kind, pttl = replies[i * step], int(replies[i * step + 1])
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if kind == "none" or pttl == -2:
                continue
            used = replies[i * step + 2] if memory else None
            out.append(KeyInfo(name.decode(errors="replace"), kind, pttl, int(used) if used is not None else None))
    return out


async def without_ttl_confirmed(client: aioredis.Redis, keys: Sequence[KeyInfo], delay_s: float = 0.5) -> list[KeyInfo]:
    """Those of ``keys`` whose ``PTTL`` is still -1 after ``delay_s`` (see the module invariants)."""
    if not keys:
        return []
    await asyncio.sleep(delay_s)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key.name)
    again = await pipe.execute()
    return [key for key, pttl in zip(keys, again, strict=True) if int(pttl) == -1]


async def still_held(client: aioredis.Redis, sids: Iterable[str]) -> dict[str, int]:
    """How many of ``sids`` each of :data:`HOLDING_GLOBALS` (and the records index) still holds."""
    wanted = list(sids)
    out: dict[str, int] = {}
    for name in (*HOLDING_GLOBALS, "vc:calls:index"):
        held = 0
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            scores = await client.zmscore(name, chunk) if chunk else []
            held += sum(score is not None for score in scores)
        out[name] = held
    return out


async def redis_memory(client: aioredis.Redis) -> dict[str, Any]:
    """``used_memory`` and ``used_memory_rss`` (MiB) and the number of keys."""
    info = await client.info("memory")
    return {
        "used_mib": round(int(info["used_memory"]) / 2**20, 2),
        "rss_mib": round(int(info["used_memory_rss"]) / 2**20, 2),
        "keys": int(await client.dbsize()),
    }


@dataclass
class LogErrors:
    """What the services logged at WARNING and above."""

    errors: int = 0
    """``ERROR`` and ``CRITICAL`` records."""
    warnings: int = 0
    tracebacks: int = 0
    top: dict[str, int] = field(default_factory=dict)
    """The most frequent WARNING-or-worse messages (``<svc> <LEVEL> <logger>: <message, cut>``) and their count."""


_TEXT = re.compile(
    r"^\S+ \S+ (?:(?P<svc>[a-z]+) )?(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<logger>\S+): (?P<msg>.*)$"
)
_SERIOUS = frozenset(("WARNING", "ERROR", "CRITICAL"))


def _record(line: str) -> tuple[str, str, bool] | None:
    """Level, summary and whether it carries a traceback, of one log line (text or JSON format); ``None`` if the
    line is not a record (a traceback's lines, uvicorn's own)."""
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        if not isinstance(obj, dict) or "level" not in obj:
            return None
        level = str(obj["level"]).upper()
        svc = f"{obj['service']} " if obj.get("service") else ""
        return level, f"{svc}{level} {obj.get('logger', '')}: {obj.get('msg', '')}", "exc" in obj
    match = _TEXT.match(line.rstrip("\n"))
    if match is None:
        return None
    svc = f"{match.group('svc')} " if match.group("svc") else ""
    return match.group("level"), f"{svc}{match.group('level')} {match.group('logger')}: {match.group('msg')}", False


def count_log_errors(lines: Iterable[str], top: int = 8, width: int = 90) -> LogErrors:
    """Count the WARNING-or-worse records and the tracebacks in the services' log lines (text or JSON format)."""
    out = LogErrors()
    seen: collections.Counter[str] = collections.Counter()
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            out.tracebacks += 1
            continue
        record = _record(line)
        if record is None or record[0] not in _SERIOUS:
            continue
        level, summary, traceback = record
        out.tracebacks += traceback
        if level == "WARNING":
            out.warnings += 1
        else:
            out.errors += 1
        seen[summary[:width]] += 1
    out.top = dict(seen.most_common(top))
    return out


async def global_sizes(client: aioredis.Redis, keys: Iterable[KeyInfo]) -> dict[str, dict[str, Any]]:
    """The global keys among ``keys`` that live without a TTL by design: type, length (entries, members or
    fields), bytes, TTL (-1: none) and why they may live without one."""
    wanted = [k for k in keys if k.name in GLOBAL_NO_TTL]
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(wanted, key=lambda k: k.name):
        length = {"stream": client.xlen, "zset": client.zcard, "hash": client.hlen}.get(key.type)
        out[key.name] = {
            "type": key.type,
            "length": int(await length(key.name)) if length is not None else None,
            "bytes": key.bytes,
            "ttl_s": -1 if key.pttl_ms == -1 else round(key.pttl_ms / 1000, 1),
            "why": GLOBAL_NO_TTL[key.name],
        }
    return out
