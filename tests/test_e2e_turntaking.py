"""Turn-taking end to end, through the real Twilio protocol against the real stack: an interruption mid-reply is
cleared promptly and no audio of the cut turn reaches the caller after the ``clear``; "sorry, what was that?"
after it says again what the caller heard of the cut reply (the brain's memory of it ends at the sentence cut);
a backchannel ("uh huh") and a door slam during a reply do not stop it, and with ``BRAIN_PAUSE_ON_ONSET=on`` a hum
that paused the agent lets it carry on; an order number read out in two groups is answered once, after the whole
number, while a "yes" to a yes/no question is answered measurably sooner; silence brings a re-prompt, more silence
a polite goodbye, and the hang-up comes only once the goodbye has played; a goodbye's last sentence plays in full
before the hang-up.

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
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from voxcart.brain.store import demo_seed_path
from voxcart.brain.worker import BrainState
from voxcart.cli.caller_voice import synthesize_caller
from voxcart.cli.calling import DEV_AUTH_TOKEN
from voxcart.cli.stack import Stack
from voxcart.common import events as ev
from voxcart.common.audio import FRAME_BYTES, pcm16_to_ulaw, silence_ulaw, ulaw_rms
from voxcart.common.bus import keys
from voxcart.common.seed import load_seed
from voxcart.gateway.twilio.signature import compute_signature

pytestmark = pytest.mark.e2e

TICK = 0.02
SILENCE = silence_ulaw(FRAME_BYTES)
VOICE_RMS = 200.0
SEED = load_seed(demo_seed_path())
ORDER = next(o for o in SEED.orders if o.number == "10023")
OWNER = next(c for c in SEED.customers if c.id == ORDER.customer)
STRANGER = "+15550007777"
SILENCE_TIMEOUT_S = 2.5
"""``BRAIN_SILENCE_TIMEOUT_MS`` of the tuned stack (8 s by default)."""


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
        self.last_voiced_sent: list[float] = []
        """Loop time at which the last voiced frame of each queued caller line went out."""
        self._line_starts: deque[int] = deque()
        self._line_ends: deque[int] = deque()
        self._sent_frames = 0
        self._queued_frames = 0
        self.playback: deque[bytes | str] = deque()
        self.ws: ClientConnection | None = None
        self.loop = asyncio.get_running_loop()
        self._seq = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def _webhook(self) -> tuple[str, dict[str, str]]:
        """The TwiML's stream URL and ``<Parameter>``s (the media token among them)."""
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
        return stream.get("url", ""), {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}

    async def _send(self, event: str, body: dict[str, Any]) -> None:
        self._seq += 1
        assert self.ws is not None
        await self.ws.send(json.dumps({"event": event, "sequenceNumber": str(self._seq), "streamSid": self.stream_sid,
                                       event: body}))  # fmt: skip

    async def __aenter__(self) -> Phone:
        url, parameters = await self._webhook()
        gw = self.stack.gateway_url.replace("http://", "ws://")
        path = url.split("://", 1)[1].split("/", 1)[1]
        headers = {"X-Twilio-Signature": compute_signature(DEV_AUTH_TOKEN, url, {})}
        self.ws = await connect(f"{gw}/{path}", additional_headers=headers, compression=None)
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {"streamSid": self.stream_sid, "accountSid": "AC" + "0" * 32, "callSid": self.sid,
                 "tracks": ["inbound"], "customParameters": parameters,
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
        voiced = [i for i, f in enumerate(frames) if ulaw_rms(f) > VOICE_RMS] or [0]
        self._line_starts.append(self._queued_frames + voiced[0])
        self._line_ends.append(self._queued_frames + voiced[-1])
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
                if self._line_ends and self._sent_frames == self._line_ends[0]:
                    self._line_ends.popleft()
                    self.last_voiced_sent.append(self.loop.time())
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

    def played(self, turn: int, seq: int) -> float | None:
        """When the mark after sentence ``seq`` of ``turn`` echoed as played (``None``: not, or not yet)."""
        return next((at for at, name, ok in self.heard.marks if name == f"t{turn}-s{seq}" and ok), None)

    def first_voiced_after(self, t: float) -> float | None:
        """When the first voiced frame of agent audio received after ``t`` arrived."""
        return next((at for at, p in self.heard.media if at > t and ulaw_rms(p) > VOICE_RMS), None)

    def max_media_gap(self, start: float, end: float) -> float:
        """The longest wait between two agent frames received within [start, end]."""
        times = [at for at, _ in self.heard.media if start <= at <= end]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


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


async def events_of(stack: Stack, key: str) -> list[ev.Event]:
    """Every event of one of the call's streams (``keys.events``, ``keys.control``...), in order."""
    r = aioredis.Redis.from_url(stack.redis_url)
    try:
        entries: Any = await r.xrange(key)
    finally:
        await r.aclose()
    return [ev.decode(fields[b"d"]) for _, fields in entries]


async def brain_memory(stack: Stack, sid: str) -> BrainState:
    """The brain's committed state of the call (what it remembers having said, its turn-taking state)."""
    r = aioredis.Redis.from_url(stack.redis_url)
    try:
        raw: Any = await r.hget(keys.state(sid), "brain")
    finally:
        await r.aclose()
    assert isinstance(raw, bytes), "brain has committed no state for the call"
    return msgspec.msgpack.decode(raw, type=BrainState)


async def call_record(stack: Stack, sid: str) -> dict[str, Any]:
    """``GET /calls/{sid}``: the call record (live while the call runs)."""
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"{stack.gateway_url}/calls/{sid}")
    assert r.status_code == 200, r.text
    record: dict[str, Any] = r.json()
    return record


def agent_turns(record: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {t["turn_no"]: t for t in record["turns"] if t["speaker"] == "agent"}


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


async def says(stack: Stack, sid: str, turn: int) -> list[str]:
    """The sentences brain sent tts for agent turn ``turn``, in order."""
    return [e.text for e in await events_of(stack, keys.tts(sid)) if isinstance(e, ev.Say) and e.turn_no == turn]


async def turn_played(phone: Phone, turn: int, timeout: float) -> float:
    """Wait until every sentence of agent turn ``turn`` has played (its last mark echoed); that echo's loop time."""
    deadline = phone.loop.time() + timeout
    while phone.loop.time() < deadline:
        tts = await events_of(phone.stack, keys.tts(phone.sid))
        last = [e.seq for e in tts if isinstance(e, ev.Say) and e.turn_no == turn and e.last]
        if last and (at := phone.played(turn, last[0])) is not None:
            return at
        await asyncio.sleep(0.1)
    raise AssertionError(f"agent turn {turn} did not play to its end within {timeout} s")


async def voices(*lines: tuple[str, int]) -> list[bytes]:
    """The caller voice saying each ``(text, tail_ms)``, synthesized one after the other off the event loop."""
    return await asyncio.to_thread(lambda: [synthesize_caller(text, tail_ms=tail) for text, tail in lines])


async def ask_where_the_order_is(phone: Phone, where: bytes) -> float:
    """Over the greeting, the caller asks where their order is; returns when the agent's question (turn 2: the
    order number, or "is this about order 1 0 0 2 3?" for its owner) has played."""
    await greeting_playing(phone, 1.0)
    phone.say(where)
    return await turn_played(phone, 2, 30)


async def test_what_was_that_after_an_interruption_says_again_only_what_the_caller_heard(stack: Stack) -> None:
    """The order's status (five sentences) is cut in its second sentence by "sorry, what was that?": the brain
    remembers of it the sentence heard and the one cut, and says those again, then the reply's question; the
    sentences that never played are not taken as heard."""
    assert OWNER.phone
    where, yes, what = await voices(("where is my order", 1200), ("yes", 1200), ("sorry what was that", 1200))
    async with Phone(stack, OWNER.phone) as phone:
        await ask_where_the_order_is(phone, where)
        phone.say(yes)
        await phone.until(lambda: phone.played(3, 0), 30, "the status's first sentence played")
        await asyncio.sleep(0.8)  # well into the second sentence
        cleared = len(phone.heard.clears)  # the greeting's, cut by the question
        phone.say(what)
        await phone.until(lambda: len(phone.heard.clears) > cleared, 10, "a clear of the status")
        memory = await brain_memory(stack, phone.sid)  # committed with the clear
        await phone.until(lambda: phone.played(4, 0), 30, "the repeat's first sentence played")
        record = await call_record(stack, phone.sid)
    status, repeat = await says(stack, phone.sid, 3), await says(stack, phone.sid, 4)
    print(f"cut: {status}\nremembered: {memory.dialog.last_sentences}\nrepeated: {repeat}")
    assert len(status) >= 4 and status[-1].endswith("?"), status
    asked = phone.played(2, 0) or 0.0
    assert len([at for at in phone.heard.clears if at > asked]) == 1, "the status was cleared once"
    assert [(name, ok) for _, name, ok in phone.marks_of(3)] in (
        [("t3-s0", True)],
        [("t3-s0", True), ("t3-s1", False)],
    ), "the first sentence played, the second was cut, nothing after it was sent"
    assert memory.barge.interrupted_turn == 3
    assert memory.dialog.last_sentences == status[:2], "the memory of the cut reply: the sentence heard, the one cut"
    assert agent_turns(record)[4]["intent"] == "repeat", record["turns"]
    assert repeat == [*status[:2], status[-1]], "said again: what was heard up to the cut, then the question"
    assert not set(status[2:-1]) & set(repeat), "the sentences the caller never heard are not 'repeated'"


async def test_end_of_turn_waits_out_a_pause_inside_an_order_number_and_answers_a_yes_sooner(stack: Stack) -> None:
    """Two calls at once: a stranger reads the order number out in two groups with a pause inside it (the agent
    expects digits: it answers once, after the whole number); the order's owner answers "yes" to "is this about
    order ...?" (a yes/no question: answered measurably sooner)."""
    assert OWNER.phone and STRANGER not in {c.phone for c in SEED.customers}
    where, yes, first, second = await voices(
        ("where is my order", 1200), ("yes", 1500), ("one zero zero", 0), ("two three", 1500)
    )
    number = first + silence_ulaw(8 * 600) + second  # and piper's own silence around each group
    voiced = [i for i in range(0, len(number) - FRAME_BYTES + 1, FRAME_BYTES)
              if ulaw_rms(number[i : i + FRAME_BYTES]) > VOICE_RMS]  # fmt: skip
    pause = max(b - a for a, b in zip(voiced, voiced[1:], strict=False)) / 8000 - 0.02
    assert 0.6 <= pause <= 0.9, f"the pause inside the number is {pause:.2f} s"

    async def read_out_the_number() -> Phone:
        async with Phone(stack, STRANGER) as phone:
            await ask_where_the_order_is(phone, where)
            phone.say(number)
            await phone.until(lambda: phone.played(3, 0), 30, "the reply to the number")
            await asyncio.sleep(1.5)  # a second reply (to the second group) would have begun by now
        return phone

    async def say_yes() -> Phone:
        async with Phone(stack, OWNER.phone or "") as phone:
            await ask_where_the_order_is(phone, where)
            phone.say(yes)
            await phone.until(lambda: phone.played(3, 0), 30, "the reply to the yes")
        return phone

    digits, owner = await asyncio.gather(read_out_the_number(), say_yes())
    waits: dict[str, float] = {}
    for name, phone in (("digits", digits), ("yes", owner)):
        began, ended = phone.first_voiced_sent[1], phone.last_voiced_sent[1]
        reply = phone.first_voiced_after(ended)
        assert reply is not None, f"{name}: no reply"
        assert phone.first_voiced_after(began) == reply, f"{name}: the agent spoke while the caller was speaking"
        finals = [e for e in await events_of(stack, keys.events(phone.sid)) if isinstance(e, ev.TranscriptFinal)]
        assert len(finals) == 2, f"{name}: {[f.text for f in finals]}: the answer was not one utterance"
        endpointing = (finals[1].endpointed_at - finals[1].last_voiced_arrived) / 1000
        waits[name] = reply - ended
        print(f"{name}: {finals[1].text!r}, endpointing {endpointing * 1000:.0f} ms, last voiced frame sent -> "
              f"first reply frame received {waits[name] * 1000:.0f} ms")  # fmt: skip
        if name == "digits":
            spoken = (finals[1].last_voiced_arrived - finals[1].first_voiced_arrived) / 1000
            assert spoken >= ended - began - 0.3, f"the final spans {spoken:.2f} s: not both groups"
            assert endpointing >= 0.9, "digits: the end of turn waited less than the digits' end silence"
    turns = agent_turns(await call_record(stack, digits.sid))
    assert sorted(turns) == [1, 2, 3] and turns[3]["text"].startswith("I heard"), turns
    assert sorted(agent_turns(await call_record(stack, owner.sid))) == [1, 2, 3]
    assert waits["yes"] + 0.25 < waits["digits"], f"the yes was not answered sooner: {waits}"


@pytest.fixture(scope="module")
def tuned_stack(stack_runner: Callable[..., AbstractContextManager[Stack]]) -> Iterator[Stack]:
    """A stack whose brain re-prompts after SILENCE_TIMEOUT_S and pauses the agent at every caller onset."""
    env = {"BRAIN_SILENCE_TIMEOUT_MS": str(int(SILENCE_TIMEOUT_S * 1000)), "BRAIN_PAUSE_ON_ONSET": "on"}
    with stack_runner("turntaking", {"stt": 1, "brain": 1, "tts": 1}, env) as running:
        yield running


async def test_silence_reprompts_then_says_goodbye_and_hangs_up_once_it_played(tuned_stack: Stack) -> None:
    async with Phone(tuned_stack, STRANGER) as phone:
        greeted = await turn_played(phone, 1, 40)
        reprompted = await turn_played(phone, 2, 10 + SILENCE_TIMEOUT_S)
        goodbye = await turn_played(phone, 3, 15 + SILENCE_TIMEOUT_S)
        await phone.until(lambda: phone.heard.closed_at is not None, 10, "the hang-up")
    closed = phone.heard.closed_at
    assert closed is not None
    reprompt_at, goodbye_at = phone.first_voiced_after(greeted), phone.first_voiced_after(reprompted)
    assert reprompt_at is not None and goodbye_at is not None
    print(f"re-prompt {reprompt_at - greeted:.2f} s after the greeting played, goodbye "
          f"{goodbye_at - reprompted:.2f} s after the re-prompt, hang-up {(closed - goodbye) * 1000:.0f} ms after the "
          "goodbye's last mark came back")  # fmt: skip
    for waited in (reprompt_at - greeted, goodbye_at - reprompted):
        assert SILENCE_TIMEOUT_S - 0.1 <= waited <= SILENCE_TIMEOUT_S + 5, f"waited {waited:.2f} s"
    assert await says(tuned_stack, phone.sid, 2) == ["Are you still there?", "How can I help you today?"]
    bye = phone.marks_of(3)
    assert bye and all(played for _, _, played in bye), bye
    assert goodbye <= closed, "the socket closed before the goodbye's last mark came back"
    assert phone.heard.clears == [] and not phone.playback, "the goodbye was played to its last frame"
    heard = b"".join(p for _, p in phone.heard.media)
    bye_audio = await turn_audio(tuned_stack, phone.sid, 3)
    assert bye_audio and all(s in heard for s in bye_audio), "every byte of the goodbye reached the caller"
    record = await call_record(tuned_stack, phone.sid)
    for _ in range(50):
        if record["status"] == "completed":
            break
        await asyncio.sleep(0.1)
        record = await call_record(tuned_stack, phone.sid)
    assert [(t["speaker"], t["intent"]) for t in record["turns"]] == [
        ("agent", "greeting"), ("agent", "silence"), ("agent", "goodbye")
    ]  # fmt: skip
    assert (record["outcome"], record["end_reason"]) == ("abandoned", "agent ended"), record


async def test_a_hum_that_paused_the_agent_lets_it_carry_on(tuned_stack: Stack) -> None:
    """With ``BRAIN_PAUSE_ON_ONSET=on`` the caller's onset holds the agent's audio; the hum turns out to be no
    interruption, so the agent carries on from where it was held, to the end, and the hum is not answered."""
    hum = await asyncio.to_thread(synthesize_caller, "mm", speed=0.4, tail_ms=400)
    async with Phone(tuned_stack, STRANGER) as phone:
        await greeting_playing(phone, 1.0)
        phone.say(hum)
        done = await turn_played(phone, 1, 40)
        await asyncio.sleep(1.5)  # a reply to the hum would have begun
        heard = list(phone.heard.marks)
    control = [e for e in await events_of(tuned_stack, keys.control(phone.sid)) if isinstance(e, ev.Pause | ev.Resume
               | ev.Clear)]  # fmt: skip
    gap = phone.max_media_gap(phone.first_voiced_sent[0], done)
    print(f"held for {gap * 1000:.0f} ms (longest wait between agent frames)")
    assert [(type(e).__name__, e.turn_no) for e in control] == [("Pause", 1), ("Resume", 1)], control
    assert phone.heard.clears == []
    assert all(played for _, name, played in heard if name.startswith("t1-")), heard
    assert not any(name.startswith("t2-") for _, name, _ in heard), "the hum was answered"
    assert gap >= 0.4, "the agent's audio was not held while the hum was judged"
    greeting = await turn_audio(tuned_stack, phone.sid, 1)
    media = b"".join(p for _, p in phone.heard.media)
    assert all(s in media for s in greeting), "the greeting went on from where it was held, to its last byte"
