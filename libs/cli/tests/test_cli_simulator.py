"""The call simulator against a fake gateway: webhooks through httpx.MockTransport, media over a real websocket.

The fake gateway checks the simulator with the gateway's own Twilio code (signature validation, codec and
socket state machine), so the two independent implementations are checked against each other.
"""

from __future__ import annotations

import asyncio
import json
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import numpy as np
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from voxcart.cli.simulator import CallResult, Dtmf, Line, SimulatorConfig, SimulatorError, simulate_call
from voxcart.common.audio import pcm16_to_ulaw, silence_ulaw, ulaw_rms
from voxcart.gateway.twilio.connection import MediaConnection
from voxcart.gateway.twilio.media import Dtmf as DtmfMsg
from voxcart.gateway.twilio.media import Mark, Media, Start, Stop
from voxcart.gateway.twilio.signature import validate_signature
from voxcart.gateway.twilio.twiml import VoiceResponse

TOKEN = "test-token"
PUBLIC = "https://gw.example.test"


def tone(seconds: float, hz: float = 440.0, amp: int = 8000) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return pcm16_to_ulaw((amp * np.sin(2 * np.pi * hz * t)).astype(np.int16))


@dataclass
class FakeGateway:
    """Answers every caller utterance (voice then 0.2 s of silence, or 3 DTMF digits) with a tone and a mark."""

    reply_s: float = 0.3
    after_stream: list[str] = field(default_factory=lambda: [VoiceResponse().hangup().to_xml()])
    stream_sids: list[str] = field(default_factory=list)
    on_started: Callable[[FakeGateway, ServerConnection, MediaConnection], None] | None = None
    close_after_replies: int | None = None
    clear_after_s: float | None = None
    http: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    start: Start | None = None
    stopped: bool = False
    caller_frames: list[tuple[float, int]] = field(default_factory=list)  # (arrival, chunk)
    echoes: list[tuple[str, bool]] = field(default_factory=list)
    replies_sent: list[float] = field(default_factory=list)
    conn: MediaConnection | None = None
    ws_signature_ok: bool = False

    def handle_http(self, request: httpx.Request) -> httpx.Response:
        form = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        if request.method == "GET":
            self.http.append((request.url.path, {}))
            turns = [
                {"speaker": "agent", "text": "Hello, shop."},
                {"speaker": "caller", "text": "hi"},
                {"speaker": "agent", "text": "Reply one."},
            ]
            return httpx.Response(200, json={"call_sid": request.url.path.split("/")[-1], "turns": turns})
        url = PUBLIC + request.url.path
        if not validate_signature(TOKEN, url, form, request.headers.get("x-twilio-signature")):
            return httpx.Response(403, text="bad signature")
        self.http.append((request.url.path, form))
        if request.url.path == "/twilio/voice":
            return httpx.Response(200, text=self.connect_twiml(), headers={"Content-Type": "text/xml"})
        if request.url.path == "/twilio/after-stream":
            return httpx.Response(200, text=self.after_stream.pop(0))
        return httpx.Response(204)

    @staticmethod
    def connect_twiml() -> str:
        return (
            VoiceResponse()
            .connect_stream(
                "wss://gw.example.test/twilio/media", parameters={"session": "s&1"}, action="/twilio/after-stream"
            )
            .to_xml()
        )

    def check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        sig = request.headers.get("X-Twilio-Signature")
        self.ws_signature_ok = validate_signature(TOKEN, "wss://gw.example.test" + request.path, {}, sig)
        if not self.ws_signature_ok:
            return connection.respond(403, "bad signature\n")
        return None

    async def reply(self, ws: ServerConnection, conn: MediaConnection, turn: int) -> None:
        self.replies_sent.append(asyncio.get_running_loop().time())
        audio = silence_ulaw(160) + tone(self.reply_s)  # leading silence: latency counts the first voiced frame
        for i in range(0, len(audio), 800):
            await ws.send(conn.media_frame(audio[i : i + 800]))
        await ws.send(conn.mark_frame(f"t{turn}-s0"))
        if self.clear_after_s is not None:
            await asyncio.sleep(self.clear_after_s)
            await ws.send(conn.clear_frame())
            await ws.send(conn.mark_frame(f"t{turn}-after-clear"))

    async def handler(self, ws: ServerConnection) -> None:
        conn = self.conn = MediaConnection()
        loop = asyncio.get_running_loop()
        voiced_run, silent_run, digits, turn = 0, 0, "", 0
        async for raw in ws:
            msg = conn.receive(raw)
            if isinstance(msg, Start):
                self.start = msg
                self.stream_sids.append(msg.stream_sid)
                if self.on_started:
                    self.on_started(self, ws, conn)
                await self.reply(ws, conn, 0)  # greeting
            elif isinstance(msg, Media):
                self.caller_frames.append((loop.time(), msg.media.chunk))
                assert len(msg.media.payload) == 160
                if ulaw_rms(msg.media.payload) > 200:
                    voiced_run, silent_run = voiced_run + 1, 0
                elif voiced_run:
                    silent_run += 1
                if voiced_run and silent_run == 10:  # 0.2 s of silence after speech
                    voiced_run, silent_run, turn = 0, 0, turn + 1
                    await self.reply(ws, conn, turn)
            elif isinstance(msg, DtmfMsg):
                digits += msg.dtmf.digit
                if len(digits) == 3:
                    digits, turn = "", turn + 1
                    await self.reply(ws, conn, turn)
            elif isinstance(msg, Mark):
                self.echoes.append((msg.mark.name, conn.on_mark_echo(msg.mark.name)))
                if self.close_after_replies is not None and msg.mark.name == f"t{self.close_after_replies}-s0":
                    await ws.close()
            elif isinstance(msg, Stop):
                self.stopped = True


@pytest.fixture
async def ws_server() -> AsyncIterator[tuple[FakeGateway, Server]]:
    gw = FakeGateway()
    async with serve(gw.handler, "127.0.0.1", 0, process_request=gw.check_upgrade, compression=None) as server:
        yield gw, server


def config(server: Server, **kw: object) -> SimulatorConfig:
    port = next(iter(server.sockets)).getsockname()[1]
    base: dict[str, object] = {
        "gateway_url": f"http://127.0.0.1:{port}",
        "public_url": PUBLIC,
        "auth_token": TOKEN,
        "agent_silence_s": 0.3,
        "greeting_timeout_s": 2.0,
        "reply_timeout_s": 2.0,
    }
    return SimulatorConfig(**{**base, **kw})  # type: ignore[arg-type]


async def test_cli_simulator_full_call(ws_server: tuple[FakeGateway, Server], tmp_path: Path) -> None:
    gw, server = ws_server
    line = silence_ulaw(800) + tone(0.4, 300) + silence_ulaw(400)
    items: list[Line | Dtmf | bytes] = [Line(line, "where is my order"), line, Dtmf("123", interval_s=0.1)]
    result = await simulate_call(config(server), items, transport=httpx.MockTransport(gw.handle_http))

    # webhooks: signed voice webhook with Twilio's params, then the status callback; record fetched
    assert [path for path, _ in gw.http] == ["/twilio/voice", "/twilio/status", f"/calls/{result.call_sid}"]
    voice = gw.http[0][1]
    assert voice["CallSid"] == result.call_sid and len(result.call_sid) == 34 and result.call_sid.startswith("CA")
    assert (voice["CallStatus"], voice["Direction"], voice["ApiVersion"]) == ("ringing", "inbound", "2010-04-01")
    assert gw.http[1][1]["CallStatus"] == "completed"
    # media socket: signed upgrade, start with the TwiML parameters, continuous 20 ms frames, stop at the end
    assert gw.ws_signature_ok and gw.start is not None and gw.conn is not None
    assert gw.start.start.custom_parameters == {"session": "s&1"}
    assert gw.start.start.call_sid == result.call_sid and result.stream_sids == [gw.start.stream_sid]
    assert gw.stopped and gw.conn.seq_gaps == 0 and gw.conn.seq_duplicates == 0
    chunks = [c for _, c in gw.caller_frames]
    assert chunks == list(range(1, len(chunks) + 1))
    span = gw.caller_frames[-1][0] - gw.caller_frames[0][0]
    assert span == pytest.approx((len(chunks) - 1) * 0.02, rel=0.05)  # real time, no drift
    # turns: greeting, two lines, DTMF; each answered once with the whole reply, marks echoed as played
    assert [t.kind for t in result.turns] == ["greeting", "speech", "speech", "dtmf"]
    assert [t.caller for t in result.turns] == ["", "where is my order", "", "<dtmf 123>"]
    assert all(len(t.agent_audio) == 160 + 2400 for t in result.turns)
    assert gw.echoes == [(f"t{i}-s0", True) for i in range(4)] and result.marks_played == 4
    assert result.ended_by == "caller" and not result.errors and not any(t.timed_out for t in result.turns)
    # latency: last voiced frame sent -> first voiced agent frame; the fake answers after 0.2 s of silence
    for turn in result.turns[1:3]:
        assert turn.latency_s is not None and 0.18 <= turn.latency_s < 0.35, turn.latency_s
    dtmf_latency = result.turns[3].latency_s  # the fake answers the third digit at once
    assert dtmf_latency is not None and 0 <= dtmf_latency < 0.1
    assert result.latencies == [t.latency_s for t in result.turns]
    # each line starts only after the previous reply played plus agent_silence_s
    starts = [t.caller_end_s for t in result.turns[1:]]
    ends = [t.agent_start_s for t in result.turns[:-1]]
    for start, prev in zip(starts, ends, strict=True):
        assert start is not None and prev is not None and start - prev > 0.3 + 0.3
    assert [t.agent_text for t in result.turns] == ["Hello, shop.", "Reply one.", "", ""]
    # the WAV: caller on the left, agent as heard on the right, aligned
    path = tmp_path / "call.wav"
    result.save_wav(path)
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 8000, 2)
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    assert len(pcm) == len(result.caller_track) == len(result.agent_track) == 160 * len(chunks)
    left, right = np.abs(pcm[:, 0]) > 2000, np.abs(pcm[:, 1]) > 2000
    # |sine| > 1/4 of its peak on ~84% of samples: 2 lines of 0.4 s left, 4 replies of 0.3 s right
    assert left.sum() > 0.75 * 6400 and right.sum() > 0.75 * 9600 and (left & right).sum() < 800


async def test_cli_simulator_clear_hangup_and_transfer(ws_server: tuple[FakeGateway, Server]) -> None:
    """The gateway clears a long reply mid-way, then closes the socket; the action URL answers <Dial>."""
    gw, server = ws_server
    gw.reply_s, gw.clear_after_s, gw.close_after_replies = 2.0, 0.5, 1
    gw.after_stream = [VoiceResponse().say("Transferring.").dial("+15552223333").to_xml()]
    line = tone(0.3, 300) + silence_ulaw(160)
    result = await simulate_call(config(server), [line, line, line], transport=httpx.MockTransport(gw.handle_http))
    assert result.ended_by == "transfer" and result.transfer_to == "+15552223333"
    assert result.said == ["Transferring."]
    assert [path for path, _ in gw.http][:2] == ["/twilio/voice", "/twilio/after-stream"]
    assert gw.http[1][1]["CallStatus"] == "in-progress"
    # every mark sent before a clear came back "not played"; marks sent after it played
    assert ("t0-s0", False) in gw.echoes and ("t0-after-clear", True) in gw.echoes
    assert result.marks_cleared >= 1 and result.turns[0].clears == 1
    # the caller heard ~0.5 s of a 2 s greeting: clear dropped the rest
    greeting_window = range(0, 8000, 160)  # first second: line 1 starts ~0.8 s in, its reply ~1.3 s in
    heard = sum(ulaw_rms(bytes(result.agent_track[i : i + 160])) > 200 for i in greeting_window)
    assert 20 <= heard <= 40, heard
    assert len([t for t in result.turns if t.kind == "speech"]) == 1  # the gateway hung up during line 1's reply
    assert not gw.stopped


async def test_cli_simulator_reports_protocol_errors(ws_server: tuple[FakeGateway, Server]) -> None:
    gw, server = ws_server

    def misbehave(gw: FakeGateway, ws: ServerConnection, conn: MediaConnection) -> None:
        async def send_junk() -> None:
            await ws.send(b"\x00\x01")
            await ws.send('{"event":"media","streamSid":"MZwrong","media":{"payload":"/w=="}}')
            await ws.send(json.dumps({"event": "media", "streamSid": conn.stream_sid, "media": {"payload": "%%"}}))
            await ws.send(json.dumps({"event": "dance", "streamSid": conn.stream_sid}))

        asyncio.get_running_loop().create_task(send_junk())

    gw.on_started = misbehave
    result = await simulate_call(config(server), [], transport=httpx.MockTransport(gw.handle_http))
    kinds = [e.split(":")[0] for e in result.errors]
    assert kinds == ["31950", "31951", "31951", "31951"], result.errors
    assert "MZwrong" in result.errors[1] and "unknown event 'dance'" in result.errors[3]
    assert result.turns[0].latency_s is not None and gw.stopped


async def test_cli_simulator_webhook_outcomes(ws_server: tuple[FakeGateway, Server]) -> None:
    gw, server = ws_server
    closed = httpx.MockTransport(
        lambda r: httpx.Response(200, text=VoiceResponse().say("We are closed.").hangup().to_xml())
    )
    result: CallResult = await simulate_call(config(server, fetch_record=False), [b"\xff" * 160], transport=closed)
    assert result.ended_by == "no_stream" and result.said == ["We are closed."] and result.turns == []
    bad_sig = config(server, auth_token="wrong")
    with pytest.raises(SimulatorError, match="answered HTTP 403: bad signature"):
        await simulate_call(bad_sig, [], transport=httpx.MockTransport(gw.handle_http))
    with pytest.raises(SimulatorError, match="not XML"):
        await simulate_call(config(server), [], transport=httpx.MockTransport(lambda r: httpx.Response(200, text="hi")))
    with pytest.raises(ValueError, match="Dtmf digits"):
        Dtmf("12a")


async def test_cli_simulator_follows_a_reconnect(ws_server: tuple[FakeGateway, Server]) -> None:
    """The gateway drops the socket after each reply; <Connect action> answers a new stream once, then hangs up."""
    gw, server = ws_server
    gw.close_after_replies = 1
    gw.after_stream = [FakeGateway.connect_twiml(), VoiceResponse().hangup().to_xml()]
    line = tone(0.3, 300) + silence_ulaw(160)
    items = [Line(line, "one"), Line(line, "two"), Line(line, "three")]
    result = await simulate_call(config(server), items, transport=httpx.MockTransport(gw.handle_http))
    assert result.ended_by == "agent" and result.stream_sids == gw.stream_sids and len(set(gw.stream_sids)) == 2
    assert [(t.kind, t.caller) for t in result.turns] == [
        ("greeting", ""),
        ("speech", "one"),
        ("greeting", ""),
        ("speech", "two"),
    ]
    assert all(t.latency_s is not None for t in result.turns)
    assert [p for p, _ in gw.http] == [
        "/twilio/voice",
        "/twilio/after-stream",
        "/twilio/after-stream",
        "/twilio/status",
        f"/calls/{result.call_sid}",
    ]
    assert [t.agent_text for t in result.turns] == ["Hello, shop.", "Reply one.", "", ""]


async def test_cli_simulator_refused_upgrade_is_a_clear_error(ws_server: tuple[FakeGateway, Server]) -> None:
    gw, server = ws_server

    def wrong_token_for_ws(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=FakeGateway.connect_twiml())

    cfg = config(server, auth_token="not-the-gateways")
    with pytest.raises(SimulatorError, match=r"media websocket wss://gw.example.test/twilio/media failed: .*403"):
        await simulate_call(cfg, [], transport=httpx.MockTransport(wrong_token_for_ws))
