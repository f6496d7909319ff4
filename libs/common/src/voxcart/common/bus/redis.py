"""The bus on a real Redis (redis-py asyncio + hiredis).

Lua scripts keep the fenced commit, lease renewal/release and the once-only ``call.started`` atomic. Every
stream entry carries one field, ``d``, holding the msgpack-encoded event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from .base import BusError, Entry, Output, PendingEntry
from .renewer import RENEW, SyncRedisRenewer, SyncRenewer

__all__ = ["RedisBus"]

_FIELD = b"d"
_TOO_SMALL = "equal or smaller"

_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local ttl = tonumber(ARGV[2])
local n_out, n_ck, n_st = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if ttl > 0 then
  for _, anchor in ipairs({KEYS[2], KEYS[4]}) do
    local left = redis.call('PTTL', anchor)
    if left > 0 and left < ttl then ttl = left end
  end
end
local a = 6
local added = 0
for i = 1, n_out do
  local key = KEYS[4 + i]
  local res = redis.pcall('XADD', key, 'MAXLEN', '~', ARGV[a + 1], ARGV[a], 'd', ARGV[a + 2])
  if type(res) == 'table' and res.err then
    if not string.find(res.err, 'equal or smaller', 1, true) then return redis.error_reply(res.err) end
  else
    added = added + 1
    if ttl > 0 then redis.call('PEXPIRE', key, ttl, 'NX') end
  end
  a = a + 3
end
local function hset(key, n)
  if n == 0 then return end
  local args = {}
  for i = 1, n * 2 do args[i] = ARGV[a + i - 1] end
  redis.call('HSET', key, unpack(args))
  if ttl > 0 then redis.call('PEXPIRE', key, ttl, 'NX') end
  a = a + n * 2
end
hset(KEYS[2], n_ck)
hset(KEYS[3], n_st)
return added
"""
"""The fenced commit: KEYS the lease, the checkpoint, the state (or the checkpoint again), the TTL anchor (or the
checkpoint again), then the outputs' streams;
ARGV the lease value, the TTL, the counts of outputs/checkpoint fields/state fields, then ``id, maxlen, data`` per
output and the fields. -1 when fenced out, else how many outputs were appended.

A key the commit creates lives no longer than the checkpoint it commits nor the anchor (the call's ``meta``,
which the gateway creates before ``call.started``): ``PTTL`` of each caps the TTL. Once the gateway cuts a call's
keys to their retention at ``call.ended``, a late commit of that call (a replica still working through its
backlog, or one that never committed for it before) cannot re-create one of them with the full two hours."""

_PUBLISH = """
local ttl = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 3
  local res = redis.pcall('XADD', KEYS[i], 'MAXLEN', '~', ARGV[a + 1], ARGV[a], 'd', ARGV[a + 2])
  if type(res) == 'table' and res.err then out[i] = '!' .. res.err else out[i] = res end
end
if ttl > 0 then
  local seen = {}
  for i = 1, #KEYS do
    if not seen[KEYS[i]] then seen[KEYS[i]] = true; redis.call('PEXPIRE', KEYS[i], ttl, 'NX') end
  end
end
return out
"""
"""``publish`` in one script call: KEYS the outputs' streams, ARGV the TTL then ``id, maxlen, data`` per output;
each output's new id, or ``!`` and the error. One command instead of a pipeline of XADDs: redis-py spends ~3x
less CPU per entry (measured: 4-9 us against 12-19 us at batches of 50-10), which is most of what the gateway's
inbound audio costs it besides the websocket."""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_START_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', '100000', '*', 'd', ARGV[1])
  return 1
end
return 0
"""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisBus:
    """:class:`~voxcart.common.bus.base.Bus` on Redis.

    Args:
        url: a ``redis://`` DSN.
        client: an existing client (tests); ``url`` is ignored then.
    """

    def __init__(self, url: str = "redis://localhost:6379/0", client: aioredis.Redis | None = None) -> None:
        self.url = url
        self._own_client = client is None
        # A blocking pool: a burst of commands beyond 64 connections (a worker renewing all its leases while every
        # call commits) waits for a free connection instead of failing with "Too many connections".
        self.redis: aioredis.Redis = client or aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(
                url,
                decode_responses=False,
                socket_timeout=5.0,
                socket_connect_timeout=3.0,
                health_check_interval=15,
                max_connections=64,
                timeout=5.0,
            )
        )
        self._commit = self.redis.register_script(_COMMIT)
        self._publish = self.redis.register_script(_PUBLISH)
        self._renew = self.redis.register_script(RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._start_once = self.redis.register_script(_START_ONCE)

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self.redis.aclose()

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise BusError(f"redis: {exc}") from exc

    # -- streams --------------------------------------------------------------------------------------
    async def publish(self, outputs: Sequence[Output], ttl_ms: int = 0) -> list[str | None]:
        if not outputs:
            return []
        args: list[Any] = [ttl_ms]
        for out in outputs:
            args += (out.id, out.maxlen, out.data)
        replies = await self._call(self._publish(keys=[out.stream for out in outputs], args=args))
        ids: list[str | None] = []
        for reply in replies:
            if not reply.startswith(b"!"):
                ids.append(_s(reply))
            elif _TOO_SMALL in (error := reply[1:].decode(errors="replace")):
                ids.append(None)
            else:
                raise BusError(f"redis: {error}")
        return ids

    async def _publish_pipelined(self, outputs: Sequence[Output], ttl_ms: int = 0) -> list[str | None]:
        """:meth:`publish` as a pipeline of XADDs (a Cluster: a batch's streams are spread over slots)."""
        if not outputs:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for out in outputs:
            pipe.xadd(out.stream, {_FIELD: out.data}, id=out.id, maxlen=out.maxlen, approximate=True)
        streams = list(dict.fromkeys(o.stream for o in outputs)) if ttl_ms > 0 else []
        for stream in streams:
            pipe.execute_command("PEXPIRE", stream, ttl_ms, "NX")
        try:
            results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            raise BusError(f"redis: {exc}") from exc
        ids: list[str | None] = []
        for res in results[: len(outputs)]:
            if isinstance(res, ResponseError) and _TOO_SMALL in str(res):
                ids.append(None)
            elif isinstance(res, Exception):
                raise BusError(f"redis: {res}")
            else:
                ids.append(_s(res))
        return ids

    async def read(self, positions: Mapping[str, str], count: int, block_ms: int) -> list[Entry]:
        if not positions:
            return []
        streams: dict[Any, Any] = dict(positions)
        reply = await self._call(self.redis.xread(streams, count=count, block=block_ms or None))
        return [
            Entry(_s(stream), _s(eid), fields.get(_FIELD, b""))
            for stream, items in reply or []
            for eid, fields in items
        ]

    async def range(self, stream: str, start: str = "-", end: str = "+", count: int | None = None) -> list[Entry]:
        items = await self._call(self.redis.xrange(stream, start, end, count=count))
        return [Entry(stream, _s(eid), fields.get(_FIELD, b"")) for eid, fields in items]

    async def last_id(self, stream: str) -> str | None:
        items = await self._call(self.redis.xrevrange(stream, count=1))
        return _s(items[0][0]) if items else None

    # -- consumer groups ---------------------------------------------------------------------------------
    async def ensure_group(self, stream: str, group: str) -> None:
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise BusError(f"redis: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise BusError(f"redis: {exc}") from exc

    async def read_group(self, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[Entry]:
        try:
            reply: Any = await self.redis.xreadgroup(
                group, consumer, {stream: ">"}, count=count, block=block_ms or None
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                await self.ensure_group(stream, group)
                return []
            raise BusError(f"redis: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise BusError(f"redis: {exc}") from exc
        return [Entry(stream, _s(eid), fields.get(_FIELD, b"")) for _, items in reply or [] for eid, fields in items]

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> None:
        if ids:
            await self._call(self.redis.xack(stream, group, *ids))

    async def autoclaim(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[PendingEntry]:
        try:
            reply = await self.redis.xautoclaim(stream, group, consumer, min_idle_ms, "0-0", count=count)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise BusError(f"redis: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise BusError(f"redis: {exc}") from exc
        claimed = [(eid, fields) for eid, fields in reply[1] if fields is not None]
        if not claimed:
            return []
        pending = await self._call(
            self.redis.xpending_range(stream, group, min=claimed[0][0], max=claimed[-1][0], count=len(claimed) + 10)
        )
        deliveries = {_s(p["message_id"]): int(p["times_delivered"]) for p in pending}
        return [PendingEntry(_s(eid), fields.get(_FIELD, b""), deliveries.get(_s(eid), 1)) for eid, fields in claimed]

    async def group_lag(self, stream: str, group: str) -> int:
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return 0
            raise BusError(f"redis: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise BusError(f"redis: {exc}") from exc
        for info in groups:
            if _s(info["name"]) != group:
                continue
            lag = info.get("lag")
            if lag is not None:
                return int(lag)
            # Redis cannot tell (entries deleted in the group's range): count what follows its position
            after = "(" + _s(info["last-delivered-id"])
            return len(await self._call(self.redis.xrange(stream, after, "+", count=100_000)))
        return 0

    # -- leases and the commit ---------------------------------------------------------------------------
    async def acquire_lease(self, key: str, value: str, ttl_ms: int) -> bool:
        return bool(await self._call(self.redis.set(key, value, nx=True, px=ttl_ms)))

    async def renew_lease(self, key: str, value: str, ttl_ms: int) -> bool:
        return bool(await self._call(self._renew(keys=[key], args=[value, ttl_ms])))

    async def release_lease(self, key: str, value: str) -> bool:
        return bool(await self._call(self._release(keys=[key], args=[value])))

    def sync_renewer(self, timeout_s: float) -> SyncRenewer | None:
        """A connection of its own to the same server; ``None`` for a bus on a client it was given (tests, the
        Cluster and test-only buses: their renewal stays on the event loop)."""
        return SyncRedisRenewer(self.url, timeout_s) if self._own_client else None

    async def renew_leases(self, leases: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        if not leases:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for key, value in leases:
            await self._renew(keys=[key], args=[value, ttl_ms], client=pipe)
        return [bool(r) for r in await self._call(pipe.execute())]

    async def leases_exist(self, keys: Sequence[str]) -> list[bool]:
        return await self.exists(keys)

    async def exists(self, keys: Sequence[str]) -> list[bool]:
        if not keys:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return [bool(r) for r in await self._call(pipe.execute())]

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
        state = state or {}
        keys = [lease_key, checkpoint_key, state_key or checkpoint_key, ttl_anchor or checkpoint_key]
        keys += [o.stream for o in outputs]
        args: list[Any] = [lease_value, ttl_ms, len(outputs), len(checkpoint), len(state)]
        for out in outputs:
            args += [out.id, out.maxlen, out.data]
        for field, value in checkpoint.items():
            args += [field, value]
        for field, blob in state.items():
            args += [field, blob]
        result = await self._call(self._commit(keys=keys, args=args))
        return int(result) >= 0

    # -- plain keys ---------------------------------------------------------------------------------------
    async def hgetall(self, key: str) -> dict[str, bytes]:
        raw = await self._call(self.redis.hgetall(key))
        return {_s(k): v for k, v in raw.items()}

    async def hget(self, key: str, field: str) -> bytes | None:
        value: bytes | None = await self._call(self.redis.hget(key, field))
        return value

    async def hset(self, key: str, values: Mapping[str, str | bytes | float | int], ttl_ms: int = 0) -> None:
        pipe = self.redis.pipeline(transaction=False)
        mapping: dict[Any, Any] = dict(values)
        pipe.hset(key, mapping=mapping)
        if ttl_ms > 0:
            pipe.execute_command("PEXPIRE", key, ttl_ms, "NX")
        await self._call(pipe.execute())

    async def set_nx(self, key: str, value: str, ttl_ms: int) -> bool:
        return bool(await self._call(self.redis.set(key, value, nx=True, px=ttl_ms)))

    async def incr(self, key: str, ttl_ms: int = 0) -> int:
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(key)
        if ttl_ms > 0:
            pipe.execute_command("PEXPIRE", key, ttl_ms, "NX")
        results = await self._call(pipe.execute())
        return int(results[0])

    async def expire(self, keys: Sequence[str], ttl_ms: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.pexpire(key, ttl_ms)
        await self._call(pipe.execute())

    async def start_call_once(self, started_key: str, lifecycle: str, data: bytes, ttl_ms: int) -> bool:
        return bool(await self._call(self._start_once(keys=[started_key, lifecycle], args=[data, ttl_ms])))

    # -- sorted sets ------------------------------------------------------------------------------------
    async def zadd(self, key: str, members: Mapping[str, float]) -> None:
        if members:
            await self._call(self.redis.zadd(key, dict(members)))

    async def zrem(self, key: str, members: Sequence[str]) -> None:
        if members:
            await self._call(self.redis.zrem(key, *members))

    async def zrange_by_score(
        self, key: str, low: float, high: float, *, reverse: bool = False, limit: int | None = None
    ) -> list[tuple[str, float]]:
        if reverse:
            raw = await self._call(
                self.redis.zrevrangebyscore(key, high, low, start=0 if limit else None, num=limit, withscores=True)
            )
        else:
            raw = await self._call(
                self.redis.zrangebyscore(key, low, high, start=0 if limit else None, num=limit, withscores=True)
            )
        return [(_s(member), float(score)) for member, score in raw]

    async def zscores(self, key: str, members: Sequence[str]) -> list[float | None]:
        if not members:
            return []
        raw = await self._call(self.redis.zmscore(key, list(members)))
        return [None if v is None else float(v) for v in raw]
