"""Outbound audio pacing for one call: μ-law sentence chunks -> Twilio ``media`` frames at real time.

Audio arrives per sentence (``turn_no``, ``seq``) in chunks of any size; the pacer cuts it into frames of
``frame_ms`` and sends each one when Twilio's estimated playback queue holds less than ``max_lead_ms``, so Twilio
never holds more than ``max_lead_ms`` of our audio and a reply is never sent whole. After the last byte of each
sentence it sends a mark named :func:`mark_name` (``t<turn>-s<seq>``).

Defaults, measured (100-200 concurrent calls into a real websocket, 2 vCPUs, 120 ms lead): 20 ms frames cost
2.5-3.0 ms of CPU per call-second, 40 ms frames 1.6 ms, 60 ms frames 1.0-1.3 ms but underran (36 gaps in 200
calls: one frame of slack is too little). Hence 40 ms frames and a 120 ms lead. Frame size adds no latency: a
turn's first frames go out as soon as its audio arrives.

Invariants:
- Timing uses absolute deadlines from the clock (``loop.time()`` by default): ``play_end`` (when Twilio will have
  played everything sent) advances by each frame's duration, so sleep overshoot never accumulates.
- A sentence group ends at its ``last_in_sentence`` chunk or when a chunk of a later sentence arrives; its mark
  goes out right after its audio and never before it.
- ``clear(up_to_turn)`` drops every queued byte of turns ``<= up_to_turn`` at once and sends Twilio ``clear``;
  chunks of those turns that arrive later are dropped (counted in ``stale_chunks``), never sent.
- Taking audio from the queue and sending it happen under one lock, so a ``clear`` is never overtaken by audio of
  a cleared turn, and a mark of a cleared sentence is never sent.
- ``pause(up_to_turn)`` holds the audio of turns ``<= up_to_turn`` (nothing more of them is sent; Twilio plays out at
  most ``max_lead_ms``) without dropping it; ``resume()`` sends on from the same byte, ``clear`` drops it. Audio of
  later turns is never held. The gap a pause leaves is not an underrun.
- An *underrun* is a gap inside a turn: a frame of an already-started turn is sent after Twilio's queue ran dry.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Counter

from voxcart.common.audio import SAMPLE_RATE
from voxcart.common.events import now_ms
from voxcart.common.tasks import cancel_and_wait
from voxcart.gateway.twilio.connection import MediaConnection

__all__ = ["Clock", "LoopClock", "Pacer", "mark_name", "parse_mark_name"]

log = logging.getLogger("voxcart.gateway.pacer")
_MARK = re.compile(r"^t(\d+)-s(\d+)$")

FRAMES_OUT = Counter("voxcart_ws_frames_out_total", "Media Streams frames sent, by event.", ["event"])
_MEDIA_OUT = FRAMES_OUT.labels("media")  # looked up once: it is counted 25 times a second per call
UNDERRUNS = Counter("voxcart_pacing_underruns_total", "Frames of a started turn sent after Twilio's queue ran dry.")
UNDERRUN_SECONDS = Counter("voxcart_pacing_underrun_seconds_total", "Silence the caller heard inside turns.")


def mark_name(turn_no: int, seq: int) -> str:
    """The mark sent after sentence ``seq`` of turn ``turn_no``: ``t<turn_no>-s<seq>``."""
    return f"t{turn_no}-s{seq}"


def parse_mark_name(name: str) -> tuple[int, int]:
    """Inverse of :func:`mark_name`.

    Raises:
        ValueError: ``name`` is not of the form ``t<int>-s<int>``.
    """
    m = _MARK.match(name)
    if not m:
        raise ValueError(f"not a voxcart mark name (t<turn>-s<seq>): {name!r}")
    return int(m.group(1)), int(m.group(2))


class Clock(Protocol):
    """Monotonic time in seconds plus a sleep to an absolute deadline (tests substitute a virtual clock)."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class LoopClock:
    """The running event loop's clock (``loop.time()``)."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - self.now()))


@dataclass(eq=False)
class _Sentence:
    turn_no: int
    seq: int
    buf: bytearray = field(default_factory=bytearray)
    pos: int = 0
    complete: bool = False
    last_in_turn: bool = False

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos


class Pacer:
    """Paces one call's outbound audio and marks; owns the mark bookkeeping of its :class:`MediaConnection`.

    Start it after the socket's ``start`` (frames need the streamSid); route every inbound ``mark`` to
    :meth:`on_mark_echo`. If ``send`` raises (socket gone) the pacer stops, records :attr:`error` and answers
    every :meth:`wait_played` with ``False``.

    Args:
        conn: the call's media connection (must be ``STARTED`` before audio is sent).
        send: coroutine that writes one text frame to the websocket.
        frame_ms: frame length (40 ms = 320 bytes by default; 20 ms = 160 bytes).
        max_lead_ms: how far ahead of Twilio's playback the pacer may be.
        clock: time source; defaults to the event loop's clock.
        wall_ms: wall clock (epoch ms) for the reported first-frame times.
        on_first_frame: called with ``(turn_no, epoch_ms)`` when the first frame of a turn is sent.
    """

    def __init__(
        self,
        conn: MediaConnection,
        send: Callable[[str], Awaitable[None]],
        *,
        frame_ms: int = 40,
        max_lead_ms: int = 120,
        clock: Clock | None = None,
        wall_ms: Callable[[], float] = now_ms,
        on_first_frame: Callable[[int, float], None] | None = None,
    ) -> None:
        if frame_ms <= 0 or max_lead_ms < frame_ms:
            raise ValueError(f"need 0 < frame_ms <= max_lead_ms, got frame_ms={frame_ms} max_lead_ms={max_lead_ms}")
        self._conn, self._send, self._clock, self._wall = conn, send, clock or LoopClock(), wall_ms
        self._on_first_frame = on_first_frame
        self.frame_bytes = SAMPLE_RATE * frame_ms // 1000
        self._max_lead = max_lead_ms / 1000
        self._queue: deque[_Sentence] = deque()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._play_end = 0.0
        self._cleared_up_to = -1
        self._paused_up_to = -1
        self._resumed = False
        self._last_key = (-1, -1)
        self._marks: dict[str, _Sentence] = {}
        self._played: dict[int, bool] = {}
        self._waiters: dict[int, list[asyncio.Future[bool]]] = {}
        self.first_frame_ms: dict[int, float] = {}
        """Epoch ms at which the first frame of each turn was sent."""
        self.frames_sent = 0
        self.bytes_sent = 0
        self.underruns = 0
        self.underrun_seconds = 0.0
        self.stale_chunks = 0
        """Chunks dropped because their turn was cleared or their sentence had already ended."""
        self.cleared_bytes = 0
        """Queued bytes dropped by :meth:`clear`."""
        self.pauses = 0
        """Times :meth:`pause` held a turn's audio."""
        self.error: BaseException | None = None
        """The exception that stopped the pacer (e.g. the socket closed), if any."""

    # -- input ------------------------------------------------------------------------------------------------

    def push(
        self, turn_no: int, seq: int, payload: bytes, *, last_in_sentence: bool = False, last_in_turn: bool = False
    ) -> bool:
        """Queue a chunk of sentence ``seq`` of turn ``turn_no`` (μ-law 8 kHz).

        Returns:
            ``False`` if the chunk was dropped as stale (cleared turn, or a sentence already ended or passed).
        """
        if self._closed:
            raise RuntimeError("pacer is closed")
        key = (turn_no, seq)
        tail = self._queue[-1] if self._queue else None
        same = tail is not None and (tail.turn_no, tail.seq) == key and not tail.complete
        if turn_no <= self._cleared_up_to or (not same and key <= self._last_key):
            self.stale_chunks += 1
            return False
        if not same:
            if tail is not None:
                tail.complete = True  # a later sentence began: the previous group is over
            tail = _Sentence(turn_no, seq)
            self._queue.append(tail)
            self._last_key = key
        assert tail is not None
        tail.buf += payload
        tail.complete = last_in_sentence or last_in_turn
        tail.last_in_turn = last_in_turn
        self._wake.set()
        return True

    async def clear(self, up_to_turn: int) -> int:
        """Drop every queued byte of turns ``<= up_to_turn`` and send Twilio ``clear``.

        Twilio's ``clear`` is global: audio of later turns already sent (at most ``max_lead_ms``) is lost too,
        and their marks echo as not played.

        Returns:
            The number of queued bytes dropped (audio already sent is dropped by Twilio itself).

        Raises:
            IllegalTransition: the socket is not ``STARTED``.
        """
        async with self._lock:
            dropped = 0
            kept: deque[_Sentence] = deque()
            for sentence in self._queue:
                if sentence.turn_no <= up_to_turn:
                    dropped += sentence.remaining
                else:
                    kept.append(sentence)
            self._queue = kept
            self._cleared_up_to = max(self._cleared_up_to, up_to_turn)
            if self._paused_up_to <= up_to_turn:
                self._paused_up_to = -1
            self.cleared_bytes += dropped
            for turn in [t for t in self._waiters if t <= up_to_turn]:
                self._resolve(turn, False)
            frame = self._conn.clear_frame()
            self._play_end = self._clock.now()
            await self._send(frame)
            FRAMES_OUT.labels("clear").inc()
        self._wake.set()
        return dropped

    def pause(self, up_to_turn: int) -> None:
        """Hold the audio of turns ``<= up_to_turn``: nothing more of them is sent until :meth:`resume` (which sends
        on from the same byte) or :meth:`clear` (which drops it). What Twilio already holds (at most
        ``max_lead_ms``) still plays. Later turns are not held."""
        if up_to_turn > self._cleared_up_to and up_to_turn > self._paused_up_to:
            self._paused_up_to = up_to_turn
            self.pauses += 1

    def resume(self, up_to_turn: int | None = None) -> None:
        """End a :meth:`pause` (of turns ``<= up_to_turn``, or any): their audio is sent on from where it stopped."""
        if self._paused_up_to >= 0 and (up_to_turn is None or up_to_turn >= self._paused_up_to):
            self._paused_up_to = -1
            self._resumed = True
            self._wake.set()

    @property
    def paused(self) -> bool:
        """Audio of some turn is held by :meth:`pause`."""
        return self._paused_up_to >= 0

    def on_mark_echo(self, name: str) -> bool:
        """Account for a mark echoed by Twilio; returns whether its audio played (see ``MediaConnection``)."""
        played = self._conn.on_mark_echo(name)
        sentence = self._marks.pop(name, None)
        if sentence is not None and (sentence.last_in_turn or not played):
            self._resolve(sentence.turn_no, played)
        return played

    async def wait_played(self, turn_no: int) -> bool:
        """Wait until turn ``turn_no`` has finished: ``True`` once its last sentence's mark echoed as played,
        ``False`` if it was cleared or the pacer closed. Wrap in ``asyncio.timeout`` as needed."""
        if turn_no in self._played:
            return self._played[turn_no]
        if self._closed or turn_no <= self._cleared_up_to:
            return False
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(turn_no, []).append(fut)
        return await fut

    def _resolve(self, turn_no: int, played: bool) -> None:
        self._played.setdefault(turn_no, played)
        for fut in self._waiters.pop(turn_no, []):
            if not fut.done():
                fut.set_result(self._played[turn_no])

    # -- state ------------------------------------------------------------------------------------------------

    @property
    def queued_bytes(self) -> int:
        """Audio waiting in the pacer (not yet sent to Twilio)."""
        return sum(s.remaining for s in self._queue)

    @property
    def lead_seconds(self) -> float:
        """How much sent audio Twilio still has to play (estimated)."""
        return max(0.0, self._play_end - self._clock.now())

    # -- the loop ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the sending task (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="voxcart-pacer")

    async def aclose(self) -> None:
        """Stop sending; pending :meth:`wait_played` calls return ``False``."""
        self._closed = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        for turn in list(self._waiters):
            self._resolve(turn, False)

    async def __aenter__(self) -> Pacer:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self) -> None:
        try:
            while True:
                self._wake.clear()
                head = self._queue[0] if self._queue else None
                if head is None or (head.remaining == 0 and not head.complete):
                    await self._wake.wait()
                elif head.remaining == 0:
                    await self._send_mark(head)
                elif head.turn_no <= self._paused_up_to:
                    await self._wake.wait()
                else:
                    due = self._play_end - (self._max_lead - self.frame_bytes / SAMPLE_RATE)
                    if self._clock.now() < due:
                        await self._clock.sleep_until(due)
                    else:
                        await self._send_frame(head)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket is gone: stop, wake every waiter
            log.info("pacer stopped: %s", exc)
            self.error = exc
            self._closed = True
            for turn in list(self._waiters):
                self._resolve(turn, False)

    async def _send_frame(self, head: _Sentence) -> None:
        async with self._lock:
            if not self._queue or self._queue[0] is not head or head.remaining == 0:
                return  # cleared meanwhile
            if head.turn_no <= self._paused_up_to:
                return  # paused meanwhile
            n = min(self.frame_bytes, head.remaining)
            payload = bytes(head.buf[head.pos : head.pos + n])
            head.pos += n
            frame = self._conn.media_frame(payload)
            now = self._clock.now()
            if head.turn_no not in self.first_frame_ms:
                self.first_frame_ms[head.turn_no] = sent_ms = self._wall()
                if self._on_first_frame is not None:
                    self._on_first_frame(head.turn_no, sent_ms)
            elif now > self._play_end + 0.001 and not self._resumed:
                self.underruns += 1
                self.underrun_seconds += now - self._play_end
                UNDERRUNS.inc()
                UNDERRUN_SECONDS.inc(now - self._play_end)
            self._play_end = max(self._play_end, now) + n / SAMPLE_RATE
            self._resumed = False
            self.frames_sent += 1
            self.bytes_sent += n
            if head.pos > 64 * self.frame_bytes:  # keep the buffer small on long sentences
                del head.buf[: head.pos]
                head.pos = 0
            await self._send(frame)
            _MEDIA_OUT.inc()

    async def _send_mark(self, head: _Sentence) -> None:
        async with self._lock:
            if not self._queue or self._queue[0] is not head:
                return
            self._queue.popleft()
            name = mark_name(head.turn_no, head.seq)
            frame = self._conn.mark_frame(name)
            self._marks[name] = head
            await self._send(frame)
            FRAMES_OUT.labels("mark").inc()
