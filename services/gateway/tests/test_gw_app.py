"""The gateway's HTTP surface on a MemoryBus: signed webhooks, TwiML, call.started once, records, health."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import pytest

from voxcart.common import events as ev
from voxcart.common.bus import MemoryBus, Output, keys
from voxcart.common.settings import load_settings
from voxcart.gateway.app import create_app
from voxcart.gateway.media_token import MediaTokens
from voxcart.gateway.records_sqlite import SqliteRecordStore
from voxcart.gateway.twilio.signature import compute_signature

TOKEN = "twilio-secret"
PUBLIC = "https://gw.example.com"
SID = "CA" + "0123456789abcdef" * 2
FORM = {"CallSid": SID, "From": "+15555550123", "To": "+15555550999", "AccountSid": "AC" + "1" * 32}


@dataclass
class Gateway:
    client: httpx.AsyncClient
    bus: MemoryBus

    async def post_signed(self, path: str, form: Mapping[str, str], token: str = TOKEN) -> httpx.Response:
        signature = compute_signature(token, PUBLIC + path, dict(form))
        return await self.post(path, form, {"X-Twilio-Signature": signature})

    async def post(
        self, path: str, form: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        body = urlencode(list(form.items()))
        all_headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        return await self.client.post(path, content=body, headers=all_headers)


async def _gateway(env: dict[str, str]) -> AsyncIterator[Gateway]:
    settings = load_settings(env, env_file=None)
    bus = MemoryBus()
    app = create_app(settings, bus=bus, records=SqliteRecordStore(":memory:"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Gateway(client, bus)


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    async for g in _gateway({"TWILIO_AUTH_TOKEN": TOKEN, "PUBLIC_URL": PUBLIC, "API_TOKEN": "api-secret"}):
        yield g


@pytest.fixture
async def open_gw() -> AsyncIterator[Gateway]:
    """No auth token, no API token, no PUBLIC_URL (development)."""
    async for g in _gateway({}):
        yield g


AUTH = {"Authorization": "Bearer api-secret"}


async def _lifecycle(bus: MemoryBus) -> list[ev.Event]:
    return [ev.decode(e.data) for e in await bus.range(keys.LIFECYCLE)]


async def test_gw_app_voice_missing_signature_403(gw: Gateway) -> None:
    response = await gw.post("/twilio/voice", FORM)
    assert response.status_code == 403
    assert await _lifecycle(gw.bus) == []
    assert await gw.bus.hgetall(keys.meta(SID)) == {}


async def test_gw_app_voice_bad_signature_403(gw: Gateway) -> None:
    wrong_token = await gw.post_signed("/twilio/voice", FORM, token="not-the-token")
    assert wrong_token.status_code == 403
    # signed for other params than those sent
    signature = compute_signature(TOKEN, PUBLIC + "/twilio/voice", {**FORM, "From": "+15555550100"})
    tampered = await gw.post("/twilio/voice", FORM, {"X-Twilio-Signature": signature})
    assert tampered.status_code == 403
    # signed for another host than PUBLIC_URL
    signature = compute_signature(TOKEN, "https://evil.example.com/twilio/voice", FORM)
    other_host = await gw.post("/twilio/voice", FORM, {"X-Twilio-Signature": signature})
    assert other_host.status_code == 403
    assert await _lifecycle(gw.bus) == []


async def test_gw_app_voice_signed_returns_connect_stream(gw: Gateway) -> None:
    response = await gw.post_signed("/twilio/voice", FORM)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.text)
    connect = root.find("Connect")
    assert connect is not None
    assert connect.attrib["action"] == PUBLIC + "/twilio/after-stream"
    stream = connect.find("Stream")
    assert stream is not None
    assert stream.attrib["url"] == "wss://gw.example.com/twilio/media"
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    assert params == {
        "call_sid": SID,
        "token": MediaTokens.from_settings(load_settings({"TWILIO_AUTH_TOKEN": TOKEN}, env_file=None)).issue(SID),
    }


async def test_gw_app_voice_retry_is_idempotent(gw: Gateway) -> None:
    first = await gw.post_signed("/twilio/voice", FORM)
    second = await gw.post_signed("/twilio/voice", FORM)
    assert first.status_code == second.status_code == 200
    assert first.text == second.text
    events = await _lifecycle(gw.bus)
    started = [e for e in events if isinstance(e, ev.CallStarted)]
    assert len(started) == 1
    assert started[0].call_sid == SID
    assert started[0].from_number == FORM["From"]
    assert started[0].to_number == FORM["To"]
    active = await gw.bus.zrange_by_score(keys.ACTIVE_CALLS, float("-inf"), float("inf"))
    assert [sid for sid, _ in active] == [SID]


@pytest.mark.parametrize("sid", ["", "XX123", "CA12-34", "CA" + "a" * 70, "CA"])
async def test_gw_app_voice_malformed_call_sid_400(gw: Gateway, sid: str) -> None:
    response = await gw.post_signed("/twilio/voice", {**FORM, "CallSid": sid})
    assert response.status_code == 400, (sid, response.text)
    assert "CallSid" in response.json()["detail"]
    assert await _lifecycle(gw.bus) == []


async def test_gw_app_voice_unsigned_ok_in_development(open_gw: Gateway) -> None:
    response = await open_gw.post("/twilio/voice", FORM, {"Host": "localhost:8080"})
    assert response.status_code == 200
    stream = ET.fromstring(response.text).find("Connect/Stream")
    assert stream is not None
    assert stream.attrib["url"] == "ws://localhost:8080/twilio/media"


async def test_gw_app_calls_require_bearer(gw: Gateway) -> None:
    assert (await gw.client.get("/calls")).status_code == 401
    wrong = await gw.client.get("/calls", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert (await gw.client.get(f"/calls/{SID}")).status_code == 401
    ok = await gw.client.get("/calls", headers=AUTH)
    assert ok.status_code == 200
    assert ok.json() == {"calls": [], "next_cursor": None}


async def test_gw_app_call_record_unknown_then_after_webhook(gw: Gateway) -> None:
    unknown = await gw.client.get(f"/calls/{SID}", headers=AUTH)
    assert unknown.status_code == 404
    assert (await gw.post_signed("/twilio/voice", FORM)).status_code == 200
    record = (await gw.client.get(f"/calls/{SID}", headers=AUTH)).json()
    assert record["call_sid"] == SID
    assert record["status"] == "ringing"
    assert record["to"] == FORM["To"]
    assert record["from"] != FORM["From"] and record["from"].endswith("23")  # masked
    assert record["started_ms"] is not None
    assert record["turns"] == []
    listed = (await gw.client.get("/calls", headers=AUTH)).json()["calls"]
    assert [c["call_sid"] for c in listed] == [SID]
    assert (await gw.client.get("/calls?status=completed", headers=AUTH)).json()["calls"] == []


async def test_gw_app_call_record_includes_turns(gw: Gateway) -> None:
    await gw.post_signed("/twilio/voice", FORM)
    turns = [
        ev.TurnRecord(call_sid=SID, speaker="agent", text="Hello.", turn_no=1, intent="greeting"),
        ev.TurnRecord(call_sid=SID, speaker="caller", text="where is my order", turn_no=2, confidence=0.8),
    ]
    await gw.bus.publish([Output(keys.turns(SID), ev.encode(t)) for t in turns])
    await gw.bus.hset(keys.meta(SID), {"latency:1": 0.9})
    record = (await gw.client.get(f"/calls/{SID}", headers=AUTH)).json()
    assert [(t["speaker"], t["text"], t["turn_no"]) for t in record["turns"]] == [
        ("agent", "Hello.", 1),
        ("caller", "where is my order", 2),
    ]
    assert record["turns"][0]["latency_s"] == pytest.approx(0.9)
    assert record["turns"][1]["confidence"] == pytest.approx(0.8)
    assert record["latency"]["turns"] == 1


async def test_gw_app_healthz_without_workers(open_gw: Gateway) -> None:
    response = await open_gw.client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["workers_ready"] is False
    assert body["workers"] == {"stt": 0, "brain": 0, "tts": 0}


async def test_gw_app_healthz_with_fresh_heartbeats(open_gw: Gateway) -> None:
    now = ev.now_ms()
    for svc in ("stt", "brain"):
        await open_gw.bus.zadd(keys.workers(svc), {f"{svc}-1": now})
    await open_gw.bus.zadd(keys.workers("tts"), {"tts-1": now - 60_000})  # stale
    body = (await open_gw.client.get("/healthz")).json()
    assert body["workers"] == {"stt": 1, "brain": 1, "tts": 0}
    assert body["workers_ready"] is False
    await open_gw.bus.zadd(keys.workers("tts"), {"tts-2": now})
    assert (await open_gw.client.get("/healthz")).json()["workers_ready"] is True


async def test_gw_app_after_stream_hangup_or_dial(gw: Gateway) -> None:
    form = {"CallSid": SID, "AccountSid": FORM["AccountSid"]}
    unsigned = await gw.post("/twilio/after-stream", form)
    assert unsigned.status_code == 403
    hangup = await gw.post_signed("/twilio/after-stream", form)
    assert hangup.status_code == 200
    root = ET.fromstring(hangup.text)
    assert [child.tag for child in root] == ["Hangup"]
    await gw.bus.hset(keys.meta(SID), {"transfer_to": "+15555550100"})
    dial = await gw.post_signed("/twilio/after-stream", form)
    root = ET.fromstring(dial.text)
    assert [child.tag for child in root] == ["Dial"]
    assert root.find("Dial").text == "+15555550100"  # type: ignore[union-attr]
