"""Call records end to end inside one gateway: outcome classification, the recorder (call end -> store, startup
backfill), and ``GET /calls`` / ``GET /calls/{CallSid}`` over stored and live calls, with filters and pages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from voxcart.common import events as ev
from voxcart.common.bus import MemoryBus, Output, keys
from voxcart.common.settings import load_settings
from voxcart.gateway.app import create_app
from voxcart.gateway.calls import CallRegistry
from voxcart.gateway.recorder import CallRecorder
from voxcart.gateway.records import classify_outcome, read_record
from voxcart.gateway.records_sqlite import SqliteRecordStore
from voxcart.gateway.records_store import CallRecord, RecordQuery, Turn

AUTH = {"Authorization": "Bearer api-secret"}
T0 = 1_764_000_000_000.0


def agent(intent: str, turn_no: int = 1) -> Turn:
    return Turn(speaker="agent", text="...", turn_no=turn_no, intent=intent)


def caller(turn_no: int = 1) -> Turn:
    return Turn(speaker="caller", text="hello", turn_no=turn_no, confidence=0.9)


@pytest.mark.parametrize(
    ("reason", "turns", "expected"),
    [
        ("transferred", [agent("greeting"), caller(), agent("human")], "transferred"),
        ("protocol error", [agent("greeting")], "failed"),
        ("agent ended", [agent("greeting"), caller(), agent("goodbye", 2)], "completed"),
        ("caller hung up", [agent("greeting"), caller(), agent("goodbye", 2)], "completed"),  # hung up on goodbye
        ("agent ended", [agent("greeting"), agent("silence"), agent("goodbye")], "abandoned"),
        ("caller hung up", [agent("greeting"), caller(), agent("order_status", 2)], "abandoned"),
        ("socket closed", [], "abandoned"),
        ("caller hung up", [caller()], "failed"),  # the agent never answered
        ("agent ended", [agent("greeting"), caller(), agent("store_error", 2)], "failed"),
        ("agent ended", [agent("greeting"), caller(), agent("wrapup", 2)], "completed"),  # LLM end_call
    ],
)
def test_gw_records_classify_outcome(reason: str, turns: list[Turn], expected: str) -> None:
    assert classify_outcome(reason, turns) == expected


async def fake_call(bus: MemoryBus, sid: str, started: float, *, reason: str | None = "agent ended",
                    from_number: str = "+15555550123") -> None:  # fmt: skip
    """A call as the gateway and brain leave it in Redis; ``reason=None``: still in progress."""
    await bus.hset(keys.meta(sid), {"from": from_number, "to": "+15555550999", "started": started})
    await bus.zadd(keys.CALLS_INDEX, {sid: started})
    turns = [
        ev.TurnRecord(call_sid=sid, speaker="agent", text="Hello.", turn_no=1, intent="greeting", started=started),
        ev.TurnRecord(call_sid=sid, speaker="caller", text="goodbye", turn_no=2, confidence=0.8,
                      started=started + 2000, ended=started + 2600),
        ev.TurnRecord(call_sid=sid, speaker="agent", text="Goodbye!", turn_no=2, intent="goodbye",
                      started=started + 3000),
    ]  # fmt: skip
    await bus.publish([Output(keys.turns(sid), ev.encode(t)) for t in turns])
    await bus.hset(keys.meta(sid), {"latency:1": 0.4, "latency:2": 0.9})
    if reason is None:
        await bus.hset(keys.meta(sid), {"status": "in-progress"})
    else:
        await bus.hset(keys.meta(sid), {"status": "completed", "outcome": reason, "ended": started + 5000})


async def forget(bus: MemoryBus, sid: str) -> None:
    """The call's Redis keys expire."""
    await bus.expire(keys.per_call_keys(sid), 1)
    await asyncio.sleep(0.01)
    assert await bus.hgetall(keys.meta(sid)) == {}


async def test_gw_records_read_record_from_redis() -> None:
    bus = MemoryBus()
    await fake_call(bus, "CAread", T0)
    record = await read_record(bus, "CAread")
    assert record is not None
    assert (record.status, record.outcome, record.end_reason) == ("completed", "completed", "agent ended")
    assert [(t.speaker, t.turn_no) for t in record.turns] == [("agent", 1), ("caller", 2), ("agent", 2)]
    assert record.turns[2].latency_s == pytest.approx(0.9) and record.turns[1].confidence == pytest.approx(0.8)
    assert (record.latency.turns, record.latency.p50_s, record.latency.max_s) == (2, 0.4, 0.9)
    await fake_call(bus, "CAlive", T0, reason=None)
    live = await read_record(bus, "CAlive")
    assert live is not None and live.outcome is None and live.status == "in-progress"


async def test_gw_records_recorder_writes_once_the_call_ended() -> None:
    bus, store = MemoryBus(), SqliteRecordStore(":memory:")
    recorder = CallRecorder(bus, store, settle_s=0.01)
    await fake_call(bus, "CAlive", T0, reason=None)
    assert await recorder.persist("CAlive") is False  # not ended: nothing written
    await fake_call(bus, "CAend", T0)
    recorder.call_ended("CAend")
    recorder.call_ended("CAend")  # processed twice
    await asyncio.sleep(0.1)
    stored = store.get("CAend")
    assert stored is not None and stored.outcome == "completed" and len(stored.turns) == 3
    assert store.list(RecordQuery()).records == [stored]
    await recorder.close()


async def test_gw_records_recorder_close_writes_pending_at_once(tmp_path: Path) -> None:
    bus, path = MemoryBus(), tmp_path / "records.sqlite3"
    recorder = CallRecorder(bus, SqliteRecordStore(path), settle_s=60.0)
    reader = SqliteRecordStore(path)  # another replica's view of the same file
    await fake_call(bus, "CAshut", T0)
    recorder.call_ended("CAshut")
    await asyncio.sleep(0.05)
    assert reader.get("CAshut") is None  # still settling
    async with asyncio.timeout(5):  # not the 60 s settle time
        await recorder.close()
    assert reader.get("CAshut") == await read_record(bus, "CAshut")
    reader.close()


async def test_gw_records_backfill_writes_ended_calls_without_a_record() -> None:
    bus, store = MemoryBus(), SqliteRecordStore(":memory:")
    await fake_call(bus, "CAgone", T0)  # ended while no gateway wrote it
    await fake_call(bus, "CAlive", T0, reason=None)
    now = ev.now_ms()
    await bus.zadd(keys.CALLS_INDEX, {"CAgone": now, "CAlive": now})
    recorder = CallRecorder(bus, store)
    assert await recorder.backfill() == 1
    assert store.known(["CAgone", "CAlive"]) == {"CAgone"}
    assert await recorder.backfill() == 0
    await recorder.close()


@dataclass
class Gateway:
    client: httpx.AsyncClient
    bus: MemoryBus
    store: SqliteRecordStore
    recorder: CallRecorder
    registry: CallRegistry


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = load_settings({"API_TOKEN": "api-secret"}, env_file=None)
    bus, store = MemoryBus(), SqliteRecordStore(tmp_path / "records.sqlite3")
    app = create_app(settings, bus=bus, records=store)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            yield Gateway(client, bus, store, app.state.recorder, app.state.registry)


async def seed_calls(gw: Gateway) -> None:
    """Four stored calls (CA0..CA3, a second apart; CA1 and CA3 from another number) and one live call."""
    outcomes = ["completed", "transferred", "abandoned", "failed"]
    for i, outcome in enumerate(outcomes):
        number = "+15550001111" if i % 2 else "+15555550123"
        gw.store.save(CallRecord(call_sid=f"CA{i}", from_number=number, status="completed", outcome=outcome,  # type: ignore[arg-type]
                                 started_ms=T0 + i * 1000, ended_ms=T0 + i * 1000 + 500))  # fmt: skip
    await fake_call(gw.bus, "CAlive", T0 + 10_000, reason=None)


async def sids(gw: Gateway, query: str) -> list[str]:
    response = await gw.client.get(f"/calls{query}", headers=AUTH)
    assert response.status_code == 200, response.text
    return [c["call_sid"] for c in response.json()["calls"]]


async def test_gw_records_api_lists_stored_and_live_calls_with_filters(gw: Gateway) -> None:
    await seed_calls(gw)
    assert await sids(gw, "") == ["CAlive", "CA3", "CA2", "CA1", "CA0"]
    assert await sids(gw, "?outcome=transferred") == ["CA1"]
    assert await sids(gw, "?from=%2B15550001111") == ["CA3", "CA1"]
    assert await sids(gw, "?from=+15550001111") == ["CA3", "CA1"]  # an unencoded + arrives as a space
    assert await sids(gw, "?from=15550001111") == ["CA3", "CA1"]
    assert await sids(gw, f"?since={T0 + 1000:.0f}&until={T0 + 3000:.0f}") == ["CA2", "CA1"]
    assert await sids(gw, "?since=2000-01-01&until=2000-01-02") == []
    assert await sids(gw, "?since=2000-01-01T00:00:00Z") == ["CAlive", "CA3", "CA2", "CA1", "CA0"]
    assert await sids(gw, "?status=in-progress") == ["CAlive"]
    body = (await gw.client.get("/calls?outcome=failed", headers=AUTH)).json()
    assert body["calls"][0]["from"] != "+15550001111" and body["calls"][0]["from"].endswith("11")  # masked
    assert body["calls"][0]["latency"] == {"turns": 0, "p50_s": None, "p95_s": None, "max_s": None}


async def test_gw_records_api_pages_with_cursor(gw: Gateway) -> None:
    await seed_calls(gw)
    seen: list[str] = []
    url = "/calls?limit=2"
    for _ in range(5):
        body = (await gw.client.get(url, headers=AUTH)).json()
        seen += [c["call_sid"] for c in body["calls"]]
        if body["next_cursor"] is None:
            break
        url = f"/calls?limit=2&cursor={body['next_cursor']}"
    assert seen == ["CAlive", "CA3", "CA2", "CA1", "CA0"]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=ten", "limit"),
        ("?outcome=happy", "outcome"),
        ("?since=yesterday", "since"),
        ("?until=2026-13-01", "until"),
        ("?since=2026-11-02&until=2026-11-01", "until"),
        ("?from=bob", "from"),
        ("?cursor=%%%", "cursor"),
    ],
)
async def test_gw_records_api_bad_filters_are_400(gw: Gateway, query: str, named: str) -> None:
    response = await gw.client.get(f"/calls{query}", headers=AUTH)
    assert response.status_code == 400
    assert named in response.json()["detail"]


async def test_gw_records_api_requires_bearer(gw: Gateway) -> None:
    assert (await gw.client.get("/calls?outcome=failed")).status_code == 401
    assert (await gw.client.get("/calls/CA0")).status_code == 401


async def test_gw_records_api_record_outlives_redis(gw: Gateway) -> None:
    await fake_call(gw.bus, "CAdone", T0)
    live = (await gw.client.get("/calls/CAdone", headers=AUTH)).json()  # not stored yet: read from Redis
    assert live["outcome"] == "completed" and len(live["turns"]) == 3
    assert await gw.recorder.persist("CAdone")
    await forget(gw.bus, "CAdone")
    await gw.bus.zrem(keys.CALLS_INDEX, ["CAdone"])
    stored = (await gw.client.get("/calls/CAdone", headers=AUTH)).json()
    assert stored == live
    assert [t["speaker"] for t in stored["turns"]] == ["agent", "caller", "agent"]
    assert stored["turns"][2]["latency_s"] == pytest.approx(0.9) and stored["latency"]["p95_s"] == pytest.approx(0.9)
    assert await sids(gw, "") == ["CAdone"]
    assert (await gw.client.get("/calls/CAnever", headers=AUTH)).status_code == 404


async def test_gw_records_api_call_end_is_stored(gw: Gateway) -> None:
    """The registry's call end reaches the store through the recorder hook (settle time shortened)."""
    gw.recorder._settle_s = 0.01
    await fake_call(gw.bus, "CAhook", T0, reason=None)
    await gw.bus.hset(keys.meta("CAhook"), {"status": "completed", "outcome": "caller hung up", "ended": T0 + 9})
    assert gw.registry.on_ended is not None
    gw.registry.on_ended("CAhook")
    await asyncio.sleep(0.1)
    stored = gw.store.get("CAhook")
    assert stored is not None and stored.outcome == "completed" and stored.end_reason == "caller hung up"
