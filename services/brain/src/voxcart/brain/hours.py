"""Opening hours read from the store's spoken hours text, to tell whether the team is there right now.

The seed gives hours as a sentence to be read out ("Monday to Friday, 9 am to 6 pm, and Saturday, 10 am to 4
pm"; "every day from 10 am to 7 pm Pacific time"), not as data. :func:`parse_hours` reads the common ways
shops write them:

- days: names and abbreviations ("Monday", "mon", "Tues", "Saturdays"), ranges ("Monday to Friday",
  "mon-fri", "Monday through Thursday"), lists ("Saturday and Sunday"), "weekdays", "weekends", "every day",
  "daily", "seven days a week";
- times: "9 am", "9:30 pm", "9am", "noon", "midnight", ranges joined by "to", "until", "till", "through" or
  a dash; without am/pm, the opening hour is taken as morning unless it is before 7, and the closing hour as
  the first later one ("9 to 5" is 9 am to 5 pm); "24 hours" is the whole day;
- "closed" with days ("closed on Sundays", "Sunday closed") marks those days closed;
- times without days apply to every day; times may come before or after their days.

Invariants: pure functions of the text; a text with no time range read from it gives ``None`` (unknown hours:
callers of :meth:`OpeningHours.is_open` must decide what unknown means; the dialog transfers); a range past
midnight ("6 pm to 2 am") continues into the next day.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Final

__all__ = ["OpeningHours", "parse_hours"]

_DAY_NAMES: Final[dict[str, int]] = {
    "monday": 0, "mon": 0, "tuesday": 1, "tue": 1, "tues": 1, "wednesday": 2, "wed": 2, "thursday": 3, "thu": 3,
    "thur": 3, "thurs": 3, "friday": 4, "fri": 4, "saturday": 5, "sat": 5, "sunday": 6, "sun": 6,
}  # fmt: skip
_DAY_GROUPS: Final[dict[str, frozenset[int]]] = {
    "weekdays": frozenset(range(5)),
    "weekday": frozenset(range(5)),
    "weekends": frozenset({5, 6}),
    "weekend": frozenset({5, 6}),
    "daily": frozenset(range(7)),
    "everyday": frozenset(range(7)),
}
_EVERY_DAY: Final = (("every", "day"), ("seven", "days"), ("7", "days"), ("all", "week"))
_RANGE_WORDS: Final = frozenset({"to", "until", "till", "til", "through", "thru", "-"})
_TOKEN: Final = re.compile(r"\d{1,2}(?::\d{2})?|[a-z]+|-")
_WHOLE_DAY: Final = 24 * 60


@dataclass(frozen=True)
class _Time:
    minutes: int
    meridiem: str | None  # "am", "pm" or None when not said


@dataclass
class _Group:
    days: set[int] | None = None
    ranges: list[tuple[int, int]] = field(default_factory=list)
    closed: bool = False
    time_first: bool = False


@dataclass(frozen=True)
class OpeningHours:
    """When a shop is open: minutes-of-day ranges ``[start, end)`` per weekday (Monday is 0).

    Attributes:
        week: for each weekday, its open ranges (empty: closed that day).
    """

    week: tuple[tuple[tuple[int, int], ...], ...]

    def is_open(self, at: dt.datetime) -> bool:
        """Whether ``at`` (a time in the store's timezone) falls in an open range."""
        minute = at.hour * 60 + at.minute
        return any(start <= minute < end for start, end in self.week[at.weekday()])


def _tokens(text: str) -> list[str]:
    lowered = text.lower().replace("\u2013", "-").replace("\u2014", "-").replace(".", "")
    lowered = re.sub(r"(\d)(am|pm)\b", r"\1 \2", lowered)
    return _TOKEN.findall(lowered)


def _day(word: str) -> int | None:
    if word in _DAY_NAMES:
        return _DAY_NAMES[word]
    if word.endswith("s") and word[:-1] in _DAY_NAMES and len(word) > 4:
        return _DAY_NAMES[word[:-1]]
    return None


def _read_days(words: list[str], i: int) -> tuple[set[int], int] | None:
    """Days starting at ``words[i]``: a group word, "every day", or a day with an optional range to another."""
    word = words[i]
    if word in _DAY_GROUPS:
        return set(_DAY_GROUPS[word]), i + 1
    if any(tuple(words[i : i + len(p)]) == p for p in _EVERY_DAY):
        end = i + 2
        if words[end : end + 2] == ["a", "week"]:
            end += 2
        return set(range(7)), end
    first = _day(word)
    if first is None:
        return None
    if i + 2 < len(words) and words[i + 1] in _RANGE_WORDS and (last := _day(words[i + 2])) is not None:
        span = {(first + k) % 7 for k in range((last - first) % 7 + 1)}
        return span, i + 3
    return {first}, i + 1


def _read_time(words: list[str], i: int) -> tuple[_Time, int] | None:
    word = words[i]
    if word == "noon":
        return _Time(12 * 60, "pm"), i + 1
    if word == "midnight":
        return _Time(0, "am"), i + 1
    if not word[0].isdigit():
        return None
    hour, _, minute = word.partition(":")
    h, m = int(hour), int(minute or 0)
    if h > 24 or m > 59:
        return None
    meridiem = words[i + 1] if i + 1 < len(words) and words[i + 1] in ("am", "pm") else None
    return _Time(h * 60 + m, meridiem), i + (2 if meridiem else 1)


def _clock(t: _Time, *, pm_default: bool) -> int:
    h, m = divmod(t.minutes, 60)
    if t.meridiem == "am":
        h = 0 if h == 12 else h
    elif t.meridiem == "pm":
        h = h if h == 12 else h + 12
    elif pm_default and h < 12:
        h += 12
    return h * 60 + m


def _range(start: _Time, end: _Time) -> tuple[int, int]:
    if start.meridiem is None and end.meridiem is not None:
        # "9 to 5 pm": the opening hour is in the morning when reading it so keeps the range in order
        as_pm = _clock(_Time(start.minutes, end.meridiem), pm_default=False)
        start = _Time(start.minutes, end.meridiem if as_pm < _clock(end, pm_default=False) else "am")
    opening = _clock(start, pm_default=start.minutes < 7 * 60)
    closing = _clock(end, pm_default=False)
    if end.meridiem is None:
        while closing <= opening and closing < 12 * 60:
            closing += 12 * 60
    if end.meridiem == "am" and end.minutes in (0, 12 * 60):  # "to midnight"
        closing = _WHOLE_DAY
    return opening, closing


def parse_hours(text: str | None) -> OpeningHours | None:
    """Read opening hours from the store's hours sentence (see the module docstring).

    Args:
        text: the seed's ``store.hours``, e.g. "Monday to Friday, 9 am to 6 pm".

    Returns:
        The hours, or None when no time range could be read (unknown).
    """
    if not text:
        return None
    words = _tokens(text)
    groups: list[_Group] = []
    group = _Group()
    closed_next = False
    found_time = False
    i = 0
    while i < len(words):
        word = words[i]
        if word == "closed":
            if group.days is not None and not group.ranges:
                group.closed = True
            else:
                closed_next = True
            i += 1
            continue
        if word in ("24", "twenty") and words[i + 1 : i + 2] in (["hours"], ["four"]):
            group.ranges.append((0, _WHOLE_DAY))
            found_time = True
            i += 2
            continue
        days = _read_days(words, i)
        if days is not None:
            span, i = days
            if closed_next:
                groups.append(group)
                group = _Group(days=span, closed=True)
                closed_next = False
            elif group.days is not None and (group.ranges or group.closed):
                groups.append(group)
                group = _Group(days=span)
            elif group.days is not None:
                group.days |= span
            else:
                group.days = span
            continue
        start = _read_time(words, i)
        if start is not None:
            t0, j = start
            if j < len(words) and words[j] in _RANGE_WORDS and (end := _read_time(words, j + 1)) is not None:
                t1, i = end
                if group.time_first and group.days is not None:
                    groups.append(group)
                    group = _Group()
                if not group.ranges and group.days is None:
                    group.time_first = True
                group.ranges.append(_range(t0, t1))
                found_time = True
                continue
            i = j
            continue
        i += 1
    groups.append(group)
    if not found_time:
        return None
    week: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    for g in groups:
        for day in sorted(g.days if g.days is not None else range(7)):
            if g.closed:
                week[day] = []
                continue
            for opening, closing in g.ranges:
                if closing > opening:
                    week[day].append((opening, min(closing, _WHOLE_DAY)))
                else:  # past midnight: into the next morning
                    week[day].append((opening, _WHOLE_DAY))
                    week[(day + 1) % 7].append((0, closing))
    return OpeningHours(week=tuple(tuple(sorted(ranges)) for ranges in week))
