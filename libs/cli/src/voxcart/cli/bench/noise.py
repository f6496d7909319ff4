"""Background noise for the speech bench, mixed into caller speech at a chosen SNR.

The mix stands for a caller on a mobile phone in a shop or on the street. Its parts, by power:

- **pink noise (40 %)**, power ~ 1/f: the long-term spectrum of most ambient noise (ventilation, room tone,
  distant traffic);
- **brown noise (20 %)**, power ~ 1/f²: the low rumble of cars, buses and wind;
- **babble (40 %)**: six other talkers' sentences overlapping at random offsets (other shoppers talking).
  Speech-shaped and non-stationary, it is the hardest part for both the VAD and the decoder. The bench has
  one voice (the caller's piper voice), so each babble talker is that voice warped to another speaker
  (:data:`BABBLE_WARPS`: every frequency, pitch and formants, scaled by 0.8-1.55, the speaking rate with it, as
  vocal tract length perturbation does), never the caller's own timbre: babble in the literature is several
  *other* people (NOISEX-92's canteen, the 6-8 talker babbles of speech-in-noise tests); the caller's own
  voice behind the caller is a competing-speaker test, which no front end can separate by voice and a real
  shop does not produce. It stays harder than real babble in one way: the talkers say the bench's other
  in-domain sentences, words the domain LM expects.

All noise is band-limited to 200-3800 Hz before mixing: a phone's microphone chain and the 8 kHz codec pass
little outside that band, so noise outside it would inflate the power an SNR is computed from without
reaching the recognizer.

SNR follows ITU-T P.56 in spirit: the speech's power is measured on its **active** part only (20 ms frames
within :data:`ACTIVE_RANGE_DB` of the loudest frame, and above :data:`ACTIVE_FLOOR`), and the noise's power on
the same samples. So pauses between sentences do not dilute the speech level, and "10 dB" means the noise is
10 dB below the speech while the caller talks.

Invariants: every generator is a pure function of its arguments and its ``numpy.random.Generator``;
:func:`mix_at_snr` hits the requested SNR exactly on the float signal (before rounding and clipping to int16),
and :func:`measured_snr` measures it back from int16 audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import soxr

from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE

__all__ = [
    "ACTIVE_FLOOR",
    "ACTIVE_RANGE_DB",
    "BABBLE_TALKERS",
    "BABBLE_WARPS",
    "NOISE_MIX",
    "active_samples",
    "babble",
    "band_limit",
    "colored_noise",
    "measured_snr",
    "mix_at_snr",
    "noise_mix",
]

Float64Array = npt.NDArray[np.float64]
Int16Array = npt.NDArray[np.int16]
BoolArray = npt.NDArray[np.bool_]

ACTIVE_RANGE_DB: Final = 35.0
"""A 20 ms frame is active speech when it is at most this far below the loudest frame."""
ACTIVE_FLOOR: Final = 30.0
"""...and its RMS (int16 units, about -61 dBFS) is at least this."""
NOISE_MIX: Final[dict[str, float]] = {"pink": 0.4, "brown": 0.2, "babble": 0.4}
"""Share of the noise power of each part (sums to 1)."""
BAND_HZ: Final = (200.0, 3800.0)
BABBLE_WARPS: Final = (0.8, 0.88, 1.14, 1.26, 1.4, 1.55)
"""Frequency scale of each babble talker against the caller's voice (-3.9 to +7.6 semitones): lower and
higher men's voices, women's and a child's. None is within 10 % of 1.0, the caller's own voice."""
BABBLE_TALKERS: Final = len(BABBLE_WARPS)


def warp_voice(x: Float64Array, factor: float) -> Float64Array:
    """``x`` (8 kHz) as another speaker: every frequency times ``factor`` (pitch and formants), ``factor`` times
    faster (played at ``factor`` times its rate, resampled back to 8 kHz).

    Raises:
        ValueError: ``factor`` is outside 0.5..2.
    """
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"warp_voice: factor {factor} is outside 0.5..2")
    if factor == 1.0 or not len(x):
        return x
    out: Float64Array = soxr.resample(x, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ")
    return out


def _rms(x: Float64Array) -> float:
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


def band_limit(x: Float64Array, low_hz: float = BAND_HZ[0], high_hz: float = BAND_HZ[1]) -> Float64Array:
    """``x`` (8 kHz) with everything outside ``low_hz..high_hz`` removed (an FFT brick-wall filter)."""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1.0 / SAMPLE_RATE)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0.0
    out: Float64Array = np.fft.irfft(spectrum, len(x))
    return out


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> Float64Array:
    """``n`` samples of noise whose power spectrum falls as ``1 / f**exponent`` (0 white, 1 pink, 2 brown).

    Band-limited to the telephone band and scaled to unit RMS.

    Raises:
        ValueError: ``n`` is under 2.
    """
    if n < 2:
        raise ValueError(f"colored_noise: n={n}, need at least 2 samples")
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    scale = np.zeros_like(freqs)
    scale[1:] = freqs[1:] ** (-exponent / 2.0)
    x = band_limit(np.fft.irfft(spectrum * scale, n))
    return x / max(_rms(x), 1e-12)


def babble(
    talkers: Sequence[Int16Array],
    n: int,
    rng: np.random.Generator,
    voices: int = BABBLE_TALKERS,
    warps: Sequence[float] = BABBLE_WARPS,
) -> Float64Array:
    """``n`` samples of ``voices`` people talking at once, from the given utterances.

    Each voice is a random sequence of the utterances with 0-300 ms pauses, warped to its own speaker
    (``warps[k % len(warps)]``, see :func:`warp_voice`; ``(1.0,)`` keeps the utterances' own voice), started at
    a random offset and scaled to equal power; the sum is band-limited and scaled to unit RMS.

    Raises:
        ValueError: no talker utterance has any sound, ``n``/``voices`` is under 1, or no warp is given.
    """
    usable = [t.astype(np.float64) for t in talkers if len(t) and np.any(t)]
    if not usable or n < 1 or voices < 1 or not warps:
        raise ValueError(f"babble: need sound to make babble from ({len(usable)} usable utterances), n={n}")
    total = np.zeros(n, dtype=np.float64)
    for k in range(voices):
        factor = warps[k % len(warps)]
        warped: dict[int, Float64Array] = {}
        pieces: list[Float64Array] = []
        length = 0
        offset = int(rng.integers(0, max(1, SAMPLE_RATE * 2)))
        while length < n + offset:
            pick = int(rng.integers(len(usable)))
            if pick not in warped:
                warped[pick] = warp_voice(usable[pick], factor)
            utterance = warped[pick]
            gap = np.zeros(int(rng.integers(0, SAMPLE_RATE * 3 // 10 + 1)), dtype=np.float64)
            pieces += [utterance, gap]
            length += len(utterance) + len(gap)
        voice = np.concatenate(pieces)[offset : offset + n]
        total += voice / max(_rms(voice), 1e-12)
    x = band_limit(total)
    return x / max(_rms(x), 1e-12)


def noise_mix(n: int, talkers: Sequence[Int16Array], rng: np.random.Generator) -> Float64Array:
    """The bench's noise (see the module doc: pink, brown and babble by :data:`NOISE_MIX`), unit RMS."""
    parts = {
        "pink": colored_noise(n, 1.0, rng),
        "brown": colored_noise(n, 2.0, rng),
        "babble": babble(talkers, n, rng),
    }
    x = sum((np.sqrt(NOISE_MIX[name]) * part for name, part in parts.items()), np.zeros(n, dtype=np.float64))
    return x / max(_rms(x), 1e-12)


def active_samples(speech: Int16Array | Float64Array) -> BoolArray:
    """Which samples belong to active speech (whole 20 ms frames; see :data:`ACTIVE_RANGE_DB`).

    Raises:
        ValueError: no frame is active (silence, or nothing louder than :data:`ACTIVE_FLOOR`).
    """
    x = np.asarray(speech, dtype=np.float64)
    frames = len(x) // FRAME_BYTES
    if frames == 0:
        raise ValueError("active_samples: shorter than one 20 ms frame")
    levels = np.sqrt(np.mean(x[: frames * FRAME_BYTES].reshape(frames, FRAME_BYTES) ** 2, axis=1))
    threshold = max(ACTIVE_FLOOR, float(levels.max()) * 10 ** (-ACTIVE_RANGE_DB / 20))
    active = levels >= threshold
    if not active.any():
        raise ValueError(f"active_samples: no frame reaches RMS {ACTIVE_FLOOR}; is this speech?")
    mask = np.zeros(len(x), dtype=np.bool_)
    mask[: frames * FRAME_BYTES] = np.repeat(active, FRAME_BYTES)
    return mask


def mix_at_snr(speech: Int16Array, noise: Float64Array, snr_db: float) -> Int16Array:
    """``speech`` plus ``noise`` scaled so that active speech is ``snr_db`` above the noise.

    Args:
        speech: 8 kHz int16 speech (may include pauses).
        noise: at least as many samples as ``speech``; its first ``len(speech)`` are used.
        snr_db: the wanted signal-to-noise ratio on the active part.

    Returns:
        int16, rounded and clipped.

    Raises:
        ValueError: ``noise`` is too short or silent where the speech is active, or the speech has no active part.
    """
    if len(noise) < len(speech):
        raise ValueError(f"mix_at_snr: {len(noise)} noise samples for {len(speech)} speech samples")
    mask = active_samples(speech)
    s = speech.astype(np.float64)
    n = noise[: len(speech)]
    speech_power = float(np.mean(s[mask] ** 2))
    noise_power = float(np.mean(n[mask] ** 2))
    if noise_power <= 0.0:
        raise ValueError("mix_at_snr: the noise is silent where the speech is active")
    gain = np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    mixed: Int16Array = np.clip(np.round(s + gain * n), -32768, 32767).astype(np.int16)
    return mixed


def measured_snr(clean: Int16Array, noisy: Int16Array) -> float:
    """The SNR (dB) of ``noisy`` against the ``clean`` speech it was made from, on the active part."""
    if len(clean) != len(noisy):
        raise ValueError(f"measured_snr: {len(clean)} clean vs {len(noisy)} noisy samples")
    mask = active_samples(clean)
    s = clean.astype(np.float64)[mask]
    d = noisy.astype(np.float64)[mask] - s
    return float(10 * np.log10(np.mean(s * s) / max(float(np.mean(d * d)), 1e-12)))
