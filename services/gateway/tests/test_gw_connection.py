"""Media socket state machine: legal and illegal transitions, sequence accounting, marks across a clear."""

from __future__ import annotations

import json

import pytest

from voxcart.gateway.twilio.connection import IllegalTransition, MediaConnection, SocketState
from voxcart.gateway.twilio.media import Media, MediaProtocolError, Start

SID = "MZ" + "a" * 32
CALL = "CA" + "b" * 32
CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def start(seq: int = 1, sid: str = SID, encoding: str = "audio/x-mulaw") -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "streamSid": sid,
            "start": {
                "streamSid": sid,
                "accountSid": "AC" + "c" * 32,
                "callSid": CALL,
                "tracks": ["inbound"],
                "customParameters": {"session": "s1"},
                "mediaFormat": {"encoding": encoding, "sampleRate": 8000, "channels": 1},
            },
        }
    )


def media(seq: int, chunk: int | None = None) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": SID,
            "media": {
                "track": "inbound",
                "chunk": str(chunk or seq - 1),
                "timestamp": str(20 * seq),
                "payload": "/w==",
            },
        }
    )


def other(event: str, seq: int, body: dict[str, str]) -> str:
    return json.dumps({"event": event, "sequenceNumber": str(seq), "streamSid": SID, event: body})


def started() -> MediaConnection:
    conn = MediaConnection()
    conn.receive(CONNECTED)
    conn.receive(start())
    return conn


def state(conn: MediaConnection) -> SocketState:
    return conn.state  # a call, so mypy does not carry narrowing across transitions


def test_gw_lifecycle_and_sids() -> None:
    conn = MediaConnection()
    assert state(conn) is SocketState.CONNECTING
    conn.receive(CONNECTED)
    assert state(conn) is SocketState.CONNECTED
    msg = conn.receive(start())
    assert isinstance(msg, Start) and state(conn) is SocketState.STARTED
    assert (conn.stream_sid, conn.call_sid, conn.custom_parameters) == (SID, CALL, {"session": "s1"})
    assert isinstance(conn.receive(media(2)), Media)
    conn.receive(other("stop", 3, {"accountSid": "AC", "callSid": CALL}))
    assert state(conn) is SocketState.STOPPED
    with pytest.raises(IllegalTransition, match="STOPPED received another frame"):
        conn.receive(media(4))
    with pytest.raises(IllegalTransition, match="cannot send media"):
        conn.media_frame(b"\xff")
    conn.close()
    conn.close()
    assert state(conn) is SocketState.CLOSED


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([start()], "CONNECTING cannot take a 'start' message"),
        ([media(2)], "CONNECTING received 'media' before 'start'"),
        ([CONNECTED, CONNECTED], "CONNECTED cannot take a 'connected'"),
        ([CONNECTED, other("mark", 2, {"name": "x"})], "received 'mark' before 'start'"),
        ([CONNECTED, start(), start(seq=2)], "STARTED cannot take a 'start'"),
    ],
)
def test_gw_illegal_transitions_raise(frames: list[str], message: str) -> None:
    conn = MediaConnection()
    with pytest.raises(IllegalTransition, match=message):
        for frame in frames:
            conn.receive(frame)


def test_gw_wrong_stream_and_format_are_protocol_errors() -> None:
    conn = started()
    with pytest.raises(MediaProtocolError, match="names stream 'MZother'"):
        conn.receive(media(2).replace(SID, "MZother"))
    conn = MediaConnection()
    conn.receive(CONNECTED)
    with pytest.raises(MediaProtocolError, match="unsupported media format"):
        conn.receive(start(encoding="audio/l16"))
    assert state(conn) is SocketState.CONNECTED  # a refused start does not start the stream
    with pytest.raises(IllegalTransition, match="cannot send media on a media socket in state CONNECTED"):
        conn.media_frame(b"")


def test_gw_sequence_gaps_and_duplicates() -> None:
    conn = started()
    assert conn.receive(media(2)) is not None
    assert conn.receive(media(2)) is None  # duplicate dropped
    assert conn.receive(media(5)) is not None  # 3 and 4 missing
    assert conn.receive(media(4)) is None  # late: not above the last one
    assert (conn.seq_gaps, conn.seq_duplicates, conn.media_frames, conn.last_seq, conn.last_chunk) == (2, 2, 2, 5, 4)


def test_gw_marks_played_vs_cleared() -> None:
    conn = started()
    frames = [json.loads(conn.mark_frame(n)) for n in ("t1-s0", "t1-s1", "t1-s2")]
    assert frames[0] == {"event": "mark", "streamSid": SID, "mark": {"name": "t1-s0"}}
    assert conn.on_mark_echo("t1-s0") is True  # played before the clear
    assert json.loads(conn.clear_frame()) == {"event": "clear", "streamSid": SID}
    conn.mark_frame("t2-s0")  # sent after the clear: a normal mark
    assert conn.outstanding_marks == ("t2-s0",)
    assert conn.on_mark_echo("t1-s1") is False
    assert conn.on_mark_echo("t1-s2") is False
    assert conn.on_mark_echo("t2-s0") is True
    assert conn.on_mark_echo("t1-s2") is False  # echoed twice: unknown now
    assert conn.on_mark_echo("nope") is False
    assert (conn.marks_sent, conn.marks_played, conn.marks_cleared, conn.unknown_marks, conn.clears_sent) == (
        4,
        2,
        2,
        2,
        1,
    )
    conn.mark_frame("t3-s0")
    with pytest.raises(ValueError, match="already outstanding"):
        conn.mark_frame("t3-s0")
