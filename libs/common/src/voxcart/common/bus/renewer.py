"""Lease renewal on a thread of its own, with a Redis connection of its own.

Why: a replica's leases were renewed by a task on its event loop. When that loop lags (a saturated stt replica:
PocketSphinx holds the GIL for a whole decode, measured 0.66 s for 2 s of audio; a soak at 50 calls on a starved
core showed 2.5 s without one loop turn), the renewal comes too late, every lease of the replica lapses at once,
and its calls churn through takeovers (2,148 lost leases and 24 failed calls in that soak) although the replica
was alive and working. A thread needs the GIL only for the few microseconds of a pipelined renewal and gets it
within the interpreter's switch interval, so the leases of a replica that is slow but alive stay its own.

Invariants:
- Renewal stops while the event loop has not turned for ``loop_stall_s``: a replica whose loop is stuck (a
  deadlock, an endless CPU-bound step) must lose its calls to a peer, as a dead one does.
- The thread never touches the replica's state: it reads a snapshot of the owned leases (``tuple()`` of a dict's
  values is one C call under the GIL, so it is consistent) and hands each result to the loop with
  ``call_soon_threadsafe``; the loop decides what a failed renewal means.
- Its connection is not the bus's pool: a renewal never waits behind the replica's commits and reads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import redis
from redis.exceptions import RedisError

from .base import BusError

__all__ = ["RENEW", "HeldLease", "RenewThread", "SyncRedisRenewer", "SyncRenewer"]

log = logging.getLogger("voxcart.common.bus.renewer")

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
"""Extend a lease (KEYS[1]) to ARGV[2] ms only if it still holds ARGV[1]; 1 if it did, else 0."""


class SyncRenewer(Protocol):
    """Renews leases synchronously (from a thread), one round trip for all of them."""

    def renew(self, leases: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        """Each ``(key, value)`` lease extended to ``ttl_ms`` if it still holds ``value``.

        Raises:
            BusError: Redis could not be reached.
        """
        ...

    def close(self) -> None: ...


class SyncRedisRenewer:
    """:class:`SyncRenewer` on one Redis server, over a single connection of its own.

    Args:
        url: the bus's ``redis://`` DSN.
        timeout_s: socket timeout (a third of the lease TTL: a renewal later than that is of no use).
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        self.client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=False
        )
        self._script = self.client.register_script(RENEW)

    def renew(self, leases: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        if not leases:
            return []
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, value in leases:
                self._script(keys=[key], args=[value, ttl_ms], client=pipe)
            return [bool(r) for r in pipe.execute()]
        except (RedisError, OSError) as exc:
            raise BusError(f"redis: {exc}") from exc

    def close(self) -> None:
        self.client.close()


class HeldLease(Protocol):
    """A lease the replica holds (``ownership.Lease``): its key and the value that proves it is ours."""

    @property
    def key(self) -> str: ...

    @property
    def value(self) -> str: ...


class RenewThread:
    """Every ``interval_s``, renews the leases ``snapshot()`` returns through ``renewer``, from a daemon thread.

    Args:
        renewer: the synchronous renewer (its own connection).
        snapshot: the owned leases; called from the thread.
        ttl_ms: the TTL each renewal sets.
        interval_s: between renewals (a third of the TTL).
        loop_stall_s: no renewal while the event loop has not turned for this long (see the module).
        on_result: called on the loop with the leases renewed and one ``bool`` each, or the :class:`BusError`.
    """

    def __init__(
        self,
        renewer: SyncRenewer,
        snapshot: Callable[[], Sequence[HeldLease]],
        ttl_ms: int,
        interval_s: float,
        loop_stall_s: float,
        on_result: Callable[[tuple[HeldLease, ...], list[bool] | BusError], None],
    ) -> None:
        self._renewer = renewer
        self._snapshot = snapshot
        self._ttl_ms = ttl_ms
        self._interval_s = interval_s
        self._loop_stall_s = loop_stall_s
        self._on_result = on_result
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self.loop_turned = time.monotonic()
        """When the event loop last turned (set on the loop by :meth:`_beat`)."""

    def start(self) -> None:
        """Start on the running loop: the beat task there, the renewal thread beside it."""
        self._loop = asyncio.get_running_loop()
        self.loop_turned = time.monotonic()
        self._beat_task = asyncio.create_task(self._beat(), name="lease-loop-beat")
        self._thread = threading.Thread(target=self._run, name="lease-renewal", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._beat_task is not None:
            self._beat_task.cancel()
            await asyncio.gather(self._beat_task, return_exceptions=True)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        self._renewer.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    async def _beat(self) -> None:
        while True:
            self.loop_turned = time.monotonic()
            await asyncio.sleep(min(0.25, self._interval_s / 2))

    def _run(self) -> None:
        assert self._loop is not None
        while not self._stop.wait(self._interval_s):
            if time.monotonic() - self.loop_turned > self._loop_stall_s:
                log.warning("the event loop has not turned for %.1f s: leases left to lapse", self._loop_stall_s)
                continue
            owned = tuple(self._snapshot())
            result: list[bool] | BusError
            try:
                result = self._renewer.renew([(lease.key, lease.value) for lease in owned], self._ttl_ms)
            except BusError as exc:
                result = exc
            except Exception as exc:  # never let the thread die silently: the loop's health check sees it
                log.exception("lease renewal thread error")
                result = BusError(f"renewal: {exc!r}")
            try:
                self._loop.call_soon_threadsafe(self._on_result, owned, result)
            except RuntimeError:  # the loop is closed: the replica is gone
                return
