"""Twilio REST call updates: request shape via httpx.MockTransport, and one round trip over a real socket."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from voxcart.common import events as ev
from voxcart.common.bus import MemoryBus
from voxcart.common.bus.writer import Writer
from voxcart.gateway.session import CallSession
from voxcart.gateway.twilio.connection import MediaConnection
from voxcart.gateway.twilio.rest import CallResource, TwilioRest, TwilioRestError

AC = "AC" + "0123456789abcdef" * 2
CA = "CA" + "fedcba9876543210" * 2
TOKEN = "secret-token"


def recorder(status: int = 200, body: object | None = None) -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body if body is not None else {"sid": CA, "status": "completed"})

    return seen, httpx.MockTransport(handle)


async def test_gw_hangup_request_shape() -> None:
    seen, transport = recorder()
    async with TwilioRest(AC, TOKEN, transport=transport) as rest:
        call = await rest.hangup(CA)
    assert call == CallResource(sid=CA, status="completed")
    req = seen[0]
    assert req.method == "POST"
    assert str(req.url) == f"https://api.twilio.com/2010-04-01/Accounts/{AC}/Calls/{CA}.json"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(f"{AC}:{TOKEN}".encode()).decode()
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(req.content.decode()) == {"Status": ["completed"]}


async def test_gw_transfer_sends_dial_twiml_and_api_key_auth() -> None:
    seen, transport = recorder(body={"sid": CA, "status": "in-progress", "direction": "inbound", "extra": 1})
    key = "SK" + "1" * 32
    async with TwilioRest(AC, "key-secret", api_key_sid=key, base_url="http://fake:1/", transport=transport) as rest:
        call = await rest.transfer(CA, "+15552223333", caller_id="+15550001111", say_first="Connecting you & co.")
    assert call.status == "in-progress" and call.direction == "inbound"
    req = seen[0]
    assert str(req.url) == f"http://fake:1/2010-04-01/Accounts/{AC}/Calls/{CA}.json"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(f"{key}:key-secret".encode()).decode()
    twiml = parse_qs(req.content.decode())["Twiml"][0]
    root = ET.fromstring(twiml)
    assert [el.tag for el in root] == ["Say", "Dial"]
    assert root[0].text == "Connecting you & co." and root[1].text == "+15552223333"
    assert root[1].attrib["callerId"] == "+15550001111"


async def test_gw_errors_are_clear() -> None:
    _, transport = recorder(
        404,
        {
            "code": 20404,
            "message": "The requested resource was not found",
            "more_info": "https://www.twilio.com/docs/errors/20404",
            "status": 404,
        },
    )
    async with TwilioRest(AC, TOKEN, transport=transport) as rest:
        with pytest.raises(TwilioRestError, match=r"HTTP 404 \(Twilio error 20404\): The requested resource") as ei:
            await rest.hangup(CA)
        assert ei.value.status == 404 and ei.value.code == 20404 and ei.value.more_info.endswith("20404")
        with pytest.raises(ValueError, match="CallSid must be"):
            await rest.hangup("CA../../Accounts")
        with pytest.raises(ValueError, match="at most 4000"):
            await rest.redirect(CA, "<Response>" + "x" * 4000 + "</Response>")

    def boom(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="upstream down")

    async with TwilioRest(AC, TOKEN, transport=httpx.MockTransport(boom)) as rest:
        with pytest.raises(TwilioRestError, match="HTTP 503: upstream down") as ei:
            await rest.hangup(CA)
        assert ei.value.status == 503 and ei.value.code is None

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with TwilioRest(AC, TOKEN, transport=httpx.MockTransport(timeout)) as rest:
        with pytest.raises(TwilioRestError, match="timed out"):
            await rest.hangup(CA)
    for bad in ["AC123", "SID"]:
        with pytest.raises(ValueError, match="TWILIO_ACCOUNT_SID"):
            TwilioRest(bad, TOKEN)
    with pytest.raises(ValueError, match="TWILIO_AUTH_TOKEN is empty"):
        TwilioRest(AC, "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def fake_twilio() -> AsyncIterator[tuple[str, list[dict[str, object]]]]:
    """A real HTTP server on 127.0.0.1 that acts like Twilio's Calls resource."""
    calls: list[dict[str, object]] = []

    async def update(request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        if auth != "Basic " + base64.b64encode(f"{AC}:{TOKEN}".encode()).decode():
            return JSONResponse({"code": 20003, "message": "Authenticate", "status": 401}, status_code=401)
        form = parse_qs((await request.body()).decode())
        calls.append({"path": request.url.path, "form": form})
        status = "completed" if form.get("Status") == ["completed"] else "in-progress"
        return JSONResponse({"sid": request.path_params["call"], "status": status})

    app = Starlette(routes=[Route("/2010-04-01/Accounts/{ac}/Calls/{call}.json", update, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}", calls
    server.should_exit = True
    await task


async def test_gw_rest_over_a_real_socket(fake_twilio: tuple[str, list[dict[str, object]]]) -> None:
    base, calls = fake_twilio
    async with TwilioRest(AC, TOKEN, base_url=base, timeout=2.0) as rest:
        assert (await rest.hangup(CA)).status == "completed"
        assert (await rest.redirect(CA, "<Response><Hangup/></Response>")).status == "in-progress"
    assert calls == [
        {"path": f"/2010-04-01/Accounts/{AC}/Calls/{CA}.json", "form": {"Status": ["completed"]}},
        {"path": f"/2010-04-01/Accounts/{AC}/Calls/{CA}.json", "form": {"Twiml": ["<Response><Hangup/></Response>"]}},
    ]
    async with TwilioRest(AC, "wrong", base_url=base) as rest:
        with pytest.raises(TwilioRestError, match=r"HTTP 401 \(Twilio error 20003\): Authenticate"):
            await rest.hangup(CA)
    async with TwilioRest(AC, TOKEN, base_url=f"http://127.0.0.1:{free_port()}", timeout=1.0) as rest:
        with pytest.raises(TwilioRestError, match="ConnectError"):
            await rest.hangup(CA)


def _started_session(rest: TwilioRest, closed: list[bool], remembered: list[tuple[str, str]]) -> CallSession:
    conn = MediaConnection()
    conn.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    start = {
        "streamSid": "MZ" + "a" * 32,
        "accountSid": AC,
        "callSid": CA,
        "tracks": ["inbound"],
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    conn.receive(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": start["streamSid"], "start": start}))

    async def send(text: str) -> None:
        pass

    async def close_socket() -> None:
        closed.append(True)

    async def end_call(sid: str) -> None:
        await rest.hangup(sid)

    async def remember(sid: str, number: str) -> None:
        remembered.append((sid, number))

    async def transfer_call(sid: str, number: str) -> None:
        await rest.transfer(sid, number)

    writer = Writer(MemoryBus())
    return CallSession(conn, 1, writer, send, close_socket, end_call, lambda *_: None, remember, transfer_call)


async def test_gw_session_transfers_through_rest(fake_twilio: tuple[str, list[dict[str, object]]]) -> None:
    """A brain ``transfer`` after the last turn redirects the live call to <Dial> through the REST API; the socket
    is left for Twilio to end."""
    base, calls = fake_twilio
    closed: list[bool] = []
    remembered: list[tuple[str, str]] = []
    async with TwilioRest(AC, TOKEN, base_url=base, timeout=2.0) as rest:
        session = _started_session(rest, closed, remembered)
        await session.deliver(ev.Clear(call_sid=CA, turn_no=1))  # the last line is over (cut short, no audio here)
        await session.deliver(ev.Transfer(call_sid=CA, after_turn=1, number="+15552223333"))
        assert session.ending is not None
        await session.ending
        await session.aclose()
    assert len(calls) == 1 and calls[0]["path"] == f"/2010-04-01/Accounts/{AC}/Calls/{CA}.json"
    form = calls[0]["form"]
    assert isinstance(form, dict)
    root = ET.fromstring(form["Twiml"][0])
    assert [el.tag for el in root] == ["Dial"] and root[0].text == "+15552223333"
    assert closed == [] and remembered == [(CA, "+15552223333")]


async def test_gw_session_transfer_falls_back_to_closing_the_socket(
    fake_twilio: tuple[str, list[dict[str, object]]],
) -> None:
    """REST refused (bad credentials): the number is remembered and the socket closed, so Twilio's <Connect action>
    request gets the <Dial> instead; the call is not lost."""
    base, calls = fake_twilio
    closed: list[bool] = []
    remembered: list[tuple[str, str]] = []
    async with TwilioRest(AC, "wrong-token", base_url=base, timeout=2.0) as rest:
        session = _started_session(rest, closed, remembered)
        await session.deliver(ev.Clear(call_sid=CA, turn_no=1))  # the last line is over (cut short, no audio here)
        await session.deliver(ev.Transfer(call_sid=CA, after_turn=1, number="+15552223333"))
        assert session.ending is not None
        await session.ending
        await session.aclose()
    assert calls == [] and closed == [True] and remembered == [(CA, "+15552223333")]
