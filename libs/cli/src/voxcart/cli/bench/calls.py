"""Simulated calls: caller sentences laid out in one telephone stream, clean or with noise.

A call is ``lead`` silence, then each sentence followed by a ``gap`` of silence (longer than the recognizer's
end-of-speech silence, so a clean sentence is one utterance), then ``tail`` silence. Noise, when added, covers
the whole stream, pauses included, like a real line.

Invariants: every piece is a whole number of 20 ms frames, so a sentence's span in arrival time is exact;
a noisy call's babble is made only from sentences that are not in the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from voxcart.common.audio import FRAME_BYTES, FRAME_MS

from .decoding import T0_MS
from .noise import active_samples, mix_at_snr, noise_mix

__all__ = ["CallAudio", "compose_call", "noisy_call"]

Int16Array = npt.NDArray[np.int16]

LEAD_S: Final = 1.0
GAP_S: Final = 1.2
TAIL_S: Final = 1.2


@dataclass(frozen=True)
class CallAudio:
    """A call's clean audio.

    Attributes:
        pcm: 8 kHz int16, whole 20 ms frames.
        spans: per sentence, arrival times (ms) of its first and last active frame (stream starts at ``T0_MS``).
    """

    pcm: Int16Array
    spans: tuple[tuple[float, float], ...]


def _silence(seconds: float) -> Int16Array:
    return np.zeros(int(round(seconds * 1000 / FRAME_MS)) * FRAME_BYTES, dtype=np.int16)


def compose_call(
    utterances: Sequence[Int16Array], *, lead_s: float = LEAD_S, gap_s: float = GAP_S, tail_s: float = TAIL_S
) -> CallAudio:
    """Lay the utterances out in one stream.

    Raises:
        ValueError: no utterance, or one that is not whole frames or has no active speech.
    """
    if not utterances:
        raise ValueError("compose_call: no utterance")
    pieces: list[Int16Array] = [_silence(lead_s)]
    spans: list[tuple[float, float]] = []
    position = len(pieces[0])
    for n, utterance in enumerate(utterances):
        if len(utterance) % FRAME_BYTES:
            raise ValueError(f"compose_call: utterance {n} has {len(utterance)} samples, not whole 20 ms frames")
        active = np.flatnonzero(active_samples(utterance))
        first, last = (position + int(active[0])) // FRAME_BYTES, (position + int(active[-1])) // FRAME_BYTES
        spans.append((T0_MS + FRAME_MS * first, T0_MS + FRAME_MS * last))
        gap = _silence(gap_s)
        pieces += [utterance, gap]
        position += len(utterance) + len(gap)
    pieces.append(_silence(max(0.0, tail_s - gap_s)))
    return CallAudio(pcm=np.concatenate(pieces).astype(np.int16), spans=tuple(spans))


def noisy_call(call: CallAudio, snr_db: float, talkers: Sequence[Int16Array], seed: int) -> Int16Array:
    """``call`` with the bench's noise (:func:`~voxcart.cli.bench.noise.noise_mix`) at ``snr_db``.

    Args:
        call: the clean call.
        snr_db: SNR over the call's active speech.
        talkers: utterances to make babble from (not the call's own sentences).
        seed: the noise's random seed.
    """
    rng = np.random.default_rng(seed)
    noise = noise_mix(len(call.pcm), talkers, rng)
    return mix_at_snr(call.pcm, noise, snr_db)
