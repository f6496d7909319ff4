"""Opening hours read from the store's spoken hours sentence."""

from __future__ import annotations

import datetime as dt

import pytest

from voxcart.brain.hours import OpeningHours, parse_hours

MONDAY = dt.date(2026, 11, 23)


def _at(hours: OpeningHours, weekday: int, hhmm: str) -> bool:
    h, m = (int(x) for x in hhmm.split(":"))
    day = MONDAY + dt.timedelta(days=weekday)
    return hours.is_open(dt.datetime(day.year, day.month, day.day, h, m))


def _parsed(text: str) -> OpeningHours:
    hours = parse_hours(text)
    assert hours is not None, text
    return hours


def test_demo_store_hours() -> None:
    hours = _parsed("Monday to Friday, 9 am to 6 pm, and Saturday, 10 am to 4 pm")
    assert _at(hours, 0, "09:00") and _at(hours, 4, "17:59") and _at(hours, 5, "10:00") and _at(hours, 5, "15:30")
    assert not _at(hours, 0, "08:59") and not _at(hours, 4, "18:00") and not _at(hours, 5, "16:00")
    assert not any(_at(hours, 6, t) for t in ("00:00", "09:00", "12:00", "23:59"))


def test_every_day_with_a_time_zone_word() -> None:
    hours = _parsed("every day from 10 am to 7 pm Pacific time")
    assert all(_at(hours, d, "10:00") and _at(hours, d, "18:59") for d in range(7))
    assert not any(_at(hours, d, "19:00") or _at(hours, d, "09:59") for d in range(7))


@pytest.mark.parametrize(
    ("text", "open_at", "closed_at"),
    [
        ("Mon-Fri 9-5", [(0, "09:00"), (4, "16:59")], [(0, "17:00"), (5, "12:00"), (0, "08:00")]),
        ("weekdays 8:30am to 5:30pm", [(2, "08:30"), (2, "17:29")], [(2, "08:29"), (2, "17:30"), (6, "12:00")]),
        ("9 am to 5 pm Monday through Thursday, 10 to 2 Friday", [(3, "16:00"), (4, "13:59")], [(4, "14:00")]),
        ("daily, noon to midnight", [(6, "12:00"), (0, "23:59")], [(1, "11:59")]),
        ("Monday to Saturday 9 am to 6 pm, closed on Sundays", [(5, "09:00")], [(6, "10:00")]),
        ("Tuesday to Sunday, 6 pm to 2 am", [(1, "18:00"), (2, "01:59"), (0, "01:00")], [(1, "02:00"), (0, "18:00")]),
        ("24 hours a day, 7 days a week", [(0, "00:00"), (6, "23:59")], []),
        ("Saturday and Sunday 10am-4pm", [(5, "10:00"), (6, "15:59")], [(0, "12:00")]),
        ("9 to 5 pm", [(0, "09:00")], [(0, "17:00"), (0, "08:00")]),
        ("1 to 5 pm on weekends", [(5, "13:00")], [(5, "12:00"), (2, "14:00")]),
    ],
)
def test_common_forms(text: str, open_at: list[tuple[int, str]], closed_at: list[tuple[int, str]]) -> None:
    hours = _parsed(text)
    for day, time in open_at:
        assert _at(hours, day, time), (text, day, time)
    for day, time in closed_at:
        assert not _at(hours, day, time), (text, day, time)


@pytest.mark.parametrize("text", [None, "", "by appointment", "Monday to Friday", "call us anytime"])
def test_unknown_hours_are_none(text: str | None) -> None:
    assert parse_hours(text) is None
