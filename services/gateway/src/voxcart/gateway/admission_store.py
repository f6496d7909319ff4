"""Where admission and rate limiting keep their state: Redis, shared by every gateway replica.

Keys (all in ``voxcart.common.bus.keys``): ``ACTIVE_CALLS`` (calls admitted and not ended, which the gateway already
keeps), ``ADMISSION_QUEUE`` (calls on hold by arrival) and ``ADMISSION_SEEN`` (their last check), the capacity
reports hash of each service, and one rate-limit zset per caller.

Invariants:
- :meth:`AdmissionStore.admit` is one atomic step: a call is admitted only if fewer than ``capacity`` calls are in
  ``ACTIVE_CALLS`` (fresh ones) *and* fewer calls than the free places wait before it; admitting it adds it to
  ``ACTIVE_CALLS`` at once, so a burst of webhooks on several replicas cannot admit more calls than there is room
  for (the admitted-but-not-yet-claimed calls count). On Redis this is one Lua script; its three keys share one
  Cluster slot.
- Waiting is first come, first served: a call keeps its first arrival time however often it asks again.
- A waiting call that has not asked again since ``waiter_stale_before_ms`` hung up: it is dropped (counted) so
  that it does not hold up the calls behind it.
- :meth:`AdmissionStore.count_call` counts a call from one caller at most once (keyed by CallSid) and only when
  it is let through, over a sliding window; one key, one script.
- :class:`BusAdmissionStore` does the same with the bus's plain commands: atomic only inside one process (the
  in-memory bus of unit tests, or a bus that does not expose a Redis client).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from voxcart.common.bus import Bus, BusError, keys

__all__ = ["Admit", "AdmissionStore", "BusAdmissionStore", "RedisAdmissionStore", "open_admission_store"]

ADMITTED, WAITING, ALREADY = 1, 0, 2


class Admit(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one admission check of a call."""

    status: int
    """``ADMITTED`` (1) now, ``WAITING`` (0) on hold, or ``ALREADY`` (2) admitted before (a retried webhook)."""
    ahead: int
    """Calls waiting before this one."""
    arrival_ms: float
    """When the call first asked (its place in the queue)."""
    in_use: int
    """Calls admitted and not ended, before this decision."""
    queued: int
    """Calls waiting after this decision."""
    pruned: int
    """Waiting calls dropped because they stopped asking (they hung up)."""
    joined: bool
    """The call asked for the first time."""


class AdmissionStore(Protocol):
    async def capacity_reports(self, svc: str) -> dict[str, bytes]:
        """The capacity reports hash of ``svc`` (replica -> report)."""
        ...

    async def forget_reports(self, svc: str, replicas: Sequence[str]) -> None:
        """Delete the reports of replicas that are gone."""
        ...

    async def admit(
        self, sid: str, now_ms: float, capacity: int, active_since_ms: float, waiter_stale_before_ms: float
    ) -> Admit:
        """Admit ``sid`` if there is room and its turn has come, else keep it waiting (see the invariants).
        ``capacity`` < 0: no limit."""
        ...

    async def leave(self, sid: str) -> bool:
        """Take ``sid`` off the queue; ``True`` if it was waiting."""
        ...

    async def queued(self) -> int:
        """Calls waiting."""
        ...

    async def count_call(self, bucket: str, sid: str, now_ms: float, window_ms: int, limit: int) -> tuple[bool, int]:
        """Let ``sid`` through if fewer than ``limit`` other calls of ``bucket`` arrived in the window.

        Returns:
            Whether it may go on, and the calls of the bucket in the window (this one included when let through).
        """
        ...


_ADMIT = """
local active, queue, seen = KEYS[1], KEYS[2], KEYS[3]
local sid, now, cap = ARGV[1], ARGV[2], tonumber(ARGV[3])
local pruned = 0
for _, waiter in ipairs(redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. ARGV[5])) do
  if waiter ~= sid then
    redis.call('ZREM', queue, waiter)
    redis.call('ZREM', seen, waiter)
    pruned = pruned + 1
  end
end
local used = redis.call('ZCOUNT', active, ARGV[4], '+inf')
if redis.call('ZSCORE', active, sid) then
  redis.call('ZREM', queue, sid)
  redis.call('ZREM', seen, sid)
  return {2, 0, ARGV[2], used, redis.call('ZCARD', queue), pruned, 0}
end
local joined = redis.call('ZADD', queue, 'NX', now, sid)
redis.call('ZADD', seen, now, sid)
local arrival = redis.call('ZSCORE', queue, sid)
local ahead = redis.call('ZRANK', queue, sid)
if cap < 0 or ahead < cap - used then
  redis.call('ZREM', queue, sid)
  redis.call('ZREM', seen, sid)
  redis.call('ZADD', active, now, sid)
  return {1, ahead, arrival, used, redis.call('ZCARD', queue), pruned, joined}
end
return {0, ahead, arrival, used, redis.call('ZCARD', queue), pruned, joined}
"""

_LEAVE = """
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

_COUNT = """
local key, sid, now, window, limit = KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[5])
if redis.call('ZSCORE', key, sid) then return {1, redis.call('ZCARD', key)} end
local n = redis.call('ZCARD', key)
if n >= limit then return {0, n} end
redis.call('ZADD', key, now, sid)
redis.call('PEXPIRE', key, window)
return {1, n + 1}
"""


class RedisAdmissionStore:
    """:class:`AdmissionStore` on the bus's Redis client (one Redis or a Cluster)."""

    def __init__(self, client: aioredis.Redis | RedisCluster) -> None:
        self._redis = client
        self._admit = client.register_script(_ADMIT)
        self._leave = client.register_script(_LEAVE)
        self._count = client.register_script(_COUNT)

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise BusError(f"redis: {exc}") from exc

    async def capacity_reports(self, svc: str) -> dict[str, bytes]:
        raw = await self._call(self._redis.hgetall(keys.capacity(svc)))
        return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}

    async def forget_reports(self, svc: str, replicas: Sequence[str]) -> None:
        if replicas:
            await self._call(self._redis.hdel(keys.capacity(svc), *replicas))

    async def admit(
        self, sid: str, now_ms: float, capacity: int, active_since_ms: float, waiter_stale_before_ms: float
    ) -> Admit:
        keys_ = [keys.ACTIVE_CALLS, keys.ADMISSION_QUEUE, keys.ADMISSION_SEEN]
        args: list[str | int] = [sid, int(now_ms), capacity, int(active_since_ms), int(waiter_stale_before_ms)]
        status, ahead, arrival, used, queued, pruned, joined = await self._call(self._admit(keys=keys_, args=args))
        return Admit(
            status=int(status),
            ahead=int(ahead),
            arrival_ms=float(arrival),
            in_use=int(used),
            queued=int(queued),
            pruned=int(pruned),
            joined=bool(int(joined)),
        )

    async def leave(self, sid: str) -> bool:
        result = await self._call(self._leave(keys=[keys.ADMISSION_QUEUE, keys.ADMISSION_SEEN], args=[sid]))
        return bool(int(result))

    async def queued(self) -> int:
        return int(await self._call(self._redis.zcard(keys.ADMISSION_QUEUE)))

    async def count_call(self, bucket: str, sid: str, now_ms: float, window_ms: int, limit: int) -> tuple[bool, int]:
        args: list[str | int] = [sid, int(now_ms), window_ms, limit, int(now_ms) - window_ms]
        allowed, count = await self._call(self._count(keys=[keys.rate_limit(bucket)], args=args))
        return bool(int(allowed)), int(count)


class BusAdmissionStore:
    """:class:`AdmissionStore` with the :class:`Bus` interface's plain commands (atomic inside one process only:
    the in-memory bus runs each command without yielding)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def capacity_reports(self, svc: str) -> dict[str, bytes]:
        return await self._bus.hgetall(keys.capacity(svc))

    async def forget_reports(self, svc: str, replicas: Sequence[str]) -> None:
        """The bus interface cannot delete hash fields: stale reports stay, ignored, until the hash expires."""

    async def _members(self, key: str, low: float = float("-inf"), high: float = float("inf")) -> list[str]:
        return [member for member, _ in await self._bus.zrange_by_score(key, low, high)]

    async def admit(
        self, sid: str, now_ms: float, capacity: int, active_since_ms: float, waiter_stale_before_ms: float
    ) -> Admit:
        bus, queue, seen = self._bus, keys.ADMISSION_QUEUE, keys.ADMISSION_SEEN
        gone = [w for w in await self._members(seen, high=waiter_stale_before_ms - 0.5) if w != sid]
        await bus.zrem(queue, gone)
        await bus.zrem(seen, gone)
        used = len(await self._members(keys.ACTIVE_CALLS, low=active_since_ms))
        if (await bus.zscores(keys.ACTIVE_CALLS, [sid]))[0] is not None:
            await bus.zrem(queue, [sid])
            await bus.zrem(seen, [sid])
            queued = len(await self._members(queue))
            return Admit(
                status=ALREADY, ahead=0, arrival_ms=now_ms, in_use=used, queued=queued, pruned=len(gone), joined=False
            )
        arrival = (await bus.zscores(queue, [sid]))[0]
        joined = arrival is None
        if arrival is None:
            arrival = now_ms
            await bus.zadd(queue, {sid: arrival})
        await bus.zadd(seen, {sid: now_ms})
        order = await self._members(queue)
        ahead = order.index(sid)
        status = WAITING
        if capacity < 0 or ahead < capacity - used:
            status = ADMITTED
            await bus.zrem(queue, [sid])
            await bus.zrem(seen, [sid])
            await bus.zadd(keys.ACTIVE_CALLS, {sid: now_ms})
        queued = len(await self._members(queue))
        return Admit(
            status=status, ahead=ahead, arrival_ms=arrival, in_use=used, queued=queued, pruned=len(gone), joined=joined
        )

    async def leave(self, sid: str) -> bool:
        was = (await self._bus.zscores(keys.ADMISSION_QUEUE, [sid]))[0] is not None
        await self._bus.zrem(keys.ADMISSION_QUEUE, [sid])
        await self._bus.zrem(keys.ADMISSION_SEEN, [sid])
        return was

    async def queued(self) -> int:
        return len(await self._members(keys.ADMISSION_QUEUE))

    async def count_call(self, bucket: str, sid: str, now_ms: float, window_ms: int, limit: int) -> tuple[bool, int]:
        key = keys.rate_limit(bucket)
        old = await self._members(key, high=now_ms - window_ms - 0.5)
        await self._bus.zrem(key, old)
        recent = await self._members(key)
        if sid in recent:
            return True, len(recent)
        if len(recent) >= limit:
            return False, len(recent)
        await self._bus.zadd(key, {sid: now_ms})
        await self._bus.expire([key], window_ms)
        return True, len(recent) + 1


def open_admission_store(bus: Bus) -> AdmissionStore:
    """A :class:`RedisAdmissionStore` on the bus's own Redis client when it has one, else a
    :class:`BusAdmissionStore`."""
    client = getattr(bus, "redis", None)
    if isinstance(client, aioredis.Redis | RedisCluster):
        return RedisAdmissionStore(client)
    return BusAdmissionStore(bus)
