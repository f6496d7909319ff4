"""The test-only guard switches (``VOXCART_UNSAFE_DISABLE``): refused where they must be, and each removes exactly
its guard on a real Redis (the failure suite relies on them to prove that its audit notices)."""

from __future__ import annotations

import pytest

from voxcart.common.bus import MemoryBus, Output, RedisBus
from voxcart.common.bus.unsafe import UnsafeBus, without_guards
from voxcart.common.settings import SettingsError, load_settings

pytestmark = pytest.mark.redis


def test_the_setting_names_its_guards_and_is_refused_in_production() -> None:
    assert load_settings({"VOXCART_UNSAFE_DISABLE": " lease,dedupe "}, None).unsafe_disabled == {"lease", "dedupe"}
    assert load_settings({}, None).unsafe_disabled == frozenset()
    with pytest.raises(SettingsError, match=r"VOXCART_UNSAFE_DISABLE='lease,fencing': unknown guard fencing"):
        load_settings({"VOXCART_UNSAFE_DISABLE": "lease,fencing"}, None)
    production = {"ENV": "production", "TWILIO_AUTH_TOKEN": "t", "VOXCART_UNSAFE_DISABLE": "fence"}
    with pytest.raises(SettingsError, match="refused when ENV=production"):
        load_settings(production, None)


def test_nothing_is_wrapped_unless_asked_and_only_a_single_redis_is() -> None:
    memory = MemoryBus()
    assert without_guards(memory, frozenset()) is memory
    with pytest.raises(ValueError, match="single Redis"):
        without_guards(memory, frozenset({"fence"}))


async def test_lease_off_lets_a_second_replica_join_a_held_lease(redis_bus: RedisBus) -> None:
    assert await redis_bus.acquire_lease("L", "A:1", 5000)
    assert not await redis_bus.acquire_lease("L", "B:1", 5000), "guarded: the lease excludes"
    joined = UnsafeBus(redis_bus, frozenset({"lease"}))
    assert await joined.acquire_lease("L", "B:1", 5000), "unguarded: B owns the call too"
    assert await joined.leases_exist(["L"]) == [False], "the sweep sees every lease as free"
    assert await joined.renew_lease("L", "B:1", 5000)
    assert await joined.commit("L", "B:1", [Output("out", b"b")], "ck", {"out": "1-0"}), "B passes the fence"
    assert await redis_bus.commit("L", "A:1", [Output("out", b"a")], "ck", {"out": "2-0"}), "and so does A"
    assert await redis_bus.redis.xlen("out") == 2


async def test_fence_off_commits_for_a_replica_that_no_longer_holds_the_lease(redis_bus: RedisBus) -> None:
    assert await redis_bus.acquire_lease("L", "B:1", 5000)
    assert not await redis_bus.commit("L", "A:1", [Output("out", b"late")], "ck", {"out": "1-0"}), "guarded: fenced"
    zombie = UnsafeBus(redis_bus, frozenset({"fence"}))
    assert await zombie.commit("L", "A:1", [Output("out", b"late")], "ck", {"out": "1-0"}), "unguarded: it lands"
    assert await redis_bus.redis.xlen("out") == 1
    assert await redis_bus.hgetall("ck") == {"out": b"1-0"}
    assert not await zombie.renew_lease("L", "A:1", 5000), "only the commit's check is off"


async def test_dedupe_off_appends_replayed_ids_and_repeats_dedupe_keys(redis_bus: RedisBus) -> None:
    chunk = Output("audio", b"x", id="2-0")
    assert await redis_bus.publish([chunk]) == ["2-0"]
    assert await redis_bus.publish([chunk]) == [None], "guarded: a replayed id is refused"
    replay = UnsafeBus(redis_bus, frozenset({"dedupe"}))
    assert (await replay.publish([chunk]))[0] not in (None, "2-0"), "unguarded: appended again under a new id"
    assert await redis_bus.acquire_lease("L", "A:1", 5000)
    assert await replay.commit("L", "A:1", [chunk], "ck", {})
    assert await redis_bus.redis.xlen("audio") == 3
    assert await replay.set_nx("k", "1", 5000) and await replay.set_nx("k", "1", 5000)
    assert not await redis_bus.set_nx("k", "1", 5000)
