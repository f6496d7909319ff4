"""The stt worker: caller audio in, ``speech.started`` / ``speech.progress`` / ``transcript.partial`` /
``transcript.final`` / ``speech.ended`` out.

Invariants:
- A call's recognizer state between utterances is small (the cepstral mean, the expectation): decoders are
  pooled per worker and lent to an utterance, so memory grows with the callers speaking, not the calls open.
- The checkpoint moves only at utterance boundaries (a final, a discarded noise burst, or a quiet stretch
  between utterances), because a decoder's state cannot be saved: a replica that takes the call over replays
  the audio after the checkpoint into a fresh recognizer and reproduces the same utterance ids.
- The provider (PocketSphinx, Deepgram, faster-whisper, with fallback) is the worker's; the handler only maps its
  results to events and commits them with the checkpoint.
- Every ``speech.started`` is closed by exactly one ``transcript.final`` or ``speech.ended`` (an onset without
  words: noise, a cough), so brain can undo what an onset made it do (a paused agent resumes).
- ``listen`` entries (what brain expects next) are hints applied at once and made durable with the next audio
  checkpoint; the expectation in force is stored in the checkpoint hash so a new owner starts with it.
- Frames that queued up together are handled as a batch (:meth:`SttHandler.handle_batch`): an embedded provider
  decodes the whole run of frames in one thread hop, and the batch commits once; what is committed (outputs in
  order, the checkpoint of the batch's last boundary with the state of that moment) is what frame-by-frame
  commits would have left. The idle checkpoint is decided after the same frames either way, so batching does not
  change what the recognizer hears or when the endpointer is rebased.
- An audio entry is taken in once: one at or before the last one fed is skipped (the worker hands a failed
  batch's entries over again one by one), and a commit that did not go out goes out with the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import msgspec
from prometheus_client import Histogram

from voxcart.common import events as ev
from voxcart.common.bus import Entry, Output, keys
from voxcart.common.metrics import BUS_FRAME_AGE, LATENCY_BUCKETS
from voxcart.common.worker import CallContext

from .provider import BlockingFeed, CallStt, SttProvider
from .results import Discarded, Final, Partial, RecognizerEvent, SpeechProgress, SpeechStart

__all__ = ["SttHandler"]

log = logging.getLogger("voxcart.stt.worker")

RECOGNITION_SECONDS = Histogram(
    "voxcart_stt_recognition_seconds", "End of speech decided to final text ready.", buckets=LATENCY_BUCKETS
)
ENDPOINTING_SECONDS = Histogram(
    "voxcart_stt_endpointing_seconds", "Last voiced frame to end of speech decided.", buckets=LATENCY_BUCKETS
)

_IDLE_CHECKPOINT_FRAMES = 50
"""Between utterances, move the checkpoint forward about once a second."""
_RESUME = "resume"
_LISTEN = "listen"

Frame = tuple[str, bytes, float]
"""``(entry id, μ-law, arrived)`` of one ``audio.in`` entry."""


def entry_order(entry_id: str) -> tuple[int, int]:
    """``"<gen>-<chunk>"`` as a pair that sorts like the stream does."""
    gen, _, chunk = entry_id.partition("-")
    return int(gen), int(chunk or 0)


class SttHandler:
    """Recognizes one call's audio with the worker's provider.

    The call's checkpoint hash holds, besides the stream positions, ``resume`` (the recognizer state to continue
    from, e.g. PocketSphinx's cepstral mean) and ``listen`` (the expectation in force), both written with the
    audio position they belong to.
    """

    def __init__(self, ctx: CallContext, provider: SttProvider) -> None:
        self.ctx = ctx
        self.stream = keys.audio_in(ctx.sid)
        self.listen_stream = keys.listen(ctx.sid)
        self.events = keys.events(ctx.sid)
        start_after = ctx.checkpoint.get(self.stream, "0-0")
        self.stt: CallStt = provider.open_call(ctx.sid, start_after=start_after, resume=ctx.checkpoint.get(_RESUME, ""))
        self._listen = ctx.checkpoint.get(_LISTEN, "")
        if self._listen:
            expect, keyterms = _decode_listen(self._listen)
            self.stt.listen(expect, keyterms)
        self._listen_entry: str | None = None
        self._idle_frames = 0
        self._frame_age = BUS_FRAME_AGE.labels("stt")
        self._fed = entry_order(start_after)
        """The last audio entry taken in."""
        self._outputs: list[Output] = []
        self._pending_checkpoint: dict[str, str] = {}
        """Taken in, not committed yet (committed by :meth:`_flush`)."""
        self._blocking = self.stt if isinstance(self.stt, BlockingFeed) else None
        self._decoding: asyncio.Future[None] | None = None
        """The thread hop in progress, if any (``close`` waits for it before releasing the decoders)."""

    def peek(self, event: ev.Event) -> None:
        pass

    async def handle(self, entry: Entry, event: ev.Event) -> None:
        if isinstance(event, ev.Listen):
            self._apply_listen(entry.id, event)
        elif isinstance(event, ev.AudioFrame) and self._is_new(entry.id, event):
            await self._feed([(entry.id, event.payload, event.arrived)])
        await self._flush()

    async def handle_batch(self, items: Sequence[tuple[Entry, ev.Event]]) -> None:
        """Entries in order: each run of frames fed in one go (one thread hop), one commit at the end."""
        run: list[Frame] = []
        for entry, event in items:
            if isinstance(event, ev.AudioFrame):
                if self._is_new(entry.id, event):
                    run.append((entry.id, event.payload, event.arrived))
            elif isinstance(event, ev.Listen):
                await self._feed(run)
                run = []
                self._apply_listen(entry.id, event)
        await self._feed(run)
        await self._flush()

    def _apply_listen(self, entry_id: str, event: ev.Listen) -> None:
        self.stt.listen(event.expect, event.keyterms)
        self._listen = msgspec.json.encode([event.expect, event.keyterms]).decode()
        self._listen_entry = entry_id  # durable with the next audio checkpoint

    def _is_new(self, entry_id: str, frame: ev.AudioFrame) -> bool:
        """Not taken in yet (then its age on the bus is observed)."""
        if entry_order(entry_id) <= self._fed:
            return False
        self._frame_age.observe(max(0.0, (ev.now_ms() - frame.arrived) / 1000))
        return True

    async def _feed(self, frames: Sequence[Frame]) -> None:
        """Feed ``frames`` in order: on one worker thread for an embedded provider, else one by one."""
        if not frames:
            return
        if self._blocking is None:
            for entry_id, ulaw, arrived in frames:
                self._took(entry_id, await self.stt.feed(entry_id, ulaw, arrived))
            return
        self._decoding = asyncio.get_running_loop().run_in_executor(None, self._feed_blocking, self._blocking, frames)
        await asyncio.shield(self._decoding)  # cancelled: the thread still finishes before close() goes on

    def _feed_blocking(self, stt: BlockingFeed, frames: Sequence[Frame]) -> None:
        for entry_id, ulaw, arrived in frames:
            self._took(entry_id, stt.feed_blocking(entry_id, ulaw, arrived))

    def _took(self, entry_id: str, results: Sequence[RecognizerEvent]) -> None:
        """One entry's results: outputs queued, and the checkpoint it allows (decided after this very entry)."""
        self._fed = entry_order(entry_id)
        checkpoint: str | None = None
        for result in results:
            self._outputs.append(self._output(result))
            if isinstance(result, Final | Discarded):
                checkpoint = result.checkpoint_entry
            if isinstance(result, Final):
                ENDPOINTING_SECONDS.observe(max(0.0, (result.endpointed_at - result.last_voiced_arrived) / 1000))
                RECOGNITION_SECONDS.observe(max(0.0, (result.recognized_at - result.endpointed_at) / 1000))
                log.info("final: %r (%.2f)", result.text, result.confidence, extra={"call_sid": self.ctx.sid})
        if checkpoint is None and self.stt.utterance_start_entry() is None:
            self._idle_frames += 1
            if self._idle_frames >= _IDLE_CHECKPOINT_FRAMES:
                self._idle_frames = 0
                checkpoint = self.stt.checkpoint()
        if checkpoint is not None:
            self._pending_checkpoint.update(self._checkpoint(checkpoint))

    async def _flush(self) -> None:
        """Commit what was taken in: the outputs in order, with the latest checkpoint among them."""
        if not self._outputs and not self._pending_checkpoint:
            return
        outputs, checkpoint = self._outputs, self._pending_checkpoint
        self._outputs, self._pending_checkpoint = [], {}
        await self.ctx.commit(outputs, checkpoint or None)

    def _checkpoint(self, audio_entry: str) -> dict[str, str]:
        checkpoint = {self.stream: audio_entry, _RESUME: self.stt.resume, _LISTEN: self._listen}
        if self._listen_entry is not None:
            checkpoint[self.listen_stream] = self._listen_entry
            self._listen_entry = None
        return checkpoint

    def _output(self, result: SpeechStart | SpeechProgress | Partial | Final | Discarded) -> Output:
        sid = self.ctx.sid
        event: ev.Event
        if isinstance(result, SpeechStart):
            event = ev.SpeechStarted(
                call_sid=sid, utterance_id=result.utterance_id, first_voiced_arrived=result.first_voiced_arrived
            )
        elif isinstance(result, SpeechProgress):
            event = ev.SpeechProgress(
                call_sid=sid,
                utterance_id=result.utterance_id,
                first_voiced_arrived=result.first_voiced_arrived,
                voiced_ms=result.voiced_ms,
                prob=result.prob,
                text=result.text,
            )
        elif isinstance(result, Partial):
            event = ev.TranscriptPartial(call_sid=sid, utterance_id=result.utterance_id, text=result.text)
        elif isinstance(result, Discarded):
            event = ev.SpeechEnded(call_sid=sid, utterance_id=result.utterance_id, voiced_ms=result.voiced_ms)
        else:
            event = ev.TranscriptFinal(
                call_sid=sid,
                utterance_id=result.utterance_id,
                text=result.text,
                confidence=result.confidence,
                first_voiced_arrived=result.first_voiced_arrived,
                last_voiced_arrived=result.last_voiced_arrived,
                endpointed_at=result.endpointed_at,
                recognized_at=result.recognized_at,
            )
        return Output(self.events, ev.encode(event), maxlen=keys.EVENTS_MAXLEN)

    async def close(self, reason: str) -> None:
        """Nothing to commit: an utterance in progress is replayed by the next owner from the checkpoint."""
        if self._decoding is not None:
            await asyncio.wait([self._decoding])  # the decoders go back only once the thread is done with them
        await self.stt.aclose()


def _decode_listen(raw: str) -> tuple[ev.Expect, list[str]]:
    try:
        expect, keyterms = msgspec.json.decode(raw, type=tuple[ev.Expect, list[str]])
    except msgspec.ValidationError:
        return "free", []
    return expect, keyterms
