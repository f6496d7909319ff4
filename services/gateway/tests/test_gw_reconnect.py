"""A call's media stream breaking under it: the ``<Connect action>`` answer (reconnect, capped at two; hang up or
dial when the agent was ending the call) and a second socket for the same call superseding the first, on this
replica or on another one sharing the bus. Real uvicorn servers and websocket clients, on a MemoryBus."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
import websockets

from voxcart.common import events as ev
from voxcart.common.bus import MemoryBus, keys
from voxcart.common.bus.writer import Writer
from voxcart.common.settings import Settings, load_settings
from voxcart.gateway.app import DrainingServer, create_app
from voxcart.gateway.media_token import PARAMETER, MediaTokens
from voxcart.gateway.reconnect import GIVE_UP_SAY, MAX_RECONNECTS, AfterStream, decide
from voxcart.gateway.records_sqlite import SqliteRecordStore
from voxcart.gateway.session import CallSession
from voxcart.gateway.twilio.connection import MediaConnection

SID = "CA" + "7" * 32
FORM = {"CallSid": SID, "AccountSid": "AC" + "1" * 32, "From": "+15555550123", "To": "+15555550999"}
ENV = {"MEDIA_TOKEN_SECRET": "gateway-reconnect-test-secret"}
SILENCE = base64.b64encode(b"\xff" * 160).decode()


def test_gw_reconnect_decide() -> None:
    live = {"status": b"in-progress", "gen": b"1"}
    assert decide({}, None) is AfterStream.HANGUP  # unknown call
    assert decide(live, None) is AfterStream.RECONNECT
    assert decide(live, MAX_RECONNECTS) is AfterStream.RECONNECT
    assert decide(live, MAX_RECONNECTS + 1) is AfterStream.GIVE_UP
    assert decide({**live, "ending": b"hangup"}, 1) is AfterStream.HANGUP
    assert decide({**live, "ending": b"transfer", "transfer_to": b"+15550001111"}, 1) is AfterStream.DIAL
    assert decide({**live, "status": b"completed"}, 1) is AfterStream.HANGUP


# -- the <Connect action> request -------------------------------------------------------------------------------


async def _post(client: httpx.AsyncClient, path: str, form: Mapping[str, str]) -> httpx.Response:
    body = urlencode(list(form.items()))
    return await client.post(path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})


async def test_gw_reconnect_after_stream_answers() -> None:
    bus = MemoryBus()
    app = create_app(load_settings(ENV, env_file=None), bus=bus, records=SqliteRecordStore(":memory:"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            unknown = await _post(client, "/twilio/after-stream", {**FORM, "CallSid": "CA" + "8" * 32})
            assert [c.tag for c in ET.fromstring(unknown.text)] == ["Hangup"]

            voice = await _post(client, "/twilio/voice", FORM)
            assert voice.status_code == 200 and "<Connect" in voice.text
            await bus.hset(keys.meta(SID), {"status": "in-progress", "gen": 1})  # its socket started, then died
            answers = [(await _post(client, "/twilio/after-stream", FORM)).text for _ in range(MAX_RECONNECTS + 1)]
            # a fresh stream is exactly what the voice webhook answered (same URL, action, parameters)
            assert answers[:MAX_RECONNECTS] == [voice.text] * MAX_RECONNECTS
            last = ET.fromstring(answers[-1])
            assert [c.tag for c in last] == ["Say", "Hangup"] and last[0].text == GIVE_UP_SAY
            # giving up ends the call on the bus, once: nobody else will (its socket died with its replica)
            assert [e.reason for e in await _lifecycle(bus) if isinstance(e, ev.CallEnded)] == ["stream lost"]
            assert (await bus.hgetall(keys.meta(SID)))["status"] == b"completed"

            await bus.hset(keys.meta(SID), {"ending": "hangup"})
            assert [c.tag for c in ET.fromstring((await _post(client, "/twilio/after-stream", FORM)).text)] == [
                "Hangup"
            ]
            await bus.hset(keys.meta(SID), {"ending": "transfer", "transfer_to": "+15550001111"})
            dial = ET.fromstring((await _post(client, "/twilio/after-stream", FORM)).text)
            assert [c.tag for c in dial] == ["Dial"] and dial[0].text == "+15550001111"
            assert len([e for e in await _lifecycle(bus) if isinstance(e, ev.CallEnded)]) == 1


async def test_gw_reconnect_an_ending_call_whose_socket_died_is_ended_once() -> None:
    """The replica died while the goodbye played: the ``<Connect action>`` request hangs up and ends the call on
    the bus; a second request (Twilio retrying) ends nothing more."""
    bus = MemoryBus()
    app = create_app(load_settings(ENV, env_file=None), bus=bus, records=SqliteRecordStore(":memory:"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            await _post(client, "/twilio/voice", FORM)
            await bus.hset(keys.meta(SID), {"status": "in-progress", "gen": 1, "ending": "hangup"})
            for _ in range(2):
                answer = ET.fromstring((await _post(client, "/twilio/after-stream", FORM)).text)
                assert [c.tag for c in answer] == ["Hangup"]
            assert [e.reason for e in await _lifecycle(bus) if isinstance(e, ev.CallEnded)] == ["agent ended"]
            assert await bus.incr(keys.reconnects(SID)) == 1  # never counted as a reconnect


async def test_gw_reconnect_caller_hanging_up_while_the_socket_is_dead_ends_the_call_once() -> None:
    """The caller hung up while the replica serving the socket was dead: Twilio's ``completed`` status ends the
    call on the bus (its heartbeat is stale); a live call's status, or a repeat, ends nothing more."""
    bus = MemoryBus()
    app = create_app(load_settings(ENV, env_file=None), bus=bus, records=SqliteRecordStore(":memory:"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            await _post(client, "/twilio/voice", FORM)
            await bus.zadd(keys.ACTIVE_CALLS, {SID: ev.now_ms()})  # a live socket's fresh heartbeat
            status = {**FORM, "CallStatus": "completed", "SequenceNumber": "1"}
            await _post(client, "/twilio/status", status)
            assert not [e for e in await _lifecycle(bus) if isinstance(e, ev.CallEnded)]
            await bus.zadd(keys.ACTIVE_CALLS, {SID: ev.now_ms() - 10_000})  # its replica stopped beating
            for seq in ("2", "3"):
                await _post(client, "/twilio/status", {**status, "SequenceNumber": seq})
            assert [e.reason for e in await _lifecycle(bus) if isinstance(e, ev.CallEnded)] == ["caller hung up"]


async def test_gw_reconnect_ending_is_recorded_before_the_last_turn_plays() -> None:
    """A hang-up waits for the goodbye to play, but says so at once: should the replica die meanwhile, the
    ``<Connect action>`` request hangs up instead of reconnecting a finished call."""
    conn = MediaConnection()
    conn.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    conn.receive(json.dumps(_start(SID, "MZ" + "1" * 32, "")))
    done: list[str] = []

    async def remember(sid: str, number: str) -> None:
        done.append(f"remember {number!r}")

    async def close_socket() -> None:
        done.append("close")

    async def send(_: str) -> None:
        pass

    session = CallSession(conn, 1, Writer(MemoryBus()), send, close_socket, None, lambda *_: None, remember)
    session.start({})
    try:
        await session.deliver(ev.Hangup(call_sid=SID, after_turn=3))
        await asyncio.sleep(0.1)
        assert done == ["remember ''"]  # recorded, while turn 3 has not played yet
        await session.pacer.clear(3)
        await asyncio.sleep(0.1)
        assert done == ["remember ''", "close"]
    finally:
        await session.aclose()


# -- a second socket for the same call --------------------------------------------------------------------------


def _start(sid: str, stream: str, token: str) -> dict[str, object]:
    return {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": stream,
        "start": {
            "streamSid": stream,
            "accountSid": FORM["AccountSid"],
            "callSid": sid,
            "tracks": ["inbound"],
            "customParameters": {"call_sid": sid, PARAMETER: token},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }


class Socket:
    """One Twilio media socket of the call: ``connected``, ``start``, then media frames numbered from 1."""

    def __init__(self, ws: websockets.ClientConnection, stream: str) -> None:
        self.ws, self.stream, self.seq, self.chunk = ws, stream, 1, 0

    @classmethod
    async def open(cls, url: str, settings: Settings, name: str) -> Socket:
        ws = await websockets.connect(url)
        stream = "MZ" + name * 32
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps(_start(SID, stream, MediaTokens.from_settings(settings).issue(SID))))
        return cls(ws, stream)

    async def media(self, frames: int) -> None:
        for _ in range(frames):
            self.seq, self.chunk = self.seq + 1, self.chunk + 1
            media = {
                "track": "inbound",
                "chunk": str(self.chunk),
                "timestamp": str(20 * self.chunk),
                "payload": SILENCE,
            }
            await self.ws.send(
                json.dumps(
                    {"event": "media", "sequenceNumber": str(self.seq), "streamSid": self.stream, "media": media}
                )
            )

    async def stop(self) -> None:
        self.seq += 1
        stop = {"accountSid": FORM["AccountSid"], "callSid": SID}
        await self.ws.send(
            json.dumps({"event": "stop", "sequenceNumber": str(self.seq), "streamSid": self.stream, "stop": stop})
        )

    async def closed_by_server(self, within: float) -> bool:
        try:
            async with asyncio.timeout(within):
                while True:
                    await self.ws.recv()
        except websockets.ConnectionClosed:
            return True
        except TimeoutError:
            return False


@asynccontextmanager
async def _replica(bus: MemoryBus, settings: Settings) -> AsyncIterator[tuple[str, DrainingServer]]:
    app = create_app(settings, bus=bus, records=SqliteRecordStore(":memory:"))
    sock = socket.create_server(("127.0.0.1", 0))
    server = DrainingServer(uvicorn.Config(app, lifespan="on", log_level="warning"), app.state.registry, 0)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.02)
    try:
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/twilio/media", server
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await asyncio.gather(task, return_exceptions=True)
        sock.close()


async def _wait_for(predicate: object, within: float = 5.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(within):
        while not await predicate():
            await asyncio.sleep(0.02)


async def _lifecycle(bus: MemoryBus) -> list[ev.Event]:
    return [ev.decode(e.data) for e in await bus.range(keys.LIFECYCLE)]


async def _audio_ids(bus: MemoryBus) -> list[str]:
    return [e.id for e in await bus.range(keys.audio_in(SID))]


@pytest.mark.parametrize("replicas", [1, 2], ids=["same_replica", "other_replica"])
async def test_gw_reconnect_second_socket_supersedes_the_first(replicas: int) -> None:
    bus = MemoryBus()
    settings = load_settings(ENV, env_file=None)
    async with AsyncExitStack() as stack:
        gateways = [await stack.enter_async_context(_replica(bus, settings)) for _ in range(replicas)]
        (url_a, gw_a), (url_b, gw_b) = gateways[0], gateways[-1]
        first = await Socket.open(url_a, settings, "a")
        await _wait_for(lambda: _is_live(gw_a))
        await first.media(5)
        await _wait_for(lambda: _has(bus, 5))

        second = await Socket.open(url_b, settings, "b")
        await _wait_for(lambda: _meta_gen(bus, 2))
        await second.media(3)
        await _wait_for(lambda: _has(bus, 8))
        with contextlib.suppress(websockets.ConnectionClosed):  # closed already when on the same replica
            await first.media(4)  # late frames of the old socket: fenced out by their lower ids
        assert await first.closed_by_server(within=3.0), "the superseded socket was not closed"
        await second.media(2)
        await _wait_for(lambda: _has(bus, 10))

        ids = await _audio_ids(bus)
        assert ids[:8] == [f"1-{i}" for i in range(1, 6)] + ["2-1", "2-2", "2-3"]
        assert ids[8:] == ["2-4", "2-5"], ids
        events = [ev.decode(e.data) for e in await bus.range(keys.events(SID))]
        assert [e.gen for e in events if isinstance(e, ev.StreamReconnected)] == [2]
        assert not [e for e in await _lifecycle(bus) if isinstance(e, ev.CallEnded)], "the call must go on"
        assert SID in gw_b._registry.sessions and (replicas == 1 or SID not in gw_a._registry.sessions)

        await second.stop()
        await _wait_for(lambda: _ended(bus))
        await asyncio.sleep(0.2)
        ended = [e for e in await _lifecycle(bus) if isinstance(e, ev.CallEnded)]
        assert [e.reason for e in ended] == ["caller hung up"]
        await second.ws.close()


async def _is_live(server: DrainingServer) -> bool:
    return SID in server._registry.sessions


async def _has(bus: MemoryBus, entries: int) -> bool:
    return len(await _audio_ids(bus)) >= entries


async def _meta_gen(bus: MemoryBus, gen: int) -> bool:
    return await bus.hget(keys.meta(SID), "gen") == str(gen).encode()


async def _ended(bus: MemoryBus) -> bool:
    return any(isinstance(e, ev.CallEnded) for e in await _lifecycle(bus))
