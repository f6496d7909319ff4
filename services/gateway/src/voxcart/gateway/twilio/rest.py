"""Twilio REST: modify a live call (hang up, or redirect it to new TwiML such as a ``<Dial>``) (protocols.md 3).

``POST {base_url}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``, form-encoded, HTTP Basic auth with
``AccountSid:AuthToken`` (or an API key ``SK…:secret``, the account SID still in the path).

Invariants: sids are checked against their formats before they go into a URL path; every request has a
timeout; any non-2xx answer or transport failure raises :class:`TwilioRestError` carrying the HTTP status and
Twilio's error ``code``/``message`` when the body has them. No automatic retries: the caller decides (a hang-up
repeated on a finished call answers 4xx).
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import msgspec

from voxcart.common.metrics import ProviderMetrics, status_result
from voxcart.gateway.twilio.twiml import VoiceResponse

__all__ = ["CallResource", "TwilioRest", "TwilioRestError"]

_ACCOUNT = re.compile(r"^AC[0-9a-fA-F]{32}$")
_CALL = re.compile(r"^CA[0-9a-fA-F]{32}$")
_API_KEY = re.compile(r"^SK[0-9a-fA-F]{32}$")
MAX_TWIML_CHARS = 4000
"""Twilio's limit on the ``Twiml`` parameter."""
METRICS = ProviderMetrics("gateway", "twilio")
"""``voxcart_provider_requests_total{provider="twilio"}``: one request per REST call; the answer is its first
response."""


class TwilioRestError(Exception):
    """A Twilio REST call failed.

    Attributes:
        status: HTTP status (``None`` for timeouts and connection errors).
        code: Twilio's error code from the JSON body, if any.
        more_info: Twilio's documentation link, if any.
    """

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None, more_info: str = ""):
        super().__init__(message)
        self.status, self.code, self.more_info = status, code, more_info


class CallResource(msgspec.Struct, frozen=True):
    """The fields of Twilio's Call JSON that voxcart uses (others are ignored)."""

    sid: str
    status: str
    direction: str | None = None
    parent_call_sid: str | None = None


class _ErrorBody(msgspec.Struct):
    message: str = ""
    code: int | None = None
    more_info: str = ""


class TwilioRest:
    """Async client for the Calls resource.

    Args:
        account_sid: ``AC`` + 32 hex.
        auth_token: the account's auth token (or the API key secret when ``api_key_sid`` is set).
        base_url: API origin; point it at a local fake server in tests.
        timeout: seconds for connect, read, write and pool each.
        api_key_sid: optional ``SK…`` API key used as the Basic-auth user instead of the account SID.
        transport: optional httpx transport (e.g. ``httpx.MockTransport``).
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str = "https://api.twilio.com",
        timeout: float = 10.0,
        api_key_sid: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not _ACCOUNT.match(account_sid):
            raise ValueError(f"TWILIO_ACCOUNT_SID must be 'AC' + 32 hex digits, got {account_sid!r}")
        if not auth_token:
            raise ValueError("TWILIO_AUTH_TOKEN is empty")
        if api_key_sid is not None and not _API_KEY.match(api_key_sid):
            raise ValueError(f"API key sid must be 'SK' + 32 hex digits, got {api_key_sid!r}")
        self.account_sid = account_sid
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=httpx.BasicAuth(api_key_sid or account_sid, auth_token),
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"User-Agent": "voxcart-gateway", "Accept": "application/json"},
        )

    async def hangup(self, call_sid: str) -> CallResource:
        """End an in-progress call (``Status=completed``)."""
        return await self.update_call(call_sid, {"Status": "completed"})

    async def redirect(self, call_sid: str, twiml: str) -> CallResource:
        """Replace the call's current TwiML with ``twiml`` (at most 4000 characters)."""
        if len(twiml) > MAX_TWIML_CHARS:
            raise ValueError(f"Twiml is {len(twiml)} characters; Twilio accepts at most {MAX_TWIML_CHARS}")
        return await self.update_call(call_sid, {"Twiml": twiml})

    async def transfer(
        self, call_sid: str, number: str, *, caller_id: str | None = None, say_first: str | None = None
    ) -> CallResource:
        """Redirect the call to ``<Say>`` (optional) + ``<Dial>number</Dial>``; the media stream then ends."""
        response = VoiceResponse()
        if say_first:
            response.say(say_first)
        return await self.redirect(call_sid, response.dial(number, caller_id=caller_id).to_xml())

    async def update_call(self, call_sid: str, fields: dict[str, str]) -> CallResource:
        """POST ``fields`` to the call resource and return the updated call.

        Raises:
            ValueError: ``call_sid`` is not ``CA`` + 32 hex.
            TwilioRestError: timeout, connection failure, non-2xx answer, or an answer that is not Call JSON.
        """
        if not _CALL.match(call_sid):
            raise ValueError(f"CallSid must be 'CA' + 32 hex digits, got {call_sid!r}")
        path = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call_sid}.json"
        what = f"Twilio call update {call_sid} ({', '.join(fields)})"
        started = time.monotonic()
        try:
            response = await self._client.post(path, data=fields)
        except httpx.TimeoutException as exc:
            METRICS.request("timeout")
            raise TwilioRestError(f"{what}: timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            METRICS.request("error")
            raise TwilioRestError(f"{what}: {type(exc).__name__}: {exc}") from exc
        METRICS.first_response(time.monotonic() - started)
        if response.is_error:
            METRICS.request(status_result(response.status_code))
            raise _error(what, response)
        try:
            call = msgspec.json.decode(response.content, type=CallResource)
        except msgspec.MsgspecError as exc:
            METRICS.request("error")
            raise TwilioRestError(f"{what}: answer is not Call JSON: {exc}", status=response.status_code) from exc
        METRICS.request("ok")
        return call

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()

    async def __aenter__(self) -> TwilioRest:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def _error(what: str, response: httpx.Response) -> TwilioRestError:
    try:
        body = msgspec.json.decode(response.content, type=_ErrorBody)
    except msgspec.MsgspecError:
        body = _ErrorBody(message=response.text[:200])
    code = f" (Twilio error {body.code})" if body.code is not None else ""
    return TwilioRestError(
        f"{what}: HTTP {response.status_code}{code}: {body.message or response.reason_phrase}",
        status=response.status_code,
        code=body.code,
        more_info=body.more_info,
    )
