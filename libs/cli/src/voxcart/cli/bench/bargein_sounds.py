"""What the barge-in bench's caller lays over the agent: backchannels and noise bursts, as 8 kHz μ-law.

Backchannels (:data:`BACKCHANNELS`: "uh huh", "mm hmm", "yeah", ...) are spoken by the simulated caller's piper
voice (:func:`~voxcart.cli.caller_voice.synthesize_caller`, through the bench's caching wrapper). Noise bursts
are synthesized here from a seeded generator: a ``cough`` (band-passed noise, fast attack, ~60 ms decay,
100–300 ms), a ``door`` (a low thump and rattle, 100–200 ms) and ``tones`` (a second of hold-music-like notes).

Invariants: every sound is a whole number of 20 ms frames with a peak near speech level (so its frames count as
voiced to the simulator and to a VAD); the same ``seed`` gives the same bytes.
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE, pcm16_to_ulaw

__all__ = ["BACKCHANNELS", "NOISES", "NoiseKind", "noise_burst"]

BACKCHANNELS: Final = ("uh huh", "mm hmm", "yeah", "okay", "right")
NoiseKind = Literal["cough", "door", "tones"]
NOISES: Final[tuple[NoiseKind, ...]] = ("cough", "door", "tones")
_PEAK: Final = 12000.0
"""int16 peak of a burst: the caller voice is normalized to about 16000."""

Float64Array = npt.NDArray[np.float64]


def _band(noise: Float64Array, low_hz: float, high_hz: float) -> Float64Array:
    spectrum = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(len(noise), 1 / SAMPLE_RATE)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    out: Float64Array = np.fft.irfft(spectrum, n=len(noise))
    return out


def _frames(signal: Float64Array) -> bytes:
    peak = float(np.max(np.abs(signal))) or 1.0
    pcm = np.clip(signal / peak * _PEAK, -32768, 32767).astype(np.int16)
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % FRAME_BYTES, dtype=np.int16)])
    return pcm16_to_ulaw(pcm)


def noise_burst(kind: NoiseKind, seed: int) -> bytes:
    """One burst of ``kind`` (see the module docstring).

    Raises:
        ValueError: ``kind`` is not one of :data:`NOISES`.
    """
    rng = np.random.default_rng(seed)
    if kind == "cough":
        n = int(SAMPLE_RATE * rng.uniform(0.10, 0.30))
        t = np.arange(n) / SAMPLE_RATE
        envelope = np.minimum(t / 0.01, 1.0) * np.exp(-t / rng.uniform(0.04, 0.08))
        return _frames(_band(rng.standard_normal(n), 300, 3000) * envelope)
    if kind == "door":
        n = int(SAMPLE_RATE * rng.uniform(0.10, 0.20))
        t = np.arange(n) / SAMPLE_RATE
        thump = np.sin(2 * np.pi * rng.uniform(60, 110) * t) * np.exp(-t / 0.05)
        rattle = _band(rng.standard_normal(n), 500, 2500) * np.exp(-t / 0.02) * 0.5
        return _frames(thump + rattle)
    if kind == "tones":
        notes = rng.choice([262.0, 294.0, 330.0, 392.0, 440.0, 523.0], size=4)
        per = int(SAMPLE_RATE * 0.25)
        t = np.arange(per) / SAMPLE_RATE
        fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
        parts = [(np.sin(2 * np.pi * f * t) + 0.4 * np.sin(4 * np.pi * f * t)) * fade for f in notes]
        return _frames(np.concatenate(parts))
    raise ValueError(f"noise_burst: kind must be one of {NOISES}; got {kind!r}")
