"""The stack on a Redis Cluster, unchanged: three primaries started by the test, ``REDIS_URL=redis+cluster://...``,
every service process on the Cluster bus (real pocketsphinx, espeak-ng and the piper caller voice).

- Two calls at once, so the gateway, brain and tts each read the streams of two calls (two slots, possibly two
  nodes) at the same time; both callers get their answers, and every key of each call sits in one slot
  (``CLUSTER KEYSLOT``), the once-marker of ``call.started`` in the lifecycle stream's slot.
- The core failure case: SIGKILL the stt replica that owns a live call while the caller is speaking; the other
  replica takes the call over from its checkpoint and the caller still gets the answer.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from voxcart.brain.store import demo_seed_path
from voxcart.cli.calling import DEV_AUTH_TOKEN, build_items
from voxcart.cli.simulator import CallResult, SimulatorConfig, simulate_call
from voxcart.cli.stack import Stack
from voxcart.common import events as ev
from voxcart.common.bus import ClusterBus, keys
from voxcart.common.bus.cluster import once_marker
from voxcart.common.seed import load_seed

pytestmark = pytest.mark.e2e

SEED = load_seed(demo_seed_path())
ORDER = next(o for o in SEED.orders if o.number == "10023")
OWNER = next(c for c in SEED.customers if c.id == ORDER.customer)
STRANGER = "+15550001234"


@pytest.fixture(scope="module")
def cluster_stack(stack_runner: Callable[..., AbstractContextManager[Stack]]) -> Iterator[Stack]:
    started = time.monotonic()
    with stack_runner("cluster", {"stt": 2, "brain": 1, "tts": 1}, cluster=True) as running:
        print(f"cluster + stack ready in {time.monotonic() - started:.1f} s at {running.redis_url}")
        yield running


@pytest.fixture
async def bus(cluster_stack: Stack) -> AsyncIterator[ClusterBus]:
    assert cluster_stack.redis_url.startswith("redis+cluster://")
    inspector = ClusterBus(cluster_stack.redis_url)
    try:
        yield inspector
    finally:
        await inspector.close()


async def call(stack: Stack, lines: list[str], from_number: str) -> CallResult:
    items = await asyncio.to_thread(build_items, lines)
    config = SimulatorConfig(gateway_url=stack.gateway_url, auth_token=DEV_AUTH_TOKEN, from_number=from_number)
    return await simulate_call(config, items)


def agent_texts(result: CallResult) -> list[str]:
    assert result.record is not None, "the call record was not fetched"
    return [t["text"] for t in result.record["turns"] if t["speaker"] == "agent"]


async def keys_naming(bus: ClusterBus, sid: str) -> list[str]:
    """Every key on every node whose name mentions the call."""
    return sorted([k.decode() async for k in bus.cluster.scan_iter(match=f"*{sid}*", count=1000)])


async def lease_of(bus: ClusterBus, sid: str) -> str:
    """The value of the call's stt lease (``<replica>:<epoch>``), or "" when none is held."""
    value = await bus.cluster.get(keys.lease("stt", sid))
    return value.decode() if isinstance(value, bytes) else str(value or "")


async def test_two_calls_at_once_are_answered_and_each_keeps_its_keys_in_one_slot(
    cluster_stack: Stack, bus: ClusterBus
) -> None:
    owner_call = call(cluster_stack, ["where is my order", "yes", "goodbye"], OWNER.phone or "")
    stock_call = call(cluster_stack, ["is the blue hoodie in stock in medium", "goodbye"], STRANGER)
    order, stock = await asyncio.gather(owner_call, stock_call)

    answer = " ".join(agent_texts(order)[1:])
    assert "shipped" in answer and str(ORDER.carrier) in answer, agent_texts(order)
    assert any("hoodie" in t.lower() for t in agent_texts(stock)[1:]), agent_texts(stock)
    for result in (order, stock):
        assert all(t.latency_s is not None for t in result.turns), "every turn got a spoken reply"
        assert result.record is not None and result.record["status"] == "completed"

    lifecycle_slot = await bus.cluster.cluster_keyslot(keys.LIFECYCLE)
    homes = []
    for result in (order, stock):
        sid = result.call_sid
        named = await keys_naming(bus, sid)
        tagged = [k for k in named if f"{{{sid}}}" in k]
        slots = {k: await bus.cluster.cluster_keyslot(k) for k in tagged}  # asked of the server: CLUSTER KEYSLOT
        assert len(set(slots.values())) == 1, f"the call's keys span slots: {slots}"
        for kind in (keys.audio_in, keys.events, keys.tts, keys.audio_out, keys.turns, keys.meta, keys.gen):
            assert kind(sid) in tagged, f"{kind(sid)} missing from {tagged}"
        for svc in ("stt", "brain", "tts"):
            assert keys.checkpoint(svc, sid) in tagged, f"{svc} committed nothing for {sid}: {tagged}"
        marker = once_marker(keys.LIFECYCLE, keys.started(sid))
        assert marker in named and await bus.cluster.cluster_keyslot(marker) == lifecycle_slot
        untagged = [k for k in named if k not in tagged]
        assert not [k for k in untagged if k.startswith(("vc:call:", "vc:lease:", "vc:ckpt:"))], untagged
        node = bus.cluster.get_node_from_key(tagged[0])
        homes.append((sid, next(iter(slots.values())), node.name if node else "?"))
    print(f"calls' slots and nodes: {homes}; turn latencies (s): {order.latencies}, {stock.latencies}")
    events = [ev.decode(entry.data) for entry in await bus.range(keys.LIFECYCLE)]
    started = [e.call_sid for e in events if isinstance(e, ev.CallStarted)]
    assert sorted(started) == sorted([order.call_sid, stock.call_sid]), "each call.started went out once"


async def test_killed_stt_owner_is_taken_over_mid_utterance(cluster_stack: Stack, bus: ClusterBus) -> None:
    """SIGKILL the stt replica that owns a live call while the caller is speaking; the other replica takes the
    call over from its checkpoint (on the Cluster) and the caller still gets the answer."""
    task = asyncio.create_task(call(cluster_stack, ["is the blue hoodie in stock in medium", "goodbye"], STRANGER))
    try:
        owner, sid = "", ""
        async with asyncio.timeout(40):
            while not sid:  # wait for this call's caller to start speaking
                for candidate, _ in await bus.zrange_by_score(keys.ACTIVE_CALLS, float("-inf"), float("inf")):
                    entries = await bus.range(keys.events(candidate))
                    if any(isinstance(ev.decode(e.data), ev.SpeechStarted) for e in entries):
                        sid = candidate
                await asyncio.sleep(0.05)
            owner = (await lease_of(bus, sid)).split(":")[0]
            assert owner, f"nobody holds the stt lease of {sid}"
        cluster_stack.kill("stt", int(owner.split("-")[1]), signal.SIGKILL)
        killed_at = time.monotonic()
        result = await task
    finally:
        if not task.done():
            task.cancel()
    new_owner = await lease_of(bus, sid)
    cluster_stack.spawn("stt")  # restore capacity for other tests
    texts = agent_texts(result)
    assert any("hoodie" in t.lower() for t in texts[1:]), texts
    assert result.turns[1].latency_s is not None, "the interrupted utterance was still answered"
    assert new_owner == "" or not new_owner.startswith(owner + ":"), "another replica owns the call now"
    print(f"killed {owner} {time.monotonic() - killed_at:.1f} s before the call ended; reply latency "
          f"{result.turns[1].latency_s:.2f} s; stt lease now {new_owner or 'released'}")  # fmt: skip
