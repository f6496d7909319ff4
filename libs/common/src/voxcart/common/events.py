"""Everything that travels on the bus, as versioned msgspec Structs.

Invariants:
- Every event names its call (``call_sid``) and carries a schema version ``v``; a reader refuses a version
  newer than it knows (:func:`decode`) instead of misreading it.
- Times are wall-clock milliseconds since the epoch (``float``), taken with :func:`now_ms`, so that services
  in different processes can subtract them.
- Derived identifiers are deterministic, so that a replay after a takeover produces the same ids and the
  consumers can drop what they already have: ``utterance_id = <sid>:<first audio entry id>``,
  ``turn_id = <sid>:<utterance_id>``.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec

__all__ = [
    "SCHEMA_VERSION",
    "AudioChunk",
    "AudioFrame",
    "BusGap",
    "CallEnded",
    "CallResumed",
    "CallStarted",
    "Cancel",
    "Clear",
    "Dtmf",
    "Event",
    "EventDecodeError",
    "Expect",
    "Hangup",
    "Listen",
    "Mark",
    "Pause",
    "Resume",
    "Say",
    "SpeechEnded",
    "SpeechProgress",
    "SpeechStarted",
    "StreamReconnected",
    "TranscriptFinal",
    "TranscriptPartial",
    "Transfer",
    "TurnRecord",
    "decode",
    "encode",
    "now_ms",
]

SCHEMA_VERSION = 1

Expect = Literal["free", "digits", "yes_no", "product", "address"]
"""What the brain expects the caller to say next; recognizers narrow their search to it (``"address"`` searches
the open domain but waits longer for the end of the caller's turn)."""


def now_ms() -> float:
    """Wall-clock milliseconds since the epoch."""
    return time.time() * 1000.0


class _Base(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    call_sid: str
    v: int = SCHEMA_VERSION
    ts: float = msgspec.field(default_factory=now_ms)


# -- lifecycle (vc:calls:lifecycle) --------------------------------------------------------------------------


class CallStarted(_Base, frozen=True, kw_only=True, tag="call.started"):
    """A call was answered by a webhook; stt, brain and tts claim it."""

    from_number: str = ""
    to_number: str = ""
    account_sid: str = ""


class CallEnded(_Base, frozen=True, kw_only=True, tag="call.ended"):
    reason: str = "completed"


class StreamReconnected(_Base, frozen=True, kw_only=True, tag="stream.reconnected"):
    """A new media socket (generation ``gen``) replaced an earlier one."""

    gen: int


class CallResumed(_Base, frozen=True, kw_only=True, tag="call.resumed"):
    """The gateway re-asserts a live call after Redis lost data."""


# -- caller audio (vc:call:{sid}:audio.in) ------------------------------------------------------------------


class AudioFrame(_Base, frozen=True, kw_only=True, tag="audio.frame"):
    """One inbound Twilio media frame; its entry id is ``<gen>-<chunk>``."""

    gen: int
    chunk: int
    payload: bytes
    """μ-law 8 kHz mono, as Twilio sent it (normally 160 bytes = 20 ms)."""
    media_ts: int = 0
    """Twilio's ``media.timestamp``: ms since the stream started."""
    arrived: float = 0.0
    """When the gateway received the frame (epoch ms)."""


# -- call events (vc:call:{sid}:events), read by brain -------------------------------------------------------


class SpeechStarted(_Base, frozen=True, kw_only=True, tag="speech.started"):
    utterance_id: str
    first_voiced_arrived: float
    """Gateway arrival time of the first voiced frame (epoch ms)."""


class SpeechProgress(_Base, frozen=True, kw_only=True, tag="speech.progress"):
    """The caller has kept speaking: sent at fixed amounts of voiced audio (e.g. 200, 400, 600 ms) of an utterance,
    so brain can tell an interruption from a cough or a backchannel while the caller is still talking."""

    utterance_id: str
    first_voiced_arrived: float
    voiced_ms: float
    """Voiced audio in the utterance so far."""
    prob: float
    """Mean speech probability of those voiced frames (0..1)."""
    text: str = ""
    """The recognizer's words so far ("" when it has none yet, or the provider gives none this early)."""


class SpeechEnded(_Base, frozen=True, kw_only=True, tag="speech.ended"):
    """An onset (``speech.started``) ended without words: noise, a cough, a door; no final follows it."""

    utterance_id: str
    voiced_ms: float = 0.0


class TranscriptPartial(_Base, frozen=True, kw_only=True, tag="transcript.partial"):
    utterance_id: str
    text: str


class TranscriptFinal(_Base, frozen=True, kw_only=True, tag="transcript.final"):
    utterance_id: str
    text: str
    confidence: float
    first_voiced_arrived: float
    last_voiced_arrived: float
    """Gateway arrival time of the caller's last voiced frame: turn latency starts here."""
    endpointed_at: float
    """When the endpointer decided the caller had stopped."""
    recognized_at: float
    """When the recognizer produced the final text."""


class Dtmf(_Base, frozen=True, kw_only=True, tag="dtmf"):
    digit: str
    arrived: float


class Mark(_Base, frozen=True, kw_only=True, tag="mark"):
    """Twilio echoed a mark: the audio before it played, unless ``cleared`` (echoed because of a ``clear``)."""

    name: str
    turn_no: int
    seq: int
    played: bool


class BusGap(_Base, frozen=True, kw_only=True, tag="bus.gap"):
    """Caller audio was lost on the way into the bus; brain may ask the caller to repeat."""

    frames: int


# -- brain -> tts (vc:call:{sid}:tts) ----------------------------------------------------------------------


class Say(_Base, frozen=True, kw_only=True, tag="say"):
    """One sentence of a reply; ``seq`` counts sentences inside turn ``turn_no``."""

    turn_id: str
    turn_no: int
    seq: int
    text: str
    last: bool
    """The last sentence of the turn."""
    reply_to_voiced: float = 0.0
    """``last_voiced_arrived`` of the caller utterance this answers (0 for prompts), for turn latency."""
    decided_at: float = 0.0


class Cancel(_Base, frozen=True, kw_only=True, tag="cancel"):
    """Stop producing audio for turns up to and including ``turn_no``."""

    turn_no: int


# -- tts -> gateway (vc:call:{sid}:audio.out), id ``<turn_no>-<seq * 1000 + k>`` -------------------------------


class AudioChunk(_Base, frozen=True, kw_only=True, tag="audio.chunk"):
    turn_no: int
    seq: int
    """Sentence number inside the turn."""
    k: int
    """Chunk number inside the sentence."""
    payload: bytes
    """μ-law 8 kHz mono."""
    text: str = ""
    """The sentence this chunk belongs to (on the sentence's last chunk only)."""
    last_in_sentence: bool = False
    last_in_turn: bool = False
    reply_to_voiced: float = 0.0
    synth_started: float = 0.0


# -- brain -> gateway (vc:call:{sid}:control) ------------------------------------------------------------


class Clear(_Base, frozen=True, kw_only=True, tag="clear"):
    """Drop every queued chunk of turns up to ``turn_no`` and send Twilio ``clear``."""

    turn_no: int
    voiced_arrived: float = 0.0
    """First voiced frame of the interruption, for barge-in reaction time."""


class Pause(_Base, frozen=True, kw_only=True, tag="pause"):
    """Stop sending audio of turns up to ``turn_no`` but keep it (the caller may be interrupting): a
    :class:`Resume` sends it on from where it stopped, a :class:`Clear` drops it. The gateway resumes by itself
    if neither comes within a few seconds."""

    turn_no: int
    voiced_arrived: float = 0.0
    """First voiced frame of the onset that paused the agent."""


class Resume(_Base, frozen=True, kw_only=True, tag="resume"):
    """The onset that paused turns up to ``turn_no`` was not an interruption: send their audio on."""

    turn_no: int


class Hangup(_Base, frozen=True, kw_only=True, tag="hangup"):
    """Hang up once turn ``after_turn`` has fully played (its last mark echoed)."""

    after_turn: int
    reason: str = "goodbye"


class Transfer(_Base, frozen=True, kw_only=True, tag="transfer"):
    """Hand the call to a person at ``number`` once turn ``after_turn`` has played."""

    after_turn: int
    number: str


# -- brain -> stt (vc:call:{sid}:listen) ------------------------------------------------------------------


class Listen(_Base, frozen=True, kw_only=True, tag="listen"):
    """What the caller is expected to say after turn ``turn_no``; recognizers narrow their search to it.

    A hint, never a filter: a caller who says something else must still be heard (the recognizer falls back to
    the open domain search when the narrow one fits badly).
    """

    turn_no: int
    expect: Expect = "free"
    keyterms: list[str] = msgspec.field(default_factory=list)
    """Words worth boosting now (product names, the caller's order number words), for cloud recognizers."""


# -- call record (vc:call:{sid}:turns) ---------------------------------------------------------------------


class TurnRecord(_Base, frozen=True, kw_only=True, tag="turn"):
    speaker: Literal["caller", "agent"]
    text: str
    turn_no: int = 0
    intent: str = ""
    started: float = 0.0
    ended: float = 0.0
    confidence: float | None = None


Event = (
    CallStarted
    | CallEnded
    | StreamReconnected
    | CallResumed
    | AudioFrame
    | SpeechStarted
    | SpeechProgress
    | SpeechEnded
    | TranscriptPartial
    | TranscriptFinal
    | Dtmf
    | Mark
    | BusGap
    | Say
    | Cancel
    | AudioChunk
    | Clear
    | Pause
    | Resume
    | Hangup
    | Transfer
    | Listen
    | TurnRecord
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Event] = msgspec.msgpack.Decoder(Event)


class EventDecodeError(ValueError):
    """A bus entry that is not a valid event of a known schema version."""


def encode(event: Event) -> bytes:
    """Serialize an event for the bus (msgpack)."""
    return _encoder.encode(event)


def decode(data: bytes) -> Event:
    """Parse a bus entry, refusing unknown types and versions newer than this code knows."""
    try:
        event = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise EventDecodeError(f"undecodable bus entry: {exc}") from exc
    if event.v > SCHEMA_VERSION:
        raise EventDecodeError(f"{type(event).__name__} has schema v{event.v}; this build knows v{SCHEMA_VERSION}")
    return event
