"""What to tell Twilio when a call's media stream ends under it: the ``<Connect action>`` request.

Twilio requests the ``<Connect action>`` URL whenever the bidirectional stream ends and the call does not: our side
closed the socket on purpose (a hang-up or transfer without REST credentials), or the socket died with the gateway
replica that held it (design.md, failure cases). Any replica may get the request, so the answer depends only on
the call's meta hash and one shared counter, never on this process's memory:

- the agent was ending the call (``ending`` is recorded *before* the socket is closed): ``<Dial>`` when a transfer
  number is recorded, else ``<Hangup/>``;
- the call is over (``status`` completed) or unknown (no meta hash): ``<Hangup/>``;
- a dial, a hang-up or giving up also ends the call on the bus (``end_call``: once per call, so it does not matter
  whether the socket's own close on a live replica got there first);
- otherwise the stream broke under a live call: a fresh ``<Connect><Stream>``, the same document the voice webhook
  answers (its socket's ``start`` does ``INCR gen``; the gateway then publishes ``stream.reconnected`` and brain
  repeats the cut-off prompt). At most :data:`MAX_RECONNECTS` per call, counted by an atomic ``INCR`` that every
  replica shares; past that the caller hears :data:`GIVE_UP_SAY` and the call is hung up.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from voxcart.common.bus import Bus, keys

from .twilio.twiml import VoiceResponse

__all__ = ["ENDING_FIELD", "GIVE_UP_SAY", "MAX_RECONNECTS", "AfterStream", "after_stream_twiml", "decide"]

log = logging.getLogger("voxcart.gateway.reconnect")

MAX_RECONNECTS = 2
"""Fresh streams granted to one call after its first; the next break ends the call politely."""
GIVE_UP_SAY = "Sorry, we keep losing this line. Please call us again. Goodbye."
ENDING_FIELD = "ending"
"""Meta field set when the agent ends the call (``hangup`` or ``transfer``), before its socket is closed."""

RECONNECTS = Counter(
    "voxcart_stream_reconnects_total",
    "<Connect action> requests for calls whose media stream broke, by answer: reconnect or give_up.",
    ["outcome"],
)


class AfterStream(enum.Enum):
    """The answer to one ``<Connect action>`` request."""

    DIAL = "dial"
    """The agent transferred the call: ``<Dial>`` the recorded number."""
    HANGUP = "hangup"
    """The agent ended the call, or the call is over or unknown."""
    RECONNECT = "reconnect"
    """The stream broke under a live call: open a fresh one."""
    GIVE_UP = "give_up"
    """The stream broke once more than :data:`MAX_RECONNECTS` allows: apologise and hang up."""


def decide(meta: dict[str, bytes], reconnects: int | None) -> AfterStream:
    """The answer from the call's meta hash and, for a broken stream, the value of its reconnect counter after
    this request's ``INCR`` (``None`` when it was not counted yet)."""
    if meta.get("transfer_to"):
        return AfterStream.DIAL
    if not meta or meta.get(ENDING_FIELD) or meta.get("status") == b"completed":
        return AfterStream.HANGUP
    if reconnects is None or reconnects <= MAX_RECONNECTS:
        return AfterStream.RECONNECT
    return AfterStream.GIVE_UP


async def after_stream_twiml(
    bus: Bus, sid: str, fresh_stream: Callable[[], str], end_call: Callable[[str, str], Awaitable[None]]
) -> str:
    """The TwiML answering Twilio's ``<Connect action>`` request for call ``sid``.

    Args:
        bus: the bus (the call's meta hash and reconnect counter).
        sid: the request's ``CallSid`` (anything malformed or unknown gets ``<Hangup/>``).
        fresh_stream: builds the ``<Connect><Stream>`` document the voice webhook answers.
        end_call: ends the call on the bus once, with an outcome (``CallRegistry.end_call``).

    Raises:
        BusError: Redis is unreachable (the caller gets Twilio's error handling, as for any webhook).
    """
    valid = sid.startswith("CA") and sid[2:].isalnum() and len(sid) <= 64
    meta = await bus.hgetall(keys.meta(sid)) if valid else {}
    answer = decide(meta, None)
    if answer is AfterStream.RECONNECT:
        answer = decide(meta, await bus.incr(keys.reconnects(sid), keys.CALL_TTL_MS))
        RECONNECTS.labels(answer.value).inc()
        log.warning("media stream of a live call broke: %s", answer.value, extra={"call_sid": sid})
    if answer is AfterStream.RECONNECT:
        return fresh_stream()
    if meta and meta.get("status") != b"completed":
        outcomes = {AfterStream.DIAL: "transferred", AfterStream.GIVE_UP: "stream lost"}
        await end_call(sid, outcomes.get(answer, "agent ended"))
    if answer is AfterStream.DIAL:
        return VoiceResponse().dial(meta["transfer_to"].decode(), timeout=25).to_xml()
    if answer is AfterStream.GIVE_UP:
        return VoiceResponse().say(GIVE_UP_SAY).hangup().to_xml()
    return VoiceResponse().hangup().to_xml()
