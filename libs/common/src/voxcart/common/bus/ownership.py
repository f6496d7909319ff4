"""Call ownership: every call is owned by one replica per service through a lease, with fenced commits.

Invariants (design.md, "Ownership"):
- A replica claims new calls from the lifecycle stream only while it owns fewer than ``max_calls``
  (pull-when-free is the load balancing).
- A lease is ``SET NX PX``; it is renewed every third of its TTL, all of a replica's leases in one round trip, from
  a thread with a connection of its own (:mod:`.renewer`: a lagging event loop cannot make them lapse) while the
  loop still turns, else (a Cluster, the in-memory bus) from a task that only does renewal. A lease that cannot
  be renewed is dropped at once: the call is no longer ours.
- Only the lease holder commits: :meth:`Ownership.commit` runs one Lua call that checks the lease value, appends
  the outputs and sets the checkpoint (and state). A zombie's commit is fenced out.
- A sweep takes over calls that are active (gateway heartbeat) but have no lease: their owner died.
- On drain (SIGTERM) the replica stops claiming and releases its leases; peers take over on their next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from .. import events as ev
from ..metrics import DLQ_TOTAL, LEASE_ACQUIRED, LEASE_LOST, OWNED_CALLS, BusStreamMetrics
from ..tasks import cancel_and_wait
from . import keys
from .base import Bus, BusError, Output
from .renewer import HeldLease, RenewThread

__all__ = ["Lease", "Ownership", "OwnershipConfig"]

log = logging.getLogger("voxcart.common.ownership")

AcquiredCallback = Callable[[str, str], Awaitable[None]]
"""``(call_sid, reason)``; reason is ``claimed`` (lifecycle) or ``takeover`` (sweep)."""
DroppedCallback = Callable[[str, str], Awaitable[None]]
"""``(call_sid, reason)``; reason is ``lost`` (lease gone), ``ended`` (call over) or ``drain``."""


@dataclass(frozen=True)
class OwnershipConfig:
    max_calls: int = 50
    """Own at most this many calls; claim new ones only below it."""
    lease_ttl_ms: int = 3000
    """Lease lifetime; renewal runs every third of it."""
    sweep_interval_ms: int = 500
    """Orphan sweep period (jittered by ±20 %)."""
    heartbeat_stale_ms: int = 10_000
    """An active call whose gateway heartbeat is older than this is reaped."""
    autoclaim_idle_ms: int = 2000
    """A ``call.started`` pending this long on a dead replica is claimed by another."""
    max_deliveries: int = 3
    """After this many deliveries a lifecycle entry goes to the dead-letter stream."""
    call_ttl_ms: int = keys.CALL_TTL_MS
    loop_stall_ms: int = 10_000
    """Renewal from the thread stops while the event loop has not turned for this long (a stuck replica)."""
    renew_in_thread: bool = True
    """Renew from a thread where the bus offers a synchronous renewer (a single Redis)."""


@dataclass
class Lease:
    sid: str
    key: str
    value: str
    acquired_at: float = field(default_factory=time.monotonic)


class Ownership:
    """Claims, renews, sweeps, commits and releases the calls of one service replica.

    Args:
        bus: the bus.
        svc: ``stt``, ``brain`` or ``tts`` (the lifecycle consumer group).
        replica: this replica's unique name.
        config: tunables.
        on_acquired: awaited after a lease is won, before the call's inputs are read.
        on_dropped: awaited after a call stops being ours.
    """

    def __init__(
        self,
        bus: Bus,
        svc: str,
        replica: str,
        config: OwnershipConfig,
        on_acquired: AcquiredCallback,
        on_dropped: DroppedCallback,
    ) -> None:
        self.bus = bus
        self.svc = svc
        self.replica = replica
        self.config = config
        self.owned: dict[str, Lease] = {}
        self._on_acquired = on_acquired
        self._on_dropped = on_dropped
        self._tasks: list[asyncio.Task[None]] = []
        self._draining = False
        self._last_renew_ok = time.monotonic()
        self._renewer: RenewThread | None = None
        self._applying: set[asyncio.Task[None]] = set()
        self._gauge = OWNED_CALLS.labels(svc)
        for reason in ("claimed", "takeover"):  # exported at 0 from the start, so rates and alerts see them
            LEASE_ACQUIRED.labels(svc, reason)
        LEASE_LOST.labels(svc)
        DLQ_TOTAL.labels(svc)
        self.lifecycle = BusStreamMetrics(svc, ["lifecycle"])
        """Lag of the lifecycle entries this replica handles, and its group's backlog."""

    @property
    def healthy(self) -> bool:
        """Renewal has reached Redis within the lease TTL, and the loops are running."""
        alive = all(not t.done() for t in self._tasks) and (self._renewer is None or self._renewer.alive)
        return alive and time.monotonic() - self._last_renew_ok < self.config.lease_ttl_ms / 1000

    async def start(self) -> None:
        await self.bus.ensure_group(keys.LIFECYCLE, self.svc)
        interval_s = self.config.lease_ttl_ms / 3000
        sync = self.bus.sync_renewer(interval_s) if self.config.renew_in_thread else None
        if sync is not None:
            self._renewer = RenewThread(
                sync,
                lambda: tuple(self.owned.values()),
                self.config.lease_ttl_ms,
                interval_s,
                self.config.loop_stall_ms / 1000,
                self._renewal_done,
            )
            self._renewer.start()
        self._tasks = [
            *([] if self._renewer else [asyncio.create_task(self._renew_loop(), name=f"{self.svc}-renew")]),
            asyncio.create_task(self._claim_loop(), name=f"{self.svc}-claim"),
            asyncio.create_task(self._sweep_loop(), name=f"{self.svc}-sweep"),
            asyncio.create_task(self._backlog_loop(), name=f"{self.svc}-backlog"),
        ]

    async def stop(self) -> None:
        if self._renewer is not None:
            await self._renewer.stop()
            self._renewer = None
        await cancel_and_wait(*self._tasks, *self._applying)
        self._tasks = []

    # -- acquiring ---------------------------------------------------------------------------------------
    async def try_acquire(self, sid: str, reason: str) -> bool:
        """Take the call's lease if nobody holds it and there is capacity."""
        if self._draining or sid in self.owned or len(self.owned) >= self.config.max_calls:
            return False
        lease = Lease(sid, keys.lease(self.svc, sid), f"{self.replica}:{uuid.uuid4().hex[:12]}")
        if not await self.bus.acquire_lease(lease.key, lease.value, self.config.lease_ttl_ms):
            return False
        self.owned[sid] = lease
        self._gauge.set(len(self.owned))
        LEASE_ACQUIRED.labels(self.svc, reason).inc()
        log.info("acquired call", extra={"call_sid": sid, "reason": reason, "svc": self.svc})
        try:
            await self._on_acquired(sid, reason)
        except Exception:
            log.exception("setting up an acquired call failed; releasing it", extra={"call_sid": sid})
            await self.release(sid, "error")
            return False
        return True

    async def _claim_loop(self) -> None:
        last_autoclaim = 0.0
        while True:
            try:
                if self._draining or len(self.owned) >= self.config.max_calls:
                    await asyncio.sleep(0.05)
                    continue
                now = time.monotonic()
                if now - last_autoclaim > self.config.autoclaim_idle_ms / 1000:
                    last_autoclaim = now
                    await self._claim_stale_starts()
                for entry in await self.bus.read_group(keys.LIFECYCLE, self.svc, self.replica, 1, 500):
                    await self._handle_lifecycle(entry.id, entry.data)
            except asyncio.CancelledError:
                raise
            except BusError as exc:
                log.warning("lifecycle read failed: %s", exc)
                await asyncio.sleep(0.5)
            except Exception:
                log.exception("claim loop error")
                await asyncio.sleep(0.5)

    async def _claim_stale_starts(self) -> None:
        spare = self.config.max_calls - len(self.owned)
        if spare <= 0:
            return
        pending = await self.bus.autoclaim(keys.LIFECYCLE, self.svc, self.replica, self.config.autoclaim_idle_ms, spare)
        for item in pending:
            if item.deliveries > self.config.max_deliveries:
                await self.dead_letter(keys.LIFECYCLE, item.id, "", "too many deliveries", item.deliveries, item.data)
                await self.bus.ack(keys.LIFECYCLE, self.svc, [item.id])
            else:
                await self._handle_lifecycle(item.id, item.data)

    async def _handle_lifecycle(self, entry_id: str, data: bytes) -> None:
        try:
            event = ev.decode(data)
        except ev.EventDecodeError as exc:
            await self.dead_letter(keys.LIFECYCLE, entry_id, "", str(exc), 1, data)
        else:
            self.lifecycle.handled("lifecycle", event.ts, ev.now_ms())
            if isinstance(event, ev.CallStarted) and not await self._gone(event.call_sid):
                await self.try_acquire(event.call_sid, "claimed")
        await self.bus.ack(keys.LIFECYCLE, self.svc, [entry_id])

    async def _gone(self, sid: str) -> bool:
        """A ``call.started`` read late (a backlog, a redelivery) for a call that is no longer active and whose keys
        have expired: claiming it would only re-create its keys."""
        (beat,) = await self.bus.zscores(keys.ACTIVE_CALLS, [sid])
        if beat is not None:
            return False
        (started,) = await self.bus.exists([keys.started(sid)])
        if not started:
            log.info("skipped the start of a call that is over", extra={"call_sid": sid, "svc": self.svc})
        return not started

    async def _backlog_loop(self) -> None:
        """Export the lifecycle group's lag each second (it grows while every replica is full)."""
        while True:
            try:
                self.lifecycle.set_waiting("lifecycle", await self.bus.group_lag(keys.LIFECYCLE, self.svc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a metric must never stop the replica (healthy checks this task)
                log.debug("lifecycle backlog not measured: %r", exc)
            await asyncio.sleep(1.0)

    async def _sweep_loop(self) -> None:
        while True:
            interval = self.config.sweep_interval_ms / 1000
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except BusError as exc:
                log.warning("sweep failed: %s", exc)
            except Exception:
                log.exception("sweep error")

    async def sweep(self) -> None:
        """Reap stale calls, drop owned calls that ended, and take over active calls that have no lease."""
        now_ms = ev.now_ms()
        stale = await self.bus.zrange_by_score(
            keys.ACTIVE_CALLS, float("-inf"), now_ms - self.config.heartbeat_stale_ms
        )
        if stale:
            await self.bus.zrem(keys.ACTIVE_CALLS, [sid for sid, _ in stale])
        active = {sid for sid, _ in await self.bus.zrange_by_score(keys.ACTIVE_CALLS, float("-inf"), float("inf"))}
        for sid in [sid for sid in self.owned if sid not in active]:
            await self.release(sid, "ended")
        if self._draining:
            return
        candidates = sorted(sid for sid in active if sid not in self.owned)
        if not candidates:
            return
        exists = await self.bus.leases_exist([keys.lease(self.svc, sid) for sid in candidates])
        for sid, held in zip(candidates, exists, strict=True):
            if len(self.owned) >= self.config.max_calls:
                break
            if not held:
                await self.try_acquire(sid, "takeover")

    # -- keeping and losing ------------------------------------------------------------------------------
    async def _renew_loop(self) -> None:
        """Renewal on the event loop, where the bus offers no thread renewer."""
        while True:
            await asyncio.sleep(self.config.lease_ttl_ms / 3000)
            leases = tuple(self.owned.values())
            result: list[bool] | BusError
            try:
                # one round trip (one pooled connection) for every lease, however many calls this replica owns
                result = await self.bus.renew_leases(
                    [(lease.key, lease.value) for lease in leases], self.config.lease_ttl_ms
                )
            except BusError as exc:
                result = exc
            await self._apply_renewal(leases, result)

    def _renewal_done(self, leases: tuple[HeldLease, ...], result: list[bool] | BusError) -> None:
        """On the loop, from the renewal thread (with the ``Lease`` objects it was given)."""
        owned = cast(tuple[Lease, ...], leases)  # the snapshot is of ``self.owned``: Lease objects
        task = asyncio.create_task(self._apply_renewal(owned, result), name=f"{self.svc}-renewed")
        self._applying.add(task)
        task.add_done_callback(self._applying.discard)

    async def _apply_renewal(self, leases: tuple[Lease, ...], result: list[bool] | BusError) -> None:
        if isinstance(result, BusError):
            log.warning("lease renewal failed: %s", result)
            if time.monotonic() - self._last_renew_ok > self.config.lease_ttl_ms / 1000:
                for lease in leases:
                    if self.owned.get(lease.sid) is lease:
                        await self._lose(lease.sid)
            return
        self._last_renew_ok = time.monotonic()
        for lease, ok in zip(leases, result, strict=True):
            if not ok and self.owned.get(lease.sid) is lease:
                await self._lose(lease.sid)

    async def _lose(self, sid: str) -> None:
        if self.owned.pop(sid, None) is None:
            return
        self._gauge.set(len(self.owned))
        LEASE_LOST.labels(self.svc).inc()
        log.warning("lost the lease of a call", extra={"call_sid": sid, "svc": self.svc})
        await self._on_dropped(sid, "lost")

    async def release(self, sid: str, reason: str) -> None:
        """Stop owning a call and delete its lease (only if it is still ours)."""
        lease = self.owned.pop(sid, None)
        if lease is None:
            return
        self._gauge.set(len(self.owned))
        try:
            await self._on_dropped(sid, reason)
        finally:
            with contextlib.suppress(BusError):
                await self.bus.release_lease(lease.key, lease.value)

    async def drain(self) -> None:
        """Stop claiming and release every call (SIGTERM)."""
        self._draining = True
        for sid in list(self.owned):
            await self.release(sid, "drain")

    # -- committing --------------------------------------------------------------------------------------
    async def commit(
        self,
        sid: str,
        outputs: Sequence[Output],
        checkpoint: Mapping[str, str],
        state: Mapping[str, bytes] | None = None,
    ) -> bool:
        """Fenced commit of outputs + checkpoint (+ state). ``False`` means the call is no longer ours."""
        lease = self.owned.get(sid)
        if lease is None:
            return False
        ok = await self.bus.commit(
            lease.key,
            lease.value,
            outputs,
            keys.checkpoint(self.svc, sid),
            checkpoint,
            keys.state(sid) if state else None,
            state,
            ttl_ms=self.config.call_ttl_ms,
            ttl_anchor=keys.meta(sid),
        )
        if not ok:
            await self._lose(sid)
        return ok

    async def dead_letter(
        self, stream: str, entry_id: str, sid: str, error: str, attempts: int, payload: bytes
    ) -> None:
        DLQ_TOTAL.labels(self.svc).inc()
        log.error("dead-lettered an entry", extra={"stream": stream, "entry": entry_id, "error": error})
        record = {
            "stream": stream,
            "id": entry_id,
            "call_sid": sid,
            "error": error,
            "attempts": attempts,
            "replica": self.replica,
            "ts": ev.now_ms(),
            "payload": payload.hex(),
        }
        await self.bus.publish([Output(keys.dlq(self.svc), json.dumps(record).encode(), maxlen=keys.DLQ_MAXLEN)])
