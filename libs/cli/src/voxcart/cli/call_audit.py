"""Audit a finished simulated call against the failure invariants: nothing the caller said lost or reordered, nothing
the agent decided or said twice, every chunk of a reply heard exactly once.

The failure suites (``tests/test_e2e_failures_*.py``) run one after every fault they inject, and the same audit, run
with a guard switched off (``VOXCART_UNSAFE_DISABLE``), must report what the guard prevents: that is how the suite
shows its checks have teeth. It reads the call's streams (never writes) through the bus and what the simulated caller
observed (:class:`~voxcart.cli.simulator.CallResult`).

Invariants checked (each breach is a :class:`Violation` of one ``kind``):

- ``caller_audio``: ``audio.in`` holds, per media-stream generation, every Twilio chunk from the first one on without a
  gap (ids are ``<gen>-<chunk>``, so Redis itself keeps them in order), up to within ``tail_frames`` of what the
  caller sent.
- ``caller_turns``: one caller record per spoken line, in the order the caller spoke (first voiced frame times
  strictly increasing).
- ``agent_turns``: the agent's turn records are turns 1..n, each once.
- ``say``: each sentence (turn, seq) is decided once, sentences in order.
- ``audio_out``: each chunk (turn, seq, k) is written once, in order.
- ``marks``: the gateway sends each sentence's mark once.
- ``heard``: every sentence whose mark echoed as played reached the caller whole and once: the bytes received
  between its mark and the previous one are exactly the bytes of its chunks in ``audio.out``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from voxcart.common import events as ev
from voxcart.common.audio import FRAME_BYTES
from voxcart.common.bus import Bus, keys, parse_id
from voxcart.gateway.twilio.pacer import parse_mark_name

from .simulator import CallResult

__all__ = ["CallStreams", "Violation", "audit_call", "read_call"]


@dataclass(frozen=True)
class Violation:
    """One breach of an invariant: ``kind`` names the invariant (see the module doc), ``detail`` what was seen."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass
class CallStreams:
    """A call's streams as read after the call (stream order)."""

    sid: str
    audio_in: list[str] = field(default_factory=list)
    """Entry ids of ``audio.in``."""
    says: list[ev.Say] = field(default_factory=list)
    chunks: list[ev.AudioChunk] = field(default_factory=list)
    turns: list[ev.TurnRecord] = field(default_factory=list)
    events: list[ev.Event] = field(default_factory=list)

    @property
    def agent_turns(self) -> list[ev.TurnRecord]:
        return [t for t in self.turns if t.speaker == "agent"]

    @property
    def caller_turns(self) -> list[ev.TurnRecord]:
        return [t for t in self.turns if t.speaker == "caller"]


async def read_call(bus: Bus, sid: str) -> CallStreams:
    """Read everything the audit needs of call ``sid``."""
    streams = CallStreams(sid, [e.id for e in await bus.range(keys.audio_in(sid))])
    for entry in await bus.range(keys.tts(sid)):
        if isinstance(say := ev.decode(entry.data), ev.Say):
            streams.says.append(say)
    for entry in await bus.range(keys.audio_out(sid)):
        if isinstance(chunk := ev.decode(entry.data), ev.AudioChunk):
            streams.chunks.append(chunk)
    for entry in await bus.range(keys.turns(sid)):
        if isinstance(turn := ev.decode(entry.data), ev.TurnRecord):
            streams.turns.append(turn)
    streams.events = [ev.decode(entry.data) for entry in await bus.range(keys.events(sid))]
    return streams


def audit_call(streams: CallStreams, result: CallResult, *, spoken: int, tail_frames: int = 50) -> list[Violation]:
    """Every invariant the call breaks (empty: none).

    Args:
        streams: the call's streams (:func:`read_call`).
        result: what the simulated caller observed.
        spoken: how many lines the caller spoke (each must become one caller record).
        tail_frames: frames at the end of the call that may be missing from ``audio.in`` (sent while the socket
            closed).
    """
    found: list[Violation] = []
    found += _caller_audio(streams, len(result.caller_track) // FRAME_BYTES, tail_frames)
    found += _caller_turns(streams, spoken)
    found += _agent_turns(streams)
    found += _says(streams)
    found += _audio_out(streams)
    found += _heard(streams, result)
    return found


def _caller_audio(streams: CallStreams, sent: int, tail_frames: int) -> list[Violation]:
    found: list[Violation] = []
    by_gen: dict[int, list[int]] = {}
    for entry_id in streams.audio_in:
        gen, chunk = parse_id(entry_id)
        by_gen.setdefault(gen, []).append(chunk)
    total = 0
    for gen, chunks in sorted(by_gen.items()):
        total += len(chunks)
        expected = list(range(chunks[0], chunks[-1] + 1))
        if chunks != expected:
            missing = sorted(set(expected) - set(chunks))
            found.append(Violation("caller_audio", f"gen {gen}: {len(missing)} frames missing, first {missing[:5]}"))
        if gen == min(by_gen) and chunks[0] != 1:
            found.append(Violation("caller_audio", f"gen {gen} starts at chunk {chunks[0]}, not 1"))
    if total < sent - tail_frames:
        found.append(Violation("caller_audio", f"{total} frames in audio.in, the caller sent {sent}"))
    return found


def _caller_turns(streams: CallStreams, spoken: int) -> list[Violation]:
    found: list[Violation] = []
    callers = streams.caller_turns
    texts = [t.text for t in callers]
    if len(callers) != spoken:
        found.append(Violation("caller_turns", f"{len(callers)} caller records for {spoken} spoken lines: {texts}"))
    starts = [t.started for t in callers]
    if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
        found.append(Violation("caller_turns", f"caller records out of speaking order: {texts}"))
    return found


def _agent_turns(streams: CallStreams) -> list[Violation]:
    numbers = [t.turn_no for t in streams.agent_turns]
    found = [
        Violation("agent_turns", f"agent turn {n} recorded {count} times")
        for n, count in sorted(Counter(numbers).items())
        if count > 1
    ]
    if sorted(set(numbers)) != list(range(1, len(set(numbers)) + 1)):
        found.append(Violation("agent_turns", f"agent turns are not 1..n: {numbers}"))
    return found


def _says(streams: CallStreams) -> list[Violation]:
    keys_ = [(s.turn_no, s.seq) for s in streams.says]
    found = [
        Violation("say", f"sentence {key} decided {count} times")
        for key, count in sorted(Counter(keys_).items())
        if count > 1
    ]
    if keys_ != sorted(keys_):
        found.append(Violation("say", "sentences out of order"))
    return found


def _audio_out(streams: CallStreams) -> list[Violation]:
    keys_ = [(c.turn_no, c.seq, c.k) for c in streams.chunks]
    dupes = sorted(key for key, count in Counter(keys_).items() if count > 1)
    found = [Violation("audio_out", f"{len(dupes)} chunks written twice, first {dupes[:3]}")] if dupes else []
    if not dupes and keys_ != sorted(keys_):
        found.append(Violation("audio_out", "chunks out of order"))
    return found


def _heard(streams: CallStreams, result: CallResult) -> list[Violation]:
    written: dict[tuple[int, int], int] = {}
    seen: set[tuple[int, int, int]] = set()
    for c in streams.chunks:
        if (c.turn_no, c.seq, c.k) not in seen:
            seen.add((c.turn_no, c.seq, c.k))
            written[(c.turn_no, c.seq)] = written.get((c.turn_no, c.seq), 0) + len(c.payload)
    found: list[Violation] = []
    received: dict[str, int] = {}
    pending = 0
    marks: Counter[str] = Counter()
    played: set[str] = set()
    for event in result.wire:
        if event.kind == "media":
            pending += event.nbytes
        elif event.kind == "clear":
            pending = 0
        elif event.kind == "mark":
            marks[event.name] += 1
            received[event.name] = received.get(event.name, 0) + pending
            pending = 0
        elif event.kind == "echo" and not event.cleared:
            played.add(event.name)
    found += [Violation("marks", f"mark {name} sent {count} times") for name, count in marks.items() if count > 1]
    for name in sorted(played):
        try:
            sentence = parse_mark_name(name)
        except ValueError:
            continue
        if received.get(name, 0) != written.get(sentence, 0):
            found.append(
                Violation(
                    "heard",
                    f"sentence {sentence}: the caller got {received.get(name, 0)} bytes, audio.out holds "
                    f"{written.get(sentence, 0)}",
                )
            )
    return found
