"""The bus interface: what every service needs from Redis, and nothing more.

Two implementations: :mod:`voxcart.common.bus.redis` (production) and :mod:`voxcart.common.bus.memory`
(unit tests). One contract suite runs against both, so the fake cannot drift from the real thing.

Stream entry ids are Redis ids ``<ms>-<seq>``. An output with an explicit id at or below the stream's top is
*rejected* (not an error): that is how a replayed or zombie write is dropped (design.md, idempotency).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import msgspec

if TYPE_CHECKING:
    from .renewer import SyncRenewer

__all__ = ["Bus", "BusError", "Entry", "Output", "PendingEntry", "parse_id"]


class BusError(RuntimeError):
    """Redis failed or refused a command for a reason other than a rejected explicit id."""


class Output(msgspec.Struct, frozen=True):
    """One entry to append to a stream."""

    stream: str
    data: bytes
    id: str = "*"
    """``*`` for an auto id, or an explicit ``<a>-<b>`` (rejected if not above the stream's top)."""
    maxlen: int = 10_000
    """Approximate trim (``MAXLEN ~``)."""


class Entry(msgspec.Struct, frozen=True):
    stream: str
    id: str
    data: bytes


class PendingEntry(msgspec.Struct, frozen=True):
    id: str
    data: bytes
    deliveries: int


def parse_id(entry_id: str) -> tuple[int, int]:
    """``"12-3"`` -> ``(12, 3)``; raises ``ValueError`` on anything else."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Bus(Protocol):
    """What voxcart needs from Redis. Methods raise :class:`BusError` when Redis is unreachable."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...

    # -- streams --------------------------------------------------------------------------------------
    async def publish(self, outputs: Sequence[Output], ttl_ms: int = 0) -> list[str | None]:
        """Append entries in one pipelined round trip.

        Returns each entry's id, or ``None`` where an explicit id was rejected as not above the top.
        ``ttl_ms`` > 0 gives streams that have no expiry yet that TTL.
        """
        ...

    async def read(self, positions: Mapping[str, str], count: int, block_ms: int) -> list[Entry]:
        """``XREAD`` after each stream's position; waits up to ``block_ms`` when nothing is there."""
        ...

    async def range(self, stream: str, start: str = "-", end: str = "+", count: int | None = None) -> list[Entry]: ...

    async def last_id(self, stream: str) -> str | None: ...

    # -- consumer groups (the lifecycle stream) ---------------------------------------------------------
    async def ensure_group(self, stream: str, group: str) -> None: ...

    async def read_group(self, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[Entry]: ...

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> None: ...

    async def autoclaim(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[PendingEntry]: ...

    async def group_lag(self, stream: str, group: str) -> int:
        """Entries of ``stream`` not yet delivered to ``group`` (0 when the stream or the group does not exist)."""
        ...

    # -- leases and the fenced commit -------------------------------------------------------------------
    async def acquire_lease(self, key: str, value: str, ttl_ms: int) -> bool:
        """``SET key value NX PX ttl``."""
        ...

    async def renew_lease(self, key: str, value: str, ttl_ms: int) -> bool:
        """Extend the lease only if it still holds ``value``."""
        ...

    async def release_lease(self, key: str, value: str) -> bool:
        """Delete the lease only if it still holds ``value``."""
        ...

    async def renew_leases(self, leases: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        """:meth:`renew_lease` for many ``(key, value)`` leases in one round trip; one result each."""
        ...

    async def leases_exist(self, keys: Sequence[str]) -> list[bool]: ...

    def sync_renewer(self, timeout_s: float) -> SyncRenewer | None:
        """A renewer with a connection of its own, for a thread (:mod:`.renewer`); ``None`` where there is none."""
        ...

    async def exists(self, keys: Sequence[str]) -> list[bool]:
        """Whether each key exists (one round trip)."""
        ...

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
        """Atomically, if the lease still holds ``lease_value``: append ``outputs`` (rejected explicit ids are
        skipped), set the checkpoint fields (+ the state fields). Returns ``False`` when fenced out.

        Keys it creates get ``ttl_ms``, capped by what is left of the TTL of the checkpoint key and of
        ``ttl_anchor`` (a key of the same call that exists from its start, e.g. its ``meta``): a call's keys cut to
        their retention at its end are not re-created for longer by a late commit."""
        ...

    # -- plain keys ---------------------------------------------------------------------------------------
    async def hgetall(self, key: str) -> dict[str, bytes]: ...

    async def hget(self, key: str, field: str) -> bytes | None:
        """One field of a hash (``None`` if the hash or the field is missing)."""
        ...

    async def hset(self, key: str, values: Mapping[str, str | bytes | float | int], ttl_ms: int = 0) -> None: ...

    async def set_nx(self, key: str, value: str, ttl_ms: int) -> bool:
        """Dedupe: ``True`` the first time, ``False`` for a repeat."""
        ...

    async def incr(self, key: str, ttl_ms: int = 0) -> int: ...

    async def expire(self, keys: Sequence[str], ttl_ms: int) -> None: ...

    async def start_call_once(self, started_key: str, lifecycle: str, data: bytes, ttl_ms: int) -> bool:
        """Publish ``call.started`` exactly once per call (``SET NX`` + ``XADD`` in one script)."""
        ...

    # -- sorted sets (active calls, call index) -------------------------------------------------------------
    async def zadd(self, key: str, members: Mapping[str, float]) -> None: ...

    async def zrem(self, key: str, members: Sequence[str]) -> None: ...

    async def zrange_by_score(
        self, key: str, low: float, high: float, *, reverse: bool = False, limit: int | None = None
    ) -> list[tuple[str, float]]: ...

    async def zscores(self, key: str, members: Sequence[str]) -> list[float | None]: ...
