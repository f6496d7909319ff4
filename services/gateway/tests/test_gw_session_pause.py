"""CallSession control of the agent's audio: ``pause`` holds it, ``resume`` sends it on, ``clear`` drops it, and a
pause nobody ends resumes by itself."""

from __future__ import annotations

import asyncio
import json

import pytest

from voxcart.common import events as ev
from voxcart.common.bus import MemoryBus
from voxcart.common.bus.writer import Writer
from voxcart.gateway import session as session_mod
from voxcart.gateway.session import CallSession
from voxcart.gateway.twilio.connection import MediaConnection

CA = "CA" + "0123456789abcdef" * 2


def _session(sent: list[dict[str, object]]) -> CallSession:
    conn = MediaConnection()
    conn.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    stream = "MZ" + "b" * 32
    start = {
        "streamSid": stream,
        "accountSid": "AC1",
        "callSid": CA,
        "tracks": ["inbound"],
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    conn.receive(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": stream, "start": start}))

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    async def nothing(*_: object) -> None:
        pass

    session = CallSession(conn, 1, Writer(MemoryBus()), send, nothing, None, lambda *_: None, nothing)
    session.start({})
    return session


def _media(sent: list[dict[str, object]]) -> int:
    return sum(1 for m in sent if m["event"] == "media")


def _chunk(turn: int, ms: int) -> ev.AudioChunk:
    return ev.AudioChunk(call_sid=CA, turn_no=turn, seq=0, k=0, payload=b"\x11" * (8 * ms), last_in_turn=True)


async def test_gw_session_pause_then_resume_plays_the_whole_turn() -> None:
    sent: list[dict[str, object]] = []
    session = _session(sent)
    try:
        await session.deliver(_chunk(1, 1000))
        await asyncio.sleep(0.2)
        await session.deliver(ev.Pause(call_sid=CA, turn_no=1, voiced_arrived=ev.now_ms() - 100))
        held = _media(sent)
        await asyncio.sleep(0.3)
        assert _media(sent) == held  # nothing more while paused
        await session.deliver(ev.Resume(call_sid=CA, turn_no=1))
        async with asyncio.timeout(3):
            while session.pacer.queued_bytes:
                await asyncio.sleep(0.05)
        assert session.pacer.bytes_sent == 8000 and all(m["event"] != "clear" for m in sent)
    finally:
        await session.aclose()


async def test_gw_session_clear_after_pause_drops_the_turn() -> None:
    sent: list[dict[str, object]] = []
    session = _session(sent)
    try:
        await session.deliver(_chunk(1, 1000))
        await asyncio.sleep(0.1)
        await session.deliver(ev.Pause(call_sid=CA, turn_no=1))
        await session.deliver(ev.Clear(call_sid=CA, turn_no=1, voiced_arrived=ev.now_ms() - 250))
        before = len(sent)
        await session.deliver(_chunk(1, 200))  # a late chunk of the cleared turn
        await asyncio.sleep(0.2)
        assert sent[before - 1]["event"] == "clear" and len(sent) == before  # no stale audio after the clear
        assert session.pacer.stale_chunks == 1 and not session.pacer.paused
    finally:
        await session.aclose()


async def test_gw_session_a_pause_nobody_ends_resumes_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_mod, "PAUSE_MAX_S", 0.2)
    sent: list[dict[str, object]] = []
    session = _session(sent)
    try:
        await session.deliver(_chunk(1, 600))
        await asyncio.sleep(0.1)
        await session.deliver(ev.Pause(call_sid=CA, turn_no=1))
        assert session.pacer.paused
        async with asyncio.timeout(3):
            while session.pacer.queued_bytes:
                await asyncio.sleep(0.05)
        assert not session.pacer.paused and session.pacer.bytes_sent == 4800
    finally:
        await session.aclose()
