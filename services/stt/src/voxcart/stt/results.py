"""What a recognizer tells the stt worker, whatever the provider: onset, partials, finals, discarded noise."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Discarded", "Final", "Partial", "RecognizerEvent", "SpeechProgress", "SpeechStart"]


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """The caller started speaking (``speech.started``)."""

    utterance_id: str
    first_voiced_arrived: float
    """Arrival time (epoch ms) of the first voiced frame."""


@dataclass(frozen=True, slots=True)
class SpeechProgress:
    """The caller is still speaking (``speech.progress``): sent when the utterance's voiced audio reaches each of
    the provider's progress marks, so brain can decide on a barge-in before the utterance ends.

    Attributes:
        utterance_id: the utterance.
        first_voiced_arrived: arrival (epoch ms) of its first voiced frame.
        voiced_ms: voiced audio so far.
        prob: mean speech probability of the voiced frames (0..1).
        text: the words recognized so far ("" if none yet).
    """

    utterance_id: str
    first_voiced_arrived: float
    voiced_ms: float
    prob: float
    text: str


@dataclass(frozen=True, slots=True)
class Partial:
    """The best guess so far (``transcript.partial``); emitted only when it changes."""

    utterance_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Final:
    """The recognized utterance (``transcript.final``).

    Attributes:
        utterance_id: ``<call_sid>:<first entry id>``.
        text: lower-case words; spoken numbers of two or more number words as digits ("order 10023",
            "size 32"), a lone number word kept ("the blue one", "size ten").
        confidence: 0..1, how sure the provider is (PocketSphinx: calibrated from the LM and acoustic scores,
            out-of-domain speech ~0.2; Deepgram: its own; faster-whisper: exp of the mean log-probability).
        first_voiced_arrived: arrival (epoch ms) of the first voiced frame.
        last_voiced_arrived: arrival (epoch ms) of the last voiced frame: turn latency starts here.
        endpointed_at: when the end-of-speech silence was complete (clock ms).
        recognized_at: when the decoder produced the text (clock ms).
        last_entry_id: the entry id of the utterance's last frame.
        checkpoint_entry: where to checkpoint: a fresh recognizer fed the entries after this one (it is a
            little before ``last_entry_id``: the next utterance's pre-roll) reproduces what follows.
        resume: recognizer state to save with the checkpoint and hand to the next owner (PocketSphinx: the
            call's cepstral mean, ``CallRecognizer(cmn=...)``; "" for providers that keep none).
    """

    utterance_id: str
    text: str
    confidence: float
    first_voiced_arrived: float
    last_voiced_arrived: float
    endpointed_at: float
    recognized_at: float
    last_entry_id: str
    checkpoint_entry: str
    resume: str


@dataclass(frozen=True, slots=True)
class Discarded:
    """An utterance that held no words (noise, a cough): no transcript, but the checkpoint may advance."""

    utterance_id: str
    last_entry_id: str
    checkpoint_entry: str
    resume: str
    voiced_ms: float = 0.0
    """Voiced audio the discarded onset held (0 when the provider does not say)."""


RecognizerEvent = SpeechStart | SpeechProgress | Partial | Final | Discarded
