"""A recognizer with a spare: when the primary (a cloud provider) fails, the call goes on on the fallback.

Invariants:
- The entries fed since the last final (or discarded noise, or committed idle checkpoint) are kept, at most
  ``buffer_s`` of audio. When the primary raises :class:`~voxcart.stt.provider.ProviderError` (from ``feed`` or
  ``end_utterance``), the failure is logged and counted (``voxcart_stt_fallbacks_total{provider}``), the primary
  is closed, and the fallback is opened after the entry just before the kept ones, told the last
  :meth:`~FallbackCallStt.listen` hint, fed the kept entries again and used for the rest of the call. So the
  utterance in progress is recognized again, from its start, by the fallback.
- Whatever either recognizer emits, a :class:`Final` or :class:`Discarded` goes out at most once per utterance id
  (and nothing more for that id afterwards), a :class:`SpeechStart` at most once per id.
- A failure of the fallback propagates: there is nothing behind it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence

from prometheus_client import Counter

from voxcart.common.audio import SAMPLE_RATE
from voxcart.common.events import Expect
from voxcart.common.metrics import PROVIDER_FALLBACKS

from .provider import CallStt, ProviderError, SttProvider
from .results import Discarded, Final, RecognizerEvent, SpeechStart

__all__ = ["FALLBACKS", "FallbackCallStt", "FallbackProvider"]

log = logging.getLogger("voxcart.stt.fallback")

FALLBACKS = Counter(
    "voxcart_stt_fallbacks_total", "Calls whose recognizer failed and went on on the fallback.", ["provider"]
)
"""Labelled by the provider that failed; ``voxcart_provider_fallbacks_total{svc="stt"}`` counts the same."""
PROVIDER_FALLBACKS.labels("stt", "deepgram")  # the primary app.py can put in front: exported at 0 from the start


def _count_fallback(provider: str) -> None:
    FALLBACKS.labels(provider).inc()
    PROVIDER_FALLBACKS.labels("stt", provider).inc()


_REMEMBERED_IDS = 1000
"""Utterance ids remembered for deduplication (a call has far fewer utterances)."""


class FallbackCallStt:
    """One call on ``primary``, then on ``fallback(start_after)`` once the primary fails.

    Args:
        primary: the call's recognizer (Deepgram).
        fallback: opens the spare recognizer; it is given the entry the replayed entries follow (its
            ``start_after``) and is called at most once.
        call_sid: for logs.
        start_after: the entry the call's feeding started after (its checkpoint).
        buffer_s: audio kept for the replay.

    Raises:
        ValueError: ``buffer_s`` is not positive.
    """

    def __init__(
        self,
        primary: CallStt,
        fallback: Callable[[str], CallStt],
        *,
        call_sid: str = "",
        start_after: str = "0-0",
        buffer_s: float = 30.0,
    ) -> None:
        if buffer_s <= 0:
            raise ValueError(f"FallbackCallStt: buffer_s must be positive, got {buffer_s}")
        self.provider = primary.provider
        self.primary = primary
        self.active = primary
        self.fell_back = False
        self._open_fallback = fallback
        self._extra = {"call_sid": call_sid}
        self._limit = int(buffer_s * SAMPLE_RATE)
        self._kept: deque[tuple[str, bytes, float]] = deque()
        self._kept_bytes = 0
        self._before = start_after
        self._listen: tuple[Expect, list[str]] | None = None
        self._started: dict[str, None] = {}
        self._finalized: dict[str, None] = {}
        self._closed = False

    async def feed(self, entry_id: str, ulaw: bytes, arrived: float) -> list[RecognizerEvent]:
        if self._closed:
            raise ProviderError("FallbackCallStt: used after aclose()")
        if self.fell_back:  # for good: nothing more to replay, so nothing more to keep
            return self._pass(await self.active.feed(entry_id, ulaw, arrived))
        self._keep(entry_id, ulaw, arrived)
        try:
            return self._pass(await self.primary.feed(entry_id, ulaw, arrived))
        except ProviderError as exc:
            return await self._switch(exc)

    def listen(self, expect: Expect, keyterms: Sequence[str] = ()) -> None:
        self._listen = (expect, list(keyterms))
        self.active.listen(expect, keyterms)

    async def end_utterance(self) -> list[RecognizerEvent]:
        if self.fell_back:
            return self._pass(await self.active.end_utterance())
        try:
            return self._pass(await self.primary.end_utterance())
        except ProviderError as exc:
            events = await self._switch(exc)
            return events + self._pass(await self.active.end_utterance())

    def checkpoint(self) -> str | None:
        entry = self.active.checkpoint()
        if entry is not None:
            self._forget_through(entry)
        return entry

    @property
    def resume(self) -> str:
        return self.active.resume

    def utterance_start_entry(self) -> str | None:
        return self.active.utterance_start_entry()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._close_primary()
        if self.fell_back:
            await self.active.aclose()

    async def _switch(self, error: ProviderError) -> list[RecognizerEvent]:
        """Close the primary, open the fallback and replay the kept entries into it."""
        _count_fallback(self.primary.provider)
        log.warning(
            "stt: %s failed (%s); going on on the fallback, replaying %d entries after %s",
            self.primary.provider,
            error,
            len(self._kept),
            self._before,
            extra=self._extra,
        )
        await self._close_primary()
        self.active = self._open_fallback(self._before)
        self.provider = self.active.provider
        self.fell_back = True
        if self._listen is not None:
            self.active.listen(*self._listen)
        events: list[RecognizerEvent] = []
        kept, self._kept, self._kept_bytes = list(self._kept), deque(), 0
        for entry_id, ulaw, arrived in kept:
            events += self._pass(await self.active.feed(entry_id, ulaw, arrived))
        return events

    async def _close_primary(self) -> None:
        try:
            await self.primary.aclose()
        except Exception:  # a broken primary must not stop the call going on
            log.exception("stt: closing %s failed", self.primary.provider, extra=self._extra)

    def _keep(self, entry_id: str, ulaw: bytes, arrived: float) -> None:
        self._kept.append((entry_id, ulaw, arrived))
        self._kept_bytes += len(ulaw)
        while self._kept_bytes > self._limit and len(self._kept) > 1:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        entry_id, ulaw, _ = self._kept.popleft()
        self._kept_bytes -= len(ulaw)
        self._before = entry_id

    def _forget_through(self, entry_id: str) -> None:
        """Drop the kept entries up to ``entry_id`` (a checkpoint: a fresh recognizer starts after it)."""
        if any(kept == entry_id for kept, _, _ in self._kept):
            while self._before != entry_id:
                self._drop_oldest()

    def _pass(self, events: list[RecognizerEvent]) -> list[RecognizerEvent]:
        """Drop repeats: a second SpeechStart or Final for an id, anything for an id already finalized."""
        out: list[RecognizerEvent] = []
        for event in events:
            uid = event.utterance_id
            if uid in self._finalized:
                continue
            if isinstance(event, SpeechStart):
                if uid in self._started:
                    continue
                _remember(self._started, uid)
            elif isinstance(event, Final | Discarded):
                _remember(self._finalized, uid)
                self._forget_through(event.checkpoint_entry)
            out.append(event)
        return out


def _remember(ids: dict[str, None], uid: str) -> None:
    ids[uid] = None
    if len(ids) > _REMEMBERED_IDS:
        del ids[next(iter(ids))]


class FallbackProvider:
    """Opens calls on ``primary`` with ``fallback`` behind each (see :class:`FallbackCallStt`).

    A primary that cannot even be opened (:class:`ProviderError`) is counted and the call opens on the fallback.

    Args:
        primary: the provider to use (Deepgram).
        fallback: the spare (PocketSphinx); :meth:`aclose` closes both.
        buffer_s: audio each call keeps for the replay.
    """

    def __init__(self, primary: SttProvider, fallback: SttProvider, *, buffer_s: float = 30.0) -> None:
        self.name = primary.name
        self.primary = primary
        self.fallback = fallback
        self.buffer_s = buffer_s

    def open_call(self, call_sid: str, *, start_after: str = "0-0", resume: str = "") -> CallStt:
        def spare(after: str) -> CallStt:
            return self.fallback.open_call(call_sid, start_after=after, resume=resume)

        try:
            primary = self.primary.open_call(call_sid, start_after=start_after, resume=resume)
        except ProviderError as exc:
            _count_fallback(self.primary.name)
            log.warning(
                "stt: %s cannot open the call (%s); using the fallback",
                self.primary.name,
                exc,
                extra={"call_sid": call_sid},
            )
            return spare(start_after)
        return FallbackCallStt(primary, spare, call_sid=call_sid, start_after=start_after, buffer_s=self.buffer_s)

    async def aclose(self) -> None:
        try:
            await self.primary.aclose()
        finally:
            await self.fallback.aclose()
