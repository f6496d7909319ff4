"""``python -m voxcart.cli.bench.early_end``: how often the early end of turn fires, and how often it cuts a
caller's sentence (``voxcart.stt.early_end``).

The caller voice (piper) says the in-domain bench sentences (:mod:`~voxcart.cli.bench.corpus`) through the
8 kHz μ-law path, decoded by the production recognizer on the demo store's domain LM, in calls of 8 items:

- **complete**: each sentence whole, at two speeds;
- **paused**: each sentence cut at every word boundary (not inside a digit string) by a pause (460 ms of
  silence by default: over the early mark, under the end silence); the two halves are synthesized apart and
  trimmed of the voice's own silence, so the pause is what the endpointer hears (plus weak word edges);
- **digits**: order numbers read out in two groups with the same pause, under ``"digits"`` and ``"free"``;
- **hesitation**: a sentence with "um"/"uh" and the pause after it.

Each call is decoded twice, with the early end off and on. Reported: the share of requests that ended at the
early mark (at the sentence's end; a cut request's second half counts too), the share of pauses that ended an
utterance (a cut: the agent would answer half a sentence), split by what the pause follows (a word a request goes
on after, :data:`~voxcart.stt.early_end.OPEN_ENDINGS`, or another word), the cuts themselves, and the WER and the
confidence of the complete sentences with and without the early end.

Invariants: the audio is deterministic (piper without variation); a pause region ends an utterance when a final's
last frame lies in it; the arms differ only in ``early_end_ms``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from voxcart.brain.language import sample_utterances, vocabulary
from voxcart.brain.store import DEMO_TODAY, FixedClock, SqliteStore, demo_seed_path
from voxcart.cli.caller_voice import synthesize_caller
from voxcart.common.audio import FRAME_BYTES, pcm16_to_ulaw, ulaw_to_pcm16
from voxcart.common.events import Expect
from voxcart.common.seed import load_seed
from voxcart.stt.early_end import OPEN_ENDINGS
from voxcart.stt.recognizer import MIN_CONFIDENCE, CallRecognizer, RecognizerModel
from voxcart.stt.recognizer import Final as FinalEvent

from .corpus import BenchSentence, in_domain_sentences, quick_subset
from .decoding import T0_MS, frames_of
from .wer import WordErrors, word_errors

__all__ = ["Item", "build_items", "main", "measure", "render", "run_early_end_bench"]

Int16Array = npt.NDArray[np.int16]
Voice = Callable[[str, float], Int16Array]
"""``voice(text, speed)``: the caller saying ``text``, trimmed of the voice's own silence."""

END_SILENCE_MS: Final = 600
"""The end silence of the arms (``STT_END_SILENCE_MS``'s default)."""
EARLY_MS: Final = 300
PAUSE_MS: Final = 460
SPEEDS: Final = (1.0, 1.15)
HESITATIONS: Final = (
    ("i'd like to um", "return the hoodie"),
    ("uh", "where is my order"),
    ("i want to uh", "cancel my order"),
    ("my order number is um", "one zero zero two three"),
    ("can you uh", "tell me your hours"),
)
_DIGITS: Final = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_LEAD_S: Final = 1.0
_GAP_S: Final = 1.6
_CALL_ITEMS: Final = 8


@dataclass(frozen=True)
class Item:
    """What the caller says: ``parts`` with a pause between each two, under ``expect``.

    Attributes:
        kind: ``complete``, ``paused``, ``digits`` or ``hesitation``.
        after: for a pause, ``"open"`` when it follows a word of :data:`OPEN_ENDINGS`, else ``"word"``.
    """

    parts: tuple[str, ...]
    kind: str
    expect: Expect = "free"
    speed: float = 1.0
    after: str = ""

    @property
    def text(self) -> str:
        return " ".join(self.parts)


@dataclass
class _Region:
    item: int
    kind: str  # "pause" or "end"
    start: int  # frame index
    end: int
    finals: list[FinalEvent] = field(default_factory=list)


def build_items(sentences: Sequence[BenchSentence], orders: Sequence[str]) -> list[Item]:
    """The bench's items for ``sentences`` and order numbers ``orders`` (see the module's doc)."""
    items = [Item((s.text,), "complete", "yes_no" if s.job in ("yes", "no") else "free", sp)
             for s in sentences for sp in SPEEDS]  # fmt: skip
    for s in sentences:
        words = s.text.split()
        for i in range(1, len(words)):
            if words[i - 1] in _DIGITS and words[i] in _DIGITS:
                continue
            after = "open" if words[i - 1] in OPEN_ENDINGS else "word"
            items.append(Item((" ".join(words[:i]), " ".join(words[i:])), "paused", after=after))
    for number in orders:
        spoken = [_DIGITS[int(d)] for d in number]
        for cut in (2, 3):
            for expect in ("digits", "free"):
                parts = (" ".join(spoken[:cut]), " ".join(spoken[cut:]))
                items.append(Item(parts, "digits", expect, after="word"))
    items += [Item(parts, "hesitation", after="open") for parts in HESITATIONS]
    return items


class _Voice:
    """The caller voice, trimmed of its own silence, cached by (text, speed)."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, float], Int16Array] = {}

    def __call__(self, text: str, speed: float) -> Int16Array:
        key = (text, speed)
        if key not in self.cache:
            pcm = ulaw_to_pcm16(synthesize_caller(text, speed=speed))
            levels = np.sqrt(np.mean(pcm.reshape(-1, FRAME_BYTES).astype(np.float64) ** 2, axis=1))
            loud = np.flatnonzero(levels > 150) if levels.max() > 150 else np.array([0, len(levels) - 1])
            first, last = max(0, int(loud[0]) - 1), min(len(levels), int(loud[-1]) + 2)
            self.cache[key] = pcm[FRAME_BYTES * first : FRAME_BYTES * last]
        return self.cache[key]


def _silence(ms: int) -> Int16Array:
    return np.zeros(ms // 20 * FRAME_BYTES, dtype=np.int16)


def _call(items: Sequence[Item], voice: Voice, pause_ms: int) -> tuple[bytes, list[_Region], list[int]]:
    """The call's μ-law stream, its pause and end regions, and each item's first frame."""
    pieces = [_silence(int(_LEAD_S * 1000))]
    position = len(pieces[0]) // FRAME_BYTES
    regions: list[_Region] = []
    starts: list[int] = []
    for n, item in enumerate(items):
        starts.append(position)
        for k, part in enumerate(item.parts):
            if k:
                pause = _silence(pause_ms)
                regions.append(_Region(n, "pause", position, position + len(pause) // FRAME_BYTES))
                pieces.append(pause)
                position += len(pause) // FRAME_BYTES
            pcm = voice(part, item.speed)
            pieces.append(pcm)
            position += len(pcm) // FRAME_BYTES
        gap = _silence(int(_GAP_S * 1000))
        regions.append(_Region(n, "end", position, position + len(gap) // FRAME_BYTES))
        pieces.append(gap)
        position += len(gap) // FRAME_BYTES
    return pcm16_to_ulaw(np.concatenate(pieces)), regions, starts


def _decode(
    model: RecognizerModel, items: Sequence[Item], voice: Voice, pause_ms: int, early_ms: int, sid: str
) -> tuple[list[_Region], list[list[FinalEvent]]]:
    """Decode one call; its regions with the finals that ended in them, and each item's finals."""
    ulaw, regions, starts = _call(items, voice, pause_ms)
    frames = frames_of(ulaw)
    recognizer = CallRecognizer(model, sid, end_silence_ms=END_SILENCE_MS, early_end_ms=early_ms)
    by_frame = {f: r for r in regions for f in range(r.start, r.end)}
    listen_at = dict(zip(starts, items, strict=True))
    finals: list[tuple[int, FinalEvent]] = []
    for k, frame in enumerate(frames):
        if k in listen_at:
            recognizer.listen(listen_at[k].expect)  # applies from the item's first utterance
        for event in recognizer.feed(f"1-{k + 1}", frame, T0_MS + 20.0 * k):
            if isinstance(event, FinalEvent):
                finals.append((k, event))
                region = by_frame.get(k)
                if region is not None:
                    region.finals.append(event)
    finals += [(len(frames), e) for e in recognizer.end_utterance() if isinstance(e, FinalEvent)]
    spans = zip(starts, [*starts[1:], len(frames) + 1], strict=True)
    return regions, [[f for k, f in finals if start <= k < stop] for start, stop in spans]


def _waited(final: FinalEvent) -> float:
    """Silence from the last voiced frame to the frame that ended the utterance (entry ``1-k`` arrives at
    ``T0 + 20 (k - 1)``)."""
    return T0_MS + 20.0 * (int(final.last_entry_id.split("-")[1]) - 1) - final.last_voiced_arrived


def _rate(hits: int, total: int) -> dict[str, Any]:
    return {"n": total, "hits": hits, "rate": round(hits / total, 4) if total else None}


def measure(
    model: RecognizerModel,
    items: Sequence[Item],
    *,
    early_ms: int,
    pause_ms: int = PAUSE_MS,
    voice: Voice | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Decode ``items`` in calls of 8 with the early mark at ``early_ms`` (0: off); one arm's result.

    Args:
        model: the domain model.
        items: what the callers say (:func:`build_items`).
        early_ms: the recognizer's ``early_end_ms``.
        pause_ms: the pause inside an item.
        voice: ``voice(text, speed)``, the caller's trimmed speech (default: piper, cached in the call).
        say: where progress lines go.
    """
    speak = voice or _Voice()
    calls = [items[i : i + _CALL_ITEMS] for i in range(0, len(items), _CALL_ITEMS)]
    ended = {"complete": [0, 0], "after_pause": [0, 0]}
    cuts: dict[str, list[int]] = {}
    cut_texts: list[str] = []
    confidences: list[float] = []
    wer = WordErrors()
    for c, call in enumerate(calls):
        regions, heard = _decode(model, call, speak, pause_ms, early_ms, f"CAearly{early_ms}x{c}")
        for region in regions:
            item = call[region.item]
            if region.kind == "pause":
                counts = cuts.setdefault(f"{item.kind}:{item.after}" if item.kind == "paused" else item.kind, [0, 0])
                counts[0] += bool(region.finals)
                counts[1] += 1
                if region.finals:
                    cut_texts.append(" | ".join(item.parts))
            elif item.kind in ("complete", "paused"):
                counts = ended["complete" if item.kind == "complete" else "after_pause"]
                counts[0] += any(early_ms and _waited(f) == early_ms for f in region.finals)
                counts[1] += 1
        for item, finals in zip(call, heard, strict=True):
            if item.kind == "complete":
                wer += word_errors(item.text, " ".join(f.text for f in finals))
                confidences += [f.confidence for f in finals]
        if say is not None:
            say(f"early end {early_ms} ms: call {c + 1}/{len(calls)}")
    return {
        "early_end_ms": early_ms,
        "ended_early": {k: _rate(*v) for k, v in ended.items()},
        "cut_at_pause": {k: _rate(*v) for k, v in sorted(cuts.items())},
        "cuts": cut_texts,
        "wer_complete": wer.as_dict(),
        "confidence_complete": {
            "n": len(confidences),
            "mean": round(float(np.mean(confidences)), 4) if confidences else None,
            "below_min": sum(c < MIN_CONFIDENCE for c in confidences),
        },
    }


def run_early_end_bench(
    *, quick: bool = False, pause_ms: int = PAUSE_MS, early_ms: int = EARLY_MS, progress: bool = True
) -> dict[str, Any]:
    """Run the bench on the demo store (both arms); the JSON-able result."""
    started = time.perf_counter()

    def say(message: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    seed = load_seed(demo_seed_path())
    store = SqliteStore(seed, clock=FixedClock.on(DEMO_TODAY, seed.store.timezone))
    model = RecognizerModel.build(sample_utterances(store), vocabulary(store))
    corpus = in_domain_sentences([o.number for o in seed.orders])
    sentences = quick_subset(corpus) if quick else corpus
    items = build_items(sentences, [o.number for o in seed.orders][: 1 if quick else 6])
    if quick:
        items = [i for i in items if i.kind != "hesitation"] + [Item(HESITATIONS[0], "hesitation", after="open")]
    voice = _Voice()
    arms = {name: measure(model, items, early_ms=ms, pause_ms=pause_ms, voice=voice, say=say)
            for name, ms in (("off", 0), ("on", early_ms))}  # fmt: skip
    model.close()
    return {
        "bench": "early_end",
        "quick": quick,
        "end_silence_ms": END_SILENCE_MS,
        "pause_ms": pause_ms,
        "items": len(items),
        "elapsed_s": round(time.perf_counter() - started, 1),
        "arms": arms,
    }


def _share(r: dict[str, Any]) -> str:
    return f"{r['hits']:>4}/{r['n']:<4} {100 * (r['rate'] or 0):5.1f} %"


def render(report: dict[str, Any]) -> str:
    """The report as text."""
    lines = [f"early end of turn: {report['items']} items, pause {report['pause_ms']} ms, end silence "
             f"{report['end_silence_ms']} ms"]  # fmt: skip
    for name, arm in report["arms"].items():
        lines.append(f"\nearly end {name} ({arm['early_end_ms']} ms):")
        lines += [f"  ended at the early mark, {key:<20} {_share(r)}" for key, r in arm["ended_early"].items()]
        lines += [f"  cut at a pause, {key:<29} {_share(r)}" for key, r in arm["cut_at_pause"].items()]
        lines.append(f"  WER of the complete sentences: {100 * arm['wer_complete']['wer']:.1f} %")
        conf = arm["confidence_complete"]
        lines.append(f"  their finals' confidence: mean {conf['mean']}, {conf['below_min']}/{conf['n']} under "
                     f"{MIN_CONFIDENCE} (not understood)")  # fmt: skip
    cuts = report["arms"].get("on", {}).get("cuts", [])
    if cuts:
        lines += ["\ncuts (early end on):", *(f"  {text}" for text in cuts)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run from the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m voxcart.cli.bench.early_end", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few sentences only")
    parser.add_argument("--pause-ms", type=int, default=PAUSE_MS, help="the pause inside sentences")
    parser.add_argument("--early-ms", type=int, default=EARLY_MS, help="the early mark of the 'on' arm")
    parser.add_argument("--json", metavar="FILE", default="", help="also write the result here")
    args = parser.parse_args(argv)
    if not 40 <= args.early_ms < END_SILENCE_MS:
        print(f"--early-ms {args.early_ms}: expected 40..{END_SILENCE_MS - 1}", file=sys.stderr)
        return 2
    if not 20 <= args.pause_ms <= 5000:
        print(f"--pause-ms {args.pause_ms}: expected 20..5000", file=sys.stderr)
        return 2
    report = run_early_end_bench(quick=args.quick, pause_ms=args.pause_ms, early_ms=args.early_ms)
    print(render(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
