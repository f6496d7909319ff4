"""``X-Twilio-Signature``: computing and validating Twilio's webhook signatures.

Same algorithm as twilio-python's ``RequestValidator`` (protocols.md 1.3):

- ``signature = base64(HMAC-SHA1(auth_token, url + name1 + value1 + name2 + value2 ...))`` with the form params
  sorted by name and, for a repeated name, by value (so sorting the ``(name, value)`` pairs is the same thing).
- A URL is accepted if the signature matches it **with or without** an explicit default port (Twilio is
  inconsistent about ``:443``). The default port is 443 for ``https``/``wss`` and 80 for ``http``/``ws``
  (the SDK would use 80 for ``wss``; no Twilio request ever has that).
- JSON bodies: Twilio puts ``bodySHA256=<hex sha256 of the raw body>`` in the query and signs the URL alone; both
  the hash and the signature must match.
- Media Stream websocket upgrades are signed over the ``wss://`` URL from the TwiML with no params.

Invariants: comparisons are constant-time (:func:`hmac.compare_digest`); the URL is never re-normalised: the
query string is used byte-for-byte as the client sent it (:func:`public_url`), because any re-encoding or
re-ordering breaks the signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeAlias
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

__all__ = [
    "Params",
    "SignatureError",
    "body_sha256",
    "compute_signature",
    "parse_form",
    "public_url",
    "public_ws_url",
    "validate_signature",
    "verify_signature",
]


class _MultiItems(Protocol):
    def multi_items(self) -> Sequence[tuple[str, object]]: ...


Params: TypeAlias = "Mapping[str, str] | Mapping[str, Sequence[str]] | Iterable[tuple[str, str]] | _MultiItems | None"
"""Form params: a dict, a dict of lists (repeated names), ``(name, value)`` pairs, or anything with
``multi_items()`` (Starlette ``FormData``/``QueryParams``)."""

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


class SignatureError(ValueError):
    """A request failed signature validation; the message says which check failed."""


def _pairs(params: Params) -> list[tuple[str, str]]:
    if params is None:
        return []
    items: Iterable[tuple[str, object]]
    if hasattr(params, "multi_items"):
        items = params.multi_items()
    elif isinstance(params, Mapping):
        items = []
        for name, value in params.items():
            if isinstance(value, str):
                items.append((name, value))
            else:
                items.extend((name, v) for v in value)
    else:
        items = params
    pairs: list[tuple[str, str]] = []
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"signature params must be strings; param {name!r} has a {type(value).__name__} value")
        pairs.append((name, value))
    return pairs


def parse_form(body: bytes) -> list[tuple[str, str]]:
    """Parse an ``application/x-www-form-urlencoded`` webhook body into ``(name, value)`` pairs, in order.

    Blank values are kept (Twilio signs ``CallerName=`` too), repeated names stay repeated; no python-multipart
    needed.

    Raises:
        ValueError: the body is not UTF-8.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"webhook form body is not UTF-8 (byte {exc.start})") from None
    return parse_qsl(text, keep_blank_values=True)


def compute_signature(auth_token: str, url: str, params: Params = None) -> str:
    """Compute the ``X-Twilio-Signature`` Twilio would send for ``url`` and form ``params``.

    Args:
        auth_token: the account's auth token (the HMAC key).
        url: the full URL exactly as requested (scheme, host, optional port, path, raw query).
        params: the POST form params (all of them); ``None`` or empty for GET, JSON bodies and websockets.

    Returns:
        The base64 signature.
    """
    data = url + "".join(name + value for name, value in sorted(_pairs(params)))
    mac = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def body_sha256(body: bytes | str) -> str:
    """Hex SHA-256 of a raw request body (the ``bodySHA256`` query value of JSON webhooks)."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return hashlib.sha256(raw).hexdigest()


def _strip_port(netloc: str) -> str:
    host_end = netloc.rfind("]")  # IPv6 literal: the port colon comes after "]"
    colon = netloc.rfind(":")
    return netloc[:colon] if colon > host_end and colon > netloc.rfind("@") else netloc


def _url_variants(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise SignatureError(f"URL {url!r} has an invalid port") from exc
    bare = urlunsplit(parts._replace(netloc=_strip_port(parts.netloc))) if port is not None else url
    if port is not None:
        return bare, url
    default = _DEFAULT_PORTS.get(parts.scheme.lower(), 80)
    return bare, urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}"))


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def verify_signature(
    auth_token: str, url: str, params: Params, signature: str | None, *, body: bytes | str | None = None
) -> None:
    """Check a request's ``X-Twilio-Signature``; raise :class:`SignatureError` naming the failed check.

    Args:
        auth_token: the account's auth token.
        url: the public URL Twilio requested (see :func:`public_url`), query string included.
        params: the form params of a form POST; ignored when ``body`` is given.
        signature: the ``X-Twilio-Signature`` header value (``None`` if absent).
        body: the raw body of a JSON webhook; then the URL must carry a matching ``bodySHA256``.

    Raises:
        SignatureError: header missing, body hash missing or wrong, or signature mismatch.
    """
    if not signature:
        raise SignatureError(f"missing X-Twilio-Signature header for {url}")
    if body is not None:
        hashes = parse_qs(urlsplit(url).query).get("bodySHA256")
        if not hashes:
            raise SignatureError(f"JSON body but no bodySHA256 in the query of {url}")
        if not _same(body_sha256(body), hashes[0]):
            raise SignatureError(f"bodySHA256 in {url} does not match the body ({len(body)} bytes)")
        params = None
    pairs = _pairs(params)
    matched = False
    for candidate in _url_variants(url):  # check both, without short-circuit, like the SDK
        matched |= _same(compute_signature(auth_token, candidate, pairs), signature)
    if not matched:
        raise SignatureError(
            f"X-Twilio-Signature does not match {url} with {len(pairs)} params "
            "(wrong auth token, or the URL differs from what Twilio requested: check PUBLIC_URL)"
        )


def validate_signature(
    auth_token: str, url: str, params: Params, signature: str | None, *, body: bytes | str | None = None
) -> bool:
    """Like :func:`verify_signature` but return ``True``/``False`` (twilio-python's ``validate``)."""
    try:
        verify_signature(auth_token, url, params, signature, body=body)
    except SignatureError:
        return False
    return True


def public_url(base: str, path: str | bytes, query_string: bytes | str = b"") -> str:
    """Rebuild the URL Twilio requested from the configured public base, behind a TLS-terminating proxy.

    Args:
        base: the configured ``PUBLIC_URL``, e.g. ``https://gw.example.com`` (a path prefix, if any, is put in
            front of ``path``; a trailing ``/`` is ignored).
        path: the request path; pass ASGI ``scope["raw_path"]`` (bytes, still percent-encoded) when the server
            provides it, else ``scope["path"]``.
        query_string: ASGI ``scope["query_string"]``, used byte-for-byte.

    Returns:
        ``base + path`` plus ``"?" + query`` if there is a query.

    Raises:
        ValueError: ``base`` is not an absolute http(s)/ws(s) URL, or has a query or fragment.
    """
    parts = urlsplit(base)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"PUBLIC_URL must look like https://host[:port][/prefix], got {base!r}")
    p = path.decode("utf-8", "replace") if isinstance(path, bytes) else path
    if not p.startswith("/"):
        p = "/" + p
    q = query_string.decode("utf-8", "replace") if isinstance(query_string, bytes) else query_string
    return base.rstrip("/") + p + ("?" + q if q else "")


def public_ws_url(base: str, path: str | bytes, query_string: bytes | str = b"") -> str:
    """The ``wss://`` (or ``ws://``) form of :func:`public_url`, as signed on a Media Stream upgrade."""
    url = public_url(base, path, query_string)
    scheme, rest = url.split(":", 1)
    return {"https": "wss", "http": "ws"}.get(scheme, scheme) + ":" + rest
