"""Fuzzing the Media Streams handler (issue 6, "bad input"): bad frames never crash it and never touch another call.

Frames are Twilio's documented messages (protocols.md 2.2) mutated by hypothesis: fields removed or retyped, bad
base64, payloads of 0 bytes to far over the frame limit, unknown events, sequence numbers repeated, out of order,
negative or not numbers, non-JSON text, binary frames, JSON nested thousands deep, huge strings.

Two levels:

- The pure handler (:func:`decode_frame`, :meth:`MediaConnection.receive`), >= 10,000 inputs each: the only
  exception is :class:`MediaProtocolError`, a refused frame changes nothing, and the bookkeeping invariants hold
  (``seq_gaps == last_seq - accepted``, the stream sid is fixed by ``start``, nothing is accepted after ``stop``).
- The real endpoint: the app under uvicorn on 127.0.0.1 (as ``voxcart serve gateway`` runs it) with a MemoryBus.
  One well-behaved call streams audio the whole time while each generated sequence goes down a socket of its
  own (>= 10,000 frames in all): a socket whose frames break the protocol is closed with 1003 and a logged
  reason exactly when the pure handler says so, no exception reaches the server, and the good call's
  ``audio.in`` holds every one of its chunks, in order.

Settings are derandomized with no example database so that CI runs are reproducible.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import functools
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as sync_connect

from voxcart.common import events as ev
from voxcart.common.bus import MemoryBus, keys
from voxcart.common.settings import load_settings
from voxcart.gateway.app import _MAX_FRAME, MEDIA_PATH, create_app
from voxcart.gateway.media_token import PARAMETER, MediaTokens
from voxcart.gateway.records_sqlite import SqliteRecordStore
from voxcart.gateway.twilio.connection import IllegalTransition, MediaConnection, SocketState
from voxcart.gateway.twilio.media import Connected, Media, MediaProtocolError, Start, Stop, decode_frame

SID = "MZ" + "f" * 32
ACCOUNT = "AC" + "e" * 32
GOOD_CALL = "CA" + "600d" * 8
WS_MAX_SIZE = _MAX_FRAME * 2
"""As :func:`voxcart.gateway.app.serve` configures uvicorn: a bigger message never reaches the app."""
SETTINGS = load_settings({"MEDIA_TOKEN_SECRET": "fuzz-media-secret"}, env_file=None)
TOKENS = MediaTokens.from_settings(SETTINGS)
"""The live gateway's media tokens: ``start`` frames carry their call's token (mutations may break it: 1008)."""
FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=False)
Frame = str | bytes
Doc = dict[str, Any]

# -- frames --------------------------------------------------------------------------------------------------


def connected() -> Doc:
    return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start(seq: int | str, call_sid: str) -> Doc:
    return {
        "event": "start",
        "sequenceNumber": str(seq),
        "streamSid": SID,
        "start": {
            "streamSid": SID,
            "accountSid": ACCOUNT,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": {"call_sid": call_sid, PARAMETER: TOKENS.issue(call_sid)},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }


def media(seq: int | str, chunk: int, payload: bytes = b"\xff" * 160) -> Doc:
    body = {"track": "inbound", "chunk": str(chunk), "timestamp": str(20 * chunk), "payload": b64(payload)}
    return {"event": "media", "sequenceNumber": str(seq), "streamSid": SID, "media": body}


def dtmf(seq: int | str, digit: str = "5") -> Doc:
    return {
        "event": "dtmf",
        "sequenceNumber": str(seq),
        "streamSid": SID,
        "dtmf": {"track": "inbound_track", "digit": digit},
    }


def mark(seq: int | str, name: str = "t1-s1") -> Doc:
    return {"event": "mark", "sequenceNumber": str(seq), "streamSid": SID, "mark": {"name": name}}


def stop(seq: int | str, call_sid: str) -> Doc:
    return {
        "event": "stop",
        "sequenceNumber": str(seq),
        "streamSid": SID,
        "stop": {"accountSid": ACCOUNT, "callSid": call_sid},
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


# -- strategies ----------------------------------------------------------------------------------------------
# Built once at import: strategies made inside a draw are re-validated per example, which triples the run time.

OTHER_CALL = "CA" + "1" * 32
"""The call sid of generated ``start`` and ``stop`` messages that are not part of a call script."""
TEMPLATES: list[Doc] = [
    make
    for seq in (1, 2, 5, 30)
    for make in (connected(), start(seq, OTHER_CALL), media(seq, seq), dtmf(seq), mark(seq), stop(seq, OTHER_CALL))
]
VALID = st.sampled_from([dumps(t) for t in TEMPLATES])
SIZES = st.one_of(st.integers(0, 400), st.sampled_from([159, 160, 161, 8000, 48_000, _MAX_FRAME, WS_MAX_SIZE + 1]))
"""Payload sizes: Twilio's 160 bytes and its neighbours, empty, and big enough to cross both frame limits."""
WEIRD_NUMBERS = st.sampled_from(
    [
        "-1",
        "-0",
        "0",
        "1.5",
        "1e3",
        "1e400",
        "NaN",
        "",
        " 1",
        "+1",
        "0x10",
        "1_000",
        "١",
        "9" * 40,
        str(2**63),
        str(2**64),
    ]
)
BAD_BASE64 = st.one_of(
    st.sampled_from(["=", "A", "AB", "ABC", "A===", "!!!!", "AAAA AAAA", "AAAA\n", "-_-_", "AAAA=AAA", "é" * 4]),
    st.text(alphabet="ABCDabcd0189+/=-_ !*é\n", min_size=1, max_size=40),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    WEIRD_NUMBERS,
)
JUNK: st.SearchStrategy[Any] = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=5), SCALARS, max_size=3),
    st.integers(0, 70_000).map(lambda n: "x" * n),
)
"""Any JSON value: what a mutated field becomes."""


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield (*prefix, i)
            yield from _paths(value, (*prefix, i))


def _mutated(doc: Doc, path: tuple[Any, ...], delete: bool, value: Any) -> str:
    out = copy.deepcopy(doc)
    parent: Any = out
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return dumps(out)


def mutations(doc: Doc) -> st.SearchStrategy[str]:
    """``doc`` with one field (the event name included) removed or given a value of any type."""
    paths = st.sampled_from(list(_paths(doc)))
    return st.builds(functools.partial(_mutated, doc), paths, st.booleans(), JUNK)


def _with(doc: Doc, path: tuple[str, ...], value: Any) -> str:
    return _mutated(doc, path, False, value)


def _deep(depth: int, as_list: bool) -> str:
    if as_list:
        return "[" * depth + "]" * depth
    inner = '{"a":' * depth + "1" + "}" * depth
    return '{"event":"connected","protocol":"Call","version":"1.0.0","extra":' + inner + "}"


DEEP = st.builds(_deep, st.sampled_from([10, 127, 128, 500, 1000, 5000, 40_000]), st.booleans())
"""JSON nested deeper than any decoder recurses (and not)."""
JUNK_FRAMES: st.SearchStrategy[Frame] = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60),
    st.sampled_from(["", "null", "[]", "{}", "1", '"start"', '{"event":null}', '{"event":"media"}', "{" * 3]),
    JUNK.map(dumps),
    DEEP,
    st.integers(0, WS_MAX_SIZE + 10).map(lambda n: '{"event":"' + "e" * n + '"}'),
)
"""Frames that are not a message of the protocol at all."""
_TEXTS = [dumps(t) for t in TEMPLATES]
BAD_MESSAGE: st.SearchStrategy[Frame] = st.one_of(
    st.one_of([mutations(t) for t in TEMPLATES]),
    st.builds(lambda n, seq: dumps(media(seq, seq, b"\x7f" * n)), SIZES, st.integers(1, 60)),
    st.builds(_with, st.just(media(3, 3)), st.just(("media", "payload")), BAD_BASE64),
    st.builds(
        _with,
        st.sampled_from(TEMPLATES),
        st.just(("event",)),
        st.one_of(st.text(max_size=12), st.sampled_from(["clear", "Media", "MEDIA", " media", "closed"])),
    ),
    st.builds(_with, st.just(media(3, 3)), st.just(("sequenceNumber",)), WEIRD_NUMBERS),
    st.builds(lambda text, cut: text[: cut % len(text)], st.sampled_from(_TEXTS), st.integers(0, 1000)),
    st.builds(_with, st.just(media(3, 3)), st.just(("streamSid",)), st.sampled_from(["", "MZother", SID + "x"])),
    JUNK_FRAMES,
)
"""One frame that is wrong in one way (most are refused; a few mutations happen to stay valid)."""
ANY_FRAME: st.SearchStrategy[Frame] = st.one_of(VALID, BAD_MESSAGE)


@st.composite
def call_script(draw: st.DrawFn, call_sid: str, max_media: int = 40) -> list[Frame]:
    """A plausible call (connected, start, media/dtmf/mark, maybe stop) broken in up to 4 places.

    Breakages: a bad frame in place of or between messages, a message repeated, two messages swapped (out of
    order), a sequence number pushed back or forward, or a flood of copies of one frame.
    """
    n = draw(st.integers(0, max_media))
    docs: list[Doc] = [connected(), start(1, call_sid)]
    for i in range(n):
        seq = len(docs)
        roll = draw(st.integers(0, 19))
        docs.append(dtmf(seq) if roll == 0 else mark(seq) if roll == 1 else media(seq, i + 1))
    if draw(st.booleans()):
        docs.append(stop(len(docs), call_sid))
    frames: list[Frame] = [dumps(d) for d in docs]
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(frames)))
        how = draw(st.sampled_from(["insert", "replace", "repeat", "swap", "reseq", "flood"]))
        if how in ("insert", "replace"):
            frames[at : at + (how == "replace")] = [draw(BAD_MESSAGE)]
        elif at < len(frames) and how == "repeat":
            frames.insert(at, frames[at])
        elif at + 1 < len(frames) and how == "swap":
            frames[at], frames[at + 1] = frames[at + 1], frames[at]
        elif at < len(docs) and how == "reseq" and "sequenceNumber" in docs[at]:
            frames.insert(at, _with(docs[at], ("sequenceNumber",), str(draw(st.integers(-3, len(docs) + 5)))))
        elif at < len(frames) and how == "flood":
            frames[at:at] = [frames[at]] * draw(st.integers(10, 200))
    return frames


# -- level (a): the pure handler -----------------------------------------------------------------------------


def _event_of(frame: Frame) -> object:
    try:
        doc = json.loads(frame)
    except (ValueError, RecursionError):
        return None
    return doc.get("event") if isinstance(doc, dict) else None


def test_gw_fuzz_decode_frame_raises_only_protocol_errors() -> None:
    inputs = 0

    @settings(FUZZ, max_examples=10_000)
    @given(frame=ANY_FRAME, expected_sid=st.sampled_from([None, SID]))
    def check(frame: Frame, expected_sid: str | None) -> None:
        nonlocal inputs
        inputs += 1
        try:
            msg = decode_frame(frame, expected_sid)
        except MediaProtocolError as exc:
            assert str(exc)  # a reason, never an empty message
            return
        assert _event_of(frame) in (None, type(msg).__name__.lower())
        if not isinstance(msg, Connected):
            assert 0 <= msg.sequence_number < 2**63
            assert expected_sid is None or msg.stream_sid == expected_sid
        if isinstance(msg, Media):
            assert 0 <= msg.media.chunk < 2**63 and 0 <= msg.media.timestamp < 2**63

    check()
    assert inputs >= 10_000, inputs


NASTY: list[tuple[str, Frame, str]] = [
    ("array nested 5000 deep", _deep(5000, as_list=True), "Expected `object`, got `array`"),
    ("field nested 5000 deep", _deep(5000, as_list=False), "nested too deeply"),
    ("lone surrogate", '{"event":"connected","protocol":"\ud800","version":"1"}', "not valid text"),
    (
        "chunk over 2**63",
        _with(media(2, 2), ("media", "chunk"), str(2**64)),
        r"<= 9223372036854775807 - at `\$.media.chunk`",
    ),
    ("seq over 2**63", _with(media(2, 2), ("sequenceNumber",), str(2**63)), "at `\\$.sequenceNumber`"),
    ("call sid with braces", _with(start(1, "CA1"), ("start", "callSid"), "CA1}x{"), "at `\\$.start.callSid`"),
    ("bad base64", _with(media(2, 2), ("media", "payload"), "AAA"), "base64"),
]
"""Frames that once got another exception than MediaProtocolError (or got through) from the handler."""


@pytest.mark.parametrize(("frame", "message"), [c[1:] for c in NASTY], ids=[c[0] for c in NASTY])
def test_gw_fuzz_known_nasty_frames_are_protocol_errors(frame: Frame, message: str) -> None:
    with pytest.raises(MediaProtocolError, match=message) as info:
        decode_frame(frame)
    str(info.value).encode()  # the reason can be logged and sent as UTF-8


@dataclasses.dataclass
class Snapshot:
    state: SocketState
    stream_sid: str | None
    call_sid: str | None
    last_seq: int
    last_chunk: int
    seq_gaps: int
    media_frames: int

    @classmethod
    def of(cls, conn: MediaConnection) -> Snapshot:
        return cls(
            conn.state, conn.stream_sid, conn.call_sid, conn.last_seq, conn.last_chunk, conn.seq_gaps, conn.media_frames
        )


def test_gw_fuzz_connection_keeps_its_state_consistent() -> None:
    """Every frame of a broken call is fed on, even after an error: refusals change nothing, invariants hold."""
    inputs = 0

    @settings(FUZZ, max_examples=600, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(frames=call_script("CA" + "2" * 32))
    def check(frames: list[Frame]) -> None:
        nonlocal inputs
        conn = MediaConnection()
        accepted = media_frames = 0
        for frame in frames:
            inputs += 1
            before = Snapshot.of(conn)
            duplicates = conn.seq_duplicates
            try:
                msg = conn.receive(frame)
            except MediaProtocolError:
                assert Snapshot.of(conn) == before  # a refused frame leaves no trace
                assert conn.seq_duplicates == duplicates
                continue
            if msg is None:
                assert conn.seq_duplicates == duplicates + 1 and Snapshot.of(conn) == before
                continue
            assert before.state not in (SocketState.STOPPED, SocketState.CLOSED)
            if isinstance(msg, Connected):
                assert before.state is SocketState.CONNECTING and conn.state is SocketState.CONNECTED
                continue
            accepted += 1
            assert msg.sequence_number == conn.last_seq > before.last_seq
            assert msg.stream_sid == conn.stream_sid
            if isinstance(msg, Start):
                assert before.state is SocketState.CONNECTED and conn.state is SocketState.STARTED
                assert conn.call_sid == msg.start.call_sid
            else:
                assert before.state is SocketState.STARTED
                assert (conn.stream_sid, conn.call_sid) == (before.stream_sid, before.call_sid)
            if isinstance(msg, Media):
                media_frames += 1
            if isinstance(msg, Stop):
                assert conn.state is SocketState.STOPPED
        assert conn.seq_gaps == conn.last_seq - accepted
        assert conn.media_frames == media_frames
        assert (conn.stream_sid is None) == (conn.state in (SocketState.CONNECTING, SocketState.CONNECTED))
        if conn.state is SocketState.STOPPED:
            with pytest.raises(IllegalTransition):
                conn.receive(dumps(media(conn.last_seq + 1, 1)))

    check()
    assert inputs >= 10_000, inputs


# -- level (b): the real websocket endpoint ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the gateway must do with a sequence of frames, as the pure handler says."""

    sent: int
    """Frames the server reads (the rest would follow a close)."""
    close: int | None
    """1003 (protocol error), 1008 (no media token for its call), 1009 (over uvicorn's size limit), 1000 (``stop``: the
    socket ends), or None (open)."""


def predict(frames: list[Frame]) -> Outcome:
    conn = MediaConnection()
    for i, frame in enumerate(frames):
        raw = frame.encode() if isinstance(frame, str) else frame
        if len(raw) > WS_MAX_SIZE:
            return Outcome(i + 1, 1009)
        if isinstance(frame, bytes) or len(frame) > _MAX_FRAME:
            return Outcome(i + 1, 1003)
        try:
            msg = conn.receive(frame)
        except MediaProtocolError:
            return Outcome(i + 1, 1003)
        if isinstance(msg, Start) and TOKENS.refusal(msg.start.call_sid, msg.start.custom_parameters.get(PARAMETER)):
            return Outcome(i + 1, 1008)
        if isinstance(msg, Stop):
            return Outcome(i + 1, 1000)
    return Outcome(len(frames), None)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def protocol_closes(self) -> list[logging.LogRecord]:
        return [r for r in self.records if r.getMessage().startswith("closing a media socket: ")]

    def errors(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records if r.levelno >= logging.ERROR]


class GoodCall:
    """A well-behaved call on its own socket: a media frame every 4 ms until told to stop, then ``stop``."""

    def __init__(self, url: str, bus: MemoryBus) -> None:
        self.url, self.bus = url, bus
        self.sent = 0
        self.chunks: list[int] = []
        self.closed_by_server: str | None = None
        self.done = asyncio.Event()

    async def stream(self) -> None:
        async with async_connect(self.url) as ws:
            await ws.send(dumps(connected()))
            await ws.send(dumps(start(1, GOOD_CALL)))
            try:
                while not self.done.is_set():
                    self.sent += 1
                    await ws.send(dumps(media(self.sent + 1, self.sent, bytes([self.sent % 256]) * 160)))
                    await asyncio.sleep(0.004)
                await ws.send(dumps(stop(self.sent + 2, GOOD_CALL)))
            except ConnectionClosed as exc:
                self.closed_by_server = repr(exc)

    async def collect(self) -> None:
        """Read the call's ``audio.in`` as stt would (it is trimmed to AUDIO_IN_MAXLEN entries)."""
        position = "0-0"
        stream = keys.audio_in(GOOD_CALL)
        while True:
            for entry in await self.bus.read({stream: position}, count=1000, block_ms=50):
                position = entry.id
                frame = ev.decode(entry.data)
                assert isinstance(frame, ev.AudioFrame)
                assert frame.payload == bytes([frame.chunk % 256]) * 160
                self.chunks.append(frame.chunk)


class LiveGateway:
    """The gateway app under uvicorn on 127.0.0.1:<free port>, on an event loop of its own thread."""

    def __init__(self) -> None:
        self.bus = MemoryBus()
        self.app = create_app(SETTINGS, bus=self.bus, records=SqliteRecordStore(":memory:"))
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            ws="websockets-sansio",
            ws_max_size=WS_MAX_SIZE,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-gateway", daemon=True)
        self.thread.start()
        self.serving = asyncio.run_coroutine_threadsafe(self.server.serve(), self.loop)
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and not self.serving.done(), "uvicorn did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}{MEDIA_PATH}"

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def live_calls(self) -> set[str]:
        async def calls() -> set[str]:
            return set(self.app.state.registry.sessions)

        return self.run(calls())  # type: ignore[no-any-return]

    def close(self) -> None:
        self.server.should_exit = True
        self.serving.result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def live() -> Iterator[tuple[LiveGateway, Records]]:
    records = Records()
    root = logging.getLogger()
    root.addHandler(records)
    old_level = root.level
    root.setLevel(logging.INFO)
    gateway = LiveGateway()
    try:
        yield gateway, records
    finally:
        gateway.close()
        root.removeHandler(records)
        root.setLevel(old_level)


def _send_all(ws: ClientConnection, frames: list[Frame]) -> None:
    for frame in frames:
        ws.send(frame)


def _closed_with(ws: ClientConnection, timeout: float = 10) -> int | None:
    """Wait for the server to close; its close code (None: closed without a close frame)."""
    with pytest.raises(ConnectionClosed) as info:
        while True:  # the gateway sends nothing to a socket without a bus session: any message is a failure
            message = ws.recv(timeout=timeout)
            raise AssertionError(f"unexpected message from the gateway: {message!r}")
    return info.value.rcvd.code if info.value.rcvd is not None else None


def _run_against_good_call(live: LiveGateway, records: Records, body: Callable[[], None]) -> GoodCall:
    good = GoodCall(live.url, live.bus)
    streaming = asyncio.run_coroutine_threadsafe(good.stream(), live.loop)
    collecting = asyncio.run_coroutine_threadsafe(good.collect(), live.loop)
    deadline = time.monotonic() + 10
    while GOOD_CALL not in live.live_calls():
        assert time.monotonic() < deadline, "the good call never started"
        time.sleep(0.01)
    body()
    assert GOOD_CALL in live.live_calls() and good.closed_by_server is None
    live.loop.call_soon_threadsafe(good.done.set)
    streaming.result(10)
    deadline = time.monotonic() + 10
    while GOOD_CALL in live.live_calls() or len(good.chunks) < good.sent:
        assert time.monotonic() < deadline, (good.sent, len(good.chunks))
        time.sleep(0.01)
    collecting.cancel()
    assert good.closed_by_server is None
    assert good.chunks == list(range(1, good.sent + 1)), "the good call lost or reordered audio"
    assert records.errors() == []
    return good


def test_gw_fuzz_media_socket_closes_only_the_offender(live: tuple[LiveGateway, Records]) -> None:
    gateway, records = live
    fuzz_sids = (f"CAfuzz{n}" for n in itertools.count())
    inputs = sockets = refused = 0

    @settings(FUZZ, max_examples=500, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        nonlocal inputs, sockets, refused
        frames = data.draw(call_script(next(fuzz_sids)))
        outcome = predict(frames)
        logged = len(records.protocol_closes())
        with sync_connect(gateway.url, max_size=None, open_timeout=10, close_timeout=5) as ws:
            _send_all(ws, frames[: outcome.sent])
            inputs += outcome.sent
            sockets += 1
            if outcome.close is None:
                return
            code = _closed_with(ws)
        # after ``stop`` the handler returns and uvicorn drops the connection (no close frame: code None)
        expected = (1000, None) if outcome.close == 1000 else (outcome.close,)
        assert code in expected, (code, outcome, frames[outcome.sent - 1][:200])
        if outcome.close in (1003, 1008):
            refused += 1
            assert len(records.protocol_closes()) == logged + 1  # the reason is logged once per refused socket
        assert GOOD_CALL in gateway.live_calls()

    good = _run_against_good_call(gateway, records, check)
    assert inputs >= 10_000, inputs
    assert refused > sockets // 4, (refused, sockets)  # most sequences are broken somewhere
    assert good.sent > 100


def test_gw_fuzz_flood_and_nasty_frames_leave_other_call_alone(live: tuple[LiveGateway, Records]) -> None:
    """A socket flooding 20,000 frames (half repeated or out of order), then frames over the limits, binary
    frames, and each of :data:`NASTY` (but the lone surrogate, which no websocket text frame can carry)."""
    gateway, records = live
    flood: list[Frame] = [dumps(connected()), dumps(start(1, "CAflood"))]
    for seq in range(2, 10_002):
        flood.append(dumps(media(seq, seq)))
        flood.append(dumps(media(seq - 1 if seq % 2 else 1, seq)))  # repeated sequence numbers: dropped

    def body() -> None:
        with sync_connect(gateway.url, max_size=None, close_timeout=5) as ws:
            _send_all(ws, flood)
            ws.send(dumps(media(20_000, 1, b"\x00" * (_MAX_FRAME // 2))))  # within the limit, accepted
            ws.send(dumps(media(20_001, 2, b"\x00" * _MAX_FRAME)))  # over _MAX_FRAME: refused
            assert _closed_with(ws, timeout=30) == 1003
        with sync_connect(gateway.url, max_size=None, close_timeout=5) as ws:
            ws.send("x" * (WS_MAX_SIZE + 1))
            assert _closed_with(ws) == 1009
        with sync_connect(gateway.url, max_size=None, close_timeout=5) as ws:
            ws.send(b"\x00" * 100)
            assert _closed_with(ws) == 1003
        multibyte = dumps({"event": "é" * 100})  # its close reason must be cut to 123 bytes, not characters
        for i, frame in enumerate([multibyte] + [f for name, f, _ in NASTY if name != "lone surrogate"]):
            with sync_connect(gateway.url, max_size=None, close_timeout=5) as ws:
                ws.send(dumps(connected()))
                if _event_of(frame) != "start":
                    ws.send(dumps(start(1, f"CAnasty{i}")))
                ws.send(frame)
                assert _closed_with(ws) == 1003, frame[:100]

    _run_against_good_call(gateway, records, body)
    reasons = [r.getMessage() for r in records.protocol_closes()]
    assert len(reasons) == 3 + len(NASTY) - 1
    assert "exceeds 65536" in reasons[0] and "binary frame of 100 bytes" in reasons[1]

    async def flood_audio() -> list[int]:
        frames = [ev.decode(e.data) for e in await gateway.bus.range(keys.audio_in("CAflood"))]
        return [f.chunk for f in frames if isinstance(f, ev.AudioFrame)]

    chunks = gateway.run(flood_audio())
    # in order and duplicate-free; the late chunk 1 was refused by the stream (its id is below the top)
    assert chunks == sorted(set(chunks)) and chunks[-1] == 10_001
