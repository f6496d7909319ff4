"""One live media socket: Twilio frames in -> bus; bus audio and control -> paced frames out.

Invariants:
- Caller audio goes to ``audio.in`` with explicit ids ``<gen>-<chunk>`` through the process's one coalescing
  writer: never an awaited XADD per frame. A retried write cannot duplicate, and once a newer socket of the
  same call (a higher ``gen``) has written, this socket's late writes are refused by Redis.
- Every mark Twilio echoes becomes a ``mark`` event (played or not) for brain: what the caller actually heard.
- ``clear`` drops every queued chunk of the cleared turns at once; chunks of those turns that arrive later are
  dropped by the pacer, never sent.
- ``pause`` holds the agent's audio (caller onset, maybe an interruption) without dropping it; ``resume`` sends it
  on, ``clear`` drops it; a pause that neither ends within :data:`PAUSE_MAX_S` resumes by itself, so a lost
  ``resume`` never silences the agent.
- A hang-up or transfer waits until the turn before it has fully played (its last mark echoed); how the call ends
  is recorded at once, before the socket can close, so a ``<Connect action>`` request (on any replica) never
  takes an ending call for a broken stream.
- A socket superseded by a newer one of the same call (:meth:`CallSession.supersede`) sends nothing more and is
  closed; the call goes on on the new socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Histogram

from voxcart.common import events as ev
from voxcart.common.bus import Output, keys
from voxcart.common.bus.writer import Writer
from voxcart.common.metrics import LATENCY_BUCKETS
from voxcart.common.tasks import cancel_and_wait

from .twilio.connection import MediaConnection
from .twilio.pacer import Pacer, parse_mark_name

__all__ = ["CallSession"]

log = logging.getLogger("voxcart.gateway.session")

TURN_LATENCY = Histogram(
    "voxcart_turn_latency_seconds",
    "Caller's last voiced frame arrival to the first reply frame sent (voice-to-voice).",
    buckets=LATENCY_BUCKETS,
)
BARGE_IN = Histogram(
    "voxcart_barge_in_reaction_seconds",
    "First voiced frame of an interruption to Twilio clear sent.",
    buckets=LATENCY_BUCKETS,
)
BARGE_IN_PAUSE = Histogram(
    "voxcart_barge_in_pause_seconds",
    "First voiced frame of a caller onset during agent audio to that audio paused.",
    buckets=LATENCY_BUCKETS,
)
FRAMES_IN = Counter("voxcart_ws_frames_in_total", "Media Streams frames received, by event.", ["event"])
STALE_DROPPED = Counter("voxcart_stale_audio_chunks_total", "Outbound chunks dropped because their turn was cleared.")
REPLY_DELIVERY = Histogram(
    "voxcart_turn_reply_delivery_seconds",
    "Synthesis start of a reply's first sentence to its first frame sent (synthesis, the audio.out hop, pacing).",
    buckets=LATENCY_BUCKETS,
)

_END_WAIT_S = 60.0
PAUSE_MAX_S = 3.0
"""A pause that brain neither resumes nor clears within this long resumes by itself."""


class CallSession:
    """The gateway side of one call's media socket.

    Args:
        conn: the socket's protocol state (after ``start``).
        gen: this socket's generation (``INCR`` of the call's ``gen`` key).
        writer: the process's coalescing writer.
        send: writes one text frame to the websocket.
        close_socket: closes the websocket (hang-up/transfer without REST credentials).
        end_call: hangs the call up through Twilio's REST API, or ``None`` when no credentials are configured.
        record_latency: stores a turn's measured latency in the call record.
        remember_transfer: records how the call ends (the transfer number, or ``""`` for a hang-up) where
            ``<Connect action>`` will look for it.
        transfer_call: redirects the call to ``<Dial>number</Dial>`` through Twilio's REST API, or ``None`` when
            no credentials are configured (the socket is closed and ``<Connect action>`` dials instead).
    """

    def __init__(
        self,
        conn: MediaConnection,
        gen: int,
        writer: Writer,
        send: Callable[[str], Awaitable[None]],
        close_socket: Callable[[], Awaitable[None]],
        end_call: Callable[[str], Awaitable[None]] | None,
        record_latency: Callable[[str, int, float], None],
        remember_transfer: Callable[[str, str], Awaitable[None]],
        transfer_call: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        assert conn.call_sid is not None
        self.sid: str = conn.call_sid
        self.conn = conn
        self.gen = gen
        self.writer = writer
        self._close_socket = close_socket
        self._end_call = end_call
        self._record_latency = record_latency
        self._remember_transfer = remember_transfer
        self._transfer_call = transfer_call
        self._reply_to_voiced: dict[int, float] = {}
        self._synth_started: dict[int, float] = {}
        self.pacer = Pacer(conn, send, on_first_frame=self._first_frame)
        self.audio_in = keys.audio_in(self.sid)
        self.events = keys.events(self.sid)
        self.positions: dict[str, str] = {}
        self.transfer_to: str | None = None
        self.ending: asyncio.Task[None] | None = None
        self._pause_timer: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.superseded = False
        """A newer socket of this call took over (see :meth:`supersede`)."""

    def start(self, positions: dict[str, str]) -> None:
        self.positions = positions
        self.pacer.start()

    # -- inbound ----------------------------------------------------------------------------------------
    def on_media(self, chunk: int, payload: bytes, media_ts: int) -> None:
        frame = ev.AudioFrame(
            call_sid=self.sid, gen=self.gen, chunk=chunk, payload=payload, media_ts=media_ts, arrived=ev.now_ms()
        )
        self.writer.put(Output(self.audio_in, ev.encode(frame), id=f"{self.gen}-{chunk}", maxlen=keys.AUDIO_IN_MAXLEN))

    def on_dtmf(self, digit: str) -> None:
        event = ev.Dtmf(call_sid=self.sid, digit=digit, arrived=ev.now_ms())
        self.writer.put(Output(self.events, ev.encode(event), maxlen=keys.EVENTS_MAXLEN))

    def on_mark(self, name: str) -> None:
        played = self.pacer.on_mark_echo(name)
        try:
            turn_no, seq = parse_mark_name(name)
        except ValueError:
            log.warning("echo of a mark we never send: %r", name, extra={"call_sid": self.sid})
            return
        event = ev.Mark(call_sid=self.sid, name=name, turn_no=turn_no, seq=seq, played=played)
        self.writer.put(Output(self.events, ev.encode(event), maxlen=keys.EVENTS_MAXLEN))

    # -- outbound ---------------------------------------------------------------------------------------
    def _first_frame(self, turn_no: int, sent_ms: float) -> None:
        voiced = self._reply_to_voiced.get(turn_no, 0.0)
        if voiced > 0:
            latency = (sent_ms - voiced) / 1000
            TURN_LATENCY.observe(latency)
            self._record_latency(self.sid, turn_no, latency)
        started = self._synth_started.pop(turn_no, 0.0)
        if started > 0:
            REPLY_DELIVERY.observe(max(0.0, (sent_ms - started) / 1000))

    async def deliver(self, event: ev.Event) -> None:
        """Act on one entry of this call's ``audio.out`` or ``control`` stream."""
        if isinstance(event, ev.AudioChunk):
            if event.reply_to_voiced:
                self._reply_to_voiced.setdefault(event.turn_no, event.reply_to_voiced)
            if event.synth_started and event.turn_no not in self.pacer.first_frame_ms:
                self._synth_started.setdefault(event.turn_no, event.synth_started)
            accepted = self.pacer.push(
                event.turn_no,
                event.seq,
                event.payload,
                last_in_sentence=event.last_in_sentence,
                last_in_turn=event.last_in_turn,
            )
            if not accepted:
                STALE_DROPPED.inc()
        elif isinstance(event, ev.Clear):
            await self.pacer.clear(event.turn_no)
            if event.voiced_arrived:
                BARGE_IN.observe((ev.now_ms() - event.voiced_arrived) / 1000)
            self._stop_pause_timer()
        elif isinstance(event, ev.Pause):
            self.pacer.pause(event.turn_no)
            if event.voiced_arrived:
                BARGE_IN_PAUSE.observe((ev.now_ms() - event.voiced_arrived) / 1000)
            if self.pacer.paused:
                self._stop_pause_timer()
                self._pause_timer = asyncio.create_task(self._resume_after(event.turn_no, PAUSE_MAX_S))
        elif isinstance(event, ev.Resume):
            self.pacer.resume(event.turn_no)
            self._stop_pause_timer()
        elif isinstance(event, ev.Hangup | ev.Transfer) and self.ending is None:
            if isinstance(event, ev.Transfer):
                self.transfer_to = event.number
            self.ending = asyncio.create_task(self._end_after(event.after_turn, isinstance(event, ev.Hangup)))

    async def _resume_after(self, turn_no: int, delay: float) -> None:
        await asyncio.sleep(delay)
        log.info("pause of turn %d neither resumed nor cleared: resuming", turn_no, extra={"call_sid": self.sid})
        self.pacer.resume(turn_no)

    def _stop_pause_timer(self) -> None:
        if self._pause_timer is not None and not self._pause_timer.done():
            self._pause_timer.cancel()
        self._pause_timer = None

    async def _end_after(self, turn_no: int, hangup: bool) -> None:
        """Let the last turn play out, then transfer or hang up through the REST API, or close the socket (Twilio
        then asks ``<Connect action>``, which answers ``<Dial>`` for a transfer or ``<Hangup/>``)."""
        await self._remember_transfer(self.sid, self.transfer_to or "")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_END_WAIT_S):
                await self.pacer.wait_played(turn_no)
        if self.transfer_to:
            # remembered first: if the REST redirect fails, closing the socket still dials via <Connect action>
            if self._transfer_call is not None:
                sid = self.sid
                try:
                    await self._transfer_call(self.sid, self.transfer_to)
                    return
                except Exception as exc:
                    log.warning("REST transfer failed (%s); closing the media socket", exc, extra={"call_sid": sid})
        if hangup and self._end_call is not None:
            try:
                await self._end_call(self.sid)
                return
            except Exception as exc:  # REST failure: closing the socket still ends the call
                log.warning("REST hang-up failed (%s); closing the media socket", exc, extra={"call_sid": self.sid})
        await self._close_socket()

    async def supersede(self) -> None:
        """A newer socket of this call (a higher ``gen``, on this replica or another) took over: stop sending and
        close this socket. The call goes on; Redis already refuses this socket's late frames (lower ids)."""
        self.superseded = True
        await self.aclose()
        await self._close_socket()

    async def aclose(self) -> None:
        await cancel_and_wait(self._pause_timer)
        if self.ending is not None and not self.ending.done():
            await cancel_and_wait(self.ending)
        await self.pacer.aclose()
        self.closed.set()
