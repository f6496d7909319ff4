"""The simulator's values: caller items (:class:`Line`, :class:`Dtmf`, :class:`Overlap`, :class:`Pause`), its config,
and what a call observed (per turn, and message by message in :attr:`CallResult.wire`).

Invariants: everything here is plain data with no I/O except :meth:`CallResult.save_wav`; ``caller_track`` and
``agent_track`` each grow by exactly one 20 ms frame per tick of a stream (see ``_simulator_stream``), so the WAV's
two channels stay aligned.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from voxcart.common.audio import SAMPLE_RATE, ulaw_to_pcm16

__all__ = [
    "OVERLAP_KINDS",
    "CallResult",
    "Dtmf",
    "Line",
    "Overlap",
    "OverlapKind",
    "Pause",
    "Reconnect",
    "SimulatorConfig",
    "StreamResult",
    "SimulatorError",
    "TurnKind",
    "TurnResult",
    "WireEvent",
]

OverlapKind = Literal["interruption", "backchannel", "noise"]
OVERLAP_KINDS: tuple[OverlapKind, ...] = ("interruption", "backchannel", "noise")
TurnKind = Literal["greeting", "speech", "dtmf", "pause", "interruption", "backchannel", "noise"]


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
class Overlap:
    """Caller audio that starts while the agent is speaking: ``at_ms`` after the caller first *heard* the agent's
    reply to the previous item (or the greeting), whether or not that reply is still playing then.

    ``kind`` says what the caller means: a real ``interruption`` (the agent should stop), or a ``backchannel``
    ("uh huh") or ``noise`` burst (the agent should go on). After it the caller waits until the agent has been
    quiet for ``SimulatorConfig.settle_s``.
    """

    audio: bytes
    kind: OverlapKind
    at_ms: float
    text: str = ""

    def __post_init__(self) -> None:
        if self.kind not in OVERLAP_KINDS:
            raise ValueError(f"Overlap kind must be one of {OVERLAP_KINDS}; got {self.kind!r}")
        if not self.at_ms >= 0:
            raise ValueError(f"Overlap at_ms must be >= 0; got {self.at_ms!r}")
        if not self.audio:
            raise ValueError("Overlap audio is empty")


@dataclass(frozen=True)
class Pause:
    """The caller stays silent for ``seconds`` after the agent's reply has played (then waits as after a line)."""

    seconds: float

    def __post_init__(self) -> None:
        if not 0 < self.seconds <= 600:
            raise ValueError(f"Pause seconds must be in (0, 600]; got {self.seconds!r}")


@dataclass(frozen=True)
class Reconnect:
    """Twilio opens a second media socket for the call (a reconnect of its own, after the reply to the previous item
    has played): the caller goes on on a new socket, on the next gateway replica of
    ``SimulatorConfig.gateway_urls`` (round robin), while the old socket stays open, sending silence frames, until
    the gateway closes it or ``linger_s`` has passed."""

    linger_s: float = 3.0

    def __post_init__(self) -> None:
        if not 0 < self.linger_s <= 60:
            raise ValueError(f"Reconnect linger_s must be in (0, 60]; got {self.linger_s!r}")


@dataclass
class StreamResult:
    """One media socket of the call, in the order they were opened."""

    sid: str
    gateway: str
    """The replica URL the socket was opened on."""
    frames: int = 0
    """Caller frames sent while the socket was the call's: its consecutive slice of ``CallResult.caller_track``."""
    late_frames: int = 0
    """Silence frames it sent after a :class:`Reconnect` moved the caller to a newer socket."""
    ended_by: Literal["caller", "gateway", "reconnect"] | None = None
    """``caller``: we sent ``stop``; ``gateway``: it closed (or died); ``reconnect``: replaced by a newer socket."""
    close_code: int | None = None
    """The websocket close code (1006: the connection dropped without a close frame, e.g. the replica died)."""
    closed_after_s: float | None = None
    """After a :class:`Reconnect`: from the newer socket's ``start`` to the gateway closing this one (``None`` if
    it did not within ``linger_s``)."""


@dataclass(frozen=True)
class WireEvent:
    """One websocket message as the simulator saw it, on the simulator's clock (seconds from the first stream's
    start).

    ``kind``: ``media`` (agent audio received; ``nbytes``, ``voiced``), ``mark`` (a mark received from the gateway;
    ``name``), ``clear`` (received), ``echo`` (a mark echoed back; ``cleared`` when echoed because of a clear),
    ``voice_start``/``voice_end`` (the first/last voiced frame of caller item ``turn`` sent; an item with no voiced
    frame, like a pause, has only a ``voice_end``, at its last frame). A ``clear``'s ``nbytes``
    is the queued audio it dropped.
    """

    t: float
    kind: Literal["media", "mark", "clear", "echo", "voice_start", "voice_end"]
    name: str = ""
    nbytes: int = 0
    voiced: bool = False
    cleared: bool = False
    turn: int = -1
    """The simulator's turn index (``CallResult.turns``) current when the message was seen."""


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
    gateway_urls: tuple[str, ...] = ()
    """More gateway replicas behind the same public URL, as a load balancer sees them: a request or socket whose
    replica refuses the connection goes to the next one, and a :class:`Reconnect` opens its socket on the next
    one."""
    settle_s: float = 2.0
    """After an :class:`Overlap` or :class:`Pause`: agent quiet (nothing queued, nothing voiced played or received)
    this long before the caller goes on (capped by ``reply_timeout_s``)."""
    hold_keys: str | None = None
    """Digits the caller presses at the first ``<Gather>`` they hear while on hold (``"1"``: ask for a call back);
    ``None`` waits on hold."""
    max_hold_s: float = 600.0
    """The caller hangs up after this long on hold."""


@dataclass
class TurnResult:
    """One exchange: what the caller said (nothing for the greeting) and what came back. Times are seconds from
    the start of the first stream."""

    index: int
    kind: TurnKind
    caller: str = ""
    voice_start_s: float | None = None
    """When the caller's first voiced frame of this item was sent."""
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
    heard_start_s: float | None = None
    """When the first voiced agent frame received during this turn was played to the caller."""
    overlapped: bool | None = None
    """:class:`Overlap` items: the agent's audio was playing when the caller's first voiced frame was sent."""


@dataclass
class CallResult:
    """Everything the simulated call observed."""

    call_sid: str
    turns: list[TurnResult] = field(default_factory=list)
    stream_sids: list[str] = field(default_factory=list)
    streams: list[StreamResult] = field(default_factory=list)
    """Every media socket, in order (``stream_sids`` are their sids)."""
    twiml: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    """``<Say>`` texts Twilio would have spoken."""
    ended_by: Literal["caller", "agent", "transfer", "no_stream"] = "caller"
    holds: int = 0
    """``<Redirect>``s followed while on hold (before the agent answered)."""
    held_s: float = 0.0
    """Time on hold before the first media stream (or the end of the call)."""
    transfer_to: str | None = None
    duration_s: float = 0.0
    marks_played: int = 0
    marks_cleared: int = 0
    cleared_bytes: int = 0
    """Queued agent audio dropped, unplayed, by ``clear``."""
    wire: list[WireEvent] = field(default_factory=list)
    """Every media/mark/clear received, every mark echoed, and the caller items' voice start/end, in order."""
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
