"""Lease renewal from a thread (real Redis): a replica whose event loop lags keeps its calls; one whose loop is
stuck loses them to a peer, as a dead one does; the synchronous renewer speaks the same script as the bus."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from voxcart.common import events as ev
from voxcart.common.bus import BusError, RedisBus, keys
from voxcart.common.bus.ownership import Ownership, OwnershipConfig
from voxcart.common.bus.renewer import SyncRedisRenewer

pytestmark = pytest.mark.redis

SID = "CArenewer0000001"


class Replica:
    def __init__(self, bus: RedisBus, config: OwnershipConfig) -> None:
        self.log: list[tuple[str, str, str]] = []
        self.own = Ownership(bus, "stt", "A", config, self._acquired, self._dropped)

    async def _acquired(self, sid: str, reason: str) -> None:
        self.log.append(("acquired", sid, reason))

    async def _dropped(self, sid: str, reason: str) -> None:
        self.log.append(("dropped", sid, reason))


async def owned_call(bus: RedisBus, config: OwnershipConfig) -> Replica:
    await bus.zadd(keys.ACTIVE_CALLS, {SID: ev.now_ms() + 60_000})  # active throughout (a beat in the future)
    replica = Replica(bus, config)
    await replica.own.start()
    assert await replica.own.try_acquire(SID, "claimed")
    return replica


def block_the_loop(seconds: float) -> None:
    """What a saturated replica's loop does: nothing else runs until this returns (time.sleep holds no GIL, as a
    busy loop of Python would not either for long: the renewal thread still gets its turn)."""
    time.sleep(seconds)


@pytest.mark.parametrize("in_thread", [True, False])
async def test_a_lagging_loop_keeps_its_leases_only_with_the_thread(redis_bus: RedisBus, in_thread: bool) -> None:
    config = OwnershipConfig(lease_ttl_ms=600, sweep_interval_ms=10_000, renew_in_thread=in_thread)
    replica = await owned_call(redis_bus, config)
    try:
        block_the_loop(1.5)  # 2.5 lease TTLs without one turn of the loop
        await asyncio.sleep(0.3)
        held = await redis_bus.redis.get(keys.lease("stt", SID))
        if in_thread:
            assert SID in replica.own.owned and held is not None, "renewed from the thread while the loop lagged"
            assert ("dropped", SID, "lost") not in replica.log
            assert replica.own.healthy
        else:
            assert SID not in replica.own.owned and ("dropped", SID, "lost") in replica.log, "the loop task was late"
    finally:
        await replica.own.stop()


async def test_a_stuck_loop_lets_its_leases_lapse(redis_bus: RedisBus) -> None:
    config = OwnershipConfig(lease_ttl_ms=600, sweep_interval_ms=10_000, loop_stall_ms=500)
    replica = await owned_call(redis_bus, config)
    try:
        block_the_loop(1.5)  # longer than loop_stall_ms: the thread stops renewing
        assert await redis_bus.redis.get(keys.lease("stt", SID)) is None, "a peer may take the call over"
        await asyncio.sleep(0.5)
        assert SID not in replica.own.owned and ("dropped", SID, "lost") in replica.log
    finally:
        await replica.own.stop()


async def test_the_sync_renewer_renews_only_what_it_holds(redis_bus: RedisBus, redis_url: str) -> None:
    await redis_bus.acquire_lease("L1:{CA1}", "me:1", 200)
    await redis_bus.acquire_lease("L2:{CA2}", "you:1", 200)
    renewer = SyncRedisRenewer(redis_url, timeout_s=1.0)
    try:
        assert renewer.renew([], 5000) == []
        assert renewer.renew([("L1:{CA1}", "me:1"), ("L2:{CA2}", "me:1"), ("L3:{CA3}", "me:1")], 5000) == [
            True,
            False,
            False,
        ]
        assert 4000 < await redis_bus.redis.pttl("L1:{CA1}") <= 5000
        assert await redis_bus.redis.pttl("L2:{CA2}") <= 200
    finally:
        renewer.close()


def test_the_sync_renewer_says_what_failed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    renewer = SyncRedisRenewer(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
    try:
        with pytest.raises(BusError, match="redis: .*"):
            renewer.renew([("L", "me:1")], 1000)
    finally:
        renewer.close()
