"""One Twilio media websocket as Twilio plays it: a 20 ms ticker (caller frame out, agent frame played) and a reader.

The agent's audio is played at real time: a ``mark`` is echoed when all audio queued before it has played, ``clear``
drops the queued audio and echoes every outstanding mark at once. Between the caller's lines the ticker sends
silence, like a real phone.

Invariants: each tick appends exactly one 160-byte frame to both ``caller_track`` and ``agent_track`` (silence when
nothing is queued); a caller item starts only when the agent's audio has played and ``agent_silence_s`` of silence
has followed it (or the reply timed out), except an :class:`Overlap`, which starts ``at_ms`` after the caller first
heard the reply to the item before it, while that reply goes on arriving and playing; after an ``Overlap`` or a
``Pause`` the caller waits until the agent has been quiet for ``settle_s``; every media/mark/clear received and
every mark echoed is appended to ``CallResult.wire`` with its time, as are the first and last voiced frames of each
caller item (times taken right after the frame was written to the socket); protocol problems are recorded in
``CallResult.errors``, never raised. After a :class:`Reconnect` the old socket stops playing and recording (its
ticker and reader are gone): it only sends silence, counted in ``StreamResult.late_frames``, until the gateway
closes it or its ``linger_s`` is up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE, silence_ulaw, ulaw_rms

from ._simulator_types import (
    OVERLAP_KINDS,
    Dtmf,
    Line,
    Overlap,
    Pause,
    Reconnect,
    SimulatorError,
    StreamResult,
    TurnKind,
    TurnResult,
    WireEvent,
)

if TYPE_CHECKING:
    from .simulator import _Call

__all__ = ["TICK", "MediaStream", "StreamEnd", "sign"]

TICK = FRAME_BYTES / SAMPLE_RATE
_SILENCE = silence_ulaw(FRAME_BYTES)
_LATENCY_KINDS = ("greeting", "speech", "dtmf")
StreamEnd = Literal["caller", "gateway", "reconnect"]
"""How a socket's part of the call ended (see :attr:`StreamResult.ended_by`)."""
"""Turns whose first voiced agent frame after the caller's last one is a reply (their ``latency_s`` is set)."""


def sign(token: str, url: str, params: dict[str, str]) -> str:
    data = url + "".join(k + v for k, v in sorted(params.items()))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


class MediaStream:
    """One media websocket: a 20 ms ticker (caller frame out, agent frame played) and a reader."""

    def __init__(self, call: _Call, url: str, params: dict[str, str]) -> None:
        self.call, self.cfg, self.res, self.url, self.params = call, call.cfg, call.res, url, params
        self.sid = "MZ" + secrets.token_hex(16)
        self.seq = 0
        self.chunk = 0
        # frame, its turn, whether it is the turn's first / last voiced frame
        self.caller_q: deque[tuple[bytes, TurnResult | None, bool, bool]] = deque()
        self.dtmf_q: deque[tuple[str, float, TurnResult | None]] = deque()  # digit, due time, turn if last
        # (agent audio, voiced, turn it arrived in) and mark names, in order
        self.playback: deque[tuple[bytes, bool, TurnResult] | str] = deque()
        self.pending_voiced = 0
        self.last_voiced_played = -1e9
        self.last_voiced_received = -1e9
        self.closed = asyncio.Event()
        self.lock = asyncio.Lock()
        self.ws: ClientConnection | None = None
        self.handover: Reconnect | None = None
        self.stats = StreamResult(self.sid, "")

    async def send(self, event: str, body: dict[str, Any] | None = None) -> None:
        async with self.lock:
            self.seq += 1
            msg: dict[str, Any] = {"event": event, "sequenceNumber": str(self.seq), "streamSid": self.sid}
            if body is not None:
                msg[event] = body
            assert self.ws is not None
            await self.ws.send(json.dumps(msg))

    async def connect(self) -> ClientConnection:
        """Open the socket on the current replica, or the next ones that accept connections."""
        headers = {"X-Twilio-Signature": sign(self.cfg.auth_token, self.url, {})}
        for _ in self.call.replicas:
            try:
                self.stats.gateway = self.call.replicas[self.call.replica]
                return await connect(self.call._local(self.url), additional_headers=headers, compression=None)
            except OSError:  # refused: the load balancer tries the next replica
                self.call.next_replica()
            except (InvalidHandshake, InvalidURI, TimeoutError) as exc:
                raise SimulatorError(f"media websocket {self.url} failed: {type(exc).__name__}: {exc}") from exc
        raise SimulatorError(f"media websocket {self.url} failed: no gateway replica accepts connections")

    async def run(self) -> StreamEnd:
        """Run the stream with the remaining caller items; says how it ended."""
        ws = await self.connect()
        ended: StreamEnd = "gateway"
        try:
            self.ws = ws
            self.res.stream_sids.append(self.sid)
            self.res.streams.append(self.stats)
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
                self.call.t0, self.call.t0_wall = self.call.loop.time(), time.time()
            kind: Literal["greeting"] = "greeting"  # the greeting, or the re-prompt after a reconnect
            self.res.turns.append(TurnResult(len(self.res.turns), kind, caller_end_s=self.call.now_s()))
            tasks = [asyncio.create_task(self.ticker()), asyncio.create_task(self.reader())]
            try:
                await self.dialog()
                if self.handover is not None and not self.closed.is_set():
                    ended = "reconnect"
                elif not self.closed.is_set():
                    await self.send("stop", {"accountSid": self.cfg.account_sid, "callSid": self.res.call_sid})
                    ended = "caller"
            except ConnectionClosed:
                pass
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.stats.ended_by = ended
            if ended == "reconnect":
                assert self.handover is not None
                self.call.lingering.append(asyncio.create_task(self.linger(ws, self.handover.linger_s)))
            else:
                await ws.close()
                self.stats.close_code = ws.close_code
        return ended

    async def linger(self, ws: ClientConnection, linger_s: float) -> None:
        """The socket a :class:`Reconnect` replaced: silence frames until the gateway closes it, at most
        ``linger_s`` (from the newer socket's ``start``, which the caller reaches at once)."""

        async def drain() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass

        drainer = asyncio.create_task(drain())
        superseded = self.call.now_s()
        try:
            while not drainer.done() and self.call.now_s() - superseded < linger_s:
                self.chunk += 1
                frame = {"track": "inbound", "chunk": str(self.chunk), "timestamp": str((self.chunk - 1) * 20)}
                try:
                    await self.send("media", {**frame, "payload": base64.b64encode(_SILENCE).decode()})
                except ConnectionClosed:
                    break
                self.stats.late_frames += 1
                await asyncio.wait([drainer], timeout=TICK)
            if drainer.done() or ws.close_code is not None:
                self.stats.closed_after_s = self.call.now_s() - superseded
        finally:
            drainer.cancel()
            await asyncio.gather(drainer, return_exceptions=True)
            await ws.close()
            self.stats.close_code = ws.close_code

    async def dialog(self) -> None:
        await self.await_reply(self.res.turns[-1], self.cfg.greeting_timeout_s)
        while self.call.next_item < len(self.call.items) and not self.closed.is_set():
            item = self.call.items[self.call.next_item]
            self.call.next_item += 1
            if isinstance(item, Reconnect):
                self.handover = item
                return
            kind: TurnKind = (
                "dtmf"
                if isinstance(item, Dtmf)
                else "pause"
                if isinstance(item, Pause)
                else item.kind
                if isinstance(item, Overlap)
                else "speech"
            )
            turn = TurnResult(len(self.res.turns), kind)
            self.res.turns.append(turn)
            if isinstance(item, Dtmf):
                turn.caller = f"<dtmf {item.digits}>"
                due = self.call.now_s()
                for i, d in enumerate(item.digits):
                    self.dtmf_q.append((d, due + i * item.interval_s, turn if i == len(item.digits) - 1 else None))
            elif isinstance(item, Pause):
                turn.caller = f"<pause {item.seconds:g} s>"
                self.queue_line(silence_ulaw(max(1, round(item.seconds / TICK)) * FRAME_BYTES), turn)
            elif isinstance(item, Overlap):
                turn.caller = item.text or f"<{item.kind}>"
                self.queue_line(item.audio, turn)
            else:
                turn.caller = item.text
                self.queue_line(item.audio, turn)
            while (self.caller_q or self.dtmf_q) and not self.closed.is_set():
                await asyncio.sleep(TICK)
            await self.await_reply(turn, self.cfg.reply_timeout_s)

    async def await_reply(self, turn: TurnResult, timeout: float) -> None:
        """Wait as the next item needs: an :class:`Overlap` starts while the reply plays; after an overlap or a
        pause the agent must settle; anything else waits for the whole reply and ``agent_silence_s``."""
        items, i = self.call.items, self.call.next_item
        upcoming: Line | Dtmf | Overlap | Pause | Reconnect | None = items[i] if i < len(items) else None
        if isinstance(upcoming, Overlap):
            await self.wait_heard(turn, timeout, upcoming.at_ms / 1000)
        elif turn.kind == "pause" or turn.kind in OVERLAP_KINDS:
            await self.settle(turn)
        else:
            await self.wait_agent(turn, timeout)

    def queue_line(self, audio: bytes, turn: TurnResult) -> None:
        frames = [audio[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff") for i in range(0, len(audio), FRAME_BYTES)]
        voiced = [i for i, f in enumerate(frames) if ulaw_rms(f) > self.cfg.voice_rms]
        first = voiced[0] if voiced else -1
        last = voiced[-1] if voiced else len(frames) - 1
        self.caller_q.extend((f, turn, i == first, i == last) for i, f in enumerate(frames))

    async def wait_heard(self, turn: TurnResult, timeout: float, delay: float) -> None:
        """Until ``delay`` after the caller first heard the agent in ``turn``, or ``timeout`` without a reply."""
        while not self.closed.is_set():
            now = self.call.now_s()
            if turn.heard_start_s is not None:
                if now >= turn.heard_start_s + delay:
                    return
            elif turn.caller_end_s is not None and now - turn.caller_end_s > timeout:
                turn.timed_out = True
                return
            await asyncio.sleep(TICK)

    async def settle(self, turn: TurnResult) -> None:
        """Until nothing voiced is queued and nothing voiced was played or received for ``settle_s``."""
        start = self.call.now_s()
        while not self.closed.is_set():
            now = self.call.now_s()
            quiet_since = max(turn.caller_end_s or start, self.last_voiced_played, self.last_voiced_received)
            if self.pending_voiced == 0 and now - quiet_since >= self.cfg.settle_s:
                return
            if now - start > self.cfg.reply_timeout_s + self.cfg.settle_s:
                turn.timed_out = True
                return
            await asyncio.sleep(TICK)

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
            frame, turn, first, last = self.caller_q.popleft() if self.caller_q else (_SILENCE, None, False, False)
            if first and turn is not None and turn.kind in OVERLAP_KINDS:
                audible = self.pending_voiced > 0 or self.call.now_s() - self.last_voiced_played <= 2 * TICK
                turn.overlapped = audible
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
            if turn is not None and first:
                turn.voice_start_s = self.call.now_s()
                self.res.wire.append(WireEvent(turn.voice_start_s, "voice_start", turn=turn.index))
            if turn is not None and last:
                turn.caller_end_s = self.call.now_s()
                self.res.wire.append(WireEvent(turn.caller_end_s, "voice_end", turn=turn.index))
            self.res.caller_track += frame
            self.stats.frames += 1
            await self.play_tick()
            next_t += TICK
            await asyncio.sleep(max(0.0, next_t - self.call.loop.time()))

    async def play_tick(self) -> None:
        out = bytearray()
        while len(out) < FRAME_BYTES and self.playback and not isinstance(self.playback[0], str):
            audio, voiced, turn = self.playback[0]
            take = audio[: FRAME_BYTES - len(out)]
            out += take
            if voiced:
                self.last_voiced_played = self.call.now_s()
                if turn.heard_start_s is None:
                    turn.heard_start_s = self.last_voiced_played
            if len(take) == len(audio):
                self.playback.popleft()
                self.pending_voiced -= voiced
            else:
                self.playback[0] = (audio[len(take) :], voiced, turn)
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
            self.wire("echo", name=name, cleared=cleared)

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
                self.wire("mark", name=name)
                self.playback.append(name)
                if all(isinstance(s, str) for s in self.playback):
                    await self.echo_ready_marks()
            elif event == "clear":
                dropped = sum(len(s[0]) for s in self.playback if not isinstance(s, str))
                self.wire("clear", nbytes=dropped)
                self.res.cleared_bytes += dropped
                self.res.turns[-1].clears += 1
                kept = [s for s in self.playback if isinstance(s, str)]
                self.playback = deque(kept)
                self.pending_voiced = 0
                await self.echo_ready_marks(cleared=True)
            else:
                raise ValueError(f"unknown event {event!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.res.errors.append(f"31951: bad message from the gateway ({type(exc).__name__}: {exc}): {raw[:100]}")

    def wire(self, kind: Literal["media", "mark", "clear", "echo"], **fields: Any) -> None:
        self.res.wire.append(WireEvent(self.call.now_s(), kind, turn=len(self.res.turns) - 1, **fields))

    def on_media(self, payload: bytes) -> None:
        turn = self.res.turns[-1]
        turn.agent_audio += payload
        voiced = ulaw_rms(payload) > self.cfg.voice_rms
        self.wire("media", nbytes=len(payload), voiced=voiced)
        if voiced:
            self.last_voiced_received = self.call.now_s()
        if voiced and turn.agent_start_s is None and turn.caller_end_s is not None:
            turn.agent_start_s = self.call.now_s()
            if turn.kind in _LATENCY_KINDS:
                turn.latency_s = turn.agent_start_s - turn.caller_end_s
        if payload:
            self.playback.append((payload, voiced, turn))
            self.pending_voiced += voiced
