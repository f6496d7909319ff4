"""``voxcart_provider_requests_total{provider="deepgram"}`` against a local websocket server.

One request per connection attempt, counted when it ends: a 429 or 401 handshake, a connection the server cut,
and a connection we closed ourselves each land in their own result; an opened connection's handshake time is
observed as its first response.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voxcart.common.audio import FRAME_BYTES
from voxcart.stt.deepgram import DeepgramProvider
from voxcart.stt.provider import ProviderError

SID = "CAdeepgrammetrics"
LABELS = {"svc": "stt", "provider": "deepgram"}
RESULTS = ("ok", "error", "timeout", "rate_limited", "auth", "dropped", "cancelled")


def counts() -> dict[str, float]:
    return {
        r: REGISTRY.get_sample_value("voxcart_provider_requests_total", {**LABELS, "result": r}) or 0.0 for r in RESULTS
    }


def handshakes() -> float:
    return REGISTRY.get_sample_value("voxcart_provider_first_response_seconds_count", LABELS) or 0.0


def delta(before: dict[str, float]) -> dict[str, float]:
    return {r: n - before[r] for r, n in counts().items() if n != before[r]}


Reject = Callable[[ServerConnection, Request], Response | None]


@asynccontextmanager
async def server(
    handler: Callable[[ServerConnection], Awaitable[None]], reject: Reject | None = None
) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, process_request=reject) as srv:
        yield f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/v1/listen"


def provider(url: str) -> DeepgramProvider:
    return DeepgramProvider("key", url=url, timeout_s=2.0, reconnect_attempts=0, backoff_s=0.01)


async def until_closed(ws: ServerConnection) -> None:
    """Answer nothing; close when the client sends ``CloseStream``."""
    try:
        async for message in ws:
            if isinstance(message, str) and "CloseStream" in message:
                await ws.close()
    except ConnectionClosed:
        pass


async def cut_after_audio(ws: ServerConnection) -> None:
    await ws.recv()
    ws.transport.abort()


def refuse(status: int) -> Reject:
    def reject(connection: ServerConnection, request: Request) -> Response:
        return Response(status, "refused", Headers({"Retry-After": "0.01"}), b"no")

    return reject


async def test_a_429_twice_counts_two_rate_limited_requests() -> None:
    before, opened = counts(), handshakes()
    async with server(until_closed, refuse(429)) as url:
        stt = provider(url).open_call(SID)
        with pytest.raises(ProviderError, match="HTTP 429"):
            await stt.feed("1-1", b"\xff" * FRAME_BYTES, 0.0)
        await stt.aclose()
    assert delta(before) == {"rate_limited": 2}  # the handshake and its one retry
    assert handshakes() == opened


async def test_a_401_counts_one_auth_failure() -> None:
    before = counts()
    async with server(until_closed, refuse(401)) as url:
        stt = provider(url).open_call(SID)
        with pytest.raises(ProviderError, match="DEEPGRAM_API_KEY"):
            await stt.feed("1-1", b"\xff" * FRAME_BYTES, 0.0)
        await stt.aclose()
    assert delta(before) == {"auth": 1}


async def test_a_connection_we_close_is_ok_and_one_the_server_cuts_is_dropped() -> None:
    before, opened = counts(), handshakes()
    async with server(until_closed) as url:
        stt = provider(url).open_call(SID)
        assert await stt.feed("1-1", b"\xff" * FRAME_BYTES, 0.0) == []
        await stt.aclose()
    assert delta(before) == {"ok": 1}
    assert handshakes() == opened + 1

    before = counts()
    async with server(cut_after_audio) as url:
        stt = provider(url).open_call(SID)
        await stt.feed("1-1", b"\xff" * FRAME_BYTES, 0.0)
        await asyncio.sleep(0.2)  # the server cuts the connection
        with pytest.raises(ProviderError, match="gave up after 0 reconnects"):
            await stt.feed("1-2", b"\xff" * FRAME_BYTES, 20.0)
        await stt.aclose()
    assert delta(before) == {"dropped": 1}
