"""What every call of an stt worker shares: the domain LM, dictionary, grammars, and pools of decoders.

:class:`RecognizerModel` is built once per worker: the domain LM and dictionary (written to a private temp dir),
the JSGF grammars of the narrow expectations, and pools of PocketSphinx decoders shared by the worker's calls
(:class:`~voxcart.stt.recognizer.CallRecognizer`). Decoders take 16 kHz audio: the en-us acoustic model is a
16 kHz model; running it at 8 kHz fails (speech.md §1).

Decoders are borrowed per utterance, not per call: every utterance starts from a state that does not depend
on the decoder's past (see ``recognizer``), so a call holds a decoder only while its caller speaks. Measured:
an idle call costs ~0.15 MB; a call in an utterance ~9 MB (one LM decoder), ~18-20 MB under a narrow
expectation (plus a grammar decoder); decoders stay pooled at the peak number of simultaneous utterances.

Invariants:
- Each decoder holds one search: the domain LM (:data:`LM_SEARCH`) or one grammar (named for its expectation;
  ``"product:<hash>"`` for a product grammar with keyterms). :meth:`RecognizerModel.release` puts a decoder
  back in the pool of the search it is given (the caller's: the one it was acquired for), and drops it if the
  model no longer has that search (an evicted product grammar).
- The pools, the grammars and the vocabularies are guarded by one lock: a model is shared by the worker's
  threads; decoders are created outside the lock.
- After :meth:`RecognizerModel.close` the LM files are gone and no new decoder can be made; decoders in use
  keep working.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final as Constant

import pocketsphinx
from pocketsphinx import Decoder

from voxcart.common.events import Expect
from voxcart.stt.grammars import (
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

__all__ = ["CMN_MIN_SPEECH_SHARE", "LM_SEARCH", "TELEPHONE_CMN", "RecognizerModel", "carried_cmn"]

log = logging.getLogger("voxcart.stt.recognizer_model")

TELEPHONE_CMN = "48.06,8.32,-8.05,13.56,-7.61,1.43,-9.19,3.91,-2.95,2.72,-8.71,1.72,-2.75"
"""The cepstral mean a call's first utterance starts from.

Measured on real telephone speech (178 Debian ``asterisk-core-sounds-en-wav`` prompts through the 8 kHz μ-law
path, upsampled to 16 kHz; mean of the carried mean over the last two thirds). On 147 other prompts it gives
11.8 % WER against 15.0 % for the acoustic model's wideband default (``40,3,-1,0,...``); carrying the mean from
utterance to utterance then brings 11.5 %.
"""

CMN_MIN_SPEECH_SHARE: Constant = 0.5
"""The share of an utterance's audio that must be speech for its cepstral mean to be carried to the next one.

PocketSphinx's live mean runs over every frame the decoder hears, the pre-roll and the end-of-speech silence
included. A short answer ("two", "forty": 0.4-0.8 s of speech in 1.5-2.4 s of audio, the 1 s end silence of
``"digits"`` included) is mostly line noise, and carrying its mean drags the next utterance's towards the
noise's: over the 28 recorded isolated numbers (Debian ``asterisk-core-sounds-en-wav``) decoded as one call,
the mean's c0 fell from 48 to 39 and the numbers grammar got 9 right against 20 with the mean kept (speech
shares 0.10-0.48). Piper caller sentences have shares of 0.17-0.75 (median 0.62): 0.5 keeps the adaptation to
the caller's voice and level for sentences (``voxcart bench speech``'s clean in-domain calls: WER 12.9 %
carrying every mean, 14.1 % carrying none, 12.7 % with this rule; its noisy calls at 20/10/5 dB SNR, denoised:
16.6/41.3/73.2 % against 16.3/41.3/73.5 %, intent unchanged)."""

LM_SEARCH: Constant = "lm"
"""The name of the domain LM's search (the grammars' are their expectation's name)."""
_MAX_PRODUCT_GRAMMARS = 8


def carried_cmn(previous: str, measured: str, speech_ms: float, heard_ms: float) -> str:
    """The cepstral mean the next utterance starts from: ``measured`` (the decoder's after this utterance) when
    speech filled at least :data:`CMN_MIN_SPEECH_SHARE` of the audio the decoder heard, else ``previous``.

    Args:
        previous: the mean this utterance started from.
        measured: the decoder's mean after it (``Decoder.get_cmn()``).
        speech_ms: the utterance's speech, first to last voiced frame.
        heard_ms: all the audio the decoder heard, pre-roll and end silence included.

    Raises:
        ValueError: ``heard_ms`` is not positive or ``speech_ms`` is negative.
    """
    if heard_ms <= 0 or speech_ms < 0:
        raise ValueError(f"carried_cmn: speech {speech_ms} ms in {heard_ms} ms heard is not a valid utterance")
    return measured if speech_ms >= CMN_MIN_SPEECH_SHARE * heard_ms else previous


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
