"""Judging understanding: the brain's own intent classifier run on a transcript.

This is what the dialog does with a caller's utterance before any state applies
(:meth:`voxcart.brain.dialog.Dialog.on_text`): catalogue evidence from the store's product matcher, then
:func:`voxcart.brain.nlu.score_intents`, and "not understood" below :data:`voxcart.brain.nlu.MIN_SCORE`.
Confirmations are judged with :func:`voxcart.brain.nlu.yes_or_no`, as the dialog does when it asked a question.
"""

from __future__ import annotations

from voxcart.brain.nlu import MIN_SCORE, score_intents, yes_or_no
from voxcart.brain.store import SqliteStore

from .corpus import BenchSentence

__all__ = ["IntentJudge"]


class IntentJudge:
    """Classifies transcripts the way the brain does, for one store.

    Args:
        store: the shop whose catalogue and FAQ the classifier uses.
    """

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def classify(self, text: str) -> str:
        """The brain's intent for ``text``, or ``"unknown"`` when no intent scores :data:`MIN_SCORE`."""
        matches = self.store.find_products(text)
        product_score = 0.0 if not matches else 3.0 if matches[0].exact else 2.0
        top = score_intents(text, product_score=product_score, faq=self.store.policies.faq)[0]
        return top.intent if top.score >= MIN_SCORE else "unknown"

    def understood(self, sentence: BenchSentence, text: str) -> bool | None:
        """Whether ``text`` gets ``sentence``'s labelled intent; None when the sentence has no label."""
        if sentence.intent is None:
            return None
        if sentence.intent in ("yes", "no"):
            return yes_or_no(text) is (sentence.intent == "yes")
        return self.classify(text) == sentence.intent
