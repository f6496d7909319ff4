"""The tts worker: ``say`` sentences in, μ-law chunks out to ``audio.out``, spoken by a :class:`~.voice.Voice`.

Invariants:
- Chunk ids are ``<turn_no>-<seq * 1000 + k>``: a replay after a takeover re-renders the sentence and Redis
  drops the chunks already written, so the caller never hears a chunk twice.
- The checkpoint moves past a ``say`` only with the commit of its last chunk.
- A ``cancel`` is seen the moment it is read (``peek``), stops a synthesis in progress and makes every queued
  ``say`` of a cancelled turn a no-op.
- The first chunk of a sentence is committed alone (time to first byte), the rest in batches; the newest chunk is
  held back until the next one (or the end) shows whether it is the sentence's last.
- The voice's stream is closed whenever the handler stops reading it (cancel, fenced commit, error), which stops
  the engine; ``close`` tells the voice the call is over (``end_call``).
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Counter, Histogram

from voxcart.common import events as ev
from voxcart.common.bus import Entry, Output, keys
from voxcart.common.metrics import LATENCY_BUCKETS
from voxcart.common.worker import CallContext

from .voice import Voice, aclosing_stream

__all__ = ["TtsHandler"]

log = logging.getLogger("voxcart.tts.worker")

SYNTH_FIRST_CHUNK = Histogram(
    "voxcart_tts_first_chunk_seconds", "From a say read to its first chunk committed.", buckets=LATENCY_BUCKETS
)
SENTENCES = Counter("voxcart_tts_sentences_total", "Sentences synthesized, by result.", ["result"])

_CHUNKS_PER_COMMIT = 10


class TtsHandler:
    """Synthesizes one call's sentences.

    Args:
        ctx: the call.
        voice: the voice, shared by every call of the replica.
    """

    def __init__(self, ctx: CallContext, voice: Voice) -> None:
        self.ctx = ctx
        self.voice = voice
        self.stream = keys.tts(ctx.sid)
        self.out = keys.audio_out(ctx.sid)
        self.cancelled_turn = -1
        self._cancel = threading.Event()
        self._current_turn = -1

    def peek(self, event: ev.Event) -> None:
        if isinstance(event, ev.Cancel) and event.turn_no > self.cancelled_turn:
            self.cancelled_turn = event.turn_no
            if self._current_turn <= event.turn_no:
                self._cancel.set()

    async def handle(self, entry: Entry, event: ev.Event) -> None:
        if isinstance(event, ev.Say) and event.turn_no > self.cancelled_turn:
            await self._say(entry, event)
        else:
            if isinstance(event, ev.Say):
                SENTENCES.labels("cancelled").inc()
            await self.ctx.commit([], {self.stream: entry.id})

    async def _say(self, entry: Entry, say: ev.Say) -> None:
        read_at = time.perf_counter()
        self._cancel.clear()
        self._current_turn = say.turn_no
        started = ev.now_ms()
        held: bytes | None = None  # the newest chunk waits until we know whether it is the sentence's last
        batch: list[bytes] = []
        k = 0
        first = True
        stream = self.voice.synthesize(say.text, call_sid=self.ctx.sid, cancel=self._cancel)
        async with aclosing_stream(stream) as chunks:
            async for chunk in chunks:
                if self._cancel.is_set():
                    break
                if held is not None:
                    batch.append(held)
                held = chunk
                # commit the first chunk alone (time to first byte), then in batches
                if batch and (first or len(batch) >= _CHUNKS_PER_COMMIT):
                    outputs = [self._output(say, k + i, data, started, last=False) for i, data in enumerate(batch)]
                    if not await self.ctx.commit(outputs):
                        return
                    k += len(batch)
                    batch = []
                    if first:
                        SYNTH_FIRST_CHUNK.observe(time.perf_counter() - read_at)
                        first = False
        if self._cancel.is_set():
            SENTENCES.labels("cancelled").inc()
            await self.ctx.commit([], {self.stream: entry.id})
            return
        items = batch + ([held] if held is not None else [])
        if not items:  # nothing to say (empty text): still mark the sentence done
            items = [b""]
        outputs = [self._output(say, k + i, data, started, last=i == len(items) - 1) for i, data in enumerate(items)]
        if await self.ctx.commit(outputs, {self.stream: entry.id}) and first:
            SYNTH_FIRST_CHUNK.observe(time.perf_counter() - read_at)
        SENTENCES.labels("ok").inc()

    def _output(self, say: ev.Say, k: int, data: bytes, started: float, last: bool) -> Output:
        chunk = ev.AudioChunk(
            call_sid=say.call_sid,
            turn_no=say.turn_no,
            seq=say.seq,
            k=k,
            payload=data,
            text=say.text if last else "",
            last_in_sentence=last,
            last_in_turn=last and say.last,
            reply_to_voiced=say.reply_to_voiced,
            synth_started=started,
        )
        return Output(
            self.out, ev.encode(chunk), id=f"{say.turn_no}-{say.seq * 1000 + k}", maxlen=keys.AUDIO_OUT_MAXLEN
        )

    async def close(self, reason: str) -> None:
        self._cancel.set()
        await self.voice.end_call(self.ctx.sid)
