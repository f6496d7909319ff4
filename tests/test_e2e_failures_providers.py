"""Cloud providers failing mid-call, end to end: the real stack on ``STT_PROVIDER=deepgram``,
``TTS_PROVIDER=elevenlabs`` and ``BRAIN_MODE=llm``, each pointed at a local server speaking the provider's protocol
(protocols.md §4-6) that fails on cue, and one call through the real Twilio protocol.

- Deepgram refuses every connection with 429 (and ``Retry-After``): stt retries once, then recognizes the call with
  the embedded recognizer, from the audio it buffered.
- The LLM times out (no first token), answers 429, then drops its stream after one sentence: each time the rules
  dialog answers within the same turn (after the sentence already said).
- ElevenLabs times out on the hours answer, is busy on the hoodie answer (429 in the stream, then at the next
  handshake and over HTTP, as far as the client's time budget goes), and drops mid-stream on the LLM's sentence:
  espeak-ng speaks each sentence, once.

The fake ElevenLabs speaks a pure 1 kHz tone (its length follows the text), so every 20 ms the caller heard is
told apart: the tone is ElevenLabs, anything else voiced is espeak-ng. Checked: every caller frame reached
``audio.in`` in order, no sentence was sent twice, every reply was heard once (the one documented exception: a
sentence dropped mid-stream is heard in full after the part that had played), and the call went on to its end.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxcart.brain.llm.testing import Reply, ScriptedLlmServer, chunk
from voxcart.cli.caller_voice import synthesize_caller
from voxcart.cli.calling import DEV_AUTH_TOKEN
from voxcart.cli.simulator import CallResult, Line, SimulatorConfig, simulate_call
from voxcart.cli.stack import Stack
from voxcart.common import events as ev
from voxcart.common.audio import FRAME_BYTES, pcm16_to_ulaw, ulaw_rms, ulaw_to_pcm16
from voxcart.common.bus import RedisBus, keys
from voxcart.tts.espeak import VoiceSettings
from voxcart.tts.synth import EspeakSynthesizer

pytestmark = pytest.mark.e2e

KEY = "provider-test-key"
TONE_HZ = 1000
TONE_MS_PER_CHAR = 25
DROP_AFTER_MS = 300
"""The dropping ElevenLabs stream sends this much audio of the sentence, then closes (1011)."""
VOICE_RMS = 200.0

Fault = Literal["ok", "timeout", "busy", "drop"]
HOURS, HOODIE, ORDER = "what are your opening hours", "is the blue hoodie in stock in medium", "where is my order"
LLM_SENTENCE = "Let me look that up for you."
FAULTS: dict[str, Fault] = {"monday": "timeout", "trail hoodie": "busy", "let me look that up": "drop"}
"""ElevenLabs faults by a piece of the sentence: the rules' hours answer, their hoodie answer, the LLM's sentence."""
BUSY_BODY = {"detail": {"status": "too_many_concurrent_requests", "message": "Too many concurrent requests."}}


def tone(text: str) -> bytes:
    seconds = min(2.5, max(0.2, len(text) * TONE_MS_PER_CHAR / 1000))
    t = np.arange(int(8000 * seconds)) / 8000
    return pcm16_to_ulaw((8000 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16))


def is_tone(frame: bytes) -> bool:
    spectrum = np.abs(np.fft.rfft(ulaw_to_pcm16(frame).astype(np.float64))) ** 2
    at = TONE_HZ * len(frame) // 8000  # 50 Hz bins
    return bool(spectrum[at - 1 : at + 2].sum() > 0.8 * spectrum.sum())


@dataclass
class FakeProviders:
    """ElevenLabs (stream-input websocket and HTTP streaming) and Deepgram (every handshake 429) on one server."""

    requests: list[tuple[str, str, Fault]] = field(default_factory=list)
    """(transport, sentence, fault) of every ElevenLabs request that carried text."""
    refused_handshakes: int = 0
    deepgram_attempts: list[str] = field(default_factory=list)
    """The ``Authorization`` header of each Deepgram handshake."""
    refuse_next: bool = False
    port: int = 0

    @staticmethod
    def fault(text: str) -> Fault:
        return next((f for key, f in FAULTS.items() if key in text.lower()), "ok")

    async def stream_input(self, ws: WebSocket) -> None:
        if ws.headers.get("xi-api-key") != KEY:
            await ws.send_denial_response(JSONResponse({"detail": {"status": "invalid_api_key"}}, 401))
            return
        if self.refuse_next:  # the plan's concurrency is used up: refuse at the handshake too
            self.refuse_next = False
            self.refused_handshakes += 1
            await ws.send_denial_response(JSONResponse(BUSY_BODY, 429))
            return
        await ws.accept()
        try:
            text = ""
            while not text:  # the init message is a single space; a spare socket may never get text
                text = json.loads(await ws.receive_text()).get("text", "").strip()
            fault = self.fault(text)
            self.requests.append(("websocket", text, fault))
            if fault == "timeout":
                while True:  # read the end of input, then say nothing until the client gives up
                    await ws.receive_text()
            if fault == "busy":
                self.refuse_next = True
                await ws.send_json({"error": "too_many_concurrent_requests", "message": "429 concurrency limit"})
                await ws.close(1008)
                return
            audio = tone(text)[: 8 * DROP_AFTER_MS] if fault == "drop" else tone(text)
            for i in range(0, len(audio), 800):
                await ws.send_json({"audio": base64.b64encode(audio[i : i + 800]).decode()})
            if fault == "drop":
                await ws.close(1011)  # mid-sentence, no isFinal
                return
            await ws.send_json({"audio": None, "isFinal": True})
            await ws.close()
        except WebSocketDisconnect:
            pass

    async def http_stream(self, request: Request) -> Response:
        text = str((await request.json()).get("text", "")).strip()
        fault = self.fault(text)
        self.requests.append(("HTTP", text, fault))
        if fault == "busy":
            return JSONResponse(BUSY_BODY, 429)
        if fault == "timeout":
            await asyncio.sleep(30)
        return StreamingResponse(iter([tone(text)]), media_type="audio/basic")

    async def deepgram(self, ws: WebSocket) -> None:
        self.deepgram_attempts.append(ws.headers.get("authorization", ""))
        headers = {"Retry-After": "0", "dg-request-id": f"req-{len(self.deepgram_attempts)}"}
        await ws.send_denial_response(JSONResponse({"err_code": "TOO_MANY_REQUESTS"}, 429, headers=headers))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                WebSocketRoute("/v1/text-to-speech/{voice}/stream-input", self.stream_input),
                Route("/v1/text-to-speech/{voice}/stream", self.http_stream, methods=["POST"]),
                WebSocketRoute("/v1/listen", self.deepgram),
            ]
        )


@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeProviders]:
    fake = FakeProviders()
    config = uvicorn.Config(fake.app(), host="127.0.0.1", port=0, log_level="critical", ws="websockets-sansio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-providers", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the fake provider server did not start"
    fake.port = server.servers[0].sockets[0].getsockname()[1]
    yield fake
    server.should_exit = True
    thread.join(timeout=10)


@dataclass
class ThreadedLlm:
    """A :class:`ScriptedLlmServer` on its own event loop thread, so it outlives each test's loop."""

    server: ScriptedLlmServer
    loop: asyncio.AbstractEventLoop

    def script(self, *replies: Reply) -> None:
        self.loop.call_soon_threadsafe(self.server.script, *replies)

    @property
    def requests(self) -> list[dict[str, object]]:
        return list(self.server.requests)


@pytest.fixture(scope="module")
def llm() -> Iterator[ThreadedLlm]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="scripted-llm", daemon=True)
    thread.start()
    server = ScriptedLlmServer()
    asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(10)
    yield ThreadedLlm(server, loop)
    asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


@pytest.fixture(scope="module")
def cloud(
    stack_runner: Callable[..., AbstractContextManager[Stack]], fakes: FakeProviders, llm: ThreadedLlm
) -> Iterator[Stack]:
    base = f"http://127.0.0.1:{fakes.port}"
    env = {
        "STT_PROVIDER": "deepgram",
        "DEEPGRAM_API_KEY": KEY,
        "DEEPGRAM_URL": f"ws://127.0.0.1:{fakes.port}/v1/listen",
        "TTS_PROVIDER": "elevenlabs",
        "ELEVENLABS_API_KEY": KEY,
        "ELEVENLABS_URL": base,
        "BRAIN_MODE": "llm",
        "LLM_BASE_URL": llm.server.base_url,
        "LLM_MODEL": "scripted",
        "PROVIDER_TIMEOUT_MS": "1000",
        "TTS_FALLBACK_COOLDOWN_MS": "0",  # every sentence tries ElevenLabs first: each fault is its own
    }
    with stack_runner("providers", {"stt": 1, "brain": 1, "tts": 1}, env) as running:
        yield running


def line(text: str) -> Line:
    return Line(synthesize_caller(text, lead_ms=200, tail_ms=100), text)


def espeak_voiced_frames(text: str) -> int:
    """How many voiced 20 ms frames espeak-ng (the tts fallback, default voice and rate) makes of ``text``."""
    audio = b"".join(EspeakSynthesizer(VoiceSettings()).synthesize(text))
    return sum(ulaw_rms(audio[i : i + FRAME_BYTES]) > VOICE_RMS for i in range(0, len(audio), FRAME_BYTES))


def heard(audio: bytes | bytearray) -> tuple[int, int]:
    """(tone frames, other voiced frames) of a turn's agent audio: ElevenLabs, espeak-ng."""
    frames = [bytes(audio[i : i + FRAME_BYTES]) for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES)]
    voiced = [f for f in frames if ulaw_rms(f) > VOICE_RMS]
    tones = sum(is_tone(f) for f in voiced)
    return tones, len(voiced) - tones


def tone_before_espeak(audio: bytes | bytearray) -> int:
    """Tone frames a turn's audio starts with, before its first voiced frame that is not tone."""
    count = 0
    for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES):
        frame = bytes(audio[i : i + FRAME_BYTES])
        if ulaw_rms(frame) > VOICE_RMS:
            if not is_tone(frame):
                break
            count += 1
    return count


async def test_provider_faults_fall_back_within_the_turn_and_the_call_goes_on(
    cloud: Stack, fakes: FakeProviders, llm: ThreadedLlm
) -> None:
    # one sentence, the start of the next, then the stream ends: no finish_reason, no [DONE]
    opening = [chunk({"role": "assistant", "content": ""}), chunk({"content": LLM_SENTENCE + " "})]
    truncated = Reply(events=[*opening, chunk({"content": "Your order"})], done=False)
    llm.script(Reply(stall=True), Reply(status=429, body='{"error":{"message":"Rate limit reached"}}'), truncated)
    items = [await asyncio.to_thread(line, text) for text in (HOURS, HOODIE, ORDER)]
    config = SimulatorConfig(gateway_url=cloud.gateway_url, auth_token=DEV_AUTH_TOKEN, from_number="+15550008001")
    result = await simulate_call(config, items)
    bus = RedisBus(cloud.redis_url)
    try:
        await check_call(bus, result, fakes, llm)
    finally:
        await bus.close()


async def check_call(bus: RedisBus, result: CallResult, fakes: FakeProviders, llm: ThreadedLlm) -> None:
    assert result.record is not None, result.errors
    turns = result.record["turns"]
    caller = [t["text"] for t in turns if t["speaker"] == "caller"]
    agent = [t["text"] for t in turns if t["speaker"] == "agent"]
    # Deepgram: refused, retried once, then the embedded recognizer heard every line from the start
    assert fakes.deepgram_attempts[:2] == [f"Token {KEY}"] * 2, fakes.deepgram_attempts
    assert "hours" in caller[0] and "hoodie" in caller[1] and "order" in caller[2], caller
    # every caller frame reached stt's input, in order, with the bytes sent
    frames = [ev.decode(e.data) for e in await bus.range(keys.audio_in(result.call_sid))]
    assert [f.chunk for f in frames if isinstance(f, ev.AudioFrame)] == list(range(1, result.streams[0].frames + 1))
    assert b"".join(f.payload for f in frames if isinstance(f, ev.AudioFrame)) == bytes(result.caller_track)
    # the LLM failed three ways; the rules answered each turn (after the sentence the model had said)
    assert len(llm.requests) == 3, llm.requests
    assert "open" in agent[1].lower() and "hoodie" in agent[2].lower(), agent
    assert agent[3].startswith(LLM_SENTENCE) and agent[3].count(LLM_SENTENCE) == 1, agent
    assert "order number" in agent[3].lower(), agent
    # ElevenLabs: each faulty sentence tried as the fault allows, then spoken by espeak-ng
    by_fault = {f: [(t, x) for t, x, g in fakes.requests if g == f] for f in ("timeout", "busy", "drop")}
    assert [t for t, _ in by_fault["timeout"]] == ["websocket"], by_fault  # the time budget was spent: no HTTP
    # in-stream 429 first; then a fresh websocket (refused at the handshake) and HTTP 429, as far as the budget goes
    assert by_fault["busy"] and by_fault["busy"][0][0] == "websocket", by_fault
    assert [t for t, _ in by_fault["drop"]] == ["websocket"], by_fault
    assert any(t == "websocket" and g == "ok" for t, _, g in fakes.requests), "ElevenLabs spoke the rest"
    # what the caller heard: each faulty sentence once in espeak-ng's voice, the rest in ElevenLabs' tone
    sentences = {
        1: next(x for _, x in by_fault["timeout"]),
        2: next(x for _, x in by_fault["busy"]),
        3: next(x for _, x in by_fault["drop"]),
    }
    for index, sentence in sentences.items():
        tones, spoken = heard(result.turns[index].agent_audio)
        expected = await asyncio.to_thread(espeak_voiced_frames, sentence)
        assert 0.75 * expected <= spoken <= 1.25 * expected, (index, sentence, spoken, expected)
        assert tones > 0, f"turn {index}: the other sentences were ElevenLabs'"
    assert tone_before_espeak(result.turns[3].agent_audio) <= DROP_AFTER_MS // 20 + 1, "more than the part sent"
    # no sentence sent twice, no turn recorded twice, the call went on to the caller's hang-up
    marks = [w.name for w in result.wire if w.kind == "mark"]
    assert len(marks) == len(set(marks)), marks
    assert len({t["turn_no"] for t in turns if t["speaker"] == "agent"}) == len(agent)
    assert not any(t.timed_out for t in result.turns) and result.ended_by == "caller" and not result.errors
    faulty = [r for r in fakes.requests if r[2] != "ok"]
    print(f"ElevenLabs faulty requests {faulty}, handshakes refused {fakes.refused_handshakes}; Deepgram attempts "
          f"{len(fakes.deepgram_attempts)}")  # fmt: skip
