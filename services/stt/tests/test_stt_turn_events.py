"""What brain needs for barge-in decisions: a prompt ``speech.started``, ``speech.progress`` while the caller keeps
speaking, ``speech.ended`` for an onset without words, and no events at all for a door slam or a cough."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from voxcart.common import events as ev
from voxcart.common.audio import pcm16_to_ulaw, silence_ulaw
from voxcart.common.bus import Entry, MemoryBus, keys
from voxcart.common.bus.ownership import Ownership, OwnershipConfig
from voxcart.common.events import Expect
from voxcart.common.worker import CallContext
from voxcart.stt.provider import CallStt
from voxcart.stt.recognizer import CallRecognizer, RecognizerModel
from voxcart.stt.results import Discarded, Final, RecognizerEvent, SpeechProgress, SpeechStart
from voxcart.stt.turn_end import end_silence_ms
from voxcart.stt.worker import SttHandler

SID = "CAsttturns0001"
Entries = list[tuple[str, bytes, float]]


def _noise(kind: str, seed: int) -> bytes:
    """A door slam (a loud decaying broadband burst) or a cough (a noisy burst with a 180 Hz buzz), framed by
    silence like the caller fixtures."""
    rng = np.random.default_rng(seed)
    ms = 160 if kind == "door" else 300
    n = 8 * ms
    t = np.arange(n) / 8000
    if kind == "door":
        x = rng.normal(0, 12_000, n) * np.exp(-np.arange(n) / (n / 4))
    else:
        x = rng.normal(0, 8_000, n) * np.exp(-t / 0.06) * (1 + 0.5 * np.sin(2 * np.pi * 180 * t))
    burst = pcm16_to_ulaw(np.clip(x, -32_000, 32_000).astype(np.int16))
    return silence_ulaw(8 * 600) + burst + silence_ulaw(8 * 1000)


def test_stt_onset_is_prompt_and_progress_follows_the_voice(
    model: RecognizerModel,
    speech: Callable[[str], bytes],
    to_entries: Callable[..., Entries],
) -> None:
    recognizer = CallRecognizer(model, SID)
    seen: list[tuple[float, RecognizerEvent]] = []
    for entry_id, frame, arrived in to_entries(speech("no that's wrong")):
        seen += [(arrived, e) for e in recognizer.feed(entry_id, frame, arrived)]
    [(start_at, start)] = [(t, e) for t, e in seen if isinstance(e, SpeechStart)]
    assert isinstance(start, SpeechStart)
    assert start_at - start.first_voiced_arrived <= 120.0  # published 100-120 ms into the voice
    progress = [e for _, e in seen if isinstance(e, SpeechProgress)]
    assert [p.voiced_ms for p in progress][:3] == [200.0, 400.0, 600.0]
    assert all(p.first_voiced_arrived == start.first_voiced_arrived and 0.7 <= p.prob <= 1.0 for p in progress)
    assert progress[0].text.startswith("no")  # the recognizer's words so far, cheaply
    kinds = [type(e).__name__ for _, e in seen if type(e).__name__ != "Partial"]
    assert kinds[0] == "SpeechStart" and kinds[-1] == "Final"


def test_stt_a_door_or_a_cough_starts_nothing(model: RecognizerModel, to_entries: Callable[..., Entries]) -> None:
    for kind in ("door", "cough"):
        for seed in range(3):
            recognizer = CallRecognizer(model, SID)
            events = [e for i, f, t in to_entries(_noise(kind, seed)) for e in recognizer.feed(i, f, t)]
            assert events == [], (kind, seed)


class _ScriptedStt:
    """A provider that answers one onset without words (what a recognizer does with a scrap of noise)."""

    provider = "scripted"

    def __init__(self, script: dict[str, Sequence[RecognizerEvent]]) -> None:
        self.script = script

    async def feed(self, entry_id: str, ulaw: bytes, arrived: float) -> list[RecognizerEvent]:
        return list(self.script.get(entry_id, []))

    def listen(self, expect: Expect, keyterms: Sequence[str] = ()) -> None:
        pass

    async def end_utterance(self) -> list[RecognizerEvent]:
        return []

    def checkpoint(self) -> str | None:
        return None

    @property
    def resume(self) -> str:
        return ""

    def utterance_start_entry(self) -> str | None:
        return None

    async def aclose(self) -> None:
        pass


class _ScriptedProvider:
    name = "scripted"

    def __init__(self, stt: CallStt) -> None:
        self.stt = stt

    def open_call(self, call_sid: str, *, start_after: str = "0-0", resume: str = "") -> CallStt:
        return self.stt

    async def aclose(self) -> None:
        pass


async def test_stt_worker_publishes_progress_and_an_onset_without_words_as_ended() -> None:
    bus = MemoryBus()

    async def nothing(sid: str, reason: str) -> None:
        pass

    own = Ownership(bus, "stt", "a", OwnershipConfig(lease_ttl_ms=60_000), nothing, nothing)
    assert await own.try_acquire(SID, "claimed")
    uid = f"{SID}:1-1"
    script: dict[str, Sequence[RecognizerEvent]] = {
        "1-5": [SpeechStart(uid, 1000.0)],
        "1-12": [SpeechProgress(uid, 1000.0, 200.0, 0.8, "")],
        "1-30": [Discarded(uid, "1-30", "1-10", "", voiced_ms=240.0)],
    }
    handler = SttHandler(CallContext(SID, "stt", bus, own, "claimed", {}), _ScriptedProvider(_ScriptedStt(script)))
    for k in range(1, 31):
        frame = ev.AudioFrame(call_sid=SID, gen=1, chunk=k, payload=b"\xff" * 160, arrived=1000.0 + 20 * k)
        await handler.handle(Entry(keys.audio_in(SID), f"1-{k}", ev.encode(frame)), frame)
    events = [ev.decode(e.data) for e in await bus.range(keys.events(SID))]
    assert [type(e).__name__ for e in events] == ["SpeechStarted", "SpeechProgress", "SpeechEnded"]
    progress, ended = events[1], events[2]
    assert isinstance(progress, ev.SpeechProgress) and progress.voiced_ms == 200.0 and progress.prob == 0.8
    assert isinstance(ended, ev.SpeechEnded) and ended.utterance_id == uid and ended.voiced_ms == 240.0
    checkpoint = await bus.hgetall(keys.checkpoint("stt", SID))
    assert checkpoint[keys.audio_in(SID)] == b"1-10"  # the onset's end moved the checkpoint
    await handler.close("ended")


def test_stt_end_silence_follows_the_question() -> None:
    assert end_silence_ms("yes_no", 560, 1000) == 400
    assert end_silence_ms("yes_no", 300, 1000) == 300  # never longer than the configured one
    assert end_silence_ms("address", 560, 1000) == 1000
    assert end_silence_ms("address", 1200, 1000) == 1200
    assert end_silence_ms("digits", 560, 1000) == 1000
    assert end_silence_ms("free", 560, 1000) is None and end_silence_ms("product", 560, 1000) is None


def test_stt_an_address_with_a_pause_is_one_turn_and_a_yes_is_answered_sooner(
    model: RecognizerModel, speech: Callable[[str], bytes], to_entries: Callable[..., Entries]
) -> None:
    pause = silence_ulaw(8 * 400)  # with the voice's own trailing silence: a 680 ms gap
    address = speech("twelve oak street")[: -8 * 1000] + pause + speech("springfield")[8 * 600 :]
    finals: dict[str, int] = {}
    expects: tuple[Expect, ...] = ("free", "address")
    for expect in expects:
        recognizer = CallRecognizer(model, SID)
        recognizer.listen(expect)
        events = [e for i, f, t in to_entries(address) for e in recognizer.feed(i, f, t)]
        finals[expect] = sum(1 for e in events if isinstance(e, Final))
    assert finals == {"free": 2, "address": 1}  # free speech would answer "twelve oak street" alone

    waits: dict[str, float] = {}
    expects = ("free", "yes_no")
    for expect in expects:  # the expectation's end silence alone: the early end would end both "yes" at 300 ms
        recognizer = CallRecognizer(model, SID, early_end_ms=0)
        recognizer.listen(expect)
        [(at, final)] = [
            (t, e) for i, f, t in to_entries(speech("yes")) for e in recognizer.feed(i, f, t) if isinstance(e, Final)
        ]
        waits[expect] = at - final.last_voiced_arrived  # the frame that ended the turn, after the last voiced one
    assert waits["yes_no"] < waits["free"], waits
