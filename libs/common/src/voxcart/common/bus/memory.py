"""An in-memory bus with Redis semantics, for unit tests (httpx's MockTransport idea).

It honours what the services rely on: explicit ids rejected at or below a stream's top, approximate trimming,
blocking reads that wake on a publish, consumer groups with pending entries and delivery counts, leases with
expiry, and the fenced commit. TTLs on plain keys expire lazily, by the event loop's clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

from .base import Entry, Output, PendingEntry, parse_id

__all__ = ["MemoryBus"]

Id = tuple[int, int]


def _fmt(eid: Id) -> str:
    return f"{eid[0]}-{eid[1]}"


class _Stream:
    def __init__(self) -> None:
        self.entries: list[tuple[Id, bytes]] = []
        self.top: Id = (0, 0)


class _Group:
    def __init__(self) -> None:
        self.last: Id = (0, 0)
        self.pending: dict[Id, tuple[str, float, int]] = {}


class MemoryBus:
    """:class:`~voxcart.common.bus.base.Bus` in memory. Not thread-safe; one event loop."""

    def __init__(self) -> None:
        self.streams: dict[str, _Stream] = {}
        self.groups: dict[tuple[str, str], _Group] = {}
        self.values: dict[str, object] = {}
        self.expiry: dict[str, float] = {}
        self._changed = asyncio.Event()
        self.closed = False

    # -- helpers ---------------------------------------------------------------------------------------
    def _now(self) -> float:
        return time.monotonic() * 1000

    def _alive(self, key: str) -> bool:
        deadline = self.expiry.get(key)
        if deadline is not None and deadline <= self._now():
            self.values.pop(key, None)
            self.streams.pop(key, None)
            self.expiry.pop(key, None)
            return False
        return key in self.values or key in self.streams

    def _expire_nx(self, key: str, ttl_ms: int) -> None:
        if ttl_ms > 0 and key not in self.expiry:
            self.expiry[key] = self._now() + ttl_ms

    def _xadd(self, out: Output) -> str | None:
        self._alive(out.stream)
        stream = self.streams.setdefault(out.stream, _Stream())
        if out.id == "*":
            ms = int(time.time() * 1000)
            eid = (ms, 0) if ms > stream.top[0] else (stream.top[0], stream.top[1] + 1)
        elif out.id.endswith("-*"):
            ms = int(out.id[:-2])
            eid = (ms, stream.top[1] + 1) if ms == stream.top[0] else (ms, 0)
            if eid <= stream.top:
                return None
        else:
            eid = parse_id(out.id)
            if eid <= stream.top:
                return None
        stream.entries.append((eid, out.data))
        stream.top = eid
        if len(stream.entries) > out.maxlen + 100:
            del stream.entries[: len(stream.entries) - out.maxlen]
        return _fmt(eid)

    async def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait_change(self, timeout: float) -> bool:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races its timeout.
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True

    async def ping(self) -> bool:
        return not self.closed

    async def close(self) -> None:
        self.closed = True

    # -- streams --------------------------------------------------------------------------------------
    async def publish(self, outputs: Sequence[Output], ttl_ms: int = 0) -> list[str | None]:
        ids = [self._xadd(out) for out in outputs]
        for out in outputs:
            self._expire_nx(out.stream, ttl_ms)
        await self._notify()
        return ids

    def _after(self, stream: str, position: str, count: int) -> list[Entry]:
        if not self._alive(stream):
            return []
        pos = parse_id(position) if position != "$" else self.streams[stream].top
        return [Entry(stream, _fmt(eid), data) for eid, data in self.streams[stream].entries if eid > pos][:count]

    async def read(self, positions: Mapping[str, str], count: int, block_ms: int) -> list[Entry]:
        resolved = {
            s: (_fmt(self.streams[s].top) if p == "$" and s in self.streams else p) for s, p in positions.items()
        }
        resolved = {s: ("0-0" if p == "$" else p) for s, p in resolved.items()}
        deadline = time.monotonic() + block_ms / 1000
        while True:
            found = [e for s, p in resolved.items() for e in self._after(s, p, count)]
            if found or block_ms <= 0:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if not await self._wait_change(remaining):
                return []

    async def range(self, stream: str, start: str = "-", end: str = "+", count: int | None = None) -> list[Entry]:
        if not self._alive(stream):
            return []
        lo = (0, 0) if start == "-" else parse_id(start)
        hi = (2**63, 2**63) if end == "+" else parse_id(end)
        items = [Entry(stream, _fmt(eid), data) for eid, data in self.streams[stream].entries if lo <= eid <= hi]
        return items[:count] if count is not None else items

    async def last_id(self, stream: str) -> str | None:
        if not self._alive(stream) or not self.streams[stream].entries:
            return None
        return _fmt(self.streams[stream].entries[-1][0])

    # -- consumer groups ---------------------------------------------------------------------------------
    async def ensure_group(self, stream: str, group: str) -> None:
        self.streams.setdefault(stream, _Stream())
        self.groups.setdefault((stream, group), _Group())

    async def read_group(self, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[Entry]:
        deadline = time.monotonic() + block_ms / 1000
        while True:
            grp = self.groups.setdefault((stream, group), _Group())
            entries = self._after(stream, _fmt(grp.last), count)
            if entries:
                for entry in entries:
                    eid = parse_id(entry.id)
                    grp.pending[eid] = (consumer, self._now(), 1)
                    grp.last = eid
                return entries
            remaining = deadline - time.monotonic()
            if block_ms <= 0 or remaining <= 0:
                return []
            if not await self._wait_change(remaining):
                return []

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> None:
        grp = self.groups.get((stream, group))
        if grp is not None:
            for eid in ids:
                grp.pending.pop(parse_id(eid), None)

    async def autoclaim(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[PendingEntry]:
        grp = self.groups.get((stream, group))
        if grp is None:
            return []
        now = self._now()
        data = dict(self.streams[stream].entries) if stream in self.streams else {}
        claimed: list[PendingEntry] = []
        for eid, (_, since, deliveries) in sorted(grp.pending.items()):
            if len(claimed) >= count:
                break
            if now - since < min_idle_ms:
                continue
            if eid not in data:
                grp.pending.pop(eid)
                continue
            grp.pending[eid] = (consumer, now, deliveries + 1)
            claimed.append(PendingEntry(_fmt(eid), data[eid], deliveries + 1))
        return claimed

    async def group_lag(self, stream: str, group: str) -> int:
        grp = self.groups.get((stream, group))
        if grp is None or not self._alive(stream) or stream not in self.streams:
            return 0
        return sum(1 for eid, _ in self.streams[stream].entries if eid > grp.last)

    # -- leases and the commit ---------------------------------------------------------------------------
    async def acquire_lease(self, key: str, value: str, ttl_ms: int) -> bool:
        return await self.set_nx(key, value, ttl_ms)

    async def renew_lease(self, key: str, value: str, ttl_ms: int) -> bool:
        if self._alive(key) and self.values.get(key) == value:
            self.expiry[key] = self._now() + ttl_ms
            return True
        return False

    async def release_lease(self, key: str, value: str) -> bool:
        if self._alive(key) and self.values.get(key) == value:
            del self.values[key]
            self.expiry.pop(key, None)
            return True
        return False

    def sync_renewer(self, timeout_s: float) -> None:
        return None  # nothing to reach from another thread: renewal stays on the event loop

    async def renew_leases(self, leases: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        return [await self.renew_lease(key, value, ttl_ms) for key, value in leases]

    async def leases_exist(self, keys: Sequence[str]) -> list[bool]:
        return await self.exists(keys)

    async def exists(self, keys: Sequence[str]) -> list[bool]:
        return [self._alive(key) for key in keys]

    async def commit(
        self,
        lease_key: str,
        lease_value: str,
        outputs: Sequence[Output],
        checkpoint_key: str,
        checkpoint: Mapping[str, str],
        state_key: str | None = None,
        state: Mapping[str, bytes] | None = None,
        ttl_ms: int = 0,
        ttl_anchor: str | None = None,
    ) -> bool:
        if not self._alive(lease_key) or self.values.get(lease_key) != lease_value:
            return False
        for anchor in (checkpoint_key, ttl_anchor):  # as on Redis: what is left of their TTLs caps it
            if ttl_ms > 0 and anchor is not None and self._alive(anchor) and anchor in self.expiry:
                ttl_ms = max(1, min(ttl_ms, int(self.expiry[anchor] - self._now())))
        for out in outputs:
            if self._xadd(out) is not None:
                self._expire_nx(out.stream, ttl_ms)
        for key, fields in ((checkpoint_key, checkpoint), (state_key, state or {})):
            if key is not None and fields:
                self._hash(key).update({k: (v.encode() if isinstance(v, str) else v) for k, v in fields.items()})
                self._expire_nx(key, ttl_ms)
        await self._notify()
        return True

    # -- plain keys ---------------------------------------------------------------------------------------
    def _hash(self, key: str) -> dict[str, bytes]:
        self._alive(key)
        value = self.values.setdefault(key, {})
        assert isinstance(value, dict)
        return value

    async def hgetall(self, key: str) -> dict[str, bytes]:
        return dict(self._hash(key)) if self._alive(key) else {}

    async def hget(self, key: str, field: str) -> bytes | None:
        value = self.values.get(key) if self._alive(key) else None
        return value.get(field) if isinstance(value, dict) else None

    async def hset(self, key: str, values: Mapping[str, str | bytes | float | int], ttl_ms: int = 0) -> None:
        self._hash(key).update({k: v if isinstance(v, bytes) else str(v).encode() for k, v in values.items()})
        self._expire_nx(key, ttl_ms)

    async def set_nx(self, key: str, value: str, ttl_ms: int) -> bool:
        if self._alive(key):
            return False
        self.values[key] = value
        self.expiry[key] = self._now() + ttl_ms
        return True

    async def incr(self, key: str, ttl_ms: int = 0) -> int:
        current = int(str(self.values.get(key, 0))) if self._alive(key) else 0
        self.values[key] = str(current + 1)
        self._expire_nx(key, ttl_ms)
        return current + 1

    async def expire(self, keys: Sequence[str], ttl_ms: int) -> None:
        for key in keys:
            if self._alive(key):
                self.expiry[key] = self._now() + ttl_ms

    async def start_call_once(self, started_key: str, lifecycle: str, data: bytes, ttl_ms: int) -> bool:
        if not await self.set_nx(started_key, "1", ttl_ms):
            return False
        await self.publish([Output(lifecycle, data, maxlen=100_000)])
        return True

    # -- sorted sets ------------------------------------------------------------------------------------
    def _zset(self, key: str) -> dict[str, float]:
        self._alive(key)
        value = self.values.setdefault(key, {})
        assert isinstance(value, dict)
        return value

    async def zadd(self, key: str, members: Mapping[str, float]) -> None:
        self._zset(key).update(members)

    async def zrem(self, key: str, members: Sequence[str]) -> None:
        zset = self._zset(key)
        for member in members:
            zset.pop(member, None)

    async def zrange_by_score(
        self, key: str, low: float, high: float, *, reverse: bool = False, limit: int | None = None
    ) -> list[tuple[str, float]]:
        items = sorted(((m, s) for m, s in self._zset(key).items() if low <= s <= high), key=lambda x: (x[1], x[0]))
        if reverse:
            items.reverse()
        return items[:limit] if limit is not None else items

    async def zscores(self, key: str, members: Sequence[str]) -> list[float | None]:
        zset = self._zset(key)
        return [zset.get(m) for m in members]
