"""The simulator on hold, as Twilio would be: against the real gateway app (in process, on a MemoryBus, lines full)
it notes the busy message, presses 1 when told to (a call-back request the gateway stores), or follows the hold
``<Redirect>``s until it hangs up, which the status callback reports (the call leaves the line, recorded
``abandoned``); ``voxcart call`` prints what the caller heard."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from voxcart.cli.calling import print_call
from voxcart.cli.simulator import SimulatorConfig, simulate_call
from voxcart.common import events as ev
from voxcart.common.bus import MemoryBus, keys
from voxcart.common.capacity import CapacityReport, publish_report
from voxcart.common.settings import load_settings
from voxcart.gateway.app import create_app
from voxcart.gateway.records_sqlite import SqliteRecordStore

TOKEN = "sim-hold-token"
GATEWAY = "http://gw.test"


@dataclass
class Running:
    app: FastAPI
    bus: MemoryBus
    transport: httpx.ASGITransport

    def config(self, **extra: object) -> SimulatorConfig:
        return SimulatorConfig(gateway_url=GATEWAY, auth_token=TOKEN, from_number="+15550107788", **extra)  # type: ignore[arg-type]


@pytest.fixture
async def full_gateway() -> AsyncIterator[Running]:
    bus = MemoryBus()
    env = {"TWILIO_AUTH_TOKEN": TOKEN, "ADMISSION_HOLD_S": "1"}
    app = create_app(load_settings(env, env_file=None), bus=bus, records=SqliteRecordStore(":memory:"))
    async with app.router.lifespan_context(app):
        for svc in ("stt", "brain", "tts"):
            await publish_report(bus, svc, f"{svc}-0", CapacityReport(1, 1, False, int(ev.now_ms())))
        await bus.zadd(keys.ACTIVE_CALLS, {"CAinprogress": ev.now_ms()})
        yield Running(app, bus, httpx.ASGITransport(app=app))


async def test_cli_simulator_hold_presses_1_for_a_call_back(full_gateway: Running) -> None:
    result = await simulate_call(full_gateway.config(hold_keys="1"), [], transport=full_gateway.transport)
    assert result.ended_by == "no_stream" and result.stream_sids == [] and result.holds == 0
    assert "lines are busy" in result.said[0] and "press 1" in result.said[0]
    assert "call you back at the number ending in 7 7 8 8" in result.said[1]
    store = full_gateway.app.state.recorder.store
    assert store.get(result.call_sid).status == "callback-requested"
    out = io.StringIO()
    print_call(result, out)
    assert "twilio says: Thank you. We'll call you back" in out.getvalue()


async def test_cli_simulator_hold_follows_redirects_until_it_hangs_up(full_gateway: Running) -> None:
    result = await simulate_call(full_gateway.config(max_hold_s=2.5), [], transport=full_gateway.transport)
    assert result.holds >= 2 and 2.5 <= result.held_s < 6
    assert result.errors == ["hung up after 2.5 s on hold"]
    assert result.stream_sids == [] and result.ended_by == "no_stream"
    assert len([t for t in result.twiml if "<Redirect" in t]) == result.holds + 1
    # its status callback took it off the line: nobody waits, and the call is recorded abandoned
    assert await full_gateway.app.state.admission.queued() == 0
    record = full_gateway.app.state.recorder.store.get(result.call_sid)
    assert record is not None and record.outcome == "abandoned"
    out = io.StringIO()
    print_call(result, out)
    assert f"(on hold {result.held_s:.0f} s)" in out.getvalue()
