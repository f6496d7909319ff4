"""``CALL_RETENTION_MS``: how long a call's keys stay in Redis after its end (design: cut to 10 min at call.ended)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from voxcart.common.bus import MemoryBus, keys
from voxcart.common.settings import SettingsError, load_settings
from voxcart.gateway.app import create_app
from voxcart.gateway.calls import CallRegistry
from voxcart.gateway.records_sqlite import SqliteRecordStore


async def test_gw_retention_cuts_every_per_call_key_to_the_setting() -> None:
    bus = MemoryBus()
    registry = CallRegistry(bus, retention_ms=1500)
    sid = "CAretention"
    assert await registry.call_started(sid, "+15550001111", "+15550002222", "AC1")
    await bus.incr(keys.gen(sid), keys.CALL_TTL_MS)
    assert bus.expiry[keys.meta(sid)] - time.monotonic() * 1000 > 3_600_000, "a live call's keys live the call TTL"
    await registry.end_call(sid, "caller hung up")
    now = time.monotonic() * 1000
    for key in (keys.meta(sid), keys.gen(sid), keys.started(sid)):
        assert 1000 < bus.expiry[key] - now <= 1500, key
    assert (await bus.hgetall(keys.meta(sid)))["status"] == b"completed"


def test_gw_retention_setting_reaches_the_registry(tmp_path: Path) -> None:
    default = load_settings({}, env_file=None)
    assert default.call_retention_ms == keys.ENDED_CALL_TTL_MS == 600_000
    settings = load_settings({"CALL_RETENTION_MS": "5000"}, env_file=None)
    app = create_app(settings, bus=MemoryBus(), records=SqliteRecordStore(tmp_path / "records.sqlite3"))
    assert app.state.registry.retention_ms == 5000


@pytest.mark.parametrize("value", ["500", "7200001", "ten"])
def test_gw_retention_setting_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="CALL_RETENTION_MS"):
        load_settings({"CALL_RETENTION_MS": value}, env_file=None)
