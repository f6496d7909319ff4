"""Barge-in measurements from the simulator's message timeline (:attr:`CallResult.wire`).

Every time is on the simulator's clock (seconds from the call's first stream); the gateway is on loopback, so a
message's arrival time is the gateway's send time to within the socket's latency. Definitions, per
:class:`~voxcart.cli.simulator.Overlap` item (the caller's audio laid over the agent's reply):

- **onset**: the moment the simulator sent the item's first voiced frame (``voice_start``); the item's window runs
  from its onset to the next caller item's onset (or the end of the call).
- **overlapped**: the agent's audio was playing at the onset. Items that were not (the reply had already ended)
  are counted apart and enter no rate.
- **turn of a media frame**: the turn named by the first ``mark`` received after it with no ``clear`` in between
  (the gateway sends a sentence's mark right after the sentence's audio, marks named ``t<turn>-s<seq>``).
  Media followed by no mark before a ``clear`` or the end (a sentence cut by the next ``clear``) is
  *unattributed*, unless a mark of a later turn than the cleared ones came before it after the ``clear``
  (the gateway sends turns in order, so it belongs to a new turn).
- **reaction** (interruptions): the first ``clear`` received in the item's window minus the onset. A ``clear``
  received before the onset is not a reaction to it.
- **stale audio** (after every ``clear``): bytes of media received after the ``clear`` (and before the next
  one) whose turn is one the gateway had already marked before the ``clear`` (a turn ``<=`` the highest turn
  of any mark received before it) — audio of a cleared turn. Unattributed bytes after a ``clear`` are reported
  apart (they cannot be told from a new turn's audio). Blind spot, kept explicit: a leaked rest of a turn's
  *first* sentence whose mark was not yet sent at the ``clear`` looks like a new turn.
- **missed interruption**: an overlapped interruption after whose onset voiced media of the turn that was
  playing at the onset (the turn of the last voiced frame received before it; for a sentence a ``clear``
  later cut, the media with no later turn's mark in between) kept arriving more than :data:`MISS_AFTER_S`
  later with no ``clear`` in between.
- **pauses**: the caller's silences; counted are the ones the agent spoke into (a re-prompt) and the ``clear``
  received during them (nothing to react to).
- **false interruption** (backchannels, noise): a ``clear`` received between the onset and
  :data:`FALSE_WINDOW_S` after the item's last voiced frame (within its window), or a **stop**: the agent's
  media stopped for at least :data:`STOP_GAP_S` starting in that span and then resumed with the same turn's
  audio (a pause and a repeat instead of a ``clear``).

Invariants: the functions here are pure (no I/O, no clock); every rate states its denominator.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from voxcart.cli.simulator import CallResult, WireEvent

__all__ = [
    "FALSE_WINDOW_S",
    "MISS_AFTER_S",
    "STOP_GAP_S",
    "ItemOutcome",
    "Summary",
    "histogram_delta",
    "histogram_quantile",
    "measure_call",
    "media_turns",
    "parse_mark",
    "parse_histogram",
    "stale_after_clear",
    "summarize",
]

MISS_AFTER_S: Final = 1.0
"""Agent audio of the interrupted turn still arriving this long after the onset, without a clear: missed."""
FALSE_WINDOW_S: Final = 2.0
"""A clear (or stop) up to this long after a backchannel or noise ended is blamed on it."""
STOP_GAP_S: Final = 0.5
"""A silence in the agent's media at least this long, followed by the same turn's audio, is a stop."""

_MARK = re.compile(r"t(\d+)-s(\d+)")


def parse_mark(name: str) -> tuple[int, int] | None:
    """``t<turn>-s<seq>`` -> ``(turn, seq)``; ``None`` for any other name."""
    m = _MARK.fullmatch(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def media_turns(wire: Sequence[WireEvent]) -> list[int | None]:
    """For each event of ``wire``, the turn of the media frame at that index (``None`` for other events and for
    unattributed media): the turn of the first mark after it with no clear in between."""
    out: list[int | None] = [None] * len(wire)
    current: int | None = None
    for i in range(len(wire) - 1, -1, -1):
        event = wire[i]
        if event.kind == "clear":
            current = None
        elif event.kind == "mark":
            parsed = parse_mark(event.name)
            current = parsed[0] if parsed else current
        elif event.kind == "media":
            out[i] = current
    return out


def stale_after_clear(
    wire: Sequence[WireEvent], index: int, turns: Sequence[int | None] | None = None
) -> tuple[int, int]:
    """Stale and unattributed media bytes after the clear at ``wire[index]`` (see the module docstring).

    Args:
        wire: a call's timeline.
        index: the index of a ``clear`` event in it.
        turns: :func:`media_turns` of ``wire``, when already computed.

    Returns:
        ``(stale_bytes, unattributed_bytes)``.

    Raises:
        ValueError: ``wire[index]`` is not a clear.
    """
    if wire[index].kind != "clear":
        raise ValueError(f"stale_after_clear: event {index} is a {wire[index].kind!r}, not a clear")
    turns = media_turns(wire) if turns is None else turns
    marked = [p[0] for e in wire[:index] if e.kind == "mark" and (p := parse_mark(e.name)) is not None]
    highest = max(marked, default=-1)
    stale = unattributed = 0
    floor = -1  # the gateway sends turns in order: media comes from a turn >= any mark received before it
    for i in range(index + 1, len(wire)):
        event = wire[i]
        if event.kind == "clear":
            break
        if event.kind == "mark" and (parsed := parse_mark(event.name)) is not None:
            floor = max(floor, parsed[0])
        if event.kind != "media":
            continue
        turn = turns[i]
        if turn is None:
            unattributed += event.nbytes if floor <= highest else 0
        elif turn <= highest:
            stale += event.nbytes
    return stale, unattributed


@dataclass(frozen=True)
class ItemOutcome:
    """What one overlapping caller item did to the agent. Times are seconds on the simulator's clock."""

    call_sid: str
    turn: int
    kind: str
    text: str
    onset_s: float | None
    end_s: float | None
    overlapped: bool
    clear_s: float | None
    """The first clear received in the item's window, if any."""
    reaction_s: float | None
    """Interruptions: ``clear_s - onset_s``."""
    stale_bytes: int
    """Stale media after that clear."""
    unattributed_bytes: int
    missed: bool
    stopped: bool
    false_interruption: bool

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _window_end(wire: Sequence[WireEvent], onset: float, turn: int) -> float:
    starts = [e.t for e in wire if e.kind == "voice_start" and e.t > onset and e.turn != turn]
    return min(starts, default=math.inf)


def measure_call(result: CallResult) -> list[ItemOutcome]:
    """One :class:`ItemOutcome` per interruption, backchannel and noise item of the call, in call order."""
    wire = result.wire
    turns = media_turns(wire)
    outcomes: list[ItemOutcome] = []
    for turn in result.turns:
        if turn.kind not in ("interruption", "backchannel", "noise"):
            continue
        onset, end = turn.voice_start_s, turn.caller_end_s
        base: dict[str, Any] = {
            "call_sid": result.call_sid,
            "turn": turn.index,
            "kind": turn.kind,
            "text": turn.caller,
            "onset_s": onset,
            "end_s": end,
            "overlapped": bool(turn.overlapped),
        }
        if onset is None or not turn.overlapped:
            none: dict[str, Any] = {"clear_s": None, "reaction_s": None, "stale_bytes": 0, "unattributed_bytes": 0}
            outcomes.append(ItemOutcome(**base, **none, missed=False, stopped=False, false_interruption=False))
            continue
        window_end = _window_end(wire, onset, turn.index)
        clear_at = next((i for i, e in enumerate(wire) if e.kind == "clear" and onset <= e.t < window_end), None)
        clear_s = wire[clear_at].t if clear_at is not None else None
        stale, unattributed = stale_after_clear(wire, clear_at, turns) if clear_at is not None else (0, 0)
        missed = stopped = false = False
        if turn.kind == "interruption":
            missed = _kept_playing(wire, turns, onset, min(clear_s if clear_s is not None else math.inf, window_end))
        else:
            blame_end = min((end if end is not None else onset) + FALSE_WINDOW_S, window_end)
            stopped = _stopped(wire, turns, onset, blame_end, window_end)
            false = (clear_s is not None and clear_s <= blame_end) or stopped
        outcomes.append(
            ItemOutcome(
                **base,
                clear_s=clear_s,
                reaction_s=clear_s - onset if turn.kind == "interruption" and clear_s is not None else None,
                stale_bytes=stale,
                unattributed_bytes=unattributed,
                missed=missed,
                stopped=stopped,
                false_interruption=false,
            )
        )
    return outcomes


def _kept_playing(wire: Sequence[WireEvent], turns: Sequence[int | None], onset: float, until: float) -> bool:
    """Whether voiced media of the turn playing at ``onset`` was received between ``onset + MISS_AFTER_S`` and
    ``until``. Media of that turn is media attributed to it, or unattributed media (a sentence a later clear cut)
    with no mark of a later turn received since the onset; if the audio playing at the onset was itself
    unattributed, only unattributed media with no mark at all since the onset."""
    playing = [turns[i] for i, e in enumerate(wire) if e.kind == "media" and e.voiced and e.t < onset]
    playing_turn = playing[-1] if playing else None
    floor = -1
    for i, e in enumerate(wire):
        if e.t <= onset or e.t >= until:
            continue
        if e.kind == "mark" and (parsed := parse_mark(e.name)) is not None:
            floor = max(floor, parsed[0])
        if e.kind != "media" or not e.voiced or e.t <= onset + MISS_AFTER_S:
            continue
        turn = turns[i]
        if playing_turn is not None and (turn == playing_turn or (turn is None and floor <= playing_turn)):
            return True
        if playing_turn is None and turn is None and floor == -1:
            return True
    return False


def _stopped(
    wire: Sequence[WireEvent], turns: Sequence[int | None], start: float, blame_end: float, window_end: float
) -> bool:
    """A gap of ``STOP_GAP_S`` in the agent's media, beginning in ``[start, blame_end]``, then the same turn again."""
    media = [(e.t, turns[i]) for i, e in enumerate(wire) if e.kind == "media" and e.t < window_end]
    for (t0, turn0), (t1, turn1) in zip(media, media[1:], strict=False):
        if start <= t0 <= blame_end and t1 - t0 >= STOP_GAP_S and turn0 is not None and turn0 == turn1:
            return True
    return False


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


@dataclass
class Summary:
    """The bench's numbers over many items (rates are ``None`` when their denominator is 0)."""

    interruptions: int = 0
    """Overlapped interruption items (the denominator of the interruption numbers)."""
    reactions_ms: list[float] = field(default_factory=list)
    reaction_p50_ms: float | None = None
    reaction_p95_ms: float | None = None
    reaction_max_ms: float | None = None
    clears: int = 0
    """All clears received in the bench's calls."""
    stale_bytes_total: int = 0
    """Stale bytes after every clear of every call."""
    stale_bytes_per_interruption: float | None = None
    unattributed_bytes_total: int = 0
    missed: int = 0
    missed_rate: float | None = None
    backchannels: int = 0
    backchannel_false: int = 0
    backchannel_false_rate: float | None = None
    noises: int = 0
    noise_false: int = 0
    noise_false_rate: float | None = None
    not_overlapping: dict[str, int] = field(default_factory=dict)
    """Items whose onset came after the agent's reply had ended, by kind (in no rate)."""
    stops: dict[str, int] = field(default_factory=dict)
    """False interruptions that were a stop and a resume (no clear), by kind."""
    pauses: int = 0
    pauses_agent_spoke: int = 0
    """Pauses during or after which the agent said something (a re-prompt), before the caller's next item."""
    pause_clears: int = 0
    """Clears received during pauses (the caller was silent: nothing to react to)."""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def summarize(outcomes: Iterable[ItemOutcome], calls: Iterable[CallResult]) -> Summary:
    """Aggregate item outcomes; stale bytes are counted after *every* clear of ``calls`` (not only reactions)."""
    s = Summary()
    items = list(outcomes)
    for item in items:
        if not item.overlapped:
            s.not_overlapping[item.kind] = s.not_overlapping.get(item.kind, 0) + 1
            continue
        if item.stopped:
            s.stops[item.kind] = s.stops.get(item.kind, 0) + 1
        if item.kind == "interruption":
            s.interruptions += 1
            s.missed += item.missed
            if item.reaction_s is not None:
                s.reactions_ms.append(round(item.reaction_s * 1000, 1))
        elif item.kind == "backchannel":
            s.backchannels += 1
            s.backchannel_false += item.false_interruption
        elif item.kind == "noise":
            s.noises += 1
            s.noise_false += item.false_interruption
    for call in calls:
        for turn in call.turns:
            if turn.kind == "pause":
                s.pauses += 1
                s.pause_clears += turn.clears
                s.pauses_agent_spoke += turn.agent_start_s is not None
        turns = media_turns(call.wire)
        for i, event in enumerate(call.wire):
            if event.kind == "clear":
                s.clears += 1
                stale, unattributed = stale_after_clear(call.wire, i, turns)
                s.stale_bytes_total += stale
                s.unattributed_bytes_total += unattributed
    s.reaction_p50_ms = _percentile(s.reactions_ms, 50)
    s.reaction_p95_ms = _percentile(s.reactions_ms, 95)
    s.reaction_max_ms = max(s.reactions_ms, default=None)
    s.stale_bytes_per_interruption = s.stale_bytes_total / s.interruptions if s.interruptions else None
    s.missed_rate = _rate(s.missed, s.interruptions)
    s.backchannel_false_rate = _rate(s.backchannel_false, s.backchannels)
    s.noise_false_rate = _rate(s.noise_false, s.noises)
    return s


_BUCKET = re.compile(r'^(\w+)_bucket\{(?:[^}]*,)?le="([^"]+)"(?:,[^}]*)?\}\s+(\S+)$')


def parse_histogram(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts ``{le: count}`` of histogram ``name`` in a Prometheus text exposition."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        m = _BUCKET.match(line.strip())
        if m and m.group(1) == name:
            le = math.inf if m.group(2) == "+Inf" else float(m.group(2))
            buckets[le] = buckets.get(le, 0.0) + float(m.group(3))
    return buckets


def histogram_delta(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    """The buckets observed between two scrapes (a bucket missing before counts from 0)."""
    return {le: count - before.get(le, 0.0) for le, count in sorted(after.items())}


def histogram_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` (0..1): an upper estimate; ``None`` if empty."""
    ordered = sorted(buckets.items())
    total = ordered[-1][1] if ordered else 0.0
    if total <= 0:
        return None
    for le, count in ordered:
        if count >= q * total:
            return le
    return math.inf
