"""DeepgramCallStt against a local server speaking Deepgram's v1 listen protocol (protocols.md §4).

The server records what it receives (query, headers, audio bytes, control messages) and answers from a plan:
for each utterance, ``SpeechStarted``, an interim result, then the final result (``speech_final`` or
``UtteranceEnd``), at times measured in the audio it has received, as Deepgram does. ``CloseStream`` gets a
``Metadata`` and a normal close.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE
from voxcart.stt.deepgram import DeepgramCallStt, DeepgramProvider
from voxcart.stt.provider import ProviderError
from voxcart.stt.results import Discarded, Final, Partial, RecognizerEvent, SpeechStart

SID = "CAdeepgram"
T0 = 1_000_000.0


def frame(k: int) -> bytes:
    """Entry ``1-k``: 20 ms whose bytes say which entry it is."""
    return bytes([k % 251]) * FRAME_BYTES


def arrived(k: int) -> float:
    return T0 + 20.0 * k


def entry_at(seconds: float, first: int = 1) -> int:
    """The chunk number of the entry holding the byte at ``seconds`` of a connection that started at ``first``."""
    return first + int(round(seconds * SAMPLE_RATE)) // FRAME_BYTES


@dataclass
class Utt:
    """What the server "recognizes": words spread evenly over ``[start, end]`` (connection seconds)."""

    start: float
    end: float
    text: str
    confidence: float = 0.9
    end_by: str = "speech_final"

    def words(self, n: int | None = None) -> list[dict[str, Any]]:
        words = self.text.split()
        step = (self.end - self.start) / len(words)
        return [
            {"word": w, "start": self.start + i * step, "end": self.start + (i + 1) * step, "confidence": 0.95}
            for i, w in enumerate(words[:n])
        ]


def results(start: float, end: float, words: list[dict[str, Any]], confidence: float, **flags: bool) -> str:
    transcript = " ".join(w["word"] for w in words)
    return json.dumps(
        {
            "type": "Results",
            "channel_index": [0, 1],
            "start": start,
            "duration": end - start,
            "is_final": flags.get("is_final", False),
            "speech_final": flags.get("speech_final", False),
            "from_finalize": flags.get("from_finalize", False),
            "channel": {"alternatives": [{"transcript": transcript, "confidence": confidence, "words": words}]},
            "metadata": {"request_id": "req-1"},
        }
    )


@dataclass
class Conn:
    """One websocket connection the server accepted."""

    ws: ServerConnection
    query: dict[str, list[str]]
    headers: Headers
    audio: bytearray = field(default_factory=bytearray)
    texts: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    ended: bool = False

    async def read(self) -> None:
        try:
            async for message in self.ws:
                async with self.changed:
                    if isinstance(message, bytes):
                        self.audio += message
                    else:
                        self.texts.append(json.loads(message))
                    self.changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            async with self.changed:
                self.ended = True
                self.changed.notify_all()

    async def wait(self, predicate: Callable[[], bool]) -> bool:
        """Until ``predicate()`` holds (True) or the connection ends (False)."""
        async with self.changed:
            await self.changed.wait_for(lambda: predicate() or self.ended)
            return predicate()

    async def audio_s(self, seconds: float) -> bool:
        return await self.wait(lambda: len(self.audio) >= seconds * SAMPLE_RATE)

    async def text(self, kind: str) -> bool:
        return await self.wait(lambda: any(t.get("type") == kind for t in self.texts))

    def kinds(self) -> list[str]:
        return [t.get("type", "?") for t in self.texts]


Script = Callable[[Conn], Awaitable[None]]


def plan(*utts: Utt, drop_at: float | None = None, close_code: int | None = None) -> Script:
    """A connection that recognizes ``utts`` then, on CloseStream, sends Metadata and closes normally.

    ``drop_at``: after that much audio, reset the TCP connection (or close with ``close_code``).
    """

    async def script(conn: Conn) -> None:
        for utt in utts:
            if drop_at is not None and utt.start + 0.1 > drop_at:
                break
            if not await conn.audio_s(utt.start + 0.1):
                return
            await conn.ws.send(json.dumps({"type": "SpeechStarted", "channel": [0], "timestamp": utt.start}))
            if drop_at is not None and (utt.start + utt.end) / 2 > drop_at:
                break
            if not await conn.audio_s((utt.start + utt.end) / 2):
                return
            half = utt.words(max(1, len(utt.text.split()) // 2))
            await conn.ws.send(results(utt.start, half[-1]["end"], half, utt.confidence))
            speech_final = utt.end_by == "speech_final"
            decided = utt.end + (0.7 if speech_final else 1.1)  # after endpointing=600 / utterance_end_ms=1000
            if drop_at is not None and decided > drop_at:
                break
            if not await conn.audio_s(decided):
                return
            await conn.ws.send(
                results(utt.start, utt.end, utt.words(), utt.confidence, is_final=True, speech_final=speech_final)
            )
            if not speech_final:
                await conn.ws.send(json.dumps({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": utt.end}))
        if drop_at is not None:
            await conn.audio_s(drop_at)
            if close_code is None:
                conn.ws.transport.abort()
            else:
                await conn.ws.close(close_code, "NET-0000")
            return
        await metadata_on_close(conn)

    return script


async def metadata_on_close(conn: Conn) -> None:
    if await conn.text("CloseStream"):
        duration = len(conn.audio) / SAMPLE_RATE
        await conn.ws.send(json.dumps({"type": "Metadata", "request_id": "req-1", "duration": duration, "channels": 1}))


class FakeDeepgram:
    """A local Deepgram: connection ``n`` runs ``scripts[n]`` (the last one repeats)."""

    def __init__(self, *scripts: Script, reject: Callable[[int], Response | None] | None = None) -> None:
        self.scripts = scripts
        self.reject = reject
        self.conns: list[Conn] = []
        self.requests: list[Request] = []
        self.server: Server | None = None

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if self.reject is None:
            return None
        return self.reject(len(self.requests))

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(ws.request.path).query)
        conn = Conn(ws, query, ws.request.headers)
        self.conns.append(conn)
        reader = asyncio.create_task(conn.read())
        try:
            await self.scripts[min(len(self.conns), len(self.scripts)) - 1](conn)
        finally:
            if not reader.done():
                await ws.close()
            await reader

    async def __aenter__(self) -> FakeDeepgram:
        self.server = await serve(self._handler, "127.0.0.1", 0, process_request=self._process_request)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.kill()
        assert self.server is not None
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1/listen"

    def kill(self) -> None:
        """Die like a crashed server: connections reset, the port closed."""
        for conn in self.conns:
            conn.ws.transport.abort()
        assert self.server is not None
        self.server.close()


def provider(url: str, **knobs: Any) -> DeepgramProvider:
    defaults: dict[str, Any] = {"timeout_s": 2.0, "backoff_s": 0.01, "end_silence_ms": 600}
    return DeepgramProvider("test-key", url=url, **(defaults | knobs))


class Caller:
    """Feeds a call's entries ``1-1``, ``1-2``... paced like a fast replay (Twilio's 20 ms frames, sped up)."""

    def __init__(self, stt: DeepgramCallStt, pace_s: float = 0.001) -> None:
        self.stt = stt
        self.pace_s = pace_s
        self.k = 0

    async def feed(
        self, upto: int, until: Callable[[list[RecognizerEvent]], bool] | None = None, deadline_s: float = 5.0
    ) -> list[RecognizerEvent]:
        """Entries up to ``1-<upto>``, then more until ``until(events)``; the events they brought."""
        events: list[RecognizerEvent] = []
        stop = time.monotonic() + deadline_s
        while self.k < upto or (until is not None and not until(events)):
            assert time.monotonic() < stop, f"gave up waiting; events so far: {events}"
            self.k += 1
            events += await self.stt.feed(f"1-{self.k}", frame(self.k), arrived(self.k))
            await asyncio.sleep(self.pace_s)
        return events

    def fed(self, first: int = 1) -> bytes:
        return b"".join(frame(k) for k in range(first, self.k + 1))


def finals(events: Sequence[RecognizerEvent]) -> list[Final]:
    return [e for e in events if isinstance(e, Final)]


def has_finals(n: int) -> Callable[[list[RecognizerEvent]], bool]:
    return lambda events: len(finals(events)) >= n


@pytest.fixture
async def closing() -> AsyncIterator[list[DeepgramCallStt]]:
    """Calls to close at the end of a test, whatever happened."""
    calls: list[DeepgramCallStt] = []
    yield calls
    for call in calls:
        await call.aclose()


async def test_one_utterance_ids_texts_confidence_partials(closing: list[DeepgramCallStt]) -> None:
    utt = Utt(1.0, 2.0, "where is my order", confidence=0.87)
    async with FakeDeepgram(plan(utt)) as dg:
        stt = provider(dg.url, model="nova-3").open_call(SID)
        closing.append(stt)
        stt.listen("product", ["Trail Hoodie", "Acme", "Acme", " "])
        caller = Caller(stt)
        events = await caller.feed(150, has_finals(1))
        await stt.aclose()
        conn = dg.conns[0]
        await conn.wait(lambda: conn.ended)

    first, last = entry_at(1.0), entry_at(2.0)
    uid = f"{SID}:1-{first}"
    assert events[0] == SpeechStart(uid, arrived(first))
    assert Partial(uid, "where is") in events
    (final,) = finals(events)
    assert final.utterance_id == uid
    assert final.text == "where is my order"
    assert final.confidence == pytest.approx(0.87)
    assert final.first_voiced_arrived == arrived(first)
    assert final.last_voiced_arrived == arrived(last)
    assert final.last_entry_id == final.checkpoint_entry == f"1-{last}"
    assert final.endpointed_at == arrived(entry_at(2.0 + 0.6))  # the last word + the endpointing silence
    assert final.endpointed_at <= final.recognized_at
    assert final.resume == ""
    # the handshake: every documented parameter, keyterms repeated, the key in the header
    q = conn.query
    assert {k: v[0] for k, v in q.items() if k != "keyterm"} == {
        "model": "nova-3",
        "encoding": "mulaw",
        "sample_rate": "8000",
        "channels": "1",
        "interim_results": "true",
        "endpointing": "600",
        "utterance_end_ms": "1000",
        "vad_events": "true",
        "numerals": "true",
        "language": "en",
    }
    assert q["keyterm"] == ["Trail Hoodie", "Acme"]
    assert conn.headers["Authorization"] == "Token test-key"
    # the audio went through unchanged, then CloseStream (answered by Metadata and a normal close)
    assert bytes(conn.audio) == caller.fed()
    assert conn.kinds() == ["CloseStream"]
    assert conn.ws.close_code == 1000


async def test_two_utterances_speech_final_then_utterance_end(closing: list[DeepgramCallStt]) -> None:
    first = Utt(0.6, 1.4, "i want a refund")
    second = Utt(3.0, 3.8, "order 12345", confidence=0.6, end_by="utterance_end")
    async with FakeDeepgram(plan(first, second)) as dg:
        stt = provider(dg.url).open_call(SID)
        closing.append(stt)
        caller = Caller(stt)
        events = await caller.feed(100, has_finals(1))
        assert stt.utterance_start_entry() is None
        idle = stt.checkpoint()
        assert idle is not None and int(idle.split("-")[1]) >= entry_at(1.4)  # at or after the final's last word
        stt.listen("digits", ["order number"])  # between utterances: sent as Configure, no reconnect
        events += await caller.feed(160, lambda ev: any(isinstance(e, SpeechStart) for e in ev))
        assert stt.checkpoint() is None and stt.utterance_start_entry() == f"1-{entry_at(3.0)}"
        events += await caller.feed(200, has_finals(1))
        kinds = dg.conns[0].kinds()

    one, two = finals(events)
    assert (one.utterance_id, one.text) == (f"{SID}:1-{entry_at(0.6)}", "i want a refund")
    assert (two.utterance_id, two.text) == (f"{SID}:1-{entry_at(3.0)}", "order 12345")
    assert two.confidence == pytest.approx(0.6)
    assert two.endpointed_at == arrived(entry_at(3.8 + 1.0))  # UtteranceEnd: utterance_end_ms after the last word
    assert [e.utterance_id for e in events if isinstance(e, SpeechStart)] == [one.utterance_id, two.utterance_id]
    assert len(dg.conns) == 1
    assert {"type": "Configure", "keyterms": ["order number"]} in dg.conns[0].texts
    assert kinds[0] == "Configure"


async def test_noise_without_words_is_discarded(closing: list[DeepgramCallStt]) -> None:
    async def noise(conn: Conn) -> None:
        await conn.audio_s(1.1)
        await conn.ws.send(json.dumps({"type": "SpeechStarted", "channel": [0], "timestamp": 1.0}))
        await conn.audio_s(2.9)
        await conn.ws.send(results(0.0, 2.8, [], 0.0, is_final=True, speech_final=True))
        await metadata_on_close(conn)

    async with FakeDeepgram(noise) as dg:
        stt = provider(dg.url).open_call(SID)
        closing.append(stt)
        events = await Caller(stt).feed(140, lambda ev: any(isinstance(e, Discarded) for e in ev))
    uid = f"{SID}:1-{entry_at(1.0)}"
    assert events == [
        SpeechStart(uid, arrived(entry_at(1.0))),
        Discarded(uid, f"1-{entry_at(2.8)}", f"1-{entry_at(2.8)}", ""),
    ]


async def test_end_utterance_sends_finalize(closing: list[DeepgramCallStt]) -> None:
    utt = Utt(0.4, 1.0, "can i speak to a human")

    async def finalize(conn: Conn) -> None:
        await conn.audio_s(0.5)
        await conn.ws.send(json.dumps({"type": "SpeechStarted", "channel": [0], "timestamp": utt.start}))
        await conn.text("Finalize")
        await conn.ws.send(results(0.0, 1.2, utt.words(), 0.8, is_final=True, from_finalize=True))
        await metadata_on_close(conn)

    async with FakeDeepgram(finalize) as dg:
        stt = provider(dg.url).open_call(SID)
        closing.append(stt)
        events = await Caller(stt).feed(60, lambda ev: bool(ev))
        assert events == [SpeechStart(f"{SID}:1-{entry_at(0.4)}", arrived(entry_at(0.4)))]
        ended = await stt.end_utterance()
        assert await stt.end_utterance() == []  # nothing open any more
        kinds = dg.conns[0].kinds()
    (final,) = finals(ended)
    assert (final.utterance_id, final.text) == (f"{SID}:1-{entry_at(0.4)}", "can i speak to a human")
    assert final.last_entry_id == f"1-{entry_at(1.0)}"
    assert kinds[0] == "Finalize"


async def test_401_is_a_provider_error_without_retry(closing: list[DeepgramCallStt]) -> None:
    def unauthorized(n: int) -> Response:
        return Response(401, "Unauthorized", Headers({"dg-request-id": "r-401"}), b'{"err_code":"INVALID_AUTH"}')

    async with FakeDeepgram(plan(), reject=unauthorized) as dg:
        stt = provider(dg.url).open_call(SID)
        closing.append(stt)
        with pytest.raises(ProviderError, match="HTTP 401.*DEEPGRAM_API_KEY"):
            await stt.feed("1-1", frame(1), arrived(1))
        with pytest.raises(ProviderError, match="HTTP 401"):  # the call stays failed
            await stt.feed("1-2", frame(2), arrived(2))
    assert len(dg.requests) == 1


@pytest.mark.parametrize("rejections", [1, 2])
async def test_429_is_retried_once(closing: list[DeepgramCallStt], rejections: int) -> None:
    def busy(n: int) -> Response | None:
        if n > rejections:
            return None
        return Response(429, "Too Many Requests", Headers({"Retry-After": "0.05"}), b"busy")

    async with FakeDeepgram(plan(Utt(0.2, 0.6, "yes")), reject=busy) as dg:
        stt = provider(dg.url).open_call(SID)
        closing.append(stt)
        if rejections == 1:
            events = await Caller(stt).feed(40, has_finals(1))
            assert finals(events)[0].text == "yes"
        else:
            with pytest.raises(ProviderError, match="HTTP 429"):
                await stt.feed("1-1", frame(1), arrived(1))
    assert len(dg.requests) == 2


async def test_handshake_timeout() -> None:
    gone = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts TCP, never answers the upgrade, until the client hangs up
        writer.close()
        await writer.wait_closed()
        gone.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stt = provider(f"ws://127.0.0.1:{port}/v1/listen", timeout_s=0.3).open_call(SID)
    started = time.monotonic()
    with pytest.raises(ProviderError, match="no handshake within 0.3 s"):
        await stt.feed("1-1", frame(1), arrived(1))
    elapsed = time.monotonic() - started
    await stt.aclose()
    await gone.wait()
    server.close()
    await server.wait_closed()
    assert 0.25 < elapsed < 2.0


@pytest.mark.parametrize("close_code", [None, 1011])
async def test_drop_mid_utterance_reconnects_and_resends(
    closing: list[DeepgramCallStt], close_code: int | None
) -> None:
    """A reset (or a 1011 close) during the second utterance: the entries since the first final are sent again."""
    first = Utt(0.5, 1.0, "where is my order")
    resent_from = entry_at(1.0) + 1  # the entry after the first final's last word
    offset = (resent_from - 1) * FRAME_BYTES / SAMPLE_RATE  # where the second connection's time 0 is
    second = Utt(2.0 - offset, 3.0 - offset, "i want to return my shoes")
    async with FakeDeepgram(
        plan(first, Utt(2.0, 3.0, "i want to"), drop_at=2.5, close_code=close_code), plan(second)
    ) as dg:
        stt = provider(dg.url).open_call(SID)
        closing.append(stt)
        caller = Caller(stt)
        events = await caller.feed(200, has_finals(2))
        await stt.aclose()
        await dg.conns[1].wait(lambda: dg.conns[1].ended)

    one, two = finals(events)
    assert one.text == "where is my order"
    assert two.utterance_id == f"{SID}:1-{entry_at(2.0)}"  # the id from the first connection's onset
    assert two.text == "i want to return my shoes"
    assert two.last_entry_id == f"1-{entry_at(3.0)}"  # word times on the new connection map to the right entries
    assert [e.utterance_id for e in events if isinstance(e, SpeechStart)] == [one.utterance_id, two.utterance_id]
    assert len(dg.conns) == 2
    assert bytes(dg.conns[1].audio) == caller.fed(resent_from)  # the utterance again, then the rest


async def test_repeated_drops_give_up(closing: list[DeepgramCallStt]) -> None:
    async def drop(conn: Conn) -> None:
        await conn.audio_s(0.02)
        await conn.ws.close(1011, "NET-0000")

    async with FakeDeepgram(drop) as dg:
        stt = provider(dg.url, reconnect_attempts=2).open_call(SID)
        closing.append(stt)
        with pytest.raises(ProviderError, match="gave up after 2 reconnects.*1011"):
            await Caller(stt, pace_s=0.005).feed(200)
    assert len(dg.conns) == 3


async def test_silent_server_counts_as_a_drop(closing: list[DeepgramCallStt]) -> None:
    async def mute(conn: Conn) -> None:
        await conn.wait(lambda: False)  # takes audio, never answers

    async with FakeDeepgram(mute, plan(Utt(0.3, 0.8, "goodbye"))) as dg:
        stt = provider(dg.url, stall_s=0.4).open_call(SID)
        closing.append(stt)
        events = await Caller(stt, pace_s=0.002).feed(20, has_finals(1))
    assert finals(events)[0].text == "goodbye"
    assert len(dg.conns) == 2


async def test_keepalive_when_audio_pauses(closing: list[DeepgramCallStt]) -> None:
    async with FakeDeepgram(plan()) as dg:
        stt = provider(dg.url, keepalive_s=0.3).open_call(SID)
        closing.append(stt)
        await Caller(stt, pace_s=0.01).feed(20)  # audio every 10 ms: no KeepAlive needed
        conn = dg.conns[0]
        assert "KeepAlive" not in conn.kinds()
        async with asyncio.timeout(2):
            assert await conn.text("KeepAlive")  # audio stopped: KeepAlive follows
        assert len(conn.audio) == 20 * FRAME_BYTES


def test_provider_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="DEEPGRAM_API_KEY"):
        DeepgramProvider("")
    with pytest.raises(ValueError, match="ws:// or wss://"):
        DeepgramProvider("k", url="https://api.deepgram.com/v1/listen")
    nova2 = DeepgramProvider("k", model="nova-2-phonecall")
    assert "keyterm" not in nova2.query_url(["Acme"])
