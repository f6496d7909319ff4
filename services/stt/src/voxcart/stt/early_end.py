"""Ending the caller's turn early when the words heard so far make a complete request (a turn detector).

The endpointer ends an utterance after its end-of-speech silence (600 ms by default), which alone is most of
the turn latency budget. At a shorter silence (the endpointer's early mark, ``STT_EARLY_END_MS``, 300 ms by
default) the recognizer looks at the domain LM decoder's current hypothesis and ends the utterance at once when
it sounds complete; otherwise the silence runs on as before. Like LiveKit's and Pipecat's turn detectors, but
with what runs offline here: the hypothesis is complete when

- its last word can end a request: not a word a request goes on after (:data:`OPEN_ENDINGS`: articles,
  possessives, prepositions, conjunctions, auxiliaries, "i'd", "um"), and not a number (a digit string read
  out goes on; a lone "one" after another word, "the blue one", is a pronoun and may end);
- and a sentence the domain LM was built from (the brain's caller sentences) ended with the same last two words
  (:meth:`~voxcart.stt.language_model.ArpaScorer.seen_ending`: "... in stock", "... return policy", "<s> yes"),
  or it ends with a closing word (:data:`CLOSING_WORDS`: "please", "thanks", "goodbye").

The LM's smoothed end probability does not tell "... my" (-1.5 log10) from "yes" (-1.6); whether a sentence
ever ended so does. Only under ``"free"``, ``"yes_no"`` and ``"product"`` (:data:`EARLY_END_EXPECTS`): under
``"digits"`` and ``"address"`` the brain asked for an entry read out in groups with pauses between them, and the
domain LM's partial of a digit group is often words ("one zero zero" -> "one do road"), so the long silence of
those expectations stays.

Measured with ``python -m voxcart.cli.bench.early_end`` (piper caller voice, 8 kHz μ-law, the demo store's
domain LM, end silence 600 ms, early mark 300 ms): of the 62 held-out ``voxcart bench speech`` sentences said
whole at two speeds, 70 % (87/124) ended at the early mark (1 of the 12 ending in an order number: its last
digits heard as words); with each sentence cut at every word boundary by a 460 ms pause, the pause ended the
utterance after 3.8 % (6/157) of the words a request goes on after (the word misheard: "i need to" -> "i
needed") and after 31 % (55/178) of the other words, nearly all where the words so far are a request of their
own ("my package ... still hasn't arrived", "yeah ... that's correct", "how much ... is the puffer vest"); no
pause inside 24 order numbers (``"digits"`` and ``"free"``) or after 5 hesitations ("um", "uh") did. WER of
the whole sentences and their confidence unchanged (14.5 %; mean 0.788 -> 0.787, 17/124 under
``MIN_CONFIDENCE`` either way), thanks to the recognizer's padding of an early-ended utterance's tail. The
hypothesis is the same at 200-400 ms of silence on this audio; 300 ms leaves the decoder the post-roll it needs
(speech.md §1) and a margin for word-final stops. A partial hypothesis costs 3-8 µs, the padding ~7 ms.

Invariants:
- The decision is a pure function of the expectation, the hypothesis's words and the domain LM, and the
  hypothesis is the decoder's after the same frames from the same state (``recognizer``), so an owner replaying
  the utterance after a takeover ends it on the same frame (``turn_end``'s invariant still holds: what the
  silence depends on is fixed at the utterance's start).
- It only ever ends an utterance sooner than the end silence would; it never makes one longer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from pocketsphinx import Decoder
from prometheus_client import Counter

from voxcart.common.events import Expect
from voxcart.common.spoken_numbers import NUMBER_WORDS
from voxcart.stt.language_model import ArpaScorer

__all__ = [
    "CLOSING_WORDS",
    "EARLY_END_DECISIONS",
    "EARLY_END_EXPECTS",
    "OPEN_ENDINGS",
    "ends_early",
    "hypothesis_words",
    "sounds_complete",
]

EARLY_END_EXPECTS: Final[frozenset[Expect]] = frozenset({"free", "yes_no", "product"})
"""The expectations under which an utterance may end at the early mark."""

OPEN_ENDINGS: Final = frozenset(
    """a an the my your our their his her its
    and or but so because if then than
    to for of with from at on in by about into through like
    is are was were am be been do does did can could would will should have has had
    i we they he she i'm i'd i've i'll it's that's what's where's there's you're we're they're
    what where when how which who whose
    um uh er erm hmm ah""".split()
)
"""Words a caller's request goes on after. Some of them do end sentences of the domain LM ("who can i talk to",
"what does it come in"), but a pause after them is far more often a caller looking for the next word."""

CLOSING_WORDS: Final = frozenset({"please", "thanks", "thank", "bye", "goodbye"})
"""Words that end a request whatever came before ("thank": how the recognizer often hears "thanks")."""

_NUMBERS: Final = NUMBER_WORDS | {"oh"}
_FILLER_PREFIXES: Final = ("<", "[", "+")

EARLY_END_DECISIONS = Counter(
    "voxcart_stt_early_end_decisions_total",
    "Turn-end decisions at the early mark: 'end' (the words sounded complete, the utterance ended there) or "
    "'wait' (the end silence runs on).",
    ["decision"],
)


def hypothesis_words(decoder: Decoder) -> list[str]:
    """The words of ``decoder``'s current hypothesis (during an utterance: its partial result; a few µs), without
    fillers and alternate-pronunciation marks."""
    hyp = decoder.hyp()
    if hyp is None:
        return []
    return [w.split("(", 1)[0] for w in hyp.hypstr.split() if not w.startswith(_FILLER_PREFIXES)]


def sounds_complete(words: Sequence[str], scorer: ArpaScorer) -> bool:
    """Whether ``words`` (a partial hypothesis) make a complete request; see the module's rules.

    Args:
        words: the words heard so far, in order.
        scorer: the domain LM.
    """
    if not words:
        return False
    last = words[-1]
    if last in OPEN_ENDINGS:
        return False
    if last in _NUMBERS and not (last == "one" and len(words) > 1 and words[-2] not in _NUMBERS):
        return False
    return last in CLOSING_WORDS or scorer.seen_ending(words)


def ends_early(expect: Expect, words: Sequence[str], scorer: ArpaScorer) -> bool:
    """Whether an utterance under ``expect`` whose words so far are ``words`` ends at the early mark."""
    return expect in EARLY_END_EXPECTS and sounds_complete(words, scorer)
