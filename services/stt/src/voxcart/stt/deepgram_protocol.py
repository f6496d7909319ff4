"""Deepgram's v1 ``listen`` websocket on the wire (protocols.md §4): the query, control frames and server messages.

Invariants:
- Nothing here does I/O or keeps state: it turns settings into the listen URL, control messages into JSON text,
  server text frames into the small typed values below, and handshake/close facts into log text.
- Audio goes out as binary frames, unchanged; control messages (``KeepAlive``, ``Finalize``, ``CloseStream``,
  ``Configure``) as JSON text frames, never binary.
- Numbers come as digits (``numerals=true``), words lower case (no punctuation requested): :func:`normalize_text`.
- Keyterms go in the query only for Nova-3 models, one ``keyterm`` parameter each, at most :data:`MAX_KEYTERMS`.
- :func:`parse_message` reads a whole message before anything acts on it: a malformed one raises (``ValueError``,
  ``KeyError``, ``TypeError``, ``AttributeError`` or ``IndexError``) and changes nothing.
- Handshake errors are HTTP statuses (400 bad params, 401/403 auth, 402 no credits, 429 rate) [exact codes
  unconfirmed]. Close codes: 1000 normal; 1008 (``DATA-0000``) undecodable audio; 1011 (``NET-0000``, ``NET-0001``
  idle 10 s) [codes-to-reasons mapping: unconfirmed], so a close is reported with its code and reason as given.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from voxcart.common.audio import SAMPLE_RATE

__all__ = [
    "CLOSE_STREAM",
    "FINALIZE",
    "KEEP_ALIVE",
    "MAX_KEYTERMS",
    "ConfigureSuccess",
    "Metadata",
    "Results",
    "ServerError",
    "ServerMessage",
    "SpeechStarted",
    "Unknown",
    "UtteranceEnd",
    "configure",
    "describe_close",
    "describe_handshake",
    "normalize_text",
    "parse_message",
    "query_url",
    "retry_after",
]

MAX_KEYTERMS = 50
"""Keyterms sent per connection or ``Configure`` (Deepgram caps them at 500 tokens and, over it, silently stops)."""

KEEP_ALIVE = json.dumps({"type": "KeepAlive"})
"""Keeps an idle stream open (no reply); without audio or this for 10 s the server closes (NET-0001)."""
FINALIZE = json.dumps({"type": "Finalize"})
"""Flush now: the results it causes carry ``from_finalize: true``."""
CLOSE_STREAM = json.dumps({"type": "CloseStream"})
"""Flush, send the last results and ``Metadata``, then close."""


def configure(keyterms: Sequence[str]) -> str:
    """``Configure``: new keyterms mid-stream (Nova-3; answered ``ConfigureSuccess`` or ``ConfigureFailure``)."""
    return json.dumps({"type": "Configure", "keyterms": list(keyterms)})


def query_url(
    url: str,
    *,
    model: str,
    end_silence_ms: int,
    utterance_end_ms: int,
    language: str,
    keyterms: Sequence[str] = (),
) -> str:
    """The listen URL with every query parameter: μ-law 8 kHz mono, interim results, VAD events, numerals.

    Args:
        url: the listen endpoint; a query it already has is kept.
        model: ``model``; ``keyterms`` are added only when it is a ``nova-3*`` model.
        end_silence_ms: ``endpointing``.
        utterance_end_ms: ``utterance_end_ms``.
        language: ``language``.
        keyterms: the first :data:`MAX_KEYTERMS` go in as ``keyterm`` parameters.
    """
    params = [
        ("model", model),
        ("encoding", "mulaw"),
        ("sample_rate", str(SAMPLE_RATE)),
        ("channels", "1"),
        ("interim_results", "true"),
        ("endpointing", str(end_silence_ms)),
        ("utterance_end_ms", str(utterance_end_ms)),
        ("vad_events", "true"),
        ("numerals", "true"),
        ("language", language),
    ]
    if model.startswith("nova-3"):
        params += [("keyterm", term) for term in keyterms[:MAX_KEYTERMS]]
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}{urllib.parse.urlencode(params, quote_via=urllib.parse.quote)}"


def normalize_text(parts: Sequence[str]) -> str:
    """Transcript parts joined by single spaces, lower case."""
    return " ".join(" ".join(parts).lower().split())


@dataclass(frozen=True, slots=True)
class Results:
    """A ``Results`` message (first alternative only).

    Times are seconds of audio since the connection's first byte.
    """

    transcript: str
    """The normalized transcript (:func:`normalize_text`); may be empty."""
    words: int
    """How many words it has."""
    word_span: tuple[float, float] | None
    """(first word's start, last word's end), when the transcript is not empty and has words."""
    confidence: float
    end: float
    """``start + duration``: where the audio it covers ends."""
    is_final: bool
    speech_final: bool
    from_finalize: bool


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """``SpeechStarted`` (``vad_events=true``): an onset at ``timestamp`` seconds."""

    timestamp: float


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    """``UtteranceEnd``: ``utterance_end_ms`` of no word after the word ending at ``last_word_end`` seconds."""

    last_word_end: float


@dataclass(frozen=True, slots=True)
class Metadata:
    """``Metadata``, sent once the stream is closed."""

    request_id: str | None
    duration: float
    """Seconds of audio the stream received."""


@dataclass(frozen=True, slots=True)
class ConfigureSuccess:
    """A ``Configure`` was applied."""


@dataclass(frozen=True, slots=True)
class ServerError:
    """``Error`` or ``ConfigureFailure``."""

    kind: str
    raw: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """Any other message type."""

    kind: str | None
    raw: str


ServerMessage = Results | SpeechStarted | UtteranceEnd | Metadata | ConfigureSuccess | ServerError | Unknown


def parse_message(raw: str) -> ServerMessage:
    """One server text frame as a typed value; raises (see the module notes) if it is not what its type says."""
    message = json.loads(raw)
    kind = message.get("type")
    if kind == "Results":
        alt = message["channel"]["alternatives"][0]
        words = alt.get("words") or []
        transcript = normalize_text([alt.get("transcript") or ""])
        span = (float(words[0]["start"]), float(words[-1]["end"])) if transcript and words else None
        return Results(
            transcript=transcript,
            words=len(words),
            word_span=span,
            confidence=float(alt.get("confidence") or 0.0),
            end=float(message["start"]) + float(message["duration"]),
            is_final=bool(message.get("is_final")),
            speech_final=bool(message.get("speech_final")),
            from_finalize=bool(message.get("from_finalize")),
        )
    if kind == "SpeechStarted":
        return SpeechStarted(float(message["timestamp"]))
    if kind == "UtteranceEnd":
        return UtteranceEnd(float(message["last_word_end"]))
    if kind == "Metadata":
        request_id = message.get("request_id")
        return Metadata(None if request_id is None else str(request_id), float(message.get("duration") or 0.0))
    if kind == "ConfigureSuccess":
        return ConfigureSuccess()
    if kind in ("Error", "ConfigureFailure"):
        return ServerError(kind, raw)
    return Unknown(None if kind is None else str(kind), raw)


def describe_handshake(status: int, request_id: str, body: bytes | bytearray | None) -> str:
    """A refused handshake, for errors and logs: the status, Deepgram's request id and the start of the body."""
    text = (body or b"")[:200].decode("utf-8", "replace")
    return f"HTTP {status} at handshake (dg-request-id {request_id}): {text!r}"


def describe_close(code: int | None, reason: str | None) -> str:
    """A close we did not ask for, with the code and reason as the server gave them (see the module notes)."""
    return f"closed by Deepgram with code {code} ({reason or 'no reason'})"


def retry_after(value: str | None, default: float) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds only; an HTTP date falls back to ``default``)."""
    try:
        return max(0.0, float(value)) if value else default
    except ValueError:
        return default
