"""Folding the telephone band above 4 kHz for the decoder: the signal it makes, and when the recognizer uses it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from voxcart.common.audio import Resampler, pcm16_to_ulaw
from voxcart.stt.bandwidth import FOLD_ALPHA, FoldingUpsampler
from voxcart.stt.recognizer import CallRecognizer, RecognizerModel, SpeechStart

Int16Array = npt.NDArray[np.int16]
Entries = list[tuple[str, bytes, float]]


def _tone(hz: float, seconds: float = 1.0, amplitude: float = 8000.0) -> Int16Array:
    t = np.arange(int(8000 * seconds)) / 8000
    return np.round(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def _band(x: Int16Array, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 16000)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def test_no_fold_is_the_plain_upsampler_bit_for_bit() -> None:
    tone = _tone(1000)
    plain, unfolded = Resampler(8000, 16000), FoldingUpsampler(0.0)
    for k in range(0, len(tone), 160):
        assert np.array_equal(unfolded.process(tone[k : k + 160]), plain.process(tone[k : k + 160]))


def test_fold_mirrors_the_band_at_alpha_and_keeps_the_parity_across_blocks() -> None:
    tone = _tone(1000)
    plain, folding = Resampler(8000, 16000), FoldingUpsampler(0.25)
    sizes = [160, 37, 123, 160, 80]  # odd block sizes: the sign must run on across blocks
    blocks: list[Int16Array] = []
    reference: list[Int16Array] = []
    k = 0
    while k < len(tone):
        size = sizes[len(blocks) % len(sizes)]
        blocks.append(folding.process(tone[k : k + size]))
        reference.append(plain.process(tone[k : k + size]))
        k += size
    out, base = np.concatenate(blocks), np.concatenate(reference).astype(np.float64)
    sign = np.where(np.arange(len(base)) % 2 == 0, 1.0, -1.0)
    assert np.array_equal(out, np.clip(np.rint(base * (1 + 0.25 * sign)), -32768, 32767).astype(np.int16))
    skip = out[1600:]  # past the resampler's start-up
    image, tone_power = _band(skip, 6900, 7100), _band(skip, 900, 1100)
    assert image / tone_power == pytest.approx(0.25**2, rel=0.1)  # 1 kHz mirrored to 7 kHz at -12 dB


def test_alpha_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        FoldingUpsampler(1.5)


def _alpha_at_start(recognizer: CallRecognizer, entries: Entries) -> float:
    for entry_id, frame, arrived in entries:
        if any(isinstance(e, SpeechStart) for e in recognizer.feed(entry_id, frame, arrived)):
            utterance = recognizer._utt  # the decoder's input is private; what it was given is the point here
            assert utterance is not None
            return utterance.resampler.alpha
    raise AssertionError("no utterance started")


def test_the_recognizer_folds_only_for_the_lm_alone_on_a_quiet_line(
    model: RecognizerModel, speech: Callable[[str], bytes], to_entries: Callable[..., Entries]
) -> None:
    """Free speech on a quiet line is folded; under a grammar (``digits``) or on a noisy line it is not."""
    said = speech("where is my order")
    assert _alpha_at_start(CallRecognizer(model, "CAquiet"), to_entries(said)) == FOLD_ALPHA
    digits = CallRecognizer(model, "CAdigits")
    digits.listen("digits")
    assert _alpha_at_start(digits, to_entries(said)) == 0.0
    rng = np.random.default_rng(3)
    hiss = np.round(rng.normal(0.0, 600.0, 8000)).astype(np.int16)  # a second of loud line noise first
    noisy = pcm16_to_ulaw(hiss) + said
    assert _alpha_at_start(CallRecognizer(model, "CAnoisy"), to_entries(noisy)) == 0.0
