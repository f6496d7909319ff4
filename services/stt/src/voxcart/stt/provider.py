"""What the stt worker drives: one recognizer per call, embedded (PocketSphinx, faster-whisper) or cloud (Deepgram).

The worker feeds a call's audio entries in order and commits what comes back; it never knows which engine runs.

Contract of every :class:`CallStt`:
- :meth:`CallStt.feed` takes the next ``audio.in`` entry and returns the events ready now, in order. A
  streaming provider whose results arrive asynchronously returns them on the next ``feed`` (Twilio sends a
  frame every 20 ms for the whole call, silence included, so that costs at most one frame).
- Utterance ids are ``<call_sid>:<entry id of the utterance's first frame>`` (pre-roll included), so brain's
  dedupe of answered utterances works whichever replica or provider produced them.
- Every :class:`~voxcart.stt.results.Final` carries the entry to checkpoint and the state to resume from; an
  embedded provider replayed from there reproduces the same ids and texts, a cloud one the same ids at best.
- :meth:`CallStt.listen` is a hint for the next utterance: a provider may narrow its search (grammars,
  keyterms) but must still hear a caller who says something else.
- A provider that fails raises :class:`ProviderError`; the worker's fallback takes over for the rest of the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from voxcart.common.events import Expect

from .results import RecognizerEvent

__all__ = ["BlockingFeed", "CallStt", "ProviderError", "SttProvider"]


class ProviderError(RuntimeError):
    """A recognizer failed (connect refused, 401/429, timeout, dropped and not reconnected); the message says which."""


class CallStt(Protocol):
    """One call's recognition."""

    provider: str
    """The provider's name, for logs and metrics (``pocketsphinx``, ``deepgram``, ``whisper``)."""

    async def feed(self, entry_id: str, ulaw: bytes, arrived: float) -> list[RecognizerEvent]:
        """Take the next entry (μ-law 8 kHz, a multiple of 160 bytes) and return the events ready now.

        Raises:
            ValueError: the payload is not a non-zero multiple of 160 bytes.
            ProviderError: the provider failed.
        """
        ...

    def listen(self, expect: Expect, keyterms: Sequence[str] = ()) -> None:
        """What the caller is expected to say next (applies from the next utterance on)."""
        ...

    async def end_utterance(self) -> list[RecognizerEvent]:
        """Close the utterance in progress now (call end, drain): its final, or nothing if none is open."""
        ...

    def checkpoint(self) -> str | None:
        """Between utterances: the entry a fresh recognizer may replay after; ``None`` during an utterance."""
        ...

    @property
    def resume(self) -> str:
        """State to save with a :meth:`checkpoint` and hand to the next owner ("" if the provider keeps none)."""
        ...

    def utterance_start_entry(self) -> str | None:
        """The first entry of the utterance in progress, ``None`` between utterances."""
        ...

    async def aclose(self) -> None:
        """Release the call's resources (decoder, websocket). Idempotent."""
        ...


@runtime_checkable
class BlockingFeed(Protocol):
    """A :class:`CallStt` whose decoding is CPU work on the calling thread (the embedded engines): the worker feeds
    it a run of frames in one thread hop rather than one hop per frame."""

    def feed_blocking(self, entry_id: str, ulaw: bytes, arrived: float) -> list[RecognizerEvent]:
        """:meth:`CallStt.feed` on the calling thread (never call it on the event loop)."""
        ...


class SttProvider(Protocol):
    """What a worker shares across its calls (models, HTTP clients)."""

    name: str

    def open_call(self, call_sid: str, *, start_after: str = "0-0", resume: str = "") -> CallStt:
        """A recognizer for one call, replaying after ``start_after`` with the saved ``resume`` state."""
        ...

    async def aclose(self) -> None:
        """Release shared resources."""
        ...
