"""Behind Railway's TLS proxy (no ``PUBLIC_URL``): signatures are checked over the public URL rebuilt from
``X-Forwarded-Proto`` / ``X-Forwarded-Host``, and the TwiML points Twilio at that public host."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, MutableMapping
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from voxcart.common.bus import MemoryBus
from voxcart.common.settings import load_settings
from voxcart.gateway.app import create_app
from voxcart.gateway.records_sqlite import SqliteRecordStore
from voxcart.gateway.twilio.signature import compute_signature

TOKEN = "twilio-secret"
DOMAIN = "gw-production.up.railway.app"
INTERNAL = "http://gateway.railway.internal:8080"
SID = "CA" + "fedcba9876543210" * 2
FORM = {"CallSid": SID, "From": "+15555550123", "To": "+15555550999", "AccountSid": "AC" + "1" * 32}
RAILWAY_HEADERS = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": DOMAIN}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with an auth token and no PUBLIC_URL, reached over plain http on its internal address."""
    settings = load_settings({"TWILIO_AUTH_TOKEN": TOKEN}, env_file=None)
    app = create_app(settings, bus=MemoryBus(), records=SqliteRecordStore(":memory:"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=INTERNAL) as c:
            yield c


async def _voice(
    client: httpx.AsyncClient, signed_url: str, headers: dict[str, str], query: str = ""
) -> httpx.Response:
    all_headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": compute_signature(TOKEN, signed_url, FORM),
        **headers,
    }
    return await client.post("/twilio/voice" + query, content=urlencode(list(FORM.items())), headers=all_headers)


async def test_gw_forwarded_signature_over_public_https_url(client: httpx.AsyncClient) -> None:
    response = await _voice(client, f"https://{DOMAIN}/twilio/voice", RAILWAY_HEADERS)
    assert response.status_code == 200, response.text
    connect = ET.fromstring(response.text).find("Connect")
    assert connect is not None
    assert connect.attrib["action"] == f"https://{DOMAIN}/twilio/after-stream"
    stream = connect.find("Stream")
    assert stream is not None
    assert stream.attrib["url"] == f"wss://{DOMAIN}/twilio/media"


async def test_gw_forwarded_url_the_app_sees_is_refused(client: httpx.AsyncClient) -> None:
    # signed over the internal http URL: what a gateway ignoring the proxy headers would check against
    response = await _voice(client, f"{INTERNAL}/twilio/voice", RAILWAY_HEADERS)
    assert response.status_code == 403
    # signed over the public host but http: the forwarded scheme matters too
    response = await _voice(client, f"http://{DOMAIN}/twilio/voice", RAILWAY_HEADERS)
    assert response.status_code == 403


async def test_gw_forwarded_host_header_and_first_of_listed_values(client: httpx.AsyncClient) -> None:
    # no X-Forwarded-Host: the Host header the proxy passed on; comma-separated hops: the first (the client's)
    headers = {"Host": DOMAIN, "X-Forwarded-Proto": "https, http"}
    response = await _voice(client, f"https://{DOMAIN}/twilio/voice", headers)
    assert response.status_code == 200, response.text


async def test_gw_forwarded_query_string_kept_byte_for_byte(client: httpx.AsyncClient) -> None:
    query = "?shop=demo%20store&b=1&a=2"
    response = await _voice(client, f"https://{DOMAIN}/twilio/voice{query}", RAILWAY_HEADERS, query)
    assert response.status_code == 200, response.text


async def _upgrade(headers: dict[str, str]) -> list[dict[str, Any]]:
    """Drive one media-socket upgrade through the ASGI app (as uvicorn would) and return what the app sent."""
    settings = load_settings({"TWILIO_AUTH_TOKEN": TOKEN}, env_file=None)
    app = create_app(settings, bus=MemoryBus(), records=SqliteRecordStore(":memory:"))
    incoming: list[MutableMapping[str, Any]] = [
        {"type": "websocket.connect"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return incoming.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "server": ("gateway.railway.internal", 8080),
        "client": ("10.0.0.2", 40000),
        "root_path": "",
        "path": "/twilio/media",
        "raw_path": b"/twilio/media",
        "query_string": b"",
        "headers": [(b"host", b"gateway.railway.internal:8080")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "subprotocols": [],
    }
    async with app.router.lifespan_context(app):
        async with asyncio.timeout(5):
            await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("proto", ["https", "wss"])
async def test_gw_forwarded_media_upgrade_signed_over_wss(proto: str) -> None:
    headers = {
        "X-Forwarded-Proto": proto,
        "X-Forwarded-Host": DOMAIN,
        "X-Twilio-Signature": compute_signature(TOKEN, f"wss://{DOMAIN}/twilio/media", {}),
    }
    sent = await _upgrade(headers)
    assert sent[0]["type"] == "websocket.accept", sent


async def test_gw_forwarded_media_upgrade_signed_over_internal_url_refused() -> None:
    headers = {
        **RAILWAY_HEADERS,
        "X-Twilio-Signature": compute_signature(TOKEN, "ws://gateway.railway.internal:8080/twilio/media", {}),
    }
    sent = await _upgrade(headers)
    assert [m["type"] for m in sent] == ["websocket.close"], sent
    assert sent[0]["code"] == 1008
