"""Every Redis key name voxcart uses, in one place.

The CallSid always sits in braces (``{<sid>}``) so that all of a call's keys hash to one Cluster slot and the
fenced Lua commit can touch them together.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "ACTIVE_CALLS",
    "ADMISSION_QUEUE",
    "ADMISSION_SEEN",
    "CALLS_INDEX",
    "CALL_TTL_MS",
    "LANGUAGE",
    "PHRASES",
    "ENDED_CALL_TTL_MS",
    "LIFECYCLE",
    "Service",
    "audio_in",
    "audio_out",
    "capacity",
    "checkpoint",
    "control",
    "dedupe",
    "dlq",
    "events",
    "gen",
    "lease",
    "meta",
    "rate_limit",
    "reconnects",
    "started",
    "state",
    "stream_kind",
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


def capacity(svc: str) -> str:
    """Hash: replica -> its capacity report (calls owned, at most, draining, when; ``voxcart.common.capacity``)."""
    return f"vc:capacity:{svc}"


ADMISSION_QUEUE = "vc:admission:{vc:calls:active}:queue"
"""Zset: sid -> arrival (epoch ms) of each call on hold, first come first served. In ``ACTIVE_CALLS``'s Cluster
slot (its name is the hash tag), so one script admits a call against both."""
ADMISSION_SEEN = "vc:admission:{vc:calls:active}:seen"
"""Zset: sid -> the last time (epoch ms) a call on hold asked again; a call not seen for long hung up."""


def rate_limit(bucket: str) -> str:
    """Zset: CallSid -> arrival (epoch ms) of the recent calls from one caller (``bucket``: a digest of the number,
    or ``withheld``)."""
    return f"vc:ratelimit:{{{bucket}}}"


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


def reconnects(sid: str) -> str:
    """Counter: ``INCR`` on each fresh stream the gateway grants a call whose media socket broke (capped)."""
    return _call(sid, "reconnects")


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


def stream_kind(key: str) -> str:
    """A stream's kind, for metric labels: ``lifecycle``, or a per-call stream's name after the sid (``audio.in``,
    ``events``…); ``other`` for anything else, so the label's values stay a small fixed set."""
    if key == LIFECYCLE:
        return "lifecycle"
    kind = key.rpartition("}:")[2] if key.startswith("vc:call:{") else ""
    return kind if kind in _STREAM_KINDS else "other"


_STREAM_KINDS = frozenset(("audio.in", "listen", "events", "tts", "audio.out", "control"))


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
        reconnects(sid),
    ]
    keys += [started(sid), state(sid)]
    keys += [checkpoint(svc, sid) for svc in ("stt", "brain", "tts")]
    return keys
