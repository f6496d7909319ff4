"""``voxcart_provider_requests_total{provider="elevenlabs"}`` against local servers.

One request per sentence per transport, counted when it ends: a sentence spoken over the websocket is ``ok``
(its first audio observed as the first response); a 429 at the websocket handshake and then from the HTTP
fallback are two ``rate_limited`` requests; a socket cut after some audio is ``dropped``; a sentence the caller
interrupted is ``cancelled``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voxcart.tts.elevenlabs import ElevenLabsVoice
from voxcart.tts.voice import VoiceError

SID = "CAelevenlabsmetrics"
LABELS = {"svc": "tts", "provider": "elevenlabs"}
RESULTS = ("ok", "error", "timeout", "rate_limited", "auth", "dropped", "cancelled")
AUDIO = bytes(range(256)) * 10
TOO_MANY = b'{"detail": {"status": "too_many_concurrent_requests", "message": "concurrency limit"}}'


def counts() -> dict[str, float]:
    return {
        r: REGISTRY.get_sample_value("voxcart_provider_requests_total", {**LABELS, "result": r}) or 0.0 for r in RESULTS
    }


def first_audio() -> float:
    return REGISTRY.get_sample_value("voxcart_provider_first_response_seconds_count", LABELS) or 0.0


def delta(before: dict[str, float]) -> dict[str, float]:
    return {r: n - before[r] for r, n in counts().items() if n != before[r]}


async def speak_normally(ws: ServerConnection) -> None:
    for _ in range(3):
        await ws.recv()  # init, the sentence, end of input
    await ws.send(json.dumps({"audio": base64.b64encode(AUDIO).decode()}))
    await ws.send(json.dumps({"isFinal": True}))
    await ws.close()


async def cut_after_audio(ws: ServerConnection) -> None:
    for _ in range(3):
        await ws.recv()
    await ws.send(json.dumps({"audio": base64.b64encode(AUDIO).decode()}))
    ws.transport.abort()


async def hold(ws: ServerConnection) -> None:
    for _ in range(3):
        await ws.recv()
    await ws.send(json.dumps({"audio": base64.b64encode(AUDIO).decode()}))
    with contextlib.suppress(ConnectionClosed):
        await ws.wait_closed()


def too_many(connection: ServerConnection, request: Request) -> Response:
    return connection.respond(429, TOO_MANY.decode())


@contextlib.asynccontextmanager
async def ws_server(
    handler: Callable[[ServerConnection], Awaitable[None]],
    reject: Callable[[ServerConnection, Request], Response | None] | None = None,
) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, process_request=reject) as srv:
        port = srv.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/text-to-speech/v/stream-input?model_id=m&output_format=ulaw_8000"


@contextlib.asynccontextmanager
async def http_429_server() -> AsyncIterator[str]:
    """An HTTP server that answers every request 429, as ElevenLabs does over its concurrency limit."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(TOO_MANY)}\r\nConnection: close\r\n\r\n".encode()
            + TOO_MANY
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def voice(ws_url: str, base_url: str = "http://127.0.0.1:9") -> ElevenLabsVoice:
    return ElevenLabsVoice("sk-key", base_url=base_url, voice_id="v", model="m", timeout_s=2.0, ws_url=ws_url)


async def speak(v: ElevenLabsVoice, cancel: threading.Event | None = None) -> list[bytes]:
    stream = v.synthesize("Your order shipped.", call_sid=SID, cancel=cancel or threading.Event())
    async with contextlib.aclosing(stream) as chunks:
        return [chunk async for chunk in chunks]


async def test_a_sentence_spoken_is_one_ok_request_with_its_first_audio_timed() -> None:
    before, timed = counts(), first_audio()
    async with ws_server(speak_normally) as url:
        v = voice(url)
        try:
            assert b"".join(await speak(v)).startswith(AUDIO)
        finally:
            await v.aclose()
    assert delta(before) == {"ok": 1}
    assert first_audio() == timed + 1


async def test_429_on_both_transports_counts_two_rate_limited_requests() -> None:
    before, timed = counts(), first_audio()
    async with ws_server(speak_normally, too_many) as url, http_429_server() as base:
        v = voice(url, base)
        try:
            with pytest.raises(VoiceError, match="HTTP 429"):
                await speak(v)
        finally:
            await v.aclose()
    assert delta(before) == {"rate_limited": 2}
    assert first_audio() == timed


async def test_a_cut_socket_is_dropped_and_an_interrupted_sentence_cancelled() -> None:
    before = counts()
    async with ws_server(cut_after_audio) as url:
        v = voice(url)
        try:
            with pytest.raises(VoiceError, match=r"connection dropped: .* after \d+ chunks"):
                await speak(v)
        finally:
            await v.aclose()
    assert delta(before) == {"dropped": 1}

    before, cancel = counts(), threading.Event()
    async with ws_server(hold) as url:
        v = voice(url)
        try:
            stream = v.synthesize("A long answer.", call_sid=SID, cancel=cancel)
            async with contextlib.aclosing(stream):
                await anext(stream)
                cancel.set()
                with pytest.raises(StopAsyncIteration):
                    await anext(stream)
        finally:
            await v.aclose()
    assert delta(before) == {"cancelled": 1}
