"""The simulated caller's piper voice: integrity check, phone framing, determinism, and that STT understands it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxcart.cli import caller_voice
from voxcart.cli.caller_voice import VOICE_MD5, VoiceIntegrityError, synthesize_caller, voice_model_path
from voxcart.common.audio import FRAME_BYTES, silence_ulaw, ulaw_rms, ulaw_to_pcm16
from voxcart.stt.recognizer import CallRecognizer, Final, RecognizerModel
from voxcart.tts import piper


def test_voice_file_is_the_upstream_one() -> None:
    path = voice_model_path()
    assert path.is_file() and Path(f"{path}.json").is_file()
    assert path == piper.joe_voice_path()  # one place locates the voice for the agent and the caller
    assert piper.file_digest(path, "md5") == VOICE_MD5


def test_phone_framing_and_level() -> None:
    audio = synthesize_caller("I want to return my shoes.")
    assert len(audio) % FRAME_BYTES == 0
    seconds = len(audio) / 8000
    assert 1.0 < seconds < 3.0
    assert 500 < ulaw_rms(audio) < 6000  # a normal telephone speech level, well clear of clipping
    assert np.abs(ulaw_to_pcm16(audio)).max() < 32000


def test_lead_and_tail_silence_are_whole_frames() -> None:
    bare = synthesize_caller("goodbye")
    padded = synthesize_caller("goodbye", lead_ms=610, tail_ms=1000)
    assert padded == silence_ulaw(30 * FRAME_BYTES) + bare + silence_ulaw(50 * FRAME_BYTES)


def test_deterministic_unless_asked_to_vary() -> None:
    assert synthesize_caller("talk to a person") == synthesize_caller("talk to a person")
    assert synthesize_caller("talk to a person", variation=1.0) != synthesize_caller("talk to a person")


def test_speed() -> None:
    normal = len(synthesize_caller("is the blue hoodie in stock in medium"))
    fast = len(synthesize_caller("is the blue hoodie in stock in medium", speed=1.5))
    assert 0.55 < fast / normal < 0.8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "  "}, "text is empty"),
        ({"text": "hi", "speed": 0.1}, "speed 0.1"),
        ({"text": "hi", "variation": -1.0}, "variation -1.0"),
        ({"text": "hi", "lead_ms": -20}, "lead_ms -20"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthesize_caller(**kwargs)  # type: ignore[arg-type]


def test_tampered_voice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "en_US-joe-medium.onnx"
    fake.write_bytes(b"not the voice")
    Path(f"{fake}.json").write_bytes(Path(f"{voice_model_path()}.json").read_bytes())
    monkeypatch.setattr(caller_voice, "_voice", None)
    monkeypatch.setattr(piper, "joe_voice_path", lambda: fake)
    with pytest.raises(VoiceIntegrityError, match=f"{fake}: md5 [0-9a-f]{{32}}, expected {VOICE_MD5}; refusing"):
        synthesize_caller("hello")


def test_pocketsphinx_understands_the_caller() -> None:
    model = RecognizerModel.build(["where is my order", "i want to return my shoes", "talk to a person", "goodbye"])
    recognizer = CallRecognizer(model, "CAvoice")
    audio = synthesize_caller("i want to return my shoes", lead_ms=600, tail_ms=1000)
    finals = [
        event
        for k in range(0, len(audio), FRAME_BYTES)
        for event in recognizer.feed(f"1-{k}", audio[k : k + FRAME_BYTES], float(k))
        if isinstance(event, Final)
    ]
    model.close()
    assert [f.text for f in finals] == ["i want to return my shoes"]
