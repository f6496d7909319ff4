"""The per-call media token: the voice webhook's ``<Stream>`` carries it as ``<Parameter name="token">``, and the
media socket's ``start`` must bring it back in ``customParameters`` for its ``callSid``.

Why: Twilio signs the media socket's upgrade over the stream URL alone (no parameters), so that signature is the
same for every call and anyone who saw one upgrade could replay it and send a ``start`` naming someone else's
live call (taking its audio over). The token binds a socket to the one call the webhook admitted.

Invariants:
- token = first 128 bits of HMAC-SHA256(secret, CallSid), hex; compared in constant time. It depends only on the
  secret and the CallSid, so every gateway replica sharing the secret issues and accepts the same token, and a
  retried webhook answers the same TwiML.
- The secret is ``MEDIA_TOKEN_SECRET``, else derived from ``TWILIO_AUTH_TOKEN`` (never the auth token itself),
  else random for this process (development without Twilio: one gateway replica only), with a warning.
- A refused ``start`` is counted in ``voxcart_media_token_refused_total{reason}`` (``missing`` or ``mismatch``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from prometheus_client import Counter

from voxcart.common.settings import Settings

__all__ = ["MEDIA_TOKEN_REFUSED", "PARAMETER", "MediaTokens"]

log = logging.getLogger("voxcart.gateway.media_token")

PARAMETER = "token"
"""The ``<Parameter>`` (``customParameters`` key) that carries the token."""

MEDIA_TOKEN_REFUSED = Counter(
    "voxcart_media_token_refused_total",
    "Media stream starts refused because their token was missing or did not match their callSid.",
    ["reason"],
)
for _reason in ("missing", "mismatch"):  # exported at 0 from the start
    MEDIA_TOKEN_REFUSED.labels(_reason)

_DERIVE_LABEL = b"voxcart media token v1"


class MediaTokens:
    """Issues and checks media tokens with one secret (see the module invariants)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError(f"a media token secret needs at least 16 bytes, got {len(secret)}")
        self._secret = secret

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaTokens:
        """``MEDIA_TOKEN_SECRET``, else a key derived from ``TWILIO_AUTH_TOKEN``, else a random one (logged)."""
        if settings.media_token_secret:
            return cls(hashlib.sha256(settings.media_token_secret.encode()).digest())
        if settings.twilio_auth_token:
            return cls(hmac.new(settings.twilio_auth_token.encode(), _DERIVE_LABEL, hashlib.sha256).digest())
        log.warning(
            "neither MEDIA_TOKEN_SECRET nor TWILIO_AUTH_TOKEN is set: media tokens use a secret of this process "
            "only (a media socket reaching another gateway replica would be refused)"
        )
        return cls(secrets.token_bytes(32))

    def issue(self, call_sid: str) -> str:
        """The token of ``call_sid``."""
        return hmac.new(self._secret, call_sid.encode(), hashlib.sha256).hexdigest()[:32]

    def refusal(self, call_sid: str, token: str | None) -> str | None:
        """Why a ``start`` for ``call_sid`` bringing ``token`` is refused: ``missing`` or ``mismatch``; ``None``
        when the token is this call's."""
        if not token:
            return "missing"
        if not hmac.compare_digest(token.encode(), self.issue(call_sid).encode()):
            return "mismatch"
        return None
