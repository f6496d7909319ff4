"""Twilio Media Streams wire format: inbound JSON text frames <-> typed Structs, outbound frames (protocols.md 2).

Invariants:
- One :func:`decode_frame` call = one msgspec decode; base64 payloads are decoded by msgspec inside it, and
  Twilio's numeric strings (``sequenceNumber``, ``chunk``, ``timestamp``) arrive as ``int``.
- Anything that is not a well-formed message of a known event, or that names another stream than the one
  expected, raises :class:`MediaProtocolError` (Twilio's warning 31951 in the other direction) with a message
  naming the problem, its JSON path and the start of the frame. Unknown *fields* are ignored: Twilio may add some.
  No other exception escapes :func:`decode_frame`, whatever the frame (nesting too deep, lone surrogates...).
- Counters are at most 2**63 - 1 (they become Redis stream ids and msgpack ints); a ``start``'s ``callSid`` is
  ``CA`` and letters/digits, as the voice webhook requires (it goes inside the ``{...}`` of Redis keys).
- Outbound frames carry the stream's ``streamSid`` and raw μ-law (no header), base64-encoded.
"""

from __future__ import annotations

import base64
from typing import Annotated, TypeAlias

import msgspec

__all__ = [
    "Connected",
    "Dtmf",
    "DtmfInfo",
    "InboundMessage",
    "Mark",
    "MarkInfo",
    "Media",
    "MediaFormat",
    "MediaInfo",
    "MediaProtocolError",
    "Start",
    "StartInfo",
    "Stop",
    "StopInfo",
    "decode_frame",
    "encode_clear",
    "encode_mark",
    "encode_media",
]

_Counter = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_Sid = Annotated[str, msgspec.Meta(min_length=1)]
_CallSid = Annotated[str, msgspec.Meta(pattern="^CA[0-9A-Za-z]{1,62}$")]


class MediaProtocolError(ValueError):
    """A Media Streams frame that breaks the protocol (bad JSON, unknown event, missing field, bad base64,
    wrong ``streamSid``, or a message illegal in the socket's state)."""


class _Msg(msgspec.Struct, frozen=True, rename="camel", tag_field="event"):
    pass


class _Info(msgspec.Struct, frozen=True, rename="camel"):
    pass


class Connected(_Msg, frozen=True, tag="connected"):
    """First message on a socket: ``{"event":"connected","protocol":"Call","version":"1.0.0"}``."""

    protocol: str
    version: str


class MediaFormat(_Info, frozen=True):
    encoding: str
    sample_rate: int
    channels: int


class StartInfo(_Info, frozen=True):
    stream_sid: _Sid
    account_sid: _Sid
    call_sid: _CallSid
    tracks: list[str]
    media_format: MediaFormat
    custom_parameters: dict[str, str] = {}


class Start(_Msg, frozen=True, tag="start"):
    sequence_number: _Counter
    stream_sid: _Sid
    start: StartInfo


class MediaInfo(_Info, frozen=True):
    track: str
    chunk: _Counter
    timestamp: _Counter
    """Milliseconds since the stream started."""
    payload: bytes
    """μ-law 8 kHz mono (already base64-decoded)."""


class Media(_Msg, frozen=True, tag="media"):
    sequence_number: _Counter
    stream_sid: _Sid
    media: MediaInfo


class DtmfInfo(_Info, frozen=True):
    track: str
    digit: Annotated[str, msgspec.Meta(pattern="^[0-9*#A-Da-dw]$")]


class Dtmf(_Msg, frozen=True, tag="dtmf"):
    sequence_number: _Counter
    stream_sid: _Sid
    dtmf: DtmfInfo


class MarkInfo(_Info, frozen=True):
    name: str


class Mark(_Msg, frozen=True, tag="mark"):
    """Twilio echoing a mark we sent: the audio before it has played (or was cleared)."""

    sequence_number: _Counter
    stream_sid: _Sid
    mark: MarkInfo


class StopInfo(_Info, frozen=True):
    account_sid: str
    call_sid: str


class Stop(_Msg, frozen=True, tag="stop"):
    sequence_number: _Counter
    stream_sid: _Sid
    stop: StopInfo


InboundMessage: TypeAlias = Connected | Start | Media | Dtmf | Mark | Stop
_EVENTS = ("connected", "start", "media", "dtmf", "mark", "stop")
_decoder: msgspec.json.Decoder[InboundMessage] = msgspec.json.Decoder(InboundMessage, strict=False)


def _excerpt(frame: str | bytes) -> str:
    text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
    head = text[:80].encode("utf-8", "backslashreplace").decode("utf-8")
    return head + ("…" if len(text) > 80 else "")


def _event_name(frame: str | bytes) -> str:
    try:
        raw = msgspec.json.decode(frame)
    except (msgspec.DecodeError, RecursionError, UnicodeEncodeError):
        return "?"
    return repr(raw.get("event")) if isinstance(raw, dict) else f"non-object ({type(raw).__name__})"


def decode_frame(frame: str | bytes, stream_sid: str | None = None) -> InboundMessage:
    """Parse one inbound Media Streams text frame.

    Args:
        frame: the websocket text frame (``bytes`` are accepted as UTF-8 JSON).
        stream_sid: if given, every message but ``connected`` must carry this ``streamSid``.

    Returns:
        The typed message.

    Raises:
        MediaProtocolError: malformed JSON, unknown event, missing/ill-typed field, bad base64, wrong streamSid.
    """
    try:
        msg = _decoder.decode(frame)
    except msgspec.ValidationError as exc:
        reason = str(exc)
        if reason.endswith("at `$.event`") and reason.startswith("Invalid value"):
            reason = f"unknown event {reason.split(' ', 3)[2]} (known: {', '.join(_EVENTS)})"
        elif "`$.event`" in reason or "missing required field `event`" in reason:
            reason = f"no string 'event' field ({reason})"
        else:
            reason = f"{_event_name(frame)} message: {reason}"
        raise MediaProtocolError(f"invalid Media Streams message: {reason}; frame: {_excerpt(frame)}") from None
    except msgspec.DecodeError as exc:
        raise MediaProtocolError(f"malformed JSON in Media Streams frame: {exc}; frame: {_excerpt(frame)}") from None
    except RecursionError:
        raise MediaProtocolError(f"Media Streams frame nested too deeply; frame: {_excerpt(frame)}") from None
    except UnicodeEncodeError as exc:
        raise MediaProtocolError(
            f"Media Streams frame is not valid text ({exc.reason}); frame: {_excerpt(frame)}"
        ) from None
    if stream_sid is not None and not isinstance(msg, Connected) and msg.stream_sid != stream_sid:
        raise MediaProtocolError(
            f"{type(msg).__name__.lower()} message #{msg.sequence_number} names stream {msg.stream_sid!r}, "
            f"but this socket carries {stream_sid!r}"
        )
    return msg


def _sid_json(stream_sid: str) -> str:
    if not stream_sid or not stream_sid.isascii() or not stream_sid.isalnum():
        raise ValueError(f"streamSid must be a non-empty alphanumeric sid, got {stream_sid!r}")
    return stream_sid


def encode_media(stream_sid: str, payload: bytes) -> str:
    """Outbound ``media`` frame: ``payload`` is raw μ-law 8 kHz mono (any length, no header)."""
    b64 = base64.b64encode(payload).decode("ascii")
    return f'{{"event":"media","streamSid":"{_sid_json(stream_sid)}","media":{{"payload":"{b64}"}}}}'


def encode_mark(stream_sid: str, name: str) -> str:
    """Outbound ``mark`` frame; Twilio echoes it when the audio queued before it has played."""
    if not name:
        raise ValueError("mark name must be non-empty")
    return (
        f'{{"event":"mark","streamSid":"{_sid_json(stream_sid)}","mark":{{"name":'
        f"{msgspec.json.encode(name).decode('utf-8')}}}}}"
    )


def encode_clear(stream_sid: str) -> str:
    """Outbound ``clear`` frame: Twilio drops its queued audio and echoes every outstanding mark."""
    return f'{{"event":"clear","streamSid":"{_sid_json(stream_sid)}"}}'
