"""FallbackCallStt / FallbackProvider: unit tests on scripted fakes, then Deepgram dying mid-call for real.

The real case: a local Deepgram-speaking server recognizes the caller's first sentence, then dies (connections
reset, port closed) during the second; the call goes on on the real PocketSphinx provider, which hears the
second sentence from its start (the replayed entries).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE
from voxcart.common.events import Expect
from voxcart.stt.deepgram import DeepgramProvider
from voxcart.stt.embedded import PocketsphinxProvider
from voxcart.stt.fallback import FallbackCallStt, FallbackProvider
from voxcart.stt.provider import CallStt, ProviderError
from voxcart.stt.recognizer import RecognizerModel
from voxcart.stt.results import Discarded, Final, Partial, RecognizerEvent, SpeechStart

SID = "CAfallback"
Entries = list[tuple[str, bytes, float]]


def fallbacks(provider: str) -> float:
    return REGISTRY.get_sample_value("voxcart_stt_fallbacks_total", {"provider": provider}) or 0.0


def final(uid: str, checkpoint: str, text: str = "yes") -> Final:
    return Final(uid, text, 0.9, 0.0, 0.0, 0.0, 0.0, checkpoint, checkpoint, "")


@dataclass
class FakeStt:
    """A scripted CallStt: events per entry id, a ProviderError at ``fail_at``."""

    provider: str
    script: dict[str, list[RecognizerEvent]] = field(default_factory=dict)
    fail_at: str | None = None
    fail_end: bool = False
    idle_checkpoint: str | None = None
    fed: list[str] = field(default_factory=list)
    heard: list[tuple[Expect, list[str]]] = field(default_factory=list)
    ended: int = 0
    closed: bool = False

    async def feed(self, entry_id: str, ulaw: bytes, arrived: float) -> list[RecognizerEvent]:
        if entry_id == self.fail_at:
            raise ProviderError(f"{self.provider}: scripted failure at {entry_id}")
        self.fed.append(entry_id)
        return list(self.script.get(entry_id, []))

    def listen(self, expect: Expect, keyterms: Sequence[str] = ()) -> None:
        self.heard.append((expect, list(keyterms)))

    async def end_utterance(self) -> list[RecognizerEvent]:
        if self.fail_end:
            raise ProviderError(f"{self.provider}: scripted failure at end_utterance")
        self.ended += 1
        return list(self.script.get("end", []))

    def checkpoint(self) -> str | None:
        return self.idle_checkpoint

    @property
    def resume(self) -> str:
        return f"{self.provider}-state"

    def utterance_start_entry(self) -> str | None:
        return None

    async def aclose(self) -> None:
        self.closed = True


class Spare:
    """The fallback factory: remembers what it was asked for."""

    def __init__(self, stt: FakeStt) -> None:
        self.stt = stt
        self.start_after: list[str] = []

    def __call__(self, start_after: str) -> CallStt:
        self.start_after.append(start_after)
        return self.stt


async def feed(call: CallStt, first: int, last: int) -> list[RecognizerEvent]:
    events: list[RecognizerEvent] = []
    for k in range(first, last + 1):
        events += await call.feed(f"1-{k}", bytes([k]) * FRAME_BYTES, 20.0 * k)
    return events


async def test_switch_replays_the_entries_since_the_last_final() -> None:
    u1 = f"{SID}:1-2"
    primary = FakeStt("cloud", {"1-2": [SpeechStart(u1, 40.0)], "1-5": [final(u1, "1-3")]}, fail_at="1-8")
    spare = Spare(FakeStt("embedded"))
    call = FallbackCallStt(primary, spare, call_sid=SID)
    before = fallbacks("cloud")
    call.listen("digits", ["order number"])
    assert (call.provider, call.resume) == ("cloud", "cloud-state")
    events = await feed(call, 1, 10)
    assert events == [SpeechStart(u1, 40.0), final(u1, "1-3")]
    assert spare.start_after == ["1-3"]
    assert spare.stt.fed == ["1-4", "1-5", "1-6", "1-7", "1-8", "1-9", "1-10"]  # replay, then the rest
    assert spare.stt.heard == [("digits", ["order number"])]
    assert primary.closed and not spare.stt.closed
    assert (call.provider, call.resume) == ("embedded", "embedded-state")
    assert fallbacks("cloud") == before + 1
    await call.aclose()
    assert spare.stt.closed


async def test_no_second_final_nor_speech_start_per_utterance() -> None:
    u1, u2 = f"{SID}:1-1", f"{SID}:1-4"
    primary = FakeStt("cloud", {"1-1": [SpeechStart(u1, 0.0)], "1-3": [final(u1, "1-1")]}, fail_at="1-5")
    again: list[RecognizerEvent] = [SpeechStart(u1, 0.0), Partial(u1, "yes"), final(u1, "1-1"), SpeechStart(u2, 1.0)]
    spare = FakeStt(
        "embedded",
        {
            "1-4": again,
            "1-5": [SpeechStart(u2, 1.0), Partial(u2, "no")],
            "1-6": [final(u2, "1-6", "no"), final(u2, "1-6", "no"), Discarded(u2, "1-6", "1-6", "")],
        },
    )
    call = FallbackCallStt(primary, Spare(spare), call_sid=SID)
    events = await feed(call, 1, 6)
    assert events == [
        SpeechStart(u1, 0.0),
        final(u1, "1-1"),
        SpeechStart(u2, 1.0),
        Partial(u2, "no"),
        final(u2, "1-6", "no"),
    ]


async def test_the_replay_is_bounded() -> None:
    primary = FakeStt("cloud", fail_at="1-20")
    spare = Spare(FakeStt("embedded"))
    call = FallbackCallStt(primary, spare, buffer_s=0.1)  # 5 frames
    await feed(call, 1, 20)
    assert spare.start_after == ["1-15"]
    assert spare.stt.fed == ["1-16", "1-17", "1-18", "1-19", "1-20"]


async def test_a_committed_idle_checkpoint_shortens_the_replay() -> None:
    primary = FakeStt("cloud", fail_at="1-9", idle_checkpoint="1-6")
    spare = Spare(FakeStt("embedded"))
    call = FallbackCallStt(primary, spare, start_after="1-0")
    await feed(call, 1, 8)
    assert call.checkpoint() == "1-6"
    await feed(call, 9, 9)
    assert spare.start_after == ["1-6"]
    assert spare.stt.fed == ["1-7", "1-8", "1-9"]


async def test_end_utterance_failure_falls_back() -> None:
    u = f"{SID}:1-1"
    primary = FakeStt("cloud", {"1-1": [SpeechStart(u, 0.0)]}, fail_end=True)
    spare = FakeStt("embedded", {"1-1": [SpeechStart(u, 0.0)], "end": [final(u, "1-3")]})
    call = FallbackCallStt(primary, Spare(spare))
    assert await feed(call, 1, 3) == [SpeechStart(u, 0.0)]
    assert await call.end_utterance() == [final(u, "1-3")]
    assert spare.fed == ["1-1", "1-2", "1-3"] and spare.ended == 1


async def test_a_failing_fallback_propagates() -> None:
    call = FallbackCallStt(FakeStt("cloud", fail_at="1-2"), Spare(FakeStt("embedded", fail_at="1-2")))
    with pytest.raises(ProviderError, match="embedded: scripted failure"):
        await feed(call, 1, 2)


@dataclass
class FakeProvider:
    name: str
    stt: FakeStt | None = None
    opened: list[tuple[str, str, str]] = field(default_factory=list)
    closed: bool = False

    def open_call(self, call_sid: str, *, start_after: str = "0-0", resume: str = "") -> CallStt:
        self.opened.append((call_sid, start_after, resume))
        if self.stt is None:
            raise ProviderError(f"{self.name}: cannot open")
        return self.stt

    async def aclose(self) -> None:
        self.closed = True


async def test_provider_falls_back_when_the_primary_cannot_open() -> None:
    spare = FakeStt("embedded")
    provider = FallbackProvider(FakeProvider("broken"), FakeProvider("embedded", spare))
    before = fallbacks("broken")
    call = provider.open_call(SID, start_after="1-7", resume="cmn")
    assert call is spare
    assert fallbacks("broken") == before + 1
    await provider.aclose()
    assert isinstance(provider.fallback, FakeProvider) and provider.fallback.closed


async def test_provider_opens_the_fallback_after_the_replayed_entries() -> None:
    spare_provider = FakeProvider("embedded", FakeStt("embedded"))
    provider = FallbackProvider(FakeProvider("cloud", FakeStt("cloud", fail_at="1-9")), spare_provider)
    call = provider.open_call(SID, start_after="1-4", resume="cmn")
    await feed(call, 5, 9)
    assert spare_provider.opened == [(SID, "1-4", "cmn")]
    assert call.provider == "embedded"


# -- for real: Deepgram dies mid-call, PocketSphinx goes on -------------------------------------------------


def speech_span(audio: bytes) -> tuple[float, float]:
    """Seconds of the first and last non-silent byte (the caller audio is framed by digital silence)."""
    loud = [i for i, b in enumerate(audio) if b != 0xFF]
    return loud[0] / SAMPLE_RATE, loud[-1] / SAMPLE_RATE


@dataclass
class OneSentence:
    """A Deepgram that recognizes one sentence (``text`` over ``[start, end]`` s), then only listens."""

    start: float
    end: float
    text: str
    conns: list[ServerConnection] = field(default_factory=list)

    async def handler(self, ws: ServerConnection) -> None:
        self.conns.append(ws)
        received = 0
        said: set[str] = set()
        words = self.text.split()
        step = (self.end - self.start) / len(words)
        try:
            async for message in ws:
                if not isinstance(message, bytes):
                    continue
                received += len(message)
                heard = received / SAMPLE_RATE
                if heard >= self.start + 0.1 and "onset" not in said:
                    said.add("onset")
                    await ws.send(json.dumps({"type": "SpeechStarted", "channel": [0], "timestamp": self.start}))
                if heard >= self.end + 0.7 and "final" not in said:
                    said.add("final")
                    await ws.send(json.dumps(self._final(words, step)))
        except ConnectionClosed:
            pass

    def _final(self, words: list[str], step: float) -> dict[str, Any]:
        timed = [
            {"word": w, "start": self.start + i * step, "end": self.start + (i + 1) * step, "confidence": 0.9}
            for i, w in enumerate(words)
        ]
        alternative = {"transcript": self.text, "confidence": 0.93, "words": timed}
        return {
            "type": "Results",
            "start": 0.0,
            "duration": self.end + 0.6,
            "is_final": True,
            "speech_final": True,
            "channel": {"alternatives": [alternative]},
        }


async def test_deepgram_dies_mid_call_and_pocketsphinx_goes_on(
    model: RecognizerModel, speech: Callable[[str], bytes], to_entries: Callable[..., Entries]
) -> None:
    first, second = speech("where is my order"), speech("i want to return my shoes")
    start1, end1 = speech_span(first)
    start2 = len(first) / SAMPLE_RATE + speech_span(second)[0]
    deepgram = OneSentence(start1, end1, "where is my order")
    server = await serve(deepgram.handler, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/listen"
    cloud = DeepgramProvider("test-key", url=url, timeout_s=1.0, backoff_s=0.01, reconnect_attempts=2)
    provider = FallbackProvider(cloud, PocketsphinxProvider(model, end_silence_ms=600))
    call = provider.open_call(SID)
    before = fallbacks("deepgram")
    kill_at = int((start2 + 0.5) * SAMPLE_RATE) // FRAME_BYTES  # half a second into the second sentence
    events: list[RecognizerEvent] = []
    providers: list[str] = []
    try:
        for n, (entry_id, ulaw, arrived) in enumerate(to_entries(first + second)):
            if n == kill_at:
                for ws in deepgram.conns:
                    ws.transport.abort()
                server.close()
                await server.wait_closed()
            events += await call.feed(entry_id, ulaw, arrived)
            providers.append(call.provider)
            if call.provider == "deepgram":
                await asyncio.sleep(0.001)  # give the socket a turn, as real pacing would
    finally:
        await call.aclose()
        server.close()

    one, two = (e for e in events if isinstance(e, Final))
    assert (one.text, one.utterance_id) == ("where is my order", f"{SID}:1-{1 + int(start1 * 50)}")
    assert {"return", "shoes"} <= set(two.text.split()), two.text
    assert int(two.utterance_id.rsplit("-", 1)[1]) > int(one.checkpoint_entry.rsplit("-", 1)[1])
    assert two.confidence > 0
    starts = [e.utterance_id for e in events if isinstance(e, SpeechStart)]
    assert len(starts) == len(set(starts)) and two.utterance_id in starts
    switched = providers.index("pocketsphinx")
    assert kill_at <= switched < kill_at + 25 and set(providers[switched:]) == {"pocketsphinx"}
    assert fallbacks("deepgram") == before + 1
