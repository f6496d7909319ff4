"""Admission control at the gateway, end to end: a stack with one replica of each worker, each at most one call
(``MAX_CALLS=1``), and simulated callers through the real Twilio protocol.

While a first call is in progress:
- a second call is put on hold (it hears the busy message through TwiML), follows the hold ``<Redirect>``s like
  Twilio, and is connected to the agent (greeting heard) once the first call ends;
- a third caller presses 1 on hold: the call-back request is stored and ``GET /callbacks`` lists it;
- media sockets that name the live call without its media token (none, or a forged one) are closed with 1008
  while the live call goes on undisturbed;
- a number over its rate limit is refused politely (and its held calls leave the line when Twilio reports them
  ended).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from urllib.parse import urlencode

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from voxcart.cli.calling import DEV_AUTH_TOKEN
from voxcart.cli.simulator import CallResult, Pause, SimulatorConfig, simulate_call
from voxcart.cli.stack import Stack
from voxcart.common.bus import keys
from voxcart.gateway.twilio.signature import compute_signature

pytestmark = pytest.mark.e2e

ENV = {
    "MAX_CALLS": "1",
    "ADMISSION_HOLD_S": "1",
    "RATE_LIMIT_CALLS": "2",
    "RATE_LIMIT_WINDOW_S": "300",
}
FIRST, SECOND, THIRD, BUSY_DIALER = "+15550006001", "+15550006002", "+15550006003", "+15550006004"


@pytest.fixture(scope="module")
def busy_stack(stack_runner: Callable[..., AbstractContextManager[Stack]]) -> Iterator[Stack]:
    with stack_runner("admission", {"stt": 1, "brain": 1, "tts": 1}, ENV) as running:
        yield running


def config(stack: Stack, number: str, **extra: object) -> SimulatorConfig:
    return SimulatorConfig(
        gateway_url=stack.gateway_url, auth_token=DEV_AUTH_TOKEN, from_number=number, greeting_timeout_s=8, **extra
    )  # type: ignore[arg-type]


async def metrics(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (await client.get("/metrics")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def webhook(client: httpx.AsyncClient, stack: Stack, path: str, fields: dict[str, str]) -> httpx.Response:
    url = f"{stack.gateway_url}{path}"
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": compute_signature(DEV_AUTH_TOKEN, url, fields),
    }
    return await client.post(url, content=urlencode(fields), headers=headers)


async def forged_start(stack: Stack, call_sid: str, params: dict[str, str]) -> int | None:
    """Open a correctly signed media socket and send a ``start`` naming ``call_sid`` with ``params``; the close code
    the gateway answers with."""
    url = stack.gateway_url.replace("http://", "ws://") + "/twilio/media"
    headers = {"X-Twilio-Signature": compute_signature(DEV_AUTH_TOKEN, url, {})}
    stream_sid = "MZ" + "f" * 32
    start = {"streamSid": stream_sid, "accountSid": "AC" + "0" * 32, "callSid": call_sid, "tracks": ["inbound"],
             "customParameters": params,
             "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}  # fmt: skip
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": start}))
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None
    raise AssertionError("the gateway sent a message to a socket it should have closed")


async def until(condition: Callable[[], object], timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():  # type: ignore[misc]
            await asyncio.sleep(0.1)


def greeted(result: CallResult) -> bool:
    return bool(result.turns) and result.turns[0].agent_start_s is not None


async def test_busy_lines_hold_callback_token_and_rate_limit(busy_stack: Stack) -> None:
    stack = busy_stack
    r = aioredis.Redis.from_url(stack.redis_url)
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as client:

        async def capacity_known() -> bool:
            capacity = (await client.get("/healthz")).json()["capacity"]
            return all(capacity.get(svc) and capacity[svc]["max_calls"] == 1 for svc in ("stt", "brain", "tts"))

        await until(capacity_known, 15, "worker capacity reports")
        before = await metrics(client)

        # the first call takes the only line
        first = asyncio.create_task(simulate_call(config(stack, FIRST), [Pause(2.0)]))

        async def first_live() -> bool:
            return bool((await client.get("/healthz")).json()["calls"])

        await until(first_live, 20, "the first call's media stream")
        [(first_sid, _)] = await r.zrange(keys.ACTIVE_CALLS, 0, -1, withscores=True)
        first_sid = first_sid.decode()

        # the second waits on hold; the third asks for a call back
        second = asyncio.create_task(simulate_call(config(stack, SECOND), []))
        third = await simulate_call(config(stack, THIRD, hold_keys="1"), [])
        assert any("lines are busy" in s for s in third.said), third.said
        assert any("call you back at the number ending in 6 0 0 3" in s for s in third.said), third.said
        assert third.stream_sids == [] and third.ended_by == "no_stream"

        # media sockets naming the live call without its token are refused; the call goes on
        assert await forged_start(stack, first_sid, {"call_sid": first_sid}) == 1008
        assert await forged_start(stack, first_sid, {"call_sid": first_sid, "token": "0" * 32}) == 1008
        assert not first.done() and (await client.get("/healthz")).json()["calls"] == 1

        # a busy dialer: two calls go on hold, the third is refused
        dialer = [{"CallSid": f"CA{'d' * 31}{i}", "AccountSid": "AC" + "0" * 32, "From": BUSY_DIALER,
                   "To": "+15550100002", "CallStatus": "ringing"} for i in range(3)]  # fmt: skip
        answers = [await webhook(client, stack, "/twilio/voice", fields) for fields in dialer]
        assert all(a.status_code == 200 for a in answers)
        assert "<Gather" in answers[0].text and "<Gather" in answers[1].text
        assert "several calls from your number" in answers[2].text and "<Hangup/>" in answers[2].text
        for fields in dialer[:2]:  # Twilio reports the held calls ended: they leave the line
            done = {**fields, "CallStatus": "completed", "CallDuration": "2", "SequenceNumber": "0"}
            assert (await webhook(client, stack, "/twilio/status", done)).status_code == 204

        first_result = await first
        assert greeted(first_result) and first_result.errors == [], first_result.errors
        assert len(first_result.stream_sids) == 1  # never disturbed, never reconnected

        # the first call ended: the second is admitted and greeted
        second_result = await asyncio.wait_for(second, 60)
        assert any("lines are busy" in s for s in second_result.said), second_result.said
        assert second_result.holds >= 1 and second_result.held_s > 1.0
        assert len(second_result.stream_sids) == 1 and greeted(second_result), second_result.turns
        assert second_result.errors == [], second_result.errors

        callbacks = (await client.get("/callbacks")).json()["callbacks"]
        assert [(c["call_sid"], c["from"]) for c in callbacks] == [(third.call_sid, THIRD)]
        abandoned = (await client.get("/calls", params={"outcome": "abandoned", "from": BUSY_DIALER})).json()
        assert sorted(c["call_sid"] for c in abandoned["calls"]) == sorted(f["CallSid"] for f in dialer[:2])

        after = await metrics(client)
        assert (await client.get("/healthz")).json()["queued"] == 0
    await r.aclose()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("voxcart_admission_total", outcome="admitted") >= 1
    assert delta("voxcart_admission_total", outcome="held") == 4  # second, third, two of the dialer's
    assert delta("voxcart_admission_total", outcome="admitted_after_hold") == 1
    assert delta("voxcart_admission_total", outcome="callback") == 1
    assert delta("voxcart_admission_total", outcome="abandoned") == 2
    assert delta("voxcart_media_token_refused_total", reason="missing") == 1
    assert delta("voxcart_media_token_refused_total", reason="mismatch") == 1
    assert delta("voxcart_rate_limit_total", outcome="refused", scope="number") == 1
    assert after[("voxcart_queued_calls", ())] == 0
