"""The gateway's intake on a MemoryBus: busy lines put a call on hold with TwiML Twilio can run, pressing 1 saves a
call-back request that ``GET /callbacks`` shows, a held call connects when a line frees up (with its media token),
waits at most ``ADMISSION_MAX_WAIT_S``, leaves the line when it hangs up; a number over its rate limit is refused;
a media ``start`` without its call's token closes only that socket; production needs ``API_TOKEN``."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
import uvicorn
import websockets
from fastapi import FastAPI

from voxcart.common import events as ev
from voxcart.common.bus import BusError, MemoryBus, keys
from voxcart.common.capacity import CapacityReport, publish_report
from voxcart.common.settings import SettingsError, load_settings
from voxcart.gateway.app import create_app
from voxcart.gateway.media_token import MEDIA_TOKEN_REFUSED
from voxcart.gateway.records_sqlite import SqliteRecordStore
from voxcart.gateway.twilio.signature import compute_signature

TOKEN = "twilio-secret"
PUBLIC = "https://gw.example.com"
API = {"Authorization": "Bearer api-secret"}
ENV = {
    "TWILIO_AUTH_TOKEN": TOKEN,
    "PUBLIC_URL": PUBLIC,
    "API_TOKEN": "api-secret",
    "ADMISSION_HOLD_S": "2",
    "ADMISSION_MAX_WAIT_S": "30",
    "RATE_LIMIT_CALLS": "3",
}
CALLER = "+15555550123"


def form(sid: str, number: str = CALLER, **extra: str) -> dict[str, str]:
    return {"CallSid": sid, "From": number, "To": "+15555550999", "AccountSid": "AC" + "1" * 32, **extra}


@dataclass
class Gateway:
    client: httpx.AsyncClient
    bus: MemoryBus
    app: FastAPI

    async def post(self, url: str, fields: Mapping[str, str], signed: bool = True) -> httpx.Response:
        """POST ``fields`` to the public ``url`` (a path, or a full URL from TwiML), signed as Twilio signs it."""
        full = url if url.startswith("http") else PUBLIC + url
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if signed:
            headers["X-Twilio-Signature"] = compute_signature(TOKEN, full, dict(fields))
        parts = urlsplit(full)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return await self.client.post(path, content=urlencode(list(fields.items())), headers=headers)

    async def full(self, max_calls: int = 1, busy: int = 1) -> None:
        """Workers with room for ``max_calls`` each, and ``busy`` calls in progress."""
        for svc in ("stt", "brain", "tts"):
            await publish_report(self.bus, svc, f"{svc}-0", CapacityReport(busy, max_calls, False, int(ev.now_ms())))
        await self.bus.zadd(keys.ACTIVE_CALLS, {f"CAbusy{i}": ev.now_ms() for i in range(busy)})

    async def started(self) -> list[str]:
        return [e.call_sid for e in map(lambda x: ev.decode(x.data), await self.bus.range(keys.LIFECYCLE))
                if isinstance(e, ev.CallStarted)]  # fmt: skip


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    bus = MemoryBus()
    app = create_app(load_settings(ENV, env_file=None), bus=bus, records=SqliteRecordStore(":memory:"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Gateway(client, bus, app)


def twiml(response: httpx.Response) -> ET.Element:
    assert response.status_code == 200, response.text
    return ET.fromstring(response.text)


def said(root: ET.Element) -> str:
    return " ".join(e.text or "" for e in root.iter("Say"))


async def test_gw_intake_busy_lines_hold_with_a_callback_offer(gw: Gateway) -> None:
    await gw.full()
    root = twiml(await gw.post("/twilio/voice", form("CAheld1")))
    assert [v.tag for v in root] == ["Gather", "Redirect"]
    gather, redirect = root[0], root[1]
    assert gather.attrib["numDigits"] == "1" and gather.attrib["input"] == "dtmf" and gather.attrib["timeout"] == "2"
    assert gather.attrib["action"].startswith(PUBLIC + "/twilio/hold?n=1&t=")
    assert redirect.text == gather.attrib["action"]
    assert "lines are busy" in said(root) and "press 1" in said(root) and "next in line" in said(root)
    assert await gw.started() == []  # the workers know nothing of a call on hold
    second = twiml(await gw.post("/twilio/voice", form("CAheld2", "+15555550124")))
    assert "one caller ahead of you" in said(second)
    health = (await gw.client.get("/healthz")).json()
    assert health["queued"] == 2
    assert health["capacity"]["brain"] == {"replicas": 1, "owned": 1, "max_calls": 1}


async def test_gw_intake_withheld_number_holds_without_callback_offer(gw: Gateway) -> None:
    await gw.full()
    root = twiml(await gw.post("/twilio/voice", form("CAanon", "anonymous")))
    assert [v.tag for v in root] == ["Say", "Pause", "Redirect"]
    assert root[1].attrib["length"] == "2" and "press 1" not in said(root).lower()


async def test_gw_intake_held_call_connects_with_its_token_when_a_line_frees(gw: Gateway) -> None:
    await gw.full()
    hold_url = twiml(await gw.post("/twilio/voice", form("CAwait"))).find("Redirect").text  # type: ignore[union-attr]
    assert hold_url is not None
    again = twiml(await gw.post(hold_url, form("CAwait")))
    assert again.find("Redirect").text.startswith(PUBLIC + "/twilio/hold?n=2&")  # type: ignore[union-attr]
    assert said(again) == ""  # no chatter at every round
    await gw.bus.zrem(keys.ACTIVE_CALLS, ["CAbusy0"])  # the call in progress ends
    connected = twiml(await gw.post(again.find("Redirect").text or "", form("CAwait")))  # type: ignore[union-attr]
    stream = connected.find("Connect/Stream")
    assert stream is not None
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    assert params["call_sid"] == "CAwait" and len(params["token"]) == 32
    assert await gw.started() == ["CAwait"]


async def test_gw_intake_press_1_saves_a_callback_request(gw: Gateway) -> None:
    await gw.full()
    action = twiml(await gw.post("/twilio/voice", form("CAcb"))).find("Gather").attrib["action"]  # type: ignore[union-attr]
    root = twiml(await gw.post(action, form("CAcb", Digits="1")))
    assert [v.tag for v in root] == ["Say", "Hangup"]
    assert "call you back at the number ending in 0 1 2 3" in said(root)
    assert (await gw.client.get("/healthz")).json()["queued"] == 0
    callbacks = (await gw.client.get("/callbacks", headers=API)).json()["callbacks"]
    assert [(c["call_sid"], c["from"]) for c in callbacks] == [("CAcb", CALLER)]  # the full number: to call it
    assert callbacks[0]["waited_s"] >= 0
    listed = (await gw.client.get("/calls", params={"status": "callback-requested"}, headers=API)).json()["calls"]
    assert [(c["call_sid"], c["from"]) for c in listed] == [("CAcb", "+*********23")]  # masked there
    assert (await gw.client.get("/callbacks")).status_code == 401
    assert await gw.started() == []


async def test_gw_intake_other_keys_keep_holding(gw: Gateway) -> None:
    await gw.full()
    action = twiml(await gw.post("/twilio/voice", form("CAk"))).find("Gather").attrib["action"]  # type: ignore[union-attr]
    root = twiml(await gw.post(action, form("CAk", Digits="5")))
    assert [v.tag for v in root] == ["Gather", "Redirect"]
    assert (await gw.client.get("/callbacks", headers=API)).json()["callbacks"] == []


async def test_gw_intake_longest_wait_offers_callback_then_says_goodbye(gw: Gateway) -> None:
    await gw.full()
    hold_url = twiml(await gw.post("/twilio/voice", form("CAlong"))).find("Redirect").text or ""  # type: ignore[union-attr]
    await gw.bus.zadd(keys.ADMISSION_QUEUE, {"CAlong": ev.now_ms() - 31_000})  # it has waited 31 s
    root = twiml(await gw.post(hold_url, form("CAlong")))
    assert [v.tag for v in root] == ["Gather", "Say", "Hangup"]
    assert "still busy" in said(root) and "Press 1" in said(root) and "Goodbye" in said(root)
    assert (await gw.client.get("/healthz")).json()["queued"] == 0
    record = (await gw.client.get("/calls/CAlong", headers=API)).json()
    assert record["outcome"] == "failed" and "ended after" in record["end_reason"]
    late = twiml(await gw.post(root[0].attrib["action"], form("CAlong", Digits="1")))  # pressed 1 at the last offer
    assert "call you back" in said(late)
    assert (await gw.client.get("/calls/CAlong", headers=API)).json()["status"] == "callback-requested"


async def test_gw_intake_longest_wait_withheld_says_goodbye(gw: Gateway) -> None:
    await gw.full()
    hold_url = twiml(await gw.post("/twilio/voice", form("CAanon2", ""))).find("Redirect").text or ""  # type: ignore[union-attr]
    await gw.bus.zadd(keys.ADMISSION_QUEUE, {"CAanon2": ev.now_ms() - 31_000})
    root = twiml(await gw.post(hold_url, form("CAanon2", "")))
    assert [v.tag for v in root] == ["Say", "Hangup"] and "try again" in said(root)


async def test_gw_intake_hangup_on_hold_leaves_the_line(gw: Gateway) -> None:
    await gw.full()
    await gw.post("/twilio/voice", form("CAbye"))
    await gw.post("/twilio/voice", form("CAafter", "+15555550124"))
    response = await gw.post("/twilio/status", form("CAbye", CallStatus="completed", CallDuration="9"))
    assert response.status_code == 204
    record = (await gw.client.get("/calls/CAbye", headers=API)).json()
    assert record["outcome"] == "abandoned" and record["end_reason"] == "hung up on hold after 9 s"
    assert (await gw.client.get("/healthz")).json()["queued"] == 1
    await gw.bus.zrem(keys.ACTIVE_CALLS, ["CAbusy0"])
    hold = "/twilio/hold?n=1&t=1"
    assert twiml(await gw.post(hold, form("CAafter", "+15555550124"))).find("Connect") is not None


async def test_gw_intake_hold_needs_a_signature_and_a_call_sid(gw: Gateway) -> None:
    assert (await gw.post("/twilio/hold?n=1", form("CAx"), signed=False)).status_code == 403
    assert (await gw.post("/twilio/hold?n=1", form("nope"))).status_code == 400


async def test_gw_intake_rate_limit_refuses_politely(gw: Gateway) -> None:
    for i in range(3):
        assert twiml(await gw.post("/twilio/voice", form(f"CArl{i}"))).find("Connect") is not None
    retry = twiml(await gw.post("/twilio/voice", form("CArl2")))  # a retried webhook is not a new call
    assert retry.find("Connect") is not None
    refused = twiml(await gw.post("/twilio/voice", form("CArl3")))
    assert [v.tag for v in refused] == ["Say", "Hangup"] and "several calls from your number" in said(refused)
    assert "CArl3" not in await gw.started()
    other = twiml(await gw.post("/twilio/voice", form("CArl4", "+15555550100")))
    assert other.find("Connect") is not None


async def test_gw_intake_media_start_without_its_token_closes_only_that_socket() -> None:
    """Under uvicorn with real websockets: starts naming a live call without its token (none, another call's) are
    closed with 1008 and counted; the live call's socket and session go on."""
    settings = load_settings({"MEDIA_TOKEN_SECRET": "unit-test-secret"}, env_file=None)
    app = create_app(settings, bus=MemoryBus(), records=SqliteRecordStore(":memory:"))
    tokens, registry = app.state.media_tokens, app.state.registry
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/twilio/media"
    stream_sid, good_sid = "MZ" + "1" * 32, "CA" + "a" * 32

    def start(params: dict[str, str]) -> str:
        body = {"streamSid": stream_sid, "accountSid": "AC" + "1" * 32, "callSid": good_sid, "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}  # fmt: skip
        return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": body})

    connected = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    missing, mismatch = MEDIA_TOKEN_REFUSED.labels("missing"), MEDIA_TOKEN_REFUSED.labels("mismatch")
    before = (missing._value.get(), mismatch._value.get())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        async with websockets.connect(url) as good:
            await good.send(connected)
            await good.send(start({"call_sid": good_sid, "token": tokens.issue(good_sid)}))
            async with asyncio.timeout(5):
                while good_sid not in registry.sessions:
                    await asyncio.sleep(0.02)
            session = registry.sessions[good_sid]
            for params in ({"call_sid": good_sid}, {"call_sid": good_sid, "token": tokens.issue("CA" + "b" * 32)}):
                async with websockets.connect(url) as bad:
                    await bad.send(connected)
                    await bad.send(start(params))  # someone else's live call, without its token
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await asyncio.wait_for(bad.recv(), 5)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
                    assert "media token" in closed.value.rcvd.reason
            assert registry.sessions.get(good_sid) is session  # the real call goes on, untouched
            pong = await good.ping()
            async with asyncio.timeout(2):
                await pong
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await asyncio.gather(serving, return_exceptions=True)
        sock.close()
    assert (missing._value.get(), mismatch._value.get()) == (before[0] + 1, before[1] + 1)


def test_gw_intake_production_needs_api_token() -> None:
    settings = load_settings({"ENV": "production", "TWILIO_AUTH_TOKEN": "t0k"}, env_file=None)
    with pytest.raises(SettingsError, match="API_TOKEN: required when ENV=production"):
        create_app(settings, bus=MemoryBus(), records=SqliteRecordStore(":memory:"))
    env = {**os.environ, "ENV": "production", "TWILIO_AUTH_TOKEN": "t0k", "API_TOKEN": "", "PORT": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "voxcart.gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "voxcart gateway: bad setting: API_TOKEN: required when ENV=production" in proc.stderr


async def test_gw_intake_redis_failure_apologizes_or_keeps_holding(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = gw.app.state.admission.store

    async def down(*args: object, **kwargs: object) -> None:
        raise BusError("redis: connection refused")

    monkeypatch.setattr(store, "admit", down)
    new = twiml(await gw.post("/twilio/voice", form("CAdown")))
    assert "cannot take your call right now" in said(new) and new.find("Connect") is None
    recent = f"/twilio/hold?n=2&t={int(ev.now_ms()) - 5000}"
    held = twiml(await gw.post(recent, form("CAdown")))  # a Redis restart takes seconds: hold on
    assert [v.tag for v in held] == ["Gather", "Redirect"] and "n=3&" in (held[1].text or "")
    old = f"/twilio/hold?n=20&t={int(ev.now_ms()) - 40_000}"
    assert "cannot take your call right now" in said(twiml(await gw.post(old, form("CAdown"))))
    assert await gw.started() == []
