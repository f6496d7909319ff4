"""A store that fails mid-call never loses the call, in the rules dialog, LLM mode and the worker, with a fake
failing store and with a real PostgreSQL server that goes away and comes back.

Proven here: a turn whose store call raises gets a short apology and the offer of a person (a transfer inside
opening hours, else a message), logged with the call sid; the state is as before the turn, so the next turn asks
the store again and works once it is back; a yes to the offer, or a request for a person, is served without the
store; a message that cannot be saved is handed to the handoff number, or the call ends politely without one; the
greeting and the recognizer's keyterms survive a store that is down; the worker commits the apology with the
entry's checkpoint (no re-reading the same entry forever) in rules and LLM mode.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn

import msgspec
import pytest

from voxcart.brain.dialog import Conversation, Dialog, DialogState
from voxcart.brain.hours import parse_hours
from voxcart.brain.llm import Done, LlmAgent, LlmClient, LlmConfig, LlmMemory, Sentence
from voxcart.brain.llm.testing import ScriptedLlmServer, text_reply, tool_reply
from voxcart.brain.localpostgres import LocalPostgres, PostgresNotFound, postgres_answers, start_postgres
from voxcart.brain.store import FixedClock, PostgresStore, SqliteStore, Store, StoreUnavailable, demo_seed_path
from voxcart.brain.worker import BrainHandler, BrainState
from voxcart.common import events as ev
from voxcart.common.bus import Entry, MemoryBus, Output, keys
from voxcart.common.bus.ownership import Ownership, OwnershipConfig
from voxcart.common.seed import Order, Seed, load_seed
from voxcart.common.worker import CallContext

SID = "CAstoredown0001"
STRANGER = "+15555550177"
SORRY = "I'm sorry, I'm having trouble with our system right now."
OFFER_TRANSFER = "Would you like me to transfer you to someone on our team?"
OFFER_MESSAGE = "Would you like to leave a message so someone can call you back?"
DATA_METHODS = frozenset(
    name for name in dir(Store) if not name.startswith("_") and name not in ("info", "policies", "clock", "today")
)
"""The store calls that reach the database (info, policies and the clock are read once at start by both stores)."""


class FlakyStore(SqliteStore):
    """A SQLite store whose database can "go down": the methods named in ``failing`` raise StoreUnavailable."""

    failing: frozenset[str] = frozenset()
    failures = 0

    def fail(self, *names: str) -> None:
        """From now on, these data methods (all of them by default) raise."""
        self.failing = frozenset(names) or DATA_METHODS

    def recover(self) -> None:
        self.failing = frozenset()

    def __getattribute__(self, name: str) -> Any:
        if name in DATA_METHODS and name in object.__getattribute__(self, "failing"):

            def down(*args: Any, **kwargs: Any) -> NoReturn:
                self.failures += 1
                raise StoreUnavailable(f"cannot connect to PostgreSQL at db.internal:5432 (database 'shop'): {name}")

            return down
        return super().__getattribute__(name)


@pytest.fixture
def flaky(seed: Seed, clock: FixedClock) -> FlakyStore:
    return FlakyStore(seed, clock=clock)


@pytest.fixture
def convo(flaky: FlakyStore) -> Conversation:
    return Conversation(Dialog(flaky), call_id=SID)


def without_handoff(seed: Seed) -> Seed:
    return msgspec.structs.replace(seed, store=msgspec.structs.replace(seed.store, handoff_number=None))


def night(clock: FixedClock, seed: Seed) -> None:
    """23:00 on the same day: outside both stores' hours."""
    clock.now = FixedClock.on(clock.now.date(), seed.store.timezone, hour=23).now
    hours = parse_hours(seed.store.hours)
    assert hours is not None and not hours.is_open(clock.now)


def order_with(seed: Seed, status: str) -> Order:
    return next(o for o in seed.orders if o.status == status)


def logged_for_call(caplog: pytest.LogCaptureFixture, sid: str = SID) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "call_sid", None) == sid and "store failed" in r.getMessage()]


# -- the rules dialog --------------------------------------------------------------------------------------------


def test_store_down_mid_call_apologises_offers_a_person_and_recovers(
    seed: Seed, flaky: FlakyStore, convo: Conversation, caplog: pytest.LogCaptureFixture
) -> None:
    order = order_with(seed, "shipped")
    convo.start(STRANGER)
    expected = Conversation(Dialog(SqliteStore(seed, clock=flaky.clock)), call_id=SID)
    expected.start(STRANGER)
    before = msgspec.json.encode(convo.state)

    flaky.fail()
    with caplog.at_level(logging.WARNING, logger="voxcart.brain.dialog"):
        sorry = convo.say(f"where is my order {order.number}")
    assert sorry.sentences == [SORRY, OFFER_TRANSFER] and sorry.expect == "yes_no"
    assert sorry.intent == "store_error" and sorry.transfer_to is None and not convo.ended
    [record] = logged_for_call(caplog)
    assert "StoreUnavailable" in record.getMessage() and "db.internal:5432" in record.getMessage()
    # nothing of the failed turn stuck: the state is the one before it, with the offer recorded
    st = convo.state
    assert st.order_number is None and st.job is None and st.pending == "confirm_transfer"
    assert msgspec.json.decode(before, type=DialogState).last_sentences != st.last_sentences

    flaky.recover()  # the next turn tries the store again
    again = convo.say(f"where is my order {order.number}")
    assert again.sentences == expected.say(f"where is my order {order.number}").sentences
    assert again.intent != "store_error" and convo.state.order_number == order.number


def test_store_down_a_person_is_still_reachable(seed: Seed, flaky: FlakyStore, convo: Conversation) -> None:
    convo.start(STRANGER)
    flaky.fail()
    assert convo.say("is my order on its way").sentences == [SORRY, OFFER_TRANSFER]
    calls = flaky.failures
    assert convo.say("yes please").transfer_to == seed.store.handoff_number and convo.ended
    assert flaky.failures > calls  # the store was asked again first

    other = Conversation(Dialog(flaky), call_id="CAother")
    other.start("")
    assert other.say("i want to talk to a person").transfer_to == seed.store.handoff_number
    declined = Conversation(Dialog(flaky), call_id="CAdeclined")
    declined.start("")
    declined.say("what colours does it come in")
    assert declined.say("no thanks").sentences[0] == "Okay."  # a no to the offer: the next turn tries again


@pytest.mark.parametrize("handoff", [True, False], ids=["handoff", "no-handoff"])
def test_store_down_outside_hours_offers_a_message_that_cannot_be_saved(
    seed: Seed, clock: FixedClock, caplog: pytest.LogCaptureFixture, handoff: bool
) -> None:
    night(clock, seed)
    flaky = FlakyStore(seed if handoff else without_handoff(seed), clock=clock)
    convo = Conversation(Dialog(flaky), call_id=SID)
    convo.start(STRANGER)
    flaky.fail()
    offer = convo.say("i need help with my refund")
    assert offer.sentences[0] == SORRY and offer.sentences[-1] == OFFER_MESSAGE and offer.expect == "yes_no"
    if handoff:
        assert f"We're open {seed.store.hours}." in offer.sentences
    ask = convo.say("yes")  # taking the message down needs no store
    assert ask.expect == "free" and "your name and your message" in ask.text
    with caplog.at_level(logging.WARNING, logger="voxcart.brain.dialog"):
        gone = convo.say("this is sam please call me about my refund")
    assert gone.sentences[0] == "I'm sorry, I couldn't save your message because of a problem on our side."
    assert logged_for_call(caplog) and convo.ended
    if handoff:
        assert gone.transfer_to == seed.store.handoff_number and not gone.end_call
    else:
        assert gone.end_call and gone.transfer_to is None and gone.sentences[-1] == "Goodbye!"
    flaky.recover()
    assert flaky.messages() == []


def test_store_failing_only_when_saving_the_message(seed: Seed, clock: FixedClock, flaky: FlakyStore) -> None:
    night(clock, seed)
    convo = Conversation(Dialog(flaky), call_id=SID)
    convo.start("")
    convo.say("can i speak to a representative")
    convo.say("yes")
    ask = convo.say("this is robin about an exchange")
    assert ask.expect == "digits"  # withheld number: asked for one
    flaky.fail("leave_message")
    gone = convo.say("five five five one two three four five six seven")
    assert gone.transfer_to == seed.store.handoff_number and "couldn't save your message" in gone.text


def test_store_down_during_a_keyed_entry_and_a_silence(seed: Seed, flaky: FlakyStore, convo: Conversation) -> None:
    order = order_with(seed, "processing")
    convo.start(STRANGER)
    flaky.fail()
    assert convo.keys(f"{order.number}#").sentences == [SORRY, OFFER_TRANSFER]
    assert convo.state.digits == ""  # the failed entry is not taken again
    convo.keys(order.number)
    assert convo.silence().sentences == [SORRY, OFFER_TRANSFER]  # the pause completes the entry: still down
    flaky.recover()
    reply = convo.keys(f"{order.number}#")
    assert reply.intent != "store_error" and convo.state.order_number == order.number


def test_store_down_at_the_greeting_and_for_keyterms(
    seed: Seed, flaky: FlakyStore, caplog: pytest.LogCaptureFixture
) -> None:
    customer = next(c for c in seed.customers if c.phone)
    assert customer.phone is not None
    dialog = Dialog(flaky)
    flaky.fail()
    state = DialogState(call_id=SID)
    with caplog.at_level(logging.WARNING, logger="voxcart.brain.dialog"):
        greeting = dialog.greet(state, customer.phone)
    assert greeting.sentences[0].startswith("Good ") and customer.name.split()[0] not in greeting.text
    assert state.caller_number == customer.phone and state.caller_customer is None
    assert logged_for_call(caplog)
    assert dialog.keyterms() == []
    flaky.recover()
    assert seed.products[0].name in dialog.keyterms()


# -- LLM mode ------------------------------------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLlmServer]:
    async with ScriptedLlmServer() as srv:
        yield srv


def make_agent(server: ScriptedLlmServer, dialog: Dialog) -> LlmAgent:
    config = LlmConfig(base_url=server.base_url, model="scripted", first_token_s=0.5, idle_s=0.5)
    return LlmAgent(LlmClient(config), dialog, turn_s=5.0)


async def llm_turn(agent: LlmAgent, state: DialogState, memory: LlmMemory, text: str) -> tuple[list[str], Done]:
    sentences: list[str] = []
    done: Done | None = None
    async with asyncio.timeout(10):
        async for item in agent.answer(state, memory, text):
            if isinstance(item, Sentence):
                sentences.append(item.text)
            else:
                done = item
    assert done is not None
    return sentences, done


async def test_llm_store_down_in_a_tool_gets_the_rules_apology_then_recovers(
    server: ScriptedLlmServer, seed: Seed, flaky: FlakyStore, caplog: pytest.LogCaptureFixture
) -> None:
    order = order_with(seed, "shipped")
    agent = make_agent(server, Dialog(flaky))
    status = ("s1", "order_status", {"order_number": order.number})
    server.script(
        tool_reply(status, text="Let me look that up. "),
        tool_reply(("s2", "order_status", {"order_number": order.number})),
        text_reply("It has shipped."),
    )
    state = DialogState(call_id=SID, caller_customer=order.customer)
    flaky.fail("get_order")  # the model's tool fails; the rules dialog's own lookups would too
    try:
        with caplog.at_level(logging.WARNING):
            sentences, done = await llm_turn(agent, state, LlmMemory(), f"where is order {order.number}")
        assert sentences == ["Let me look that up.", SORRY, OFFER_TRANSFER]
        assert done.fallback is not None and done.fallback.startswith("store: StoreUnavailable")
        assert done.reply.expect == "yes_no" and state.pending == "confirm_transfer"
        assert [r for r in caplog.records if getattr(r, "call_sid", None) == SID and r.name == "voxcart.brain.llm"]
        assert logged_for_call(caplog)

        flaky.recover()
        sentences, done = await llm_turn(agent, state, done.memory, f"where is order {order.number}")
        assert sentences == ["It has shipped."] and done.fallback is None
        assert json.loads(server.requests[-1]["messages"][-1]["content"])["status"] == "shipped"
    finally:
        await agent.aclose()


# -- the worker ----------------------------------------------------------------------------------------------------


async def handler_for(bus: MemoryBus, dialog: Dialog, agent: LlmAgent | None) -> BrainHandler:
    async def noop(sid: str, reason: str) -> None:
        pass

    ownership = Ownership(bus, "brain", "r1", OwnershipConfig(lease_ttl_ms=60_000), noop, noop)
    assert await ownership.try_acquire(SID, "claimed")
    return await BrainHandler.create(CallContext(SID, "brain", bus, ownership, "claimed", {}), dialog, agent)


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


async def turn_said(bus: MemoryBus, turn: int) -> list[str]:
    return [e.text for e in map(ev.decode, [x.data for x in await bus.range(keys.tts(SID))]) if
            isinstance(e, ev.Say) and e.turn_no == turn and e.text]  # fmt: skip


@pytest.mark.parametrize("mode", ["rules", "llm"])
async def test_worker_commits_the_apology_and_the_next_turn_works(
    server: ScriptedLlmServer, seed: Seed, flaky: FlakyStore, mode: str
) -> None:
    bus = MemoryBus()
    dialog = Dialog(flaky)
    agent = make_agent(server, dialog) if mode == "llm" else None
    flaky.fail()  # down from the start: the greeting still goes out
    handler = await handler_for(bus, dialog, agent)
    try:
        assert (await turn_said(bus, 1))[0].startswith("Good ")
        product = seed.products[0]
        server.script(
            tool_reply(("a1", "check_availability", {"product": product.name})),  # fails: the rules apologise
            tool_reply(("a2", "check_availability", {"product": product.name})),
            text_reply("Yes, we have it."),
        )
        entry, event = await final(bus, f"do you have the {product.name}", "u1")
        await handler.handle(entry, event)
        assert await turn_said(bus, 2) == [SORRY, OFFER_TRANSFER]
        checkpoint = await bus.hgetall(keys.checkpoint("brain", SID))
        assert checkpoint[keys.events(SID)].decode() == entry.id  # committed: the entry is not read again
        saved = msgspec.msgpack.decode((await bus.hgetall(keys.state(SID)))["brain"], type=BrainState)
        assert saved.answered == ["u1"] and saved.speaking is None and not saved.finished

        flaky.recover()
        entry, event = await final(bus, f"do you have the {product.name}", "u2")
        await handler.handle(entry, event)
        said = await turn_said(bus, 3)
        assert said and SORRY not in said
        if mode == "llm":
            assert said == ["Yes, we have it."]
        assert (await bus.hgetall(keys.checkpoint("brain", SID)))[keys.events(SID)].decode() == entry.id
    finally:
        await handler.close("ended")
        if agent is not None:
            await agent.aclose()


# -- a real PostgreSQL server going away -----------------------------------------------------------------------


@pytest.fixture
def scratch_postgres() -> Iterator[LocalPostgres]:
    """A throwaway server of this test's own (it is stopped and started again mid-test)."""
    try:
        server = start_postgres()
    except PostgresNotFound as exc:
        pytest.skip(f"no PostgreSQL to test against: {exc}")
    try:
        yield server
    finally:
        server.stop()


def take_down(server: LocalPostgres) -> None:
    """Stop the server (fast shutdown: sessions are cut) and keep its data folder."""
    server.process.send_signal(signal.SIGINT)
    server.process.wait(10)
    assert not postgres_answers(server.url, timeout=1)


def bring_back(server: LocalPostgres) -> None:
    """Start the same server again, on the same port and data, as the same user."""
    owner = os.stat(server.directory)
    as_root = os.geteuid() == 0
    with (server.directory / "server.log").open("ab") as out:
        server.process = subprocess.Popen(
            server.process.args,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=server.directory,
            user=owner.st_uid if as_root else None,
            group=owner.st_gid if as_root else None,
            extra_groups=[] if as_root else None,
        )
    deadline = time.monotonic() + 30
    while not postgres_answers(server.url, timeout=1):
        assert server.process.poll() is None and time.monotonic() < deadline, "postgres did not come back"
        time.sleep(0.1)


@pytest.mark.postgres
def test_postgres_server_going_away_mid_call(scratch_postgres: LocalPostgres, caplog: pytest.LogCaptureFixture) -> None:
    seed = load_seed(demo_seed_path())
    today = max(o.placed for o in seed.orders) + dt.timedelta(days=2)
    clock = FixedClock.on(today, seed.store.timezone, hour=11)
    order = order_with(seed, "shipped")
    customer = next(c for c in seed.customers if c.id == order.customer)
    assert customer.phone is not None
    rules = Dialog(SqliteStore(seed, clock=clock))  # what the same turn says on a store that never failed

    def expected(convo: Conversation, text: str) -> list[str]:
        return rules.on_text(copy.deepcopy(convo.state), text).sentences

    with PostgresStore(scratch_postgres.url, seed=seed, clock=clock) as store:
        convo = Conversation(Dialog(store), call_id=SID)
        convo.start(customer.phone)
        status = f"where is my order {order.number}"
        assert convo.say(status).sentences == expected(convo, status)

        take_down(scratch_postgres)
        with caplog.at_level(logging.WARNING, logger="voxcart.brain.dialog"):
            sorry = convo.say("what is your return policy")
        assert sorry.sentences == [SORRY, OFFER_TRANSFER] and not convo.ended
        [record] = logged_for_call(caplog)
        assert f"127.0.0.1:{scratch_postgres.port}" in record.getMessage()

        bring_back(scratch_postgres)  # the store reconnects on its next call
        policy = expected(convo, "what is your return policy")
        back = convo.say("what is your return policy")
        assert back.sentences == policy and back.intent == "return_policy"
        assert convo.say(status).sentences != [SORRY, OFFER_TRANSFER]
    with PostgresStore(scratch_postgres.url, clock=clock) as again:  # the data survived the restart
        assert again.get_order(order.number) == order
