"""The ElevenLabs text-to-speech wire protocol: endpoints, messages, error classification, key scrubbing.

Wire protocol (``docs/protocols.md`` §5): ``wss://<host>/v1/text-to-speech/<voice>/stream-input?model_id=…&
output_format=ulaw_8000&inactivity_timeout=…`` with the ``xi-api-key`` header; we send ``{"text": " "}`` (init),
the sentence with ``"flush": true`` and ``{"text": ""}`` (end of input); the server answers
``{"audio": "<base64 μ-law>"}`` messages, then ``{"isFinal": true}``, then closes. The fallback is
``POST /v1/text-to-speech/<voice>/stream?output_format=ulaw_8000`` (chunked raw μ-law).

Contract: this module does no I/O. Every failure of a transport is a :class:`TransportFailure` whose message says
what went wrong and where (handshake, server message, drop, HTTP status); ``auth`` is set for 401/403 and for
error texts naming the key or the quota. Every text that comes from the server or a library passes through
:func:`scrub_key` before it enters a message, so the API key never appears in one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from voxcart.common.metrics import status_result

__all__ = [
    "OUTPUT_FORMAT",
    "Scrub",
    "ServerMessage",
    "TransportFailure",
    "closed_early",
    "connection_dropped",
    "handshake_refused",
    "http_refused",
    "not_opened",
    "parse_server_message",
    "http_error",
    "scrub_key",
    "sentence_messages",
    "server_error",
    "stream_urls",
    "unexpected",
]

OUTPUT_FORMAT: Final = "ulaw_8000"
_AUTH_STATUSES: Final = (401, 403)
_AUTH_WORDS: Final = ("api key", "api_key", "unauthorized", "quota_exceeded", "authenticat")

Scrub = Callable[[str], str]
"""Removes the API key from a text (:func:`scrub_key` bound to the key)."""


class TransportFailure(Exception):
    """One transport failed; ``auth`` failures are final, the others may move to the next transport."""

    def __init__(self, message: str, *, auth: bool = False, final: bool = False, result: str = "error") -> None:
        super().__init__(message)
        self.auth = auth
        self.final = final or auth
        """No other transport may be tried (authentication, or the time budget is spent)."""
        self.result = "auth" if auth else result
        """How the request ended, for ``voxcart_provider_requests_total`` (``error``, ``timeout``,
        ``rate_limited``, ``auth``, ``dropped``, ``cancelled``)."""


def stream_urls(base_url: str, *, voice_id: str, model: str, inactivity_timeout_s: int) -> tuple[str, str]:
    """The stream-input websocket URL (https -> wss, http -> ws) and the HTTP streaming URL under ``base_url``.

    Raises:
        ValueError: ``base_url`` is not an http(s) URL with a host.
    """
    base = urlsplit(base_url)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ValueError(f"ElevenLabsVoice base_url: expected an http(s) URL, got {base_url!r}")
    path = f"{base.path.rstrip('/')}/v1/text-to-speech/{quote(voice_id, safe='')}"
    query = urlencode({"model_id": model, "output_format": OUTPUT_FORMAT, "inactivity_timeout": inactivity_timeout_s})
    ws_url = urlunsplit(("wss" if base.scheme == "https" else "ws", base.netloc, f"{path}/stream-input", query, ""))
    http_url = urlunsplit((base.scheme, base.netloc, f"{path}/stream", "", ""))
    return ws_url, http_url


def sentence_messages(text: str) -> tuple[str, str, str]:
    """What one socket sends for one sentence: init, the sentence with ``flush``, end of input."""
    return json.dumps({"text": " "}), json.dumps({"text": text + " ", "flush": True}), json.dumps({"text": ""})


@dataclass(frozen=True, slots=True)
class ServerMessage:
    """One stream-input server message, decoded."""

    audio: bytes
    """μ-law bytes (empty if the message carried none)."""
    final: bool
    """``isFinal``: the sentence's audio is complete."""
    error: str | None
    """A message without audio that has ``error`` or ``message``: their text (not yet scrubbed), else None."""


def parse_server_message(raw: str | bytes) -> ServerMessage:
    """Decode one stream-input message.

    Raises:
        TransportFailure: the message is not a JSON object or its ``audio`` is not valid base64.
    """
    try:
        message = json.loads(raw)
        if not isinstance(message, dict):
            raise ValueError(f"expected a JSON object, got {type(message).__name__}")
        audio = message.get("audio")
        data = base64.b64decode(audio, validate=True) if isinstance(audio, str) else b""
    except (ValueError, binascii.Error) as exc:
        raise TransportFailure(f"unreadable server message ({exc})") from exc
    error = None
    if not data and ("error" in message or "message" in message):
        error = f"{message.get('error', '')} {message.get('message', '')}".strip()
    return ServerMessage(audio=data, final=bool(message.get("isFinal")), error=error)


def scrub_key(text: str, api_key: str) -> str:
    """``text`` with every occurrence of ``api_key`` replaced by ``***``."""
    return text.replace(api_key, "***")


def server_error(detail: str, scrub: Scrub) -> TransportFailure:
    """An error message the server sent on the socket."""
    detail = scrub(detail)
    return TransportFailure(f"server error: {detail}", auth=_is_auth(detail))


def closed_early(close_code: int | None, close_reason: str | None, scrub: Scrub) -> TransportFailure:
    """The server closed the socket before ``isFinal``."""
    reason = scrub(f"code {close_code} {close_reason or ''}".strip())
    return TransportFailure(f"closed by the server before the end of the sentence ({reason})", result="dropped")


def connection_dropped(exc: Exception, scrub: Scrub) -> TransportFailure:
    """The socket closed abnormally while speaking."""
    detail = scrub(str(exc))
    return TransportFailure(f"connection dropped: {detail}", auth=_is_auth(detail), result="dropped")


def handshake_refused(status: int, body: bytes | bytearray, scrub: Scrub) -> TransportFailure:
    """The websocket handshake got a non-101 HTTP answer."""
    detail = _detail(body, scrub)
    return TransportFailure(
        f"HTTP {status} at the websocket handshake{detail}", auth=status in _AUTH_STATUSES, result=status_result(status)
    )


def not_opened(exc: Exception, scrub: Scrub) -> TransportFailure:
    """The websocket could not be opened (network, timeout, protocol)."""
    detail = scrub(str(exc) or type(exc).__name__)
    result = "timeout" if isinstance(exc, TimeoutError) else "error"
    return TransportFailure(f"websocket could not be opened ({type(exc).__name__}: {detail})", result=result)


def http_refused(status: int, body: bytes | bytearray, scrub: Scrub) -> TransportFailure:
    """The HTTP streaming request got a status other than 200."""
    return TransportFailure(
        f"HTTP {status}{_detail(body, scrub)}", auth=status in _AUTH_STATUSES, result=status_result(status)
    )


def http_error(exc: Exception, scrub: Scrub, *, timed_out: bool = False) -> TransportFailure:
    """The HTTP streaming request failed (connect, read, or, ``timed_out``, a timeout)."""
    return TransportFailure(f"{type(exc).__name__}: {scrub(str(exc))}", result="timeout" if timed_out else "error")


def unexpected(exc: Exception, scrub: Scrub) -> TransportFailure:
    """Any other exception of a transport (a bug or an unforeseen library error)."""
    return TransportFailure(f"unexpected {type(exc).__name__}: {scrub(str(exc))}")


def _is_auth(detail: str) -> bool:
    """An error text that says the key is wrong or out of quota (the server's wording is not specified)."""
    lowered = detail.lower()
    return any(w in lowered for w in _AUTH_WORDS)


def _detail(body: bytes | bytearray, scrub: Scrub) -> str:
    """``: <status> <message>`` from an ElevenLabs error body (``{"detail": {"status", "message"}}``), short."""
    text = body[:2000].decode("utf-8", "replace")
    with contextlib.suppress(ValueError):
        parsed = json.loads(text)
        detail = parsed.get("detail", parsed) if isinstance(parsed, dict) else parsed
        if isinstance(detail, dict):
            text = " ".join(str(detail[k]) for k in ("status", "message") if k in detail) or text
        elif isinstance(detail, str):
            text = detail
    text = scrub(" ".join(text.split()))[:200]
    return f": {text}" if text else ""
