"""The early-end bench (``python -m voxcart.cli.bench.early_end``): the items it builds, and a real run of both
arms on two items with the caller voice and a small domain model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voxcart.cli.bench.corpus import BenchSentence
from voxcart.cli.bench.early_end import HESITATIONS, Item, build_items, main, measure, render
from voxcart.stt.recognizer import RecognizerModel


def test_items_cover_whole_sentences_pauses_digits_and_hesitations() -> None:
    sentences = [BenchSentence("where is my order", "order_status", "order_status"), BenchSentence("yes", "yes", "yes")]
    items = build_items(sentences, ["10023"])
    complete = [i for i in items if i.kind == "complete"]
    assert [(i.text, i.expect) for i in complete] == [("where is my order", "free")] * 2 + [("yes", "yes_no")] * 2
    assert {i.speed for i in complete} == {1.0, 1.15}
    paused = [(i.parts, i.after) for i in items if i.kind == "paused"]
    assert paused == [
        (("where", "is my order"), "open"),
        (("where is", "my order"), "open"),
        (("where is my", "order"), "open"),
    ]
    digits = [(i.parts, i.expect) for i in items if i.kind == "digits"]
    assert digits == [
        (("one zero", "zero two three"), "digits"),
        (("one zero", "zero two three"), "free"),
        (("one zero zero", "two three"), "digits"),
        (("one zero zero", "two three"), "free"),
    ]
    assert [i.parts for i in items if i.kind == "hesitation"] == list(HESITATIONS)


@pytest.fixture(scope="module")
def small_model() -> Iterator[RecognizerModel]:
    model = RecognizerModel.build(["where is my order", "i want to return my shoes", "what is your return policy"])
    yield model
    model.close()


def test_both_arms_on_a_complete_request_and_a_pause_after_my(small_model: RecognizerModel) -> None:
    items = [Item(("where is my order",), "complete"), Item(("i want to return my", "shoes"), "paused", after="open")]
    off = measure(small_model, items, early_ms=0, pause_ms=360)
    on = measure(small_model, items, early_ms=300, pause_ms=360)
    assert off["ended_early"]["complete"] == {"n": 1, "hits": 0, "rate": 0.0}
    assert on["ended_early"]["complete"] == {"n": 1, "hits": 1, "rate": 1.0}
    assert on["ended_early"]["after_pause"]["n"] == 1
    for arm in (off, on):
        assert arm["cut_at_pause"] == {"paused:open": {"n": 1, "hits": 0, "rate": 0.0}} and arm["cuts"] == []
        assert arm["wer_complete"]["reference_tokens"] == 4
        assert arm["confidence_complete"]["n"] == 1 and arm["confidence_complete"]["below_min"] == 0
    text = render({"items": 2, "pause_ms": 360, "end_silence_ms": 600, "arms": {"off": off, "on": on}})
    assert "ended at the early mark, complete" in text and "cut at a pause, paused:open" in text
    assert "0/1 under 0.5" in text


def test_bad_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--early-ms", "600"]) == 2
    assert "--early-ms 600" in capsys.readouterr().err
    assert main(["--pause-ms", "0"]) == 2
    assert "--pause-ms 0" in capsys.readouterr().err
