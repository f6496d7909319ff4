"""Every Redis key name voxcart uses, in one place.

The CallSid always sits in braces (``{<sid>}``) so that all of a call's keys hash to one Cluster slot and the
fenced Lua commit can touch them together.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "ACTIVE_CALLS",
    "CALLS_INDEX",
    "CALL_TTL_MS",
    "LANGUAGE",
    "PHRASES",
    "ENDED_CALL_TTL_MS",
    "LIFECYCLE",
    "Service",
    "audio_in",
    "audio_out",
    "checkpoint",
    "control",
    "dedupe",
    "dlq",
    "events",
    "gen",
    "lease",
    "meta",
    "started",
    "state",
    "tts",
    "turns",
    "sid_of",
    "workers",
]

Service = Literal["stt", "brain", "tts"]

LIFECYCLE = "vc:calls:lifecycle"
"""Stream of call.started/ended, stream.reconnected, call.resumed; one consumer group per service."""
ACTIVE_CALLS = "vc:calls:active"
"""Zset: sid -> the owning gateway's last heartbeat (epoch ms)."""
CALLS_INDEX = "vc:calls:index"
"""Zset: sid -> call start (epoch ms), for listing call records."""


LANGUAGE = "vc:stt:language"
"""Hash ``samples``/``words`` (JSON lists): what callers of this shop say, published by brain at start so that
stt can build its domain language model without importing brain; ``version`` changes when the store does."""
PHRASES = "vc:tts:phrases"
"""Hash ``phrases`` (JSON list) and ``version``: sentences brain says word for word on many calls (greetings,
re-prompts, goodbyes); tts synthesizes them into its phrase cache at start."""


def workers(svc: str) -> str:
    """Zset: replica -> last heartbeat (epoch ms) of each live worker of ``svc``."""
    return f"vc:workers:{svc}"


CALL_TTL_MS = 2 * 3600 * 1000
"""Every per-call key lives this long after its creation..."""
ENDED_CALL_TTL_MS = 10 * 60 * 1000
"""...and is cut to this at ``call.ended``."""

LIFECYCLE_MAXLEN = 100_000
AUDIO_IN_MAXLEN = 3000
EVENTS_MAXLEN = 2000
TTS_MAXLEN = 500
AUDIO_OUT_MAXLEN = 3000
CONTROL_MAXLEN = 200
LISTEN_MAXLEN = 50
TURNS_MAXLEN = 1000
DLQ_MAXLEN = 10_000


def _call(sid: str, name: str) -> str:
    return f"vc:call:{{{sid}}}:{name}"


def audio_in(sid: str) -> str:
    """Caller audio, gateway -> stt; explicit ids ``<gen>-<chunk>``."""
    return _call(sid, "audio.in")


def events(sid: str) -> str:
    """stt transcripts and gateway dtmf/marks -> brain."""
    return _call(sid, "events")


def tts(sid: str) -> str:
    """brain ``say``/``cancel`` -> tts."""
    return _call(sid, "tts")


def audio_out(sid: str) -> str:
    """tts audio -> the gateway holding the socket; explicit ids ``<turn_no>-<seq*1000+k>``."""
    return _call(sid, "audio.out")


def control(sid: str) -> str:
    """brain ``clear``/``hangup``/``transfer`` -> the gateway holding the socket."""
    return _call(sid, "control")


def listen(sid: str) -> str:
    """brain ``listen`` (what the caller is expected to say next) -> stt."""
    return _call(sid, "listen")


def turns(sid: str) -> str:
    """The call record's turns (caller and agent), written by brain in its fenced commit."""
    return _call(sid, "turns")


def meta(sid: str) -> str:
    """Hash: the call's numbers, status, outcome and per-turn latencies, written by the gateway."""
    return _call(sid, "meta")


def gen(sid: str) -> str:
    """Counter: ``INCR`` on every Twilio ``start`` (media socket generation)."""
    return _call(sid, "gen")


def started(sid: str) -> str:
    """Set once when ``call.started`` is published, so a retried webhook publishes nothing."""
    return _call(sid, "started")


def state(sid: str) -> str:
    """Hash: brain's dialog state, written in the same Lua call as its checkpoint."""
    return _call(sid, "state")


def lease(svc: str, sid: str) -> str:
    """String ``<replica>:<epoch>``: who owns the call for ``svc``."""
    return f"vc:lease:{svc}:{{{sid}}}"


def checkpoint(svc: str, sid: str) -> str:
    """The last input id (per input stream) whose effects are durable; a hash stream-key -> id."""
    return f"vc:ckpt:{svc}:{{{sid}}}"


def dedupe(scope: str, ident: str) -> str:
    return f"vc:dedupe:{scope}:{ident}"


def dlq(svc: str) -> str:
    return f"vc:dlq:{svc}"


def sid_of(key: str) -> str:
    """The CallSid inside a per-call key's braces."""
    start = key.index("{") + 1
    return key[start : key.index("}", start)]


def per_call_keys(sid: str) -> list[str]:
    """Every per-call key, for expiry at call end."""
    keys = [
        audio_in(sid),
        events(sid),
        tts(sid),
        audio_out(sid),
        control(sid),
        listen(sid),
        turns(sid),
        meta(sid),
        gen(sid),
    ]
    keys += [started(sid), state(sid)]
    keys += [checkpoint(svc, sid) for svc in ("stt", "brain", "tts")]
    return keys
