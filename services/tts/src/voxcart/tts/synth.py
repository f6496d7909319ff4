"""Speech synthesizers: text in, telephone audio (μ-law, 8 kHz) out, chunk by chunk as it is made.

A :class:`Synthesizer` is what the tts service drives; :class:`EspeakSynthesizer` is the embedded one. Its
stream machinery (producer thread, lookahead queue, cancel, stall timeout, chunking), shared with piper, is
:mod:`voxcart.tts.stream`, whose stream types this module re-exports.
Invariants of every stream :meth:`EspeakSynthesizer.synthesize` returns:

* chunks are μ-law 8 kHz bytes, each ``chunk_ms`` long (a whole number of 20 ms frames); only the last may be
  shorter, and it too is padded with μ-law silence to a whole frame;
* the first chunk is yielded while the engine is still synthesizing (it runs on its own thread and is at most
  ``lookahead_ms`` of audio ahead of the consumer), so time to first audio does not grow with the text;
* leading silence is cut to ``lead_ms`` and trailing silence is set to exactly ``tail_ms``, so consecutive
  sentences are separated by a predictable gap;
* once ``cancel`` is set, no further chunk is yielded and the engine is told to stop (its callback returns 1);
  closing the stream (or dropping it) does the same;
* a stream is consumed by one thread at a time, but any number of streams may run on different threads at once:
  they share the process's espeak-ng only under its lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from voxcart.common.audio import SAMPLE_RATE, Resampler, pcm16_to_ulaw
from voxcart.tts.espeak import Espeak, VoiceSettings, get_espeak
from voxcart.tts.stream import (
    CancelToken,
    ChunkStreamer,
    EngineRun,
    SynthesisError,
    SynthesisStats,
    SynthesisStream,
)
from voxcart.tts.text import ESPEAK_LETTER_NAMES, normalize_text

__all__ = [
    "CancelToken",
    "EspeakSynthesizer",
    "SynthesisError",
    "SynthesisStats",
    "SynthesisStream",
    "Synthesizer",
    "espeak_normalize",
]

Int16Array = npt.NDArray[np.int16]


def espeak_normalize(text: str) -> str:
    """:func:`~voxcart.tts.text.normalize_text` with the letter spellings espeak-ng's English needs."""
    return normalize_text(text, letter_names=ESPEAK_LETTER_NAMES)


@runtime_checkable
class Synthesizer(Protocol):
    """A speech engine as the tts service sees it (espeak-ng embedded; piper or ElevenLabs later)."""

    def synthesize(self, text: str, cancel: CancelToken | None = None) -> Iterator[bytes]:
        """Speak ``text``.

        Args:
            text: what to say: one sentence or a few.
            cancel: once set, the iterator stops yielding and the engine stops working.

        Returns:
            μ-law 8 kHz chunks, yielded as the audio is produced. Blocking: call it from a worker thread.
        """
        ...


class _SilenceTrimmer:
    """Cuts leading silence to ``lead`` samples and sets trailing silence to exactly ``tail`` samples.

    Silence inside the audio (word and sentence pauses) passes through unchanged, but is held back until the
    next loud sample shows that it is not the end.
    """

    def __init__(self, threshold: int, lead: int, tail: int) -> None:
        self._threshold, self._lead, self._tail = threshold, lead, tail
        self._started = False
        self._held: list[Int16Array] = []

    def push(self, block: Int16Array) -> list[Int16Array]:
        loud = np.flatnonzero((block > self._threshold) | (block < -self._threshold))
        if loud.size == 0:
            self._held.append(block)
            if not self._started:  # only the pre-roll can ever be needed
                self._held = [np.concatenate(self._held)[-self._lead :] if self._lead else block[:0]]
            return []
        first, last = int(loud[0]), int(loud[-1])
        if self._started:
            out = [*self._held, block[: last + 1]]
        else:
            pre = np.concatenate([*self._held, block[:first]])
            out = [pre[len(pre) - min(self._lead, len(pre)) :], block[first : last + 1]]
            self._started = True
        self._held = [block[last + 1 :]]
        return out

    def finish(self) -> Int16Array:
        """The tail: held silence cut or zero-padded to ``tail`` samples (nothing if all was silent)."""
        if not self._started:
            return np.zeros(0, dtype=np.int16)
        held = np.concatenate(self._held)[: self._tail]
        return np.concatenate([held, np.zeros(self._tail - len(held), dtype=np.int16)])


class EspeakSynthesizer:
    """The embedded synthesizer: espeak-ng, resampled 22050 -> 8000 Hz (soxr), μ-law encoded.

    Construction selects the voice once, so a bad voice name fails at start-up. Instances hold no per-call state
    and are safe to share between threads.

    Args:
        settings: voice, rate (words per minute), pitch and volume.
        chunk_ms: audio per chunk; a positive multiple of 20 ms.
        lead_ms: silence kept before the first sound.
        tail_ms: silence after the last sound (sets the gap between consecutive sentences).
        lookahead_ms: how far the engine may run ahead of the consumer (it holds the process's espeak lock
            until the rest of the audio fits); 0 means unbounded.
        resample_quality: soxr quality for 22050 -> 8000 Hz (``"HQ"``: a steep anti-alias filter; the
            resampler is flushed at the end, so its block delay costs nothing).
        normalize: text rewriting before synthesis (default :func:`espeak_normalize`); None to speak the
            text as given.
        stall_timeout_s: give up (:class:`SynthesisError`) when the consumer takes no audio for this long
            while the engine waits on it, so an abandoned stream cannot hold espeak forever.
        max_chars: longest accepted text.
        engine: the espeak-ng engine (default: the process's, from :func:`~voxcart.tts.espeak.get_espeak`).

    Raises:
        ValueError: a parameter is out of range.
        EspeakError: espeak-ng cannot be loaded or does not know the voice.
    """

    SILENCE_THRESHOLD = 64
    """|sample| at or below this (int16, 22050 Hz) counts as silence when trimming."""

    def __init__(
        self,
        settings: VoiceSettings | None = None,
        *,
        chunk_ms: int = 100,
        lead_ms: int = 10,
        tail_ms: int = 150,
        lookahead_ms: int = 2000,
        resample_quality: str = "HQ",
        normalize: Callable[[str], str] | None = espeak_normalize,
        stall_timeout_s: float = 10.0,
        max_chars: int = 10_000,
        engine: Espeak | None = None,
    ) -> None:
        for name, value in (("lead_ms", lead_ms), ("tail_ms", tail_ms), ("lookahead_ms", lookahead_ms)):
            if value < 0:
                raise ValueError(f"EspeakSynthesizer {name}: expected >= 0, got {value}")
        if resample_quality not in ("QQ", "LQ", "MQ", "HQ", "VHQ"):
            raise ValueError(f"EspeakSynthesizer resample_quality: expected QQ/LQ/MQ/HQ/VHQ, got {resample_quality!r}")
        self.settings = settings or VoiceSettings()
        self._engine = engine or get_espeak()
        self._engine.check_voice(self.settings)
        rate = self._engine.sample_rate
        self._lead, self._tail = rate * lead_ms // 1000, rate * tail_ms // 1000
        block = max(1, rate * Espeak.BLOCK_MS // 1000)
        self._quality = resample_quality
        self._stream: ChunkStreamer[Int16Array] = ChunkStreamer(
            "EspeakSynthesizer",
            engine="espeak-ng",
            thread_name="voxcart-tts-espeak",
            chunk_ms=chunk_ms,
            lookahead=0 if lookahead_ms == 0 else max(2, -(-rate * lookahead_ms // 1000 // block)),
            normalize=normalize,
            stall_timeout_s=stall_timeout_s,
            max_chars=max_chars,
        )
        self.chunk_bytes = self._stream.chunk_bytes
        """μ-law bytes per chunk (800 for 100 ms)."""

    def synthesize(self, text: str, cancel: CancelToken | None = None) -> SynthesisStream:
        """Speak ``text``; the engine starts on the first ``next()``.

        Args:
            text: what to say (normalized first unless ``normalize=None``); may be empty (no chunks).
            cancel: checked before every chunk and on every engine block.

        Returns:
            A :class:`SynthesisStream` of μ-law 8 kHz chunks.

        Raises:
            TypeError: ``text`` is not a str.
            ValueError: ``text`` is longer than ``max_chars``.
            SynthesisError: (while iterating) the engine failed or the consumer stalled.
        """
        return self._stream.open(text, cancel, self._start)

    def _start(self, text: str) -> _EspeakRun:
        trimmer = _SilenceTrimmer(self.SILENCE_THRESHOLD, self._lead, self._tail)
        resampler = Resampler(self._engine.sample_rate, SAMPLE_RATE, quality=self._quality)
        return _EspeakRun(self._engine, self.settings, text, trimmer, resampler)


class _EspeakRun(EngineRun[Int16Array]):
    """One text through espeak-ng: its blocks (engine rate) are trimmed and resampled on the consumer's thread.

    espeak-ng has no stop call of its own: a refused ``put`` makes its callback return 1, which aborts it.
    """

    def __init__(
        self, engine: Espeak, settings: VoiceSettings, text: str, trimmer: _SilenceTrimmer, resampler: Resampler
    ) -> None:
        self._engine, self._settings, self._text = engine, settings, text
        self._trimmer, self._resampler = trimmer, resampler
        self.subject = repr(text[:60])

    def produce(self, put: Callable[[Int16Array], bool], halted: Callable[[], bool]) -> bool:
        return self._engine.synthesize(self._text, self._settings, put).completed

    def encode(self, block: Int16Array) -> bytes:
        return b"".join(pcm16_to_ulaw(self._resampler.process(piece)) for piece in self._trimmer.push(block))

    def finish(self) -> bytes:
        return pcm16_to_ulaw(self._resampler.process(self._trimmer.finish(), last=True))
