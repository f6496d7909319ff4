"""Streaming speech recognition of one call: 20 ms μ-law frames in, utterance events out.

:class:`RecognizerModel` is built once per worker: the domain LM and dictionary (written to a private temp dir),
the JSGF grammars of the narrow expectations, and pools of PocketSphinx decoders shared by the worker's calls.
:class:`CallRecognizer` is fed one call's frames in order. The audio path is μ-law -> int16 8 kHz -> endpointer
(VAD, pre-roll) -> upsampled to 16 kHz (the en-us acoustic model is a 16 kHz model; running it at 8 kHz fails,
speech.md §1) -> decoder(s).

Decoders are borrowed per utterance, not per call: every utterance starts from a state that does not depend
on the decoder's past (see the invariants), so a call holds a decoder only while its caller speaks. Measured:
an idle call costs ~0.15 MB; a call in an utterance ~9 MB (one LM decoder), ~18-20 MB under a narrow
expectation (plus a grammar decoder); decoders stay pooled at the peak number of simultaneous utterances.

Expectations (:meth:`CallRecognizer.listen`): ``"free"`` decodes with the domain LM. ``"digits"``, ``"yes_no"``
and ``"product"`` (given a :class:`Catalogue`) decode each utterance twice, frame by frame: with the
expectation's grammar and with the domain LM. At the end the grammar's result is taken when its acoustic
score is within ``GRAMMAR_MARGIN`` of the LM's, unless the LM heard, as well or better, a confident sentence
of words the grammar does not have: a caller who answers a yes/no question with "what's your return policy"
or "I want to talk to a person" is heard (6 of 6 such answers). Both searches cost CPU during the utterance
(1.3-1.5 ms per 20 ms speech frame free, 1.8-2.2 ms narrow) but nothing extra at its end: end of speech to
final is 32 ms median, 46 ms p90. Under ``"digits"`` the end-of-speech silence is longer
(``digits_end_silence_ms``): callers pause between digit groups.

Confidence (:attr:`Final.confidence`, 0..1) is a logistic of two free by-products of decoding:
- *coherence*: the mean log10 probability per word of the LM's hypothesis under the domain LM (number words
  left out: digit strings are random by nature). Out-of-domain speech comes out as incoherent in-domain words
  ("the weather in paris is lovely this time of year" -> "what the person what with time of your", -2.9 per
  word; in-domain sentences -0.6 to -1.9);
- *acoustic fit*: the acoustic score per 10 ms frame of the reported hypothesis (a grammar that had to force
  the audio into its phrases scores worse).
``confidence = logistic(COHERENCE_WEIGHT x (coherence - COHERENCE_MIDPOINT) + ACOUSTIC_WEIGHT x (acoustic -
ACOUSTIC_MIDPOINT))``, fitted on piper caller speech. Measured on 192 in-domain utterances (sentences of two
stores and answers under every expectation) against 30 out-of-domain sentences decoded under each of the 4
expectations: area under the ROC curve 0.98 (coherence alone 0.94, lattice posteriors 0.85-0.91); at
:data:`MIN_CONFIDENCE` 7 of 192 in-domain utterances fall below (mostly misrecognized ones) and 9 of 120
out-of-domain ones pass (median 0.20; in-domain median 0.94). On 80 real human recordings out of domain
(Asterisk prompts) 1 passes. A final below :data:`MIN_CONFIDENCE` should be treated as not understood.

Text (:attr:`Final.text`): lower-case words; spoken numbers of two or more number words become digits ("my
order is one oh oh two three" -> "my order is 10023", "size thirty two" -> "size 32"), single number words
stay words ("the blue one", "size ten"), except under ``"digits"`` where they become digits too
(:func:`voxcart.common.spoken_numbers.numbers_to_digits`).

Invariants:
- ``utterance_id = <call_sid>:<entry id of the utterance's first frame, pre-roll included>``.
- Every utterance starts from the same decoder state whatever decoder of the pool it gets: ``reinit_feat()``
  plus the cepstral mean (CMN) carried from the call's previous final (the first starts from
  :data:`TELEPHONE_CMN`), a fresh resampler, and the searches and end-of-speech silence of the expectation in
  force at the utterance's start (set by :meth:`CallRecognizer.listen` before it). So an utterance's text
  depends only on its own frames, that CMN and that expectation; checked bit-exact (text, confidence) against
  a call decoding alone.
- The endpointer's idle state depends only on the frames after its base entry (see ``endpointer``).
- :attr:`CallRecognizer.resume` encodes the CMN and the expectation (with its keyterms) that the next
  utterance will start with (:func:`encode_resume`); every :class:`Final`/:class:`Discarded` carries it as
  ``resume``. Hence ``CallRecognizer(start_after=checkpoint_entry, resume=resume)`` fed the entries after a
  checkpoint emits the same utterance ids and finals as the recognizer that produced it, provided ``resume``
  was read at the same moment as the checkpoint (a final's own ``resume``, or :attr:`resume` right after
  :meth:`checkpoint`) and any ``listen`` the original applied after that moment is applied again in the same
  place (the worker stores the latest ``listen`` with each checkpoint and re-applies it on takeover). Without
  ``resume`` the ids still match.
- Noise that the decoder turns into no words yields :class:`Discarded`, never an empty :class:`Final`.
- Nothing here blocks on I/O or uses asyncio: the worker calls :meth:`CallRecognizer.feed` from a thread; the
  decoder pools are thread-safe, a :class:`CallRecognizer` is not (one call's frames are fed in order).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final as Constant
from typing import get_args

import numpy as np
import pocketsphinx
from pocketsphinx import Decoder

from voxcart.common.audio import Resampler, ulaw_pcm_frames
from voxcart.common.events import Expect, now_ms
from voxcart.common.spoken_numbers import NUMBER_WORDS, numbers_to_digits
from voxcart.stt.endpointer import EndpointerConfig, Frame, VadEndpointer
from voxcart.stt.grammars import (
    CARRIER_WORDS,
    DIGITS,
    GRAMMAR_PHRASES,
    PRODUCT,
    YES_NO,
    Catalogue,
    digits_grammar,
    jsgf_words,
    product_grammar,
    yes_no_grammar,
)
from voxcart.stt.language_model import ArpaScorer, DomainLanguageModel, build_domain_lm
from voxcart.stt.results import Discarded, Final, Partial, RecognizerEvent, SpeechStart

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

TELEPHONE_CMN = "48.06,8.32,-8.05,13.56,-7.61,1.43,-9.19,3.91,-2.95,2.72,-8.71,1.72,-2.75"
"""The cepstral mean a call's first utterance starts from.

Measured on real telephone speech (178 Debian ``asterisk-core-sounds-en-wav`` prompts through the 8 kHz μ-law
path, upsampled to 16 kHz; mean of the carried mean over the last two thirds). On 147 other prompts it gives
11.8 % WER against 15.0 % for the acoustic model's wideband default (``40,3,-1,0,...``); carrying the mean from
utterance to utterance then brings 11.5 %.
"""

MIN_CONFIDENCE: Constant = 0.5
"""Finals below this confidence are out-of-domain speech or misrecognitions: treat them as not understood."""

COHERENCE_MIDPOINT: Constant = -2.0
"""Mean log10 domain-LM probability per word at the confidence midpoint (in-domain sentences: -0.6 to -1.9)."""
COHERENCE_WEIGHT: Constant = 2.7
ACOUSTIC_MIDPOINT: Constant = -24.0
"""Acoustic score per 10 ms frame at the confidence midpoint (piper caller speech: in-domain -21.6 on
average, out-of-domain -28.3)."""
ACOUSTIC_WEIGHT: Constant = 0.22
NUMBERS_COHERENCE: Constant = -1.5
"""The coherence given to a hypothesis of number words only (a digit string has no sentence to judge)."""
GRAMMAR_MARGIN: Constant = 3.0
"""How far (acoustic score per frame) the grammar's result may trail the LM's and still be taken."""

LM_SEARCH: Constant = "lm"
"""The name of the domain LM's search (the grammars' are their expectation's name)."""
_EXPECTS: Constant = frozenset(get_args(Expect))
_FILLERS: Constant = frozenset({"<s>", "</s>", "<sil>", "(NULL)"})
_LOG_BASE = math.log(1.0001)  # PocketSphinx's logmath base; lattice scores are also shifted left by 10 bits
_NUMBERS: Constant = NUMBER_WORDS | {"oh"}
_MAX_PRODUCT_GRAMMARS = 8


def encode_resume(cmn: str, expect: Expect = "free", keyterms: Sequence[str] = ()) -> str:
    """The ``resume`` string saved with a checkpoint: CMN, and the expectation the next utterance starts with.

    It is JSON (``{"v":1,"cmn":"48.06,...","expect":"digits","keyterms":[]}``); :func:`decode_resume` also
    accepts a bare cepstral mean (what earlier versions saved).
    """
    return json.dumps({"v": 1, "cmn": cmn, "expect": expect, "keyterms": list(keyterms)}, separators=(",", ":"))


def decode_resume(resume: str) -> tuple[str, Expect, tuple[str, ...]]:
    """``(cmn, expect, keyterms)`` from :func:`encode_resume`'s string (or a bare cepstral mean).

    Raises:
        ValueError: the string is neither, or names an unknown expectation.
    """
    if not resume.lstrip().startswith("{"):
        if not resume.strip():
            raise ValueError("resume: empty string")
        return resume.strip(), "free", ()
    try:
        state = json.loads(resume)
        cmn, expect, keyterms = str(state["cmn"]), state.get("expect", "free"), state.get("keyterms", [])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"resume: not a recognizer state ({exc}): {resume[:80]!r}") from None
    if expect not in _EXPECTS:
        raise ValueError(f"resume: unknown expectation {expect!r}, expected one of {sorted(_EXPECTS)}")
    return cmn, expect, tuple(str(k) for k in keyterms)


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


class RecognizerModel:
    """What every call of a worker shares: the domain LM, dictionary and grammars, and pools of decoders.

    Build it once at worker start with :meth:`build`. A call borrows a decoder for the length of an
    utterance (two under a narrow expectation: an LM decoder and a grammar decoder), so decoders are as many
    as the utterances in progress at once, not as the calls: between utterances a call holds none. Each
    decoder holds one search (the LM, or one grammar): a search costs memory in every decoder that holds it.

    Args:
        lm: the domain language model (with the grammars' words in its dictionary).
        catalogue: names, colours and sizes for the ``"product"`` grammar (empty: product answers use the LM).
        cmn: the cepstral mean a call's first utterance starts from.
        decoder_options: extra PocketSphinx options for every decoder (``{"fwdflat": False}``).
    """

    def __init__(
        self,
        lm: DomainLanguageModel,
        *,
        catalogue: Catalogue | None = None,
        cmn: str = TELEPHONE_CMN,
        decoder_options: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        self.lm = lm
        self.catalogue = catalogue or Catalogue()
        self.cmn = cmn
        self.decoder_options = dict(decoder_options or {})
        self.hmm = str(Path(pocketsphinx.get_model_path()) / "en-us" / "en-us")
        self.scorer = ArpaScorer(lm.arpa)
        self._grammars: dict[str, str] = {DIGITS: digits_grammar(), YES_NO: yes_no_grammar()}
        self._vocabularies = {name: jsgf_words(jsgf) for name, jsgf in self._grammars.items()}
        self._products: dict[tuple[str, ...], str | None] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="voxcart-stt-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        self.lm_path, self.dict_path = lm.write(self._dir)
        self._lock = threading.Lock()
        self._idle: dict[str, list[Decoder]] = {}
        self.decoders_created = 0
        """How many decoders the pools have created (the peak number in use at once, over all searches)."""

    @classmethod
    def build(
        cls,
        sample_utterances: Iterable[str],
        extra_words: Iterable[str] = (),
        *,
        catalogue: Catalogue | None = None,
        pronunciations: Mapping[str, Iterable[str]] | None = None,
    ) -> RecognizerModel:
        """Build the domain LM from caller sentences, add the grammars, and check that decoders load them.

        Args:
            sample_utterances: sentences callers say (the brain's samples).
            extra_words: words to know beyond the samples (product names, colours, sizes).
            catalogue: the store's product names, colours and sizes (the ``"product"`` grammar; their words
                join the dictionary, with letter-to-sound pronunciations where cmudict has none).
            pronunciations: extra or overriding ARPAbet pronunciations, word -> pronunciations.

        Raises:
            ValueError: no usable sentence, or a grammar does not load.
        """
        started = time.perf_counter()
        catalogue = catalogue or Catalogue()
        named = [*catalogue.names, *catalogue.colors, *catalogue.sizes]  # the product grammar needs their words
        lm = build_domain_lm(
            sample_utterances,
            extra_words,
            pronunciations=pronunciations,
            dictionary_words=[*GRAMMAR_PHRASES, *named],
        )
        model = cls(lm, catalogue=catalogue)
        for search in (LM_SEARCH, DIGITS, YES_NO, model.search_for(PRODUCT)):
            if search is not None:
                model.release(model.acquire(search), search)
        log.info(
            "domain LM: %d sentences, %d words, built in %.0f ms",
            model.lm.sentences,
            len(model.lm.words),
            (time.perf_counter() - started) * 1000,
        )
        return model

    def search_for(self, expect: Expect, keyterms: Sequence[str] = ()) -> str | None:
        """The grammar search serving ``expect`` (``None``: the LM alone serves it).

        ``"product"`` with ``keyterms`` gets a grammar of its own (catalogue plus keyterms); the model keeps
        the last 8 such grammars.
        """
        if expect in (DIGITS, YES_NO):
            return expect
        if expect != PRODUCT:
            return None
        key = tuple(sorted(set(keyterms)))
        with self._lock:
            if key in self._products:
                return self._products[key]
        jsgf = product_grammar(self.catalogue, self.lm.words, key)
        name = None if jsgf is None else f"{PRODUCT}:{hashlib.sha1(jsgf.encode()).hexdigest()[:12]}"
        with self._lock:
            if len(self._products) >= _MAX_PRODUCT_GRAMMARS:
                evicted = self._products.pop(next(iter(self._products)))
                if evicted is not None and evicted not in self._products.values():
                    self._grammars.pop(evicted, None)
                    self._vocabularies.pop(evicted, None)
                    self._idle.pop(evicted, None)
            self._products[key] = name
            if name is not None and jsgf is not None:
                self._grammars[name] = jsgf
                self._vocabularies[name] = jsgf_words(jsgf)
        return name

    def vocabulary(self, search: str) -> frozenset[str]:
        """The words grammar ``search`` can produce (empty for the LM or an unknown search)."""
        with self._lock:
            return self._vocabularies.get(search, frozenset())

    def new_decoder(self, search: str = LM_SEARCH) -> Decoder:
        """A fresh PocketSphinx decoder (16 kHz input) with one search: the domain LM, or a grammar.

        Raises:
            RuntimeError: the model was closed.
            KeyError: ``search`` is not one of the model's searches.
            ValueError: the grammar did not load (a word missing from the dictionary).
        """
        if not self._cleanup.alive:
            raise RuntimeError(f"RecognizerModel: closed, its LM files in {self._dir} are gone")
        common: dict[str, str | int | float | bool | None] = {
            "hmm": self.hmm, "dict": str(self.dict_path), "samprate": 16000, "loglevel": "FATAL",
        }  # fmt: skip
        if search == LM_SEARCH:
            return Decoder(**common, lm=str(self.lm_path), **self.decoder_options)
        with self._lock:
            jsgf = self._grammars[search]
        # no lattice for grammars: its posteriors would cost 10x the search, and confidence does not need them
        decoder = Decoder(**common, lm=None, **{**self.decoder_options, "bestpath": False})
        decoder.add_jsgf_string(search, jsgf)
        decoder.activate_search(search)
        return decoder

    def acquire(self, search: str = LM_SEARCH) -> Decoder:
        """Borrow a decoder with ``search`` from its pool (a new one if none is idle); see :meth:`release`."""
        with self._lock:
            idle = self._idle.get(search)
            if idle:
                return idle.pop()
        decoder = self.new_decoder(search)
        with self._lock:
            self.decoders_created += 1
        return decoder

    def release(self, decoder: Decoder, search: str = LM_SEARCH) -> None:
        """Return a decoder borrowed for ``search`` (dropped if the model no longer has that search)."""
        with self._lock:
            if search == LM_SEARCH or search in self._grammars:
                self._idle.setdefault(search, []).append(decoder)

    def close(self) -> None:
        """Delete the LM and dictionary files and drop idle decoders (decoders in use keep working)."""
        self._cleanup()
        with self._lock:
            self._idle.clear()


@dataclass(slots=True)
class _Hypothesis:
    words: list[str]
    score: float
    """Acoustic score per 10 ms frame (log base 1.0001; higher is better)."""


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


class CallRecognizer:
    """One call's recognizer. Feed it the call's entries in order.

    Args:
        model: the worker's shared model.
        call_sid: the call, used in utterance ids.
        end_silence_ms: silence that ends an utterance (overrides ``endpointer.end_silence_ms``).
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
        if expect not in _EXPECTS:
            raise ValueError(f"CallRecognizer.listen: unknown expectation {expect!r}, expected {sorted(_EXPECTS)}")
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
        events: list[RecognizerEvent] = []
        for pcm in ulaw_pcm_frames(ulaw, f"CallRecognizer.feed: entry {entry_id} of call {self.call_sid}"):
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
        if step.ended:
            events.append(self._finish(entry_id))
        elif utt.frames % self._partial_every == 0:
            hyp = utt.lm.hyp()
            text = " ".join(self._text(hyp.hypstr.split(), utt.expect)) if hyp is not None else ""
            if text and text != utt.last_partial:
                utt.last_partial = text
                events.append(Partial(utt.id, text))

    def _start(self, utterance_id: str, first_voiced: Frame) -> _Utterance:
        """Borrow the decoder(s) of the expectation in force and start them from the call's state."""
        model = self.model
        utt = _Utterance(utterance_id, first_voiced, self._expect, model.acquire(LM_SEARCH))
        try:
            digits = self._expect == DIGITS and self._digits_end_silence is not None
            self._endpointer.set_end_silence_ms(self._digits_end_silence if digits else None)
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

    def _finish(self, last_entry: str) -> RecognizerEvent:
        """Close the utterance's decoding; the endpointer has already ended (and rebased)."""
        endpointed_at = self._clock()
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
        words, confidence, source = self._choose(lm, grammar, vocabulary)
        if not words:
            return Discarded(utt.id, last_entry, checkpoint, self.resume)
        self._cmn = cmn
        last_voiced = self._endpointer.last_voiced or utt.first_voiced
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
    def _end(decoder: Decoder, tail: np.ndarray, *, lattice: bool) -> _Hypothesis | None:
        """End ``decoder``'s utterance; its words and acoustic score per frame (``None``: no hypothesis)."""
        if len(tail):
            decoder.process_raw(tail.tobytes(), False, False)
        decoder.end_utt()
        if decoder.hyp() is None:  # a grammar that never reached its final state
            return None
        segments = list(decoder.seg())
        scale = 1024.0 if lattice and decoder.config["bestpath"] else 1.0  # lattice scores: not shifted
        score = sum(math.log(max(s.ascore, 1e-300)) for s in segments if s.word != "(NULL)") / _LOG_BASE / scale
        words = [s.word.split("(", 1)[0] for s in segments if s.word not in _FILLERS and not s.word.startswith("[")]
        return _Hypothesis(words, score / max(1, decoder.n_frames()))

    def _choose(
        self, lm: _Hypothesis | None, grammar: _Hypothesis | None, vocabulary: frozenset[str]
    ) -> tuple[list[str], float, str]:
        """The result to report, its confidence, and which search gave it (see the module docstring)."""
        if lm is None or not lm.words:
            return [], 0.0, "lm"
        coherence = COHERENCE_WEIGHT * (self._coherence(lm.words) - COHERENCE_MIDPOINT)
        lm_z = coherence + ACOUSTIC_WEIGHT * (lm.score - ACOUSTIC_MIDPOINT)
        if grammar is not None and lm_z > 0 and not any(w in vocabulary and w not in CARRIER_WORDS for w in lm.words):
            # the LM heard, confidently, a sentence without one word the grammar is about ("goodbye" or "that's
            # all thanks" to a yes/no question): forcing it into the grammar would invent an answer ("uh right")
            return lm.words, round(_logistic(lm_z), 4), "lm"
        if grammar is not None and grammar.words and grammar.score >= lm.score - GRAMMAR_MARGIN:
            # the LM heard, as well or better, a confident sentence of other words ("what's your return policy"
            # to a yes/no question): the grammar only forced the audio into its phrases
            other = sum(w not in vocabulary for w in lm.words) * 2 > len(lm.words)
            if not (other and lm_z > 0 and lm.score >= grammar.score):
                grammar_z = coherence + ACOUSTIC_WEIGHT * (grammar.score - ACOUSTIC_MIDPOINT)
                return grammar.words, round(_logistic(grammar_z), 4), "grammar"
        return lm.words, round(_logistic(lm_z), 4), "lm"

    def _coherence(self, words: Sequence[str]) -> float:
        """Mean log10 probability of ``words`` (number words left out) and the sentence end, by the domain LM."""
        if all(w in _NUMBERS for w in words):
            return NUMBERS_COHERENCE
        probs = self.model.scorer.log10_probs(words)
        scored = [p for w, p in zip([*words, "</s>"], probs, strict=True) if w not in _NUMBERS]
        return sum(scored) / len(scored)

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
