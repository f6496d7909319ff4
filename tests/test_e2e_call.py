"""Whole calls through the real Twilio protocol against the real stack (separate processes, real Redis,
real pocketsphinx, espeak-ng and the piper caller voice)."""

from __future__ import annotations

import asyncio
import signal
from urllib.parse import urlencode

import httpx
import pytest
import redis.asyncio as aioredis

from voxcart.brain.store import demo_seed_path
from voxcart.cli.calling import DEV_AUTH_TOKEN, build_items
from voxcart.cli.simulator import CallResult, SimulatorConfig, simulate_call
from voxcart.cli.stack import Stack
from voxcart.common import events as ev
from voxcart.common.bus import keys
from voxcart.common.seed import load_seed
from voxcart.gateway.twilio.signature import compute_signature

pytestmark = pytest.mark.e2e

SEED = load_seed(demo_seed_path())
ORDER = next(o for o in SEED.orders if o.number == "10023")
OWNER = next(c for c in SEED.customers if c.id == ORDER.customer)


def agent_texts(result: CallResult) -> list[str]:
    assert result.record is not None, "the call record was not fetched"
    return [t["text"] for t in result.record["turns"] if t["speaker"] == "agent"]


async def call(stack: Stack, lines: list[str], from_number: str) -> CallResult:
    items = await asyncio.to_thread(build_items, lines)
    config = SimulatorConfig(gateway_url=stack.gateway_url, auth_token=DEV_AUTH_TOKEN, from_number=from_number)
    return await simulate_call(config, items)


async def test_customer_hears_their_orders_real_status(stack: Stack) -> None:
    assert ORDER.status == "shipped" and OWNER.phone
    result = await call(stack, ["where is my order", "yes", "goodbye"], OWNER.phone)
    texts = agent_texts(result)
    answer = " ".join(texts[1:])
    assert "shipped" in answer and ORDER.carrier in answer, texts
    assert " ".join(ORDER.number) in answer, texts  # the number read back digit by digit
    assert all(t.latency_s is not None for t in result.turns), "every turn got a spoken reply"
    assert result.ended_by == "agent", "goodbye ends the call once the goodbye has played"
    record = result.record
    assert record is not None and record["status"] == "completed"
    assert [t["speaker"] for t in record["turns"]][:3] == ["agent", "caller", "agent"]


async def test_unknown_caller_is_not_told_the_order(stack: Stack) -> None:
    stranger = "+15550001234"
    assert stranger not in {c.phone for c in SEED.customers}
    result = await call(stack, ["where is my order", f"#{ORDER.number}#"], stranger)
    said = " ".join(agent_texts(result)).lower()
    for secret in ("shipped", ORDER.carrier.lower(), " ".join(ORDER.tracking.lower())[:9], "hoodie"):
        assert secret not in said, f"{secret!r} leaked to an unverified caller: {said}"
    assert "zip" in said or "email" in said, said


async def test_webhook_signature_is_required_and_replays_start_the_call_once(stack: Stack) -> None:
    sid = "CA" + "e2e0" * 8
    params = {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": "+15550002222", "To": "+15550003333",
              "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01"}  # fmt: skip
    url = f"{stack.gateway_url}/twilio/voice"
    body = urlencode(params)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient() as client:
        bad = await client.post(url, content=body, headers={**headers, "X-Twilio-Signature": "AAAA"})
        unsigned = await client.post(url, content=body, headers=headers)
        good = {**headers, "X-Twilio-Signature": compute_signature(DEV_AUTH_TOKEN, url, params)}
        first = await client.post(url, content=body, headers=good)
        again = await client.post(url, content=body, headers=good)
    assert bad.status_code == 403 and unsigned.status_code == 403
    assert first.status_code == 200 and "<Connect" in first.text
    assert again.status_code == 200 and again.text == first.text
    r = aioredis.Redis.from_url(stack.redis_url)
    try:
        started = [
            e for _, fields in await r.xrange(keys.LIFECYCLE)
            if isinstance(e := ev.decode(fields[b"d"]), ev.CallStarted) and e.call_sid == sid
        ]  # fmt: skip
        assert len(started) == 1
        await r.zrem(keys.ACTIVE_CALLS, sid)  # no media socket will follow: end it
    finally:
        await r.aclose()


async def test_killed_stt_owner_is_taken_over_mid_utterance(stack: Stack) -> None:
    """SIGKILL the stt replica that owns a live call while the caller is speaking; another replica takes the call
    over from its checkpoint and the caller still gets the answer."""
    r = aioredis.Redis.from_url(stack.redis_url)
    task = asyncio.create_task(call(stack, ["is the blue hoodie in stock in medium", "goodbye"], OWNER.phone or ""))
    try:
        owner, sid = "", ""
        async with asyncio.timeout(40):
            while not sid:  # wait for this call's caller to start speaking
                for member, _ in await r.zrange(keys.ACTIVE_CALLS, 0, -1, withscores=True):
                    candidate = member.decode()
                    entries = await r.xrange(keys.events(candidate))
                    if any(isinstance(ev.decode(f[b"d"]), ev.SpeechStarted) for _, f in entries):
                        sid = candidate
                await asyncio.sleep(0.05)
            lease = await r.get(keys.lease("stt", sid))
            assert lease is not None
            owner = lease.decode().split(":")[0]
        index = int(owner.split("-")[1])
        stack.kill("stt", index, signal.SIGKILL)
        result = await task
    finally:
        if not task.done():
            task.cancel()
    try:
        new_owner = (await r.get(keys.lease("stt", sid)) or b"").decode()
    finally:
        await r.aclose()
    stack.spawn("stt")  # restore capacity for other tests
    texts = agent_texts(result)
    assert any("hoodie" in t.lower() for t in texts[1:]), texts
    assert result.turns[1].latency_s is not None, "the interrupted utterance was still answered"
    assert new_owner == "" or not new_owner.startswith(owner + ":"), "another replica owns the call now"
