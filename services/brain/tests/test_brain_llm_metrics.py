"""``voxcart_provider_requests_total{provider="llm"}`` and ``voxcart_provider_fallbacks_total{svc="brain"}``
against the scripted OpenAI-compatible server (a real local HTTP server).

One request per completion, counted when it ends: a finished stream is ``ok`` (its first delta timed), HTTP 429
``rate_limited``, 401 ``auth``, a silent server ``timeout``, a stream the consumer stopped ``cancelled``; a turn
the rules dialog answered instead counts one fallback.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from voxcart.brain.dialog import Dialog, DialogState
from voxcart.brain.llm import Done, LlmAgent, LlmClient, LlmConfig, LlmMemory
from voxcart.brain.llm._client import LlmError, TextDelta
from voxcart.brain.llm.testing import Gate, Reply, ScriptedLlmServer, text_reply

LABELS = {"svc": "brain", "provider": "llm"}
RESULTS = ("ok", "error", "timeout", "rate_limited", "auth", "dropped", "cancelled")


def counts() -> dict[str, float]:
    return {
        r: REGISTRY.get_sample_value("voxcart_provider_requests_total", {**LABELS, "result": r}) or 0.0 for r in RESULTS
    }


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name, LABELS) or 0.0


def delta(before: dict[str, float]) -> dict[str, float]:
    return {r: n - before[r] for r, n in counts().items() if n != before[r]}


@pytest.fixture
async def server() -> AsyncIterator[ScriptedLlmServer]:
    async with ScriptedLlmServer() as srv:
        yield srv


@pytest.fixture
async def client(server: ScriptedLlmServer) -> AsyncIterator[LlmClient]:
    config = LlmConfig(base_url=server.base_url, model="scripted", connect_s=1.0, first_token_s=0.3, idle_s=0.3)
    made = LlmClient(config)
    yield made
    await made.aclose()


async def complete(client: LlmClient) -> str:
    async with contextlib.aclosing(client.stream([{"role": "user", "content": "hi"}])) as items:
        return "".join([item.text async for item in items if isinstance(item, TextDelta)])


async def test_a_finished_stream_is_ok_and_its_first_token_timed(server: ScriptedLlmServer, client: LlmClient) -> None:
    before, timed = counts(), sample("voxcart_provider_first_response_seconds_count")
    server.script(text_reply("Hello there. ", "How can I help?"))
    assert await complete(client) == "Hello there. How can I help?"
    assert delta(before) == {"ok": 1}
    assert sample("voxcart_provider_first_response_seconds_count") == timed + 1


@pytest.mark.parametrize(("status", "result"), [(429, "rate_limited"), (401, "auth"), (500, "error")])
async def test_a_refused_request_counts_by_status(
    server: ScriptedLlmServer, client: LlmClient, status: int, result: str
) -> None:
    before, timed = counts(), sample("voxcart_provider_first_response_seconds_count")
    server.script(Reply(status=status, body='{"error": {"message": "nope"}}'))
    with pytest.raises(LlmError, match=f"HTTP {status}"):
        await complete(client)
    assert delta(before) == {result: 1}
    assert sample("voxcart_provider_first_response_seconds_count") == timed


async def test_a_silent_server_is_a_timeout_and_a_stopped_stream_cancelled(
    server: ScriptedLlmServer, client: LlmClient
) -> None:
    before = counts()
    server.script(Reply(stall=True))
    with pytest.raises(LlmError, match="no answer within"):
        await complete(client)
    assert delta(before) == {"timeout": 1}

    before, gate = counts(), Gate()
    server.script(text_reply("First sentence. ", gate, "never read."))
    async with contextlib.aclosing(client.stream([{"role": "user", "content": "hi"}])) as items:
        async for item in items:
            assert isinstance(item, TextDelta)
            break  # the caller barged in
    gate.open()
    assert delta(before) == {"cancelled": 1}


async def test_a_turn_the_rules_answered_counts_one_llm_fallback(
    server: ScriptedLlmServer, client: LlmClient, dialog: Dialog
) -> None:
    agent = LlmAgent(client, dialog, turn_s=5.0)
    fallbacks = sample("voxcart_provider_fallbacks_total")
    server.script(Reply(status=429, body='{"error": {"message": "slow down"}}'))
    done: Done | None = None
    state = DialogState(call_id="CAllmmetrics")
    async for item in agent.answer(state, LlmMemory(), "what are your opening hours"):
        if isinstance(item, Done):
            done = item
    assert done is not None and done.fallback is not None and "HTTP 429" in done.fallback
    assert sample("voxcart_provider_fallbacks_total") == fallbacks + 1
