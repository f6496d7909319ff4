"""The bus on a Redis Cluster: :class:`RedisBus` with the operations a Cluster serves differently.

A Cluster refuses any single command (a multi-key command, a Lua script) whose keys hash to different slots,
even when those slots sit on the same node (``CROSSSLOT``). Pipelines are fine: redis-py splits them per node.

Invariants:
- All of a call's keys carry its CallSid in braces (``keys.py``), so its streams, lease, checkpoint and state share
  one slot and the fenced commit stays one Lua call on one node. A commit whose keys span slots is refused with a
  :class:`BusError` naming each key's slot, before anything is sent.
- ``read`` over many calls never opens a blocking connection per call. One slot (one call): one ``XREAD BLOCK`` on
  its node, as on a single Redis. Several slots: each slot's non-blocking ``XREAD`` is pipelined to its node (one
  round trip per node, the nodes concurrently), repeated every ``poll_ms`` until something arrives or ``block_ms``
  has passed. An entry waits at most ``poll_ms`` longer than on a single Redis, for one round trip per node per poll.
- ``call.started`` goes out once: its once-marker lives in the lifecycle stream's slot (the stream's name is the
  marker's hash tag), so ``SET NX`` + ``XADD`` stay one atomic script. There is no second step to die before, and a
  retried webhook publishes nothing.
- The orphan sweep's lease check is the pipelined ``EXISTS`` :class:`RedisBus` already sends (split per node).
- Cluster-level failures that redis-py reports outside its ``RedisError`` tree (no node reachable, a slot nobody
  serves, a command it cannot route) become :class:`BusError`, like any other Redis failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from .base import BusError, Entry, Output
from .redis import RedisBus

__all__ = ["ClusterBus", "ClusterUnavailable", "is_cluster_url", "once_marker"]

_FIELD = b"d"
_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def is_cluster_url(url: str) -> bool:
    """Does ``url`` name a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``)?"""
    return urlsplit(url).scheme in _SCHEMES


def _node_url(url: str) -> str:
    """The ``redis://``/``rediss://`` URL of the seed node, refusing what a Cluster cannot do."""
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme, parts.scheme)
    if scheme not in ("redis", "rediss"):
        raise ValueError(
            f"Redis Cluster URL {parts.scheme}://{parts.hostname}: expected redis+cluster:// or rediss+cluster://"
        )
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError(f"Redis Cluster URL {scheme}://{parts.hostname}{parts.path}: a Cluster has only database 0")
    return urlunsplit((scheme, parts.netloc, "", parts.query, ""))


class ClusterUnavailable(RedisError):
    """A Cluster failure redis-py raises as a bare ``RedisClusterException`` (outside ``RedisError``)."""


class _Cluster(RedisCluster):
    """``RedisCluster`` whose cluster-level exceptions are ``RedisError``s, so :class:`RedisBus` maps them to
    :class:`BusError` (and the writer, renewal and sweep loops retry instead of dying)."""

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> RedisCluster:
        try:
            return await super().initialize(additional_startup_nodes_info, last_failed_node_name)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc


class ClusterBus(RedisBus):
    """:class:`~voxcart.common.bus.base.Bus` on a Redis Cluster.

    Every command :class:`RedisBus` sends is served by ``RedisCluster`` unchanged (single-key commands, scripts whose
    keys share a slot, non-transactional pipelines split per node); what differs on a Cluster is overridden here.

    Args:
        url: any node of the Cluster, as ``redis+cluster://[user:password@]host:port`` (``rediss+cluster://`` for
            TLS) or a plain ``redis://``/``rediss://`` URL; the other nodes are discovered.
        poll_ms: while reading several calls, how long to wait between polls when nothing has arrived.
    """

    def __init__(self, url: str, poll_ms: int = 10) -> None:
        if poll_ms < 1:
            raise ValueError(f"poll_ms must be at least 1, got {poll_ms}")
        self.cluster: RedisCluster = _Cluster.from_url(
            _node_url(url),
            decode_responses=False,
            socket_timeout=5.0,
            socket_connect_timeout=3.0,
            health_check_interval=15,
            max_connections=64,
        )
        # RedisCluster offers every command method RedisBus calls; the type differs, the interface does not.
        super().__init__(url, client=cast(aioredis.Redis, self.cluster))
        self.poll_ms = poll_ms

    async def publish(self, outputs: Sequence[Output], ttl_ms: int = 0) -> list[str | None]:
        """A pipeline (split per node): the one-script publish would need every stream in one slot."""
        return await self._publish_pipelined(outputs, ttl_ms)

    # -- streams --------------------------------------------------------------------------------------
    async def read(self, positions: Mapping[str, str], count: int, block_ms: int) -> list[Entry]:
        if not positions:
            return []
        slots: dict[int, dict[str, str]] = {}
        for stream, position in positions.items():
            slots.setdefault(self.cluster.keyslot(stream), {})[stream] = position
        try:
            await self.cluster.initialize()
            if len(slots) == 1:
                replies = [await self._xread(next(iter(slots.values())), count, block_ms)]
            else:
                replies = await self._poll(list(slots.values()), count, block_ms)
        except (RedisError, RedisClusterException, OSError) as exc:
            raise BusError(f"redis: {exc}") from exc
        found: dict[str, list[Entry]] = {}
        for reply in replies:
            for stream, items in reply or []:
                name = _text(stream)
                found[name] = [Entry(name, _text(eid), fields.get(_FIELD, b"")) for eid, fields in items]
        return [entry for stream in positions for entry in found.get(stream, [])]

    @staticmethod
    def _xread_args(group: Mapping[str, str], count: int, block_ms: int) -> list[Any]:
        args: list[Any] = ["XREAD", "COUNT", count]
        if block_ms:
            args += ["BLOCK", block_ms]
        return [*args, "STREAMS", *group.keys(), *group.values()]

    async def _xread(self, group: Mapping[str, str], count: int, block_ms: int) -> Any:
        """One ``XREAD`` on the node serving the group's slot (named, so redis-py need not ask for the keys)."""
        node = self.cluster.get_node_from_key(next(iter(group)))
        return await self.cluster.execute_command(*self._xread_args(group, count, block_ms), target_nodes=node)

    async def _poll(self, groups: list[dict[str, str]], count: int, block_ms: int) -> list[Any]:
        """Non-blocking ``XREAD`` per slot, pipelined per node, until something arrives or ``block_ms`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        while True:
            pipe = self.cluster.pipeline(transaction=False)
            for group in groups:
                node = self.cluster.get_node_from_key(next(iter(group)))
                pipe.execute_command(*self._xread_args(group, count, 0), target_nodes=node)
            replies: list[Any] = await pipe.execute()
            remaining = deadline - loop.time()
            if any(replies) or remaining <= 0:
                return replies
            await asyncio.sleep(min(self.poll_ms / 1000, remaining))

    # -- leases and the fenced commit -----------------------------------------------------------------------
    async def renew_leases(self, leases: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        """One script call per lease, concurrently: a Cluster pipeline does not load a script a node lacks."""
        return list(await asyncio.gather(*(self.renew_lease(key, value, ttl_ms) for key, value in leases)))

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
        touched = [lease_key, checkpoint_key, *([state_key] if state_key else []), *(o.stream for o in outputs)]
        touched += [ttl_anchor] if ttl_anchor else []
        slots = {key: self.cluster.keyslot(key) for key in touched}
        if len(set(slots.values())) > 1:
            named = ", ".join(f"{key} (slot {slot})" for key, slot in slots.items())
            raise BusError(
                f"a commit's keys must share one Cluster slot (one call's keys, its CallSid in braces): {named}"
            )
        return await super().commit(
            lease_key, lease_value, outputs, checkpoint_key, checkpoint, state_key, state, ttl_ms, ttl_anchor
        )

    # -- call.started once --------------------------------------------------------------------------------
    async def start_call_once(self, started_key: str, lifecycle: str, data: bytes, ttl_ms: int) -> bool:
        return await super().start_call_once(once_marker(lifecycle, started_key), lifecycle, data, ttl_ms)


def once_marker(lifecycle: str, started_key: str) -> str:
    """Where a Cluster keeps ``started_key``'s once-marker: in ``lifecycle``'s slot (its name as the hash tag),
    e.g. ``vc:once:{vc:calls:lifecycle}:vc:call:CA1:started``. The call's own braces are dropped: only the first
    ``{...}`` of a key picks its slot, and a second would read as the call's."""
    return f"vc:once:{{{lifecycle}}}:{started_key.replace('{', '').replace('}', '')}"
