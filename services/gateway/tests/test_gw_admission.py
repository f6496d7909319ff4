"""Admission control and the per-number rate limit, on both stores: the in-memory bus (fake) and a real Redis.

Checked: a service's room is the sum of its live, non-draining replicas' ``MAX_CALLS``; a call is admitted only
below the smallest room, counting calls admitted and not yet claimed; waiting is first come first served; a burst
across gateway replicas (separate Redis clients) never admits more than the room; a waiter that stopped asking
is dropped; the rate limit counts each CallSid once, pools withheld numbers, and slides.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from voxcart.common.bus import ClusterBus, MemoryBus, RedisBus, keys
from voxcart.common.capacity import CapacityReport, publish_report
from voxcart.common.settings import load_settings
from voxcart.gateway.admission import ACTIVE_STALE_MS, ADMISSIONS, QUEUED_CALLS, Admission
from voxcart.gateway.admission_store import (
    AdmissionStore,
    BusAdmissionStore,
    RedisAdmissionStore,
    open_admission_store,
)
from voxcart.gateway.rate_limit import RateLimiter, bucket_of, is_withheld

NOW = 1_800_000_000_000.0


class Clock:
    def __init__(self) -> None:
        self.ms = NOW

    def __call__(self) -> float:
        return self.ms


class Env:
    """A store on a bus, a fake clock, and helpers to fake workers and live calls."""

    def __init__(self, bus: MemoryBus | RedisBus, store: AdmissionStore) -> None:
        self.bus, self.store, self.clock = bus, store, Clock()
        self.admission = Admission(store, hold_s=5, clock=self.clock)

    async def workers(self, max_calls: int = 1, replicas: int = 1, draining: bool = False, age_ms: int = 0) -> None:
        for svc in ("stt", "brain", "tts"):
            for i in range(replicas):
                report = CapacityReport(0, max_calls, draining, int(self.clock() - age_ms))
                await publish_report(self.bus, svc, f"{svc}-{i}", report)

    async def live_call(self, sid: str) -> None:
        await self.bus.zadd(keys.ACTIVE_CALLS, {sid: self.clock()})

    async def end_call(self, sid: str) -> None:
        await self.bus.zrem(keys.ACTIVE_CALLS, [sid])


@pytest.fixture(
    params=["memory", pytest.param("redis", marks=pytest.mark.redis), pytest.param("cluster", marks=pytest.mark.redis)]
)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    """The in-memory fake, a real Redis, and a real Redis Cluster (the admission script's keys share one slot)."""
    if request.param == "memory":
        bus = MemoryBus()
        yield Env(bus, BusAdmissionStore(bus))
        return
    if request.param == "cluster":
        real: RedisBus = ClusterBus(request.getfixturevalue("redis_cluster_url"))
    else:
        real = RedisBus(request.getfixturevalue("redis_url"))
    await real.redis.flushdb()
    try:
        store = open_admission_store(real)
        assert isinstance(store, RedisAdmissionStore)
        yield Env(real, store)
    finally:
        await real.close()


def _count(outcome: str) -> float:
    return ADMISSIONS.labels(outcome)._value.get()


async def test_gw_admission_without_reports_admits(env: Env) -> None:
    """No worker reports capacity: nothing to limit on (older workers, or none yet)."""
    for i in range(5):
        decision = await env.admission.check(f"CA{i}")
        assert decision.admitted and decision.room == -1
    assert len(await env.bus.zrange_by_score(keys.ACTIVE_CALLS, float("-inf"), float("inf"))) == 5


async def test_gw_admission_holds_when_every_replica_is_full_then_admits_fifo(env: Env) -> None:
    await env.workers(max_calls=1)
    held_before = _count("held")
    first = await env.admission.check("CAfirst")
    assert first.admitted and first.joined and first.room == 1
    a = await env.admission.check("CAa")
    env.clock.ms += 1000
    b = await env.admission.check("CAb")
    assert not a.admitted and a.joined and a.ahead == 0
    assert not b.admitted and b.joined and b.ahead == 1
    assert _count("held") == held_before + 2
    assert QUEUED_CALLS._value.get() == 2
    assert await env.admission.queued() == 2

    await env.end_call("CAfirst")  # a line frees up: the longest waiting goes first
    env.clock.ms += 1000
    b_again = await env.admission.check("CAb")
    assert not b_again.admitted and b_again.ahead == 1 and not b_again.joined
    a_again = await env.admission.check("CAa")
    assert a_again.admitted and a_again.waited_s == pytest.approx(2.0)
    b_last = await env.admission.check("CAb")
    assert not b_last.admitted and b_last.ahead == 0  # a took the only line
    active = {sid for sid, _ in await env.bus.zrange_by_score(keys.ACTIVE_CALLS, float("-inf"), float("inf"))}
    assert active == {"CAa"}


async def test_gw_admission_counts_every_replica_and_ignores_draining_and_dead_ones(env: Env) -> None:
    await env.workers(max_calls=2, replicas=2)  # room 4 per service
    await publish_report(env.bus, "tts", "tts-9", CapacityReport(0, 50, True, int(env.clock())))  # draining
    await publish_report(env.bus, "stt", "stt-9", CapacityReport(0, 50, False, int(env.clock() - 60_000)))  # dead
    capacity = await env.admission.capacity()
    assert capacity["stt"] is not None and capacity["stt"].max_calls == 4 and capacity["stt"].replicas == 2
    assert capacity["tts"] is not None and capacity["tts"].max_calls == 4 and capacity["tts"].replicas == 3
    decisions = [await env.admission.check(f"CA{i}") for i in range(6)]
    assert [d.admitted for d in decisions] == [True] * 4 + [False] * 2
    if isinstance(env.store, RedisAdmissionStore):  # the dead replica's report was deleted
        assert "stt-9" not in await env.bus.hgetall(keys.capacity("stt"))


async def test_gw_admission_smallest_service_limits(env: Env) -> None:
    await env.workers(max_calls=3)
    await publish_report(env.bus, "brain", "brain-0", CapacityReport(0, 1, False, int(env.clock())))
    assert (await env.admission.check("CA1")).admitted
    second = await env.admission.check("CA2")
    assert not second.admitted and second.room == 1


async def test_gw_admission_counts_admitted_calls_not_yet_claimed(env: Env) -> None:
    """Admission reserves the line at once: the workers' own counts (still 0) do not matter."""
    await env.workers(max_calls=2)
    assert (await env.admission.check("CA1")).admitted
    assert (await env.admission.check("CA2")).admitted
    assert not (await env.admission.check("CA3")).admitted


async def test_gw_admission_retried_webhook_is_admitted_once(env: Env) -> None:
    await env.workers(max_calls=1)
    before = _count("admitted") + _count("admitted_after_hold")
    assert (await env.admission.check("CA1")).admitted
    again = await env.admission.check("CA1")  # Twilio retried the webhook
    assert again.admitted and not again.joined
    assert _count("admitted") + _count("admitted_after_hold") == before + 1
    assert await env.admission.queued() == 0


async def test_gw_admission_stale_calls_do_not_count(env: Env) -> None:
    await env.workers(max_calls=1)
    await env.bus.zadd(keys.ACTIVE_CALLS, {"CAghost": env.clock() - ACTIVE_STALE_MS - 1})  # its gateway died
    assert (await env.admission.check("CA1")).admitted


async def test_gw_admission_drops_a_waiter_that_stopped_asking(env: Env) -> None:
    await env.workers(max_calls=1)
    await env.live_call("CAbusy")
    assert not (await env.admission.check("CAgone")).admitted
    env.clock.ms += 1000
    assert not (await env.admission.check("CAnext")).admitted
    abandoned = _count("abandoned")
    await env.end_call("CAbusy")
    env.clock.ms += 5000 + 30_000  # CAgone has not asked for longer than its hold + grace
    nxt = await env.admission.check("CAnext")
    assert nxt.admitted and nxt.ahead == 0
    assert _count("abandoned") == abandoned + 1
    assert await env.admission.queued() == 0


async def test_gw_admission_leave_counts_only_waiting_calls(env: Env) -> None:
    await env.workers(max_calls=1)
    await env.live_call("CAbusy")
    assert not (await env.admission.check("CAw")).admitted
    callbacks = _count("callback")
    assert await env.admission.leave("CAw", "callback")
    assert not await env.admission.leave("CAw", "callback")
    assert _count("callback") == callbacks + 1
    with pytest.raises(ValueError, match="not one of"):
        await env.admission.leave("CAw", "whatever")


@pytest.mark.redis
async def test_gw_admission_burst_across_replicas_never_overshoots(redis_url: str) -> None:
    """Five gateway replicas (own Redis clients) admit 40 simultaneous calls against room for 3: exactly 3 get in,
    and the other 37 wait in one queue."""
    buses = [RedisBus(redis_url) for _ in range(5)]
    try:
        await buses[0].redis.flushdb()
        for svc in ("stt", "brain", "tts"):
            await publish_report(buses[0], svc, f"{svc}-0", CapacityReport(0, 3, False, int(NOW)))
        admissions = [Admission(open_admission_store(bus), hold_s=5, clock=lambda: NOW) for bus in buses]
        assert all(isinstance(a.store, RedisAdmissionStore) for a in admissions)
        decisions = await asyncio.gather(*(admissions[i % 5].check(f"CA{i:02d}") for i in range(40)))
        assert sum(d.admitted for d in decisions) == 3
        assert await buses[0].redis.zcard(keys.ACTIVE_CALLS) == 3
        held = [f"CA{i:02d}" for i, d in enumerate(decisions) if not d.admitted]
        again = await asyncio.gather(*(admissions[i % 5].check(sid) for i, sid in enumerate(held)))
        assert not any(d.admitted for d in again)
        assert sorted(d.ahead for d in again) == list(range(37))  # one queue, one place each
    finally:
        for bus in buses:
            await bus.close()


# -- rate limit ----------------------------------------------------------------------------------------------


def test_gw_rate_limit_withheld_numbers_and_buckets() -> None:
    for number in ("", "anonymous", "Anonymous", "+266696687", " restricted ", "UNKNOWN"):
        assert is_withheld(number) and bucket_of(number) == "withheld"
    assert not is_withheld("+15555550123")
    assert bucket_of("+1 555 555 0123") == bucket_of("+15555550123") != bucket_of("+15555550124")
    assert "5555550123" not in bucket_of("+15555550123")  # a digest: no number in Redis keys


async def test_gw_rate_limit_per_number_slides_and_counts_each_call_once(env: Env) -> None:
    settings = load_settings({"RATE_LIMIT_CALLS": "2", "RATE_LIMIT_WINDOW_S": "60"}, env_file=None)
    limiter = RateLimiter(env.store, settings, clock=env.clock)
    number = "+15555550123"
    assert (await limiter.check(number, "CA1")).allowed
    env.clock.ms += 10_000
    assert (await limiter.check(number, "CA2")).allowed
    again = await limiter.check(number, "CA2")  # a retried webhook
    assert again.allowed and again.count == 2
    refused = await limiter.check(number, "CA3")
    assert not refused.allowed and refused.count == 2 and refused.limit == 2
    assert (await limiter.check("+15555550999", "CA4")).allowed  # another number has its own count
    env.clock.ms += 50_001  # CA1 has left the window
    assert (await limiter.check(number, "CA5")).allowed
    assert not (await limiter.check(number, "CA6")).allowed


async def test_gw_rate_limit_withheld_numbers_share_a_larger_allowance(env: Env) -> None:
    settings = load_settings({"RATE_LIMIT_CALLS": "1", "RATE_LIMIT_WITHHELD_CALLS": "3"}, env_file=None)
    limiter = RateLimiter(env.store, settings, clock=env.clock)
    results = [await limiter.check(number, f"CA{i}") for i, number in enumerate(["", "anonymous", "+266696687", ""])]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert all(r.withheld for r in results) and results[-1].limit == 3


async def test_gw_rate_limit_off(env: Env) -> None:
    limiter = RateLimiter(env.store, load_settings({"RATE_LIMIT_CALLS": "0"}, env_file=None), clock=env.clock)
    assert all([(await limiter.check("+15555550123", f"CA{i}")).allowed for i in range(20)])
    assert await env.bus.zrange_by_score(keys.rate_limit(bucket_of("+15555550123")), 0, float("inf")) == []
