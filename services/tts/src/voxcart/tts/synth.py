"""Speech synthesizers: text in, telephone audio (μ-law, 8 kHz) out, chunk by chunk as it is made.

A :class:`Synthesizer` is what the tts service drives; :class:`EspeakSynthesizer` is the embedded one.
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

import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from voxcart.common.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, Resampler, pcm16_to_ulaw, silence_ulaw
from voxcart.tts.espeak import Espeak, SynthResult, VoiceSettings, get_espeak
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


class CancelToken(Protocol):
    """Anything with ``is_set()``; :class:`threading.Event` is the usual one."""

    def is_set(self) -> bool: ...


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


class SynthesisError(RuntimeError):
    """The engine failed, or the consumer stopped reading for longer than the stall timeout."""


@dataclass(slots=True)
class SynthesisStats:
    """What one stream did; updated as it runs (times are ``time.perf_counter()`` seconds).

    Attributes:
        started_at: when the consumer first asked for a chunk.
        first_chunk_at: when the first chunk was handed out, or None.
        engine_done_at: when the engine returned (finished, aborted or failed), or None while it runs.
        engine_completed: True if the engine synthesized the whole text; False if it was stopped early.
        chunks: chunks handed out.
        audio_bytes: μ-law bytes handed out (1 byte = 125 µs).
        cancelled: the stream ended because ``cancel`` was set.
    """

    started_at: float | None = None
    first_chunk_at: float | None = None
    engine_done_at: float | None = None
    engine_completed: bool = False
    chunks: int = 0
    audio_bytes: int = 0
    cancelled: bool = False

    @property
    def time_to_first_chunk(self) -> float | None:
        """Seconds from the first request to the first chunk."""
        if self.started_at is None or self.first_chunk_at is None:
            return None
        return self.first_chunk_at - self.started_at


class SynthesisStream(Iterator[bytes]):
    """The chunks of one synthesis, with its :class:`SynthesisStats`. Close it (or drop it) to stop early."""

    def __init__(self, chunks: Generator[bytes, None, None], stats: SynthesisStats) -> None:
        self._chunks = chunks
        self.stats = stats

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        """Stop: no more chunks; the engine is told to stop and its thread ends."""
        self._chunks.close()

    def __enter__(self) -> SynthesisStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class _Finished:
    result: SynthResult | None
    error: BaseException | None


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
        if chunk_ms <= 0 or chunk_ms % FRAME_MS:
            raise ValueError(f"EspeakSynthesizer chunk_ms: expected a positive multiple of {FRAME_MS}, got {chunk_ms}")
        for name, value in (("lead_ms", lead_ms), ("tail_ms", tail_ms), ("lookahead_ms", lookahead_ms)):
            if value < 0:
                raise ValueError(f"EspeakSynthesizer {name}: expected >= 0, got {value}")
        if stall_timeout_s <= 0 or max_chars <= 0:
            raise ValueError(
                f"EspeakSynthesizer: stall_timeout_s and max_chars must be > 0 ({stall_timeout_s}, {max_chars})"
            )
        if resample_quality not in ("QQ", "LQ", "MQ", "HQ", "VHQ"):
            raise ValueError(f"EspeakSynthesizer resample_quality: expected QQ/LQ/MQ/HQ/VHQ, got {resample_quality!r}")
        self.settings = settings or VoiceSettings()
        self.chunk_bytes = SAMPLE_RATE * chunk_ms // 1000
        """μ-law bytes per chunk (800 for 100 ms)."""
        self._engine = engine or get_espeak()
        self._engine.check_voice(self.settings)
        rate = self._engine.sample_rate
        self._lead, self._tail = rate * lead_ms // 1000, rate * tail_ms // 1000
        block = max(1, rate * Espeak.BLOCK_MS // 1000)
        self._queue_blocks = 0 if lookahead_ms == 0 else max(2, -(-rate * lookahead_ms // 1000 // block))
        self._quality = resample_quality
        self._normalize = normalize
        self._stall_timeout = stall_timeout_s
        self._max_chars = max_chars

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
        if not isinstance(text, str):
            raise TypeError(f"EspeakSynthesizer.synthesize: text must be str, got {type(text).__name__}")
        if len(text) > self._max_chars:
            raise ValueError(f"EspeakSynthesizer.synthesize: text has {len(text)} characters, max {self._max_chars}")
        spoken = self._normalize(text) if self._normalize is not None else text
        stats = SynthesisStats()
        return SynthesisStream(self._chunks(spoken, cancel, stats), stats)

    def _chunks(self, text: str, cancel: CancelToken | None, stats: SynthesisStats) -> Generator[bytes, None, None]:
        stats.started_at = time.perf_counter()
        if not text.strip():
            stats.engine_completed = True
            return
        blocks: queue.Queue[Int16Array | _Finished] = queue.Queue(self._queue_blocks)
        stop = threading.Event()
        outcome: list[_Finished] = []  # the producer's result, also kept here in case the queue stays full
        producer = threading.Thread(
            target=self._produce,
            args=(text, blocks, outcome, stop, cancel, stats),
            name="voxcart-tts-espeak",
            daemon=True,
        )
        trimmer = _SilenceTrimmer(self.SILENCE_THRESHOLD, self._lead, self._tail)
        resampler = Resampler(self._engine.sample_rate, SAMPLE_RATE, quality=self._quality)
        pending = bytearray()

        def take(n: int) -> bytes:
            chunk = bytes(pending[:n])
            del pending[:n]
            stats.chunks += 1
            stats.audio_bytes += len(chunk)
            if stats.first_chunk_at is None:
                stats.first_chunk_at = time.perf_counter()
            return chunk

        producer.start()
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    stats.cancelled = True
                    return
                try:
                    item = blocks.get(timeout=0.1)
                except queue.Empty:
                    if producer.is_alive():
                        continue
                    try:  # it may have queued its last items just before it ended
                        item = blocks.get_nowait()
                    except queue.Empty:
                        item = outcome[0] if outcome else _Finished(None, SynthesisError("engine thread died"))
                if isinstance(item, _Finished):
                    break
                for piece in trimmer.push(item):
                    pending += pcm16_to_ulaw(resampler.process(piece))
                while len(pending) >= self.chunk_bytes:
                    if cancel is not None and cancel.is_set():
                        stats.cancelled = True
                        return
                    yield take(self.chunk_bytes)
            if item.error is not None:
                raise SynthesisError(f"espeak-ng failed on {text[:60]!r}: {item.error}") from item.error
            if item.result is not None and not item.result.completed:  # stopped, not finished: no tail
                stats.cancelled = cancel is not None and cancel.is_set()
                return
            pending += pcm16_to_ulaw(resampler.process(trimmer.finish(), last=True))
            if len(pending) % FRAME_BYTES:
                pending += silence_ulaw(FRAME_BYTES - len(pending) % FRAME_BYTES)
            while pending:
                if cancel is not None and cancel.is_set():
                    stats.cancelled = True
                    return
                yield take(min(self.chunk_bytes, len(pending)))
        finally:
            stop.set()
            while True:  # unblock a producer waiting on a full queue
                try:
                    blocks.get_nowait()
                except queue.Empty:
                    break
            if producer is not threading.current_thread():
                # It stops at its next block; only a wait for another stream's espeak lock can take longer,
                # and then it ends on its own once it gets the lock.
                producer.join(timeout=1.0)

    def _produce(
        self,
        text: str,
        blocks: queue.Queue[Int16Array | _Finished],
        outcome: list[_Finished],
        stop: threading.Event,
        cancel: CancelToken | None,
        stats: SynthesisStats,
    ) -> None:
        """The producer thread: runs espeak-ng and queues its blocks; always ends with one ``_Finished``."""
        stalled = False

        def put(block: Int16Array) -> bool:
            nonlocal stalled
            deadline = time.monotonic() + self._stall_timeout
            while not stop.is_set():
                if cancel is not None and cancel.is_set():
                    return False
                try:
                    consumer_waiting = blocks.empty()
                    blocks.put(block, timeout=0.05)
                    if consumer_waiting:  # yield the GIL, or the woken consumer may wait ~5 ms for it
                        time.sleep(0)
                    return True
                except queue.Full:
                    if time.monotonic() > deadline:
                        stalled = True
                        return False
            return False

        result: SynthResult | None = None
        error: BaseException | None = None
        try:
            result = self._engine.synthesize(text, self.settings, put)
        except BaseException as exc:  # noqa: B036 - handed to the consumer thread, which re-raises it
            error = exc
        stats.engine_done_at = time.perf_counter()
        stats.engine_completed = result is not None and result.completed
        if stalled:
            error = SynthesisError(f"consumer took no audio for {self._stall_timeout} s; synthesis abandoned")
        outcome.append(_Finished(result, error))
        # Wake a waiting consumer; give up if it is gone (stop set) or stalled: it then finds ``outcome``.
        deadline = time.monotonic() + self._stall_timeout
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                blocks.put(outcome[0], timeout=0.05)
                return
            except queue.Full:
                continue
