"""What a new call meets before the agent: the per-number rate limit, admission control, hold and call back.

``POST /twilio/voice`` (:meth:`Intake.arrive`): a number over its rate limit is refused politely; a call the
workers have room for is started on the bus and connected to the media stream; any other call is put on hold.
``POST /twilio/hold`` (:meth:`Intake.hold`), which a held call's ``<Redirect>`` and ``<Gather>`` request: 1 pressed
asks for a call back; otherwise the call is connected if its turn has come, ended politely after
``ADMISSION_MAX_WAIT_S`` (offered a call back once more), or held again. ``POST /twilio/status``
(:meth:`Intake.status`): a call that ends while on hold leaves the line at once.

Invariants:
- ``call.started`` is published only for an admitted call: a call on hold is unknown to the workers.
- No call on hold is dropped silently: it is admitted, calls back, times out with a goodbye, or its caller hung up.
- The hold URL carries the hold round (``n``) and the first arrival (``t``, epoch ms, for the records only); both
  are inside Twilio's signature. Decisions use the arrival kept in Redis.
- A Redis failure on the first webhook apologizes; on hold it holds again (a Redis restart takes seconds), until
  the longest wait has passed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from voxcart.common import events as ev
from voxcart.common.bus import BusError
from voxcart.common.logs import mask
from voxcart.common.settings import Settings

from . import hold_twiml
from .admission import Admission
from .callbacks import record_callback, record_unanswered
from .rate_limit import RateLimiter, is_withheld
from .records_store import Outcome, RecordStore, RecordStoreError
from .twilio.signature import public_url

__all__ = ["ENDED", "HOLD_PATH", "Intake"]

log = logging.getLogger("voxcart.gateway.intake")

HOLD_PATH = "/twilio/hold"
REMIND_EVERY_S = 30
"""A caller on hold hears "thanks for holding" about this often (silence in between)."""
ENDED = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})

CallStarted = Callable[[str, str, str, str], Awaitable[bool]]
"""``(sid, from, to, account_sid)``: start the call on the bus (:meth:`CallRegistry.call_started`)."""
ConnectTwiml = Callable[[str, str], str]
"""``(public base URL, sid)``: the ``<Connect><Stream>`` document of an admitted call (with its media token)."""


class Intake:
    """The TwiML of a call until it is admitted (see the module invariants)."""

    def __init__(
        self,
        settings: Settings,
        admission: Admission,
        rate_limiter: RateLimiter,
        records: RecordStore,
        call_started: CallStarted,
        connect_twiml: ConnectTwiml,
        clock: Callable[[], float] = ev.now_ms,
    ) -> None:
        self.admission = admission
        self.rate_limiter = rate_limiter
        self.records = records
        self._call_started = call_started
        self._connect_twiml = connect_twiml
        self._hold_s = settings.admission_hold_s
        self._max_wait_s = settings.admission_max_wait_s
        self._remind_every = max(1, round(REMIND_EVERY_S / settings.admission_hold_s))
        self._clock = clock

    def _hold_url(self, base: str, round_no: int, arrival_ms: float) -> str:
        return f"{public_url(base, HOLD_PATH)}?n={round_no}&t={int(arrival_ms)}"

    async def arrive(self, form: Mapping[str, str], base: str) -> str:
        """``POST /twilio/voice`` of a call whose CallSid is valid."""
        sid, number = form["CallSid"], form.get("From", "")
        try:
            rate = await self.rate_limiter.check(number, sid)
            if not rate.allowed:
                return hold_twiml.rate_limited(rate.withheld)
            decision = await self.admission.check(sid)
        except BusError as exc:
            log.error("bus unavailable for a new call: %s", exc, extra={"call_sid": sid})
            return hold_twiml.unavailable()
        if decision.admitted:
            return await self._connect(form, base)
        arrival = self._clock() - decision.waited_s * 1000
        return hold_twiml.busy(
            self._hold_url(base, 1, arrival),
            self._hold_s,
            ahead=decision.ahead,
            callback=not is_withheld(number),
            first=True,
            remind=False,
        )

    async def hold(self, form: Mapping[str, str], base: str, round_no: int, arrival_ms: float | None) -> str:
        """``POST /twilio/hold``: round ``round_no`` of a held call that first asked at ``arrival_ms``."""
        sid, number = form["CallSid"], form.get("From", "")
        now = self._clock()
        arrival = arrival_ms if arrival_ms is not None and arrival_ms <= now else now
        callback = not is_withheld(number)
        if form.get("Digits", "") == "1" and callback:
            return await self._callback(form, arrival, now)
        try:
            decision = await self.admission.check(sid)
        except BusError as exc:
            log.warning("bus unavailable for a call on hold: %s", exc, extra={"call_sid": sid})
            if max((now - arrival) / 1000, round_no * self._hold_s) > self._max_wait_s:
                return hold_twiml.unavailable()
            url = self._hold_url(base, round_no + 1, arrival)
            return hold_twiml.busy(url, self._hold_s, ahead=0, callback=callback, first=False, remind=False)
        if decision.admitted:
            return await self._connect(form, base)
        if decision.waited_s >= self._max_wait_s:
            await self._time_out(form, arrival, now, decision.waited_s)
            if callback:
                return hold_twiml.last_offer(self._hold_url(base, round_no + 1, arrival))
            return hold_twiml.lines_still_busy()
        return hold_twiml.busy(
            self._hold_url(base, round_no + 1, arrival),
            self._hold_s,
            ahead=decision.ahead,
            callback=callback,
            first=False,
            remind=round_no % self._remind_every == 0,
        )

    async def status(self, form: Mapping[str, str]) -> None:
        """``POST /twilio/status``: a call that ended while on hold leaves the line (and is recorded abandoned)."""
        sid = form.get("CallSid", "")
        if not sid or form.get("CallStatus", "") not in ENDED:
            return
        if not await self.admission.leave(sid, "abandoned"):
            return
        now = self._clock()
        duration = form.get("CallDuration", "")
        arrival = now - int(duration) * 1000 if duration.isdecimal() and len(duration) < 9 else now
        await self._record(
            form, arrival, now, "abandoned", f"hung up on hold after {(now - arrival) / 1000:.0f} s", sid=sid
        )

    async def _connect(self, form: Mapping[str, str], base: str) -> str:
        sid = form["CallSid"]
        try:
            await self._call_started(sid, form.get("From", ""), form.get("To", ""), form.get("AccountSid", ""))
        except BusError as exc:
            log.error("bus unavailable for a new call: %s", exc, extra={"call_sid": sid})
            return hold_twiml.unavailable()
        return self._connect_twiml(base, sid)

    async def _callback(self, form: Mapping[str, str], arrival: float, now: float) -> str:
        sid, number = form["CallSid"], form.get("From", "")
        try:
            await self.admission.leave(sid, "callback")
        except BusError as exc:  # it stops asking anyway: the queue drops it as abandoned
            log.warning("could not take a call off hold: %s", exc, extra={"call_sid": sid})
        try:
            await record_callback(self.records, sid, number, form.get("To", ""), arrival, now)
        except RecordStoreError as exc:
            log.error("could not save a call-back request from %s: %s", mask(number), exc, extra={"call_sid": sid})
            return hold_twiml.callback_failed()
        log.info("call back requested by %s", mask(number), extra={"call_sid": sid})
        return hold_twiml.callback_confirmed(number)

    async def _time_out(self, form: Mapping[str, str], arrival: float, now: float, waited_s: float) -> None:
        sid = form["CallSid"]
        try:
            await self.admission.leave(sid, "timed_out")
        except BusError as exc:
            log.warning("could not take a call off hold: %s", exc, extra={"call_sid": sid})
        await self._record(form, arrival, now, "failed", f"all lines busy: ended after {waited_s:.0f} s on hold")

    async def _record(
        self, form: Mapping[str, str], arrival: float, now: float, outcome: Outcome, reason: str, sid: str = ""
    ) -> None:
        call_sid = sid or form["CallSid"]
        try:
            await record_unanswered(
                self.records, call_sid, form.get("From", ""), form.get("To", ""), arrival, now, outcome, reason
            )
        except RecordStoreError as exc:
            log.error("could not store the record of a call ended on hold: %s", exc, extra={"call_sid": call_sid})
