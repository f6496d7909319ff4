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
"""

from __future__ import annotations

import logging

import msgspec
from prometheus_client import Histogram

from voxcart.common import events as ev
from voxcart.common.bus import Entry, Output, keys
from voxcart.common.metrics import BUS_FRAME_AGE, LATENCY_BUCKETS
from voxcart.common.worker import CallContext

from .provider import CallStt, SttProvider
from .results import Discarded, Final, Partial, SpeechProgress, SpeechStart

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

    def peek(self, event: ev.Event) -> None:
        pass

    async def handle(self, entry: Entry, event: ev.Event) -> None:
        if isinstance(event, ev.Listen):
            self.stt.listen(event.expect, event.keyterms)
            self._listen = msgspec.json.encode([event.expect, event.keyterms]).decode()
            self._listen_entry = entry.id  # durable with the next audio checkpoint
            return
        if not isinstance(event, ev.AudioFrame):
            return
        self._frame_age.observe(max(0.0, (ev.now_ms() - event.arrived) / 1000))
        results = await self.stt.feed(entry.id, event.payload, event.arrived)
        outputs = [self._output(result) for result in results]
        checkpoint: str | None = None
        for result in results:
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
            await self.ctx.commit(outputs, self._checkpoint(checkpoint))
        elif outputs:
            await self.ctx.commit(outputs)

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
        await self.stt.aclose()


def _decode_listen(raw: str) -> tuple[ev.Expect, list[str]]:
    try:
        expect, keyterms = msgspec.json.decode(raw, type=tuple[ev.Expect, list[str]])
    except msgspec.ValidationError:
        return "free", []
    return expect, keyterms
