"""Taking a call over mid-dialog: SIGKILL the brain replica that owns a call between two caller turns; the other
replica takes the call over and answers the caller's next line from the same place in the dialog.

The stack is real (one process per replica, two brain replicas, its own redis-server). Two drivers:
- by text over the bus, as ``voxcart chat`` does (:class:`voxcart.cli.chat.ChatSession`): deterministic, so the
  takeover time is measured against the lease TTL;
- by voice through the real Twilio protocol (signed webhook, media websocket, synthesized caller audio).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from voxcart.brain.store import demo_seed_path
from voxcart.cli.calling import DEV_AUTH_TOKEN, build_items
from voxcart.cli.chat import CallerLine, ChatSession
from voxcart.cli.simulator import SimulatorConfig, simulate_call
from voxcart.cli.stack import Stack
from voxcart.common import events as ev
from voxcart.common.bus import RedisBus, keys
from voxcart.common.seed import load_seed
from voxcart.common.settings import Settings

pytestmark = pytest.mark.e2e

SEED = load_seed(demo_seed_path())
ORDER = next(o for o in SEED.orders if o.number == "10023")
OWNER = next(c for c in SEED.customers if c.id == ORDER.customer)
SPOKEN_ORDER = " ".join(ORDER.number)
LEASE_TTL_S = Settings().lease_ttl_ms / 1000
SWEEP_S = Settings().sweep_interval_ms / 1000


@pytest.fixture(scope="module")
def two_brains(stack_runner: Callable[..., AbstractContextManager[Stack]]) -> Iterator[Stack]:
    with stack_runner("takeover", {"stt": 1, "brain": 2, "tts": 1}) as running:
        yield running


async def brain_owner(bus: RedisBus, sid: str) -> str:
    """The replica holding the call's brain lease (``brain-<index>-<pid>``), or "" when none does."""
    lease = await bus.redis.get(keys.lease("brain", sid))
    value = lease.decode() if isinstance(lease, bytes) else str(lease or "")
    return value.split(":", 1)[0]


def kill_owner(stack: Stack, owner: str) -> int:
    """SIGKILL the brain replica named ``owner``; returns its index (the stack names replicas ``brain-<i>-...``)."""
    index = int(owner.split("-")[1])
    stack.kill("brain", index, signal.SIGKILL)
    return index


async def agent_records(bus: RedisBus, sid: str) -> list[ev.TurnRecord]:
    records = [ev.decode(entry.data) for entry in await bus.range(keys.turns(sid))]
    return [t for t in records if isinstance(t, ev.TurnRecord) and t.speaker == "agent"]


async def test_killed_brain_owner_is_taken_over_mid_dialog_by_text(two_brains: Stack) -> None:
    """Driven by text over the bus: after "where is my order" the agent asks to confirm the order; its owner is
    killed; the caller's "yes" is answered by the other replica with that order's status (not a new greeting),
    within the lease TTL plus a sweep (and slack for a loaded machine)."""
    assert OWNER.phone and ORDER.carrier
    bus = RedisBus(two_brains.redis_url)
    session = ChatSession(bus, OWNER.phone, reply_timeout=20.0)
    try:
        greeting = await session.open()
        asked = await session.send(CallerLine(raw="where is my order", text="where is my order"))
        assert asked.intent == "order_status" and asked.agent[0].startswith(f"Is this about order {SPOKEN_ORDER}")
        owner = await brain_owner(bus, session.sid)
        assert owner.startswith("brain-"), owner

        killed = kill_owner(two_brains, owner)
        started = time.monotonic()
        answer = await session.send(CallerLine(raw="yes", text="yes"))
        took = time.monotonic() - started
        new_owner = await brain_owner(bus, session.sid)
        goodbye = await session.send(CallerLine(raw="goodbye", text="goodbye"))
        records = await agent_records(bus, session.sid)
    finally:
        await session.close()
        await bus.close()
        two_brains.spawn("brain")  # back to two replicas for the next test
    print(f"brain takeover: the answer came {took:.2f} s after the SIGKILL (lease TTL {LEASE_TTL_S:g} s)")

    assert greeting.turn == 1 and greeting.intent == "greeting"
    assert answer.turn == asked.turn + 1, "the dialog went on from its place"
    assert answer.agent[0] == f"Order {SPOKEN_ORDER} has shipped with {ORDER.carrier}.", answer.agent
    assert not any("thanks for calling" in s.lower() for s in answer.agent), "no fresh greeting"
    assert new_owner and not new_owner.startswith(f"brain-{killed}-"), f"{owner} -> {new_owner}"
    assert took < LEASE_TTL_S + SWEEP_S + 2.5, f"took {took:.2f} s"
    assert goodbye.end_call and goodbye.intent == "goodbye"
    assert [(t.turn_no, t.intent) for t in records] == [
        (1, "greeting"),
        (2, "order_status"),
        (3, "order_status"),
        (4, "goodbye"),
    ], "every turn said once: none lost, none repeated by the replica that took over"


async def test_killed_brain_owner_is_taken_over_mid_dialog_by_voice(two_brains: Stack) -> None:
    """Driven by voice through the Twilio protocol: the owner is killed as soon as the agent has asked to confirm
    the order (while that question plays and the caller answers); the caller's spoken "yes" is answered with the
    order's status by the other replica. (What the caller says after that is left to the recognizer: a closing
    line said after a yes/no question is sometimes heard as something else, which is not what this test is about.)"""
    assert OWNER.phone and ORDER.carrier
    bus = RedisBus(two_brains.redis_url)
    items = await asyncio.to_thread(build_items, ["where is my order", "yes", "thank you goodbye"])
    config = SimulatorConfig(gateway_url=two_brains.gateway_url, auth_token=DEV_AUTH_TOKEN, from_number=OWNER.phone)
    task = asyncio.create_task(simulate_call(config, items))
    try:
        sid, owner = "", ""
        async with asyncio.timeout(60):
            while not owner:  # wait for the agent's question about the order
                for member, _ in await bus.zrange_by_score(keys.ACTIVE_CALLS, float("-inf"), float("inf")):
                    if any(t.turn_no == 2 for t in await agent_records(bus, member)):
                        sid = member
                        owner = await brain_owner(bus, sid)
                await asyncio.sleep(0.02)
        killed = kill_owner(two_brains, owner)
        new_owner = ""
        async with asyncio.timeout(30):
            while not new_owner or new_owner == owner:  # the other replica takes the call over
                new_owner = await brain_owner(bus, sid)
                await asyncio.sleep(0.05)
        result = await task
        records = await agent_records(bus, sid)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await bus.close()
        two_brains.spawn("brain")

    said = [(t.turn_no, t.intent, t.text) for t in records]
    assert [t.intent for t in records[:3]] == ["greeting", "order_status", "order_status"], said
    assert records[2].text.startswith(f"Order {SPOKEN_ORDER} has shipped with {ORDER.carrier}."), said
    assert [t.turn_no for t in records] == list(range(1, len(records) + 1)), f"a turn said twice: {said}"
    assert all(t.latency_s is not None for t in result.turns[:3]), "the greeting and both answers were heard"
    assert not new_owner.startswith(f"brain-{killed}-"), f"{owner} -> {new_owner}"


async def test_identity_is_rechecked_by_the_replica_that_took_over(two_brains: Stack) -> None:
    """A caller from an unknown number asks for an order: the agent wants the ZIP code, and its owner is killed.
    The replica that takes over does not treat the caller as verified: a wrong ZIP gets nothing of the order; only
    the right ZIP gets its status."""
    customer = next(c for c in SEED.customers if c.id == ORDER.customer)
    assert customer.zip and ORDER.carrier and ORDER.tracking
    stranger = "+15550007777"
    assert stranger not in {c.phone for c in SEED.customers}
    wrong_zip = str((int(customer.zip) + 1) % 100000).zfill(len(customer.zip))
    bus = RedisBus(two_brains.redis_url)
    session = ChatSession(bus, stranger, reply_timeout=20.0)
    try:
        await session.open()
        asked = await session.send(CallerLine(raw="order", text=f"where is my order {spell(ORDER.number)}"))
        owner = await brain_owner(bus, session.sid)
        assert owner.startswith("brain-"), owner
        kill_owner(two_brains, owner)
        wrong = await session.send(CallerLine(raw="wrong zip", text=spell(wrong_zip)))
        new_owner = await brain_owner(bus, session.sid)
        right = await session.send(CallerLine(raw="right zip", text=spell(customer.zip)))
    finally:
        await session.close()
        await bus.close()
        two_brains.spawn("brain")
    assert "zip code" in " ".join(asked.agent).lower(), asked.agent
    assert new_owner and new_owner != owner, f"{owner} -> {new_owner}"
    told = " ".join(asked.agent + wrong.agent).lower()
    for secret in (
        "shipped",
        ORDER.carrier.lower(),
        ORDER.tracking.lower()[:6],
    ):
        assert secret not in told, f"{secret!r} told to an unverified caller after the takeover: {told}"
    assert "match" in " ".join(wrong.agent).lower(), wrong.agent
    assert f"Order {SPOKEN_ORDER} has shipped with {ORDER.carrier}." in right.agent, right.agent


def spell(digits: str) -> str:
    names = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    return " ".join(names[int(d)] for d in digits)
