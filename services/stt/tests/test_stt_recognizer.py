"""CallRecognizer on real piper caller speech through the 8 kHz μ-law path, with the real PocketSphinx."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from voxcart.cli.caller_voice import synthesize_caller
from voxcart.common.audio import FRAME_BYTES, pcm16_to_ulaw, silence_ulaw
from voxcart.stt.language_model import normalize_words
from voxcart.stt.recognizer import (
    CallRecognizer,
    Discarded,
    Final,
    Partial,
    RecognizerEvent,
    RecognizerModel,
    SpeechStart,
)

Entries = list[tuple[str, bytes, float]]
Speech = Callable[[str], bytes]
ToEntries = Callable[..., Entries]
Run = Callable[[CallRecognizer, Entries], list[RecognizerEvent]]


def _word_errors(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diag, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (r != h))
    return row[-1]


def _finals(events: Sequence[object]) -> list[Final]:
    return [e for e in events if isinstance(e, Final)]


def test_key_words_and_wer(
    model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run, key_words: list[tuple[str, set[str]]]
) -> None:
    """15 caller sentences, one call: every sentence yields its key words; WER stays near speech.md's 4.5 %."""
    recognizer = CallRecognizer(model, "CAwer")
    errors = words = 0
    missing: list[str] = []
    chunk = 1
    for text, keys in key_words:
        entries = to_entries(speech(text), first_chunk=chunk)
        chunk += len(entries)
        finals = _finals(run(recognizer, entries))
        assert len(finals) == 1, (text, finals)
        hyp = finals[0].text.split()
        if not keys <= set(hyp):
            missing.append(f"{text!r} -> {finals[0].text!r}")
        ref = normalize_words(text)
        errors += _word_errors(ref, hyp)
        words += len(ref)
    assert not missing
    assert errors / words < 0.12, errors / words  # measured: 0.068 (5 errors in 74 words)


def test_digit_string_is_close(model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run) -> None:
    """Digits are the weak spot (speech.md: exact in 33-50 % of cases); allow one digit wrong."""
    finals = _finals(run(CallRecognizer(model, "CAdig"), to_entries(speech("my order number is 7 2 9 0 6"))))
    assert len(finals) == 1
    digits = [
        w
        for w in finals[0].text.split()
        if w in {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh"}
    ]
    assert _word_errors(["seven", "two", "nine", "zero", "six"], digits) <= 1, finals[0].text


def test_events_of_one_utterance(model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run) -> None:
    entries = to_entries(speech("is the blue hoodie in stock in medium"))
    events = run(CallRecognizer(model, "CAev", end_silence_ms=500), entries)
    kinds = [type(e) for e in events]
    assert kinds[0] is SpeechStart and kinds[-1] is Final
    assert kinds.count(SpeechStart) == 1 and kinds.count(Final) == 1
    assert Partial in kinds
    start, final = events[0], events[-1]
    assert isinstance(start, SpeechStart) and isinstance(final, Final)
    ids = {e.utterance_id for e in events if not isinstance(e, Discarded)}
    assert ids == {start.utterance_id}
    first_entry = start.utterance_id.removeprefix("CAev:")
    index = {entry_id: k for k, (entry_id, _, _) in enumerate(entries)}
    # 600 ms of lead silence; the utterance starts with the pre-roll (400 ms), ~20-30 frames in.
    assert 5 <= index[first_entry] <= 30, first_entry
    arrived = {entry_id: t for entry_id, _, t in entries}
    assert arrived[first_entry] < start.first_voiced_arrived == final.first_voiced_arrived
    assert final.first_voiced_arrived < final.last_voiced_arrived
    # ended 500 ms after the last voiced frame, on the entry it names
    assert arrived[final.last_entry_id] - final.last_voiced_arrived == pytest.approx(500, abs=40)
    assert final.endpointed_at <= final.recognized_at
    assert 0.0 < final.confidence <= 1.0
    assert final.text.split()[-2:] == ["in", "medium"]
    assert index[final.checkpoint_entry] < index[final.last_entry_id]


@pytest.mark.parametrize("level", [0, 120, 600])
def test_silence_and_noise_give_no_final(model: RecognizerModel, to_entries: ToEntries, run: Run, level: int) -> None:
    """Digital silence, line hiss, and loud white noise: no transcript (a start, if any, is discarded)."""
    rng = np.random.default_rng(level)
    noise = pcm16_to_ulaw(rng.normal(0, level, 8000 * 5).astype(np.int16)) if level else silence_ulaw(40_000)
    events = run(CallRecognizer(model, "CAnoise"), to_entries(noise))
    assert not [e for e in events if isinstance(e, (Final, Partial))]
    started = [e for e in events if isinstance(e, SpeechStart)]
    assert len([e for e in events if isinstance(e, Discarded)]) == len(started)


def test_two_utterances_two_finals(model: RecognizerModel, to_entries: ToEntries, run: Run) -> None:
    """Two sentences 700 ms apart (end of speech at 560 ms): two utterances, two finals."""
    gap = silence_ulaw(FRAME_BYTES * 35)
    first, second = synthesize_caller("i want to cancel my order"), synthesize_caller("talk to a person")
    audio = silence_ulaw(FRAME_BYTES * 30) + first + gap + second + silence_ulaw(FRAME_BYTES * 50)
    events = run(CallRecognizer(model, "CAtwo"), to_entries(audio))
    finals = _finals(events)
    assert [f.text for f in finals] == ["i want to cancel my order", "talk to a person"]
    assert len({f.utterance_id for f in finals}) == 2
    assert len([e for e in events if isinstance(e, SpeechStart)]) == 2


def test_replay_from_checkpoint_reproduces_ids_and_finals(
    model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run
) -> None:
    """A new owner replays from the committed checkpoint into a fresh recognizer: same ids, same finals."""
    texts = ["i want to return my shoes", "yes", "i want a refund for the red jacket", "goodbye"]
    entries = to_entries(b"".join(speech(t) for t in texts))
    original = CallRecognizer(model, "CArep")
    events: list[tuple[int, object]] = []
    for k, (entry_id, frame, arrived) in enumerate(entries):
        events += [(k, e) for e in original.feed(entry_id, frame, arrived)]
    finals = [(k, e) for k, e in events if isinstance(e, Final)]
    assert len(finals) == len(texts)
    index = {entry_id: k for k, (entry_id, _, _) in enumerate(entries)}
    for n, (at, final) in enumerate(finals[:-1]):
        # the owner died after committing this final; the next one replays from its checkpoint
        resume = index[final.checkpoint_entry] + 1
        replayer = CallRecognizer(model, "CArep", start_after=final.checkpoint_entry, cmn=final.resume)
        replayed = run(replayer, entries[resume:])
        assert resume <= at
        expected = [e for k, e in events if k > at and not isinstance(e, Partial)]
        got = [e for e in replayed if not isinstance(e, Partial)]
        assert [_strip(e) for e in got] == [_strip(e) for e in expected], n
        # without the saved cepstral mean the utterance ids (what consumers deduplicate on) still match
        cold = run(CallRecognizer(model, "CArep", start_after=final.checkpoint_entry), entries[resume:])
        assert _ids(cold) == _ids(expected)


def test_replay_from_idle_checkpoint(model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run) -> None:
    """A checkpoint taken between utterances (caller silent) replays to the same utterance ids and finals."""
    entries = to_entries(speech("where is my order") + silence_ulaw(FRAME_BYTES * 60) + speech("no thanks"))
    original = CallRecognizer(model, "CAidle")
    before: list[object] = []
    after: list[object] = []
    checkpoint: tuple[str, str] | None = None
    idle = 0
    for entry_id, frame, arrived in entries:
        events = original.feed(entry_id, frame, arrived)
        (after if checkpoint else before).extend(events)
        idle = idle + 1 if _finals(before) else 0
        if not checkpoint and idle == 40:  # 800 ms after the first final, the caller still silent
            entry = original.checkpoint()  # the worker commits this
            assert entry is not None and entry != _finals(before)[0].checkpoint_entry
            checkpoint = (entry, original.cmn)
    assert checkpoint is not None
    entry, cmn = checkpoint
    resume = [e for e, _, _ in entries].index(entry) + 1
    replayed = run(CallRecognizer(model, "CAidle", start_after=entry, cmn=cmn), entries[resume:])
    assert [_strip(e) for e in replayed] == [_strip(e) for e in after]
    assert [f.text for f in _finals(after)] == ["no thanks"]


def _ids(events: Sequence[object]) -> list[str]:
    return [e.utterance_id for e in events if isinstance(e, (SpeechStart, Final))]


def _strip(event: object) -> object:
    """An event without its wall-clock fields (``endpointed_at``/``recognized_at`` differ on replay)."""
    if isinstance(event, Final):
        return (
            event.utterance_id,
            event.text,
            event.confidence,
            event.first_voiced_arrived,
            event.last_voiced_arrived,
            event.last_entry_id,
            event.checkpoint_entry,
            event.resume,
        )
    return event


def test_utterance_start_entry_and_checkpoint_during_speech(
    model: RecognizerModel, speech: Speech, to_entries: ToEntries
) -> None:
    recognizer = CallRecognizer(model, "CAst")
    seen: set[str | None] = set()
    for entry_id, frame, arrived in to_entries(speech("talk to a person")):
        for event in recognizer.feed(entry_id, frame, arrived):
            if isinstance(event, SpeechStart):
                assert recognizer.utterance_start_entry() == event.utterance_id.removeprefix("CAst:")
                assert recognizer.checkpoint() is None
        seen.add(recognizer.utterance_start_entry())
    assert None in seen and len(seen) == 2
    assert recognizer.utterance_start_entry() is None


def test_end_utterance_closes_the_open_one(
    model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run
) -> None:
    entries = to_entries(speech("i want to cancel my order"))
    recognizer = CallRecognizer(model, "CAend")
    events = run(recognizer, entries[:-50])  # cut in the trailing silence, before the end-of-speech decision
    assert not _finals(events)
    closed = recognizer.end_utterance()
    assert [f.text for f in _finals(closed)] == ["i want to cancel my order"]
    assert recognizer.end_utterance() == []


def test_two_frames_per_entry(model: RecognizerModel, speech: Speech, run: Run) -> None:
    audio = speech("goodbye")
    entries = [(f"1-{k}", audio[i : i + 2 * FRAME_BYTES], 20.0 * k) for k, i in enumerate(range(0, len(audio), 320))]
    if len(entries[-1][1]) != 2 * FRAME_BYTES:
        entries.pop()
    assert [f.text for f in _finals(run(CallRecognizer(model, "CA2f"), entries))] == ["goodbye"]


@pytest.mark.parametrize("size", [0, 159, 161, 480 + 1])
def test_feed_rejects_partial_frames(model: RecognizerModel, size: int) -> None:
    with pytest.raises(ValueError, match=r"entry 1-7 of call CAbad: \d+ bytes of μ-law"):
        CallRecognizer(model, "CAbad").feed("1-7", b"\xff" * size, 0.0)


def test_bad_knobs(model: RecognizerModel) -> None:
    with pytest.raises(ValueError, match="call_sid"):
        CallRecognizer(model, "")
    with pytest.raises(ValueError, match="end_silence_ms"):
        CallRecognizer(model, "CA1", end_silence_ms=20)
    with pytest.raises(ValueError, match="partial_every_ms"):
        CallRecognizer(model, "CA1", partial_every_ms=5)


def test_speech_fixture_is_whole_frames(speech: Speech) -> None:
    assert len(speech("yes")) % FRAME_BYTES == 0
