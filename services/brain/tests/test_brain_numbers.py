"""Spoken and written numbers: order numbers and ZIP codes as callers say them, and as the agent says them."""

from __future__ import annotations

import pytest

from voxcart.brain.numbers import digit_runs, longest_digit_run, number_words, spoken_digits
from voxcart.brain.phrasing import (
    join_and,
    join_or,
    ordinal,
    say_date,
    say_price,
    say_size,
    say_tracking,
    size_phrases,
    split_sentences,
)
from voxcart.common.spoken_numbers import number_spans, numbers_to_digits


@pytest.mark.parametrize(
    ("text", "runs"),
    [
        ("one zero zero two three", ["10023"]),
        ("one oh oh two three", ["10023"]),
        ("ten thousand twenty three", ["10023"]),
        ("ten oh two three", ["10023"]),
        ("where is my order 10023", ["10023"]),
        ("my order is 100 23", ["10023"]),
        ("two zero four five one one", ["204511"]),
        ("two hundred four thousand five hundred eleven", ["204511"]),
        ("one hundred and five", ["105"]),
        ("nineteen ninety nine", ["1999"]),
        ("double oh seven", ["007"]),
        ("triple five one", ["5551"]),
        ("zip code three oh three oh one", ["30301"]),
        ("oh two one three nine", ["02139"]),
        ("i bought two hoodies on order one zero zero two three", ["2", "10023"]),
        ("one two three four five", ["12345"]),
        ("twenty one twenty two", ["2122"]),
        ("a hundred", ["100"]),
        ("two thousand five", ["2005"]),
        ("no numbers here", []),
        ("o", []),
    ],
)
def test_digit_runs(text: str, runs: list[str]) -> None:
    assert digit_runs(text) == runs


def test_homophones_only_when_asked() -> None:
    assert digit_runs("one oh oh two for") == ["1002"]
    assert digit_runs("one oh oh two for", homophones=True) == ["10024"]
    assert digit_runs("i want to return it") == []
    assert longest_digit_run("two zero for too won", homophones=True) == "20421"


def test_longest_digit_run() -> None:
    assert longest_digit_run("i have two orders one is one zero zero two three") == "10023"
    assert longest_digit_run("two hoodies", min_len=3) is None


@pytest.mark.parametrize("n", [0, 7, 10, 13, 20, 21, 99, 100, 105, 999, 1000, 10023, 204511, 999999])
def test_number_words_round_trip(n: int) -> None:
    assert digit_runs(number_words(n)) == [str(n)]


def test_number_words_range() -> None:
    with pytest.raises(ValueError, match="0..999999"):
        number_words(1_000_000)


def test_spoken_forms() -> None:
    import datetime as dt

    assert spoken_digits("10023") == "1 0 0 2 3"
    assert say_tracking("1Z999AA1") == "1 Z 9, 9 9 A, A 1"
    assert say_price(59) == "59 dollars"
    assert say_price(1) == "1 dollar"
    assert say_price(19.5) == "19 dollars and 50 cents"
    assert say_price(0.99) == "99 cents"
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 26, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "26th", "111th",
    ]  # fmt: skip
    day = dt.date(2026, 11, 26)
    assert say_date(day) == "Thursday, November 26th"
    assert say_date(day, today=dt.date(2026, 11, 25)) == "tomorrow"
    assert say_date(day, today=dt.date(2025, 12, 1)) == "Thursday, November 26th, 2026"
    assert say_size("M") == "medium" and say_size("10.5") == "10 and a half" and say_size("bath sheet") == "bath sheet"
    assert "extra large" in size_phrases("XL") and "m" not in size_phrases("M")
    assert "ten and a half" in size_phrases("10.5") and "twelve ounce" in size_phrases("12 ounce")
    assert join_and(["a"]) == "a" and join_and(["a", "b", "c"]) == "a, b and c" and join_or(["a", "b"]) == "a or b"
    assert split_sentences("Yes. For 3 dollars! Really?") == ["Yes.", "For 3 dollars!", "Really?"]


@pytest.mark.parametrize(
    ("heard", "written"),
    [
        ("one zero zero two three", "10023"),
        ("ten thousand twenty three", "10023"),
        ("ten oh two three", "10023"),
        ("my order is one oh oh two three", "my order is 10023"),
        ("it is one double oh one nine", "it is 10019"),
        ("size thirty two", "size 32"),
        ("one hundred and five dollars", "105 dollars"),
        ("the blue one", "the blue one"),
        ("one of them", "one of them"),
        ("size ten", "size ten"),
        ("two hoodies", "two hoodies"),
        ("ten and a half", "ten and a half"),
        ("a hundred dollars", "a hundred dollars"),
        ("oh okay", "oh okay"),
        ("oh", "oh"),
    ],
)
def test_numbers_to_digits(heard: str, written: str) -> None:
    """What the recognizer writes: runs of two or more number words as digits, single number words as words."""
    words = numbers_to_digits(heard.split())
    assert " ".join(words) == written
    assert digit_runs(" ".join(words)) == digit_runs(heard)  # the brain reads the same numbers either way


@pytest.mark.parametrize(
    ("heard", "written"),
    [
        ("one", "1"),
        ("oh", "oh"),
        ("one zero for two three", "10423"),
        ("i am looking for my order", "i am looking for my order"),
    ],
)
def test_numbers_to_digits_when_digits_are_expected(heard: str, written: str) -> None:
    assert " ".join(numbers_to_digits(heard.split(), digits_expected=True)) == written


def test_number_spans() -> None:
    spans = number_spans("i bought two hoodies on order one zero zero two three".split())
    assert [(s.start, s.end, s.digits, s.number_words) for s in spans] == [(2, 3, "2", 1), (6, 11, "10023", 5)]
    assert [(s.start, s.end, s.digits) for s in number_spans("pay a hundred and five".split())] == [(1, 5, "105")]
