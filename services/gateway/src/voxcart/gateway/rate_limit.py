"""Rate limit per calling number: at most ``RATE_LIMIT_CALLS`` calls from one number in any ``RATE_LIMIT_WINDOW_S``
are taken; the next ones are refused politely. Counted in Redis, so every gateway replica shares the count.

Invariants:
- Only calls let through are counted, each CallSid once (a retried webhook is neither counted again nor refused):
  a caller who keeps redialing while refused gets through again as soon as the window holds fewer calls.
- Withheld or anonymous numbers (``From`` empty, ``anonymous``, ``restricted``, ``unknown``, ``private``,
  ``unavailable``, or Twilio's ``+266696687``) cannot be told apart, so they share one bucket with its own,
  larger allowance (``RATE_LIMIT_WITHHELD_CALLS``): one abuser hiding their number cannot get unlimited calls,
  and honest withheld callers are not refused because of one another at ordinary volumes.
- Redis keys hold a digest of the number, never the number; logs mask it.
- ``voxcart_rate_limit_total{outcome, scope}``: ``allowed``/``refused`` for ``number``/``withheld``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import msgspec
from prometheus_client import Counter

from voxcart.common import events as ev
from voxcart.common.logs import mask
from voxcart.common.settings import Settings

from .admission_store import AdmissionStore

__all__ = ["RATE_LIMITED", "RateDecision", "RateLimiter", "bucket_of", "is_withheld"]

log = logging.getLogger("voxcart.gateway.rate_limit")

RATE_LIMITED = Counter(
    "voxcart_rate_limit_total", "New calls checked against the per-number rate limit.", ["outcome", "scope"]
)
for _outcome in ("allowed", "refused"):  # exported at 0 from the start
    for _scope in ("number", "withheld"):
        RATE_LIMITED.labels(_outcome, _scope)

WITHHELD = frozenset({"", "anonymous", "restricted", "unknown", "private", "unavailable", "+266696687", "266696687"})
"""How carriers and Twilio present a number the caller withheld (``+266696687`` spells ANONYMOUS)."""
WITHHELD_BUCKET = "withheld"


def is_withheld(number: str) -> bool:
    """Whether ``From`` carries no usable caller number."""
    return number.strip().lower() in WITHHELD


def bucket_of(number: str) -> str:
    """The rate-limit bucket of a calling number: ``withheld``, or a digest of the number (spaces ignored)."""
    if is_withheld(number):
        return WITHHELD_BUCKET
    return hashlib.sha256("".join(number.split()).encode()).hexdigest()[:24]


class RateDecision(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    withheld: bool
    count: int
    """Calls of the bucket in the window (this one included when allowed)."""
    limit: int


class RateLimiter:
    """Checks new calls against the per-number limit (see the module invariants); ``RATE_LIMIT_CALLS=0`` allows
    everything without touching Redis."""

    def __init__(self, store: AdmissionStore, settings: Settings, clock: Callable[[], float] = ev.now_ms) -> None:
        self.store = store
        self.enabled = settings.rate_limit_calls > 0
        self.per_number = settings.rate_limit_calls
        self.withheld_limit = settings.rate_limit_withheld_calls
        self.window_ms = settings.rate_limit_window_s * 1000
        self._clock = clock

    async def check(self, number: str, sid: str) -> RateDecision:
        """Let the call ``sid`` from ``number`` through, or not. Raises :class:`BusError` when Redis fails."""
        withheld = is_withheld(number)
        limit = self.withheld_limit if withheld else self.per_number
        if not self.enabled:
            return RateDecision(allowed=True, withheld=withheld, count=0, limit=0)
        allowed, count = await self.store.count_call(bucket_of(number), sid, self._clock(), self.window_ms, limit)
        scope = "withheld" if withheld else "number"
        RATE_LIMITED.labels("allowed" if allowed else "refused", scope).inc()
        if not allowed:
            log.warning(
                "refused a call from %s: %d calls in the last %d s (limit %d)",
                "a withheld number" if withheld else mask(number),
                count,
                self.window_ms // 1000,
                limit,
                extra={"call_sid": sid},
            )
        return RateDecision(allowed=allowed, withheld=withheld, count=count, limit=limit)
