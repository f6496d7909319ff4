"""Call ownership against both buses: claim, capacity, takeover after a crash, fencing, drain, call end."""

from __future__ import annotations

import asyncio

from voxcart.common import events as ev
from voxcart.common.bus import Bus, Output, keys
from voxcart.common.bus.ownership import Ownership, OwnershipConfig

FAST = OwnershipConfig(max_calls=10, lease_ttl_ms=600, sweep_interval_ms=100, autoclaim_idle_ms=300)


class Replica:
    def __init__(self, bus: Bus, name: str, config: OwnershipConfig = FAST) -> None:
        self.log: list[tuple[str, str, str]] = []
        self.own = Ownership(bus, "stt", name, config, self._acquired, self._dropped)

    async def _acquired(self, sid: str, reason: str) -> None:
        self.log.append(("acquired", sid, reason))

    async def _dropped(self, sid: str, reason: str) -> None:
        self.log.append(("dropped", sid, reason))


async def start_call(bus: Bus, sid: str) -> None:
    data = ev.encode(ev.CallStarted(call_sid=sid, from_number="+15555550123"))
    assert await bus.start_call_once(keys.started(sid), keys.LIFECYCLE, data, 60_000)
    await bus.zadd(keys.ACTIVE_CALLS, {sid: ev.now_ms()})


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def heartbeat(bus: Bus, sids: list[str], stop: asyncio.Event) -> None:
    while not stop.is_set():
        await bus.zadd(keys.ACTIVE_CALLS, {sid: ev.now_ms() for sid in sids})
        await asyncio.sleep(0.1)


async def test_each_call_is_owned_once_and_capacity_is_respected(bus: Bus) -> None:
    a = Replica(bus, "A", OwnershipConfig(max_calls=1, lease_ttl_ms=600, sweep_interval_ms=100))
    b = Replica(bus, "B", OwnershipConfig(max_calls=5, lease_ttl_ms=600, sweep_interval_ms=100))
    await a.own.start()
    await b.own.start()
    try:
        for sid in ("CA1", "CA2", "CA3"):
            await start_call(bus, sid)
        await wait_for(lambda: len(a.own.owned) + len(b.own.owned) == 3)
        assert len(a.own.owned) == 1
        assert not set(a.own.owned) & set(b.own.owned)
    finally:
        await a.own.stop()
        await b.own.stop()


async def test_takeover_after_a_crash_fences_the_zombie(bus: Bus) -> None:
    a = Replica(bus, "A")
    await a.own.start()
    stop = asyncio.Event()
    beat = asyncio.create_task(heartbeat(bus, ["CA9"], stop))
    b = Replica(bus, "B")
    try:
        await start_call(bus, "CA9")
        await wait_for(lambda: "CA9" in a.own.owned)
        assert await a.own.commit("CA9", [Output(keys.events("CA9"), b"one", id="1-0")], {"in": "1-0"})
        # A "crashes": its loops stop, nothing is released, its lease runs out.
        await a.own.stop()
        await b.own.start()
        await wait_for(lambda: "CA9" in b.own.owned)
        assert ("acquired", "CA9", "takeover") in b.log
        # the zombie's late commit is refused and it notices it lost the call
        assert not await a.own.commit("CA9", [Output(keys.events("CA9"), b"zombie", id="2-0")], {"in": "2-0"})
        assert ("dropped", "CA9", "lost") in a.log
        assert await b.own.commit("CA9", [Output(keys.events("CA9"), b"two", id="2-1")], {"in": "2-1"})
        assert [e.data for e in await bus.range(keys.events("CA9"))] == [b"one", b"two"]
    finally:
        stop.set()
        await beat
        await b.own.stop()


async def test_drain_hands_calls_over_quickly(bus: Bus) -> None:
    a = Replica(bus, "A")
    await a.own.start()
    stop = asyncio.Event()
    beat = asyncio.create_task(heartbeat(bus, ["CA5"], stop))
    b = Replica(bus, "B")
    try:
        await start_call(bus, "CA5")
        await wait_for(lambda: "CA5" in a.own.owned)
        await b.own.start()
        await a.own.drain()
        assert ("dropped", "CA5", "drain") in a.log
        loop = asyncio.get_running_loop()
        released = loop.time()
        await wait_for(lambda: "CA5" in b.own.owned)
        assert loop.time() - released < 0.5  # one sweep, not a lease TTL
    finally:
        stop.set()
        await beat
        await a.own.stop()
        await b.own.stop()


async def test_ended_calls_are_released(bus: Bus) -> None:
    a = Replica(bus, "A")
    await a.own.start()
    try:
        await start_call(bus, "CA7")
        await wait_for(lambda: "CA7" in a.own.owned)
        await bus.zrem(keys.ACTIVE_CALLS, ["CA7"])
        await wait_for(lambda: "CA7" not in a.own.owned)
        assert ("dropped", "CA7", "ended") in a.log
        assert await bus.leases_exist([keys.lease("stt", "CA7")]) == [False]
    finally:
        await a.own.stop()


async def test_poison_lifecycle_entry_goes_to_the_dead_letter_stream(bus: Bus) -> None:
    a = Replica(bus, "A")
    await bus.publish([Output(keys.LIFECYCLE, b"\xc1 not msgpack")])
    await a.own.start()
    try:
        await asyncio.sleep(0.3)
        dead = await bus.range(keys.dlq("stt"))
        assert len(dead) == 1 and b"undecodable" in dead[0].data
    finally:
        await a.own.stop()


async def test_a_late_start_of_a_call_that_is_over_is_not_claimed(bus: Bus) -> None:
    """A backlog read after the call ended and its keys expired: claiming it would only re-create its keys."""
    data = ev.encode(ev.CallStarted(call_sid="CA40"))
    assert await bus.start_call_once(keys.started("CA40"), keys.LIFECYCLE, data, 60_000)
    await bus.expire([keys.started("CA40")], 1)  # ended and expired before any replica read its start
    await asyncio.sleep(0.05)
    # a call just started and not yet marked active (the gateway adds it a moment later) is claimed
    await bus.start_call_once(keys.started("CA41"), keys.LIFECYCLE, ev.encode(ev.CallStarted(call_sid="CA41")), 60_000)
    a = Replica(bus, "A")
    await a.own.start()
    stop = asyncio.Event()
    beat = asyncio.create_task(heartbeat(bus, ["CA41"], stop))
    try:
        await wait_for(lambda: "CA41" in a.own.owned)
        await asyncio.sleep(0.3)
        assert "CA40" not in a.own.owned and not any(sid == "CA40" for _, sid, _ in a.log)
        assert await bus.group_lag(keys.LIFECYCLE, "stt") == 0, "the stale start was acknowledged, not left pending"
    finally:
        stop.set()
        await beat
        await a.own.stop()
