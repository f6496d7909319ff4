"""LLM mode against a real local HTTP server that streams scripted SSE replies and tool calls.

Each test runs on the demo store and a second, unrelated store (the ``dialog`` fixture). Proven here: sentences
stream in order and the first one is out before the stream ends; tool calls split across chunks reach the tools;
every guardrail holds whatever the model asks (order data only after identity, a ZIP code only if the caller
said it, no cancel of a shipped order, no action without the caller's yes in a later turn); and any failure of
the model (HTTP 401/429/500, a stall, malformed SSE, an error event, a truncated stream, endless tool calls)
makes the rules dialog answer within the turn.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from voxcart.brain.dialog import Dialog, DialogState
from voxcart.brain.llm import (
    TOOLS,
    Done,
    LlmAgent,
    LlmClient,
    LlmConfig,
    LlmMemory,
    Sentence,
    SentenceSplitter,
    ToolBox,
)
from voxcart.brain.llm.testing import Gate, Raw, Reply, ScriptedLlmServer, chunk, text_reply, tool_reply
from voxcart.brain.store import SqliteStore
from voxcart.common.seed import Customer, Order, Seed

FIRST_TOKEN_S = 0.4


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLlmServer]:
    async with ScriptedLlmServer() as srv:
        yield srv


@pytest.fixture
async def agent(server: ScriptedLlmServer, dialog: Dialog) -> AsyncIterator[LlmAgent]:
    config = LlmConfig(
        base_url=server.base_url,
        model="scripted",
        api_key="sk-test",
        connect_s=1.0,
        first_token_s=FIRST_TOKEN_S,
        idle_s=FIRST_TOKEN_S,
    )
    made = LlmAgent(LlmClient(config), dialog, turn_s=5.0)
    yield made
    await made.aclose()


async def turn(
    agent: LlmAgent, state: DialogState, memory: LlmMemory, text: str, stop: asyncio.Event | None = None
) -> tuple[list[str], Done]:
    sentences: list[str] = []
    done: Done | None = None
    async with asyncio.timeout(10):
        async for item in agent.answer(state, memory, text, stop=stop):
            if isinstance(item, Sentence):
                sentences.append(item.text)
            else:
                done = item
    assert done is not None
    return sentences, done


def order_with(seed: Seed, status: str) -> Order:
    return next(o for o in seed.orders if o.status == status and (status != "shipped" or o.tracking))


def customer_of(seed: Seed, order: Order) -> Customer:
    return next(c for c in seed.customers if c.id == order.customer)


def tool_results(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tool messages of a request, by tool_call_id, decoded."""
    return {m["tool_call_id"]: json.loads(m["content"]) for m in request["messages"] if m["role"] == "tool"}


def details_of(order: Order) -> list[str]:
    """Strings that would give an order away."""
    found = [i.sku for i in order.items] + [order.placed.isoformat()]
    found += [v for v in (order.tracking, order.carrier) if v]
    found += [d.isoformat() for d in (order.eta, order.delivered) if d]
    return found


# -- streaming ---------------------------------------------------------------------------------------------------


async def test_llm_streams_sentences_in_order_first_before_the_stream_ends(
    server: ScriptedLlmServer, agent: LlmAgent
) -> None:
    gate = Gate()
    server.script(text_reply("Sure", ", I can help", " with that. ", gate, "We're open ", "every day. Anything else?"))
    state, memory = DialogState(call_id="CAllm"), LlmMemory()
    sentences: list[str] = []
    done: Done | None = None
    async with asyncio.timeout(5):
        async for item in agent.answer(state, memory, "when are you open"):
            if isinstance(item, Sentence):
                if not sentences:
                    # the server holds the rest of its stream until the gate opens: so this sentence was
                    # yielded while the stream was still open
                    assert not gate.event.is_set()
                    gate.open()
                sentences.append(item.text)
            else:
                done = item
    assert sentences == ["Sure, I can help with that.", "We're open every day.", "Anything else?"]
    assert done is not None and done.fallback is None
    assert done.reply.sentences == sentences and done.reply.intent == "llm"

    [request] = server.requests
    assert request["model"] == "scripted" and request["stream"] is True and request["tool_choice"] == "auto"
    assert {t["function"]["name"] for t in request["tools"]} >= {"order_status", "verify_identity", "cancel_order"}
    assert request["messages"][0]["role"] == "system" and request["messages"][-1] == {
        "role": "user",
        "content": "when are you open",
    }
    assert server.headers[0]["authorization"] == "Bearer sk-test"
    # the memory handed in is untouched; the new one holds the turn
    assert memory.turns == []
    assert [m.role for m in done.memory.turns[-1]] == ["user", "assistant"]
    assert state.last_sentences == sentences and state.pending == "none"


async def test_llm_tool_call_split_across_chunks_reaches_the_tool(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed
) -> None:
    product = seed.products[0]
    arguments = {"product": product.name.lower()}
    server.script(
        tool_reply(("call_av1", "check_availability", arguments), pieces=6, text="Let me check. "),
        text_reply("Yes, we have it."),
    )
    sentences, done = await turn(agent, DialogState(call_id="CAllm"), LlmMemory(), f"do you have the {product.name}")
    assert sentences == ["Let me check.", "Yes, we have it."]
    assert done.fallback is None and done.reply.intent == "llm:check_availability"

    second = server.requests[1]
    assistant = next(m for m in second["messages"] if m["role"] == "assistant" and m.get("tool_calls"))
    [call] = assistant["tool_calls"]
    assert call["id"] == "call_av1" and call["function"]["name"] == "check_availability"
    assert json.loads(call["function"]["arguments"]) == arguments  # the fragments were joined
    result = tool_results(second)["call_av1"]
    assert result["ok"] and result["product"] == product.name
    assert {v["color"] for v in result["variants"]} == {v.color for v in product.variants}


def test_llm_sentence_splitter_waits_for_a_real_sentence_end() -> None:
    splitter = SentenceSplitter()
    out: list[str] = []
    for piece in ["It costs $19", ".99 plus tax", ". Dr. Smith", " says **hi**! Ok", "ay?\nNext line", " ends"]:
        out += splitter.feed(piece)
    assert out == ["It costs $19.99 plus tax.", "Dr. Smith says hi!", "Okay?"]
    assert splitter.flush() == ["Next line ends"]


# -- guardrails ----------------------------------------------------------------------------------------------------


async def test_llm_unverified_caller_gets_nothing_about_an_order(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed, store: SqliteStore
) -> None:
    order = order_with(seed, "shipped")
    other = next(c for c in seed.customers if c.id != order.customer)
    number = order.number
    server.script(
        # the model asks for everything at once, and tries a ZIP code the caller never said
        tool_reply(
            ("c1", "order_status", {"order_number": number}),
            ("c2", "return_options", {"order_number": number}),
            ("c3", "cancel_order", {"order_number": number}),
            ("c4", "create_return", {"order_number": number, "sku": order.items[0].sku}),
            ("c5", "verify_identity", {"order_number": number, "zip_code": customer_of(seed, order).zip}),
        ),
        text_reply("To protect your privacy, what's the ZIP code on the order?"),
    )
    state = DialogState(call_id="CAllm", caller_customer=other.id)  # a known caller, but not this order's
    sentences, done = await turn(agent, state, LlmMemory(), f"I'm the owner, tell me about order {number}")

    results = tool_results(server.requests[1])
    for call_id in ("c1", "c2", "c3", "c4"):
        assert results[call_id]["reason"] == "identity_required"
        assert set(results[call_id]) <= {"ok", "reason", "order_number", "message"}
    assert results["c5"]["reason"] == "not_said_by_caller"
    leaked = json.dumps(results) + " ".join(sentences)
    assert not [d for d in details_of(order) if d in leaked]
    assert order.customer not in state.verified
    assert store.get_order(number) == order  # nothing was done to it
    assert done.reply.sentences == sentences


async def test_llm_identity_check_then_order_status(server: ScriptedLlmServer, agent: LlmAgent, seed: Seed) -> None:
    order = order_with(seed, "shipped")
    customer = customer_of(seed, order)
    assert customer.zip is not None
    wrong = "1" + customer.zip[1:] if customer.zip[0] != "1" else "2" + customer.zip[1:]
    server.script(
        tool_reply(("s1", "order_status", {"order_number": order.number})),
        text_reply("I can help. What's the ZIP code on the order?"),
        # turn 2: a wrong ZIP the caller said
        tool_reply(("v1", "verify_identity", {"order_number": order.number, "zip_code": wrong})),
        text_reply("That doesn't match. Could you try again?"),
        # turn 3: the right one
        tool_reply(("v2", "verify_identity", {"order_number": order.number, "zip_code": customer.zip})),
        tool_reply(("s2", "order_status", {"order_number": order.number})),
        text_reply("Thanks. Your order has shipped."),
    )
    state, memory = DialogState(call_id="CAllm"), LlmMemory()
    _, done = await turn(agent, state, memory, f"where is my order {order.number}")
    assert tool_results(server.requests[1])["s1"]["reason"] == "identity_required"
    _, done = await turn(agent, state, done.memory, f"it's {' '.join(wrong)}")
    assert tool_results(server.requests[3])["v1"] == {"ok": False, "reason": "no_match", "attempts_left": 2}
    assert order.customer not in state.verified
    sentences, done = await turn(agent, state, done.memory, f"sorry, it's {' '.join(customer.zip)}")

    assert tool_results(server.requests[5])["v2"]["verified"] is True
    status = tool_results(server.requests[6])["s2"]
    assert status["ok"] and status["status"] == "shipped" and status["tracking"] == order.tracking
    assert order.customer in state.verified
    assert sentences == ["Thanks.", "Your order has shipped."]
    # the history went along: turn 3's first request carried turns 1 and 2
    roles = [m["role"] for m in server.requests[4]["messages"]]
    assert roles[:1] == ["system"] and roles.count("user") == 3 and roles.count("tool") == 2


async def test_llm_cannot_cancel_a_shipped_order(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed, store: SqliteStore
) -> None:
    order = order_with(seed, "shipped")
    server.script(
        tool_reply(("x1", "cancel_order", {"order_number": order.number})),
        text_reply("I'm sorry, it has already shipped."),
        tool_reply(("x2", "cancel_order", {"order_number": order.number})),  # the caller insists: "yes, cancel it"
        text_reply("I still can't cancel it."),
    )
    state = DialogState(call_id="CAllm", caller_customer=order.customer)  # verified by the calling number
    _, done = await turn(agent, state, LlmMemory(), f"cancel order {order.number}")
    _, done = await turn(agent, state, done.memory, "yes cancel it, I insist")
    for request, call_id in ((server.requests[1], "x1"), (server.requests[3], "x2")):
        result = tool_results(request)[call_id]
        assert result["ok"] is False and result["reason"] == "not_processing" and result["status"] == "shipped"
    fresh = store.get_order(order.number)
    assert fresh is not None and fresh.status == "shipped"


async def test_llm_cancel_needs_the_callers_yes_in_a_later_turn(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed, store: SqliteStore
) -> None:
    order = order_with(seed, "processing")
    call = ("k1", "cancel_order", {"order_number": order.number})
    server.script(
        # turn 1: the model proposes, then at once tries again in the same turn
        tool_reply(call),
        tool_reply(("k2", "cancel_order", {"order_number": order.number})),
        text_reply("Would you like me to cancel it?"),
        # turn 2: the caller says no, the model cancels anyway
        tool_reply(("k3", "cancel_order", {"order_number": order.number})),
        text_reply("Okay."),
        # turn 3: proposed again; turn 4: yes
        tool_reply(("k4", "cancel_order", {"order_number": order.number})),
        text_reply("Shall I cancel it?"),
        tool_reply(("k5", "cancel_order", {"order_number": order.number})),
        text_reply("Done, it's cancelled."),
    )
    state = DialogState(call_id="CAllm", caller_customer=order.customer)
    _, done = await turn(agent, state, LlmMemory(), f"I want to cancel order {order.number}")
    assert tool_results(server.requests[1])["k1"]["reason"] == "needs_confirmation"
    assert tool_results(server.requests[2])["k2"]["reason"] == "needs_confirmation"
    _, done = await turn(agent, state, done.memory, "no, don't")
    assert tool_results(server.requests[4])["k3"]["reason"] == "needs_confirmation"
    still = store.get_order(order.number)
    assert still is not None and still.status == "processing"

    _, done = await turn(agent, state, done.memory, "actually, please cancel it")
    _, done = await turn(agent, state, done.memory, "yes please")
    assert tool_results(server.requests[8])["k5"]["ok"] is True
    cancelled = store.get_order(order.number)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert done.memory.pending is None


async def test_llm_identity_attempts_are_limited_per_call(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed
) -> None:
    order = order_with(seed, "delivered")
    replies: list[Reply] = []
    guesses = ["11111", "22222", "33333", "44444"]
    for n, guess in enumerate(guesses):
        replies += [tool_reply((f"g{n}", "verify_identity", {"order_number": order.number, "zip_code": guess}))]
        replies += [text_reply("Let me check that.")]
    server.script(*replies)
    state, memory = DialogState(call_id="CAllm"), LlmMemory()
    reasons = []
    for n, guess in enumerate(guesses):
        _, done = await turn(agent, state, memory, f"order {order.number} zip {guess}")
        memory = done.memory
        reasons.append(tool_results(server.requests[2 * n + 1])[f"g{n}"]["reason"])
    assert reasons == ["no_match", "no_match", "no_match", "too_many_attempts"]


# -- fallbacks -----------------------------------------------------------------------------------------------------


def rules_answer(dialog: Dialog, state: DialogState, text: str) -> list[str]:
    return dialog.on_text(copy.deepcopy(state), text).sentences


@pytest.mark.parametrize("status", [401, 429, 500])
async def test_llm_http_error_falls_back_to_the_rules_in_the_turn(
    server: ScriptedLlmServer, agent: LlmAgent, dialog: Dialog, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    server.script(Reply(status=status, body='{"error":{"message":"nope"}}'))
    state = DialogState(call_id="CAllm")
    expected = rules_answer(dialog, state, "what are your opening hours")
    sentences, done = await turn(agent, state, LlmMemory(), "what are your opening hours")
    assert sentences == expected and done.reply.sentences == expected
    assert done.fallback is not None and f"HTTP {status}" in done.fallback and "nope" in done.fallback
    assert f"HTTP {status}" in caplog.text
    # the model will know next turn what the caller was told
    assert done.memory.turns[-1][-1].content == " ".join(expected)


async def test_llm_stall_falls_back_within_the_first_token_timeout(
    server: ScriptedLlmServer, agent: LlmAgent, dialog: Dialog
) -> None:
    server.script(Reply(stall=True))  # accepts the request and sends not a byte
    state = DialogState(call_id="CAllm")
    expected = rules_answer(dialog, state, "what is your return policy")
    started = time.monotonic()
    sentences, done = await turn(agent, state, LlmMemory(), "what is your return policy")
    elapsed = time.monotonic() - started
    assert sentences == expected
    assert done.fallback is not None and done.fallback.startswith("timeout")
    assert FIRST_TOKEN_S <= elapsed < FIRST_TOKEN_S + 1.0


async def test_llm_stall_mid_reply_keeps_what_was_said_and_adds_the_rules_answer(
    server: ScriptedLlmServer, agent: LlmAgent, dialog: Dialog
) -> None:
    server.script(Reply(events=[chunk({"content": "Good question. "}), chunk({"content": "Our"})], stall=True))
    state = DialogState(call_id="CAllm")
    expected = rules_answer(dialog, state, "what is your return policy")
    started = time.monotonic()
    sentences, done = await turn(agent, state, LlmMemory(), "what is your return policy")
    assert time.monotonic() - started < FIRST_TOKEN_S + 1.0
    assert sentences == ["Good question.", *expected]  # the cut-off "Our" is never spoken
    assert done.fallback is not None and "next chunk" in done.fallback


@pytest.mark.parametrize(
    ("reply", "explained"),
    [
        (Reply(events=[Raw(b"data: {not json\n\n")]), "SSE line 1: data is not JSON"),
        (Reply(events=[{"error": {"message": "model overloaded"}}]), "model overloaded"),
        (Reply(events=[chunk({"content": "Hello"})], done=False), "ended before a finish_reason"),
        (Reply(events=[{"choices": "nope"}]), "'choices' is not a list"),
    ],
    ids=["not-json", "error-event", "truncated", "bad-shape"],
)
async def test_llm_malformed_stream_falls_back_with_a_clear_logged_error(
    server: ScriptedLlmServer,
    agent: LlmAgent,
    dialog: Dialog,
    caplog: pytest.LogCaptureFixture,
    reply: Reply,
    explained: str,
) -> None:
    server.script(reply)
    state = DialogState(call_id="CAllm")
    expected = rules_answer(dialog, state, "how much is shipping")
    with caplog.at_level(logging.WARNING, logger="voxcart.brain.llm"):
        sentences, done = await turn(agent, state, LlmMemory(), "how much is shipping")
    assert sentences[-len(expected) :] == expected
    assert done.fallback is not None and explained in done.fallback
    assert explained in caplog.text and server.base_url in caplog.text


async def test_llm_endless_tool_calls_fall_back(server: ScriptedLlmServer, agent: LlmAgent, dialog: Dialog) -> None:
    server.script(*[tool_reply((f"p{n}", "store_policies", {})) for n in range(agent.max_rounds)])
    state = DialogState(call_id="CAllm")
    expected = rules_answer(dialog, state, "what are your hours")
    sentences, done = await turn(agent, state, LlmMemory(), "what are your hours")
    assert sentences == expected
    assert done.fallback is not None and "still calling tools" in done.fallback


async def test_llm_failure_after_an_action_tells_the_caller_what_was_done(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed, store: SqliteStore
) -> None:
    order = order_with(seed, "processing")
    server.script(
        tool_reply(("a1", "cancel_order", {"order_number": order.number})),
        text_reply("Shall I cancel it?"),
        tool_reply(("a2", "cancel_order", {"order_number": order.number})),
        Reply(status=503, body="down"),
    )
    state = DialogState(call_id="CAllm", caller_customer=order.customer)
    _, done = await turn(agent, state, LlmMemory(), f"cancel order {order.number}")
    sentences, done = await turn(agent, state, done.memory, "yes")
    cancelled = store.get_order(order.number)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert done.fallback is not None
    assert sentences[0].startswith("Order ") and sentences[0].endswith("is cancelled.")
    assert sentences[-1] == "Is there anything else I can help you with?"


def test_llm_every_offered_tool_runs_and_bad_calls_get_clear_errors(store: SqliteStore) -> None:
    box = ToolBox(store, DialogState(call_id="CAllm"), LlmMemory(), store.today(), [])
    for tool in TOOLS:
        result = json.loads(box.run(tool["function"]["name"], "{}"))
        assert result.get("reason") != "unknown_tool" and isinstance(result["ok"], bool)
    assert json.loads(box.run("drop_tables", "{}"))["reason"] == "unknown_tool"
    bad = json.loads(box.run("order_status", '{"order_number": "1'))
    assert bad["reason"] == "bad_arguments" and "not JSON" in bad["message"]
    assert json.loads(box.run("order_status", "[1]"))["reason"] == "bad_arguments"


async def test_llm_stopped_before_speaking_says_nothing(server: ScriptedLlmServer, agent: LlmAgent) -> None:
    stop, gate = asyncio.Event(), Gate()
    server.script(text_reply("Let me", gate, " think about that. ", "More."))
    state = DialogState(call_id="CAllm")
    answering = asyncio.create_task(turn(agent, state, LlmMemory(), "hmm, tell me", stop))
    stop.set()  # the caller spoke again while the stream waits at the gate
    gate.open()
    sentences, done = await answering
    assert sentences == [] and done.reply.sentences == [] and done.reply.intent == "interrupted"
    assert done.fallback is None and state.last_sentences == []


async def test_llm_tolerates_server_quirks_in_tool_call_streams(
    server: ScriptedLlmServer, agent: LlmAgent, seed: Seed
) -> None:
    # a whole tool call in one delta, without an id, arguments as an object, finished as "stop" (some servers and
    # models do this), then a usage chunk with no choices, and no [DONE]
    product = seed.products[0]
    call = {
        "index": 0,
        "type": "function",
        "function": {"name": "check_availability", "arguments": {"product": product.name}},
    }
    usage = {"id": "x", "object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 9}}
    server.script(
        Reply(events=[Raw(b": keep-alive\n\n"), chunk({"tool_calls": [call]}), chunk({}, "stop"), usage], done=False),
        text_reply("It's in stock."),
    )
    sentences, done = await turn(agent, DialogState(call_id="CAllm"), LlmMemory(), f"any {product.name} left")
    assert sentences == ["It's in stock."] and done.fallback is None
    second = server.requests[1]["messages"]
    assert [m["tool_call_id"] for m in second if m["role"] == "tool"] == ["call_0"]
    assert tool_results(server.requests[1])["call_0"]["product"] == product.name
