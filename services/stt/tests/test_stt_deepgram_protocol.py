"""Deepgram's wire format without a network: the listen URL, server messages as typed values, and their errors."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from voxcart.stt.deepgram_protocol import (
    MAX_KEYTERMS,
    Metadata,
    Results,
    ServerError,
    SpeechStarted,
    Unknown,
    UtteranceEnd,
    parse_message,
    query_url,
    retry_after,
)


def _query(url: str) -> list[tuple[str, str]]:
    return urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)


def test_the_listen_url_asks_for_mulaw_8k_interim_results_and_keyterms_on_nova_3() -> None:
    url = query_url(
        "wss://api.deepgram.com/v1/listen",
        model="nova-3",
        end_silence_ms=600,
        utterance_end_ms=1000,
        language="en",
        keyterms=["Trail Hoodie", "beanie"],
    )
    params = _query(url)
    assert ("encoding", "mulaw") in params and ("sample_rate", "8000") in params and ("channels", "1") in params
    assert ("interim_results", "true") in params and ("vad_events", "true") in params
    assert ("endpointing", "600") in params and ("utterance_end_ms", "1000") in params
    assert [v for k, v in params if k == "keyterm"] == ["Trail Hoodie", "beanie"]
    assert "Trail%20Hoodie" in url  # spaces quoted, not '+'


def test_keyterms_are_capped_and_left_out_for_older_models_and_an_existing_query_is_kept() -> None:
    many = [f"term{i}" for i in range(MAX_KEYTERMS + 10)]
    capped = _query(
        query_url(
            "ws://h/v1/listen", model="nova-3", end_silence_ms=1, utterance_end_ms=1000, language="en", keyterms=many
        )
    )
    assert len([1 for k, _ in capped if k == "keyterm"]) == MAX_KEYTERMS
    older = query_url(
        "ws://h/v1/listen?tier=x", model="nova-2", end_silence_ms=1, utterance_end_ms=1000, language="en", keyterms=many
    )
    assert "keyterm" not in older and older.startswith("ws://h/v1/listen?tier=x&")


def test_results_carry_the_first_alternative_its_word_span_and_flags() -> None:
    raw = json.dumps(
        {
            "type": "Results",
            "start": 1.5,
            "duration": 2.0,
            "is_final": True,
            "speech_final": True,
            "channel": {
                "alternatives": [
                    {
                        "transcript": "Where is  my ORDER",
                        "confidence": 0.93,
                        "words": [
                            {"word": "where", "start": 1.6, "end": 1.8},
                            {"word": "order", "start": 2.9, "end": 3.3},
                        ],
                    }
                ]
            },
        }
    )
    message = parse_message(raw)
    assert message == Results(
        transcript="where is my order",
        words=2,
        word_span=(1.6, 3.3),
        confidence=0.93,
        end=3.5,
        is_final=True,
        speech_final=True,
        from_finalize=False,
    )


def test_the_other_messages() -> None:
    assert parse_message('{"type": "SpeechStarted", "timestamp": 0.42}') == SpeechStarted(0.42)
    assert parse_message('{"type": "UtteranceEnd", "last_word_end": 3.3}') == UtteranceEnd(3.3)
    assert parse_message('{"type": "Metadata", "request_id": "r1", "duration": 12.5}') == Metadata("r1", 12.5)
    failure = '{"type": "ConfigureFailure", "message": "bad keyterm"}'
    assert parse_message(failure) == ServerError("ConfigureFailure", failure)
    assert parse_message('{"type": "Novel"}') == Unknown("Novel", '{"type": "Novel"}')


@pytest.mark.parametrize(
    "raw",
    ["not json", '{"type": "Results", "channel": {}}', '{"type": "SpeechStarted"}', '{"type": "UtteranceEnd"}'],
)
def test_a_malformed_message_raises_instead_of_being_half_read(raw: str) -> None:
    with pytest.raises((ValueError, KeyError, IndexError, TypeError)):
        parse_message(raw)


@pytest.mark.parametrize(
    ("value", "seconds"), [("2", 2.0), ("0.5", 0.5), ("-3", 0.0), (None, 1.0), ("Wed, 21 Oct 2026 07:28:00 GMT", 1.0)]
)
def test_retry_after_takes_delta_seconds_only(value: str | None, seconds: float) -> None:
    assert retry_after(value, 1.0) == seconds
