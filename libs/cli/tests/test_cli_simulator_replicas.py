"""The simulator as Twilio plus a load balancer in front of two gateway replicas: a :class:`Reconnect` moves the
caller to a new socket on the other replica while the old one lingers until closed; a replica that dies is
skipped for the ``<Connect action>`` request and the next socket. Fake replicas on real websockets, checked with
the gateway's own Twilio code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from voxcart.cli.simulator import Line, Reconnect, SimulatorConfig, simulate_call
from voxcart.common.audio import pcm16_to_ulaw, silence_ulaw, ulaw_rms
from voxcart.gateway.twilio.connection import MediaConnection
from voxcart.gateway.twilio.media import Media, Start
from voxcart.gateway.twilio.twiml import VoiceResponse

TOKEN = "test-token"
PUBLIC = "https://gw.example.test"
CONNECT = VoiceResponse().connect_stream(
    f"{PUBLIC.replace('https', 'wss')}/twilio/media", action="/twilio/after-stream"
)


def _tone(seconds: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return pcm16_to_ulaw((8000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16))


@dataclass
class Replica:
    """Greets each socket and answers each caller line (voice then 0.2 s of silence) with a short tone; after
    ``late_limit`` frames on a socket that a newer one replaced it closes it; ``die_after`` replies it dies."""

    name: str
    server: Server | None = None
    url: str = ""
    starts: list[str] = field(default_factory=list)
    frames: dict[str, list[int]] = field(default_factory=dict)
    late: dict[str, int] = field(default_factory=dict)
    die_after: int | None = None
    superseded: set[str] = field(default_factory=set)
    replies: int = 0

    async def reply(self, ws: ServerConnection, conn: MediaConnection, turn: int) -> None:
        await ws.send(conn.media_frame(silence_ulaw(160) + _tone(0.3)))
        await ws.send(conn.mark_frame(f"t{turn}-s0"))

    async def handler(self, ws: ServerConnection) -> None:
        conn, voiced, silent, turn = MediaConnection(), 0, 0, 0
        async for raw in ws:
            msg = conn.receive(raw)
            if isinstance(msg, Start):
                self.starts.append(msg.stream_sid)
                self.frames[msg.stream_sid] = []
                await self.reply(ws, conn, 0)
            elif isinstance(msg, Media):
                sid = msg.stream_sid
                self.frames[sid].append(msg.media.chunk)
                if sid in self.superseded:
                    self.late[sid] = self.late.get(sid, 0) + 1
                    if self.late[sid] == 10:
                        await ws.close()  # what the gateway does to a superseded socket
                    continue
                if ulaw_rms(msg.media.payload) > 200:
                    voiced, silent = voiced + 1, 0
                elif voiced:
                    silent += 1
                if voiced and silent == 10:
                    voiced, silent, turn = 0, 0, turn + 1
                    await self.reply(ws, conn, turn)
                    self.replies += 1
                    if self.replies == self.die_after:
                        await asyncio.sleep(0.4)  # the reply plays, then the replica dies with its socket
                        assert self.server is not None
                        self.server.close()
                        ws.transport.abort()  # no close frame: the process is gone
                        return


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = Replica("a"), Replica("b")
    async with AsyncExitStack() as stack:
        for replica in (a, b):
            replica.server = await stack.enter_async_context(serve(replica.handler, "127.0.0.1", 0, compression=None))
            replica.url = f"http://127.0.0.1:{next(iter(replica.server.sockets)).getsockname()[1]}"
        yield a, b


async def test_cli_simulator_reconnect_and_a_dead_replica(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    b.die_after = 1
    requests: list[tuple[str, str]] = []  # (replica, path) of each webhook that reached one
    old_sockets: set[str] = set()

    def webhooks(request: httpx.Request) -> httpx.Response:
        replica = a if request.url.port == int(a.url.rsplit(":", 1)[1]) else b
        assert replica.server is not None
        if not replica.server.is_serving():
            raise httpx.ConnectError("connection refused", request=request)
        requests.append((replica.name, request.url.path))
        if request.url.path in ("/twilio/voice", "/twilio/after-stream"):
            return httpx.Response(200, text=CONNECT.to_xml())
        return httpx.Response(404 if request.method == "GET" else 204)

    cfg = SimulatorConfig(
        gateway_url=a.url,
        gateway_urls=(b.url,),
        public_url=PUBLIC,
        auth_token=TOKEN,
        agent_silence_s=0.3,
        greeting_timeout_s=2.0,
        reply_timeout_s=2.0,
    )
    line = _tone(0.3) + silence_ulaw(160)

    async def mark_superseded() -> None:  # the gateway notices the newer socket (here: its start on b)
        while not b.starts:
            await asyncio.sleep(0.01)
        old_sockets.update(a.starts)
        a.superseded.update(a.starts)

    watcher = asyncio.create_task(mark_superseded())
    items: list[Line | Reconnect] = [Line(line, "one"), Reconnect(2.0), Line(line, "two"), Line(line, "three")]
    result = await simulate_call(cfg, items, transport=httpx.MockTransport(webhooks))
    await watcher

    first, second, third = result.streams
    # Twilio's own reconnect: the caller moved to b; the old socket sent silence until a closed it
    assert (first.gateway, first.ended_by) == (a.url, "reconnect")
    assert first.late_frames >= 10 and first.closed_after_s is not None and first.closed_after_s < 1.5
    assert a.frames[first.sid] == list(range(1, len(a.frames[first.sid]) + 1))  # one numbering, no gap
    assert len(a.frames[first.sid]) == first.frames + first.late_frames
    # b died after answering "two": the action request and the next socket went to a
    assert (second.gateway, second.ended_by, second.close_code) == (b.url, "gateway", 1006)
    assert (third.gateway, third.ended_by) == (a.url, "caller")
    assert [r for r in requests if r[1].startswith("/twilio/") and r[1] != "/twilio/status"] == [
        ("a", "/twilio/voice"),
        ("a", "/twilio/after-stream"),
    ]
    assert [(t.kind, t.caller) for t in result.turns] == [
        ("greeting", ""),
        ("speech", "one"),
        ("greeting", ""),
        ("speech", "two"),
        ("greeting", ""),
        ("speech", "three"),
    ]
    assert all(t.latency_s is not None for t in result.turns)
    # the caller track holds each socket's frames, in order, once: late frames are not in it
    assert len(result.caller_track) == 160 * (first.frames + second.frames + third.frames)
    assert old_sockets == {first.sid} and not result.errors
