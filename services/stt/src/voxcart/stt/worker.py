"""The stt worker: caller audio in, ``speech.started`` / ``transcript.partial`` / ``transcript.final`` out.

Invariants:
- One persistent decoder per call (its cepstral normalization warms up over the call).
- The checkpoint moves only at utterance boundaries (a final, a discarded noise burst, or a quiet stretch
  between utterances), because a decoder's state cannot be saved: a replica that takes the call over replays
  the audio after the checkpoint into a fresh recognizer and reproduces the same utterance ids.
- Decoding runs in a thread, so the event loop (lease renewal, reading) never waits behind it.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Histogram

from voxcart.common import events as ev
from voxcart.common.bus import Entry, Output, keys
from voxcart.common.metrics import BUS_FRAME_AGE, LATENCY_BUCKETS
from voxcart.common.worker import CallContext

from .recognizer import CallRecognizer, Discarded, Final, Partial, RecognizerModel, SpeechStart

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


class SttHandler:
    """Recognizes one call's audio."""

    def __init__(self, ctx: CallContext, model: RecognizerModel, end_silence_ms: int) -> None:
        self.ctx = ctx
        self.stream = keys.audio_in(ctx.sid)
        self.events = keys.events(ctx.sid)
        start_after = ctx.checkpoint.get(self.stream, "0-0")
        self.recognizer = CallRecognizer(model, ctx.sid, end_silence_ms=end_silence_ms, start_after=start_after)
        self._idle_frames = 0
        self._frame_age = BUS_FRAME_AGE.labels("stt")

    def peek(self, event: ev.Event) -> None:
        pass

    async def handle(self, entry: Entry, event: ev.Event) -> None:
        if not isinstance(event, ev.AudioFrame):
            return
        self._frame_age.observe(max(0.0, (ev.now_ms() - event.arrived) / 1000))
        results = await asyncio.to_thread(self.recognizer.feed, entry.id, event.payload, event.arrived)
        outputs: list[Output] = []
        checkpoint: dict[str, str] | None = None
        for result in results:
            if isinstance(result, SpeechStart):
                outputs.append(
                    self._event(
                        ev.SpeechStarted(
                            call_sid=self.ctx.sid,
                            utterance_id=result.utterance_id,
                            first_voiced_arrived=result.first_voiced_arrived,
                        )
                    )
                )
            elif isinstance(result, Partial):
                outputs.append(
                    self._event(
                        ev.TranscriptPartial(call_sid=self.ctx.sid, utterance_id=result.utterance_id, text=result.text)
                    )
                )
            elif isinstance(result, Final):
                ENDPOINTING_SECONDS.observe(max(0.0, (result.endpointed_at - result.last_voiced_arrived) / 1000))
                RECOGNITION_SECONDS.observe(max(0.0, (result.recognized_at - result.endpointed_at) / 1000))
                outputs.append(
                    self._event(
                        ev.TranscriptFinal(
                            call_sid=self.ctx.sid,
                            utterance_id=result.utterance_id,
                            text=result.text,
                            confidence=result.confidence,
                            first_voiced_arrived=result.first_voiced_arrived,
                            last_voiced_arrived=result.last_voiced_arrived,
                            endpointed_at=result.endpointed_at,
                            recognized_at=result.recognized_at,
                        )
                    )
                )
                checkpoint = {self.stream: result.checkpoint_entry}
                log.info("final: %r (%.2f)", result.text, result.confidence, extra={"call_sid": self.ctx.sid})
            elif isinstance(result, Discarded):
                checkpoint = {self.stream: result.checkpoint_entry}
        if checkpoint is None and self.recognizer.utterance_start_entry() is None:
            self._idle_frames += 1
            if self._idle_frames >= _IDLE_CHECKPOINT_FRAMES:
                self._idle_frames = 0
                idle = self.recognizer.checkpoint()
                if idle is not None:
                    checkpoint = {self.stream: idle}
        if outputs or checkpoint:
            await self.ctx.commit(outputs, checkpoint)

    def _event(self, event: ev.Event) -> Output:
        return Output(self.events, ev.encode(event), maxlen=keys.EVENTS_MAXLEN)

    async def close(self, reason: str) -> None:
        """Nothing to commit: an utterance in progress is replayed by the next owner from the checkpoint."""
