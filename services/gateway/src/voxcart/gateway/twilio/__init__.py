"""The Twilio edge of the gateway: pure protocol code, no Redis and no web framework.

Modules: ``signature`` (X-Twilio-Signature and public URLs), ``twiml`` (TwiML builder), ``media`` (Media Streams
codec), ``connection`` (one media socket's state machine and marks), ``pacer`` (real-time outbound audio),
``rest`` (modify a live call through Twilio's REST API). Twilio JSON and base64 never leave this package.
"""

from __future__ import annotations

__all__: list[str] = []
