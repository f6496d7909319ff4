"""SIGTERM on a gateway with live calls: the media sockets carry on until the calls end (or the drain time is up),
then the server stops; SIGINT stops at once. Run through a real uvicorn server and a real websocket client."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import uvicorn
import websockets

from voxcart.common.bus import MemoryBus
from voxcart.common.settings import load_settings
from voxcart.gateway.app import DrainingServer, create_app, listen_sockets
from voxcart.gateway.media_token import MediaTokens
from voxcart.gateway.records_sqlite import SqliteRecordStore

CALL_SID = "CA" + "4" * 32
SETTINGS = load_settings({"MEDIA_TOKEN_SECRET": "drain-test-media-secret"}, env_file=None)
STREAM_SID = "MZ" + "5" * 32
START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": STREAM_SID,
    "start": {
        "streamSid": STREAM_SID,
        "accountSid": "AC" + "2" * 32,
        "callSid": CALL_SID,
        "tracks": ["inbound"],
        "customParameters": {"call_sid": CALL_SID, "token": MediaTokens.from_settings(SETTINGS).issue(CALL_SID)},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}


@dataclass
class Running:
    server: DrainingServer
    task: asyncio.Task[None]
    url: str


async def _running(drain_s: float) -> AsyncIterator[Running]:
    app = create_app(SETTINGS, bus=MemoryBus(), records=SqliteRecordStore(":memory:"))
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = DrainingServer(uvicorn.Config(app, lifespan="on", log_level="warning"), app.state.registry, drain_s)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.02)
    try:
        yield Running(server, task, f"ws://127.0.0.1:{port}/twilio/media")
    finally:
        server.should_exit = server.force_exit = True
        async with asyncio.timeout(10):
            await asyncio.gather(task, return_exceptions=True)
        sock.close()


async def _live_call(url: str, server: DrainingServer) -> websockets.ClientConnection:
    ws = await websockets.connect(url)
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(json.dumps(START))
    registry = server._registry
    async with asyncio.timeout(5):
        while CALL_SID not in registry.sessions:
            await asyncio.sleep(0.02)
    return ws


@pytest.fixture
async def draining() -> AsyncIterator[Running]:
    async for running in _running(drain_s=30):
        yield running


@pytest.fixture
async def short_drain() -> AsyncIterator[Running]:
    async for running in _running(drain_s=0.5):
        yield running


async def test_gw_drain_sigterm_waits_for_the_live_call(draining: Running) -> None:
    ws = await _live_call(draining.url, draining.server)
    draining.server.handle_exit(signal.SIGTERM, None)
    await asyncio.sleep(0.6)  # several uvicorn ticks
    assert not draining.task.done(), "the server stopped with a call in progress"
    pong = await ws.ping()
    async with asyncio.timeout(2):
        await pong  # the call's socket is still served
    await ws.send(json.dumps({"event": "stop", "sequenceNumber": "2", "streamSid": STREAM_SID, "stop": {}}))
    started = time.monotonic()
    async with asyncio.timeout(10):
        await draining.task  # the last call ended: the drain is over
    assert time.monotonic() - started < 5
    await ws.close()


async def test_gw_drain_ends_at_the_deadline(short_drain: Running) -> None:
    ws = await _live_call(short_drain.url, short_drain.server)
    started = time.monotonic()
    short_drain.server.handle_exit(signal.SIGTERM, None)
    async with asyncio.timeout(10):
        await short_drain.task
    assert 0.4 < time.monotonic() - started < 5
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # uvicorn's "service restart"


async def test_gw_drain_second_sigterm_stops_at_once(draining: Running) -> None:
    ws = await _live_call(draining.url, draining.server)
    draining.server.handle_exit(signal.SIGTERM, None)
    assert not draining.server.should_exit  # the first SIGTERM drains
    draining.server.handle_exit(signal.SIGTERM, None)
    assert draining.server.should_exit  # the second one stops
    # uvicorn re-raises the signals it captured once serve() returns: that would stop pytest itself
    draining.server._captured_signals.clear()
    async with asyncio.timeout(5):
        await draining.task
    with pytest.raises(websockets.ConnectionClosed):
        await ws.recv()


async def test_gw_drain_sigint_stops_at_once(draining: Running) -> None:
    ws = await _live_call(draining.url, draining.server)
    draining.server.handle_exit(signal.SIGINT, None)
    assert draining.server.should_exit
    draining.server._captured_signals.clear()
    async with asyncio.timeout(5):
        await draining.task
    with pytest.raises(websockets.ConnectionClosed):
        await ws.recv()


async def test_gw_drain_without_calls_stops_at_once(draining: Running) -> None:
    draining.server.handle_exit(signal.SIGTERM, None)
    async with asyncio.timeout(5):
        await draining.task


@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="this kernel has no dual-stack IPv6 sockets")
def test_gw_listen_on_ipv6_any_takes_ipv4_too() -> None:
    assert listen_sockets("0.0.0.0", 0) is None  # uvicorn binds other hosts itself
    sockets = listen_sockets("::", 0)
    assert sockets is not None
    (listener,) = sockets
    port = listener.getsockname()[1]
    try:
        for host in ("127.0.0.1", "::1"):
            with socket.create_connection((host, port), timeout=5):
                pass
    finally:
        listener.close()
