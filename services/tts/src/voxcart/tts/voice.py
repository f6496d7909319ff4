"""What the tts worker drives: a :class:`Voice` speaks one sentence as μ-law 8 kHz chunks, asynchronously.

Embedded engines (espeak-ng, piper) are blocking :class:`~voxcart.tts.synth.Synthesizer` s run on a thread
(:class:`ThreadedVoice`); cloud engines (ElevenLabs) are native async. The worker sees only this interface.

Contract of :meth:`Voice.synthesize`:
- chunks are μ-law 8 kHz bytes, each a whole number of 20 ms frames (160 bytes), the last padded with μ-law
  silence; the first is yielded as soon as the engine has it (time to first audio does not grow with the text);
- once ``cancel`` is set no further chunk is yielded and the engine stops working;
- a failure raises :class:`VoiceError` naming the engine and what went wrong (status, timeout, drop), so the
  fallback can take over; ``chunks_yielded`` in the error says whether the caller already heard part of it.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Protocol

__all__ = ["Voice", "VoiceError"]


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
