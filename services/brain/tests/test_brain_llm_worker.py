"""BrainHandler in LLM mode on a MemoryBus with real leases, against a real local server streaming SSE.

Proven here: the first sentence is committed (without the checkpoint) while the model is still streaming, the
rest follow with ``last`` on the final one and the checkpoint in the last commit; a failing model gets the rules
reply in the same turn; a replica taking over mid-reply does not say a committed sentence twice; a newer final
stops a reply that is still streaming and the barge-in path cancels it; ``end_call`` hangs up; the settings
are checked at start; state saved before LLM mode still loads.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
import pytest

from voxcart.brain.app import build_agent
from voxcart.brain.dialog import Dialog, DialogState
from voxcart.brain.llm import LlmAgent, LlmClient, LlmConfig
from voxcart.brain.llm.testing import Gate, Reply, ScriptedLlmServer, text_reply, tool_reply
from voxcart.brain.store import FixedClock, SqliteStore, demo_seed_path
from voxcart.brain.worker import BrainHandler, BrainState
from voxcart.common import events as ev
from voxcart.common.bus import Entry, MemoryBus, Output, keys
from voxcart.common.bus.ownership import Ownership, OwnershipConfig
from voxcart.common.seed import Seed, load_seed
from voxcart.common.settings import load_settings
from voxcart.common.worker import CallContext

SID = "CAbrainllmworker01"


@pytest.fixture(scope="module")
def seed() -> Seed:
    return load_seed(demo_seed_path())


@pytest.fixture
def dialog(seed: Seed) -> Dialog:
    today = max(o.placed for o in seed.orders) + dt.timedelta(days=2)
    clock = FixedClock.on(today, seed.store.timezone, hour=11)
    return Dialog(SqliteStore.from_file(demo_seed_path(), clock=clock))


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLlmServer]:
    async with ScriptedLlmServer() as srv:
        yield srv


@pytest.fixture
async def agent(server: ScriptedLlmServer, dialog: Dialog) -> AsyncIterator[LlmAgent]:
    config = LlmConfig(base_url=server.base_url, model="scripted", first_token_s=0.5, idle_s=0.5)
    made = LlmAgent(LlmClient(config), dialog, turn_s=5.0)
    yield made
    await made.aclose()


@dataclass
class Replica:
    bus: MemoryBus
    ownership: Ownership

    async def context(self, reason: str) -> CallContext:
        assert await self.ownership.try_acquire(SID, reason)
        raw = await self.bus.hgetall(keys.checkpoint("brain", SID))
        return CallContext(SID, "brain", self.bus, self.ownership, reason, {k: v.decode() for k, v in raw.items()})


def make_replica(bus: MemoryBus, name: str) -> Replica:
    async def noop(sid: str, reason: str) -> None:
        pass

    return Replica(bus, Ownership(bus, "brain", name, OwnershipConfig(lease_ttl_ms=60_000), noop, noop))


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus()


@pytest.fixture
async def handlers() -> AsyncIterator[list[BrainHandler]]:
    made: list[BrainHandler] = []
    yield made
    for handler in made:
        await handler.close("ended")


async def new_handler(
    replica: Replica, dialog: Dialog, agent: LlmAgent, made: list[BrainHandler], reason: str = "claimed"
) -> BrainHandler:
    handler = await BrainHandler.create(await replica.context(reason), dialog, agent)
    made.append(handler)
    return handler


async def read(bus: MemoryBus, stream: str) -> list[ev.Event]:
    return [ev.decode(e.data) for e in await bus.range(stream)]


async def says(bus: MemoryBus, turn: int) -> list[tuple[int, str, bool]]:
    return [
        (e.seq, e.text, e.last) for e in await read(bus, keys.tts(SID)) if isinstance(e, ev.Say) and e.turn_no == turn
    ]


async def records(bus: MemoryBus, turn: int) -> list[tuple[str, str]]:
    return [
        (t.speaker, t.text)
        for t in await read(bus, keys.turns(SID))
        if isinstance(t, ev.TurnRecord) and t.turn_no == turn
    ]


async def checkpoint(bus: MemoryBus) -> str | None:
    raw = await bus.hgetall(keys.checkpoint("brain", SID))
    value = raw.get(keys.events(SID))
    return value.decode() if value is not None else None


async def final(bus: MemoryBus, text: str, utterance: str) -> tuple[Entry, ev.TranscriptFinal]:
    event = ev.TranscriptFinal(
        call_sid=SID,
        utterance_id=utterance,
        text=text,
        confidence=0.9,
        first_voiced_arrived=1000.0,
        last_voiced_arrived=1800.0,
        endpointed_at=2400.0,
        recognized_at=2450.0,
    )
    data = ev.encode(event)
    [entry_id] = await bus.publish([Output(keys.events(SID), data)])
    assert entry_id is not None
    return Entry(keys.events(SID), entry_id, data), event


async def until(bus: MemoryBus, turn: int, count: int) -> None:
    """Wait until ``count`` sentences of ``turn`` are on the tts stream."""
    async with asyncio.timeout(5):
        while len(await says(bus, turn)) < count:
            await asyncio.sleep(0.005)


async def test_llm_worker_commits_the_first_sentence_while_the_model_streams(
    bus: MemoryBus, dialog: Dialog, agent: LlmAgent, server: ScriptedLlmServer, handlers: list[BrainHandler]
) -> None:
    handler = await new_handler(make_replica(bus, "r1"), dialog, agent, handlers)
    greeting = " ".join(text for _, text, _ in await says(bus, 1))
    gate = Gate()
    server.script(text_reply("Sure, one moment. ", gate, "We ship in three days. ", "Anything else?"))
    entry, event = await final(bus, "how long does shipping take", "u1")
    task = asyncio.create_task(handler.handle(entry, event))

    await until(bus, 2, 1)
    assert await says(bus, 2) == [(0, "Sure, one moment.", False)]
    assert await checkpoint(bus) != entry.id  # committed without the checkpoint: the stream is still open
    assert not task.done()
    gate.open()
    await task

    assert await says(bus, 2) == [
        (0, "Sure, one moment.", False),
        (1, "We ship in three days.", False),
        (2, "Anything else?", True),
    ]
    assert await records(bus, 2) == [
        ("caller", "how long does shipping take"),
        ("agent", "Sure, one moment. We ship in three days. Anything else?"),
    ]
    assert await checkpoint(bus) == entry.id
    saved = msgspec.msgpack.decode((await bus.hgetall(keys.state(SID)))["brain"], type=BrainState)
    assert saved.speaking is None and saved.answered == ["u1"] and saved.turn_no == 2 and saved.last_seq == 2
    # the model was told what the rules greeting said, and remembers this turn
    assert server.requests[0]["messages"][1] == {"role": "assistant", "content": greeting}
    assert [m.role for m in saved.llm.turns[-1]] == ["user", "assistant"]


async def test_llm_worker_one_sentence_reply_ends_with_an_empty_last(
    bus: MemoryBus, dialog: Dialog, agent: LlmAgent, server: ScriptedLlmServer, handlers: list[BrainHandler]
) -> None:
    handler = await new_handler(make_replica(bus, "r1"), dialog, agent, handlers)
    server.script(text_reply("We're open every day."))
    await handler.handle(*await final(bus, "are you open today", "u1"))
    assert await says(bus, 2) == [(0, "We're open every day.", False), (1, "", True)]
    assert handler.state.last_seq == 1


async def test_llm_worker_falls_back_to_the_rules_reply_in_the_same_turn(
    bus: MemoryBus, dialog: Dialog, agent: LlmAgent, server: ScriptedLlmServer, handlers: list[BrainHandler]
) -> None:
    handler = await new_handler(make_replica(bus, "r1"), dialog, agent, handlers)
    expected = dialog.on_text(copy.deepcopy(handler.state.dialog), "what is your return policy").sentences
    server.script(Reply(status=500, body="internal error"))
    entry, event = await final(bus, "what is your return policy", "u1")
    await handler.handle(entry, event)
    said = await says(bus, 2)
    assert [text for _, text, _ in said] == expected
    assert [last for _, _, last in said] == [False] * (len(expected) - 1) + [True]
    assert await checkpoint(bus) == entry.id


async def test_llm_worker_takeover_mid_reply_does_not_repeat_a_committed_sentence(
    bus: MemoryBus, dialog: Dialog, agent: LlmAgent, server: ScriptedLlmServer, handlers: list[BrainHandler]
) -> None:
    first = make_replica(bus, "r1")
    old = await new_handler(first, dialog, agent, handlers)
    server.script(text_reply("Let me look that up. ", Gate(), "Never said."))  # the gate never opens
    entry, event = await final(bus, "what is your return policy", "u1")
    dying = asyncio.create_task(old.handle(entry, event))
    await until(bus, 2, 1)
    dying.cancel()  # the replica dies mid-reply
    with pytest.raises(asyncio.CancelledError):
        await dying
    lease = first.ownership.owned[SID]
    assert await bus.release_lease(lease.key, lease.value)

    new = await new_handler(make_replica(bus, "r2"), dialog, agent, handlers, reason="takeover")
    assert new.state.speaking is not None and new.state.speaking.said == ["Let me look that up."]
    assert new.ctx.checkpoint.get(keys.events(SID)) != entry.id  # so the final is read again
    server.script(text_reply("Let me look that up. ", "You have thirty days. ", "Anything else?"))
    await new.handle(entry, event)

    assert await says(bus, 2) == [
        (0, "Let me look that up.", False),
        (1, "You have thirty days.", False),
        (2, "Anything else?", True),
    ]
    assert await records(bus, 2) == [
        ("caller", "what is your return policy"),  # once, although the final was handled twice
        ("agent", "Let me look that up. You have thirty days. Anything else?"),
    ]
    assert await checkpoint(bus) == entry.id


async def test_llm_worker_newer_final_stops_the_streaming_reply_and_barges_in(
    bus: MemoryBus, dialog: Dialog, agent: LlmAgent, server: ScriptedLlmServer, handlers: list[BrainHandler]
) -> None:
    handler = await new_handler(make_replica(bus, "r1"), dialog, agent, handlers)
    gate = Gate()
    server.script(text_reply("One thing first. ", gate, "Second thing. ", "Third thing. ", "Fourth thing."))
    entry, event = await final(bus, "tell me everything", "u1")
    task = asyncio.create_task(handler.handle(entry, event))
    await until(bus, 2, 1)
    entry2, event2 = await final(bus, "stop, where is my order", "u2")
    handler.peek(event2)  # the reader saw the newer final
    gate.open()
    await task
    # stopped at the next delta: nothing more is said, the turn just ends
    assert await says(bus, 2) == [(0, "One thing first.", False), (1, "", True)]

    server.script(text_reply("Sure, what's the order number?"))
    await handler.handle(entry2, event2)
    cancels = [e.turn_no for e in await read(bus, keys.tts(SID)) if isinstance(e, ev.Cancel)]
    clears = [e.turn_no for e in await read(bus, keys.control(SID)) if isinstance(e, ev.Clear)]
    assert 2 in cancels and 2 in clears
    assert (await says(bus, 3))[0] == (0, "Sure, what's the order number?", False)


async def test_llm_worker_guardrail_and_end_call(
    bus: MemoryBus,
    dialog: Dialog,
    agent: LlmAgent,
    server: ScriptedLlmServer,
    seed: Seed,
    handlers: list[BrainHandler],
) -> None:
    handler = await new_handler(make_replica(bus, "r1"), dialog, agent, handlers)  # a withheld number
    order = next(o for o in seed.orders if o.status == "shipped" and o.tracking)
    assert order.tracking is not None
    server.script(
        tool_reply(("t1", "order_status", {"order_number": order.number})),
        text_reply("I need to verify you first. What's the ZIP code?"),
        tool_reply(("t2", "end_call", {})),
        text_reply("Thanks for calling. Goodbye!"),
    )
    await handler.handle(*await final(bus, f"where is order {order.number}", "u1"))
    assert order.tracking not in str(server.requests[1]["messages"])
    assert [t for _, t, _ in await says(bus, 2)] == ["I need to verify you first.", "What's the ZIP code?"]
    await handler.handle(*await final(bus, "never mind, bye", "u2"))
    hangups = [e for e in await read(bus, keys.control(SID)) if isinstance(e, ev.Hangup)]
    assert [h.after_turn for h in hangups] == [3] and handler.state.finished


def test_llm_settings_are_checked_at_start(dialog: Dialog) -> None:
    assert build_agent(load_settings({}, env_file=None), dialog) is None
    with pytest.raises(SystemExit, match="LLM_BASE_URL and LLM_MODEL"):
        build_agent(load_settings({"BRAIN_MODE": "llm"}, env_file=None), dialog)
    with pytest.raises(SystemExit, match="LLM_MODEL"):
        build_agent(load_settings({"BRAIN_MODE": "llm", "LLM_BASE_URL": "http://x"}, env_file=None), dialog)
    with pytest.raises(SystemExit, match="LLM_BASE_URL='localhost:8000'"):
        build_agent(
            load_settings({"BRAIN_MODE": "llm", "LLM_BASE_URL": "localhost:8000", "LLM_MODEL": "m"}, env_file=None),
            dialog,
        )
    env = {"BRAIN_MODE": "llm", "LLM_BASE_URL": "http://127.0.0.1:8000", "LLM_MODEL": "m", "PROVIDER_TIMEOUT_MS": "900"}
    agent = build_agent(load_settings(env, env_file=None), dialog)
    assert agent is not None
    assert agent.client.config.url == "http://127.0.0.1:8000/v1/chat/completions"
    assert agent.client.config.first_token_s == 0.9
    assert LlmConfig(base_url="http://h/v1/", model="m").url == "http://h/v1/chat/completions"


def test_llm_state_saved_before_llm_mode_still_loads() -> None:
    class OldState(msgspec.Struct, kw_only=True):
        dialog: DialogState
        turn_no: int = 0
        answered: list[str] = msgspec.field(default_factory=list)

    blob = msgspec.msgpack.encode(OldState(dialog=DialogState(call_id="CAold"), turn_no=4, answered=["u9"]))
    state = msgspec.msgpack.decode(blob, type=BrainState)
    assert state.turn_no == 4 and state.speaking is None and state.llm.turns == []
