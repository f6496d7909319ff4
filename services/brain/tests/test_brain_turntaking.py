"""The turn-taking decisions (pure): onsets pause only when the policy asks (and are then debounced after noise),
sustained or stop-word speech interrupts, backchannels, scraps and music are ignored."""

from __future__ import annotations

import pytest

from voxcart.brain.turntaking import (
    Barge,
    Policy,
    heard_and_cut,
    is_backchannel,
    on_final,
    on_onset,
    on_progress,
    remember_noise,
)

P = Policy()
PAUSING = Policy(pause_on_onset=True)


@pytest.mark.parametrize(
    "text", ["uh huh", "uh-huh", "mm hmm", "yeah", "okay", "Okay, right.", "sure", "yeah right", "up", "am um i'm"]
)
def test_brain_backchannels_are_recognized(text: str) -> None:
    assert is_backchannel(text)
    assert on_final(True, text, 0.9, 300.0, P) == "ignore"


@pytest.mark.parametrize("text", ["", "wait", "no that's wrong", "okay but where is my order", "yes"])
def test_brain_words_with_content_are_not_backchannels(text: str) -> None:
    assert not is_backchannel(text)


def test_brain_onset_changes_nothing_by_default() -> None:
    assert on_onset(True, 10_000.0, Barge(), P) == "none"  # a backchannel's onset looks like an interruption's
    assert on_onset(False, 10_000.0, Barge(), P) == "none"


def test_brain_onset_pauses_only_while_the_agent_speaks_when_asked_to() -> None:
    assert on_onset(True, 10_000.0, Barge(), PAUSING) == "pause"
    assert on_onset(False, 10_000.0, Barge(), PAUSING) == "none"


def test_brain_repeated_noise_onsets_are_debounced() -> None:
    barge = Barge()
    remember_noise(barge, 10_000.0, PAUSING)
    assert on_onset(True, 11_000.0, barge, PAUSING) == "pause"  # one noise onset: still pause on the next
    remember_noise(barge, 11_000.0, PAUSING)
    assert on_onset(True, 12_000.0, barge, PAUSING) == "none"  # hold music: two noise onsets in 5 s
    assert on_onset(True, 16_500.0, barge, PAUSING) == "pause"  # the window has passed
    for t in range(20):
        remember_noise(barge, 20_000.0 + t, PAUSING)
    assert len(barge.noise_at) <= 8


@pytest.mark.parametrize(
    ("voiced", "prob", "text", "expected"),
    [
        (200.0, 0.95, "", "none"),  # too short to tell from "uh huh"
        (180.0, 0.95, "where", "none"),
        (200.0, 0.95, "where", "interrupt"),  # a word that is no backchannel: an interruption
        (200.0, 0.95, "no that", "interrupt"),
        (200.0, 0.95, "i", "none"),  # "uh huh" as the recognizer hears it
        (400.0, 0.95, "am um i'm", "none"),  # "mm hmm"
        (200.0, 0.95, "but", "none"),  # "okay" as the recognizer hears its first 200 ms
        (400.0, 0.95, "but i", "interrupt"),  # "but i ordered..."
        (400.0, 0.95, "", "none"),  # no words yet: "mm hmm" is 440 ms of voice
        (600.0, 0.95, "", "interrupt"),  # sustained confident voice
        (400.0, 0.95, "where is", "interrupt"),
        (400.0, 0.95, "uh huh", "none"),  # still only a backchannel
        (600.0, 0.5, "where is my", "none"),  # not confident voice (music, a voice in the room)
    ],
)
def test_brain_progress_interrupts_on_sustained_or_stop_word_speech(
    voiced: float, prob: float, text: str, expected: str
) -> None:
    assert on_progress(True, voiced, prob, text, P) == expected


def test_brain_nothing_interrupts_a_silent_agent() -> None:
    assert on_progress(False, 800.0, 0.99, "wait", P) == "none"
    assert on_final(False, "uh huh", 0.9, 300.0, P) == "none"


def test_brain_final_while_speaking_interrupts_unless_a_scrap() -> None:
    assert on_final(True, "where is my order", 0.9, 900.0, P) == "interrupt"
    assert on_final(True, "an item", 0.2, 400.0, P) == "ignore"  # a short low-confidence scrap
    assert on_final(True, "an item i want", 0.2, 1200.0, P) == "interrupt"  # long: the caller means it


@pytest.mark.parametrize(
    ("prob", "expected"),
    [
        (0.66, "ignore"),  # the bench's hold-music tones, which the recognizer heard as "old" (0.98)
        (0.69, "ignore"),
        (0.7, "interrupt"),
        (0.95, "interrupt"),  # the caller's voice
        (None, "interrupt"),  # no progress seen: the words decide
    ],
)
def test_brain_a_final_of_music_does_not_interrupt(prob: float | None, expected: str) -> None:
    assert on_final(True, "old", 0.98, 300.0, P, prob=prob) == expected
    assert on_final(True, "where is my order", 0.9, 980.0, P, prob=prob) == expected
    assert on_final(False, "old", 0.98, 300.0, P, prob=prob) == "none"  # not speaking: answered as usual


def test_brain_heard_and_cut_keeps_what_played_and_the_cut_sentence() -> None:
    said = ["One.", "Two.", "Three."]
    assert heard_and_cut(said, -1) == ["One."]
    assert heard_and_cut(said, 0) == ["One.", "Two."]
    assert heard_and_cut(said, 2) == said


def test_brain_policy_rejects_bad_thresholds() -> None:
    with pytest.raises(ValueError, match="min_prob"):
        Policy(min_prob=1.5)
    with pytest.raises(ValueError, match="interrupt_voiced_ms"):
        Policy(interrupt_voiced_ms=-1)
    with pytest.raises(ValueError, match="noise_onsets"):
        Policy(noise_onsets=0)
