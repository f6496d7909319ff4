"""Twilio's side of a phone call, played against a running gateway (``voxcart call``, end-to-end tests).

What Twilio does, in order: POST the signed voice webhook; read ``<Connect><Stream>`` from the TwiML; open the
websocket with ``X-Twilio-Signature`` over the TwiML's stream URL; send ``connected`` and ``start``; then send one
160-byte μ-law ``media`` frame every 20 ms for as long as the call lasts (silence between the caller's lines, like
a real phone) and play the agent's audio at real time: a ``mark`` is echoed when all audio queued before it has
played, ``clear`` drops the queued audio and echoes every outstanding mark at once. When our side ends the call
it sends ``stop``; when the gateway closes the socket, the ``<Connect action>`` URL is requested (a new
``<Connect>`` reconnects; ``<Dial>`` is a transfer). A status callback ``completed`` ends it all.

Invariants: this module shares no code with the gateway's Twilio package (an independent implementation, so a
codec bug cannot cancel itself out); both tracks grow by exactly one 20 ms frame per tick, so they stay aligned
in :meth:`CallResult.save_wav`; a caller line starts only when the agent's audio has played and
``agent_silence_s`` of silence has followed it (or the reply timed out).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import uuid
import wave
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE, silence_ulaw, ulaw_rms, ulaw_to_pcm16

__all__ = [
    "CallResult",
    "Dtmf",
    "Line",
    "SimulatorConfig",
    "SimulatorError",
    "TurnResult",
    "lines_from_text",
    "simulate_call",
]

TICK = FRAME_BYTES / SAMPLE_RATE
_SILENCE = silence_ulaw(FRAME_BYTES)


class SimulatorError(RuntimeError):
    """The gateway answered the webhook with something Twilio could not use (HTTP error, bad TwiML)."""


@dataclass(frozen=True)
class Line:
    """One thing the caller says: μ-law 8 kHz audio, and its text for the report."""

    audio: bytes
    text: str = ""


@dataclass(frozen=True)
class Dtmf:
    """Keypad digits the caller presses, sent as ``dtmf`` events ``interval_s`` apart."""

    digits: str
    interval_s: float = 0.25

    def __post_init__(self) -> None:
        bad = [d for d in self.digits if d not in "0123456789*#"]
        if not self.digits or bad:
            raise ValueError(f"Dtmf digits must be 0-9, * or #; got {self.digits!r}")


@dataclass(frozen=True)
class SimulatorConfig:
    """Where the gateway is and how the simulated caller behaves."""

    gateway_url: str = "http://127.0.0.1:8080"
    """Where to send requests (the running gateway)."""
    auth_token: str = "dev-auth-token"
    """``TWILIO_AUTH_TOKEN`` shared with the gateway (signs every request)."""
    public_url: str | None = None
    """The gateway's ``PUBLIC_URL``: requests are signed over it; defaults to ``gateway_url``."""
    account_sid: str = "AC" + "0" * 32
    from_number: str = "+15550100001"
    to_number: str = "+15550100002"
    voice_path: str = "/twilio/voice"
    status_path: str | None = "/twilio/status"
    agent_silence_s: float = 0.8
    """Silence after the agent's audio has played before the caller speaks again."""
    greeting_timeout_s: float = 5.0
    """How long to wait for a greeting (or a re-prompt after a reconnect) before speaking anyway."""
    reply_timeout_s: float = 20.0
    """How long to wait for the agent to answer a line."""
    voice_rms: float = 200.0
    """μ-law RMS (int16 units) above which a frame counts as voiced."""
    api_token: str | None = None
    """Bearer token for ``GET /calls/{CallSid}`` (agent texts); ``None`` sends none."""
    fetch_record: bool = True
    max_reconnects: int = 2
    """New ``<Connect><Stream>`` answers followed after the first stream (the gateway should cap them itself)."""
    http_timeout_s: float = 15.0


@dataclass
class TurnResult:
    """One exchange: what the caller said (nothing for the greeting) and what came back. Times are seconds from
    the start of the first stream."""

    index: int
    kind: Literal["greeting", "speech", "dtmf"]
    caller: str = ""
    caller_end_s: float | None = None
    """When the caller's last voiced frame (or last digit) was sent."""
    latency_s: float | None = None
    """``caller_end_s`` -> first voiced agent frame received."""
    agent_start_s: float | None = None
    agent_audio: bytearray = field(default_factory=bytearray)
    """μ-law received from the gateway during this turn."""
    agent_text: str = ""
    """From the gateway's call record, when it could be fetched."""
    timed_out: bool = False
    clears: int = 0


@dataclass
class CallResult:
    """Everything the simulated call observed."""

    call_sid: str
    turns: list[TurnResult] = field(default_factory=list)
    stream_sids: list[str] = field(default_factory=list)
    twiml: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    """``<Say>`` texts Twilio would have spoken."""
    ended_by: Literal["caller", "agent", "transfer", "no_stream"] = "caller"
    transfer_to: str | None = None
    duration_s: float = 0.0
    marks_played: int = 0
    marks_cleared: int = 0
    errors: list[str] = field(default_factory=list)
    """Protocol problems Twilio would log as warnings (31950 binary frame, 31951 bad message, …)."""
    record: dict[str, Any] | None = None
    caller_track: bytearray = field(default_factory=bytearray)
    agent_track: bytearray = field(default_factory=bytearray)
    """What the caller heard: agent audio as played, one frame per tick (silence when nothing queued)."""

    @property
    def latencies(self) -> list[float]:
        """Turn latencies (seconds) of the turns that got a reply."""
        return [t.latency_s for t in self.turns if t.latency_s is not None]

    def save_wav(self, path: str | Path) -> None:
        """Write a stereo 16-bit 8 kHz WAV: left = caller, right = agent as heard."""
        n = min(len(self.caller_track), len(self.agent_track))
        stereo = np.stack([ulaw_to_pcm16(bytes(self.caller_track[:n])), ulaw_to_pcm16(bytes(self.agent_track[:n]))])
        with wave.open(str(path), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            out.writeframes(stereo.T.astype("<i2").tobytes())


def _sign(token: str, url: str, params: dict[str, str]) -> str:
    data = url + "".join(k + v for k, v in sorted(params.items()))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def _parse_twiml(text: str) -> ET.Element:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise SimulatorError(f"gateway TwiML is not XML ({exc}): {text[:120]!r}") from None
    if root.tag != "Response":
        raise SimulatorError(f"gateway TwiML root is <{root.tag}>, not <Response>")
    return root


class _Call:
    def __init__(self, cfg: SimulatorConfig, items: Sequence[Line | Dtmf | bytes], transport: Any) -> None:
        self.cfg, self.items, self.next_item = cfg, [Line(i) if isinstance(i, bytes) else i for i in items], 0
        self.public = (cfg.public_url or cfg.gateway_url).rstrip("/")
        self.http = httpx.AsyncClient(timeout=cfg.http_timeout_s, transport=transport)
        self.res = CallResult(call_sid="CA" + secrets.token_hex(16))
        self.loop = asyncio.get_running_loop()
        self.t0: float | None = None

    def now_s(self) -> float:
        return self.loop.time() - (self.t0 if self.t0 is not None else self.loop.time())

    def _local(self, public: str) -> str:
        """Map a public URL (from TwiML) onto the gateway we can actually reach."""
        pub, gw, url = urlsplit(self.public), urlsplit(self.cfg.gateway_url), urlsplit(public)
        if url.netloc != pub.netloc:
            return public
        ws = url.scheme in ("ws", "wss")
        scheme = {"http": "ws", "https": "wss"}[gw.scheme] if ws else gw.scheme
        return urlunsplit((scheme, gw.netloc, url.path, url.query, ""))

    async def webhook(self, public: str, status: str, extra: dict[str, str] | None = None) -> httpx.Response:
        params = {
            "CallSid": self.res.call_sid,
            "AccountSid": self.cfg.account_sid,
            "From": self.cfg.from_number,
            "To": self.cfg.to_number,
            "Caller": self.cfg.from_number,
            "Called": self.cfg.to_number,
            "CallStatus": status,
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
            **(extra or {}),
        }
        headers = {
            "X-Twilio-Signature": _sign(self.cfg.auth_token, public, params),
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        return await self.http.post(self._local(public), data=params, headers=headers)

    async def twiml(self, public: str, status: str) -> ET.Element:
        response = await self.webhook(public, status)
        if response.status_code != 200:
            raise SimulatorError(f"POST {public} answered HTTP {response.status_code}: {response.text[:200]}")
        self.res.twiml.append(response.text)
        return _parse_twiml(response.text)

    async def run(self) -> CallResult:
        start = self.loop.time()
        try:
            voice_url = self.public + self.cfg.voice_path
            doc, streams = await self.twiml(voice_url, "ringing"), 0
            while True:
                verbs = list(doc)
                at = next((i for i, v in enumerate(verbs) if v.tag == "Connect" and v.find("Stream") is not None), None)
                before = verbs if at is None else verbs[:at]
                self.res.said += [v.text or "" for v in before if v.tag == "Say"]
                if at is None:
                    dial = next((v for v in before if v.tag == "Dial"), None)
                    if dial is not None:
                        self.res.ended_by, self.res.transfer_to = "transfer", (dial.text or "").strip()
                    elif not self.res.stream_sids:
                        self.res.ended_by = "no_stream"
                    break
                if streams > self.cfg.max_reconnects:
                    self.res.errors.append(f"gave up after {self.cfg.max_reconnects} reconnects")
                    break
                streams += 1
                stream = verbs[at].find("Stream")
                assert stream is not None
                params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
                if not await _Stream(self, stream.get("url", ""), params).run():
                    break  # the caller hung up
                self.res.ended_by = "agent"
                action = verbs[at].get("action")
                if action:  # Twilio requests <Connect action> and runs what it returns
                    doc = await self.twiml(urljoin(voice_url, action), "in-progress")
                else:  # else it goes on with the verbs after <Connect>
                    doc = ET.Element("Response")
                    doc.extend(verbs[at + 1 :])
            self.res.duration_s = self.loop.time() - start
            if self.cfg.status_path:
                extra = {
                    "CallDuration": str(round(self.res.duration_s)),
                    "CallbackSource": "call-progress-events",
                    "SequenceNumber": "0",
                }
                r = await self.webhook(self.public + self.cfg.status_path, "completed", extra)
                if r.is_error:
                    self.res.errors.append(f"status callback answered HTTP {r.status_code}")
            if self.cfg.fetch_record:
                await self.fetch_record()
        finally:
            await self.http.aclose()
        return self.res

    async def fetch_record(self) -> None:
        headers = {"Authorization": f"Bearer {self.cfg.api_token}"} if self.cfg.api_token else {}
        try:
            r = await self.http.get(f"{self.cfg.gateway_url.rstrip('/')}/calls/{self.res.call_sid}", headers=headers)
            self.res.record = r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            self.res.errors.append(f"call record not available: {exc}")
        # agent texts before the first caller turn belong to the greeting, then to the k-th caller turn
        targets = [self.res.turns[0]] + [t for t in self.res.turns if t.kind != "greeting"] if self.res.turns else []
        turns = self.res.record.get("turns", []) if isinstance(self.res.record, dict) else []
        idx = 0
        for rec in turns if isinstance(turns, list) else []:
            if not isinstance(rec, dict):
                continue
            if rec.get("speaker") == "caller":
                idx += 1
            elif rec.get("speaker") == "agent" and idx < len(targets) and rec.get("text"):
                targets[idx].agent_text = f"{targets[idx].agent_text} {rec['text']}".strip()


class _Stream:
    """One media websocket: a 20 ms ticker (caller frame out, agent frame played) and a reader."""

    def __init__(self, call: _Call, url: str, params: dict[str, str]) -> None:
        self.call, self.cfg, self.res, self.url, self.params = call, call.cfg, call.res, url, params
        self.sid = "MZ" + secrets.token_hex(16)
        self.seq = 0
        self.chunk = 0
        self.caller_q: deque[tuple[bytes, TurnResult | None]] = deque()  # frame, turn whose last voiced frame
        self.dtmf_q: deque[tuple[str, float, TurnResult | None]] = deque()  # digit, due time, turn if last
        self.playback: deque[tuple[bytes, bool] | str] = deque()  # (agent audio, voiced) and mark names, in order
        self.pending_voiced = 0
        self.last_voiced_played = -1e9
        self.closed = asyncio.Event()
        self.lock = asyncio.Lock()
        self.ws: ClientConnection | None = None

    async def send(self, event: str, body: dict[str, Any] | None = None) -> None:
        async with self.lock:
            self.seq += 1
            msg: dict[str, Any] = {"event": event, "sequenceNumber": str(self.seq), "streamSid": self.sid}
            if body is not None:
                msg[event] = body
            assert self.ws is not None
            await self.ws.send(json.dumps(msg))

    async def run(self) -> bool:
        """Run the stream with the remaining caller items; ``True`` if the gateway closed the socket."""
        headers = {"X-Twilio-Signature": _sign(self.cfg.auth_token, self.url, {})}
        try:
            ws = await connect(self.call._local(self.url), additional_headers=headers, compression=None)
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise SimulatorError(f"media websocket {self.url} failed: {type(exc).__name__}: {exc}") from exc
        async with ws:
            self.ws = ws
            self.res.stream_sids.append(self.sid)
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await self.send(
                "start",
                {
                    "streamSid": self.sid,
                    "accountSid": self.cfg.account_sid,
                    "callSid": self.res.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.params,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            )
            if self.call.t0 is None:
                self.call.t0 = self.call.loop.time()
            kind: Literal["greeting"] = "greeting"  # the greeting, or the re-prompt after a reconnect
            self.res.turns.append(TurnResult(len(self.res.turns), kind, caller_end_s=self.call.now_s()))
            tasks = [asyncio.create_task(self.ticker()), asyncio.create_task(self.reader())]
            try:
                await self.dialog()
                if not self.closed.is_set():
                    await self.send("stop", {"accountSid": self.cfg.account_sid, "callSid": self.res.call_sid})
                    return False
                return True
            except ConnectionClosed:
                return True
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def dialog(self) -> None:
        await self.wait_agent(self.res.turns[-1], self.cfg.greeting_timeout_s)
        while self.call.next_item < len(self.call.items) and not self.closed.is_set():
            item = self.call.items[self.call.next_item]
            self.call.next_item += 1
            turn = TurnResult(len(self.res.turns), "dtmf" if isinstance(item, Dtmf) else "speech")
            self.res.turns.append(turn)
            if isinstance(item, Dtmf):
                turn.caller = f"<dtmf {item.digits}>"
                due = self.call.now_s()
                for i, d in enumerate(item.digits):
                    self.dtmf_q.append((d, due + i * item.interval_s, turn if i == len(item.digits) - 1 else None))
            else:
                turn.caller = item.text
                self.queue_line(item.audio, turn)
            while (self.caller_q or self.dtmf_q) and not self.closed.is_set():
                await asyncio.sleep(TICK)
            await self.wait_agent(turn, self.cfg.reply_timeout_s)

    def queue_line(self, audio: bytes, turn: TurnResult) -> None:
        frames = [audio[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff") for i in range(0, len(audio), FRAME_BYTES)]
        voiced = [i for i, f in enumerate(frames) if ulaw_rms(f) > self.cfg.voice_rms]
        last = voiced[-1] if voiced else len(frames) - 1
        self.caller_q.extend((f, turn if i == last else None) for i, f in enumerate(frames))

    async def wait_agent(self, turn: TurnResult, timeout: float) -> None:
        """Until the agent's reply has played and ``agent_silence_s`` has passed, or ``timeout`` without reply."""
        while not self.closed.is_set():
            now = self.call.now_s()
            if turn.agent_start_s is None:
                if turn.caller_end_s is not None and now - turn.caller_end_s > timeout:
                    turn.timed_out = True
                    return
            elif self.pending_voiced == 0 and now - self.last_voiced_played >= self.cfg.agent_silence_s:
                return
            await asyncio.sleep(TICK)

    async def ticker(self) -> None:
        next_t = self.call.loop.time()
        while True:
            now_s = self.call.now_s()
            while self.dtmf_q and self.dtmf_q[0][1] <= now_s:
                digit, _, turn = self.dtmf_q.popleft()
                await self.send("dtmf", {"track": "inbound_track", "digit": digit})
                if turn is not None:
                    turn.caller_end_s = self.call.now_s()
            frame, turn = self.caller_q.popleft() if self.caller_q else (_SILENCE, None)
            self.chunk += 1
            await self.send(
                "media",
                {
                    "track": "inbound",
                    "chunk": str(self.chunk),
                    "timestamp": str((self.chunk - 1) * 20),
                    "payload": base64.b64encode(frame).decode(),
                },
            )
            if turn is not None:
                turn.caller_end_s = self.call.now_s()
            self.res.caller_track += frame
            await self.play_tick()
            next_t += TICK
            await asyncio.sleep(max(0.0, next_t - self.call.loop.time()))

    async def play_tick(self) -> None:
        out = bytearray()
        while len(out) < FRAME_BYTES and self.playback and not isinstance(self.playback[0], str):
            audio, voiced = self.playback[0]
            take = audio[: FRAME_BYTES - len(out)]
            out += take
            if voiced:
                self.last_voiced_played = self.call.now_s()
            if len(take) == len(audio):
                self.playback.popleft()
                self.pending_voiced -= voiced
            else:
                self.playback[0] = (audio[len(take) :], voiced)
        self.res.agent_track += out.ljust(FRAME_BYTES, b"\xff")
        await self.echo_ready_marks()

    async def echo_ready_marks(self, cleared: bool = False) -> None:
        while self.playback and isinstance(self.playback[0], str):
            name = self.playback.popleft()
            assert isinstance(name, str)
            if cleared:
                self.res.marks_cleared += 1
            else:
                self.res.marks_played += 1
            await self.send("mark", {"name": name})

    async def reader(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                await self.handle(raw)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def handle(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            self.res.errors.append("31950: binary frame from the gateway (Twilio accepts text frames only)")
            return
        try:
            msg = json.loads(raw)
            if msg.get("streamSid") != self.sid:
                raise ValueError(f"streamSid {msg.get('streamSid')!r} is not this stream's {self.sid!r}")
            event = msg["event"]
            if event == "media":
                payload = base64.b64decode(msg["media"]["payload"], validate=True)
                self.on_media(payload)
            elif event == "mark":
                name = msg["mark"]["name"]
                if not isinstance(name, str) or not name:
                    raise ValueError("mark without a name")
                self.playback.append(name)
                if all(isinstance(s, str) for s in self.playback):
                    await self.echo_ready_marks()
            elif event == "clear":
                self.res.turns[-1].clears += 1
                kept = [s for s in self.playback if isinstance(s, str)]
                self.playback = deque(kept)
                self.pending_voiced = 0
                await self.echo_ready_marks(cleared=True)
            else:
                raise ValueError(f"unknown event {event!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.res.errors.append(f"31951: bad message from the gateway ({type(exc).__name__}: {exc}): {raw[:100]}")

    def on_media(self, payload: bytes) -> None:
        turn = self.res.turns[-1]
        turn.agent_audio += payload
        voiced = ulaw_rms(payload) > self.cfg.voice_rms
        if voiced and turn.agent_start_s is None and turn.caller_end_s is not None:
            turn.agent_start_s = self.call.now_s()
            turn.latency_s = turn.agent_start_s - turn.caller_end_s
        if payload:
            self.playback.append((payload, voiced))
            self.pending_voiced += voiced


async def simulate_call(
    config: SimulatorConfig,
    items: Sequence[Line | Dtmf | bytes],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> CallResult:
    """Place one simulated call through the gateway and return what happened.

    Args:
        config: where the gateway is, the auth token, and caller behaviour.
        items: what the caller does, in order: :class:`Line` (μ-law audio, plus text), raw μ-law ``bytes``, or
            :class:`Dtmf`. The caller waits for the greeting first, and for each reply before the next item.
        transport: optional httpx transport for the webhooks (tests); the websocket always uses a real socket.

    Raises:
        SimulatorError: the voice webhook failed or answered something that is not TwiML.
    """
    return await _Call(config, items, transport).run()


def lines_from_text(texts: Sequence[str], synthesize: Callable[[str], bytes]) -> list[Line]:
    """Turn caller sentences into :class:`Line` items with a μ-law synthesizer (e.g. ``synthesize_caller``)."""
    return [Line(synthesize(text), text) for text in texts]
