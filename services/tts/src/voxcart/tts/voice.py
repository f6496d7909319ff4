"""What the tts worker drives: a :class:`Voice` speaks one sentence as μ-law 8 kHz chunks, asynchronously.

Embedded engines (espeak-ng, piper) are blocking :class:`~voxcart.tts.synth.Synthesizer` s run on a thread
(:class:`ThreadedVoice`); cloud engines (ElevenLabs) are native async. The worker sees only this interface.
:class:`FallbackVoice` puts a second voice behind a first one, with a circuit breaker.

Contract of :meth:`Voice.synthesize`:
- chunks are μ-law 8 kHz bytes, each a whole number of 20 ms frames (160 bytes), the last padded with μ-law
  silence; the first is yielded as soon as the engine has it (time to first audio does not grow with the text);
- once ``cancel`` is set no further chunk is yielded and the engine stops working;
- a failure raises :class:`VoiceError` naming the engine and what went wrong (status, timeout, drop), so the
  fallback can take over; ``chunks_yielded`` in the error says whether the caller already heard part of it.

Consumers close the iterator when they stop early (``contextlib.aclosing``); closing it stops the engine.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from voxcart.common.metrics import PROVIDER_FALLBACKS

from .synth import Synthesizer

__all__ = ["FallbackVoice", "ThreadedVoice", "Voice", "VoiceError", "aclosing_stream"]

log = logging.getLogger("voxcart.tts.voice")

FALLBACKS = Counter(
    "voxcart_tts_fallbacks_total",
    "Sentences the fallback voice spoke instead of `voice` (it failed, or its circuit breaker was open).",
    ["voice"],
)
for _primary in ("piper", "elevenlabs"):  # the primaries app.py can put in front of espeak: exported at 0
    PROVIDER_FALLBACKS.labels("tts", _primary)


def _count_fallback(voice: str) -> None:
    """One sentence spoken by the fallback instead of ``voice`` (also ``voxcart_provider_fallbacks_total``)."""
    FALLBACKS.labels(voice).inc()
    PROVIDER_FALLBACKS.labels("tts", voice).inc()


class VoiceError(RuntimeError):
    """A voice failed; the message says which engine and why."""

    def __init__(self, message: str, *, chunks_yielded: int = 0) -> None:
        super().__init__(message)
        self.chunks_yielded = chunks_yielded


class Voice(Protocol):
    """A speech engine as the tts worker sees it."""

    name: str
    """``espeak``, ``piper``, ``elevenlabs``: for logs and metrics."""

    def synthesize(self, text: str, *, call_sid: str, cancel: threading.Event) -> AsyncIterator[bytes]:
        """Speak one sentence (or a few) of a call's reply.

        Raises (from the iterator):
            VoiceError: the engine failed.
        """
        ...

    async def end_call(self, call_sid: str) -> None:
        """The call is over (or no longer ours): release what the voice keeps per call (a websocket)."""
        ...

    async def aclose(self) -> None:
        """Release shared resources."""
        ...


@asynccontextmanager
async def aclosing_stream(stream: AsyncIterator[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """``async with aclosing_stream(voice.synthesize(...)) as chunks``: closes the stream on exit (when it has
    ``aclose``, as async generators do), so an engine stops the moment its consumer does."""
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(frozen=True, slots=True)
class _End:
    error: BaseException | None


class ThreadedVoice:
    """A blocking :class:`~voxcart.tts.synth.Synthesizer` as a :class:`Voice`.

    Each synthesis gets a thread of its own that iterates the engine's stream and hands chunks to the event loop
    (``call_soon_threadsafe``), at most ``max_ahead`` chunks ahead of the consumer. The event loop never blocks
    and no executor thread is held while an engine waits for audio (or for espeak-ng's process lock), so many
    calls can synthesize at once. The thread closes the engine's stream itself when the consumer stops early.

    Args:
        synth: the engine (:class:`~voxcart.tts.synth.EspeakSynthesizer`,
            :class:`~voxcart.tts.piper.PiperSynthesizer`).
        name: ``espeak``, ``piper``: for logs and metrics.
        max_ahead: chunks the thread may hold for the consumer.
    """

    def __init__(self, synth: Synthesizer, name: str, *, max_ahead: int = 50) -> None:
        if max_ahead < 1:
            raise ValueError(f"ThreadedVoice max_ahead: expected >= 1, got {max_ahead}")
        self.synth = synth
        self.name = name
        self._max_ahead = max_ahead

    async def synthesize(self, text: str, *, call_sid: str, cancel: threading.Event) -> AsyncIterator[bytes]:
        """Speak ``text`` (see :class:`Voice`).

        Raises:
            VoiceError: the engine failed (its error is the ``__cause__``).
        """
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | _End] = asyncio.Queue()
        stop = threading.Event()
        credits = threading.Semaphore(self._max_ahead)
        thread = threading.Thread(
            target=self._pump,
            args=(text, cancel, loop, chunks, stop, credits),
            name=f"voxcart-tts-{self.name}-voice",
            daemon=True,
        )
        thread.start()
        yielded = 0
        try:
            while True:
                item = await chunks.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise VoiceError(f"{self.name} failed: {item.error}", chunks_yielded=yielded) from item.error
                    return
                credits.release()
                if cancel.is_set():
                    return
                yield item
                yielded += 1
        finally:
            stop.set()  # the thread closes the engine's stream at its next chunk (or credit wait)

    def _pump(
        self,
        text: str,
        cancel: threading.Event,
        loop: asyncio.AbstractEventLoop,
        chunks: asyncio.Queue[bytes | _End],
        stop: threading.Event,
        credits: threading.Semaphore,
    ) -> None:
        def send(item: bytes | _End) -> None:
            try:
                loop.call_soon_threadsafe(chunks.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                stop.set()

        error: BaseException | None = None
        stream: Iterator[bytes] | None = None
        try:
            stream = iter(self.synth.synthesize(text, cancel))
            while not stop.is_set():
                while not credits.acquire(timeout=0.05):
                    if stop.is_set():
                        return
                chunk = next(stream, None)
                if chunk is None:
                    break
                send(chunk)
        except Exception as exc:  # handed to the event loop, raised there as a VoiceError
            error = exc
        finally:
            close = getattr(stream, "close", None)
            if callable(close):
                close()
            if not stop.is_set():
                send(_End(error))

    async def end_call(self, call_sid: str) -> None:
        """Nothing is kept per call."""

    async def aclose(self) -> None:
        """Nothing to release: streams end with their consumers."""


class FallbackVoice:
    """Speaks with ``primary``; when it fails, the same sentence is spoken by ``fallback``.

    Behaviour:

    * the primary raises :class:`VoiceError` (or any other exception: a bug in a provider must not leave the
      caller in silence; it is logged with its traceback) before its first chunk: the fallback speaks the sentence,
      and the caller hears no difference but the voice;
    * it fails after some chunks: the fallback speaks the **whole** sentence again. The engines share no
      alignment, so the rest cannot be picked up where the primary stopped; a repeated half sentence is better
      than a lost one, which might be the half with the order number or the price in it;
    * circuit breaker: after a failure the primary is skipped for ``cooldown_s`` (every sentence goes straight to
      the fallback, with no added latency such as a provider timeout). Then one sentence at a time probes the
      primary (half-open; concurrent sentences keep using the fallback): success closes the breaker, a failure
      opens it for another ``cooldown_s``;
    * a failure of the fallback itself propagates.

    ``voxcart_tts_fallbacks_total{voice}`` counts the sentences the fallback spoke, labelled with the primary's
    name. Put a :class:`~voxcart.tts.phrase_cache.PhraseCache` on the primary (not around this voice), so that it
    only ever stores the primary's audio.

    Args:
        primary: the voice to use (piper, ElevenLabs); this voice's ``name`` is its name.
        fallback: the voice to fall back on (espeak-ng: embedded, no failure modes of its own).
        cooldown_s: how long the primary is skipped after a failure.
        clock: monotonic seconds (for tests).
    """

    def __init__(
        self,
        primary: Voice,
        fallback: Voice,
        *,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cooldown_s < 0:
            raise ValueError(f"FallbackVoice cooldown_s: expected >= 0, got {cooldown_s}")
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name
        self._cooldown = cooldown_s
        self._clock = clock
        self._open_until: float | None = None  # None: closed (the primary is used)
        self._probing = False

    @property
    def primary_skipped(self) -> bool:
        """True while the breaker is open: the next sentence goes straight to the fallback."""
        return self._open_until is not None and (self._clock() < self._open_until or self._probing)

    async def synthesize(self, text: str, *, call_sid: str, cancel: threading.Event) -> AsyncIterator[bytes]:
        """Speak ``text`` with the primary, or with the fallback when it fails or is cooling down.

        Raises:
            VoiceError: the fallback failed too.
        """
        probe = False
        if self._open_until is not None:
            if self.primary_skipped:
                _count_fallback(self.primary.name)
                async with aclosing_stream(self.fallback.synthesize(text, call_sid=call_sid, cancel=cancel)) as stream:
                    async for chunk in stream:
                        yield chunk
                return
            probe = self._probing = True
        yielded = 0
        try:
            async with aclosing_stream(self.primary.synthesize(text, call_sid=call_sid, cancel=cancel)) as stream:
                async for chunk in stream:
                    yield chunk
                    yielded += 1
            if not cancel.is_set():
                self._open_until = None
            return
        except Exception as exc:
            self._open_until = self._clock() + self._cooldown
            extra = {"call_sid": call_sid}
            if isinstance(exc, VoiceError):
                what = f"failed after {yielded} chunks ({exc})"
                log.warning("%s %s; %s speaks the sentence", self.primary.name, what, self.fallback.name, extra=extra)
            else:
                log.exception("%s raised; %s speaks the sentence", self.primary.name, self.fallback.name, extra=extra)
            log.info("%s skipped for %.0f s", self.primary.name, self._cooldown, extra=extra)
        finally:
            if probe:
                self._probing = False
        if cancel.is_set():
            return
        _count_fallback(self.primary.name)
        async with aclosing_stream(self.fallback.synthesize(text, call_sid=call_sid, cancel=cancel)) as stream:
            async for chunk in stream:
                yield chunk

    async def end_call(self, call_sid: str) -> None:
        """Tell both voices; a failure of one does not keep the other from hearing it."""
        await self._both("end_call", self.primary.end_call(call_sid), self.fallback.end_call(call_sid))

    async def aclose(self) -> None:
        """Close both voices."""
        await self._both("aclose", self.primary.aclose(), self.fallback.aclose())

    async def _both(self, what: str, *calls: Awaitable[None]) -> None:
        for voice, result in zip(
            (self.primary, self.fallback), await asyncio.gather(*calls, return_exceptions=True), strict=True
        ):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                log.warning("%s.%s failed: %r", voice.name, what, result)
