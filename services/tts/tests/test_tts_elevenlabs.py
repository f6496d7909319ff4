"""ElevenLabsVoice against local servers that speak ElevenLabs' documented protocol (protocols.md §5).

A ``websockets`` server plays stream-input (path, query, ``xi-api-key``, init/text+flush/end messages, base64
μ-law audio then ``isFinal``); a uvicorn + starlette app plays the HTTP streaming endpoint (chunked μ-law).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from voxcart.common.audio import FRAME_BYTES, silence_ulaw
from voxcart.tts.elevenlabs import ElevenLabsVoice
from voxcart.tts.voice import Voice, VoiceError

KEY = "sk-test-0123456789abcdef"
VOICE_ID = "voice-abc"
MODEL = "eleven_flash_v2_5"
SID = "CAelevenlabs0001"
WS_PATH = f"/v1/text-to-speech/{VOICE_ID}/stream-input"
HTTP_PATH = f"/v1/text-to-speech/{VOICE_ID}/stream"
PIECES = (70, 500, 700)
"""Sizes of the first audio messages (the rest in 700-byte messages): not frame-aligned on purpose."""


def audio_for(text: str) -> bytes:
    """The audio the fake engine speaks for ``text``: distinct per sentence, 40 bytes (5 ms) per character."""
    return (hashlib.sha256(text.encode()).digest() * 200)[: 40 * len(text)]


def pieces(data: bytes) -> list[bytes]:
    out, i = [], 0
    for size in PIECES:
        out.append(data[i : i + size])
        i += size
    out += [data[j : j + 700] for j in range(i, len(data), 700)]
    return [p for p in out if p]


def padded(data: bytes) -> bytes:
    return data + silence_ulaw(-len(data) % FRAME_BYTES)


# --- the stream-input server ---------------------------------------------------------------------------------


@dataclass
class WsServer:
    """Scripted stream-input endpoint. ``script`` gives each sentence's behaviour, in the order texts arrive:
    ``normal`` (all audio, isFinal, close), ``hold`` (1600 bytes, then wait for the client to close),
    ``drop`` (1600 bytes, then the TCP connection is cut), ``silent`` (nothing until the client closes)."""

    port: int = 0
    reject: HTTPStatus | None = None
    reject_body: str = ""
    idle_close_s: float | None = None
    script: list[str] = field(default_factory=list)
    handshakes: int = 0
    numbers: dict[ServerConnection, int] = field(default_factory=dict)
    texts: list[tuple[int, str]] = field(default_factory=list)
    """(connection number, sentence) for every sentence received."""
    client_closed: dict[int, asyncio.Event] = field(default_factory=dict)
    idle_closed: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[str] = field(default_factory=list)

    def check_request(self, connection: ServerConnection, request: WsRequest) -> WsResponse | None:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if url.path != WS_PATH or query.get("output_format") != ["ulaw_8000"] or query.get("model_id") != [MODEL]:
            self.errors.append(f"bad request {request.path}")
            return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        if request.headers.get("xi-api-key") != KEY:
            echoed = request.headers.get("xi-api-key")  # a server that echoes the key: the client must not
            return connection.respond(HTTPStatus.UNAUTHORIZED, f'{{"detail": "invalid_api_key {echoed}"}}')
        if self.reject is not None:
            return connection.respond(self.reject, self.reject_body)
        self.numbers[connection] = n = self.handshakes  # counted before the client sees the handshake end
        self.handshakes += 1
        self.client_closed[n] = asyncio.Event()
        return None

    async def handler(self, ws: ServerConnection) -> None:
        n = self.numbers[ws]
        closed = self.client_closed[n]
        try:
            async with asyncio.timeout(self.idle_close_s):
                init = json.loads(await ws.recv())
        except TimeoutError:
            await ws.close(1008, "Have not received a new text input within the timeout of 20 seconds.")
            self.idle_closed.set()
            return
        except Exception:
            closed.set()
            return
        text_msg, end_msg = json.loads(await ws.recv()), json.loads(await ws.recv())
        if init != {"text": " "} or end_msg != {"text": ""} or text_msg.get("flush") is not True:
            self.errors.append(f"bad messages {init} {text_msg} {end_msg}")
        if not text_msg["text"].endswith(" "):
            self.errors.append(f"text must end with a space: {text_msg['text']!r}")
        text = text_msg["text"].strip()
        self.texts.append((n, text))
        mode = self.script.pop(0) if self.script else "normal"
        audio = audio_for(text)
        try:
            if mode == "normal":
                for piece in pieces(audio):
                    await ws.send(json.dumps({"audio": base64.b64encode(piece).decode(), "alignment": None}))
                await ws.send(json.dumps({"audio": None, "isFinal": True}))
                await ws.close()
                return
            if mode in ("hold", "drop"):
                await ws.send(json.dumps({"audio": base64.b64encode(audio[:1600]).decode()}))
                if mode == "drop":
                    ws.transport.abort()
                    return
            await ws.wait_closed()
            closed.set()
        except Exception:
            closed.set()


@pytest.fixture
async def ws_server() -> AsyncIterator[WsServer]:
    server = WsServer()
    async with serve(server.handler, "127.0.0.1", 0, process_request=server.check_request) as srv:
        server.port = srv.sockets[0].getsockname()[1]
        yield server
    assert not server.errors


# --- the HTTP streaming server -------------------------------------------------------------------------------


@dataclass
class HttpServer:
    port: int = 0
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def stream(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        if request.query_params.get("output_format") != "ulaw_8000" or body.get("model_id") != MODEL:
            self.errors.append(f"bad request {request.url} {body}")
        if request.headers.get("xi-api-key") != KEY:
            return JSONResponse({"detail": {"status": "invalid_api_key", "message": "bad key"}}, status_code=401)
        if self.status != 200:
            detail = {"status": "too_many_concurrent_requests", "message": "concurrency limit"}
            return JSONResponse({"detail": detail}, status_code=self.status)

        async def chunks() -> AsyncIterator[bytes]:
            for piece in pieces(audio_for(body["text"])):
                yield piece
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="audio/basic")


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    server = HttpServer()
    app = Starlette(routes=[Route(HTTP_PATH, server.stream, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server.port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", http="h11", access_log=False)
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    yield server
    uv.should_exit = True
    await task
    sock.close()
    assert not server.errors


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}{WS_PATH}?model_id={MODEL}&output_format=ulaw_8000&inactivity_timeout=60"


@contextlib.asynccontextmanager
async def make_voice(base_port: int, **kwargs: Any) -> AsyncIterator[ElevenLabsVoice]:
    kwargs = {"voice_id": VOICE_ID, "model": MODEL, "timeout_s": 2.0, **kwargs}
    voice = ElevenLabsVoice(kwargs.pop("api_key", KEY), base_url=f"http://127.0.0.1:{base_port}", **kwargs)
    try:
        yield voice
    finally:
        await voice.aclose()


async def speak(voice: ElevenLabsVoice, text: str, cancel: threading.Event | None = None) -> list[bytes]:
    async with contextlib.aclosing(voice.synthesize(text, call_sid=SID, cancel=cancel or threading.Event())) as it:
        return [chunk async for chunk in it]


def assert_chunking(chunks: list[bytes], chunk_bytes: int = 800) -> None:
    assert chunks and all(len(c) % FRAME_BYTES == 0 and 0 < len(c) <= chunk_bytes for c in chunks)
    assert all(len(c) == chunk_bytes for c in chunks[1:-1])


# --- tests ---------------------------------------------------------------------------------------------------


def test_urls_are_derived_from_the_base_url_and_parameters_are_checked() -> None:
    voice = ElevenLabsVoice(KEY, voice_id="v 1", model=MODEL, timeout_s=3.0)
    assert voice.ws_url == (
        "wss://api.elevenlabs.io/v1/text-to-speech/v%201/stream-input"
        f"?model_id={MODEL}&output_format=ulaw_8000&inactivity_timeout=60"
    )
    assert voice.http_url == "https://api.elevenlabs.io/v1/text-to-speech/v%201/stream"
    proxied = ElevenLabsVoice(KEY, base_url="http://proxy:8080/el/", voice_id="v", model="m", timeout_s=1)
    assert proxied.ws_url.startswith("ws://proxy:8080/el/v1/text-to-speech/v/stream-input?")
    _typed: Voice = voice  # the class satisfies the worker's interface (checked by mypy)
    assert _typed.name == "elevenlabs"
    for bad in ({"chunk_ms": 30}, {"timeout_s": 0}, {"base_url": "ftp://x"}, {"inactivity_timeout_s": 181}):
        with pytest.raises(ValueError, match="ElevenLabsVoice"):
            ElevenLabsVoice(KEY, **{"voice_id": "v", "model": "m", "timeout_s": 1.0, **bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ELEVENLABS_API_KEY"):
        ElevenLabsVoice("", voice_id="v", model="m", timeout_s=1.0)


async def test_one_sentence_returns_the_exact_audio_in_whole_frame_chunks(ws_server: WsServer) -> None:
    text = "Your order shipped yesterday."
    async with make_voice(ws_server.port) as voice:
        chunks = await speak(voice, text)
    assert b"".join(chunks) == padded(audio_for(text))
    assert_chunking(chunks)
    assert len(chunks[0]) == 480  # first chunk as soon as frames are there: 70 + 500 bytes -> 3 frames
    assert ws_server.texts == [(0, text)]


async def test_two_sentences_on_one_call_reuse_the_prewarmed_socket(ws_server: WsServer) -> None:
    first, second = "It ships today.", "It should arrive on Friday."
    async with make_voice(ws_server.port) as voice:
        assert b"".join(await speak(voice, first)) == padded(audio_for(first))
        await voice.prewarm(SID)  # the spare opened during the first sentence
        assert ws_server.handshakes == 2
        chunks = await speak(voice, second)
        assert b"".join(chunks) == padded(audio_for(second))
        assert_chunking(chunks)
        assert ws_server.texts == [(0, first), (1, second)]  # no handshake while the second sentence waited
        await voice.prewarm(SID)
        await voice.end_call(SID)
        async with asyncio.timeout(2):
            await ws_server.client_closed[2].wait()  # end_call closed the call's spare


async def test_cancel_stops_at_once_and_the_next_sentence_gets_only_its_own_audio(ws_server: WsServer) -> None:
    ws_server.script = ["hold", "normal"]
    cancel = threading.Event()
    async with make_voice(ws_server.port) as voice:
        stream = voice.synthesize("A long answer that the caller interrupts.", call_sid=SID, cancel=cancel)
        async with contextlib.aclosing(stream):
            first = await anext(stream)
            assert len(first) == 800  # the server sent 1600 bytes: a second chunk is ready...
            cancel.set()
            with pytest.raises(StopAsyncIteration):
                await anext(stream)  # ...but is never yielded
        async with asyncio.timeout(2):
            await ws_server.client_closed[0].wait()  # the cancelled sentence's socket was closed
        text = "Sure, what else?"
        chunks = await speak(voice, text)
    assert b"".join(chunks) == padded(audio_for(text))
    assert [t for _, t in ws_server.texts][1:] == [text]


async def test_a_spare_closed_by_the_server_is_replaced_transparently(ws_server: WsServer) -> None:
    ws_server.idle_close_s = 0.05
    async with make_voice(ws_server.port) as voice:
        await voice.prewarm(SID)
        async with asyncio.timeout(2):
            await ws_server.idle_closed.wait()
        text = "Still here."
        assert b"".join(await speak(voice, text)) == padded(audio_for(text))
    assert ws_server.texts == [(1, text)]


async def test_401_at_the_handshake_is_final_and_never_shows_the_key(
    ws_server: WsServer, http_server: HttpServer
) -> None:
    async with make_voice(http_server.port, api_key="sk-wrong-key", ws_url=ws_url(ws_server.port)) as voice:
        with pytest.raises(VoiceError) as err:
            await speak(voice, "Hello there.")
    message = str(err.value)
    assert "401" in message and VOICE_ID in message and "elevenlabs" in message
    assert "invalid_api_key ***" in message and "sk-wrong-key" not in message
    assert err.value.chunks_yielded == 0
    assert http_server.requests == []  # no HTTP fallback for a bad key


async def test_429_falls_back_to_http_once(ws_server: WsServer, http_server: HttpServer) -> None:
    ws_server.reject, ws_server.reject_body = HTTPStatus.TOO_MANY_REQUESTS, '{"detail": "too_many_concurrent_requests"}'
    text = "Your refund is on its way."
    async with make_voice(http_server.port, ws_url=ws_url(ws_server.port)) as voice:
        chunks = await speak(voice, text)
        assert b"".join(chunks) == padded(audio_for(text))
        assert_chunking(chunks)
        assert http_server.requests == [{"text": text, "model_id": MODEL}]
        http_server.status = 429
        with pytest.raises(VoiceError, match=r"HTTP\): HTTP 429: too_many_concurrent_requests") as err:
            await speak(voice, "And again.")
    assert err.value.chunks_yielded == 0
    assert len(http_server.requests) == 2  # one HTTP attempt per sentence


async def test_a_refused_websocket_falls_back_to_http(http_server: HttpServer) -> None:
    text = "We are open until six."
    async with make_voice(http_server.port, ws_url=ws_url(closed_port())) as voice:
        assert b"".join(await speak(voice, text)) == padded(audio_for(text))
    assert len(http_server.requests) == 1


async def test_no_audio_within_the_timeout_is_an_error_in_time(ws_server: WsServer) -> None:
    ws_server.script = ["silent"]
    async with make_voice(ws_server.port, timeout_s=0.3) as voice:
        started = time.perf_counter()
        with pytest.raises(VoiceError, match=rf"voice {VOICE_ID}, websocket\): timeout: no audio for 0.3 s") as err:
            await speak(voice, "Hello?")
        elapsed = time.perf_counter() - started
        async with asyncio.timeout(2):
            await ws_server.client_closed[0].wait()
    assert 0.3 <= elapsed < 0.6
    assert err.value.chunks_yielded == 0


async def test_a_drop_mid_sentence_is_an_error_with_chunks_yielded(ws_server: WsServer) -> None:
    ws_server.script = ["drop"]
    text = "This sentence is cut off in the middle by a network drop."
    chunks: list[bytes] = []
    async with make_voice(ws_server.port) as voice:
        with pytest.raises(VoiceError, match="connection dropped") as err:
            async with contextlib.aclosing(voice.synthesize(text, call_sid=SID, cancel=threading.Event())) as it:
                async for chunk in it:
                    chunks.append(chunk)
    assert err.value.chunks_yielded == len(chunks) == 2
    assert b"".join(chunks) == audio_for(text)[:1600]
