"""One call's Deepgram results turned into recognizer events, and the audio kept to send again (no I/O).

Invariants:
- Deepgram's times are seconds of audio since the connection's first byte. Each connection numbers the bytes of
  the entries it was sent, so a time maps back to the entry that held it, its id and its gateway ``arrived``.
  ``utterance_id = <call_sid>:<entry id of the utterance's first frame>``, the first frame being the one at
  ``SpeechStarted`` or at the first word, whichever came first; :class:`SpeechStart` is emitted once, then.
- An utterance's text is its ``is_final`` segments, joined; it ends at ``speech_final`` or ``UtteranceEnd``,
  whichever comes first. An onset followed by ``end_silence_ms + 1 s`` of finalized audio with no word is
  :class:`Discarded`.
- ``first/last_voiced_arrived`` are the ``arrived`` of the entries at the first word's start and the last word's
  end; ``endpointed_at`` that of the entry where the endpointing silence (or ``utterance_end_ms``) after the last
  word was complete, ``recognized_at`` when the result came in; ``checkpoint_entry`` is the last word's entry.
- The entries since the last final are kept (between utterances only the last ``idle_keep_s``; at most
  ``max_replay_s``). After a reconnect they are numbered again from 0 (:meth:`Transcript.restart`) and the
  utterance in progress keeps its id while its words are recognized again.
- A checkpoint never goes back: between utterances it stays ``checkpoint_lag_s`` behind the newest audio (an onset
  Deepgram has not reported yet may be in it), during one it is ``None``.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from voxcart.common.audio import SAMPLE_RATE
from voxcart.common.events import now_ms

from .deepgram_protocol import Results, normalize_text
from .results import Discarded, Final, Partial, RecognizerEvent, SpeechStart

__all__ = ["SentEntry", "Transcript"]

log = logging.getLogger("voxcart.stt.deepgram_transcript")


@dataclass(slots=True)
class SentEntry:
    """An entry of the call's audio, as sent on the current connection."""

    entry_id: str
    arrived: float
    ulaw: bytes
    offset: int = 0
    """Byte offset of the entry's first byte on the current connection."""


@dataclass(slots=True)
class _Utterance:
    id: str
    first_entry: str
    opened_s: float
    """Connection time of the onset (for the no-word discard rule)."""
    segments: list[str] = field(default_factory=list)
    weights: list[tuple[float, int]] = field(default_factory=list)
    """(confidence, words) of each ``is_final`` segment."""
    first_word: tuple[float, float] | None = None
    """(connection time, arrived) of the first word's start."""
    last_word_end: float = 0.0
    interim: str = ""
    interim_end: float = 0.0
    last_partial: str = ""

    def forget_words(self, opened_s: float) -> None:
        """After a reconnect the words are recognized again on the new connection (new times)."""
        self.segments, self.weights, self.first_word = [], [], None
        self.last_word_end, self.interim, self.interim_end, self.opened_s = 0.0, "", 0.0, opened_s


class Transcript:
    """The replay buffer and the utterance in progress of one call; events wait in it until :meth:`take`.

    Args:
        call_sid: the call (utterance ids, logs).
        start_after: the checkpoint to start from (an entry id).
        clock: wall clock in epoch ms (``endpointed_at``, ``recognized_at``).
        end_silence_ms: the ``endpointing`` silence (``endpointed_at`` of a ``speech_final``; the no-word rule).
        utterance_end_ms: the ``utterance_end_ms`` silence (``endpointed_at`` of an ``UtteranceEnd``).
        max_replay_s: at most this much audio is kept.
        idle_keep_s: between utterances, only this much.
        checkpoint_lag_s: how far an idle checkpoint stays behind the newest audio.
        on_flush: called when a ``Finalize`` was answered or the utterance ended.
    """

    def __init__(
        self,
        call_sid: str,
        start_after: str,
        *,
        clock: Callable[[], float],
        end_silence_ms: int,
        utterance_end_ms: int,
        max_replay_s: float,
        idle_keep_s: float,
        checkpoint_lag_s: float,
        on_flush: Callable[[], None],
    ) -> None:
        self.call_sid = call_sid
        self._extra = {"call_sid": call_sid}
        self._clock = clock
        self._end_silence_ms = end_silence_ms
        self._utterance_end_ms = utterance_end_ms
        self._max_replay_s = max_replay_s
        self._idle_keep_s = idle_keep_s
        self._checkpoint_lag_s = checkpoint_lag_s
        self._on_flush = on_flush
        self._buffer: list[SentEntry] = []
        self._buffered = 0
        self._bytes = 0
        self._floor = start_after
        self._ready: list[RecognizerEvent] = []
        self._utt: _Utterance | None = None

    # -- audio -------------------------------------------------------------------------------------------

    @property
    def entries(self) -> int:
        """How many entries are kept."""
        return len(self._buffer)

    def add(self, entry_id: str, ulaw: bytes, arrived: float) -> SentEntry:
        """Keep an entry (numbered on the connection by :meth:`number` or :meth:`restart`)."""
        sent = SentEntry(entry_id, arrived, ulaw)
        self._buffer.append(sent)
        self._buffered += len(ulaw)
        return sent

    def number(self, sent: SentEntry) -> None:
        """Number an entry about to be sent on the current connection: it follows what was sent before."""
        sent.offset, self._bytes = self._bytes, self._bytes + len(sent.ulaw)

    def restart(self) -> bytes:
        """A new connection: number the kept entries from 0 and return their audio, to be sent again."""
        self._bytes = 0
        for sent in self._buffer:
            self.number(sent)
        if self._utt is not None:
            first = next((s.offset for s in self._buffer if s.entry_id == self._utt.first_entry), 0)
            self._utt.forget_words(first / SAMPLE_RATE)
        return b"".join(s.ulaw for s in self._buffer)

    def trim(self) -> None:
        """Bound the replay buffer: ``idle_keep_s`` between utterances, ``max_replay_s`` always."""
        keep_s = self._max_replay_s if self._utt is not None else self._idle_keep_s
        excess, k = self._buffered - int(keep_s * SAMPLE_RATE), 0
        while excess > 0 and k < len(self._buffer) - 1:
            excess -= len(self._buffer[k].ulaw)
            k += 1
        self._drop_front(k)

    def checkpoint(self) -> str | None:
        """The entry a new owner may start after, or ``None`` during an utterance."""
        if self._utt is not None:
            return None
        if not self._buffer:
            return self._floor
        newest = self._buffer[-1]
        target = newest.offset + len(newest.ulaw) - int(self._checkpoint_lag_s * SAMPLE_RATE)
        i = bisect.bisect_right(self._buffer, target, key=lambda s: s.offset) - 1
        if i >= 0:
            self._floor = _later(self._floor, self._buffer[i].entry_id)
        return self._floor

    # -- results -----------------------------------------------------------------------------------------

    @property
    def in_utterance(self) -> bool:
        return self._utt is not None

    @property
    def start_entry(self) -> str | None:
        """The first entry of the utterance in progress."""
        return self._utt.first_entry if self._utt is not None else None

    def take(self) -> list[RecognizerEvent]:
        """The events since the last call."""
        ready, self._ready = self._ready, []
        return ready

    def on_speech_started(self, at: float) -> None:
        if self._utt is None:
            self._open_utterance(at)

    def on_utterance_end(self, last_word_end: float) -> None:
        if self._utt is not None and self._utt.segments:
            self._finish(last_word_end, "UtteranceEnd", self._utterance_end_ms)

    def end_now(self) -> None:
        """End the utterance in progress with the words it has (after a ``Finalize``, answered or not)."""
        if self._utt is not None:
            self._finish(max(self._utt.last_word_end, self._utt.interim_end), "end_utterance", None)

    def on_results(self, r: Results) -> None:
        if self._utt is None and r.word_span is not None:
            self._open_utterance(r.word_span[0])
        utt = self._utt
        if utt is not None and r.word_span is not None:
            start = r.word_span[0]
            if utt.first_word is None or start < utt.first_word[0]:
                entry = self._entry_at(start)
                utt.first_word = (start, entry.arrived if entry else now_ms())
        if r.is_final:
            if utt is not None and r.transcript:
                utt.segments.append(r.transcript)
                utt.weights.append((r.confidence, max(1, r.words)))
                utt.last_word_end = max(utt.last_word_end, r.word_span[1] if r.word_span else r.end)
            if utt is not None:
                utt.interim, utt.interim_end = "", 0.0
            if r.from_finalize:
                self._on_flush()
            if utt is None:
                return
            if r.speech_final and utt.segments:
                self._finish(utt.last_word_end, "speech_final", self._end_silence_ms)
                return
            if not utt.segments and r.end - utt.opened_s >= (self._end_silence_ms + 1000) / 1000:
                self._finish(r.end, "no words", 0)
                return
        elif utt is not None and r.transcript:
            utt.interim = r.transcript
            utt.interim_end = r.word_span[1] if r.word_span else r.end
        if utt is not None:
            text = normalize_text([*utt.segments, utt.interim])
            if text and text != utt.last_partial:
                utt.last_partial = text
                self._ready.append(Partial(utt.id, text))

    def _open_utterance(self, at: float) -> None:
        entry = self._entry_at(at)
        if entry is None:
            return
        self._utt = _Utterance(f"{self.call_sid}:{entry.entry_id}", entry.entry_id, at)
        self._ready.append(SpeechStart(self._utt.id, entry.arrived))

    def _finish(self, end_s: float, why: str, endpoint_ms: int | None) -> None:
        """Close the utterance: its Final (or Discarded), then drop the buffered entries up to its end.

        Args:
            end_s: connection time of the last word (or of the end of the wordless audio).
            why: what ended it, for the log.
            endpoint_ms: silence after ``end_s`` that ended it (``endpointed_at``); ``None``: ended now.
        """
        utt, self._utt = self._utt, None
        assert utt is not None
        now = self._clock()
        self._on_flush()
        parts = utt.segments or ([utt.interim] if utt.interim else [])
        last = self._entry_at(end_s)
        last_id = last.entry_id if last is not None else self._floor
        checkpoint = self._floor = _later(self._floor, last_id)  # never behind a checkpoint already given
        if not parts:
            self._ready.append(Discarded(utt.id, last_id, checkpoint, ""))
        else:
            weights = utt.weights or [(0.0, 1)]
            confidence = sum(c * n for c, n in weights) / sum(n for _, n in weights)
            first_arrived = utt.first_word[1] if utt.first_word else (last.arrived if last else now)
            endpoint = None if endpoint_ms is None else self._entry_at(end_s + endpoint_ms / 1000, clamp=False)
            self._ready.append(
                Final(
                    utterance_id=utt.id,
                    text=normalize_text(parts),
                    confidence=min(1.0, max(0.0, confidence)),
                    first_voiced_arrived=first_arrived,
                    last_voiced_arrived=last.arrived if last else now,
                    endpointed_at=min(now, endpoint.arrived) if endpoint else now,
                    recognized_at=now,
                    last_entry_id=last_id,
                    checkpoint_entry=checkpoint,
                    resume="",
                )
            )
            log.debug("deepgram: final at %s: %r", why, normalize_text(parts), extra=self._extra)
        if last is not None:
            self._drop_front(self._buffer.index(last) + 1)

    def _entry_at(self, seconds: float, *, clamp: bool = True) -> SentEntry | None:
        """The entry holding the byte at ``seconds`` on the current connection."""
        if not self._buffer:
            return None
        byte = int(round(seconds * SAMPLE_RATE))
        i = bisect.bisect_right(self._buffer, byte, key=lambda s: s.offset) - 1
        last = self._buffer[-1]
        if not clamp and (i < 0 or byte >= last.offset + len(last.ulaw)):
            return None
        return self._buffer[max(0, i)]

    def _drop_front(self, k: int) -> None:
        self._buffered -= sum(len(s.ulaw) for s in self._buffer[:k])
        del self._buffer[:k]


def _later(a: str, b: str) -> str:
    """The later of two entry ids (``<gen>-<chunk>``, compared as numbers); ``a`` if either is not one."""
    try:
        later = tuple(map(int, b.split("-"))) > tuple(map(int, a.split("-")))
    except ValueError:
        return a
    return b if later else a
