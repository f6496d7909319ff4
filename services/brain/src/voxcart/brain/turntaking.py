"""Turn-taking while the agent speaks: is the caller's speech an interruption, a backchannel, or noise?

Pure decisions, no I/O: the worker feeds them the stt events of the caller's speech (``speech.started``,
``speech.progress``, ``transcript.final``, ``speech.ended``) together with whether the agent is speaking, and
acts on the :data:`Action` they return.

The policy (a good human agent's):
- **Onset** while the agent speaks: nothing by default. A backchannel's onset cannot be told from an
  interruption's, and holding the agent's audio until the backchannel's final (its end silence, 560 ms, plus
  decoding) stopped the agent for 0.7-1.0 s on every backchannel in the barge-in bench, longer than a listener
  takes for "the agent stopped". With :attr:`Policy.pause_on_onset` the onset ``"pause"``s instead (the gateway
  holds the agent's audio, reversibly); repeated onsets that all turned out to be noise are then debounced:
  after :attr:`Policy.noise_onsets` of them within :attr:`Policy.noise_window_ms`, an onset no longer pauses.
- **Progress** (the caller still speaking, confident voice): ``"interrupt"`` after :attr:`Policy.word_voiced_ms` if
  the words so far include one that is not a backchannel word ("where", "no", "hold") nor one of the
  :data:`EARLY_AMBIGUOUS_WORDS`, after twice that with any such word, after :attr:`Policy.interrupt_voiced_ms`
  even without words; never while all the words so far are backchannel words.
  Measured with the piper caller voice and the demo store's language model, the words at 200 ms of voice were
  "where" (where is my order), "no" (no that's wrong), "all" (hold on), "how" (sorry), but "i" (uh huh),
  "am" (mm hmm), "yeah", "sure", and "but" (okay: the one false interruption of that set).
- **Final** while the agent speaks (and no interruption yet): a backchannel ("uh huh", "okay", "right", "sure"),
  a short low-confidence scrap, or an utterance whose speech probability at its last progress was below
  :attr:`Policy.min_prob` (hold music and tones: Silero gave the bench's tones 0.60-0.68, the caller voice
  0.93-0.99, while the recognizer made words of the tones, "old" at 0.98 confidence) is ``"ignore"``d (the
  agent carries on; it is not answered); anything else ``"interrupt"``s and is answered.
- **Ended** (an onset without words: a cough, a door): ``"resume"`` if it paused the agent.
- An utterance that already **cut** the agent's turn (sustained voice) and then ends without words, or with a
  final that :func:`on_final` would ignore, was no interruption either: the worker says the turn again from the
  sentence it cut (the caller has not heard the rest), instead of leaving a silence or answering the noise.

Invariants:
- A decision depends only on its arguments (times are event times, not the clock), so a brain replica that
  replays the same events decides the same.
- Backchannel words are matched on whole normalized words; a text that is empty is never a backchannel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from .text import tokens

__all__ = [
    "BACKCHANNEL_WORDS",
    "EARLY_AMBIGUOUS_WORDS",
    "Action",
    "Barge",
    "Policy",
    "heard_and_cut",
    "is_backchannel",
    "on_final",
    "on_onset",
    "on_progress",
    "remember_noise",
]

Action = Literal["none", "pause", "resume", "interrupt", "ignore"]
"""What to do: nothing, hold the agent's audio, send it on, cut the turn (cancel + clear), or drop a final."""

BACKCHANNEL_WORDS = frozenset(
    {
        "uh", "huh", "uhhuh", "mm", "mmm", "hmm", "hm", "mhm", "mmhmm", "um", "uhm", "er", "ah", "oh", "aha",
        "yeah", "yep", "yup", "okay", "ok", "right", "sure", "alright", "i", "see", "got", "it", "cool", "great",
        "fine", "good", "gotcha",
        # what the recognizer makes of "uh huh" and "mm hmm" (measured: "up", "i", "am um i'm", "an a")
        "up", "am", "a", "an",
    }
)  # fmt: skip
"""Words of "I'm listening, go on" (and what the recognizer hears for them): a final made only of these, said
while the agent speaks, does not stop it."""

EARLY_AMBIGUOUS_WORDS = frozenset({"but", "and", "to"})
"""Words the recognizer makes of a backchannel's first 200 ms too ("okay" -> "but", "sure" -> "to"): they count
only from twice :attr:`Policy.word_voiced_ms` on."""


@dataclass(frozen=True)
class Policy:
    """The thresholds (durations in ms of voiced audio; probabilities and confidences 0..1)."""

    interrupt_voiced_ms: float = 600.0
    """Confident voice this long interrupts even without words (backchannels are shorter: "uh huh", "yeah" and
    "okay" were 220-340 ms of voice in the caller voice's rendering, "mm hmm" 440 ms)."""
    word_voiced_ms: float = 200.0
    """With a word that is not a backchannel among the words so far, this much voice interrupts (the barge-in
    reaction budget is 300 ms from the first voiced frame to the ``clear``)."""
    min_prob: float = 0.7
    """Mean speech probability below which progress never interrupts (music, a muffled voice in the room)."""
    min_confidence: float = 0.4
    """A final below this confidence and shorter than :attr:`scrap_ms` while the agent speaks is ignored."""
    scrap_ms: float = 600.0
    noise_onsets: int = 2
    """Onsets that ended as noise within :attr:`noise_window_ms` after which onsets stop pausing the agent."""
    noise_window_ms: float = 5000.0
    pause_on_onset: bool = False
    """Hold the agent's audio at every onset while it speaks (see the module policy: off, backchannels then stop
    the agent for longer than they last)."""

    def __post_init__(self) -> None:
        for name in ("interrupt_voiced_ms", "word_voiced_ms", "scrap_ms", "noise_window_ms"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"Policy.{name}: {value!r} is not a non-negative duration (ms)")
        for name in ("min_prob", "min_confidence"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"Policy.{name}: {value!r} is not within 0..1")
        if self.noise_onsets < 1:
            raise ValueError(f"Policy.noise_onsets: {self.noise_onsets!r} is under 1")


class Barge(msgspec.Struct, kw_only=True):
    """Brain's turn-taking state of a call (part of the committed state, so a takeover continues it)."""

    utterance_id: str = ""
    """The caller utterance (an onset while the agent spoke) the fields below are about."""
    onset_at: float = 0.0
    """Arrival of that utterance's first voiced frame."""
    paused_turn: int = 0
    """The agent turn that utterance paused (0: none)."""
    interrupted_turn: int = 0
    """The last agent turn cut by a barge-in (cancel + clear already sent)."""
    prob: float = -1.0
    """That utterance's mean speech probability at its latest ``speech.progress`` (-1: none yet)."""
    noise_at: list[float] = msgspec.field(default_factory=list)
    """First-voiced times of recent onsets that turned out to be noise or a backchannel (for the debounce)."""
    unheard: list[str] = msgspec.field(default_factory=list)
    """Rules mode: the sentences of turn ``interrupted_turn`` the caller did not hear in full, the cut one first
    (said again when the utterance that cut them turns out to be no interruption)."""


def is_backchannel(text: str) -> bool:
    """Whether ``text`` is only backchannel words ("uh huh", "okay", "yeah right"); ``""`` is not."""
    words = _words(text)
    return bool(words) and all(w in BACKCHANNEL_WORDS for w in words)


def on_onset(speaking: bool, voiced_at: float, barge: Barge, policy: Policy) -> Action:
    """``speech.started``: pause the agent if it is speaking and :attr:`Policy.pause_on_onset` is set (unless recent
    onsets were all noise).

    Args:
        speaking: the agent's latest turn has not finished playing and was not interrupted.
        voiced_at: arrival of the onset's first voiced frame (epoch ms).
        barge: the call's turn-taking state (read only).
        policy: the thresholds.
    """
    if not speaking or not policy.pause_on_onset:
        return "none"
    recent = [t for t in barge.noise_at if 0 <= voiced_at - t <= policy.noise_window_ms]
    return "none" if len(recent) >= policy.noise_onsets else "pause"


def on_progress(speaking: bool, voiced_ms: float, prob: float, text: str, policy: Policy) -> Action:
    """``speech.progress``: interrupt once the voice is long or confident enough (see the module policy).

    Args:
        speaking: as for :func:`on_onset`.
        voiced_ms: voiced audio of the caller's utterance so far.
        prob: its mean speech probability.
        text: the recognizer's words so far.
        policy: the thresholds.
    """
    if not speaking or prob < policy.min_prob:
        return "none"
    words = _words(text)
    if words and all(w in BACKCHANNEL_WORDS for w in words):
        return "none"
    if voiced_ms >= policy.interrupt_voiced_ms:
        return "interrupt"
    early = [w for w in words if w not in EARLY_AMBIGUOUS_WORDS]
    if (voiced_ms >= policy.word_voiced_ms and early) or (voiced_ms >= 2 * policy.word_voiced_ms and words):
        return "interrupt"
    return "none"


def on_final(
    speaking: bool, text: str, confidence: float, voiced_ms: float, policy: Policy, *, prob: float | None = None
) -> Action:
    """``transcript.final`` while the agent may be speaking: ``"none"`` (not speaking: answer as usual),
    ``"ignore"`` (a backchannel, a scrap, or music: carry on, do not answer) or ``"interrupt"`` (cut the turn,
    answer).

    Args:
        speaking: as for :func:`on_onset`.
        text: the final's words.
        confidence: its confidence.
        voiced_ms: its voiced span (first to last voiced frame).
        policy: the thresholds.
        prob: the utterance's mean speech probability at its latest ``speech.progress``; ``None`` if it had none.
    """
    if not speaking:
        return "none"
    if is_backchannel(text):
        return "ignore"
    if prob is not None and prob < policy.min_prob:
        return "ignore"
    if confidence < policy.min_confidence and voiced_ms < policy.scrap_ms:
        return "ignore"
    return "interrupt"


def remember_noise(barge: Barge, voiced_at: float, policy: Policy) -> None:
    """Note an onset that turned out not to be an interruption (for the debounce of :func:`on_onset`)."""
    barge.noise_at = [t for t in barge.noise_at if 0 <= voiced_at - t <= policy.noise_window_ms][-7:] + [voiced_at]


def heard_and_cut(sentences: Sequence[str], heard_seq: int) -> list[str]:
    """What the caller heard of a cut reply: the sentences whose marks echoed as played, plus the cut one."""
    return list(sentences[: max(0, heard_seq + 2)])


def _words(text: str) -> list[str]:
    return tokens(text)
