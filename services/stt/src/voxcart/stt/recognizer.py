"""Streaming speech recognition of one call: 20 ms μ-law frames in, utterance events out.

:class:`CallRecognizer` is fed one call's frames in order; it borrows its decoders from the worker's shared
:class:`~voxcart.stt.recognizer_model.RecognizerModel` (domain LM, grammars, decoder pools). The audio path is
μ-law -> int16 8 kHz -> endpointer (VAD, pre-roll) -> upsampled to 16 kHz (the en-us acoustic model is a 16 kHz
model; running it at 8 kHz fails, speech.md §1) -> decoder(s).

Expectations (:meth:`CallRecognizer.listen`): ``"free"`` decodes with the domain LM. ``"digits"``, ``"yes_no"``
and ``"product"`` (given a :class:`Catalogue`) decode each utterance twice, frame by frame: with the
expectation's grammar and with the domain LM; at the end :func:`voxcart.stt.scoring.choose` picks the result
and its confidence (see ``scoring``). Both searches cost CPU during the utterance (1.3-1.5 ms per 20 ms speech
frame free, 1.8-2.2 ms narrow) but nothing extra at its end: end of speech to final is 32 ms median, 46 ms p90.
Under ``"digits"`` and ``"address"`` the end-of-speech silence is longer (``digits_end_silence_ms``: callers pause
between digit groups), under ``"yes_no"`` shorter (see ``turn_end``). Under ``"free"``, ``"yes_no"`` and
``"product"`` an utterance whose words sound complete ends sooner, at the endpointer's early mark (300 ms of
silence by default, see ``early_end``).

Confidence (:attr:`Final.confidence`, 0..1): see ``scoring``. A final below :data:`MIN_CONFIDENCE` should be
treated as not understood.

Text (:attr:`Final.text`): lower-case words; spoken numbers of two or more number words become digits ("my
order is one oh oh two three" -> "my order is 10023", "size thirty two" -> "size 32"), single number words
stay words ("the blue one", "size ten"), except under ``"digits"`` where they become digits too
(:func:`voxcart.common.spoken_numbers.numbers_to_digits`).

This module re-exports the names callers use from ``recognizer_model`` (:class:`RecognizerModel`,
:data:`TELEPHONE_CMN`), ``resume`` (:func:`encode_resume`, :func:`decode_resume`), ``scoring``
(:data:`MIN_CONFIDENCE`), ``grammars`` (:class:`Catalogue`) and ``results`` (the events).

Invariants:
- ``utterance_id = <call_sid>:<entry id of the utterance's first frame, pre-roll included>``.
- Every utterance starts from the same decoder state whatever decoder of the pool it gets: ``reinit_feat()``
  plus the cepstral mean (CMN) carried from the call's previous final (the first starts from
  :data:`TELEPHONE_CMN`; a final that was mostly silence carries none, see ``carried_cmn``), a fresh
  resampler, and the searches and end-of-speech silence of the expectation in force at the utterance's start
  (set by :meth:`CallRecognizer.listen` before it). So an utterance's text depends only on its own frames,
  that CMN and that expectation; checked bit-exact (text, confidence) against a call decoding alone.
- The endpointer's idle state depends only on the frames after its base entry (see ``endpointer``).
- :attr:`CallRecognizer.resume` encodes the state the next utterance starts with, so a recognizer built with
  ``start_after=checkpoint_entry, resume=resume`` replays a checkpoint exactly (see ``resume`` for the
  conditions).
- Noise that the decoder turns into no words yields :class:`Discarded`, never an empty :class:`Final`.
- Nothing here blocks on I/O or uses asyncio: the worker calls :meth:`CallRecognizer.feed` from a thread; the
  decoder pools are thread-safe, a :class:`CallRecognizer` is not (one call's frames are fed in order).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from pocketsphinx import Decoder

from voxcart.common.audio import Resampler, ulaw_pcm_frames
from voxcart.common.events import Expect, now_ms
from voxcart.common.spoken_numbers import numbers_to_digits
from voxcart.stt.early_end import EARLY_END_DECISIONS, EARLY_END_EXPECTS, hypothesis_words, sounds_complete
from voxcart.stt.endpointer import EndpointerConfig, Frame, VadEndpointer
from voxcart.stt.grammars import DIGITS, PRODUCT, Catalogue
from voxcart.stt.recognizer_model import LM_SEARCH, TELEPHONE_CMN, RecognizerModel, carried_cmn
from voxcart.stt.results import Discarded, Final, Partial, RecognizerEvent, SpeechProgress, SpeechStart
from voxcart.stt.resume import EXPECTS, decode_resume, encode_resume
from voxcart.stt.scoring import MIN_CONFIDENCE, Hypothesis, choose, read_hypothesis
from voxcart.stt.turn_end import end_silence_ms

__all__ = [
    "MIN_CONFIDENCE",
    "TELEPHONE_CMN",
    "CallRecognizer",
    "Catalogue",
    "Discarded",
    "Final",
    "Partial",
    "RecognizerEvent",
    "RecognizerModel",
    "SpeechStart",
    "decode_resume",
    "encode_resume",
]

log = logging.getLogger("voxcart.stt.recognizer")

PROGRESS_EVERY_MS = 200
"""A :class:`SpeechProgress` goes out at every this much voiced audio of an utterance, up to
:data:`PROGRESS_UNTIL_MS` (barge-in decisions need the first few hundred ms only)."""
PROGRESS_UNTIL_MS = 1000
_RECENT_FRAMES = 64


@dataclass(slots=True)
class _Utterance:
    id: str
    first_voiced: Frame
    expect: Expect
    lm: Decoder
    grammar: Decoder | None = None
    search: str | None = None
    """The grammar's search name."""
    resampler: Resampler = field(default_factory=lambda: Resampler(8000, 16000))
    frames: int = 0
    last_partial: str = ""
    voiced: int = 0
    """Voiced frames so far (for :class:`SpeechProgress`)."""
    prob_sum: float = 0.0
    progress_at: int = PROGRESS_EVERY_MS // 20
    """Voiced frames at which the next :class:`SpeechProgress` goes out."""
    recent: deque[bytes] = field(default_factory=lambda: deque(maxlen=_RECENT_FRAMES))
    """The last frames' audio (the silence an early end repeats, see :meth:`CallRecognizer._pad`)."""


class CallRecognizer:
    """One call's recognizer. Feed it the call's entries in order.

    Args:
        model: the worker's shared model.
        call_sid: the call, used in utterance ids.
        end_silence_ms: silence that ends an utterance (overrides ``endpointer.end_silence_ms``).
        early_end_ms: silence at which an utterance whose words sound complete ends (overrides
            ``endpointer.early_end_ms``; 0: never early).
        endpointer: the other endpointing knobs.
        start_after: the checkpoint entry the entries are replayed after (``"0-0"``: the stream's start).
        resume: the state saved with that checkpoint (:attr:`Final.resume`, :attr:`resume`), or a bare
            cepstral mean; ``None`` starts from the model's telephone prior and no expectation. Without it a
            replay still gives the same utterance ids, but the texts may differ slightly.
        cmn: an older name for ``resume`` (either form is accepted).
        digits_end_silence_ms: the end-of-speech silence of utterances under ``"digits"`` (callers pause
            between digit groups: with 560 ms, "one zero zero ... two three" with 400 ms pauses came out as
            two to five finals, with 1000 ms as one); never less than the usual one; ``None``: the usual one.
        partial_every_ms: how often the partial hypothesis is checked during speech.
        clock: wall clock in epoch ms, for ``endpointed_at``/``recognized_at``.

    Raises:
        ValueError: a knob is out of range, or ``resume`` is not a recognizer state.
    """

    def __init__(
        self,
        model: RecognizerModel,
        call_sid: str,
        *,
        end_silence_ms: int | None = None,
        early_end_ms: int | None = None,
        endpointer: EndpointerConfig | None = None,
        start_after: str = "0-0",
        resume: str | None = None,
        cmn: str | None = None,
        digits_end_silence_ms: int | None = 1000,
        partial_every_ms: int = 200,
        clock: Callable[[], float] = now_ms,
    ) -> None:
        if not call_sid:
            raise ValueError("CallRecognizer: call_sid is empty")
        if partial_every_ms < 20:
            raise ValueError(f"CallRecognizer: partial_every_ms {partial_every_ms} is under one frame (20 ms)")
        config = endpointer or EndpointerConfig()
        if end_silence_ms is not None:
            config = replace(config, end_silence_ms=end_silence_ms)
        if early_end_ms is not None:
            config = replace(config, early_end_ms=early_end_ms)
        self.model = model
        self.call_sid = call_sid
        self._clock = clock
        self._partial_every = partial_every_ms // 20
        self._endpointer = VadEndpointer(config, start_after=start_after)
        if digits_end_silence_ms is not None:
            digits_end_silence_ms = max(digits_end_silence_ms, config.end_silence_ms)
            self._endpointer.set_end_silence_ms(digits_end_silence_ms)  # raises if it does not fit
            self._endpointer.set_end_silence_ms(None)
        self._digits_end_silence = digits_end_silence_ms
        state = resume or cmn
        self._cmn, self._expect, self._keyterms = decode_resume(state) if state else (model.cmn, "free", ())
        self._utt: _Utterance | None = None

    @property
    def cmn(self) -> str:
        """The cepstral mean the next utterance starts from."""
        return self._cmn

    @property
    def resume(self) -> str:
        """The state the next utterance starts from (CMN, expectation); save it with a :meth:`checkpoint`."""
        return encode_resume(self._cmn, self._expect, self._keyterms)

    @property
    def expect(self) -> Expect:
        """The expectation the next utterance starts with."""
        return self._expect

    def listen(self, expect: Expect, keyterms: Sequence[str] = ()) -> None:
        """What the caller is expected to say next; applies from the next utterance start on.

        Args:
            expect: ``"free"`` (the domain LM), ``"digits"`` (order numbers, ZIP codes), ``"yes_no"``, or
                ``"product"`` (a product, colour or size); the narrow ones still hear anything in the domain.
            keyterms: product names worth adding to the ``"product"`` grammar (words the model knows).

        Raises:
            ValueError: ``expect`` is not one of those.
        """
        if expect not in EXPECTS:
            raise ValueError(f"CallRecognizer.listen: unknown expectation {expect!r}, expected {sorted(EXPECTS)}")
        self._expect = expect
        self._keyterms = tuple(keyterms) if expect == PRODUCT else ()

    def feed(self, entry_id: str, ulaw: bytes, arrived: float) -> list[RecognizerEvent]:
        """Process the next entry: one (or two) 20 ms μ-law frames.

        Args:
            entry_id: the bus entry id (``<gen>-<chunk>``), used in utterance ids and checkpoints.
            ulaw: μ-law 8 kHz, a non-zero multiple of 160 bytes.
            arrived: gateway arrival time of the entry (epoch ms).

        Returns:
            The events this entry caused, in order.

        Raises:
            ValueError: ``ulaw`` is not a non-zero multiple of 160 bytes.
        """
        try:
            frames = ulaw_pcm_frames(ulaw)
        except ValueError as exc:  # the location is formatted only when needed, not for every frame
            raise ValueError(f"CallRecognizer.feed: entry {entry_id} of call {self.call_sid}: {exc}") from None
        events: list[RecognizerEvent] = []
        for pcm in frames:
            self._frame(entry_id, pcm, arrived, events)
        return events

    def _frame(self, entry_id: str, pcm: bytes, arrived: float, events: list[RecognizerEvent]) -> None:
        ep = self._endpointer
        step = ep.process(entry_id, pcm, arrived)
        if not step.frames:
            return
        if step.started:
            assert ep.first_voiced is not None
            self._utt = self._start(f"{self.call_sid}:{step.frames[0].entry_id}", ep.first_voiced)
            events.append(SpeechStart(self._utt.id, ep.first_voiced.arrived))
        utt = self._utt
        assert utt is not None
        samples = np.frombuffer(b"".join(f.pcm for f in step.frames), dtype=np.int16)
        audio = utt.resampler.process(samples).tobytes()
        for decoder in (utt.lm, utt.grammar):
            if decoder is not None:
                decoder.process_raw(audio, False, False)
        utt.frames += len(step.frames)
        for f in step.frames:
            utt.recent.append(f.pcm)
            if f.voiced:
                utt.voiced += 1
                utt.prob_sum += f.prob
        if step.ended or (step.early and self._ends_early(utt)):
            endpointed_at = self._clock()
            if not step.ended:
                self._pad(utt, ep.early_end_ms // 20, (ep.end_silence_ms - ep.early_end_ms) // 20)
                ep.end()  # as the end silence would have, rebase included
            events.append(self._finish(entry_id, endpointed_at))
        elif utt.voiced >= utt.progress_at and utt.progress_at * 20 <= PROGRESS_UNTIL_MS:
            utt.progress_at = utt.voiced + PROGRESS_EVERY_MS // 20
            events.append(self._progress(utt))
        elif utt.frames % self._partial_every == 0:
            hyp = utt.lm.hyp()
            text = " ".join(self._text(hyp.hypstr.split(), utt.expect)) if hyp is not None else ""
            if text and text != utt.last_partial:
                utt.last_partial = text
                events.append(Partial(utt.id, text))

    def _ends_early(self, utt: _Utterance) -> bool:
        """At the early mark: whether the LM decoder's words so far make a complete request (``early_end``)."""
        if utt.expect not in EARLY_END_EXPECTS:
            return False
        end = sounds_complete(hypothesis_words(utt.lm), self.model.scorer)
        EARLY_END_DECISIONS.labels("end" if end else "wait").inc()
        return end

    def _pad(self, utt: _Utterance, silent: int, frames: int) -> None:
        """Decode ``frames`` more frames of the later half of the utterance's last ``silent`` (silent) frames,
        repeated: an utterance ended at the early mark is decoded with the tail the end silence would have given it.

        PocketSphinx's acoustic score per frame, hence the confidence (``scoring``), depends on the silence it
        heard: ended at 300 ms instead of 600 ms, the bench's clean sentences (``early_end``) lost 0.07 of
        confidence on average and 6 of 87 fell under :data:`MIN_CONFIDENCE`; padded with the whole 300 ms of
        silence (the words' fading end included) they lost 0.03, padded with its later half 0.001 (at most
        0.04), none under. The padding is the caller's own line, so the decoder hears what it would have heard
        had the caller stayed silent.
        """
        source = list(utt.recent)[-(silent // 2) :] if silent // 2 else []
        if not source or frames <= 0:
            return
        pad = b"".join(source[k % len(source)] for k in range(frames))
        audio = utt.resampler.process(np.frombuffer(pad, dtype=np.int16)).tobytes()
        for decoder in (utt.lm, utt.grammar):
            if decoder is not None:
                decoder.process_raw(audio, False, False)
        utt.frames += frames

    def _progress(self, utt: _Utterance) -> SpeechProgress:
        hyp = utt.lm.hyp()
        text = " ".join(self._text(hyp.hypstr.split(), utt.expect)) if hyp is not None else ""
        return SpeechProgress(utt.id, utt.first_voiced.arrived, 20.0 * utt.voiced, utt.prob_sum / utt.voiced, text)

    def _start(self, utterance_id: str, first_voiced: Frame) -> _Utterance:
        """Borrow the decoder(s) of the expectation in force and start them from the call's state."""
        model = self.model
        utt = _Utterance(utterance_id, first_voiced, self._expect, model.acquire(LM_SEARCH))
        try:
            base = self._endpointer.config.end_silence_ms
            self._endpointer.set_end_silence_ms(end_silence_ms(self._expect, base, self._digits_end_silence))
            utt.search = model.search_for(self._expect, self._keyterms)
            if utt.search is not None:
                utt.grammar = model.acquire(utt.search)
            for decoder in (utt.lm, utt.grammar):
                if decoder is not None:
                    decoder.reinit_feat()  # the decoder's state is now the same for every utterance
                    decoder.set_cmn(self._cmn)
                    decoder.start_utt()
        except BaseException:
            self._release(utt, healthy=False)
            raise
        return utt

    def _release(self, utt: _Utterance, *, healthy: bool = True) -> None:
        """Give the utterance's decoders back (dropped if an error left them in an unknown state)."""
        if healthy:
            self.model.release(utt.lm, LM_SEARCH)
            if utt.grammar is not None and utt.search is not None:
                self.model.release(utt.grammar, utt.search)

    def _finish(self, last_entry: str, endpointed_at: float | None = None) -> RecognizerEvent:
        """Close the utterance's decoding; the endpointer has already ended (and rebased) at ``endpointed_at``
        (default: now)."""
        endpointed_at = self._clock() if endpointed_at is None else endpointed_at
        utt, self._utt = self._utt, None
        assert utt is not None
        healthy = False
        try:
            tail = utt.resampler.process(np.zeros(0, dtype=np.int16), last=True)
            lm = self._end(utt.lm, tail, lattice=True)
            grammar = self._end(utt.grammar, tail, lattice=False) if utt.grammar is not None else None
            cmn = utt.lm.get_cmn()
            healthy = True
        finally:
            self._release(utt, healthy=healthy)
        checkpoint = self._endpointer.base_entry
        vocabulary = self.model.vocabulary(utt.search) if utt.search is not None else frozenset()
        judge = utt.search == DIGITS
        words, confidence, source = choose(lm, grammar, vocabulary, self.model.scorer, judge_answer=judge)
        if not words:
            return Discarded(utt.id, last_entry, checkpoint, self.resume, voiced_ms=20.0 * utt.voiced)
        last_voiced = self._endpointer.last_voiced or utt.first_voiced
        speech_ms = last_voiced.arrived - utt.first_voiced.arrived + 20.0
        self._cmn = carried_cmn(self._cmn, cmn, speech_ms, 20.0 * utt.frames)  # a short word's mean is noise's
        log.debug("utterance %s (%s): %r from %s, confidence %.2f", utt.id, utt.expect, words, source, confidence)
        return Final(
            utterance_id=utt.id,
            text=" ".join(self._text(words, utt.expect)),
            confidence=confidence,
            first_voiced_arrived=utt.first_voiced.arrived,
            last_voiced_arrived=last_voiced.arrived,
            endpointed_at=endpointed_at,
            recognized_at=self._clock(),
            last_entry_id=last_entry,
            checkpoint_entry=checkpoint,
            resume=self.resume,
        )

    @staticmethod
    def _end(decoder: Decoder, tail: np.ndarray, *, lattice: bool) -> Hypothesis | None:
        """End ``decoder``'s utterance; its words and acoustic score per frame (``None``: no hypothesis)."""
        if len(tail):
            decoder.process_raw(tail.tobytes(), False, False)
        decoder.end_utt()
        return read_hypothesis(decoder, lattice=lattice)

    @staticmethod
    def _text(words: Sequence[str], expect: Expect) -> list[str]:
        return numbers_to_digits(words, digits_expected=expect == DIGITS)

    def end_utterance(self) -> list[RecognizerEvent]:
        """Close the utterance in progress now (call end, drain): its final, or nothing if none is open."""
        if self._utt is None:
            return []
        self._endpointer.end()
        return [self._finish(self._endpointer.last_entry)]

    def close(self) -> None:
        """Give back the decoders of an utterance in progress (dropped without a final). Idempotent."""
        utt, self._utt = self._utt, None
        if utt is not None:
            healthy = False
            try:
                for decoder in (utt.lm, utt.grammar):
                    if decoder is not None:
                        decoder.end_utt()
                healthy = True
            finally:
                self._release(utt, healthy=healthy)

    def utterance_start_entry(self) -> str | None:
        """The first entry of the utterance in progress, ``None`` between utterances."""
        return self._endpointer.utterance_start

    def checkpoint(self) -> str | None:
        """Between utterances: the entry a fresh recognizer replays after to continue exactly from here.

        Returns ``None`` during an utterance (its final carries the checkpoint instead). Save :attr:`resume`
        with it. This rebases the endpointer (:meth:`VadEndpointer.rebase`), so call it only when you commit
        the result: a replaying owner reproduces only the rebases that were committed.
        """
        return self._endpointer.rebase()
