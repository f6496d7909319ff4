"""Media Streams codec: Twilio's documented frames decode to typed Structs; bad frames raise clear errors."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from voxcart.gateway.twilio.media import (
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaProtocolError,
    Start,
    Stop,
    decode_frame,
    encode_clear,
    encode_mark,
    encode_media,
)

SID = "MZ" + "1" * 32
AUDIO = bytes(range(256))[:160]


def media_frame(seq: int = 4, chunk: int = 2, payload: bytes = AUDIO, sid: str = SID) -> dict[str, Any]:
    return {
        "event": "media",
        "sequenceNumber": str(seq),
        "streamSid": sid,
        "media": {
            "track": "inbound",
            "chunk": str(chunk),
            "timestamp": "40",
            "payload": base64.b64encode(payload).decode(),
        },
    }


START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": SID,
    "start": {
        "streamSid": SID,
        "accountSid": "AC" + "2" * 32,
        "callSid": "CA" + "3" * 32,
        "tracks": ["inbound"],
        "customParameters": {"session": "sess_9f2", "store": "shop-eu"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "someFutureField": {"x": 1},
    },
}


def test_gw_decode_every_documented_event() -> None:
    connected = decode_frame('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    assert connected == Connected(protocol="Call", version="1.0.0")
    start = decode_frame(json.dumps(START))
    assert isinstance(start, Start)
    assert start.start.call_sid == "CA" + "3" * 32 and start.start.custom_parameters["store"] == "shop-eu"
    assert start.start.media_format.sample_rate == 8000
    media = decode_frame(json.dumps(media_frame()), SID)
    assert isinstance(media, Media)
    assert (media.sequence_number, media.media.chunk, media.media.timestamp) == (4, 2, 40)
    assert media.media.payload == AUDIO
    dtmf = decode_frame(
        json.dumps(
            {"event": "dtmf", "sequenceNumber": "5", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": "#"}}
        ).encode(),
        SID,
    )
    assert isinstance(dtmf, Dtmf) and dtmf.dtmf.digit == "#"
    mark = decode_frame(
        json.dumps({"event": "mark", "sequenceNumber": "9", "streamSid": SID, "mark": {"name": "t7-s3"}}), SID
    )
    assert isinstance(mark, Mark) and mark.mark.name == "t7-s3"
    stop = decode_frame(
        json.dumps(
            {
                "event": "stop",
                "sequenceNumber": "950",
                "streamSid": SID,
                "stop": {"accountSid": "AC1", "callSid": "CA1"},
            }
        ),
        SID,
    )
    assert isinstance(stop, Stop) and stop.sequence_number == 950


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ('{"event":"media",', "malformed JSON"),
        ("", "malformed JSON"),
        ('{"event":"hello","sequenceNumber":"1"}', "unknown event 'hello'"),
        ('{"sequenceNumber":"1"}', "no string 'event' field"),
        ('["media"]', "Expected `object`"),
        (
            json.dumps({**media_frame(), "streamSid": None}),
            "'media' message: Expected `str`, got `null` - at `$.streamSid`",
        ),
        (json.dumps({k: v for k, v in media_frame().items() if k != "media"}), "missing required field `media`"),
        (json.dumps(media_frame(seq=-1)), "at `$.sequenceNumber`"),
        (json.dumps(media_frame()).replace('"chunk": "2"', '"chunk": "two"'), "at `$.media.chunk`"),
        (json.dumps(media_frame()).replace('"payload": "', '"payload": "!!'), "Invalid base64 encoded string"),
        (
            json.dumps(
                {"event": "dtmf", "sequenceNumber": "5", "streamSid": SID, "dtmf": {"track": "t", "digit": "12"}}
            ),
            "at `$.dtmf.digit`",
        ),
        (json.dumps(media_frame(sid="MZother")), "names stream 'MZother', but this socket carries"),
    ],
)
def test_gw_bad_frames_raise_clear_errors(frame: str, message: str) -> None:
    with pytest.raises(MediaProtocolError, match=message.replace("(", r"\(").replace("$", r"\$").replace("`", "`")):
        decode_frame(frame, SID)


def test_gw_encode_outbound_frames() -> None:
    media = json.loads(encode_media(SID, AUDIO))
    assert media == {"event": "media", "streamSid": SID, "media": {"payload": base64.b64encode(AUDIO).decode()}}
    assert json.loads(encode_mark(SID, 'turn "7"\n')) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": 'turn "7"\n'},
    }
    assert json.loads(encode_clear(SID)) == {"event": "clear", "streamSid": SID}
    with pytest.raises(ValueError, match="streamSid"):
        encode_clear('MZ"1')
    with pytest.raises(ValueError, match="non-empty"):
        encode_mark(SID, "")


def test_gw_decode_is_fast() -> None:
    """One msgspec decode per frame, base64 included (measured ~1 µs; the bound is loose for busy hosts)."""
    frame = json.dumps(media_frame())
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        decode_frame(frame, SID)
    per_frame_us = (time.perf_counter() - t0) / n * 1e6
    assert per_frame_us < 50, per_frame_us
