"""Admission control: a new call is connected only when every worker service has room for it; otherwise it waits
on hold, first come first served, and is connected as soon as a line frees up.

Invariants:
- A service's room is the ``MAX_CALLS`` of its live replicas that are not draining, summed (their capacity
  reports, :mod:`voxcart.common.capacity`). The calls that use it are the calls admitted and not ended
  (``ACTIVE_CALLS``, fresh entries): that includes calls admitted a moment ago and not yet claimed by any worker,
  so a burst cannot overshoot. A call is admitted when fewer calls are in use than the smallest room of stt, brain
  and tts, and no call that waits longer would get the free place first (the store does both in one step).
- A service with no live report limits nothing: its workers are of a version that does not report, or none runs
  yet (then the call waits on the bus for a worker, as without admission). Admission never holds calls for lack
  of data; it holds them when the reports say every replica is full.
- Metrics: ``voxcart_queued_calls`` (calls on hold in the whole deployment, as this gateway last saw it: take the
  max across gateways, not the sum), ``voxcart_admission_total{outcome}`` and ``voxcart_admission_wait_seconds``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec
from prometheus_client import Counter, Gauge, Histogram

from voxcart.common import events as ev
from voxcart.common.bus.ownership import OwnershipConfig
from voxcart.common.capacity import STALE_MS, ServiceCapacity, summarize

from .admission_store import ADMITTED, WAITING, AdmissionStore

__all__ = ["ADMISSIONS", "OUTCOMES", "QUEUED_CALLS", "SERVICES", "Admission", "Decision"]

log = logging.getLogger("voxcart.gateway.admission")

SERVICES = ("stt", "brain", "tts")
ACTIVE_STALE_MS = OwnershipConfig.heartbeat_stale_ms
"""An ``ACTIVE_CALLS`` entry older than this has no gateway beating for it (the workers reap it)."""
WAITER_GRACE_MS = 30_000
"""A call on hold that has not asked again for its hold time plus this hung up (a hold prompt lasts < 30 s)."""

OUTCOMES = ("admitted", "held", "admitted_after_hold", "callback", "timed_out", "abandoned")
"""``admitted`` at once; ``held`` (put on hold); then ``admitted_after_hold``, ``callback`` (asked to be called
back), ``timed_out`` (waited the longest allowed) or ``abandoned`` (hung up while on hold)."""

QUEUED_CALLS = Gauge(
    "voxcart_queued_calls",
    "Calls on hold waiting for a free line, in the whole deployment as this gateway last saw it.",
)
ADMISSIONS = Counter("voxcart_admission_total", "What admission control did with new calls.", ["outcome"])
for _outcome in OUTCOMES:  # exported at 0 from the start
    ADMISSIONS.labels(_outcome)
WAIT_SECONDS = Histogram(
    "voxcart_admission_wait_seconds",
    "How long admitted calls waited on hold (0 for calls admitted at once).",
    buckets=(0.0, 1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """What to do with a call now."""

    admitted: bool
    ahead: int
    """Calls waiting before it (when on hold)."""
    waited_s: float
    """Since it first asked."""
    joined: bool
    """It was put on hold just now."""
    room: int
    """Calls the services have room for together (-1: not limited)."""


class Admission:
    """Decides whether a call may connect now (see the module invariants).

    Args:
        store: the shared state (Redis).
        hold_s: how often a call on hold asks again.
        clock: epoch milliseconds (tests pass a fake).
    """

    def __init__(self, store: AdmissionStore, *, hold_s: int, clock: Callable[[], float] = ev.now_ms) -> None:
        self.store = store
        self._hold_ms = hold_s * 1000
        self._clock = clock

    async def capacity(self) -> dict[str, ServiceCapacity | None]:
        """Each worker service's live capacity (``None``: no live report); deletes the reports of dead replicas."""
        now = self._clock()
        out: dict[str, ServiceCapacity | None] = {}
        for svc in SERVICES:
            out[svc], dead = summarize(await self.store.capacity_reports(svc), now, STALE_MS)
            if dead:
                await self.store.forget_reports(svc, dead)
        return out

    @staticmethod
    def room(capacity: dict[str, ServiceCapacity | None]) -> int:
        """The calls every service has room for: the smallest known room; -1 when none is known."""
        known = [c.max_calls for c in capacity.values() if c is not None]
        return min(known) if known else -1

    async def check(self, sid: str) -> Decision:
        """Admit ``sid`` now, or keep it (put it) on hold. Raises :class:`BusError` when Redis fails."""
        room = self.room(await self.capacity())
        now = self._clock()
        result = await self.store.admit(sid, now, room, now - ACTIVE_STALE_MS, now - self._hold_ms - WAITER_GRACE_MS)
        QUEUED_CALLS.set(result.queued)
        if result.pruned:
            ADMISSIONS.labels("abandoned").inc(result.pruned)
        waited_s = max(0.0, (now - result.arrival_ms) / 1000)
        if result.status == ADMITTED:
            ADMISSIONS.labels("admitted" if result.joined else "admitted_after_hold").inc()
            WAIT_SECONDS.observe(waited_s)
            if not result.joined:
                log.info("call admitted after %.0f s on hold", waited_s, extra={"call_sid": sid})
        elif result.status == WAITING and result.joined:
            ADMISSIONS.labels("held").inc()
            log.info(
                "all lines busy (%d in use, room for %d): call on hold, %d ahead",
                result.in_use,
                room,
                result.ahead,
                extra={"call_sid": sid},
            )
        return Decision(
            admitted=result.status != WAITING,
            ahead=result.ahead,
            waited_s=waited_s,
            joined=result.joined,
            room=room,
        )

    async def leave(self, sid: str, outcome: str) -> bool:
        """Take ``sid`` off hold for ``outcome`` (``callback``, ``timed_out`` or ``abandoned``); counted only if it
        was waiting. Returns whether it was."""
        if outcome not in OUTCOMES:
            raise ValueError(f"admission outcome {outcome!r} is not one of {OUTCOMES}")
        left = await self.store.leave(sid)
        if left:
            ADMISSIONS.labels(outcome).inc()
            log.info("call left the hold queue: %s", outcome, extra={"call_sid": sid})
        QUEUED_CALLS.set(await self.store.queued())
        return left

    async def queued(self) -> int:
        """Calls on hold now (and updates the gauge)."""
        count = await self.store.queued()
        QUEUED_CALLS.set(count)
        return count
