"""The domain LM and dictionary: normalization, pronunciations, determinism, and that PocketSphinx loads them."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from pocketsphinx import Decoder

import voxcart.stt.language_model as language_model
from voxcart.stt.g2p import G2PError
from voxcart.stt.language_model import DIGIT_WORDS, ArpaScorer, build_domain_lm, contracted, normalize_words
from voxcart.stt.recognizer import RecognizerModel


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Where's my ORDER?", ["where's", "my", "order"]),
        ("Order #12345, size 10!", ["order", "one", "two", "three", "four", "five", "size", "ten"]),
        ("size 7 or 19 or 42", ["size", "seven", "or", "nineteen", "or", "forty", "two"]),
        ("zip 02139", ["zip", "zero", "two", "one", "three", "nine"]),
        ("a t-shirt & jeans", ["a", "t-shirt", "and", "jeans"]),
        ("", []),
    ],
)
def test_normalize_words(text: str, words: list[str]) -> None:
    assert normalize_words(text) == words


def test_dictionary_holds_only_the_words_needed() -> None:
    lm = build_domain_lm(["is the blue hoodie in stock", "size 10 please"], ["sneakers"])
    assert lm.words == {
        "is", "the", "blue", "hoodie", "in", "stock", "size", "ten", "please", "sneakers", "oh", *DIGIT_WORDS,
    }  # fmt: skip
    assert lm.pronunciations["hoodie"] == ("HH UH D IY",)  # not in cmudict
    assert len(lm.pronunciations["the"]) >= 2  # cmudict variants are kept
    text = lm.dictionary_text()
    assert "\nthe(2) " in text and text.startswith("blue ")
    assert lm.arpa.startswith("Corpus:") and "\\end\\" in lm.arpa and " hoodie " in lm.arpa


def test_every_pair_of_digits_is_a_bigram() -> None:
    lm = build_domain_lm(["my order number is 12345"])
    bigrams = lm.arpa.split("\\2-grams:")[1].split("\\3-grams:")[0]
    pairs = {tuple(line.split()[1:3]) for line in bigrams.strip().splitlines()}
    assert {(a, b) for a in DIGIT_WORDS for b in DIGIT_WORDS} <= pairs
    spoken = ["oh", *DIGIT_WORDS[1:]]  # zero is also said "oh"
    assert {(a, b) for a in spoken for b in spoken if "oh" in (a, b) and a != b} <= pairs
    plain = build_domain_lm(["my order number is 12345"], digit_strings=False)
    assert ("three", "one") not in {tuple(line.split()[1:3]) for line in plain.arpa.splitlines()}


def test_every_run_of_three_digits_is_a_trigram() -> None:
    """After any two digits the LM has seen every digit (a trigram, not a back-off to the unigram)."""
    lm = build_domain_lm(["my order number is 12345"])
    trigrams = lm.arpa.split("\\3-grams:")[1].split("\\end\\")[0]
    runs = {tuple(line.split()[1:4]) for line in trigrams.strip().splitlines()}
    assert {(a, b, c) for a in DIGIT_WORDS for b in DIGIT_WORDS for c in DIGIT_WORDS} <= runs
    assert ("one", "oh", "oh") in runs and ("oh", "oh", "two") in runs


def test_words_missing_from_cmudict_get_letter_to_sound_pronunciations() -> None:
    lm = build_domain_lm(["the zorbleflex is broken", "is the kalvani scarf in stock"])
    assert lm.pronunciations["zorbleflex"] == ("Z AO R B AH L F L EH K S",)
    assert lm.pronunciations["kalvani"] == ("K AE L V AA N IY",)
    assert lm.pronunciations["hoodie" if "hoodie" in lm.words else "scarf"][0]  # cmudict words keep theirs
    assert lm.skipped == ()


def test_without_letter_to_sound_unknown_words_are_skipped_and_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(words: object) -> dict[str, str]:
        raise G2PError("cannot load libespeak-ng from 'nowhere'")

    monkeypatch.setattr(language_model, "espeak_pronunciations", broken)
    with caplog.at_level(logging.WARNING, "voxcart.stt.language_model"):
        lm = build_domain_lm(["the zorbleflex is broken"])
    assert lm.skipped == ("zorbleflex",)
    assert "zorbleflex" not in lm.words and "broken" in lm.words
    assert "no letter-to-sound rules" in caplog.text and "nowhere" in caplog.text
    assert "no pronunciation for 1 word(s)" in caplog.text and "zorbleflex" in caplog.text


def test_short_unknown_words_are_also_spelled_out() -> None:
    lm = build_domain_lm(["do you have it in xl", "what is the eta"])
    assert lm.pronunciations["xl"] == ("EH K S EH L",)  # espeak-ng spells it too
    assert lm.pronunciations["eta"] == ("IY T AH", "IY T IY EY")  # read as a word, and as letters
    assert lm.skipped == ()


def test_caller_pronunciations_win() -> None:
    lm = build_domain_lm(["the zorbleflex is broken"], pronunciations={"Zorbleflex": ["z ao r b ah l f l eh k s"]})
    assert lm.pronunciations["zorbleflex"] == ("Z AO R B AH L F L EH K S",)
    assert lm.skipped == ()


def test_forty_and_eighty_also_have_the_flapped_t() -> None:
    """Recorded "forty" and "eighty" decode as "fourteen" and "eighteen" with cmudict's "T IY" alone."""
    lm = build_domain_lm(["size 40 or 80", "size 30"])
    assert lm.pronunciations["forty"] == ("F AO R T IY", "F AO R D IY")
    assert lm.pronunciations["eighty"] == ("EY T IY", "EY D IY")
    assert "\nforty(2) F AO R D IY\n" in lm.dictionary_text()
    assert lm.pronunciations["thirty"] == ("TH ER D IY", "TH ER T IY")  # cmudict's own


def test_deterministic() -> None:
    samples = ["where is my order", "i want to return my shoes", "goodbye"]
    a, b = build_domain_lm(samples, ["hoodie"]), build_domain_lm(list(samples), ["hoodie"])
    assert (a.arpa, a.dictionary_text()) == (b.arpa, b.dictionary_text())


def test_nothing_usable_is_an_error() -> None:
    with pytest.raises(ValueError, match="sample_utterances: no sentence"):
        build_domain_lm(["12345", "  ", "!!"])


def test_contracted_forms_join_the_corpus() -> None:
    assert contracted("where is my order".split()) == ["where's", "my", "order"]
    assert contracted("i do not know what is it".split()) == ["i", "don't", "know", "what's", "it"]
    assert contracted(["is"]) == ["is"]
    lm = build_domain_lm(["where is my order", "that is all"], digit_strings=False)
    assert lm.sentences == 4
    assert {"where's", "that's", "where", "is"} <= lm.words
    assert " where's my" in lm.arpa and " where is my" in lm.arpa


def test_dictionary_words_are_in_the_dictionary_only() -> None:
    lm = build_domain_lm(["where is my order"], dictionary_words=["yep", "nope thanks"], digit_strings=False)
    assert {"yep", "nope", "thanks"} <= lm.words
    assert "yep" in lm.dictionary_text() and " yep" not in lm.arpa


def test_arpa_scorer() -> None:
    lm = build_domain_lm(["where is my order", "i want to return my shoes", "goodbye"], digit_strings=False)
    scorer = ArpaScorer(lm.arpa)
    assert scorer.order == 3
    seen = scorer.log10_probs(["where", "is", "my", "order"])
    trigram = next(line for line in lm.arpa.splitlines() if line.endswith("\tis my order") or " is my order" in line)
    assert len(seen) == 5 and seen[3] == pytest.approx(float(trigram.split()[0]))  # "order" after "is my"
    assert scorer.log10_probs(["zebra"])[0] < ArpaScorer.UNKNOWN + 0.5  # not in the LM

    def mean(words: str) -> float:
        probs = scorer.log10_probs(words.split())
        return sum(probs) / len(probs)

    assert mean("where is my order") > -0.5 > -1 > mean("shoes goodbye my where")


def test_model_builds_fast_and_decoders_load_it(tmp_path: Path) -> None:
    samples = [
        f"is the {c} {p} in stock in {s}"
        for c in ("blue", "red", "black")
        for p in ("hoodie", "jacket")
        for s in ("small", "medium", "large")
    ] + [f"my order number is {n}" for n in range(10000, 10500)]
    started = time.perf_counter()
    model = RecognizerModel.build(samples, ["sneakers"])
    assert time.perf_counter() - started < 1.5  # measured ~0.06 s
    decoder = model.new_decoder()
    assert isinstance(decoder, Decoder)
    assert decoder.lookup_word("hoodie") == "HH UH D IY"
    assert decoder.lookup_word("sneakers") is not None
    assert decoder.lookup_word("giraffe") is None  # only the domain's words
    lm_dir = model.lm_path.parent
    model.close()
    assert not lm_dir.exists()
    with pytest.raises(RuntimeError, match="closed"):
        model.new_decoder()


def test_a_large_combinatorial_corpus_builds_fast_and_stays_small() -> None:
    """The brain's samples run to ~1,200 sentences of openers x lead-ins x requests: built at start, in budget."""
    openers = ["", "um", "hi", "so", "yeah"]
    lead_ins = ["i want to", "i would like to", "can i", "i am calling to", "i was wondering if i could"]
    requests = [f"{verb} my {thing}" for verb in ("check on", "return", "cancel") for thing in ("order", "jacket")]
    sentences = [f"{o} {li} {r}".strip() for o in openers for li in lead_ins for r in requests]
    sentences += [f"order {n}" for n in range(10000, 10400)]
    started = time.perf_counter()
    lm = build_domain_lm(sentences)
    assert time.perf_counter() - started < 3.0
    assert lm.sentences >= len(sentences)
    assert "wondering" in lm.words and len(lm.words) < 60
    assert len(lm.arpa) < 400_000
