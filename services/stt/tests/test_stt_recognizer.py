"""CallRecognizer on real piper caller speech through the 8 kHz μ-law path, with the real PocketSphinx."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from voxcart.cli.bench.wer import align
from voxcart.cli.caller_voice import synthesize_caller
from voxcart.common.audio import FRAME_BYTES, pcm16_to_ulaw, silence_ulaw
from voxcart.common.spoken_numbers import numbers_to_digits
from voxcart.stt.language_model import normalize_words
from voxcart.stt.recognizer import (
    MIN_CONFIDENCE,
    CallRecognizer,
    Discarded,
    Final,
    Partial,
    RecognizerEvent,
    RecognizerModel,
    SpeechStart,
    decode_resume,
    encode_resume,
)

Entries = list[tuple[str, bytes, float]]
Speech = Callable[[str], bytes]
ToEntries = Callable[..., Entries]
Run = Callable[[CallRecognizer, Entries], list[RecognizerEvent]]

_YES = {"yes", "yeah", "yep", "yup", "sure"}


def _word_errors(ref: list[str], hyp: list[str]) -> int:
    return align(ref, hyp).errors


def _finals(events: Sequence[object]) -> list[Final]:
    return [e for e in events if isinstance(e, Final)]


def _say(recognizer: CallRecognizer, entries: Entries, run: Run, expect: str = "free") -> list[Final]:
    recognizer.listen(expect)  # type: ignore[arg-type]
    return _finals(run(recognizer, entries))


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
        ref = numbers_to_digits(normalize_words(text))
        errors += _word_errors(ref, hyp)
        words += len(ref)
    assert not missing
    assert errors / words < 0.12, errors / words  # measured: 0.068 (5 errors in 74 words)


def test_order_number_digits(model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run) -> None:
    """Spoken digits come out as a digit string; exactly under the digits expectation (its grammar)."""
    entries = to_entries(speech("my order number is 7 2 9 0 6"))
    narrow = _say(CallRecognizer(model, "CAdig"), entries, run, "digits")
    assert [f.text for f in narrow] == ["my order number is 72906"]
    assert narrow[0].confidence >= MIN_CONFIDENCE
    free = _say(CallRecognizer(model, "CAdig"), entries, run)
    assert len(free) == 1 and free[0].text.startswith("my order number is ")
    number = free[0].text.removeprefix("my order number is ")
    assert number.isdigit() and _word_errors(list("72906"), list(number)) <= 1, free[0].text


@pytest.mark.parametrize(
    ("said", "heard"),
    [
        ("one oh oh two three", "10023"),
        ("ten thousand twenty three", "10023"),
        ("it's one double oh one nine", "10019"),
    ],
)
def test_order_number_styles(
    model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run, said: str, heard: str
) -> None:
    finals = _say(CallRecognizer(model, "CAsty"), to_entries(speech(said)), run, "digits")
    assert len(finals) == 1 and finals[0].text.split()[-1] == heard, finals


def test_digits_allow_pauses_between_groups(
    model: RecognizerModel, paused_speech: Callable[[Sequence[str], int], bytes], to_entries: ToEntries, run: Run
) -> None:
    """A caller pausing between digit groups: one final under "digits" (longer end silence), several without."""
    entries = to_entries(paused_speech(["one zero zero", "two three"], 400))
    assert [f.text for f in _say(CallRecognizer(model, "CApau"), entries, run, "digits")] == ["10023"]
    assert len(_say(CallRecognizer(model, "CApau"), entries, run)) == 2


def test_yes_no_hears_an_answer_and_anything_else(
    model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run
) -> None:
    """Narrow is not deaf: a caller who answers a yes/no question with a request is heard."""
    recognizer = CallRecognizer(model, "CAyn")
    yes = _say(recognizer, to_entries(speech("yes please")), run, "yes_no")
    assert len(yes) == 1 and yes[0].text.split()[0] in _YES and yes[0].confidence >= MIN_CONFIDENCE, yes
    other = _say(recognizer, to_entries(speech("i want to talk to a person"), first_chunk=1000), run, "yes_no")
    assert [f.text for f in other] == ["i want to talk to a person"]
    assert other[0].confidence >= MIN_CONFIDENCE


@pytest.mark.parametrize("expect", ["yes_no", "digits", "product"])
@pytest.mark.parametrize("said", ["goodbye", "that's all thanks"])
def test_a_narrow_expectation_never_invents_an_answer(
    shop_model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run, expect: str, said: str
) -> None:
    """A caller who ends the call instead of answering is heard as such, not forced into the grammar ("uh
    right" for "goodbye" under yes/no, "00 thanks" under digits)."""
    free = _say(CallRecognizer(shop_model, "CAfree"), to_entries(speech(said)), run)
    narrow = _say(CallRecognizer(shop_model, "CAnarrow"), to_entries(speech(said)), run, expect)
    assert [f.text for f in narrow] == [f.text for f in free]
    assert "goodbye" in narrow[0].text or "all" in narrow[0].text


@pytest.mark.parametrize("answer", ["size nine", "the black one", "medium please", "the red jacket in large"])
def test_product_answers(
    shop_model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run, answer: str
) -> None:
    finals = _say(CallRecognizer(shop_model, "CAprod"), to_entries(speech(answer)), run, "product")
    assert [f.text for f in finals] == [answer]


def test_confidence_separates_out_of_domain_speech(
    model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run
) -> None:
    """In-domain sentences are confident; out-of-domain ones, forced into in-domain words, are not."""
    recognizer = CallRecognizer(model, "CAood")
    chunk = 1
    confidence: dict[str, float] = {}
    for text in ["where is my order", "i want a refund for the red jacket", "my grandmother grows tomatoes",
                 "the weather in paris is lovely this time of year"]:  # fmt: skip
        entries = to_entries(speech(text), first_chunk=chunk)
        chunk += len(entries)
        finals = _finals(run(recognizer, entries))
        assert len(finals) == 1 and 0.0 <= finals[0].confidence <= 1.0
        confidence[text] = finals[0].confidence
    in_domain, out_of_domain = list(confidence.values())[:2], list(confidence.values())[2:]
    assert min(in_domain) >= 0.9 and max(out_of_domain) < 0.2, confidence  # measured: >= 0.98, <= 0.06


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
    """A new owner replays from the committed checkpoint into a fresh recognizer: same ids, same finals, even
    when the utterances were decoded under different expectations.

    The worker commits a final's ``resume`` with its checkpoint, and the expectation brain sent after it (the
    ``listen`` entry it applied) with the next checkpoint; the new owner restores both."""
    texts = ["i want to return my shoes", "yes", "my order number is 1 0 0 2 3", "goodbye"]
    expects = {1: "yes_no", 2: "digits"}  # listen() after final n-1 applies to utterance n
    entries = to_entries(b"".join(speech(t) for t in texts))
    original = CallRecognizer(model, "CArep")
    events: list[tuple[int, object]] = []
    for k, (entry_id, frame, arrived) in enumerate(entries):
        for event in original.feed(entry_id, frame, arrived):
            events.append((k, event))
            if isinstance(event, Final):
                original.listen(expects.get(len(_finals([e for _, e in events])), "free"))  # type: ignore[arg-type]
    finals = [(k, e) for k, e in events if isinstance(e, Final)]
    assert [f.text for _, f in finals] == ["i want to return my shoes", "yes", "my order number is 10023", "goodbye"]
    index = {entry_id: k for k, (entry_id, _, _) in enumerate(entries)}
    for n, (at, final) in enumerate(finals[:-1]):
        # the owner died after committing this final (and the listen after it); the next one replays
        assert decode_resume(final.resume)[1] == expects.get(n, "free")  # what was in force when it ended
        resume = index[final.checkpoint_entry] + 1
        replayer = CallRecognizer(model, "CArep", start_after=final.checkpoint_entry, resume=final.resume)
        replayer.listen(expects.get(n + 1, "free"))  # type: ignore[arg-type]
        replayed: list[object] = []
        for entry_id, frame, arrived in entries[resume:]:
            for event in replayer.feed(entry_id, frame, arrived):
                replayed.append(event)
                if isinstance(event, Final):
                    replayer.listen(expects.get(n + 1 + len(_finals(replayed)), "free"))  # type: ignore[arg-type]
        assert resume <= at
        expected = [e for k, e in events if k > at and not isinstance(e, Partial)]
        got = [e for e in replayed if not isinstance(e, Partial)]
        assert [_strip(e) for e in got] == [_strip(e) for e in expected], n
        # without the saved state the utterance ids (what consumers deduplicate on) still match
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
            original.listen("yes_no")  # brain asked a question; the worker commits the new state
            entry = original.checkpoint()
            assert entry is not None and entry != _finals(before)[0].checkpoint_entry
            checkpoint = (entry, original.resume)
    assert checkpoint is not None
    entry, resume = checkpoint
    start = [e for e, _, _ in entries].index(entry) + 1
    replayed = run(CallRecognizer(model, "CAidle", start_after=entry, resume=resume), entries[start:])
    assert [_strip(e) for e in replayed] == [_strip(e) for e in after]
    assert [f.text for f in _finals(after)] == ["nope thanks"]  # the yes/no grammar's word for this "no"


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


def test_calls_share_pooled_decoders_without_influence(
    speech: Speech, to_entries: ToEntries, run: Run, model: RecognizerModel
) -> None:
    """Two calls speaking at once on a fresh model, fed from two threads: each gets exactly what it gets alone,
    and the pool creates decoders only for utterances in progress at the same time."""
    fresh = RecognizerModel(model.lm)
    a = to_entries(speech("i want to cancel my order"))
    b = to_entries(speech("is the blue hoodie in stock in medium"), first_chunk=500)
    alone = [_finals(run(CallRecognizer(fresh, "CAa"), a)), _finals(run(CallRecognizer(fresh, "CAb"), b))]
    assert fresh.decoders_created == 1  # one after the other: one decoder
    together: list[list[Final]] = [[], []]
    barrier = threading.Barrier(2)

    def call(i: int, entries: Entries) -> None:
        recognizer = CallRecognizer(fresh, f"CA{'ab'[i]}")
        for entry_id, frame, arrived in entries:
            barrier.wait(timeout=10)  # frame by frame in lock step
            together[i] += _finals(recognizer.feed(entry_id, frame, arrived))

    short = min(len(a), len(b))
    threads = [threading.Thread(target=call, args=(i, e[:short])) for i, e in enumerate((a, b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert fresh.decoders_created == 2
    assert [[_strip(f) for f in fs] for fs in together] == [[_strip(f) for f in fs] for fs in alone]
    fresh.close()


def test_resume_encoding() -> None:
    resume = encode_resume("40,3,-1", "product", ["trail hoodie"])
    assert decode_resume(resume) == ("40,3,-1", "product", ("trail hoodie",))
    assert decode_resume("48.06,8.32") == ("48.06,8.32", "free", ())  # a bare CMN (earlier versions)
    with pytest.raises(ValueError, match="unknown expectation 'maybe'"):
        decode_resume(encode_resume("1,2", "maybe"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resume: not a recognizer state"):
        decode_resume('{"expect": "free"}')
    with pytest.raises(ValueError, match="resume: empty"):
        decode_resume(" ")


def test_resume_and_listen(model: RecognizerModel) -> None:
    recognizer = CallRecognizer(model, "CAres")
    assert recognizer.cmn == model.cmn and recognizer.expect == "free"
    recognizer.listen("product", ["hoodie"])
    restored = CallRecognizer(model, "CAres", resume=recognizer.resume)
    assert (restored.cmn, restored.expect, restored.resume) == (model.cmn, "product", recognizer.resume)
    assert CallRecognizer(model, "CAres", cmn="1,2,3").cmn == "1,2,3"  # the older parameter, a bare CMN
    recognizer.listen("digits", ["ignored"])  # keyterms serve the product grammar only
    assert decode_resume(recognizer.resume)[2] == ()
    with pytest.raises(ValueError, match="unknown expectation 'number'"):
        recognizer.listen("number")  # type: ignore[arg-type]


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


def test_close_gives_back_the_decoders(model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run) -> None:
    fresh = RecognizerModel(model.lm)
    recognizer = CallRecognizer(fresh, "CAcl")
    recognizer.listen("digits")
    run(recognizer, to_entries(speech("my order number is 7 2 9 0 6"))[:60])  # in the middle of the utterance
    assert recognizer.utterance_start_entry() is not None and fresh.decoders_created == 2
    recognizer.close()
    recognizer.close()
    other = CallRecognizer(fresh, "CAcl2")
    other.listen("digits")
    assert len(_finals(run(other, to_entries(speech("my order number is 7 2 9 0 6"))))) == 1
    assert fresh.decoders_created == 2  # the closed call's decoders were reused
    fresh.close()


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
    with pytest.raises(ValueError, match="does not fit in max_utterance_ms"):
        CallRecognizer(model, "CA1", digits_end_silence_ms=600_000)
    with pytest.raises(ValueError, match="resume: not a recognizer state"):
        CallRecognizer(model, "CA1", resume="{}")


def test_speech_fixture_is_whole_frames(speech: Speech) -> None:
    assert len(speech("yes")) % FRAME_BYTES == 0
