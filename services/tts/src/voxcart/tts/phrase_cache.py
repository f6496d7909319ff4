"""A cache of synthesized sentences: greetings, hold lines and re-prompts are replayed instead of re-synthesized.

:class:`PhraseCache` is itself a :class:`~voxcart.tts.voice.Voice` wrapped around another one.

Invariants:
- Only a sentence whose synthesis **completed** is stored: not one that was cancelled, failed, or whose consumer
  stopped reading. A replay is the same chunks, byte for byte, with no engine call.
- The key is (voice name, text with whitespace collapsed and Unicode NFC): case and punctuation change how a
  sentence is spoken, so they are part of it.
- Bounded twice, least recently used first: by entries (``max_entries``) and by μ-law bytes (``max_bytes``).
  Phrases given to :meth:`PhraseCache.warm` are pinned: never evicted, but counted in both bounds.
- Process memory only: nothing is written out or logged. Order details (numbers, names, addresses) never repeat,
  so they cannot crowd out the fixed phrases for long; still, text that :func:`looks_personal` (a run of three or
  more digits, an ``@``: order, phone, card and zip numbers, e-mail addresses) is passed through and never stored,
  since it is both personal and useless to keep. Names cannot be told apart from words; they live only until
  evicted, like the same text already does in the bus's ``say`` stream.
- Two calls missing on the same sentence at once both synthesize it (the second store replaces the first).

``voxcart_tts_phrase_cache_total{result}`` counts ``hit``, ``miss`` and ``bypass`` (not cacheable).
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from prometheus_client import Counter

from .voice import Voice, VoiceError, aclosing_stream

__all__ = ["PhraseCache", "looks_personal"]

log = logging.getLogger("voxcart.tts.phrase_cache")

LOOKUPS = Counter("voxcart_tts_phrase_cache_total", "Phrase cache lookups, by result.", ["result"])

_PERSONAL = re.compile(r"\d(?:[\s().-]?\d){2,}|@")


def looks_personal(text: str) -> bool:
    """True when ``text`` holds a run of 3+ digits (separators allowed) or an ``@``: it is not cached."""
    return _PERSONAL.search(text) is not None


def _normalized(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


@dataclass(frozen=True, slots=True)
class _Entry:
    chunks: tuple[bytes, ...]
    size: int
    pinned: bool


class PhraseCache:
    """Replays sentences ``voice`` has already spoken.

    Args:
        voice: the voice whose sentences are kept (put it on a fallback's primary, not around the fallback, so
            the fallback's audio is never stored under the primary's name).
        max_entries: sentences kept at most.
        max_bytes: μ-law bytes kept at most (8000 per second of audio); the default holds about 70 minutes.
        cacheable: which texts may be stored; default: those that do not :func:`look personal <looks_personal>`.

    Raises:
        ValueError: a bound is below 1.
    """

    def __init__(
        self,
        voice: Voice,
        max_entries: int,
        *,
        max_bytes: int = 32 << 20,
        cacheable: Callable[[str], bool] = lambda text: not looks_personal(text),
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"PhraseCache: max_entries and max_bytes must be >= 1, got {max_entries}, {max_bytes}")
        self.voice = voice
        self.name = voice.name
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._cacheable = cacheable
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()  # oldest first
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """μ-law bytes held."""
        return self._bytes

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and (self.voice.name, _normalized(text)) in self._entries

    async def synthesize(self, text: str, *, call_sid: str, cancel: threading.Event) -> AsyncIterator[bytes]:
        """Replay ``text`` if it is stored; otherwise speak it with the voice and store it once complete.

        Raises:
            VoiceError: the voice failed (nothing is stored).
        """
        if not self._cacheable(text):
            LOOKUPS.labels("bypass").inc()
            async with aclosing_stream(self.voice.synthesize(text, call_sid=call_sid, cancel=cancel)) as stream:
                async for chunk in stream:
                    yield chunk
            return
        key = (self.voice.name, _normalized(text))
        entry = self._entries.get(key)
        if entry is not None:
            LOOKUPS.labels("hit").inc()
            self._entries.move_to_end(key)
            for chunk in entry.chunks:
                if cancel.is_set():
                    return
                yield chunk
            return
        LOOKUPS.labels("miss").inc()
        chunks: list[bytes] = []
        async with aclosing_stream(self.voice.synthesize(text, call_sid=call_sid, cancel=cancel)) as stream:
            async for chunk in stream:
                chunks.append(chunk)
                yield chunk
        if not cancel.is_set():  # a cancelled stream ends early without an error: it may be incomplete
            self._store(key, chunks, pinned=False)

    async def warm(self, phrases: Iterable[str], *, call_sid: str = "warm") -> int:
        """Synthesize ``phrases`` now (at start) and pin them, so that their first use is a hit too.

        A phrase the voice fails on is logged and skipped; phrases that no longer fit the bounds are not pinned.

        Returns:
            How many phrases are stored and pinned.
        """
        pinned = 0
        for text in phrases:
            key = (self.voice.name, _normalized(text))
            if not key[1]:
                continue
            cancel = threading.Event()
            try:
                async with aclosing_stream(self.voice.synthesize(text, call_sid=call_sid, cancel=cancel)) as stream:
                    chunks = [chunk async for chunk in stream]
            except VoiceError as exc:
                log.warning("warming the phrase cache: %s failed on a phrase: %s", self.voice.name, exc)
                continue
            if not self._store(key, chunks, pinned=True):
                log.warning(
                    "phrase cache full of pinned phrases (%d, %d bytes): not pinning more", len(self), self._bytes
                )
                break
            pinned += 1
        return pinned

    def _store(self, key: tuple[str, str], chunks: list[bytes], *, pinned: bool) -> bool:
        """Store (or refresh) an entry, then evict least recently used unpinned ones to fit; False if it did not fit."""
        size = sum(map(len, chunks))
        if not chunks or size > self.max_bytes:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
            pinned = pinned or old.pinned
        entry = _Entry(tuple(chunks), size, pinned)
        self._entries[key] = entry
        self._bytes += entry.size
        count, size = len(self._entries), self._bytes
        victims: list[tuple[str, str]] = []
        for victim_key, victim in self._entries.items():
            if count <= self.max_entries and size <= self.max_bytes:
                break
            if not victim.pinned:
                victims.append(victim_key)
                count, size = count - 1, size - victim.size
        for victim_key in victims:
            self._bytes -= self._entries.pop(victim_key).size
        if count > self.max_entries or size > self.max_bytes:  # only pinned entries are left to evict
            dropped = self._entries.pop(key, None)
            self._bytes -= dropped.size if dropped is not None else 0
            return False
        return key in self._entries

    async def end_call(self, call_sid: str) -> None:
        """Passed on to the voice; the cache keeps nothing per call."""
        await self.voice.end_call(call_sid)

    async def aclose(self) -> None:
        """Drop every entry and close the voice."""
        self._entries.clear()
        self._bytes = 0
        await self.voice.aclose()
