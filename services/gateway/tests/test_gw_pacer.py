"""Outbound pacer on a virtual clock (exact timing) and once on the real loop clock (drift)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from voxcart.gateway.twilio.connection import MediaConnection
from voxcart.gateway.twilio.pacer import LoopClock, Pacer, mark_name, parse_mark_name

SID = "MZ" + "a" * 32


class FakeClock:
    """Virtual time: sleepers wake in deadline order as the test advances the clock."""

    def __init__(self) -> None:
        self.t = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self.t:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((deadline, fut))
        await fut

    async def advance(self, dt: float) -> None:
        end = self.t + dt
        while True:
            await settle()
            due = [d for d, _ in self._sleepers if d <= end]
            if not due:
                break
            self.t = max(self.t, min(due))
            for item in [s for s in self._sleepers if s[0] <= self.t]:
                self._sleepers.remove(item)
                item[1].set_result(None)
        self.t = end
        await settle()


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


class Wire:
    """Fake websocket: records (virtual time, message) for every frame the pacer sends."""

    def __init__(self, clock: FakeClock | LoopClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, dict[str, Any]]] = []
        self.fail = False

    async def send(self, text: str) -> None:
        if self.fail:
            raise ConnectionError("socket closed")
        self.sent.append((self.clock.now(), json.loads(text)))

    def events(self) -> list[str]:
        return [m["event"] if m["event"] != "mark" else m["mark"]["name"] for _, m in self.sent]

    def media(self) -> list[tuple[float, bytes]]:
        return [(t, base64.b64decode(m["media"]["payload"])) for t, m in self.sent if m["event"] == "media"]


def started_conn() -> MediaConnection:
    conn = MediaConnection()
    conn.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    conn.receive(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": SID,
                "start": {
                    "streamSid": SID,
                    "accountSid": "AC1",
                    "callSid": "CA1",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
    )
    return conn


def audio(ms: int, byte: int = 0x10) -> bytes:
    return bytes([byte]) * (8 * ms)


def test_gw_mark_names_round_trip() -> None:
    assert parse_mark_name(mark_name(12, 3)) == (12, 3)
    with pytest.raises(ValueError, match="not a voxcart mark name"):
        parse_mark_name("turn7-seg3")


async def test_gw_paces_at_real_time_with_bounded_lead() -> None:
    clock = FakeClock()
    wire = Wire(clock)
    firsts: list[tuple[int, float]] = []
    pacer = Pacer(
        started_conn(),
        wire.send,
        clock=clock,
        frame_ms=20,
        wall_ms=lambda: clock.t * 1000,
        on_first_frame=lambda turn, ms: firsts.append((turn, ms)),
    )
    t0 = clock.t
    async with pacer:
        pacer.push(1, 0, audio(500, 0x11))
        pacer.push(1, 1, audio(250, 0x22))
        pacer.push(1, 1, audio(250, 0x22), last_in_turn=True)
        await settle()
        assert len(wire.media()) == 6  # 120 ms lead = six 20 ms frames at once, never the whole reply
        await clock.advance(2.0)
    frames = wire.media()
    assert [len(p) for _, p in frames] == [160] * 50
    assert b"".join(p for _, p in frames) == audio(500, 0x11) + audio(500, 0x22)
    # frame k goes out at max(0, k*20ms - 100ms): real time, with no drift
    for k, (t, _) in enumerate(frames):
        assert t - t0 == pytest.approx(max(0.0, k * 0.02 - 0.1), abs=1e-9)
        played_until = t0 + (k + 1) * 0.02
        assert played_until - t <= 0.12 + 1e-9
    ev = wire.events()
    assert ev.index("t1-s0") == 25 and ev[-1] == "t1-s1" and ev.count("media") == 50
    assert firsts == [(1, t0 * 1000)] and pacer.first_frame_ms == {1: t0 * 1000}
    assert pacer.underruns == 0 and pacer.frames_sent == 50 and pacer.bytes_sent == 8000


async def test_gw_partial_frames_and_mark_after_sentence_audio() -> None:
    clock = FakeClock()
    wire = Wire(clock)
    async with Pacer(started_conn(), wire.send, clock=clock, frame_ms=40, max_lead_ms=200) as pacer:
        pacer.push(3, 0, audio(50))  # 400 bytes: 320 + 80 (still waiting: the sentence may go on)
        await clock.advance(0.2)
        assert [len(p) for _, p in wire.media()] == [320, 80] and "t3-s0" not in wire.events()
        pacer.push(3, 1, audio(10))  # a later sentence closes sentence 0
        await clock.advance(0.2)
    assert wire.events() == ["media", "media", "t3-s0", "media"]
    assert pacer.underruns == 1  # sentence 1 arrived after Twilio had played everything
    assert pacer.underrun_seconds == pytest.approx(0.2 - 0.05)


async def test_gw_clear_drops_queued_and_late_chunks_of_cleared_turns() -> None:
    clock = FakeClock()
    conn = started_conn()
    wire = Wire(clock)
    async with Pacer(conn, wire.send, clock=clock, frame_ms=20) as pacer:
        pacer.push(1, 0, audio(200), last_in_sentence=True)
        pacer.push(1, 1, audio(1000))
        waiter = asyncio.ensure_future(pacer.wait_played(1))
        await clock.advance(0.3)
        assert "t1-s0" in wire.events()
        assert pacer.on_mark_echo("t1-s0") is True  # sentence 0 was heard
        sent_before = len(wire.media())
        dropped = await pacer.clear(1)
        assert dropped == 8000 - (sent_before * 160 - 1600)
        assert wire.events()[-1] == "clear" and pacer.queued_bytes == 0
        assert await waiter is False
        assert pacer.push(1, 1, audio(100)) is False  # stale chunk of the cleared turn
        assert pacer.push(1, 2, audio(100), last_in_turn=True) is False
        assert pacer.push(2, 0, audio(40), last_in_turn=True) is True
        await clock.advance(0.2)
    after = wire.events()[wire.events().index("clear") + 1 :]
    assert after == ["media", "media", "t2-s0"]
    assert pacer.stale_chunks == 2 and pacer.first_frame_ms.keys() == {1, 2}
    assert await pacer.wait_played(1) is False


async def test_gw_wait_played_resolves_on_last_sentence_mark() -> None:
    clock = FakeClock()
    wire = Wire(clock)
    async with Pacer(started_conn(), wire.send, clock=clock) as pacer:
        pacer.push(4, 0, audio(40), last_in_sentence=True)
        pacer.push(4, 1, audio(40), last_in_turn=True)
        waiter = asyncio.ensure_future(pacer.wait_played(4))
        await clock.advance(0.1)
        assert pacer.on_mark_echo("t4-s0") is True
        await settle()
        assert not waiter.done()
        assert pacer.on_mark_echo("t4-s1") is True
        assert await waiter is True
        assert await pacer.wait_played(4) is True
        # a mark of a later turn echoed after a clear: that turn did not play
        pacer.push(5, 0, audio(40), last_in_turn=True)
        await clock.advance(0.05)
        waiter5 = asyncio.ensure_future(pacer.wait_played(5))
        await pacer.clear(4)
        assert not waiter5.done()
        assert pacer.on_mark_echo("t5-s0") is False
        assert await waiter5 is False


async def test_gw_send_failure_stops_pacer_and_wakes_waiters() -> None:
    clock = FakeClock()
    wire = Wire(clock)
    async with Pacer(started_conn(), wire.send, clock=clock) as pacer:
        waiter = asyncio.ensure_future(pacer.wait_played(1))
        wire.fail = True
        pacer.push(1, 0, audio(100), last_in_turn=True)
        await settle()
        assert await waiter is False
        assert isinstance(pacer.error, ConnectionError)
        with pytest.raises(RuntimeError, match="closed"):
            pacer.push(1, 1, audio(20))


def test_gw_pacer_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="frame_ms"):
        Pacer(started_conn(), Wire(FakeClock()).send, frame_ms=40, max_lead_ms=20)


async def test_gw_real_clock_no_drift() -> None:
    """1 s of audio on the real loop clock: the last frame leaves at ~0.88 s; sleep overshoot does not add up."""
    clock = LoopClock()
    wire = Wire(clock)
    async with Pacer(started_conn(), wire.send, frame_ms=20) as pacer:
        t0 = clock.now()
        pacer.push(1, 0, audio(1000), last_in_turn=True)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if "t1-s0" in wire.events():
                break
    frames = wire.media()
    assert len(frames) == 50
    last = frames[-1][0] - t0
    assert 0.88 - 0.001 <= last < 0.88 + 0.05, last
    lateness = [t - t0 - max(0.0, k * 0.02 - 0.1) for k, (t, _) in enumerate(frames)]
    assert min(lateness) >= -1e-3 and max(lateness) < 0.05


async def test_gw_empty_last_chunk_still_marks_the_turn() -> None:
    """A turn that ends with an empty chunk (e.g. the goodbye's end marker) still gets its mark."""
    clock = FakeClock()
    wire = Wire(clock)
    async with Pacer(started_conn(), wire.send, clock=clock) as pacer:
        pacer.push(6, 0, audio(80))
        pacer.push(6, 0, b"", last_in_turn=True)
        pacer.push(7, 0, b"", last_in_turn=True)
        await clock.advance(0.1)
        assert wire.events() == ["media", "media", "t6-s0", "t7-s0"]
        assert [len(p) for _, p in wire.media()] == [320, 320]  # default 40 ms frames
        assert pacer.on_mark_echo("t7-s0") is True
        assert await pacer.wait_played(7) is True


async def test_gw_pause_holds_the_turn_and_resume_sends_on_from_the_same_byte() -> None:
    clock = FakeClock()
    wire = Wire(clock)
    async with Pacer(started_conn(), wire.send, clock=clock, frame_ms=20) as pacer:
        body = bytes(range(256)) * 8  # 2048 bytes = 256 ms, every frame different
        pacer.push(1, 0, body, last_in_turn=True)
        await clock.advance(0.1)
        pacer.pause(1)
        sent = len(wire.media())
        await clock.advance(1.0)
        assert len(wire.media()) == sent and pacer.paused  # nothing more of turn 1 while paused
        assert pacer.queued_bytes == len(body) - sent * 160
        pacer.resume(1)
        await clock.advance(1.0)
    assert b"".join(p for _, p in wire.media()) == body  # not a byte lost or repeated
    assert wire.events()[-1] == "t1-s0" and "clear" not in wire.events()
    assert pacer.underruns == 0 and pacer.pauses == 1 and not pacer.paused


async def test_gw_pause_never_holds_a_later_turn_and_clear_ends_it() -> None:
    clock = FakeClock()
    wire = Wire(clock)
    async with Pacer(started_conn(), wire.send, clock=clock, frame_ms=20) as pacer:
        pacer.push(1, 0, audio(400), last_in_turn=True)
        await clock.advance(0.1)
        pacer.pause(1)
        await clock.advance(0.5)
        held = len(wire.media())
        await pacer.clear(1)
        assert not pacer.paused and pacer.queued_bytes == 0
        pacer.push(2, 0, audio(100), last_in_turn=True)
        await clock.advance(0.5)
        pacer.pause(1)  # a stale pause of a cleared turn holds nothing
        assert not pacer.paused
    after = wire.events()[wire.events().index("clear") + 1 :]
    assert after == ["media"] * 5 + ["t2-s0"] and len(wire.media()) == held + 5
