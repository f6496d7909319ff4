"""Which decoding of an utterance to report, and how confident it is.

Under a narrow expectation (``"digits"``, ``"yes_no"``, ``"product"``) the recognizer decodes each utterance
twice, with the expectation's grammar and with the domain LM; :func:`choose` picks the result. The grammar's
result is taken when its acoustic score is within :data:`GRAMMAR_MARGIN` of the LM's, unless the LM heard, as
well or better, a confident sentence of words the grammar does not have: a caller who answers a yes/no question
with "what's your return policy" or "I want to talk to a person" is heard (6 of 6 such answers). The LM's
sentence must also beat the grammar's answer judged the same way, by its own coherence (a number answer's is
:data:`NUMBERS_COHERENCE`): a lone number word is a sentence the LM fits badly, and it made "six", "fifteen",
"sixty" (piper) and recorded "ten", "four" into confident-looking "take", "it be in", "check the", "can",
"color" (-1.7 to -2.0 per word) that the grammar had right; "goodbye" (-1.3) and "that's all thanks" (-0.8)
still win over the grammar's "uh five" and "double oh thanks".

Confidence (:attr:`Final.confidence <voxcart.stt.results.Final.confidence>`, 0..1) is a logistic of two free
by-products of decoding:
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

Invariants:
- Everything here is a pure function of the decoders' hypotheses and the domain LM: the same utterance
  decoded from the same state gets the same words and confidence (rounded to 4 decimals).
- No words (the LM's hypothesis empty or missing) gives ``([], 0.0, "lm")``: the recognizer reports it as
  :class:`~voxcart.stt.results.Discarded`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final as Constant

from pocketsphinx import Decoder

from voxcart.common.spoken_numbers import NUMBER_WORDS
from voxcart.stt.grammars import CARRIER_WORDS
from voxcart.stt.language_model import ArpaScorer

__all__ = [
    "ACOUSTIC_MIDPOINT",
    "ACOUSTIC_WEIGHT",
    "COHERENCE_MIDPOINT",
    "COHERENCE_WEIGHT",
    "GRAMMAR_MARGIN",
    "MIN_CONFIDENCE",
    "NUMBERS_COHERENCE",
    "Hypothesis",
    "choose",
    "coherence",
    "logistic",
    "read_hypothesis",
]

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

_FILLERS: Constant = frozenset({"<s>", "</s>", "<sil>", "(NULL)"})
_LOG_BASE = math.log(1.0001)  # PocketSphinx's logmath base; lattice scores are also shifted left by 10 bits
_NUMBERS: Constant = NUMBER_WORDS | {"oh"}


@dataclass(slots=True)
class Hypothesis:
    """One decoder's result for an utterance."""

    words: list[str]
    score: float
    """Acoustic score per 10 ms frame (log base 1.0001; higher is better)."""


def logistic(x: float) -> float:
    """``1 / (1 + e^-x)``, with ``x`` clipped to ±50."""
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


def read_hypothesis(decoder: Decoder, *, lattice: bool) -> Hypothesis | None:
    """The words and acoustic score per frame of ``decoder``'s ended utterance (``None``: no hypothesis).

    Args:
        decoder: a decoder after ``end_utt()``.
        lattice: whether the decoder's search keeps a lattice (the LM's: its scores are not shifted).
    """
    if decoder.hyp() is None:  # a grammar that never reached its final state
        return None
    segments = list(decoder.seg())
    scale = 1024.0 if lattice and decoder.config["bestpath"] else 1.0  # lattice scores: not shifted
    score = sum(math.log(max(s.ascore, 1e-300)) for s in segments if s.word != "(NULL)") / _LOG_BASE / scale
    words = [s.word.split("(", 1)[0] for s in segments if s.word not in _FILLERS and not s.word.startswith("[")]
    return Hypothesis(words, score / max(1, decoder.n_frames()))


def coherence(words: Sequence[str], scorer: ArpaScorer) -> float:
    """Mean log10 probability of ``words`` (number words left out) and the sentence end, by the domain LM."""
    if all(w in _NUMBERS for w in words):
        return NUMBERS_COHERENCE
    probs = scorer.log10_probs(words)
    scored = [p for w, p in zip([*words, "</s>"], probs, strict=True) if w not in _NUMBERS]
    return sum(scored) / len(scored)


def choose(
    lm: Hypothesis | None,
    grammar: Hypothesis | None,
    vocabulary: frozenset[str],
    scorer: ArpaScorer,
    *,
    judge_answer: bool = False,
) -> tuple[list[str], float, str]:
    """The result to report, its confidence, and which search gave it (``"lm"`` or ``"grammar"``).

    Args:
        lm: the domain LM's hypothesis.
        grammar: the expectation's grammar's hypothesis (``None``: no grammar, or it reached no final state).
        vocabulary: the words the grammar can produce.
        scorer: the domain LM, for the coherence.
        judge_answer: also judge the grammar's answer by its own coherence (numbers: a lone number word is a
            sentence the LM fits badly). Not for yes/no: "uh right" is a coherent phrase, and judging it so made a
            caller's "goodbye" to a yes/no question come out "uh right" again.
    """
    if lm is None or not lm.words:
        return [], 0.0, "lm"
    weighted = COHERENCE_WEIGHT * (coherence(lm.words, scorer) - COHERENCE_MIDPOINT)
    lm_z = weighted + ACOUSTIC_WEIGHT * (lm.score - ACOUSTIC_MIDPOINT)
    if grammar is None or not grammar.words:
        return lm.words, round(logistic(lm_z), 4), "lm"
    # the grammar's answer judged on the same scale, by its own coherence: a short sentence the LM made of a
    # lone number word ("six" -> "take", "ten" -> "can") is less coherent than a number, a real sentence is not
    answer_z = -math.inf
    if judge_answer:
        answer_z = COHERENCE_WEIGHT * (coherence(grammar.words, scorer) - COHERENCE_MIDPOINT)
        answer_z += ACOUSTIC_WEIGHT * (grammar.score - ACOUSTIC_MIDPOINT)
    off_topic = not any(w in vocabulary and w not in CARRIER_WORDS for w in lm.words)
    if lm_z > 0 and off_topic and lm_z > answer_z:
        # the LM heard, confidently, a sentence without one word the grammar is about ("goodbye" or "that's
        # all thanks" to a yes/no question): forcing it into the grammar would invent an answer ("uh right")
        return lm.words, round(logistic(lm_z), 4), "lm"
    if grammar.score >= lm.score - GRAMMAR_MARGIN:
        # the LM heard, as well or better, a confident sentence of other words ("what's your return policy"
        # to a yes/no question): the grammar only forced the audio into its phrases
        other = sum(w not in vocabulary for w in lm.words) * 2 > len(lm.words)
        if not (other and lm_z > 0 and lm.score >= grammar.score and lm_z > answer_z):
            grammar_z = weighted + ACOUSTIC_WEIGHT * (grammar.score - ACOUSTIC_MIDPOINT)
            return grammar.words, round(logistic(grammar_z), 4), "grammar"
    return lm.words, round(logistic(lm_z), 4), "lm"
