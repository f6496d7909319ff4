"""The barge-in bench's calls: which replies the caller talks over, with what, and when.

A full call (:func:`plan_call`) interrupts the greeting and three long replies (the return policy, about 12 s,
and the shipping options), lays two backchannels and two noise bursts over other long replies, and pauses once
for 3 s: 4 interruptions, 2 backchannels, 2 noise bursts per call. Interruptions come early, mid or late in the
reply (:data:`POSITIONS`, ms after the caller first heard it), rotating with the call's index so any number of
calls spreads them evenly; the greeting is only interrupted early or mid (it is about 7 s long). An overlapping
item always follows a plain line or the greeting, never another overlap, so "the reply it talks over" is
unambiguous.

Invariants: the plan depends only on the call's index (and ``quick``); each :class:`Planned` entry matches,
in order, the call's overlapping items; caller audio is synthesized once per distinct text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from voxcart.cli.simulator import Line, Overlap, OverlapKind, Pause

from .bargein_sounds import BACKCHANNELS, NOISES, noise_burst

__all__ = ["POSITIONS", "CallPlan", "Planned", "Voice", "plan_call"]

POSITIONS: Final = {"early": 500.0, "mid": 2500.0, "late": 5000.0}
"""Where an interruption starts: ms after the caller first heard the reply."""
LONG_REPLIES: Final = ("what is your return policy", "what are your shipping options")
INTERRUPTIONS: Final = (
    "what are your opening hours",
    "do you have the blue hoodie in medium",
    "wait what are your opening hours",
    "is the blue hoodie in stock in medium",
)
PAUSE_S: Final = 3.0

Voice = Callable[[str], bytes]
"""Caller text -> μ-law 8 kHz speech (the bench passes a caching wrapper of ``synthesize_caller``)."""


@dataclass(frozen=True)
class Planned:
    """One overlapping item as planned: its kind, where it starts and what it is."""

    kind: OverlapKind
    at_ms: float
    label: str
    """The words, or the noise's kind."""
    position: str = ""
    """Interruptions: ``early``, ``mid`` or ``late``."""


@dataclass(frozen=True)
class CallPlan:
    index: int
    items: tuple[Line | Overlap | Pause, ...]
    planned: tuple[Planned, ...]


def plan_call(index: int, voice: Voice, *, quick: bool = False) -> CallPlan:
    """The items of bench call ``index`` (see the module docstring).

    Args:
        index: the call's number in the bench, from 0.
        voice: synthesizes the caller's lines and backchannels.
        quick: a short call instead: 2 interruptions (greeting early, a reply mid), 1 backchannel, 1 noise
            burst, a 2 s pause.

    Raises:
        ValueError: ``index`` is negative.
    """
    if index < 0:
        raise ValueError(f"plan_call: index must be >= 0; got {index}")
    items: list[Line | Overlap | Pause] = []
    planned: list[Planned] = []

    def line(text: str) -> None:
        items.append(Line(voice(text), text))

    def interrupt(k: int, position: str) -> None:
        text = INTERRUPTIONS[(index + k) % len(INTERRUPTIONS)]
        at = POSITIONS[position]
        items.append(Overlap(voice(text), "interruption", at, text))
        planned.append(Planned("interruption", at, text, position))

    def over(kind: OverlapKind, k: int) -> None:
        at = 1500.0 + (index * 700 + k * 900) % 2500
        if kind == "backchannel":
            text = BACKCHANNELS[(index + k) % len(BACKCHANNELS)]
            items.append(Overlap(voice(text), kind, at, text))
        else:
            text = NOISES[(index + k) % len(NOISES)]
            items.append(Overlap(noise_burst(text, seed=index * 10 + k), kind, at, f"<{text}>"))
        planned.append(Planned(kind, at, text))

    names = list(POSITIONS)
    interrupt(0, names[index % 2])
    if quick:
        line(LONG_REPLIES[0])
        over("backchannel", 1)
        line(LONG_REPLIES[1])
        over("noise", 2)
        line(LONG_REPLIES[0])
        interrupt(3, "mid")
        items.append(Pause(2.0))
        return CallPlan(index, tuple(items), tuple(planned))
    line(LONG_REPLIES[0])
    over("backchannel", 1)
    line(LONG_REPLIES[1])
    interrupt(2, names[(index + 1) % 3])
    line(LONG_REPLIES[0])
    over("noise", 3)
    items.append(Pause(PAUSE_S))
    line(LONG_REPLIES[1])
    interrupt(4, names[(index + 2) % 3])
    line(LONG_REPLIES[0])
    over("backchannel", 5)
    line(LONG_REPLIES[1])
    over("noise", 6)
    line(LONG_REPLIES[0])
    interrupt(7, names[index % 3])
    return CallPlan(index, tuple(items), tuple(planned))
