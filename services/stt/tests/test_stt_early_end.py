"""The early end of turn (``early_end``): the word rules on a real domain LM, the endpointer's early mark, and the
recognizer, on real piper speech through the μ-law path, ending complete requests at 300 ms of silence with the
same text, waiting out pauses after function words and inside digit strings, and replaying the same way after
a takeover."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from prometheus_client import REGISTRY

from voxcart.cli.caller_voice import synthesize_caller
from voxcart.common.audio import pcm16_to_ulaw, ulaw_to_pcm16
from voxcart.common.events import Expect
from voxcart.common.settings import SettingsError, load_settings
from voxcart.stt.app import build_provider
from voxcart.stt.early_end import EARLY_END_EXPECTS, ends_early, sounds_complete
from voxcart.stt.endpointer import EndpointerConfig, Step, VadEndpointer
from voxcart.stt.language_model import ArpaScorer, build_domain_lm
from voxcart.stt.recognizer import CallRecognizer, Final, Partial, RecognizerEvent, RecognizerModel, SpeechStart

Entries = list[tuple[str, bytes, float]]
Speech = Callable[[str], bytes]
ToEntries = Callable[..., Entries]
Run = Callable[[CallRecognizer, Entries], list[RecognizerEvent]]

SID = "CAearly"
SENTENCES = [
    "where is my order",
    "is the blue hoodie in stock",
    "i want the blue one",
    "what is your return policy",
    "who can i talk to",
    "my order number is 1 2 3 4 5",
    "yes",
    "no thanks",
]


@pytest.fixture(scope="module")
def scorer() -> ArpaScorer:
    return ArpaScorer(build_domain_lm(SENTENCES).arpa)


@pytest.mark.parametrize(
    ("words", "complete"),
    [
        ("where is my order", True),
        ("where is my", False),  # a possessive: the caller is looking for the next word
        ("is the blue hoodie in stock", True),
        ("is the blue hoodie in", False),
        ("who can i talk to", False),  # a sentence of the LM ends so, but a pause after "to" is rarely the end
        ("i want the blue one", True),  # "one" after a word: a pronoun
        ("my order number is one two", False),  # a digit string read out goes on
        ("what is your return policy", True),
        ("yes", True),
        ("no thanks", True),
        ("can i talk to a person please", True),  # never a sentence of the LM, but "please" closes it
        ("the weather is lovely", False),  # no sentence of the LM ends so
        ("um", False),
        ("", False),
    ],
)
def test_stt_early_word_rules(scorer: ArpaScorer, words: str, complete: bool) -> None:
    assert sounds_complete(words.split(), scorer) is complete


def test_stt_early_only_where_no_entry_is_read_out(scorer: ArpaScorer) -> None:
    words = "where is my order".split()
    assert {e for e in ("free", "yes_no", "product", "digits", "address") if ends_early(e, words, scorer)} == set(
        EARLY_END_EXPECTS
    )
    assert EARLY_END_EXPECTS == {"free", "yes_no", "product"}
    assert scorer.seen_ending(["in", "stock"]) and not scorer.seen_ending(["stock"])  # "<s> stock" never ended


# -- the endpointer's early mark ------------------------------------------------------------------------------


def _trimmed(text: str) -> np.ndarray:
    """``text`` spoken by the caller voice, without the voice's own leading and trailing silence (int16)."""
    pcm = ulaw_to_pcm16(synthesize_caller(text))
    levels = np.sqrt(np.mean(pcm.reshape(-1, 160).astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(levels > 150)
    return pcm[160 * loud[0] : 160 * (loud[-1] + 1)]


def _paused(parts: Sequence[str], pause_ms: int) -> bytes:
    """μ-law: 600 ms of silence, the parts with ``pause_ms`` of silence between them, 1.2 s of silence."""
    pause = np.zeros(8 * pause_ms, np.int16)
    pieces = [np.zeros(4800, np.int16)]
    for k, part in enumerate(parts):
        pieces += [pause] if k else []
        pieces.append(_trimmed(part))
    pieces.append(np.zeros(9600, np.int16))
    return pcm16_to_ulaw(np.concatenate(pieces))


def _pcm_frames(ulaw: bytes) -> list[tuple[str, bytes]]:
    pcm = ulaw_to_pcm16(ulaw)
    return [(f"1-{k + 1}", pcm[i : i + 160].tobytes()) for k, i in enumerate(range(0, len(pcm), 160))]


def _steps(config: EndpointerConfig, frames: list[tuple[str, bytes]]) -> tuple[VadEndpointer, list[Step]]:
    ep = VadEndpointer(config)
    return ep, [ep.process(entry_id, pcm, 20.0 * k) for k, (entry_id, pcm) in enumerate(frames)]


def test_stt_early_mark_once_per_silence_before_the_end(speech: Speech) -> None:
    frames = _pcm_frames(speech("i want to return my shoes"))
    ep, steps = _steps(EndpointerConfig(end_silence_ms=560, early_end_ms=300), frames)
    early = [k for k, s in enumerate(steps) if s.early]
    ends = [k for k, s in enumerate(steps) if s.ended]
    assert len(early) == 1 and len(ends) == 1
    assert ep.last_voiced is not None
    assert (early[0] + 1 - int(ep.last_voiced.entry_id.split("-")[1])) * 20 == 300
    assert (ends[0] - early[0]) * 20 == 260  # the endpointer itself still ends at 560 ms
    # the mark changes nothing else: the same frames, starts and ends without it
    _, off = _steps(EndpointerConfig(end_silence_ms=560, early_end_ms=0), frames)
    assert [(s.started, s.ended, [f.entry_id for f in s.frames]) for s in steps] == [
        (s.started, s.ended, [f.entry_id for f in s.frames]) for s in off
    ]
    assert not any(s.early for s in off)
    _, same = _steps(EndpointerConfig(end_silence_ms=300, early_end_ms=300), frames)  # not shorter: never
    assert not any(s.early for s in same) and sum(s.ended for s in same) == 1

    # a pause inside the utterance reaches the mark too, once; the end silence is not reached there
    _, paused = _steps(EndpointerConfig(), _pcm_frames(_paused(["i want to return", "my shoes"], 400)))
    assert sum(s.early for s in paused) == 2 and sum(s.ended for s in paused) == 1


def test_stt_early_mark_on_a_noisy_line_gets_the_noisy_extra(speech: Speech) -> None:
    pcm = ulaw_to_pcm16(speech("is the blue hoodie in stock in medium"))
    noise = np.random.default_rng(5).normal(0, 400, len(pcm) + 9600)
    line = noise.copy()
    line[9600:] += pcm
    ep, steps = _steps(
        EndpointerConfig(denoise="off"),  # denoised, the line would be quiet
        _pcm_frames(pcm16_to_ulaw(np.clip(line, -32768, 32767).astype(np.int16))),
    )
    assert ep.last_voiced is not None
    last = int(ep.last_voiced.entry_id.split("-")[1])
    [early] = [k + 1 - last for k, s in enumerate(steps) if s.early]
    [end] = [k + 1 - last for k, s in enumerate(steps) if s.ended]
    assert (early * 20, end * 20) == (500, 760)


# -- the recognizer -------------------------------------------------------------------------------------------


def _finals(events: Sequence[object]) -> list[Final]:
    return [e for e in events if isinstance(e, Final)]


def _waited(final: Final) -> float:
    """Silence from the last voiced frame to the frame that ended the utterance (entry ``1-k`` arrives at 20 k)."""
    return 1_000_000.0 + 20.0 * int(final.last_entry_id.split("-")[1]) - final.last_voiced_arrived


def _decisions() -> dict[str, float]:
    """The early-mark decisions counted so far (``voxcart_stt_early_end_decisions_total``)."""
    name = "voxcart_stt_early_end_decisions_total"
    return {d: REGISTRY.get_sample_value(name, {"decision": d}) or 0.0 for d in ("end", "wait")}


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("where is my order", "free"),
        ("what is your return policy", "free"),
        ("is the blue hoodie in stock", "free"),
        ("no thanks", "yes_no"),
    ],
)
def test_stt_early_a_complete_request_ends_at_300_ms_with_the_same_text(
    model: RecognizerModel, speech: Speech, to_entries: ToEntries, run: Run, text: str, expect: Expect
) -> None:
    before = _decisions()
    early, late = CallRecognizer(model, SID), CallRecognizer(model, SID, early_end_ms=0)
    early.listen(expect)
    late.listen(expect)
    [soon] = _finals(run(early, to_entries(speech(text))))
    [normal] = _finals(run(late, to_entries(speech(text))))
    assert soon.text == normal.text
    assert _waited(soon) == 300
    assert _waited(normal) == (400 if expect == "yes_no" else 560)
    assert _decisions()["end"] == before["end"] + 1


@pytest.mark.parametrize(
    "parts",
    [("i want to return my", "shoes"), ("is the blue hoodie in", "stock"), ("i want a refund for the", "red jacket")],
)
def test_stt_early_a_pause_after_a_function_word_is_waited_out(
    model: RecognizerModel, to_entries: ToEntries, run: Run, parts: tuple[str, str]
) -> None:
    before = _decisions()
    [final] = _finals(run(CallRecognizer(model, SID), to_entries(_paused(parts, 360))))
    assert final.text.split()[-1] == parts[1].split()[-1], final.text
    after = _decisions()
    assert after["wait"] >= before["wait"] + 1  # the pause reached the early mark; the words said "go on"


@pytest.mark.parametrize("expect", ["digits", "free"])
def test_stt_early_a_pause_inside_digits_is_waited_out(
    model: RecognizerModel, to_entries: ToEntries, run: Run, expect: Expect
) -> None:
    recognizer = CallRecognizer(model, SID)
    recognizer.listen(expect)
    [final] = _finals(run(recognizer, to_entries(_paused(["one zero zero", "two three"], 360))))
    assert final.text.replace(" ", "").endswith("23"), final.text
    assert _waited(final) == (1000 if expect == "digits" else 560)  # a number does not end a request early


def test_stt_early_ends_replay_the_same_after_a_takeover(
    model: RecognizerModel, speech: Speech, to_entries: ToEntries
) -> None:
    """A new owner replays from a committed checkpoint into a fresh recognizer: the utterances end on the same
    frames (early or not) with the same ids and texts."""
    texts = ["where is my order", "yes", "i want to return my shoes", "what is your return policy"]
    expects: dict[int, Expect] = {1: "yes_no"}  # listen() after final n-1 applies to utterance n
    entries = to_entries(b"".join(speech(t) for t in texts))
    original = CallRecognizer(model, SID)
    events: list[tuple[int, RecognizerEvent]] = []
    for k, (entry_id, frame, arrived) in enumerate(entries):
        for event in original.feed(entry_id, frame, arrived):
            events.append((k, event))
            if isinstance(event, Final):
                original.listen(expects.get(len(_finals([e for _, e in events])), "free"))
    finals = [(k, e) for k, e in events if isinstance(e, Final)]
    assert len(finals) == 4
    assert sum(_waited(f) == 300 for _, f in finals) >= 3, [(f.text, _waited(f)) for _, f in finals]
    index = {entry_id: k for k, (entry_id, _, _) in enumerate(entries)}
    for n, (at, final) in enumerate(finals[:-1]):
        start = index[final.checkpoint_entry] + 1
        replayer = CallRecognizer(model, SID, start_after=final.checkpoint_entry, resume=final.resume)
        replayer.listen(expects.get(n + 1, "free"))
        replayed: list[RecognizerEvent] = []
        for entry_id, frame, arrived in entries[start:]:
            for event in replayer.feed(entry_id, frame, arrived):
                replayed.append(event)
                if isinstance(event, Final):
                    replayer.listen(expects.get(n + 1 + len(_finals(replayed)), "free"))
        expected = [e for k, e in events if k > at and not isinstance(e, Partial)]
        got = [e for e in replayed if not isinstance(e, Partial)]
        assert [_strip(e) for e in got] == [_strip(e) for e in expected], n


def _strip(event: object) -> object:
    """An event without its wall-clock fields."""
    if isinstance(event, Final):
        return (event.utterance_id, event.text, event.confidence, event.last_voiced_arrived, event.last_entry_id,
                event.checkpoint_entry, event.resume)  # fmt: skip
    if isinstance(event, SpeechStart):
        return event.utterance_id
    return event


# -- the knob -------------------------------------------------------------------------------------------------


def test_stt_early_end_setting(model: RecognizerModel) -> None:
    assert load_settings({}, env_file=None).stt_early_end_ms == 300
    _, embedded = build_provider(load_settings({"STT_EARLY_END_MS": "0"}, env_file=None), model)
    assert embedded.endpointer is not None and embedded.endpointer.early_end_ms == 0
    with pytest.raises(SettingsError, match="STT_EARLY_END_MS"):
        load_settings({"STT_EARLY_END_MS": "-1"}, env_file=None)
    with pytest.raises(SystemExit, match="STT_EARLY_END_MS=20: .*under 40 ms"):
        build_provider(load_settings({"STT_EARLY_END_MS": "20"}, env_file=None), model)
    with pytest.raises(ValueError, match="early_end_ms"):
        EndpointerConfig(early_end_ms=-20)
