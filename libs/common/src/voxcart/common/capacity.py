"""Worker capacity reports: each stt, brain and tts replica says how many calls it owns and may own, so that the
gateway admits a new call only when every service has room for it (the gateway's ``admission`` module).

Invariants:
- A replica writes its report into the hash :func:`~voxcart.common.bus.keys.capacity` of its service (field: the
  replica id) on every heartbeat (1 s), and once more, draining, when it stops. The hash expires
  :data:`REPORT_TTL_MS` after the last report of any replica.
- A report older than :data:`STALE_MS` is from a replica that died or hangs: it counts for nothing (the gateway
  deletes it). A report that does not decode counts for nothing too.
- A draining replica claims no new calls: it counts with room for none.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from .bus import keys
from .bus.base import Bus

__all__ = [
    "REPORT_TTL_MS",
    "STALE_MS",
    "CapacityReport",
    "ServiceCapacity",
    "decode_report",
    "encode_report",
    "publish_report",
    "summarize",
]

STALE_MS = 5000
"""A report older than this is ignored (the same window ``/healthz`` uses for worker heartbeats)."""
REPORT_TTL_MS = 60_000
"""The reports hash of a service expires this long after the last report of any of its replicas."""


class CapacityReport(msgspec.Struct, frozen=True, array_like=True):
    """What one replica said at ``at_ms``: it owned ``owned`` calls of at most ``max_calls``."""

    owned: int
    max_calls: int
    draining: bool
    at_ms: int
    """Epoch milliseconds when the report was made."""


class ServiceCapacity(msgspec.Struct, frozen=True):
    """A service's live replicas taken together."""

    replicas: int
    """Replicas with a fresh report (draining ones included)."""
    owned: int
    """Calls they own."""
    max_calls: int
    """Calls they may own together: ``MAX_CALLS`` of each live replica that is not draining."""


def encode_report(report: CapacityReport) -> bytes:
    return msgspec.json.encode(report)


def decode_report(raw: bytes) -> CapacityReport | None:
    """The report in ``raw``; ``None`` when it is not one (another version's format, a corrupt value)."""
    try:
        report = msgspec.json.decode(raw, type=CapacityReport)
    except msgspec.DecodeError:
        return None
    return report if report.owned >= 0 and report.max_calls >= 0 else None


async def publish_report(bus: Bus, svc: str, replica: str, report: CapacityReport) -> None:
    """Write ``replica``'s report and keep the service's hash alive (raises :class:`BusError` like the bus)."""
    key = keys.capacity(svc)
    await bus.hset(key, {replica: encode_report(report)})
    await bus.expire([key], REPORT_TTL_MS)


def summarize(
    raw: Mapping[str, bytes], now_ms: float, stale_ms: int = STALE_MS
) -> tuple[ServiceCapacity | None, list[str]]:
    """The capacity of a service from its reports hash.

    Returns:
        The live replicas' capacity (``None`` when no replica has a fresh report), and the replicas whose
        report is stale or unreadable (to delete).
    """
    live: list[CapacityReport] = []
    dead: list[str] = []
    for replica, value in raw.items():
        report = decode_report(value)
        if report is None or report.at_ms < now_ms - stale_ms:
            dead.append(replica)
        else:
            live.append(report)
    if not live:
        return None, dead
    room = sum(r.max_calls for r in live if not r.draining)
    return ServiceCapacity(replicas=len(live), owned=sum(r.owned for r in live), max_calls=room), dead
