"""The gateway's websocket protocol (uvicorn's, with flow control by queue depth): through a real uvicorn server
and a real websocket client, every message reaches the app in order; a prompt app costs no pause/resume of the
socket per message; an app that falls behind stops the socket being read at HIGH_WATER queued messages, and
reading resumes once it has caught up."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
import websockets

from voxcart.gateway.ws_protocol import HIGH_WATER, LOW_WATER, MediaWebSocketProtocol


@dataclass
class EchoApp:
    """An ASGI app that accepts, waits for ``gate``, then records every text message until the socket closes."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    got: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await self.gate.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            self.got.append(message["text"])
        self.done.set()


class CountingTransport:
    """Delegates to the real transport, counting the protocol's pause/resume calls."""

    def __init__(self, real: asyncio.Transport) -> None:
        self.real = real
        self.pauses = 0
        self.resumes = 0

    def pause_reading(self) -> None:
        self.pauses += 1
        self.real.pause_reading()

    def resume_reading(self) -> None:
        self.resumes += 1
        self.real.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@dataclass
class Served:
    app: EchoApp
    server: uvicorn.Server
    url: str


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    app = EchoApp()
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, ws=MediaWebSocketProtocol, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield Served(app, server, f"ws://127.0.0.1:{sock.getsockname()[1]}/")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def _protocol(server: uvicorn.Server) -> tuple[MediaWebSocketProtocol, CountingTransport]:
    (proto,) = server.server_state.connections
    assert isinstance(proto, MediaWebSocketProtocol)
    counting = CountingTransport(proto.transport)
    proto.transport = counting  # type: ignore[assignment]
    return proto, counting


async def _send_spaced(ws: websockets.ClientConnection, texts: list[str]) -> None:
    for text in texts:  # one frame per read on the server side, as a media socket's 20 ms frames arrive
        await ws.send(text)
        await asyncio.sleep(0.002)


async def test_gw_ws_protocol_a_prompt_app_gets_every_message_without_pausing_the_socket(served: Served) -> None:
    served.app.gate.set()
    texts = [f"frame {i}" for i in range(60)]
    async with websockets.connect(served.url) as ws:
        await asyncio.sleep(0.05)
        _, transport = _protocol(served.server)
        await _send_spaced(ws, texts)
        async with asyncio.timeout(5):
            while len(served.app.got) < len(texts):
                await asyncio.sleep(0.01)
        assert (transport.pauses, transport.resumes) == (0, 0)  # uvicorn's own protocol: 60 of each
    async with asyncio.timeout(5):
        await served.app.done.wait()
    assert served.app.got == texts


async def test_gw_ws_protocol_a_slow_app_stops_the_reading_at_high_water_and_resumes(served: Served) -> None:
    texts = [f"frame {i}" for i in range(HIGH_WATER * 3)]
    async with websockets.connect(served.url) as ws:
        await asyncio.sleep(0.05)
        proto, transport = _protocol(served.server)
        await _send_spaced(ws, texts)
        await asyncio.sleep(0.1)
        # the app reads nothing yet: the socket stopped being read once HIGH_WATER messages were queued
        assert proto.read_paused and transport.pauses == 1
        assert HIGH_WATER <= proto.queue.qsize() < len(texts)
        served.app.gate.set()
        async with asyncio.timeout(5):
            while len(served.app.got) < len(texts):
                await asyncio.sleep(0.01)
        assert transport.resumes >= 1 and not proto.read_paused
        assert proto.queue.qsize() <= LOW_WATER
    async with asyncio.timeout(5):
        await served.app.done.wait()
    assert served.app.got == texts  # in order, none lost
