"""The call record: who said what, when, the outcome and per-turn latency, read from the bus.

Brain writes the turns (``vc:call:{sid}:turns``) in its fenced commits, so a turn appears as soon as it is
final; the gateway writes the call's numbers, status, outcome and measured latencies (``...:meta``).
"""

from __future__ import annotations

from typing import Any

from voxcart.common import events as ev
from voxcart.common.bus import Bus, keys
from voxcart.common.logs import mask

__all__ = ["get_record", "list_records"]


def _meta(raw: dict[str, bytes]) -> dict[str, Any]:
    meta = {k: v.decode() for k, v in raw.items()}
    latencies = {int(k.split(":", 1)[1]): float(v) for k, v in meta.items() if k.startswith("latency:")}
    return {
        "from": mask(meta.get("from", "")),
        "to": meta.get("to", ""),
        "status": meta.get("status", "unknown"),
        "outcome": meta.get("outcome"),
        "started_ms": float(meta["started"]) if "started" in meta else None,
        "ended_ms": float(meta["ended"]) if "ended" in meta else None,
        "latencies": latencies,
    }


async def get_record(bus: Bus, sid: str) -> dict[str, Any] | None:
    raw = await bus.hgetall(keys.meta(sid))
    if not raw:
        return None
    meta = _meta(raw)
    latencies: dict[int, float] = meta.pop("latencies")
    turns: list[dict[str, Any]] = []
    for entry in await bus.range(keys.turns(sid)):
        try:
            turn = ev.decode(entry.data)
        except ev.EventDecodeError:
            continue
        if not isinstance(turn, ev.TurnRecord):
            continue
        item: dict[str, Any] = {
            "speaker": turn.speaker,
            "text": turn.text,
            "turn_no": turn.turn_no,
            "started_ms": turn.started,
            "ended_ms": turn.ended,
        }
        if turn.speaker == "caller":
            item["confidence"] = turn.confidence
        else:
            item["intent"] = turn.intent
            item["latency_s"] = latencies.get(turn.turn_no)
        turns.append(item)
    values = [v for v in latencies.values()]
    summary = {"turns": len(values), "max_s": max(values) if values else None}
    if values:
        ordered = sorted(values)
        summary["p50_s"] = ordered[len(ordered) // 2]
    return {"call_sid": sid, **meta, "turns": turns, "latency": summary}


async def list_records(bus: Bus, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
    sids = await bus.zrange_by_score(keys.CALLS_INDEX, float("-inf"), float("inf"), reverse=True, limit=limit * 2)
    out: list[dict[str, Any]] = []
    for sid, _ in sids:
        raw = await bus.hgetall(keys.meta(sid))
        if not raw:
            continue
        meta = _meta(raw)
        meta.pop("latencies")
        if status is None or meta["status"] == status:
            out.append({"call_sid": sid, **meta})
        if len(out) >= limit:
            break
    return out
