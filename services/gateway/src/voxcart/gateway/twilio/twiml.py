"""TwiML documents for the voice webhooks, built with XML escaping (protocols.md 1.5).

Invariants: every attribute value and text node goes through :func:`_attr`/:func:`_text`, so caller-supplied
strings (shop names, numbers, sentences) cannot inject markup; characters XML 1.0 cannot carry (control
characters other than tab/newline/carriage return) are refused with a :class:`ValueError` naming the field.
``<Stream url>`` must be ``wss://`` without a query string (Twilio errors 31922 and "query strings not
supported": data goes in ``<Parameter>``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

__all__ = ["VoiceResponse", "connect_stream", "dial", "hangup", "say"]

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
)
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})

Method = Literal["GET", "POST"]


def _check(value: str, field: str) -> str:
    bad = _INVALID_XML.search(value)
    if bad:
        raise ValueError(f"TwiML {field} contains a character XML cannot carry: {bad.group()!r} in {value!r}")
    return value


def _attr(value: str | int | bool, field: str) -> str:
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return _check(text, field).translate(_ATTR_ESCAPES)


def _text(value: str, field: str) -> str:
    return _check(value, field).translate(_TEXT_ESCAPES)


def _open(tag: str, attrs: Mapping[str, str | int | bool | None], close: bool = False) -> str:
    rendered = "".join(f' {k}="{_attr(v, f"{tag}@{k}")}"' for k, v in attrs.items() if v is not None)
    return f"<{tag}{rendered}{'/' if close else ''}>"


class VoiceResponse:
    """A ``<Response>`` built verb by verb; each method returns ``self`` so calls chain.

    Example:
        ``VoiceResponse().say("Connecting you.").dial("+15552223333", caller_id="+15550001111").to_xml()``
    """

    def __init__(self) -> None:
        self._verbs: list[str] = []

    def say(
        self, text: str, *, voice: str | None = None, language: str | None = None, loop: int | None = None
    ) -> VoiceResponse:
        """Append ``<Say>``: Twilio speaks ``text`` (escaped; SSML is not supported here)."""
        attrs = {"voice": voice, "language": language, "loop": loop}
        self._verbs.append(_open("Say", attrs) + _text(text, "Say text") + "</Say>")
        return self

    def pause(self, length: int = 1) -> VoiceResponse:
        """Append ``<Pause length=.../>`` (seconds)."""
        self._verbs.append(_open("Pause", {"length": length}, close=True))
        return self

    def dial(
        self,
        number: str,
        *,
        caller_id: str | None = None,
        timeout: int | None = None,
        action: str | None = None,
        method: Method | None = None,
        time_limit: int | None = None,
        answer_on_bridge: bool | None = None,
    ) -> VoiceResponse:
        """Append ``<Dial>``: connect the caller to ``number`` (E.164, ``client:`` or SIP URI as body text).

        Args:
            number: who to call; must be non-empty.
            caller_id: the caller ID shown (your Twilio number or a verified one).
            timeout: ring time in seconds.
            action: URL Twilio requests when the dialed call ends (``DialCallStatus`` …).
            method: HTTP method for ``action``.
            time_limit: maximum call length in seconds.
            answer_on_bridge: keep the caller hearing ringing until the callee answers.
        """
        if not number.strip():
            raise ValueError("TwiML <Dial> needs a number, got an empty string")
        attrs = {
            "callerId": caller_id,
            "timeout": timeout,
            "action": action,
            "method": method,
            "timeLimit": time_limit,
            "answerOnBridge": answer_on_bridge,
        }
        self._verbs.append(_open("Dial", attrs) + _text(number.strip(), "Dial number") + "</Dial>")
        return self

    def connect_stream(
        self,
        url: str,
        *,
        parameters: Mapping[str, str] | None = None,
        action: str | None = None,
        method: Method = "POST",
        status_callback: str | None = None,
        name: str | None = None,
        allow_insecure: bool = False,
    ) -> VoiceResponse:
        """Append ``<Connect [action]><Stream url>[<Parameter/>...]</Stream></Connect>`` (bidirectional stream).

        Args:
            url: the media websocket, ``wss://host/path`` (no query string).
            parameters: name/value pairs delivered in the ``start`` message's ``customParameters``.
            action: URL Twilio requests when the stream ends because our server closed the socket.
            method: HTTP method for ``action``.
            status_callback: URL for ``stream-started``/``stream-stopped``/``stream-error`` callbacks.
            name: the stream's name (unique per call).
            allow_insecure: also accept ``ws://`` (local runs with the simulator only: Twilio refuses it).

        Raises:
            ValueError: ``url`` is not ``wss://`` or has a query string; a parameter name is empty.
        """
        schemes = ("wss://", "ws://") if allow_insecure else ("wss://",)
        if not url.startswith(schemes) or url.endswith("//"):
            raise ValueError(f"<Stream url> must be an absolute wss:// URL (Twilio error 31922), got {url!r}")
        if "?" in url or "#" in url:
            raise ValueError(f"<Stream url> cannot carry a query string; use parameters instead: {url!r}")
        stream_attrs = {"url": url, "name": name, "statusCallback": status_callback}
        inner = []
        for key, value in (parameters or {}).items():
            if not key:
                raise ValueError("<Parameter> names must be non-empty")
            inner.append(_open("Parameter", {"name": key, "value": value}, close=True))
        connect_attrs = {"action": action, "method": method if action else None}
        self._verbs.append(
            _open("Connect", connect_attrs) + _open("Stream", stream_attrs) + "".join(inner) + "</Stream></Connect>"
        )
        return self

    def gather(
        self,
        *,
        action: str,
        num_digits: int | None = None,
        timeout: int | None = None,
        method: Method = "POST",
        nested: VoiceResponse | None = None,
    ) -> VoiceResponse:
        """Append ``<Gather input="dtmf">``: wait for keypad digits, playing ``nested`` (``<Say>``, ``<Play>``,
        ``<Pause>`` only) meanwhile. Digits go to ``action`` (as ``Digits``); with none, Twilio goes on with the
        next verb ``timeout`` seconds after the nested verbs end.

        Raises:
            ValueError: ``nested`` holds another verb than ``<Say>``, ``<Play>`` or ``<Pause>``.
        """
        inner = nested._verbs if nested is not None else []
        for verb in inner:
            if not verb.startswith(("<Say", "<Play", "<Pause")):
                raise ValueError(f"<Gather> can nest only <Say>, <Play> and <Pause>, got {verb[:40]!r}")
        attrs = {"input": "dtmf", "action": action, "method": method, "numDigits": num_digits, "timeout": timeout}
        self._verbs.append(_open("Gather", attrs) + "".join(inner) + "</Gather>")
        return self

    def redirect(self, url: str, *, method: Method = "POST") -> VoiceResponse:
        """Append ``<Redirect>``: fetch the next TwiML from ``url``."""
        self._verbs.append(_open("Redirect", {"method": method}) + _text(url, "Redirect url") + "</Redirect>")
        return self

    def hangup(self) -> VoiceResponse:
        """Append ``<Hangup/>``."""
        self._verbs.append("<Hangup/>")
        return self

    def to_xml(self, *, declaration: bool = True) -> str:
        """Render the document (with the ``<?xml?>`` declaration unless ``declaration=False``)."""
        head = '<?xml version="1.0" encoding="UTF-8"?>' if declaration else ""
        return head + "<Response>" + "".join(self._verbs) + "</Response>"

    def __str__(self) -> str:
        return self.to_xml()


def connect_stream(
    url: str,
    *,
    parameters: Mapping[str, str] | None = None,
    action: str | None = None,
    name: str | None = None,
    allow_insecure: bool = False,
) -> str:
    """A whole ``<Response>`` that opens a bidirectional Media Stream (see :meth:`VoiceResponse.connect_stream`)."""
    response = VoiceResponse().connect_stream(
        url, parameters=parameters, action=action, name=name, allow_insecure=allow_insecure
    )
    return response.to_xml()


def dial(number: str, *, caller_id: str | None = None, say_first: str | None = None, timeout: int | None = None) -> str:
    """A whole ``<Response>`` that transfers the call: optional ``<Say>`` then ``<Dial>``."""
    response = VoiceResponse()
    if say_first:
        response.say(say_first)
    return response.dial(number, caller_id=caller_id, timeout=timeout).to_xml()


def say(text: str, *, then_hangup: bool = True) -> str:
    """A whole ``<Response>`` that speaks ``text`` (and hangs up unless ``then_hangup=False``)."""
    response = VoiceResponse().say(text)
    if then_hangup:
        response.hangup()
    return response.to_xml()


def hangup() -> str:
    """A whole ``<Response><Hangup/></Response>``."""
    return VoiceResponse().hangup().to_xml()
