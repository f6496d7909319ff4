"""LLM mode's tools for the rules dialog's newer jobs, against a real local server streaming scripted SSE.

Each test runs on the demo store and a second, unrelated store (the ``dialog`` fixture). Proven here: an
unverified caller cannot change an order's address and learns nothing about it; a shipped order's address is
refused whatever the caller says; a change needs the caller's yes in a later turn, is read back first, and is
made once even when the confirming turn is replayed (the rules dialog's idempotency key); a message is stored
with the calling number, or a callback number only if the caller said it, and the order only when verified;
``transfer_to_human`` transfers only when the rules dialog would, and otherwise tells the model to offer a message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from voxcart.brain.dialog import Dialog, DialogState
from voxcart.brain.dialog._address import address_key
from voxcart.brain.hours import parse_hours
from voxcart.brain.llm import Done, LlmAgent, LlmClient, LlmConfig, LlmMemory, Sentence, ToolBox
from voxcart.brain.llm.testing import ScriptedLlmServer, text_reply, tool_reply
from voxcart.brain.store import FixedClock, SqliteStore
from voxcart.common.seed import Order, Seed

ADDRESS = "12 Oak Lane, Portland, OR 97205"
STORED = "12 oak lane portland or 97205"  # as the rules dialog writes it down
STRANGER = "+15555550177"


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


async def turn(agent: LlmAgent, state: DialogState, memory: LlmMemory, text: str) -> tuple[list[str], Done]:
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


def result(request: dict[str, Any], call_id: str) -> dict[str, Any]:
    """The decoded result of tool call ``call_id`` in a request's messages."""
    [found] = [json.loads(m["content"]) for m in request["messages"] if m.get("tool_call_id") == call_id]
    assert isinstance(found, dict)
    return found


def order_with(seed: Seed, status: str) -> Order:
    return next(o for o in seed.orders if o.status == status)


def night(clock: FixedClock, seed: Seed) -> None:
    """23:00 on the same day: outside both stores' hours."""
    clock.now = FixedClock.on(clock.now.date(), seed.store.timezone, hour=23).now
    hours = parse_hours(seed.store.hours)
    assert hours is not None and not hours.is_open(clock.now)


# -- change the shipping address ------------------------------------------------------------------------------


async def test_llm_unverified_caller_cannot_change_an_address_and_learns_nothing(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed, store: SqliteStore
) -> None:
    order = order_with(seed, "processing")
    other = next(c for c in seed.customers if c.id != order.customer)
    change = ("a1", "change_address", {"order_number": order.number, "address": ADDRESS})
    server.script(
        tool_reply(change),
        text_reply("What's the ZIP code on the order?"),
        tool_reply(("a2", "change_address", {"order_number": order.number, "address": ADDRESS})),
        text_reply("I still need the ZIP code."),
    )
    state = DialogState(call_id="CAjobs", caller_customer=other.id)  # a known caller, but not this order's
    sentences, done = await turn(agent, state, LlmMemory(), f"send order {order.number} to {ADDRESS}")
    _, done = await turn(agent, state, done.memory, "yes, do it")  # a yes does not stand in for identity

    for request, call_id in ((server.requests[1], "a1"), (server.requests[3], "a2")):
        refused = result(request, call_id)
        assert refused["reason"] == "identity_required"
        assert set(refused) <= {"ok", "reason", "order_number", "message"}
    leaked = json.dumps([result(server.requests[1], "a1"), result(server.requests[3], "a2")]) + " ".join(sentences)
    assert not [d for d in [order.status, order.placed.isoformat(), *(i.sku for i in order.items)] if d in leaked]
    assert store.address_changes(order.number) == [] and done.memory.pending is None
    assert order.customer not in state.verified


@pytest.mark.parametrize("status", ["shipped", "delivered", "cancelled"])
async def test_llm_address_of_a_sent_or_cancelled_order_is_refused(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed, store: SqliteStore, status: str
) -> None:
    order = order_with(seed, status)
    args = {"order_number": order.number, "address": ADDRESS}
    server.script(
        tool_reply(("s1", "change_address", args)),
        text_reply("I'm sorry, I can't change that one."),
        tool_reply(("s2", "change_address", args)),  # the caller insists: "yes, change it anyway"
        text_reply("I still can't."),
    )
    state = DialogState(call_id="CAjobs", caller_customer=order.customer)  # verified by the calling number
    _, done = await turn(agent, state, LlmMemory(), f"change the address on order {order.number}")
    _, done = await turn(agent, state, done.memory, "yes change it anyway")
    reason = "cancelled" if status == "cancelled" else "not_processing"
    for request, call_id in ((server.requests[1], "s1"), (server.requests[3], "s2")):
        refused = result(request, call_id)
        assert refused["ok"] is False and refused["reason"] == reason and refused["status"] == status
    assert store.address_changes(order.number) == [] and done.memory.pending is None


async def test_llm_confirmed_address_change_is_made_once(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed, store: SqliteStore
) -> None:
    order = order_with(seed, "processing")
    args = {"order_number": order.number, "address": ADDRESS}
    server.script(
        # turn 1: an address with no number is no address; then proposed, and tried again at once
        tool_reply(("c0", "change_address", {"order_number": order.number, "address": "oak lane"})),
        tool_reply(("c1", "change_address", args)),
        tool_reply(("c2", "change_address", args)),
        text_reply("I have 12 Oak Lane, Portland, 9 7 2 0 5. Is that right?"),
        # turn 2: yes
        tool_reply(("c4", "change_address", args)),
        text_reply("Done."),
        # turn 2 again (a replica took the call over before the turn was committed), then again in the same turn
        tool_reply(("c5", "change_address", args)),
        tool_reply(("c6", "change_address", args)),
        text_reply("Done, it will ship there."),
    )
    state = DialogState(call_id="CAjobs", caller_customer=order.customer)
    sentences, first = await turn(agent, state, LlmMemory(), f"please ship order {order.number} to {ADDRESS}")
    assert result(server.requests[1], "c0")["reason"] == "bad_address"
    proposed = result(server.requests[2], "c1")
    assert proposed["reason"] == "needs_confirmation" and proposed["address"] == "12 oak lane portland or 9 7 2 0 5"
    assert result(server.requests[3], "c2")["reason"] == "needs_confirmation"  # not in the same turn
    assert store.address_changes(order.number) == []
    pending = first.memory.pending
    assert pending is not None and (pending.kind, pending.address) == ("address", STORED)

    sentences, done = await turn(agent, state, first.memory, "yes that's right")
    changed = result(server.requests[5], "c4")
    assert changed == {"ok": True, "order_number": order.number, "address": STORED, "changed": str(store.today())}
    assert sentences == ["Done."] and done.memory.pending is None

    _, replay = await turn(agent, state, first.memory, "yes that's right")
    assert result(server.requests[7], "c5") == changed  # the same key: the first change, not a second one
    assert result(server.requests[8], "c6")["reason"] == "needs_confirmation"
    [made] = store.address_changes(order.number)
    assert made.address == STORED
    # the rules dialog's key: a rules-mode confirmation of the same address in this call is the same change
    assert store.change_address(order.number, STORED, key=address_key("CAjobs", order.number, STORED)) == made
    assert len(store.address_changes(order.number)) == 1


async def test_llm_address_change_after_a_no_or_for_another_address_is_not_made(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed, store: SqliteStore
) -> None:
    order = order_with(seed, "processing")
    args = {"order_number": order.number, "address": ADDRESS}
    server.script(
        tool_reply(("n1", "change_address", args)),
        text_reply("Is that right?"),
        tool_reply(("n2", "change_address", args)),
        text_reply("Okay. Shall I ship it there after all?"),
        # a yes, but the model asks for an address that was never read back
        tool_reply(("n3", "change_address", {**args, "address": "99 Elm Street, Boston 02139"})),
        text_reply("I have 99 Elm Street. Is that right?"),
    )
    state = DialogState(call_id="CAjobs", caller_customer=order.customer)
    _, done = await turn(agent, state, LlmMemory(), f"ship order {order.number} to {ADDRESS}")
    _, done = await turn(agent, state, done.memory, "no, that's wrong")
    assert result(server.requests[3], "n2")["reason"] == "needs_confirmation"
    _, done = await turn(agent, state, done.memory, "yes")
    assert result(server.requests[5], "n3")["reason"] == "needs_confirmation"
    assert store.address_changes(order.number) == []


# -- messages -------------------------------------------------------------------------------------------------


async def test_llm_message_is_stored_with_the_calling_number(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed, store: SqliteStore
) -> None:
    message = {"name": "Sam", "message": "please call me about my refund"}
    server.script(
        tool_reply(("m1", "leave_message", message)),
        text_reply("Thanks Sam, I've passed it on. Someone will call you back."),
    )
    state = DialogState(call_id="CAjobs", caller_number=STRANGER)
    sentences, done = await turn(agent, state, LlmMemory(), "this is sam, please call me about my refund")
    stored = result(server.requests[1], "m1")
    assert stored["ok"] is True and stored["callback"] == "calling_number"
    [kept] = store.messages()
    assert (kept.id, kept.caller_number, kept.text, kept.order_number) == (
        stored["message_id"],
        STRANGER,
        "Sam: please call me about my refund",
        None,
    )
    assert done.reply.intent == "llm:leave_message" and done.fallback is None
    assert sentences[0].startswith("Thanks Sam")


async def test_llm_message_callback_number_only_if_the_caller_said_it(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed, store: SqliteStore
) -> None:
    order = order_with(seed, "shipped")
    text = {"name": "Robin", "message": "about my exchange"}
    server.script(
        tool_reply(
            ("w1", "leave_message", text),  # withheld number, none given
            ("w2", "leave_message", {**text, "callback_number": "555 123 4567"}),  # the model made it up
        ),
        text_reply("What number should we call you back on?"),
        tool_reply(("w3", "leave_message", {**text, "callback_number": "5551234567"})),
        text_reply("Thanks, we'll call you back."),
    )
    # a verified caller who discussed an order: the message carries it
    state = DialogState(call_id="CAjobs", verified=[order.customer], order_number=order.number)
    _, done = await turn(agent, state, LlmMemory(), "I'd like to leave a message about my exchange, I'm Robin")
    assert result(server.requests[1], "w1")["reason"] == "callback_number_needed"
    assert result(server.requests[1], "w2")["reason"] == "not_said_by_caller"
    assert store.messages() == []
    _, done = await turn(agent, state, done.memory, "five five five one two three four five six seven")
    assert result(server.requests[3], "w3")["callback"] == "given"
    [kept] = store.messages()
    assert (kept.caller_number, kept.order_number) == ("5551234567", order.number)
    assert done.reply.sentences == ["Thanks, we'll call you back."]


def test_llm_message_without_any_number_and_empty_messages(seed: Seed, store: SqliteStore) -> None:
    box = ToolBox(store, DialogState(call_id="CAjobs"), LlmMemory(), store.today(), ["I have no phone"])
    assert json.loads(box.run("leave_message", '{"message": "  "}'))["reason"] == "empty"
    saved = json.loads(box.run("leave_message", '{"message": "call my office", "no_callback_number": true}'))
    assert saved["ok"] is True and saved["callback"] == "none"
    [kept] = store.messages()
    assert kept.caller_number == "" and kept.text == "call my office"
    assert box.done == [
        "Thank you, I've passed your message on to our team.",
        "Our team will read it as soon as they're in.",
    ]


# -- a person, or a message -------------------------------------------------------------------------------------


async def test_llm_transfer_inside_hours_transfers(server: ScriptedLlmServer, agent: LlmAgent, seed: Seed) -> None:
    server.script(tool_reply(("t1", "transfer_to_human", {})), text_reply("Sure, transferring you now."))
    state = DialogState(call_id="CAjobs")
    _, done = await turn(agent, state, LlmMemory(), "can I talk to a person")
    assert result(server.requests[1], "t1")["ok"] is True
    assert done.reply.transfer_to == seed.store.handoff_number and state.ended


async def test_llm_transfer_outside_hours_becomes_a_message_offer(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed, store: SqliteStore, clock: FixedClock
) -> None:
    night(clock, seed)
    server.script(
        tool_reply(("t1", "transfer_to_human", {})),
        text_reply("Our team isn't in right now. Would you like to leave a message?"),
        tool_reply(("t2", "leave_message", {"name": "Sam", "message": "call me back about order help"})),
        text_reply("Done, they'll call you back."),
    )
    state = DialogState(call_id="CAjobs", caller_number=STRANGER)
    sentences, done = await turn(agent, state, LlmMemory(), "I want to speak to a representative")
    offer = result(server.requests[1], "t1")
    assert offer["ok"] is False and offer["reason"] == "closed" and offer["hours"] == seed.store.hours
    assert "leave_message" in offer["message"]
    assert done.reply.transfer_to is None and not done.reply.end_call and not state.ended
    assert sentences[-1] == "Would you like to leave a message?"
    _, done = await turn(agent, state, done.memory, "yes, I'm Sam, call me back about order help")
    [kept] = store.messages()
    assert kept.caller_number == STRANGER and kept.text == "Sam: call me back about order help"


def test_llm_transfer_without_a_handoff_number_offers_a_message(seed: Seed, clock: FixedClock) -> None:
    no_one = msgspec.structs.replace(seed, store=msgspec.structs.replace(seed.store, handoff_number=None))
    store = SqliteStore(no_one, clock=clock)
    box = ToolBox(store, DialogState(call_id="CAjobs"), LlmMemory(), store.today(), [], clock.now)
    offer = json.loads(box.run("transfer_to_human", "{}"))
    assert offer["ok"] is False and offer["reason"] == "no_one_available" and "leave_message" in offer["message"]
    assert box.transfer_to is None


def test_llm_system_prompt_mentions_the_new_jobs(agent: LlmAgent) -> None:
    prompt = agent.system_prompt(DialogState(call_id="CAjobs"))
    assert "shipping address" in prompt and "leave_message" in prompt
