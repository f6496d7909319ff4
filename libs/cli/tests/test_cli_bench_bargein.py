"""``voxcart bench bargein``: the measurements on hand-made timelines, the simulator's Twilio ``clear`` against a
small fake gateway, and one quick run against the real stack (e2e)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from voxcart.cli.bench.bargein import BargeInOptions, render, run_bargein_bench
from voxcart.cli.bench.bargein_measure import (
    ItemOutcome,
    histogram_delta,
    histogram_quantile,
    measure_call,
    media_turns,
    parse_histogram,
    parse_mark,
    stale_after_clear,
    summarize,
)
from voxcart.cli.bench.bargein_script import plan_call
from voxcart.cli.bench.bargein_sounds import NOISES, noise_burst
from voxcart.cli.simulator import (
    CallResult,
    Overlap,
    Pause,
    SimulatorConfig,
    TurnResult,
    WireEvent,
    simulate_call,
)
from voxcart.common.audio import FRAME_BYTES, pcm16_to_ulaw, ulaw_rms
from voxcart.common.settings import load_settings
from voxcart.gateway.twilio.connection import MediaConnection
from voxcart.gateway.twilio.media import Mark, Media, Start
from voxcart.gateway.twilio.twiml import VoiceResponse

TOKEN = "test-token"
PUBLIC = "https://gw.example.test"


def media(t: float, n: int = 320, voiced: bool = True) -> WireEvent:
    return WireEvent(t, "media", nbytes=n, voiced=voiced)


def mark(t: float, name: str) -> WireEvent:
    return WireEvent(t, "mark", name=name)


def clear(t: float) -> WireEvent:
    return WireEvent(t, "clear")


def call_with(wire: list[WireEvent], *items: tuple[str, float, float, bool]) -> CallResult:
    """A call whose turns are the greeting then ``(kind, onset, end, overlapped)`` items, with ``wire``."""
    turns = [TurnResult(0, "greeting")]
    events = list(wire)
    for kind, onset, end, overlapped in items:
        turn = TurnResult(len(turns), kind, voice_start_s=onset, caller_end_s=end, overlapped=overlapped)  # type: ignore[arg-type]
        turns.append(turn)
        events.append(WireEvent(onset, "voice_start", turn=turn.index))
    events.sort(key=lambda e: e.t)
    return CallResult(call_sid="CAtest", turns=turns, wire=events)


def reply(t0: float, turn: int, sentences: int = 1, per_s: float = 1.0) -> list[WireEvent]:
    """A turn's sentences as the pacer sends them: 40 ms frames, each sentence followed by its mark."""
    out: list[WireEvent] = []
    t = t0
    for seq in range(sentences):
        for _ in range(int(per_s / 0.04)):
            out.append(media(t))
            t += 0.04
        out.append(mark(t, f"t{turn}-s{seq}"))
    return out


# -- the measurements -----------------------------------------------------------------------------------------


def test_cli_bench_bargein_marks_attribute_media_to_turns_until_a_clear() -> None:
    assert parse_mark("t12-s3") == (12, 3) and parse_mark("greeting") is None and parse_mark("t1-s2x") is None
    wire = [media(0.0), mark(0.1, "t0-s0"), media(0.2), clear(0.3), media(0.4), mark(0.5, "t1-s0"), media(0.6)]
    assert media_turns(wire) == [0, None, None, None, 1, None, None]


def test_cli_bench_bargein_stale_frame_after_clear_is_counted() -> None:
    # turn 0 plays, clear; then a leaked frame of turn 0 (its mark follows), then turn 1 (new)
    wire = [*reply(0.0, 0, sentences=1), media(1.1), clear(1.2), media(1.25), mark(1.3, "t0-s1"), *reply(2.0, 1)]
    index = next(i for i, e in enumerate(wire) if e.kind == "clear")
    assert stale_after_clear(wire, index) == (320, 0)
    # the same without the leak: nothing stale, and turn 1's audio is not blamed on the clear
    clean = [e for e in wire if e.t not in (1.25, 1.3)]
    assert stale_after_clear(clean, next(i for i, e in enumerate(clean) if e.kind == "clear")) == (0, 0)
    with pytest.raises(ValueError, match="not a clear"):
        stale_after_clear(wire, 0)


def test_cli_bench_bargein_sentence_cut_by_a_later_clear_is_not_stale() -> None:
    # clear 1; turn 1 plays a marked sentence, then its second sentence is cut by clear 2 (never marked)
    wire = [*reply(0.0, 0), clear(1.5), *reply(2.0, 1), media(3.1), media(3.2), clear(3.3), *reply(4.0, 2)]
    first = next(i for i, e in enumerate(wire) if e.kind == "clear")
    assert stale_after_clear(wire, first) == (0, 0)
    # media after a clear followed by no mark and no later turn's mark before it: unattributed, not hidden
    lone = [*reply(0.0, 0), clear(1.5), media(1.6), media(1.7)]
    assert stale_after_clear(lone, 1 + len(reply(0.0, 0)) - 1) == (0, 640)


def test_cli_bench_bargein_reaction_is_from_the_onset_and_ignores_an_earlier_clear() -> None:
    # a clear at 0.5 s (before the interruption's onset at 1.0 s) is not its reaction; the one at 1.25 s is
    wire = [*reply(0.0, 0, sentences=1, per_s=0.4), clear(0.5), *reply(0.6, 1, sentences=3), clear(1.25)]
    wire += reply(2.5, 2)
    result = call_with(wire, ("interruption", 1.0, 1.8, True))
    (item,) = measure_call(result)
    assert item.clear_s == 1.25 and item.reaction_s == pytest.approx(0.25)
    assert not item.missed and not item.false_interruption and item.stale_bytes == 0


def test_cli_bench_bargein_missed_interruption() -> None:
    # the interrupted turn's audio goes on for 3 s after the onset without a clear
    wire = reply(0.0, 0, sentences=4)
    (item,) = measure_call(call_with(wire, ("interruption", 0.5, 1.5, True)))
    assert item.missed and item.reaction_s is None and item.clear_s is None
    # the reply ends 0.8 s after the onset by itself: nothing kept coming, so not missed
    short = reply(0.0, 0, sentences=1, per_s=1.3)
    (item,) = measure_call(call_with(short, ("interruption", 0.5, 1.5, True)))
    assert not item.missed
    # a clear 1.5 s after the onset cuts the second sentence: audio kept coming for > 1 s first, so missed, and
    # the late reaction is kept
    late = [*reply(0.0, 0, sentences=2)[:-1], clear(1.99), *reply(3.0, 1)]
    (item,) = measure_call(call_with(late, ("interruption", 0.5, 1.5, True)))
    assert item.missed and item.reaction_s == pytest.approx(1.49)
    # the same when the sentence playing at the onset is the one cut (no mark at all before the clear)
    cut = [*[media(0.04 * i) for i in range(50)], clear(1.99), *reply(3.0, 1)]
    (item,) = measure_call(call_with(cut, ("interruption", 0.5, 1.5, True)))
    assert item.missed
    # ... but a clear 0.4 s after the onset: not missed
    quick = [*[media(0.04 * i) for i in range(22)], clear(0.9), *reply(3.0, 1)]
    (item,) = measure_call(call_with(quick, ("interruption", 0.5, 1.5, True)))
    assert not item.missed and item.reaction_s == pytest.approx(0.4)


def test_cli_bench_bargein_false_interruptions_clear_or_stop() -> None:
    cleared = [*reply(0.0, 0, sentences=2), clear(2.3), *reply(3.0, 1)]
    (item,) = measure_call(call_with(cleared, ("backchannel", 1.5, 1.9, True)))
    assert item.false_interruption and not item.stopped and item.reaction_s is None
    # agent audio stops for 0.8 s after a cough, then the same turn goes on: a stop
    stop = [*[media(0.04 * i) for i in range(40)], *[media(2.4 + 0.04 * i) for i in range(20)], mark(3.3, "t0-s0")]
    (item,) = measure_call(call_with(stop, ("noise", 1.4, 1.6, True)))
    assert item.stopped and item.false_interruption
    # the agent talks on through a noise burst: not a false interruption
    (item,) = measure_call(call_with(reply(0.0, 0, sentences=4), ("noise", 1.0, 1.2, True)))
    assert not item.false_interruption and not item.stopped
    # a clear long after the backchannel ended (past the blame window) is not blamed on it
    much_later = [*reply(0.0, 0, sentences=6), clear(5.0)]
    (item,) = measure_call(call_with(much_later, ("backchannel", 1.0, 1.3, True)))
    assert not item.false_interruption


def test_cli_bench_bargein_summary_rates_and_percentiles() -> None:
    def item(kind: str, reaction: float | None = None, **flags: bool) -> ItemOutcome:
        overlapped = flags.pop("overlapped", True)
        base = {"missed": False, "stopped": False, "false_interruption": False, **flags}
        return ItemOutcome("CA", 1, kind, "", 0.0, 1.0, overlapped, reaction, reaction, 0, 0, **base)

    reactions = [0.1 * (i + 1) for i in range(20)]  # 100..2000 ms
    items = [item("interruption", r) for r in reactions] + [item("interruption", None, missed=True)]
    items += [item("backchannel", false_interruption=True, stopped=True)] + [item("backchannel") for _ in range(3)]
    items += [item("noise") for _ in range(5)] + [item("noise", overlapped=False)]
    stale_call = call_with([*reply(0.0, 0), clear(1.1), media(1.2, n=160), mark(1.3, "t0-s1")])
    stale_call.turns += [TurnResult(1, "pause", clears=1, agent_start_s=2.0), TurnResult(2, "pause")]
    s = summarize(items, [stale_call])
    assert (s.pauses, s.pauses_agent_spoke, s.pause_clears) == (2, 1, 1)
    assert s.interruptions == 21 and s.missed == 1 and s.missed_rate == pytest.approx(1 / 21)
    assert s.reaction_p50_ms == pytest.approx(1050.0) and s.reaction_max_ms == pytest.approx(2000.0)
    assert s.reaction_p95_ms == pytest.approx(float(np.percentile([r * 1000 for r in reactions], 95)))
    assert (s.backchannels, s.backchannel_false, s.backchannel_false_rate, s.stops) == (4, 1, 0.25, {"backchannel": 1})
    assert (s.noises, s.noise_false_rate) == (5, 0.0) and s.not_overlapping == {"noise": 1}
    assert s.clears == 1 and s.stale_bytes_total == 160 and s.stale_bytes_per_interruption == pytest.approx(160 / 21)
    empty = summarize([], [])
    assert empty.reaction_p95_ms is None and empty.missed_rate is None and empty.noise_false_rate is None


def test_cli_bench_bargein_gateway_histogram_from_metrics_text() -> None:
    def exposition(counts: list[int]) -> str:
        les = ["0.1", "0.25", "0.5", "+Inf"]
        rows = [
            f'voxcart_barge_in_reaction_seconds_bucket{{le="{le}"}} {c}.0' for le, c in zip(les, counts, strict=True)
        ]
        return "\n".join(["# TYPE voxcart_barge_in_reaction_seconds histogram", *rows, 'other_bucket{le="1"} 9.0'])

    before = parse_histogram(exposition([1, 2, 2, 2]), "voxcart_barge_in_reaction_seconds")
    after = parse_histogram(exposition([1, 12, 21, 22]), "voxcart_barge_in_reaction_seconds")
    assert before == {0.1: 1.0, 0.25: 2.0, 0.5: 2.0, math.inf: 2.0}
    delta = histogram_delta(before, after)
    assert delta == {0.1: 0.0, 0.25: 10.0, 0.5: 19.0, math.inf: 20.0}
    assert histogram_quantile(delta, 0.5) == 0.25 and histogram_quantile(delta, 0.95) == 0.5
    assert histogram_quantile({}, 0.5) is None


# -- the script and its sounds --------------------------------------------------------------------------------


def test_cli_bench_bargein_sounds_and_plan() -> None:
    for i, kind in enumerate(NOISES):
        burst = noise_burst(kind, seed=i)
        assert len(burst) % FRAME_BYTES == 0 and burst == noise_burst(kind, seed=i)
        frames = [burst[j : j + FRAME_BYTES] for j in range(0, len(burst), FRAME_BYTES)]
        assert sum(ulaw_rms(f) > 200 for f in frames) >= 3, kind
    assert 0.1 <= len(noise_burst("cough", 3)) / 8000 <= 0.32 and len(noise_burst("tones", 3)) == 8000
    with pytest.raises(ValueError, match="kind must be one of"):
        noise_burst("siren", 0)  # type: ignore[arg-type]

    spoken: list[str] = []

    def voice(text: str) -> bytes:
        spoken.append(text)
        return b"\x00" * FRAME_BYTES * 10

    plans = [plan_call(i, voice) for i in range(13)]
    kinds = [p.kind for plan in plans for p in plan.planned]
    assert (kinds.count("interruption"), kinds.count("backchannel"), kinds.count("noise")) == (52, 26, 26)
    positions = [p.position for plan in plans for p in plan.planned if p.kind == "interruption"]
    assert min(positions.count(x) for x in ("early", "mid", "late")) >= 13  # the greeting is never interrupted late
    for plan in plans:  # overlaps follow a line or the greeting, in planned order
        overlaps = [x for x in plan.items if isinstance(x, Overlap)]
        assert [(o.kind, o.at_ms) for o in overlaps] == [(p.kind, p.at_ms) for p in plan.planned]
        assert sum(isinstance(x, Pause) for x in plan.items) == 1
        kinds_in_order = ["overlap" if isinstance(x, Overlap) else "other" for x in plan.items]
        assert "overlap" not in {b for a, b in zip(kinds_in_order, kinds_in_order[1:], strict=False) if a == "overlap"}
    quick = plan_call(0, voice, quick=True)
    assert [p.kind for p in quick.planned] == ["interruption", "backchannel", "noise", "interruption"]
    assert "uh huh" in spoken or "mm hmm" in spoken
    with pytest.raises(ValueError, match="index must be >= 0"):
        plan_call(-1, voice)
    with pytest.raises(ValueError, match="Overlap kind"):
        Overlap(b"\x00", "cough", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Pause seconds"):
        Pause(0)
    with pytest.raises(ValueError, match="--calls must be"):
        BargeInOptions(calls=0)


# -- the simulator's Twilio emulation against a fake gateway ----------------------------------------------------


def tone(seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return pcm16_to_ulaw((8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16))


@dataclass
class ClearingGateway:
    """Greets with 3 s of tone and a mark; on the caller's 3rd voiced frame sends ``clear``, then (as a leak) 0.1 s
    of the cleared turn and its mark, then a 0.3 s reply as turn 1."""

    echoes: list[tuple[str, bool]] = field(default_factory=list)
    clear_sent_at: float | None = None

    def http(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/twilio/voice":
            twiml = VoiceResponse().connect_stream("wss://gw.example.test/twilio/media").to_xml()
            return httpx.Response(200, text=twiml)
        return httpx.Response(204)

    async def handler(self, ws: ServerConnection) -> None:
        conn = MediaConnection()
        voiced = 0
        async for raw in ws:
            msg = conn.receive(raw)
            if isinstance(msg, Start):
                audio = tone(3.0)
                for i in range(0, len(audio), 800):
                    await ws.send(conn.media_frame(audio[i : i + 800]))
                await ws.send(conn.mark_frame("t0-s0"))
            elif isinstance(msg, Media) and ulaw_rms(msg.media.payload) > 200:
                voiced += 1
                if voiced == 3:
                    await ws.send(conn.clear_frame())
                    self.clear_sent_at = asyncio.get_running_loop().time()
                    await ws.send(conn.media_frame(tone(0.1)))
                    await ws.send(conn.mark_frame("t0-s1"))
                    await ws.send(conn.media_frame(tone(0.3)))
                    await ws.send(conn.mark_frame("t1-s0"))
            elif isinstance(msg, Mark):
                self.echoes.append((msg.mark.name, conn.on_mark_echo(msg.mark.name)))


@pytest.fixture
async def clearing_gateway() -> AsyncIterator[tuple[ClearingGateway, Server]]:
    gw = ClearingGateway()
    async with serve(gw.handler, "127.0.0.1", 0, compression=None) as server:
        yield gw, server


async def test_cli_bench_bargein_simulator_emulates_twilio_clear(
    clearing_gateway: tuple[ClearingGateway, Server],
) -> None:
    gw, server = clearing_gateway
    port = next(iter(server.sockets)).getsockname()[1]
    cfg = SimulatorConfig(
        gateway_url=f"http://127.0.0.1:{port}",
        public_url=PUBLIC,
        auth_token=TOKEN,
        settle_s=0.4,
        fetch_record=False,
        status_path=None,
    )
    caller = tone(0.6, 300)
    result = await simulate_call(
        cfg, [Overlap(caller, "interruption", 300, "stop")], transport=httpx.MockTransport(gw.http)
    )
    assert not result.errors and [t.kind for t in result.turns] == ["greeting", "interruption"]
    item = result.turns[1]
    assert item.overlapped and item.voice_start_s is not None and item.heard_start_s is not None
    assert item.voice_start_s - (result.turns[0].heard_start_s or 0) == pytest.approx(0.3, abs=0.08)
    # Twilio's side of clear: the queued greeting is dropped unplayed, the outstanding mark echoed at once
    assert result.marks_cleared == 1 and ("t0-s0", False) in gw.echoes
    assert ("t0-s1", True) in gw.echoes and ("t1-s0", True) in gw.echoes
    heard_before_clear = 0.3 + 0.04  # the overlap starts 0.3 s in; the 3rd voiced frame goes 40 ms later
    assert 24000 - result.cleared_bytes == pytest.approx(heard_before_clear * 8000, abs=800)
    voiced_heard = sum(
        ulaw_rms(bytes(result.agent_track[i : i + 160])) > 200 for i in range(0, len(result.agent_track), 160)
    )
    assert voiced_heard * 0.02 == pytest.approx(heard_before_clear + 0.1 + 0.3, abs=0.1)
    # the timeline and what the bench makes of it
    kinds = [e.kind for e in result.wire]
    assert kinds.index("voice_start") < kinds.index("clear") < kinds.index("echo")
    (outcome,) = measure_call(result)
    assert outcome.reaction_s is not None and 0.03 <= outcome.reaction_s <= 0.2, outcome
    assert outcome.stale_bytes == 800 and not outcome.missed and outcome.unattributed_bytes == 0


# -- the real stack -----------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_cli_bench_bargein_quick_run_against_the_real_stack(tmp_path: Path) -> None:
    out = tmp_path / "bargein.json"
    options = BargeInOptions(quick=True, json_path=str(out), log_path=str(tmp_path / "services.log"))
    report = run_bargein_bench(options, load_settings())
    assert not report["failed_calls"] and report["calls"] == 1
    s = report["summary"]
    assert s["interruptions"] + s["not_overlapping"].get("interruption", 0) == 2
    assert s["backchannels"] + s["not_overlapping"].get("backchannel", 0) == 1
    assert s["noises"] + s["not_overlapping"].get("noise", 0) == 1
    assert s["interruptions"] >= 1, "the greeting's early interruption overlaps the greeting"
    for row in report["items"]:  # every overlapped interruption was either reacted to or missed
        if row["kind"] == "interruption" and row["overlapped"]:
            assert row["reaction_s"] is not None or row["missed"], row
            assert row["reaction_s"] is None or 0 < row["reaction_s"] < 10
    (call,) = report["per_call"]
    assert not call["errors"] and call["marks_played"] > 0
    assert json.loads(out.read_text())["summary"] == s
    assert "reaction p50 / p95 / max" in render(report)
