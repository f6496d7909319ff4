"""Tests of the caller language the brain publishes for recognizers (:mod:`voxcart.brain.language`)."""

from __future__ import annotations

import re

from voxcart.brain.language import sample_utterances, spoken_form
from voxcart.brain.store import SqliteStore


def test_requests_are_wrapped_in_several_lead_ins(store: SqliteStore) -> None:
    samples = sample_utterances(store)
    wrapped = [s for s in samples if re.search(r"\bcancel order\b", s)]
    lead_ins = {s.split(" cancel order")[0] for s in wrapped if " cancel order" in s}
    assert len(lead_ins) >= 4, lead_ins
    assert any(s.startswith(("um ", "uh ")) for s in samples)
    assert any(" because " in s and "too small" in s for s in samples)


def test_everyday_words_outside_the_templates_are_in_the_samples(store: SqliteStore) -> None:
    words = {w for s in sample_utterances(store) for w in s.split()}
    for word in ("because", "bought", "stuff", "moved", "pair", "policy", "update", "charge", "soon"):
        assert word in words, word


def test_samples_stay_spoken_form_and_bounded(store: SqliteStore) -> None:
    samples = sample_utterances(store)
    assert samples == sample_utterances(store)
    assert len(samples) == len(set(samples)) and len(samples) <= 2000  # one LM per worker, a decoder per caller
    assert all(s and s == spoken_form(s) for s in samples), [s for s in samples if s != spoken_form(s)][:3]
    assert not any("{" in s or "  " in s or s != s.strip() for s in samples)
