"""The RNNoise denoiser with the real librnnoise, alone and in the endpointer: noise removed, speech kept,
silence silent, frame sizes, bit-exact state reset, bad input; ``denoise="auto"`` leaves a quiet line untouched,
denoises a noisy one, and a fresh endpointer fed the frames after ``base_entry`` still makes every decision."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from voxcart.common.audio import pcm16_to_ulaw, ulaw_to_pcm16
from voxcart.stt.denoise import DRY_MIX, NOISY_DRY_MIX, Denoiser, librnnoise_path, state_bytes
from voxcart.stt.endpointer import EndpointerConfig, Step, VadEndpointer

Int16Array = npt.NDArray[np.int16]

DELAY = 208
"""The denoiser's delay in 8 kHz samples (26 ms)."""


def _denoise(denoiser: Denoiser, pcm: Int16Array) -> Int16Array:
    frames = [denoiser.process(pcm[i : i + 160].tobytes()) for i in range(0, len(pcm) // 160 * 160, 160)]
    return np.frombuffer(b"".join(frames), dtype=np.int16)


def _rms(x: npt.NDArray[np.generic]) -> float:
    values = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(np.mean(values**2)))


def _noise(level: float, samples: int, seed: int) -> npt.NDArray[np.float64]:
    return np.random.default_rng(seed).normal(0.0, level, samples)


def _phone(pcm: npt.NDArray[np.float64]) -> Int16Array:
    """Through the μ-law path, whole 20 ms frames."""
    clipped = np.clip(pcm[: len(pcm) // 160 * 160], -32768, 32767).astype(np.int16)
    return ulaw_to_pcm16(pcm16_to_ulaw(clipped))


@pytest.fixture(scope="module")
def sentence(speech: Callable[[str], bytes]) -> Int16Array:
    """600 ms of digital silence, "is the blue hoodie in stock in medium", 1 s of silence; int16."""
    return ulaw_to_pcm16(speech("is the blue hoodie in stock in medium"))


def test_noise_is_removed_and_speech_kept(sentence: Int16Array) -> None:
    """White noise 10 dB under the words: -20 dB or more on the noise alone, the words within 3 dB and in
    step with the input once the 26 ms delay is taken off."""
    clean = sentence.astype(np.float64)
    words = np.abs(clean) > 0
    level = _rms(clean[words]) / 10 ** (10 / 20)
    lead = _noise(level, 8000, seed=1)  # 1 s of noise alone first
    noisy = _phone(np.concatenate([lead, clean + _noise(level, len(clean), seed=2)]))
    out = _denoise(Denoiser(), noisy).astype(np.float64)
    noise_in, noise_out = _rms(noisy[4000:8000]), _rms(out[4000 + DELAY : 8000])
    assert 20 * np.log10(noise_in / noise_out) >= 20, (noise_in, noise_out)
    speech_span = 8000 + np.flatnonzero(words)
    first, last = int(speech_span[0]), int(speech_span[-1]) - DELAY
    speech_out = out[first + DELAY : last + DELAY]
    assert abs(20 * np.log10(_rms(speech_out) / _rms(clean[first - 8000 : last - 8000]))) <= 3
    correlation = np.corrcoef(speech_out, clean[first - 8000 : last - 8000])[0, 1]
    assert correlation >= 0.8, correlation


def test_clean_speech_comes_out_delayed_26_ms(sentence: Int16Array) -> None:
    out = _denoise(Denoiser(), sentence).astype(np.float64)
    x = sentence.astype(np.float64)
    scores = {lag: float(np.dot(x[: len(x) - lag], out[lag:])) for lag in range(400)}
    assert max(scores, key=lambda lag: scores[lag]) == DELAY
    assert np.corrcoef(x[: len(x) - DELAY], out[DELAY:])[0, 1] >= 0.95


def test_a_steady_tone_is_noise_to_it() -> None:
    t = np.arange(8000 * 2) / 8000
    tone = _phone(3000 * np.sin(2 * np.pi * 440 * t))
    out = _denoise(Denoiser(), tone)
    assert _rms(out[8000:]) < 0.15 * _rms(tone[8000:])  # the dry mix (0.1) and little more


def test_silence_stays_silent_and_frames_are_20_ms() -> None:
    denoiser = Denoiser()
    assert all(denoiser.process(bytes(320)) == bytes(320) for _ in range(50))
    loud = _phone(_noise(2000, 160, seed=3))
    assert len(denoiser.process(loud.tobytes())) == 320


def test_reset_gives_a_fresh_denoisers_output_bit_for_bit(sentence: Int16Array) -> None:
    noisy = _phone(sentence + _noise(300, len(sentence), seed=4))
    first, second = noisy[: 160 * 60], noisy[160 * 60 :]
    fresh = _denoise(Denoiser(), second)
    denoiser = Denoiser()
    warm = _denoise(denoiser, first)
    assert not np.array_equal(_denoise(denoiser, second), fresh)  # the state carries over...
    denoiser.reset()
    assert np.array_equal(_denoise(denoiser, second), fresh)  # ...until a reset
    assert np.array_equal(_denoise(Denoiser(), first), warm)


def test_bad_input_and_closed_denoiser() -> None:
    denoiser = Denoiser()
    for size in (0, 160, 319, 640):
        with pytest.raises(ValueError, match=f"Denoiser.process: {size} PCM bytes, expected 320"):
            denoiser.process(bytes(size))
    denoiser.close()
    denoiser.close()
    with pytest.raises(RuntimeError, match="the denoiser is closed"):
        denoiser.process(bytes(320))
    denoiser.reset()  # a reset reopens it
    assert denoiser.process(bytes(320)) == bytes(320)


def test_dry_mix_is_the_suppression_floor() -> None:
    """On loud noise RNNoise's own output is nearly silent: what is left is the dry share of the input."""
    noise = _phone(_noise(2000.0, 8000 * 2, seed=8))
    tail = slice(8000, None)  # after the network has settled
    kept = {dry: _rms(_denoise(Denoiser(dry), noise)[tail]) / _rms(noise[tail]) for dry in (DRY_MIX, NOISY_DRY_MIX)}
    assert kept[NOISY_DRY_MIX] < kept[DRY_MIX] <= 1.5 * DRY_MIX
    assert kept[NOISY_DRY_MIX] <= 1.5 * NOISY_DRY_MIX
    with pytest.raises(ValueError, match="dry_mix"):
        Denoiser(1.5)


def test_library_and_state_size() -> None:
    assert librnnoise_path().name == "librnnoise.so"
    assert 20_000 < state_bytes() < 64_000


# -- in the endpointer ---------------------------------------------------------------------------------------


def _frames(pcm: Int16Array) -> list[tuple[str, bytes]]:
    return [(f"1-{k + 1}", pcm[i : i + 160].tobytes()) for k, i in enumerate(range(0, len(pcm), 160))]


def _run(ep: VadEndpointer, frames: list[tuple[str, bytes]], first: int = 0) -> list[Step]:
    return [ep.process(entry_id, pcm, 20.0 * (first + k)) for k, (entry_id, pcm) in enumerate(frames)]


def _call(speech: Callable[[str], bytes], level: float, seed: int) -> list[tuple[str, bytes]]:
    """Three sentences with noise at ``level`` RMS over the whole stream (pauses included)."""
    texts = ["i want to return my shoes", "yes", "goodbye"]
    clean = np.concatenate([ulaw_to_pcm16(speech(text)).astype(np.float64) for text in texts])
    return _frames(_phone(clean + _noise(level, len(clean), seed)))


def test_auto_leaves_a_quiet_line_untouched(speech: Callable[[str], bytes]) -> None:
    stream = _call(speech, 30.0, seed=5)
    auto = VadEndpointer(EndpointerConfig(denoise="auto"))
    steps = _run(auto, stream)
    assert not auto.denoising
    assert steps == _run(VadEndpointer(EndpointerConfig(denoise="off")), stream)
    assert sum(s.ended for s in steps) == 3


def test_auto_denoises_a_noisy_line(speech: Callable[[str], bytes]) -> None:
    stream = _call(speech, 500.0, seed=6)
    ep = VadEndpointer(EndpointerConfig(denoise="auto"))
    steps = _run(ep, stream[:9])
    assert not ep.denoising  # under denoise_after_ms of line heard
    steps += _run(ep, stream[9:], first=9)
    assert ep.denoising
    started = [s for s in steps if s.started]
    assert len(started) == 3 and sum(s.ended for s in steps) == 3
    pre_roll = started[0].frames[0]
    assert pre_roll.pcm != pre_roll.line and pre_roll.rms < 100  # the pre-roll the decoder gets is denoised


@pytest.mark.parametrize(("level", "dry"), [(150.0, DRY_MIX), (500.0, NOISY_DRY_MIX)])
def test_auto_suppresses_deeper_on_a_loud_line(speech: Callable[[str], bytes], level: float, dry: float) -> None:
    """Over ``noisy_floor`` (300 RMS; the bench's 10 dB calls, ~500) the denoiser keeps less of the line."""
    ep = VadEndpointer(EndpointerConfig(denoise="auto"))
    _run(ep, _call(speech, level, seed=7)[:40])
    assert ep._denoiser is not None and ep._denoiser.dry_mix == dry  # which denoiser it made is the point here


@pytest.mark.parametrize("denoise", ["auto", "on"])
def test_fresh_endpointer_from_base_entry_reproduces_every_decision_when_denoising(
    speech: Callable[[str], bytes], denoise: str
) -> None:
    """Replay determinism (what a takeover relies on): after every utterance end and every checkpoint rebase,
    a fresh endpointer fed the frames after ``base_entry`` makes the same steps, audio included (and rebases
    where the first one did)."""
    stream = _call(speech, 500.0, seed=7)
    config = EndpointerConfig(denoise=denoise)  # type: ignore[arg-type]
    ep = VadEndpointer(config)
    steps: list[Step] = []
    bases: list[tuple[int, str]] = []
    for k, (entry_id, pcm) in enumerate(stream):
        steps.append(ep.process(entry_id, pcm, 20.0 * k))
        if steps[-1].ended or (k % 37 == 0 and ep.rebase() is not None):  # checkpoints while idle too
            bases.append((k, ep.base_entry))
    assert sum(s.ended for s in steps) == 3 and len(bases) > 3
    for at, base in bases:
        replay = VadEndpointer(config, start_after=base)
        resume = int(base.split("-")[1])
        _run(replay, stream[resume : at + 1], first=resume)
        for k in range(at + 1, len(stream)):
            assert replay.process(*stream[k], 20.0 * k) == steps[k], (at, k)
            if k % 37 == 0:
                replay.rebase()  # the new owner checkpoints where the old one would have


def test_bad_denoise_config() -> None:
    with pytest.raises(ValueError, match="EndpointerConfig.denoise: 'yes' is not 'auto', 'on' or 'off'"):
        EndpointerConfig(denoise="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="denoise_after_ms: 1000 must be within 20..pre_roll_ms"):
        EndpointerConfig(denoise_after_ms=1000)
    with pytest.raises(ValueError, match="denoise_floor: -1"):
        EndpointerConfig(denoise_floor=-1)
