"""``voxcart_provider_requests_total{provider="twilio"}``: one request per REST call, by how it ended.

The answers come from httpx.MockTransport: a Call JSON (``ok``, its round trip timed), Twilio's 429 error body
(``rate_limited``), 401 (``auth``), a read timeout (``timeout``), a refused connection (``error``).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import pytest
from prometheus_client import REGISTRY

from voxcart.gateway.twilio.rest import TwilioRest, TwilioRestError

AC = "AC" + "0123456789abcdef" * 2
CA = "CA" + "fedcba9876543210" * 2
LABELS = {"svc": "gateway", "provider": "twilio"}
RESULTS = ("ok", "error", "timeout", "rate_limited", "auth", "dropped", "cancelled")


def counts() -> dict[str, float]:
    return {
        r: REGISTRY.get_sample_value("voxcart_provider_requests_total", {**LABELS, "result": r}) or 0.0 for r in RESULTS
    }


def answered() -> float:
    return REGISTRY.get_sample_value("voxcart_provider_first_response_seconds_count", LABELS) or 0.0


def delta(before: dict[str, float]) -> dict[str, float]:
    return {r: n - before[r] for r, n in counts().items() if n != before[r]}


def answering(status: int, body: Mapping[str, object]) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, json=body))


def failing(exc: Exception) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handle)


async def test_gw_rest_ok_is_counted_and_timed() -> None:
    before, timed = counts(), answered()
    async with TwilioRest(AC, "token", transport=answering(200, {"sid": CA, "status": "completed"})) as rest:
        await rest.hangup(CA)
    assert delta(before) == {"ok": 1}
    assert answered() == timed + 1


@pytest.mark.parametrize(("status", "result"), [(429, "rate_limited"), (401, "auth"), (404, "error")])
async def test_gw_rest_refusals_are_counted_by_status(status: int, result: str) -> None:
    before, timed = counts(), answered()
    body = {"code": 20429 if status == 429 else 20404, "message": "refused", "status": status}
    async with TwilioRest(AC, "token", transport=answering(status, body)) as rest:
        with pytest.raises(TwilioRestError, match=f"HTTP {status}"):
            await rest.hangup(CA)
    assert delta(before) == {result: 1}
    assert answered() == timed + 1  # Twilio answered, if only to refuse


@pytest.mark.parametrize(
    ("exc", "result"),
    [(httpx.ReadTimeout("slow"), "timeout"), (httpx.ConnectError("refused"), "error")],
)
async def test_gw_rest_transport_failures_are_counted(exc: Exception, result: str) -> None:
    before, timed = counts(), answered()
    async with TwilioRest(AC, "token", transport=failing(exc)) as rest:
        with pytest.raises(TwilioRestError):
            await rest.hangup(CA)
    assert delta(before) == {result: 1}
    assert answered() == timed
