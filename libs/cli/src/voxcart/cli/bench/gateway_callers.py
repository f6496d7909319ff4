"""The gateway bench's callers: many Twilio media sockets per process that only send and receive media.

Each call does what Twilio does and no more: the signed voice webhook, ``<Connect><Stream>`` from the TwiML, the
signed websocket, ``connected`` and ``start`` (with the TwiML's parameters: the media token), then one 160-byte
μ-law ``media`` frame every 20 ms until it hangs up (``stop``). The agent's audio is played at real time: each
``mark`` is echoed when the audio before it has played. One process runs many calls on one ticker (one task
sends every call's frame per tick, on absolute deadlines), so :func:`run_callers` is what each caller process of
``voxcart bench gateway`` runs (multiprocessing: one Python process cannot drive 200 sockets at 50 fps).

Invariants: the wire log of each call (media and marks received, on this process's monotonic clock) is reduced
to pacing figures here with :func:`~voxcart.cli.bench.load_measure.pacing`, the load bench's definitions, so only
numbers cross the process boundary; the process's own timing error (how late its loop wakes from 10 ms sleeps)
is reported beside them, since a late caller looks like a late gateway; a call that fails records why, never
raises.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from voxcart.cli._simulator_stream import sign
from voxcart.cli._simulator_types import WireEvent
from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE, silence_ulaw

from .bargein_measure import media_turns
from .gateway_sched import own_session
from .load_measure import Pacing, pacing

__all__ = ["CallerPlan", "CallerReport", "measured", "run_callers"]

_TICK = FRAME_BYTES / SAMPLE_RATE
_SILENCE_B64 = base64.b64encode(silence_ulaw(FRAME_BYTES)).decode()


@dataclass(frozen=True)
class CallerPlan:
    """What one caller process does.

    Args:
        gateway_url: the gateway (``http://host:port``).
        auth_token: ``TWILIO_AUTH_TOKEN`` (signs the webhook and the socket).
        first: index of this process's first call (call ``k`` starts ``k * stagger_s`` after ``start_at``).
        calls: calls in this process.
        start_at: epoch seconds the first call of the step starts.
        stagger_s: between two calls' starts, over the whole step.
        hold_s: each call hangs up this long after its socket started.
        window: epoch seconds ``(from, to)``: only what the callers saw then is measured (every call up, none
            hung up, the caller processes past their start).
        number_block: caller numbers ``+1555<block><k>`` (fresh per step: the gateway rate-limits numbers).
        nice: run in a session of its own with this autogroup nice, where allowed (:mod:`.gateway_sched`);
            ``None``: stay in the bench's session.
    """

    gateway_url: str
    auth_token: str
    first: int
    calls: int
    start_at: float
    stagger_s: float
    hold_s: float
    window: tuple[float, float]
    number_block: int = 100
    nice: int | None = None


@dataclass
class CallerReport:
    """One caller process's results (numbers only: they are pickled back to the bench)."""

    calls: int = 0
    connected: int = 0
    errors: list[str] = field(default_factory=list)
    frames_sent: int = 0
    media_received: int = 0
    marks_echoed: int = 0
    pacing: dict[str, Any] = field(default_factory=dict)
    lateness_ms: list[float] = field(default_factory=list)
    loop_lag_ms: list[float] = field(default_factory=list)
    tick_late_ms: list[float] = field(default_factory=list)
    """How late each tick's first frame went out (the callers' own send timing)."""
    cpu_s: float = 0.0
    """CPU this process used."""
    prioritized: bool = False
    """Its session's autogroup nice was set to the plan's ``nice``."""


class _Socket:
    """One live call: its websocket, counters and wire log."""

    def __init__(self, ws: ClientConnection, stream_sid: str) -> None:
        self.ws = ws
        self.stream_sid = stream_sid
        self.seq = 1  # ``connected`` has no number, ``start`` is 1
        self.chunk = 0
        self.play_end = 0.0
        self.wire: list[WireEvent] = []
        self.open = True

    def media_text(self) -> str:
        self.seq += 1
        self.chunk += 1
        return (
            f'{{"event":"media","sequenceNumber":"{self.seq}","media":{{"track":"inbound","chunk":"{self.chunk}",'
            f'"timestamp":"{self.chunk * 20}","payload":"{_SILENCE_B64}"}},"streamSid":"{self.stream_sid}"}}'
        )

    def mark_text(self, name: str) -> str:
        self.seq += 1
        body = msgspec.json.encode({"name": name}).decode()
        return f'{{"event":"mark","sequenceNumber":"{self.seq}","mark":{body},"streamSid":"{self.stream_sid}"}}'


def measured(wire: Sequence[WireEvent], window: tuple[float, float]) -> list[WireEvent]:
    """The events of a call's wire log that its pacing is measured on: those inside ``window``, less the media of
    the turn already playing when the window opened and of the sentence still playing when it closed.

    The pacing figures play each run of a turn at real time from its first frame, and tell a frame's turn by the
    first mark after it. Cut at the window's start, a turn would begin with no audio ahead, whereas the caller was
    in fact playing on the lead the pacer built when the turn began; cut at its end, the frames after the last
    mark would have no turn and start a new run, again with no lead. Either way every frame a millisecond late
    would count as an underrun and restart the schedule with no lead (about one false underrun a call, while the
    gateway's pacer had none).
    """
    turns = media_turns(wire)
    first = bisect.bisect_left([e.t for e in wire], window[0])
    last = bisect.bisect_right([e.t for e in wire], window[1])
    last = next((i + 1 for i in range(last - 1, first - 1, -1) if wire[i].kind in ("mark", "clear")), last)
    playing = next((turns[i] for i in range(first - 1, -1, -1) if wire[i].kind in ("media", "clear")), None)
    return [
        e
        for i, e in enumerate(wire[first:last], first)
        if not (playing is not None and e.kind == "media" and turns[i] == playing)
    ]


def _local(url: str, gateway_url: str) -> str:
    """The TwiML's stream URL on the gateway we reach (its scheme and host)."""
    gw, target = urlsplit(gateway_url), urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}[gw.scheme]
    return urlunsplit((scheme, gw.netloc, target.path, target.query, ""))


class _Process:
    def __init__(self, plan: CallerPlan) -> None:
        self.plan = plan
        self.report = CallerReport(calls=plan.calls)
        self.sockets: list[_Socket] = []
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        self._echoes: set[asyncio.Task[None]] = set()
        self._pacing = Pacing(lateness_ms=[])
        offset = time.time() - self.loop.time()
        self.window = (plan.window[0] - offset, plan.window[1] - offset)
        """The measured window on the loop's clock."""

    async def call(self, k: int, http: httpx.AsyncClient) -> None:
        plan = self.plan
        await asyncio.sleep(max(0.0, plan.start_at + k * plan.stagger_s - time.time()))
        sid = "CA" + secrets.token_hex(16)
        try:
            url, params = await self._webhook(http, sid, f"+1555{plan.number_block}{k:04d}")
            headers = {"X-Twilio-Signature": sign(plan.auth_token, url, {})}
            ws = await connect(_local(url, plan.gateway_url), additional_headers=headers, compression=None)
        except (httpx.HTTPError, OSError, WebSocketException, ValueError) as exc:
            self.report.errors.append(f"call {k}: {type(exc).__name__}: {exc}"[:200])
            return
        sock = _Socket(ws, "MZ" + secrets.token_hex(16))
        try:
            await ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
            start = {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": sock.stream_sid,
                "start": {
                    "streamSid": sock.stream_sid,
                    "accountSid": "AC" + "0" * 32,
                    "callSid": sid,
                    "tracks": ["inbound"],
                    "customParameters": params,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
            await ws.send(msgspec.json.encode(start).decode())
            self.report.connected += 1
            self.sockets.append(sock)
            reader = asyncio.create_task(self._read(sock))
            try:
                await asyncio.wait_for(asyncio.shield(reader), plan.hold_s)
            except TimeoutError:
                pass
            sock.open = False
            with contextlib.suppress(ConnectionClosed, OSError):
                sock.seq += 1
                stop = {"accountSid": "AC" + "0" * 32, "callSid": sid}
                await ws.send(
                    msgspec.json.encode(
                        {"event": "stop", "sequenceNumber": str(sock.seq), "streamSid": sock.stream_sid, "stop": stop}
                    ).decode()
                )
            await ws.close()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        except (ConnectionClosed, OSError) as exc:
            self.report.errors.append(f"call {k}: socket closed early: {exc}"[:200])
        finally:
            sock.open = False
            pacing([measured(sock.wire, self.window)], self._pacing)

    async def _webhook(self, http: httpx.AsyncClient, sid: str, number: str) -> tuple[str, dict[str, str]]:
        """POST the voice webhook; the stream URL and parameters of its ``<Connect><Stream>``."""
        url = self.plan.gateway_url.rstrip("/") + "/twilio/voice"
        params = {
            "CallSid": sid,
            "AccountSid": "AC" + "0" * 32,
            "From": number,
            "To": "+15550100002",
            "CallStatus": "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        headers = {
            "X-Twilio-Signature": sign(self.plan.auth_token, url, params),
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        response = await http.post(url, data=params, headers=headers)
        if response.status_code != 200:
            raise ValueError(f"voice webhook answered HTTP {response.status_code}: {response.text[:120]}")
        stream = ET.fromstring(response.text).find("./Connect/Stream")
        if stream is None:
            raise ValueError(f"no <Connect><Stream> in the TwiML (on hold?): {response.text[:160]}")
        return stream.get("url", ""), {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}

    async def _read(self, sock: _Socket) -> None:
        decode = msgspec.json.decode
        async for raw in sock.ws:
            now = self.loop.time()
            msg = decode(raw)
            event = msg.get("event")
            if event == "media":
                payload = msg["media"]["payload"]
                nbytes = len(payload) * 3 // 4 - payload.count("=", -2)
                sock.wire.append(WireEvent(now, "media", nbytes=nbytes, voiced=True))
                sock.play_end = max(sock.play_end, now) + nbytes / SAMPLE_RATE
                self.report.media_received += 1
            elif event == "mark":
                name = msg["mark"]["name"]
                sock.wire.append(WireEvent(now, "mark", name=name))
                self.loop.call_at(max(now, sock.play_end), self._echo, sock, name)
            elif event == "clear":
                sock.wire.append(WireEvent(now, "clear"))
                sock.play_end = now

    def _echo(self, sock: _Socket, name: str) -> None:
        if not sock.open:
            return
        task = asyncio.create_task(self._send_echo(sock, name))
        self._echoes.add(task)
        task.add_done_callback(self._echoes.discard)

    async def _send_echo(self, sock: _Socket, name: str) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):  # the call's own task records why it ended
            await sock.ws.send(sock.mark_text(name))
            self.report.marks_echoed += 1

    async def ticker(self) -> None:
        """Every 20 ms, on absolute deadlines: one media frame on every open socket."""
        deadline = self.loop.time()
        while not self.stop.is_set():
            deadline += _TICK
            await asyncio.sleep(max(0.0, deadline - self.loop.time()))
            if self.window[0] <= deadline <= self.window[1]:
                self.report.tick_late_ms.append((self.loop.time() - deadline) * 1000)
            for sock in list(self.sockets):
                if not sock.open:
                    continue
                with contextlib.suppress(ConnectionClosed, OSError):
                    await sock.ws.send(sock.media_text())
                    self.report.frames_sent += 1
            self.sockets = [s for s in self.sockets if s.open]

    async def loop_lag(self) -> None:
        while not self.stop.is_set():
            start = self.loop.time()
            await asyncio.sleep(0.01)
            if self.window[0] <= start <= self.window[1]:
                self.report.loop_lag_ms.append((self.loop.time() - start - 0.01) * 1000)

    async def run(self) -> CallerReport:
        cpu = time.process_time()
        tasks = [asyncio.create_task(self.ticker()), asyncio.create_task(self.loop_lag())]
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(timeout=15.0, limits=limits) as http:
            await asyncio.gather(*(self.call(self.plan.first + i, http) for i in range(self.plan.calls)))
        self.stop.set()
        await asyncio.gather(*tasks, *self._echoes, return_exceptions=True)
        self.report.pacing = self._pacing.as_dict()
        self.report.lateness_ms = [round(x, 2) for x in self._pacing.lateness_ms or []]
        self.report.cpu_s = time.process_time() - cpu
        return self.report


def run_callers(plan: CallerPlan) -> CallerReport:
    """Run one caller process's calls to their end (the multiprocessing entry point)."""

    prioritized = plan.nice is not None and own_session(plan.nice)

    async def main() -> CallerReport:
        return await _Process(plan).run()

    report = asyncio.run(main())
    report.prioritized = prioritized
    return report
