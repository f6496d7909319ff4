"""Understanding weak-recognizer text: normalization, intents, yes/no, emails, countries."""

from __future__ import annotations

import pytest

from voxcart.brain.nlu import extract_email, extract_zip, faq_match, mentioned_countries, score_intents, yes_or_no
from voxcart.brain.text import key_tokens, normalize, stem
from voxcart.common.seed import FaqEntry


def test_normalize_and_stem() -> None:
    assert normalize("Where's my ORDER #10023?!") == "where is my order 10023"
    assert normalize("I'm looking for a T-Shirt, size 10.5") == "i am looking for a t shirt size 10.5"
    assert normalize("Dana's hoodie") == "dana hoodie"
    pairs = [("hoodies", "hoodie"), ("shoes", "shoe"), ("berries", "berry"), ("dresses", "dress"), ("boxes", "box")]
    for plural, singular in pairs:
        assert stem(plural) == stem(singular), (plural, singular)
    assert stem("status") == "status" and stem("yes") == "yes" and stem("10") == "10"
    assert key_tokens("Sneakers") == key_tokens("sneaker")


def _top(text: str, product_score: float = 0.0) -> str:
    return score_intents(text, product_score=product_score)[0].intent


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("where is my order", "order_status"),
        ("where is my order one zero zero two three", "order_status"),
        ("has my order shipped", "order_status"),
        ("i want to check the status of war one two three four five", "order_status"),
        ("my package has not arrived", "order_status"),
        ("can you track my package", "order_status"),
        ("i'm calling to check on my order", "order_status"),
        ("could i get an update on my delivery", "order_status"),
        ("when is it going to get here", "order_status"),
        ("the parcel never showed up", "order_status"),
        ("i still have not received it", "order_status"),
        ("what's your policy for returns", "return_policy"),
        ("i want to return my order", "return"),
        ("i need to send back the shoes", "return"),
        ("where is my refund", "refund_status"),
        ("what is the status of my return", "refund_status"),
        ("when will i get my money back", "refund_status"),
        ("what is your return policy", "return_policy"),
        ("how long do i have to return something", "return_policy"),
        ("i want to cancel my order", "cancel"),
        ("how long does shipping take", "shipping"),
        ("do you ship to canada", "shipping"),
        ("how much is shipping", "shipping"),
        ("what are your hours", "hours"),
        ("are you open on saturday", "hours"),
        ("is it in stock", "availability"),
        ("do you have it in size ten", "availability"),
        ("can i talk to a real person", "human"),
        ("representative", "human"),
        ("transfer me to an agent please", "human"),
        ("goodbye", "goodbye"),
        ("that is all thank you", "goodbye"),
        ("can you repeat that", "repeat"),
        ("sorry what was that", "repeat"),
        ("what were you saying", "repeat"),
        ("sorry i did not catch that", "repeat"),
        ("thank you", "thanks"),
        ("what can you do", "help"),
        ("banana", "unknown"),
    ],
)
def test_intents(text: str, intent: str) -> None:
    assert _top(text) == intent


def test_product_evidence_decides_between_availability_and_return() -> None:
    assert _top("do you have the hoodie", product_score=3) == "availability"
    assert _top("the blue hoodie", product_score=3) == "availability"
    assert _top("i want to return my hoodie", product_score=3) == "return"


def test_faq_match() -> None:
    faq = [FaqEntry(question="Do you offer gift wrapping?", answer="Yes."), FaqEntry(question="Pets?", answer="No.")]
    assert faq_match("can i get gift wrapping", faq) == (0, 2)
    assert faq_match("wrapping", faq) == (None, 0)
    assert score_intents("do you offer gift wrapping", faq=faq)[0].intent == "faq"


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("yes", True), ("yeah sure", True), ("yes please", True), ("that is right", True), ("okay", True),
        ("no", False), ("nope", False), ("no thanks", False), ("that is not right", False), ("no that is wrong", False),
        ("um", None), ("hoodie", None),
    ],
)  # fmt: skip
def test_yes_or_no(text: str, answer: bool | None) -> None:
    assert yes_or_no(text) is answer


@pytest.mark.parametrize(
    ("text", "email"),
    [
        ("dana@example.com", "dana@example.com"),
        ("It's Dana@Example.com.", "dana@example.com"),
        ("my email is dana at example dot com", "dana@example.com"),
        ("marcus dot lee at example dot com", "marcus.lee@example.com"),
        ("tom underscore b at mail dot example dot org", "tom_b@mail.example.org"),
        ("i am at home", None),
        ("at", None),
    ],
)
def test_extract_email(text: str, email: str | None) -> None:
    assert extract_email(text) == email


def test_extract_zip_and_countries() -> None:
    assert extract_zip("my zip is three oh three oh one") == "30301"
    assert extract_zip("it is 02139") == "02139"
    assert extract_zip("two") is None
    assert mentioned_countries("do you ship to canada or the united states") == ["CA", "US"]
