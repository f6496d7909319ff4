"""Text normalization for speech: each pass on its own and together."""

from __future__ import annotations

import pytest

from voxcart.tts.text import ESPEAK_LETTER_NAMES, normalize_text, spell_out


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Your total is $59.00.", "Your total is 59 dollars."),
        ("$59.99", "59 dollars and 99 cents"),
        ("$1,299.50", "1299 dollars and 50 cents"),
        ("$1 or $0.50 or $0.01", "1 dollar or 50 cents or 1 cent"),
        ("$5.5", "5 dollars and 50 cents"),
        ("€20 and £3.10", "20 euros and 3 pounds and 10 pence"),
        ("$12345", "12345 dollars"),  # a price is never spelled digit by digit
    ],
)
def test_prices(text: str, spoken: str) -> None:
    assert normalize_text(text) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Order 48213 shipped.", "Order 4 8 2, 1 3 shipped."),
        ("Your order number is 4821.", "Your order number is 4 8 2 1."),
        ("Order #10023 is ready", "Order number 1 0 0, 2 3 is ready"),
        ("Tracking 1Z999AA1012", "Tracking 1 Z 9, 9 9 A, A 1 0, 1 2"),
        ("Call 555-123-4567.", "Call 5 5 5, 1 2 3, 4 5 6 7."),
        ("Call (555) 123-4567 now", "Call 5 5 5, 1 2 3, 4 5 6 7 now"),
        ("the card ending in 4242", "the card ending in 4 2 4 2"),
        ("zip code 90210", "zip code 9 0 2, 1 0"),
        ("SKU-10023", "S K U, 1 0 0, 2 3"),
        ("1234567", "1 2 3, 4 5 6 7"),  # never a lone digit at the end
    ],
)
def test_identifiers_are_spelled_in_groups(text: str, spoken: str) -> None:
    assert normalize_text(text) == spoken


@pytest.mark.parametrize(
    "text",
    [
        "I can order 100 shirts.",  # a quantity after "order"
        "Size 10.5, 3 items, 1,299 points, 20% off",
        "The year 2024",
        "We have 12,345 reviews",
        "my iphone15 case",  # lower case: a product name, not an identifier
    ],
)
def test_plain_numbers_are_left_to_the_engine(text: str) -> None:
    assert normalize_text(text) == text


def test_letter_names_apply_only_inside_spelled_identifiers() -> None:
    spoken = normalize_text("A box: order AB12345.", letter_names=ESPEAK_LETTER_NAMES)
    assert spoken == "A box: order eh B 1, 2 3 4 5."


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("It arrives 2024-05-03.", "It arrives May 3rd, 2024."),
        ("On 12/25/2024 we close.", "On December 25th, 2024 we close."),
        ("Delivered on 5/3.", "Delivered on May 3rd."),
        ("shipped 11/22/24", "shipped November 22nd, 2024"),
        ("Due Jan. 5, 2025", "Due January 5th, 2025"),
        ("by June 11", "by June 11th"),
        ("Half off: 1/2 price", "Half off: 1/2 price"),  # a fraction, not a date
        ("2024-13-40", "2024-13-40"),  # not a valid date: left alone
        ("You may 3 times", "You may 3 times"),
    ],
)
def test_dates(text: str, spoken: str) -> None:
    assert normalize_text(text) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Mr. Smith lives at 12 Main St.", "Mister Smith lives at 12 Main Street."),
        ("Visit St. Louis", "Visit Saint Louis"),
        ("Ask Dr. Lee on Oak Dr. today", "Ask Doctor Lee on Oak Drive today"),
        ("Mrs. Lee and Ms. Park", "Missus Lee and Miz Park"),
        ("e.g. shoes, etc.", "for example shoes, et cetera."),
        ("A 12 oz mug and a 1 lb bag", "A 12 ounces mug and a 1 pound bag"),
        ("Tea & cake", "Tea and cake"),
        ("Apt. 4, 5th Ave.", "Apartment 4, 5th Avenue."),
    ],
)
def test_abbreviations(text: str, spoken: str) -> None:
    assert normalize_text(text) == spoken


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("**Great** news 🎉! Your _hoodie_ is `ready`.", "Great news! Your hoodie is ready."),
        ("# Options\n- Red\n- Blue\n", "Options. Red. Blue."),
        ("See [our policy](https://shop.example.com/returns).", "See our policy."),
        ("Go to https://www.example.com/help now", "Go to example.com now"),
        ("Thanks 👍🏽 & bye ❤️", "Thanks and bye"),
        ("1. Shoes\n2. Socks", "Shoes. Socks"),
        ("line one<br>line two", "line one line two"),
        ("| size | price |", "size, price"),
    ],
)
def test_markup_and_emoji_are_stripped(text: str, spoken: str) -> None:
    assert normalize_text(text) == spoken


def test_nothing_speakable_gives_empty() -> None:
    assert normalize_text("🎉🎉 **  ** ") == ""
    assert normalize_text("") == ""


def test_passes_compose() -> None:
    text = "**Order #48213** ($59.00) ships 2024-05-03 to 12 Main St. 📦"
    assert normalize_text(text) == "Order number 4 8 2, 1 3 (59 dollars) ships May 3rd, 2024 to 12 Main Street."


def test_spell_out() -> None:
    assert spell_out("48213") == "4 8 2, 1 3"
    assert spell_out("1234") == "1 2 3 4"
    assert spell_out("12345678") == "1 2 3, 4 5 6, 7 8"
    assert spell_out("ab-12", {"A": "eh"}) == "eh B, 1 2"


def test_rejects_non_text() -> None:
    with pytest.raises(TypeError, match="expected str, got bytes"):
        normalize_text(b"hello")  # type: ignore[arg-type]
