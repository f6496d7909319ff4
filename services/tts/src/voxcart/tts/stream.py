"""The chunk stream of the embedded synthesizers: an engine on a thread of its own, μ-law chunks to the consumer.

:class:`ChunkStreamer` is the machinery :class:`~voxcart.tts.synth.EspeakSynthesizer` and
:class:`~voxcart.tts.piper.PiperSynthesizer` share; an engine supplies only an :class:`EngineRun` per text: what
runs on the producer thread, and how the blocks it makes become μ-law on the consumer's thread.
Invariants of every :class:`SynthesisStream` a streamer returns:

* the producer thread starts on the first ``next()``; at most ``lookahead`` blocks wait for the consumer (0:
  no bound), so the first chunk is yielded while the engine is still working on the rest;
* chunks are μ-law 8 kHz bytes, each ``chunk_ms`` long; only the last may be shorter, and it is padded with
  μ-law silence to a whole 20 ms frame;
* once ``cancel`` is set, no further chunk is yielded and the engine's next ``put`` refuses its block (so the
  engine stops); closing the stream (or dropping it) does the same, then calls :meth:`EngineRun.stop` and waits
  up to 1 s for the producer thread;
* a consumer that takes no audio for ``stall_timeout_s`` while the engine waits on it ends the run, and the
  stream raises :class:`SynthesisError`; an engine failure is raised as :class:`SynthesisError` too (caused
  by the engine's exception);
* the producer thread always ends: it hands its outcome to the consumer, or gives up on a consumer that is gone.
"""

from __future__ import annotations

import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from voxcart.common.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, silence_ulaw

__all__ = [
    "CancelToken",
    "ChunkStreamer",
    "EngineRun",
    "SynthesisError",
    "SynthesisStats",
    "SynthesisStream",
]

BlockT = TypeVar("BlockT")

_POLL_S = 0.05
"""How often a thread waiting on the queue looks at cancel, stop and the other thread."""


class CancelToken(Protocol):
    """Anything with ``is_set()``; :class:`threading.Event` is the usual one."""

    def is_set(self) -> bool: ...


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


class EngineRun(ABC, Generic[BlockT]):
    """One text as an engine synthesizes it: :meth:`produce` runs on the producer thread, the rest on the consumer's.

    Attributes:
        subject: names the text in a failure: ``"<engine> failed on <subject>: <error>"``.
    """

    subject: str

    @abstractmethod
    def produce(self, put: Callable[[BlockT], bool], halted: Callable[[], bool]) -> bool:
        """Synthesize the text, handing each block to ``put`` as it is made.

        Args:
            put: queues one block for the consumer (waiting while the queue is full); False means stop now
                (cancelled, closed or stalled).
            halted: True once the stream is cancelled or closed; for engines that can stop between blocks.

        Returns:
            True if the whole text was synthesized; False if it stopped early.

        Raises:
            BaseException: the engine failed; the consumer re-raises it as :class:`SynthesisError`.
        """

    @abstractmethod
    def encode(self, block: BlockT) -> bytes:
        """μ-law 8 kHz bytes for one block, in order (empty while the block is held back)."""

    def finish(self) -> bytes:
        """μ-law bytes after the last block (anything held back), once the engine has completed the text."""
        return b""

    def stop(self) -> None:
        """The stream has ended (any way): interrupt work in progress. Called once, by whoever ends the stream."""


@dataclass(frozen=True, slots=True)
class _Finished:
    completed: bool
    error: BaseException | None


class ChunkStreamer(Generic[BlockT]):
    """Turns the blocks an engine makes on a producer thread into streams of μ-law chunks (:class:`SynthesisStream`).

    One per synthesizer; it holds no per-stream state and is safe to share between threads.

    Args:
        owner: the synthesizer's class name, which starts every error message (``"PiperSynthesizer"``).
        engine: the engine's name in failures (``"piper"``).
        thread_name: the name of every producer thread.
        chunk_ms: audio per chunk; a positive multiple of 20 ms.
        lookahead: blocks that may wait for the consumer; 0 means unbounded.
        normalize: text rewriting before synthesis; None to speak the text as given.
        stall_timeout_s: give up (:class:`SynthesisError`) when the consumer takes no audio for this long while
            the engine waits on it.
        max_chars: longest accepted text.

    Raises:
        ValueError: a parameter is out of range.
    """

    def __init__(
        self,
        owner: str,
        *,
        engine: str,
        thread_name: str,
        chunk_ms: int,
        lookahead: int,
        normalize: Callable[[str], str] | None,
        stall_timeout_s: float,
        max_chars: int,
    ) -> None:
        if chunk_ms <= 0 or chunk_ms % FRAME_MS:
            raise ValueError(f"{owner} chunk_ms: expected a positive multiple of {FRAME_MS}, got {chunk_ms}")
        if stall_timeout_s <= 0 or max_chars <= 0:
            raise ValueError(f"{owner}: stall_timeout_s and max_chars must be > 0 ({stall_timeout_s}, {max_chars})")
        if lookahead < 0:
            raise ValueError(f"{owner} lookahead: expected >= 0 blocks, got {lookahead}")
        self.chunk_bytes = SAMPLE_RATE * chunk_ms // 1000
        """μ-law bytes per chunk (800 for 100 ms)."""
        self._stall_timeout = stall_timeout_s
        self._owner, self._engine, self._thread_name = owner, engine, thread_name
        self._lookahead = lookahead
        self._normalize = normalize
        self._max_chars = max_chars

    def open(self, text: str, cancel: CancelToken | None, start: Callable[[str], EngineRun[BlockT]]) -> SynthesisStream:
        """Check and normalize ``text``; on the first ``next()`` the stream calls ``start`` with it and runs the engine.

        Args:
            text: what to say; may be empty or only what normalizes to nothing (no chunks, no engine run).
            cancel: checked before every chunk and by every ``put``.
            start: makes the engine's run for the normalized text.

        Raises:
            TypeError: ``text`` is not a str.
            ValueError: ``text`` is longer than ``max_chars``.
        """
        if not isinstance(text, str):
            raise TypeError(f"{self._owner}.synthesize: text must be str, got {type(text).__name__}")
        if len(text) > self._max_chars:
            raise ValueError(f"{self._owner}.synthesize: text has {len(text)} characters, max {self._max_chars}")
        spoken = self._normalize(text) if self._normalize is not None else text
        stats = SynthesisStats()
        return SynthesisStream(self._chunks(spoken, cancel, stats, start), stats)

    def _chunks(
        self,
        text: str,
        cancel: CancelToken | None,
        stats: SynthesisStats,
        start: Callable[[str], EngineRun[BlockT]],
    ) -> Generator[bytes, None, None]:
        stats.started_at = time.perf_counter()
        if not text.strip():
            stats.engine_completed = True
            return
        run = start(text)
        blocks: queue.Queue[BlockT | _Finished] = queue.Queue(self._lookahead)
        stop = threading.Event()
        outcome: list[_Finished] = []  # the producer's result, also kept here in case the queue stays full
        producer = threading.Thread(
            target=self._produce,
            args=(run, blocks, outcome, stop, cancel, stats),
            name=self._thread_name,
            daemon=True,
        )
        pending = bytearray()

        def cancelled() -> bool:
            if cancel is not None and cancel.is_set():
                stats.cancelled = True
            return stats.cancelled

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
                if cancelled():
                    return
                try:
                    item = blocks.get(timeout=_POLL_S)
                except queue.Empty:
                    if producer.is_alive():
                        continue
                    try:  # it may have queued its last items just before it ended
                        item = blocks.get_nowait()
                    except queue.Empty:
                        item = (
                            outcome[0] if outcome else _Finished(False, SynthesisError(f"{self._engine} thread died"))
                        )
                if isinstance(item, _Finished):
                    break
                pending += run.encode(item)
                while len(pending) >= self.chunk_bytes:
                    if cancelled():
                        return
                    yield take(self.chunk_bytes)
            if item.error is not None:
                raise SynthesisError(f"{self._engine} failed on {run.subject}: {item.error}") from item.error
            if not item.completed:  # stopped, not finished: nothing held back is wanted
                cancelled()
                return
            pending += run.finish()
            if len(pending) % FRAME_BYTES:
                pending += silence_ulaw(FRAME_BYTES - len(pending) % FRAME_BYTES)
            while pending:
                if cancelled():
                    return
                yield take(min(self.chunk_bytes, len(pending)))
        finally:
            stop.set()
            run.stop()
            while True:  # unblock a producer waiting on a full queue
                try:
                    blocks.get_nowait()
                except queue.Empty:
                    break
            if producer is not threading.current_thread():
                # It stops at its next block; only a wait the engine itself imposes (another stream holding
                # espeak's lock) can take longer, and then it ends on its own once that wait is over.
                producer.join(timeout=1.0)

    def _produce(
        self,
        run: EngineRun[BlockT],
        blocks: queue.Queue[BlockT | _Finished],
        outcome: list[_Finished],
        stop: threading.Event,
        cancel: CancelToken | None,
        stats: SynthesisStats,
    ) -> None:
        """The producer thread: runs the engine, queueing its blocks; always ends with one ``_Finished``."""
        stalled = False

        def halted() -> bool:
            return stop.is_set() or (cancel is not None and cancel.is_set())

        def put(block: BlockT) -> bool:
            nonlocal stalled
            deadline = time.monotonic() + self._stall_timeout
            while not halted():
                try:
                    consumer_waiting = blocks.empty()
                    blocks.put(block, timeout=_POLL_S)
                    if consumer_waiting:  # yield the GIL, or the woken consumer may wait ~5 ms for it
                        time.sleep(0)
                    return True
                except queue.Full:
                    if time.monotonic() > deadline:
                        stalled = True
                        return False
            return False

        completed = False
        error: BaseException | None = None
        try:
            completed = run.produce(put, halted)
        except BaseException as exc:  # noqa: B036 - handed to the consumer thread, which re-raises it
            error = exc
        stats.engine_done_at = time.perf_counter()
        stats.engine_completed = completed
        if stalled:
            error = SynthesisError(f"consumer took no audio for {self._stall_timeout} s; synthesis abandoned")
        outcome.append(_Finished(completed, error))
        # Wake a waiting consumer; give up if it is gone (stop set) or stalled: it then finds ``outcome``.
        deadline = time.monotonic() + self._stall_timeout
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                blocks.put(outcome[0], timeout=_POLL_S)
                return
            except queue.Full:
                continue
