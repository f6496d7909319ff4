"""State machine and bookkeeping for one Twilio Media Streams websocket (protocols.md 2.1-2.4).

States: ``CONNECTING -> CONNECTED -> STARTED -> STOPPED``; any state ``-> CLOSED`` (socket gone; closing twice
is a no-op). Inbound messages drive the transitions (``connected``, ``start``, ``stop``); a message that is
illegal in the current state raises :class:`IllegalTransition`, and sending before ``start`` (no streamSid
yet) or after ``stop`` raises too.

Invariants:
- Every message after ``start`` must carry the ``streamSid`` of that ``start`` (else ``MediaProtocolError``).
- Sequence numbers should run 1, 2, 3 …: a jump counts the missing numbers in ``seq_gaps``; a number not above
  the last one is a duplicate, counted in ``seq_duplicates`` and dropped (``receive`` returns ``None``).
- A frame that :meth:`MediaConnection.receive` refuses changes nothing (state, sids, counters), except that a
  dropped duplicate is counted.
- Marks: a mark is *outstanding* from :meth:`MediaConnection.mark_frame` until its echo. :meth:`clear_frame`
  turns every outstanding mark into a *cleared* one; the echo of a cleared mark means "not played" (Twilio
  echoes them at once on ``clear``), the echo of any other outstanding mark means "played".
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from voxcart.gateway.twilio.media import (
    Connected,
    InboundMessage,
    Media,
    MediaFormat,
    MediaProtocolError,
    Start,
    Stop,
    decode_frame,
    encode_clear,
    encode_mark,
    encode_media,
)

__all__ = ["IllegalTransition", "MediaConnection", "SocketState"]


class SocketState(enum.Enum):
    """Lifecycle of one media socket."""

    CONNECTING = "connecting"
    """Websocket accepted, nothing received yet."""
    CONNECTED = "connected"
    """Twilio's ``connected`` message arrived."""
    STARTED = "started"
    """``start`` arrived: the stream and call sids are known; media flows both ways."""
    STOPPED = "stopped"
    """``stop`` arrived: the call or stream ended; nothing more may be received or sent."""
    CLOSED = "closed"
    """The websocket is gone."""


_ALLOWED: dict[SocketState, frozenset[SocketState]] = {
    SocketState.CONNECTING: frozenset({SocketState.CONNECTED, SocketState.CLOSED}),
    SocketState.CONNECTED: frozenset({SocketState.STARTED, SocketState.CLOSED}),
    SocketState.STARTED: frozenset({SocketState.STOPPED, SocketState.CLOSED}),
    SocketState.STOPPED: frozenset({SocketState.CLOSED}),
    SocketState.CLOSED: frozenset(),
}
_EXPECTED_FORMAT = MediaFormat(encoding="audio/x-mulaw", sample_rate=8000, channels=1)


class IllegalTransition(MediaProtocolError):
    """A message or action that the socket's current state does not allow."""


class MediaConnection:
    """One media socket: validates inbound frames in order, builds outbound frames, tracks marks.

    Not thread-safe; use it from the task that owns the websocket.
    """

    def __init__(self) -> None:
        self.state = SocketState.CONNECTING
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.account_sid: str | None = None
        self.custom_parameters: Mapping[str, str] = {}
        self.last_seq = 0
        """Highest ``sequenceNumber`` received."""
        self.last_chunk = 0
        """Highest ``media.chunk`` received."""
        self.seq_gaps = 0
        """Sequence numbers skipped (messages lost or never sent)."""
        self.seq_duplicates = 0
        """Messages dropped because their sequence number was not above the last one."""
        self.media_frames = 0
        self.marks_sent = 0
        self.marks_played = 0
        self.marks_cleared = 0
        self.unknown_marks = 0
        """Echoes of marks this socket never sent (or already echoed)."""
        self.clears_sent = 0
        self._outstanding: dict[str, None] = {}
        self._cleared: set[str] = set()

    def _move(self, new: SocketState, why: str) -> None:
        if new not in _ALLOWED[self.state]:
            raise IllegalTransition(f"media socket in state {self.state.name} cannot take {why}")
        self.state = new

    def receive(self, frame: str | bytes) -> InboundMessage | None:
        """Decode one inbound text frame and apply it to the state machine.

        Returns:
            The message, or ``None`` for a duplicate (sequence number not above the last one) that was dropped.

        Raises:
            MediaProtocolError: the frame is invalid (see :func:`~voxcart.gateway.twilio.media.decode_frame`).
            IllegalTransition: the message is not allowed in the current state.
        """
        if self.state in (SocketState.STOPPED, SocketState.CLOSED):
            raise IllegalTransition(f"media socket in state {self.state.name} received another frame")
        msg = decode_frame(frame, self.stream_sid)
        if isinstance(msg, Connected):
            self._move(SocketState.CONNECTED, "a 'connected' message")
            return msg
        if self.state is not SocketState.STARTED and not isinstance(msg, Start):
            raise IllegalTransition(
                f"media socket in state {self.state.name} received {type(msg).__name__.lower()!r} before 'start'"
            )
        seq = msg.sequence_number
        if seq <= self.last_seq:
            self.seq_duplicates += 1
            return None
        if isinstance(msg, Start):  # checked before any bookkeeping: a refused start leaves no trace
            if self.state is not SocketState.CONNECTED:
                raise IllegalTransition(f"media socket in state {self.state.name} cannot take a 'start' message")
            info = msg.start
            if info.stream_sid != msg.stream_sid:
                raise MediaProtocolError(f"start names two streams: {msg.stream_sid!r} and {info.stream_sid!r}")
            if info.media_format != _EXPECTED_FORMAT:
                raise MediaProtocolError(f"unsupported media format {info.media_format}; need μ-law 8000 Hz mono")
        self.seq_gaps += seq - self.last_seq - 1
        self.last_seq = seq
        if isinstance(msg, Media):
            self.media_frames += 1
            self.last_chunk = max(self.last_chunk, msg.media.chunk)
        elif isinstance(msg, Start):
            info = msg.start
            self._move(SocketState.STARTED, "a 'start' message")
            self.stream_sid, self.call_sid, self.account_sid = info.stream_sid, info.call_sid, info.account_sid
            self.custom_parameters = dict(info.custom_parameters)
        elif isinstance(msg, Stop):
            self._move(SocketState.STOPPED, "a 'stop' message")
        return msg

    def close(self) -> None:
        """The websocket is gone (idempotent)."""
        self.state = SocketState.CLOSED

    def _sid_for_send(self, what: str) -> str:
        if self.state is not SocketState.STARTED or self.stream_sid is None:
            raise IllegalTransition(f"cannot send {what} on a media socket in state {self.state.name}")
        return self.stream_sid

    def media_frame(self, payload: bytes) -> str:
        """Build an outbound ``media`` frame (raw μ-law) for this stream."""
        return encode_media(self._sid_for_send("media"), payload)

    def mark_frame(self, name: str) -> str:
        """Build an outbound ``mark`` frame and record the mark as outstanding.

        Raises:
            ValueError: a mark of that name is already outstanding or cleared-but-not-echoed.
        """
        frame = encode_mark(self._sid_for_send("a mark"), name)
        if name in self._outstanding or name in self._cleared:
            raise ValueError(f"mark {name!r} is already outstanding on this socket")
        self._outstanding[name] = None
        self.marks_sent += 1
        return frame

    def clear_frame(self) -> str:
        """Build an outbound ``clear`` frame; every outstanding mark now echoes as not played."""
        frame = encode_clear(self._sid_for_send("clear"))
        self._cleared.update(self._outstanding)
        self._outstanding.clear()
        self.clears_sent += 1
        return frame

    def on_mark_echo(self, name: str) -> bool:
        """Account for Twilio echoing mark ``name``.

        Returns:
            ``True`` if the audio before the mark played; ``False`` if the mark was outstanding when a ``clear``
            was sent (echoed because of it), or is unknown (counted in ``unknown_marks``).
        """
        if name in self._cleared:
            self._cleared.discard(name)
            self.marks_cleared += 1
            return False
        if name in self._outstanding:
            del self._outstanding[name]
            self.marks_played += 1
            return True
        self.unknown_marks += 1
        return False

    @property
    def outstanding_marks(self) -> tuple[str, ...]:
        """Marks sent and not yet echoed, oldest first (cleared ones excluded)."""
        return tuple(self._outstanding)
