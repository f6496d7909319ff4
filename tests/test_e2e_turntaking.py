"""Turn-taking end to end, through the real Twilio protocol against the real stack: an interruption mid-reply is
cleared promptly and no audio of the cut turn reaches the caller after the ``clear``; a backchannel ("uh huh")
and a door slam during a reply do not stop it; a goodbye's last sentence plays in full before the hang-up.

The caller here is a minimal Twilio media stream of this module's own (the simulator in libs/cli waits for the
agent to finish before each line; these tests need the caller to speak at a chosen moment *during* agent audio).
It plays the agent's audio at real time like Twilio: marks echo when the audio before them has played, ``clear``
drops what is queued and echoes the outstanding marks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from voxcart.cli.caller_voice import synthesize_caller
from voxcart.cli.calling import DEV_AUTH_TOKEN
from voxcart.cli.stack import Stack
from voxcart.common import events as ev
from voxcart.common.audio import FRAME_BYTES, pcm16_to_ulaw, silence_ulaw, ulaw_rms
from voxcart.common.bus import keys
from voxcart.gateway.twilio.signature import compute_signature

pytestmark = pytest.mark.e2e

TICK = 0.02
SILENCE = silence_ulaw(FRAME_BYTES)
VOICE_RMS = 200.0


@dataclass
class Heard:
    """What the caller's phone saw, in loop time (seconds)."""

    media: list[tuple[float, bytes]] = field(default_factory=list)
    marks: list[tuple[float, str, bool]] = field(default_factory=list)
    """(time echoed, name, played)"""
    clears: list[float] = field(default_factory=list)
    closed_at: float | None = None


class Phone:
    """One call: the signed webhook, then a media stream sending a caller frame every 20 ms and playing the agent."""

    def __init__(self, stack: Stack, from_number: str = "+15550007777") -> None:
        self.stack = stack
        self.sid = "CA" + secrets.token_hex(16)
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.from_number = from_number
        self.heard = Heard()
        self.caller_q: deque[bytes] = deque()
        self.first_voiced_sent: list[float] = []
        """Loop time at which the first voiced frame of each queued caller line went out."""
        self._line_starts: deque[int] = deque()
        self._sent_frames = 0
        self._queued_frames = 0
        self.playback: deque[bytes | str] = deque()
        self.ws: ClientConnection | None = None
        self.loop = asyncio.get_running_loop()
        self._seq = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def _webhook(self) -> str:
        url = f"{self.stack.gateway_url}/twilio/voice"
        params = {
            "CallSid": self.sid,
            "AccountSid": "AC" + "0" * 32,
            "From": self.from_number,
            "To": "+15550100002",
            "CallStatus": "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        headers = {
            "X-Twilio-Signature": compute_signature(DEV_AUTH_TOKEN, url, params),
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.post(url, data=params, headers=headers)
        assert r.status_code == 200, r.text
        stream = ET.fromstring(r.text).find("Connect/Stream")
        assert stream is not None, r.text
        return stream.get("url", "")

    async def _send(self, event: str, body: dict[str, Any]) -> None:
        self._seq += 1
        assert self.ws is not None
        await self.ws.send(json.dumps({"event": event, "sequenceNumber": str(self._seq), "streamSid": self.stream_sid,
                                       event: body}))  # fmt: skip

    async def __aenter__(self) -> Phone:
        url = await self._webhook()
        gw = self.stack.gateway_url.replace("http://", "ws://")
        path = url.split("://", 1)[1].split("/", 1)[1]
        headers = {"X-Twilio-Signature": compute_signature(DEV_AUTH_TOKEN, url, {})}
        self.ws = await connect(f"{gw}/{path}", additional_headers=headers, compression=None)
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {"streamSid": self.stream_sid, "accountSid": "AC" + "0" * 32, "callSid": self.sid,
                 "tracks": ["inbound"], "customParameters": {},
                 "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}  # fmt: skip
        await self._send("start", start)
        self._tasks = [asyncio.create_task(self._ticker()), asyncio.create_task(self._reader())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()

    def say(self, audio: bytes) -> None:
        """Queue caller audio (μ-law) to go out from the next tick."""
        frames = [audio[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff") for i in range(0, len(audio), FRAME_BYTES)]
        voiced = next((i for i, f in enumerate(frames) if ulaw_rms(f) > VOICE_RMS), 0)
        self._line_starts.append(self._queued_frames + voiced)
        self._queued_frames += len(frames)
        self.caller_q.extend(frames)

    async def _ticker(self) -> None:
        next_t = self.loop.time()
        chunk = 0
        while True:
            if self.caller_q:
                frame = self.caller_q.popleft()
                if self._line_starts and self._sent_frames == self._line_starts[0]:
                    self._line_starts.popleft()
                    self.first_voiced_sent.append(self.loop.time())
                self._sent_frames += 1
            else:
                frame = SILENCE
            chunk += 1
            body = {"track": "inbound", "chunk": str(chunk), "timestamp": str((chunk - 1) * 20),
                    "payload": base64.b64encode(frame).decode()}  # fmt: skip
            await self._send("media", body)
            await self._play()
            next_t += TICK
            await asyncio.sleep(max(0.0, next_t - self.loop.time()))

    async def _play(self) -> None:
        need = FRAME_BYTES
        while self.playback:
            head = self.playback[0]
            if isinstance(head, str):
                self.playback.popleft()
                self.heard.marks.append((self.loop.time(), head, True))
                await self._send("mark", {"name": head})
                continue
            if need == 0:
                break
            take = head[:need]
            need -= len(take)
            if len(take) == len(head):
                self.playback.popleft()
            else:
                self.playback[0] = head[len(take) :]

    async def _reader(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                now = self.loop.time()
                if msg["event"] == "media":
                    payload = base64.b64decode(msg["media"]["payload"])
                    self.heard.media.append((now, payload))
                    self.playback.append(payload)
                elif msg["event"] == "mark":
                    self.playback.append(msg["mark"]["name"])
                elif msg["event"] == "clear":
                    self.heard.clears.append(now)
                    names = [s for s in self.playback if isinstance(s, str)]
                    self.playback.clear()
                    for name in names:
                        self.heard.marks.append((now, name, False))
                        await self._send("mark", {"name": name})
        except Exception:  # the gateway closed the socket
            pass
        finally:
            self.heard.closed_at = self.loop.time()

    def voiced_since(self, t: float) -> bool:
        return any(at >= t and ulaw_rms(p) > VOICE_RMS for at, p in self.heard.media)

    async def until(self, check: Callable[[], object], timeout: float, what: str) -> None:
        """Wait until ``check()`` holds; fail naming ``what`` after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not check():
                    await asyncio.sleep(TICK)
        except TimeoutError:
            raise AssertionError(f"no {what} within {timeout} s") from None

    def quiet_for(self, seconds: float) -> bool:
        """The agent has said something, all of it has played, and nothing new came for ``seconds``."""
        return bool(self.heard.media) and not self.playback and self.loop.time() - self.heard.media[-1][0] > seconds

    def marks_of(self, turn: int) -> list[tuple[float, str, bool]]:
        return [m for m in self.heard.marks if m[1].startswith(f"t{turn}-")]


async def turn_audio(stack: Stack, sid: str, turn: int) -> list[bytes]:
    """The audio tts rendered for turn ``turn``, one bytes per sentence."""
    r = aioredis.Redis.from_url(stack.redis_url)
    try:
        entries: Any = await r.xrange(keys.audio_out(sid))
    finally:
        await r.aclose()
    sentences: dict[int, bytearray] = {}
    for _, fields in entries:
        chunk = ev.decode(fields[b"d"])
        if isinstance(chunk, ev.AudioChunk) and chunk.turn_no == turn:
            sentences.setdefault(chunk.seq, bytearray()).extend(chunk.payload)
    return [bytes(sentences[k]) for k in sorted(sentences)]


def stale_slices(cut: list[bytes], after: bytes) -> int:
    """How many voiced 20 ms slices of the cut turn's audio occur in ``after`` (the audio received after the clear),
    whatever the framing the pacer gave them."""
    slices = [s[i : i + FRAME_BYTES] for s in cut for i in range(0, len(s) - FRAME_BYTES + 1, FRAME_BYTES)]
    return sum(1 for piece in slices if ulaw_rms(piece) > VOICE_RMS and piece in after)


async def sentences(stack: Stack, sid: str, turn: int) -> int:
    """How many sentences tts rendered for turn ``turn``."""
    r = aioredis.Redis.from_url(stack.redis_url)
    try:
        entries: Any = await r.xrange(keys.audio_out(sid))
    finally:
        await r.aclose()
    seqs = {c.seq for _, f in entries if isinstance(c := ev.decode(f[b"d"]), ev.AudioChunk) and c.turn_no == turn}
    return len(seqs)


def door_slam() -> bytes:
    rng = np.random.default_rng(7)
    n = 8 * 160
    x = rng.normal(0, 12_000, n) * np.exp(-np.arange(n) / (n / 4))
    return pcm16_to_ulaw(np.clip(x, -32_000, 32_000).astype(np.int16)) + silence_ulaw(8 * 400)


async def greeting_playing(phone: Phone, seconds: float) -> float:
    """Wait until the greeting has played for ``seconds``; the loop time then."""
    await phone.until(lambda: phone.heard.media, 30, "the greeting's audio")
    started = phone.heard.media[0][0]
    await asyncio.sleep(max(0.0, started + seconds - phone.loop.time()))
    return phone.loop.time()


async def test_interruption_mid_reply_is_cleared_and_nothing_of_the_cut_turn_follows(stack: Stack) -> None:
    line = await asyncio.to_thread(synthesize_caller, "where is my order", tail_ms=1500)
    async with Phone(stack) as phone:
        await greeting_playing(phone, 1.0)
        phone.say(line)
        await phone.until(lambda: phone.heard.clears, 10, "a clear")
        reaction = phone.heard.clears[0] - phone.first_voiced_sent[0]
        cleared_at = phone.heard.clears[0]
        await phone.until(lambda: phone.marks_of(2), 30, "the reply to the interruption")
    cut = await turn_audio(stack, phone.sid, 1)
    after = b"".join(p for at, p in phone.heard.media if at > cleared_at)
    stale = stale_slices(cut, after)
    print(f"barge-in: first voiced frame sent -> clear received {reaction * 1000:.0f} ms")
    assert cut and len(after) > 8000, "the greeting and the reply both had audio"
    before = b"".join(p for at, p in phone.heard.media if at <= cleared_at)
    assert stale_slices(cut, before) > 10, "the stale check finds the greeting's audio where it did play"
    assert stale == 0, f"{stale} slices of the cut greeting arrived after the clear"
    assert reaction < 1.5, f"clear came {reaction:.2f} s after the interruption began"
    assert not all(played for _, _, played in phone.marks_of(1)) or len(phone.marks_of(1)) < await sentences(
        stack, phone.sid, 1
    ), "the greeting was cut: some of its sentences never played"


@pytest.mark.parametrize("sound", ["uh huh", "door"])
async def test_a_backchannel_or_a_door_does_not_stop_the_reply(stack: Stack, sound: str) -> None:
    audio = door_slam() if sound == "door" else await asyncio.to_thread(synthesize_caller, sound, tail_ms=400)
    async with Phone(stack) as phone:
        await greeting_playing(phone, 1.0)
        phone.say(audio)
        await phone.until(lambda: phone.quiet_for(2.5), 40, "end of the greeting")  # a reply would have begun
        heard = list(phone.heard.marks)
        clears = list(phone.heard.clears)
    assert clears == [], f"{sound!r} stopped the agent"
    assert all(played for _, name, played in heard if name.startswith("t1-")), heard
    assert not any(name.startswith("t2-") for _, name, _ in heard), "the backchannel was answered"


async def test_goodbye_plays_in_full_before_the_hang_up(stack: Stack) -> None:
    line = await asyncio.to_thread(synthesize_caller, "goodbye", tail_ms=400)
    async with Phone(stack) as phone:
        await phone.until(lambda: phone.quiet_for(0.8), 40, "end of the greeting")
        phone.say(line)
        await phone.until(lambda: phone.heard.closed_at is not None, 40, "the hang-up")
    closed = phone.heard.closed_at
    assert closed is not None
    bye = phone.marks_of(2)
    assert bye and all(played for _, _, played in bye), bye
    assert max(at for at, _, _ in bye) <= closed, "the socket closed before the goodbye had played"
    assert phone.heard.clears == [] and not phone.playback, "the goodbye was played to its last frame"
    heard = b"".join(p for _, p in phone.heard.media)
    bye_audio = await turn_audio(stack, phone.sid, 2)
    assert bye_audio and all(s in heard for s in bye_audio), "every byte of the goodbye reached the caller"
