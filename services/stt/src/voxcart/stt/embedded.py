"""The embedded provider: PocketSphinx on the worker's shared domain model and its pool of decoders.

Decoding runs on a worker thread (``asyncio.to_thread``), so the event loop (lease renewal, reading) never waits
behind it. Replay after a checkpoint is exact (see ``recognizer``): the same utterance ids and texts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from voxcart.common.events import Expect

from .endpointer import EndpointerConfig
from .recognizer import CallRecognizer, RecognizerModel
from .results import RecognizerEvent

__all__ = ["PocketsphinxCallStt", "PocketsphinxProvider"]


class PocketsphinxCallStt:
    """One call on PocketSphinx (see :class:`~voxcart.stt.provider.CallStt`)."""

    provider = "pocketsphinx"

    def __init__(self, recognizer: CallRecognizer) -> None:
        self.recognizer = recognizer

    async def feed(self, entry_id: str, ulaw: bytes, arrived: float) -> list[RecognizerEvent]:
        return await asyncio.to_thread(self.recognizer.feed, entry_id, ulaw, arrived)

    def feed_blocking(self, entry_id: str, ulaw: bytes, arrived: float) -> list[RecognizerEvent]:
        return self.recognizer.feed(entry_id, ulaw, arrived)

    def listen(self, expect: Expect, keyterms: Sequence[str] = ()) -> None:
        self.recognizer.listen(expect, keyterms)

    async def end_utterance(self) -> list[RecognizerEvent]:
        return await asyncio.to_thread(self.recognizer.end_utterance)

    def checkpoint(self) -> str | None:
        return self.recognizer.checkpoint()

    @property
    def resume(self) -> str:
        return self.recognizer.resume

    def utterance_start_entry(self) -> str | None:
        return self.recognizer.utterance_start_entry()

    async def aclose(self) -> None:
        self.recognizer.close()  # an utterance in progress gives its decoders back to the model's pool


class PocketsphinxProvider:
    """Opens :class:`PocketsphinxCallStt` s on one shared :class:`RecognizerModel`.

    Args:
        model: the domain model (replace :attr:`model` to rebuild: calls already open keep theirs).
        end_silence_ms: silence that ends an utterance.
        endpointer: the other endpointing knobs (VAD choice, pre-roll).
    """

    name = "pocketsphinx"

    def __init__(
        self, model: RecognizerModel, end_silence_ms: int, *, endpointer: EndpointerConfig | None = None
    ) -> None:
        self.model = model
        self.end_silence_ms = end_silence_ms
        self.endpointer = endpointer

    def open_call(self, call_sid: str, *, start_after: str = "0-0", resume: str = "") -> PocketsphinxCallStt:
        recognizer = CallRecognizer(
            self.model,
            call_sid,
            end_silence_ms=self.end_silence_ms,
            endpointer=self.endpointer,
            start_after=start_after,
            cmn=resume or None,
        )
        return PocketsphinxCallStt(recognizer)

    async def aclose(self) -> None:
        self.model.close()
