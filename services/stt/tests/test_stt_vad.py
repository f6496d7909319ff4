"""Speech detectors on real caller speech and real noise: the Silero ONNX model from the installed wheel, and
WebRTC's GMM VAD from pocketsphinx. Nothing here is faked."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from voxcart.common.audio import pcm16_to_ulaw, ulaw_to_pcm16
from voxcart.stt.vad import SileroVad, SpeechDetector, WebRtcVad, load_silero, new_detector, silero_model_path

Int16 = npt.NDArray[np.int16]


def _frames(pcm: Int16) -> list[tuple[bytes, float]]:
    """20 ms frames with their RMS."""
    out = []
    for i in range(0, len(pcm) - 159, 160):
        frame = pcm[i : i + 160]
        rms = float(np.sqrt(np.mean(frame.astype(np.float64) ** 2)))
        out.append((frame.tobytes(), rms))
    return out


def _probs(detector: SpeechDetector, frames: list[tuple[bytes, float]]) -> list[float]:
    return [detector.probability(pcm, rms) for pcm, rms in frames]


def _phone_noise(level: float, seconds: float, seed: int) -> Int16:
    """White noise at ``level`` RMS through the μ-law path."""
    noise = np.random.default_rng(seed).normal(0, level, int(8000 * seconds))
    return ulaw_to_pcm16(pcm16_to_ulaw(np.clip(noise, -32768, 32767).astype(np.int16)))


@pytest.fixture(scope="module")
def sentence(speech: Callable[[str], bytes]) -> Int16:
    """600 ms of digital silence, "is the blue hoodie in stock in medium", 1 s of silence; int16."""
    return ulaw_to_pcm16(speech("is the blue hoodie in stock in medium"))


def _speech_span(pcm: Int16) -> tuple[int, int]:
    """First and last frame louder than RMS 100 (the words, in audio framed by digital silence)."""
    loud = [k for k, (_, rms) in enumerate(_frames(pcm)) if rms > 100]
    return loud[0], loud[-1]


def test_model_file_is_found_without_importing_the_package() -> None:
    path = silero_model_path()
    assert path.name == "silero_vad.onnx" and path.parent.name == "data" and path.stat().st_size > 100_000
    load_silero()
    SileroVad()
    assert "silero_vad" not in sys.modules  # importing it would need torch


def test_missing_package_or_model_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec

    def absent(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == "silero_vad" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", absent)
    with pytest.raises(FileNotFoundError, match=r"silero_vad package is not installed.*silero-vad==6\.2\.3"):
        silero_model_path()

    def empty(name: str, package: str | None = None) -> ModuleSpec | None:
        if name != "silero_vad":
            return real(name, package)
        spec = ModuleSpec("silero_vad", None, is_package=True)
        spec.submodule_search_locations = [str(tmp_path)]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", empty)
    expected = str(tmp_path / "data" / "silero_vad.onnx")
    with pytest.raises(FileNotFoundError, match=rf"{expected} is missing; reinstall silero-vad==6\.2\.3"):
        silero_model_path()


@pytest.mark.parametrize("prefilter", [True, False], ids=["prefilter", "always"])
def test_silero_finds_the_words_and_not_the_silence(sentence: Int16, prefilter: bool) -> None:
    frames = _frames(sentence)
    probs = _probs(SileroVad(quiet_level=50.0 if prefilter else 0.0), frames)
    first, last = _speech_span(sentence)
    inside = probs[first + 3 : last + 1]  # the model needs a window or two to call the first syllable
    assert np.mean(np.array(inside) >= 0.5) > 0.9
    assert max(probs[: first - 1]) < 0.2  # the lead silence
    assert max(probs[last + 10 :]) < 0.5  # the trailing silence, after the model's ~100 ms decay
    onset = next(k for k, p in enumerate(probs) if p >= 0.5)
    assert 0 <= (onset - first) * 20 <= 100


@pytest.mark.parametrize("level", [30, 100, 300, 1000, 2000])
def test_silero_ignores_white_noise(level: int) -> None:
    """Measured: max probability 0.04-0.06 at every level (WebRTC flags every frame at rms 2000)."""
    probs = _probs(SileroVad(), _frames(_phone_noise(level, 3.0, seed=level)))
    assert max(probs) < 0.3


def test_same_frames_same_probabilities(sentence: Int16) -> None:
    """A fresh detector fed the same frames gives the same probabilities, bit for bit (what replay needs)."""
    hiss = _phone_noise(30, 1.0, seed=1)  # hovers around the pre-filter's level: it holds and resumes
    stream = _frames(np.concatenate([hiss, sentence, hiss, np.zeros(4000, np.int16), sentence]))
    a, b = _probs(SileroVad(), stream), _probs(SileroVad(), stream)
    assert a == b
    assert max(a) > 0.9


def test_prefilter_skips_quiet_frames_and_print_cost(sentence: Int16, capsys: pytest.CaptureFixture[str]) -> None:
    """The pre-filter runs the model only on sound; decisions on the words stay the same. Costs are printed."""
    quiet_line = np.concatenate([np.zeros(8000 * 4, np.int16), _phone_noise(20, 4.0, seed=2)])
    signals = {"speech + silence": sentence, "quiet line": quiet_line, "noise rms 300": _phone_noise(300, 4, 3)}
    report = []
    for name, pcm in signals.items():
        frames = _frames(pcm)
        cost: dict[bool, float] = {}
        for prefilter in (False, True):
            best = float("inf")
            for _ in range(3):
                vad = SileroVad(quiet_level=50.0 if prefilter else 0.0)
                started = time.perf_counter()
                _probs(vad, frames)
                best = min(best, (time.perf_counter() - started) / len(frames) * 1e6)
            cost[prefilter] = best
        report.append(f"{name}: {cost[False]:.0f} µs -> {cost[True]:.0f} µs per frame")
    webrtc = WebRtcVad()
    frames = _frames(sentence)
    started = time.perf_counter()
    _probs(webrtc, frames)
    report.append(f"webrtc: {(time.perf_counter() - started) / len(frames) * 1e6:.1f} µs per frame")
    with capsys.disabled():
        print("\nSilero per-frame cost without -> with the pre-filter: " + "; ".join(report))

    held = SileroVad()
    _probs(held, _frames(quiet_line))
    assert held.windows <= 4  # 4 quiet frames before it holds: at most 640 samples, 2 windows
    frames = _frames(sentence)
    first, last = _speech_span(sentence)
    with_filter = np.array(_probs(SileroVad(), frames)) >= 0.5
    without = np.array(_probs(SileroVad(quiet_level=0.0), frames)) >= 0.5
    agree = with_filter[first + 3 : last + 1] == without[first + 3 : last + 1]
    assert np.mean(agree) > 0.95


def test_webrtc_adapter(sentence: Int16) -> None:
    frames = _frames(sentence)
    probs = _probs(WebRtcVad(), frames)
    assert set(probs) == {0.0, 1.0}
    first, last = _speech_span(sentence)
    assert np.mean(probs[first : last + 1]) > 0.8
    assert max(probs[: first - 2]) == 0.0


def test_new_detector_and_bad_knobs() -> None:
    assert isinstance(new_detector("silero"), SileroVad)
    assert isinstance(new_detector("webrtc", webrtc_mode=2), WebRtcVad)
    with pytest.raises(ValueError, match="unknown VAD 'torch'"):
        new_detector("torch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="WebRtcVad: mode 5 is not 0..3"):
        WebRtcVad(5)
    with pytest.raises(ValueError, match="quiet_level -1"):
        SileroVad(quiet_level=-1)
    with pytest.raises(ValueError, match="quiet_frames 0"):
        SileroVad(quiet_frames=0)
