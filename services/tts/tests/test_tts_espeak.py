"""espeak-ng through ctypes, against the real library from espeakng-loader."""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt
import pytest

from voxcart.tts.espeak import DEFAULT_VOICE, EspeakError, VoiceSettings, get_espeak

SENTENCE = "Thanks for calling. How can I help you today?"


def _synth(text: str, settings: VoiceSettings) -> tuple[npt.NDArray[np.int16], bool]:
    blocks: list[npt.NDArray[np.int16]] = []

    def sink(block: npt.NDArray[np.int16]) -> bool:
        blocks.append(block)
        return True

    result = get_espeak().synthesize(text, settings, sink)
    audio = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int16)
    assert result.samples == len(audio)
    return audio, result.completed


def test_one_engine_per_process_even_across_threads() -> None:
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(get_espeak())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 4 and all(e is get_espeak() for e in seen)
    assert get_espeak().sample_rate == 22050
    assert get_espeak().version.startswith("1.52")


def test_synthesizes_int16_speech_of_plausible_length() -> None:
    audio, completed = _synth(SENTENCE, VoiceSettings())
    assert completed
    assert audio.dtype == np.int16
    seconds = len(audio) / get_espeak().sample_rate
    assert 1.5 < seconds < 5.0, seconds
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    assert rms > 1000, rms


def test_rate_changes_duration() -> None:
    slow, _ = _synth(SENTENCE, VoiceSettings(rate=120))
    fast, _ = _synth(SENTENCE, VoiceSettings(rate=300))
    assert len(fast) < 0.6 * len(slow)


def test_sink_returning_false_aborts() -> None:
    blocks: list[int] = []

    def two_blocks(block: npt.NDArray[np.int16]) -> bool:
        blocks.append(len(block))
        return len(blocks) < 2

    result = get_espeak().synthesize(SENTENCE * 3, VoiceSettings(), two_blocks)
    assert not result.completed
    assert len(blocks) == 2 and result.samples == sum(blocks)


def test_sink_error_is_reraised_and_engine_stays_usable() -> None:
    def boom(_block: npt.NDArray[np.int16]) -> bool:
        raise KeyError("sink failed")

    with pytest.raises(KeyError, match="sink failed"):
        get_espeak().synthesize(SENTENCE, VoiceSettings(), boom)
    audio, completed = _synth("still works", VoiceSettings())
    assert completed and len(audio) > 0


def test_unknown_voice_is_named_and_engine_recovers() -> None:
    with pytest.raises(EspeakError, match="'xx-nope'.*unknown voice"):
        get_espeak().check_voice(VoiceSettings(voice="xx-nope"))
    with pytest.raises(EspeakError, match="unknown voice"):
        _synth("hello", VoiceSettings(voice="xx-nope"))
    audio, completed = _synth("hello", VoiceSettings(voice=DEFAULT_VOICE))
    assert completed and len(audio) > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 50}, r"VoiceSettings.rate: expected 80..450, got 50"),
        ({"pitch": 101}, r"VoiceSettings.pitch: expected 0..100, got 101"),
        ({"volume": -1}, r"VoiceSettings.volume: expected 0..200, got -1"),
        ({"voice": "en us"}, r"VoiceSettings.voice: expected an espeak voice name"),
        ({"voice": ""}, r"VoiceSettings.voice"),
    ],
)
def test_voice_settings_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VoiceSettings(**kwargs)  # type: ignore[arg-type]
