"""Voice-activity endpointing of one call's 20 ms frames, with pre-roll and a configurable end-of-speech silence.

Built on ``pocketsphinx.Vad`` (WebRTC's GMM VAD, ~1.5 µs per 8 kHz frame; STRICT mode, since LOOSE flags most
noise frames as speech, speech.md §3) instead of ``pocketsphinx.Endpointer``, whose single window/ratio couples
the start decision to the end silence (a 550 ms end silence would need ~500 ms of speech to start, longer than
a short "no").

Rules (a frame is *voiced* when the VAD says speech and its level passes a gate, see ``EndpointerConfig``):
- **Start**: ``start_voiced_ms`` of voiced frames within the last ``start_window_ms``. The utterance begins
  ``pre_roll_ms`` before the first of those voiced frames (PocketSphinx needs ~300 ms of non-speech in front),
  or at the oldest frame retained since the last rebase.
- **End**: ``end_silence_ms`` of frames without speech. A lone voiced frame (a click, a VAD false alarm) is not
  speech; two voiced frames in a row are, and restart the count. The silent tail stays in the utterance as
  post-roll. ``max_utterance_ms`` forces an end.

Invariants (replay determinism, what a takeover relies on):
- While idle, the state is a function of the frames fed since the last *rebase* only. A rebase (at every
  utterance end, and on :meth:`VadEndpointer.rebase`) starts a fresh VAD and feeds it the retained pre-roll
  frames; :attr:`VadEndpointer.base_entry` is the entry just before them. A fresh endpointer fed the frames
  after ``base_entry`` is therefore in exactly the same state.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from pocketsphinx import Vad

__all__ = ["EndpointerConfig", "Frame", "Step", "VadEndpointer"]

_FRAME_MS = 20
_PCM_BYTES = 320
"""One 20 ms frame of 8 kHz int16."""


@dataclass(frozen=True)
class EndpointerConfig:
    """Endpointing knobs, all in milliseconds (rounded to 20 ms frames)."""

    end_silence_ms: int = 560
    """Silence after speech that ends the utterance: the main knob of turn latency."""
    pre_roll_ms: int = 400
    """Audio kept in front of the first voiced frame. PocketSphinx needs ~300 ms; on 64 piper utterances 400 ms
    gave 7.8-8.1 % WER against 8.7-9.3 % at 200-300 ms (short first words like "do", "is" survive)."""
    start_window_ms: int = 160
    """Window in which ``start_voiced_ms`` of voiced frames starts an utterance."""
    start_voiced_ms: int = 100
    """Voiced audio needed inside ``start_window_ms`` to start an utterance (and ``speech.started``)."""
    max_utterance_ms: int = 20_000
    """An utterance is cut here even if the caller keeps talking."""
    vad_mode: int = Vad.STRICT
    """``pocketsphinx.Vad`` aggressiveness, 0 (LOOSE) to 3 (STRICT)."""
    min_level: float = 50.0
    """A frame quieter than this RMS (int16 units; ~ -56 dBFS) is never speech."""
    noise_ratio: float = 2.0
    """Between utterances a frame is speech only if its RMS is this many times the line's noise floor (the
    median RMS of the retained frames): drops the VAD's hangover after a click and its false alarms on hiss."""
    speech_ratio: float = 0.1
    """Inside an utterance a frame is speech only if its RMS is at least this fraction of the utterance's mean
    speech RMS (and ``noise_ratio`` times the floor measured at its start): drops the VAD's 60-120 ms
    hangover, so ``last_voiced`` is the real end of the words."""

    def __post_init__(self) -> None:
        for name in ("end_silence_ms", "pre_roll_ms", "start_window_ms", "start_voiced_ms", "max_utterance_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"EndpointerConfig.{name}: {value!r} is not a non-negative integer (ms)")
        if self.end_silence_ms < 2 * _FRAME_MS:
            raise ValueError(f"EndpointerConfig.end_silence_ms: {self.end_silence_ms} is under 40 ms")
        if not _FRAME_MS <= self.start_voiced_ms <= self.start_window_ms:
            raise ValueError(
                f"EndpointerConfig.start_voiced_ms: {self.start_voiced_ms} must be within 20..start_window_ms "
                f"({self.start_window_ms})"
            )
        if self.max_utterance_ms < self.start_window_ms + self.end_silence_ms:
            raise ValueError(f"EndpointerConfig.max_utterance_ms: {self.max_utterance_ms} is too short")
        if self.vad_mode not in (Vad.LOOSE, Vad.MEDIUM_LOOSE, Vad.MEDIUM_STRICT, Vad.STRICT):
            raise ValueError(f"EndpointerConfig.vad_mode: {self.vad_mode!r} is not 0..3")
        for name in ("min_level", "noise_ratio", "speech_ratio"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1e6:
                raise ValueError(f"EndpointerConfig.{name}: {value!r} is not a non-negative number")


@dataclass(frozen=True, slots=True)
class Frame:
    """One 20 ms frame as the endpointer saw it."""

    entry_id: str
    pcm: bytes
    """8 kHz int16 little-endian, 320 bytes."""
    arrived: float
    rms: float
    voiced: bool
    """The VAD said speech and the level gate agreed."""


@dataclass(slots=True)
class Step:
    """What one frame did.

    Attributes:
        started: an utterance started on this frame; ``frames`` then holds its pre-roll too.
        frames: frames to hand to the recognizer now, in order (empty while idle).
        ended: the utterance ended on this frame (``frames`` holds its last frame).
    """

    started: bool = False
    frames: list[Frame] = field(default_factory=list)
    ended: bool = False


def _ms_to_frames(ms: int) -> int:
    return ms // _FRAME_MS


class VadEndpointer:
    """Splits one call's frames into utterances.

    Args:
        config: the endpointing knobs.
        start_after: the entry the stream is replayed after (a checkpoint); ``"0-0"`` is the stream's start.
    """

    def __init__(self, config: EndpointerConfig | None = None, start_after: str = "0-0") -> None:
        self.config = cfg = config or EndpointerConfig()
        self._pre_roll = _ms_to_frames(cfg.pre_roll_ms)
        self._window = _ms_to_frames(cfg.start_window_ms)
        self._start_voiced = _ms_to_frames(cfg.start_voiced_ms)
        self._end_frames = _ms_to_frames(cfg.end_silence_ms)
        self._max_frames = _ms_to_frames(cfg.max_utterance_ms)
        self._vad = Vad(cfg.vad_mode, 8000, _FRAME_MS / 1000)
        self._history: deque[Frame] = deque(maxlen=self._pre_roll + self._window)
        """Frames since the last rebase (newest last); ``base_entry`` precedes the oldest."""
        self._in_speech = False
        self._silence_run = 0
        self._prev_voiced = False
        self._length = 0
        self._level_sum = 0.0
        self._level_n = 0
        self._floor = 0.0
        self.base_entry: str = start_after
        """The entry just before the oldest retained frame: replay after it reproduces the idle state."""
        self.last_entry: str = start_after
        """The last entry fed."""
        self.first_voiced: Frame | None = None
        """The first voiced frame of the utterance in progress."""
        self.last_voiced: Frame | None = None
        """The last voiced frame of the utterance in progress (kept after it ends)."""
        self.utterance_start: str | None = None
        """The first entry (pre-roll included) of the utterance in progress; ``None`` while idle."""

    @property
    def in_speech(self) -> bool:
        """An utterance is in progress."""
        return self._in_speech

    def process(self, entry_id: str, pcm: bytes, arrived: float) -> Step:
        """Classify the next frame and advance the state machine.

        Args:
            entry_id: the frame's bus entry id.
            pcm: 20 ms of 8 kHz int16 little-endian (320 bytes).
            arrived: the frame's arrival time (epoch ms).

        Raises:
            ValueError: ``pcm`` is not 320 bytes.
        """
        if len(pcm) != _PCM_BYTES:
            raise ValueError(f"VadEndpointer.process: entry {entry_id}: {len(pcm)} PCM bytes, expected 320")
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
        rms = math.sqrt(float(samples @ samples) / len(samples))
        voiced = bool(self._vad.is_speech(pcm)) and rms >= self._gate(rms)
        frame = Frame(entry_id, pcm, arrived, rms, voiced)
        if voiced and self._in_speech:
            self._level_sum += rms
            self._level_n += 1
        history = self._history
        if len(history) == history.maxlen:
            self.base_entry = history[0].entry_id
        history.append(frame)
        self.last_entry = entry_id
        return self._continue(frame) if self._in_speech else self._idle(frame)

    def _gate(self, rms: float) -> float:
        """The RMS a frame needs to count as speech (called only when it is loud enough to matter)."""
        cfg = self.config
        if rms < cfg.min_level:
            return cfg.min_level
        if self._in_speech:
            speech = cfg.speech_ratio * self._level_sum / max(1, self._level_n)
            return max(cfg.min_level, speech, cfg.noise_ratio * self._floor)
        return max(cfg.min_level, cfg.noise_ratio * self._noise_floor())

    def _noise_floor(self) -> float:
        """The median RMS of the retained frames."""
        levels = sorted(f.rms for f in self._history)
        return levels[len(levels) // 2] if levels else 0.0

    def _idle(self, frame: Frame) -> Step:
        history = self._history
        if not frame.voiced:
            return Step()
        frames = list(history)
        window_start = max(0, len(frames) - self._window)
        voiced = [i for i in range(window_start, len(frames)) if frames[i].voiced]
        if len(voiced) < self._start_voiced:
            return Step()
        first = frames[voiced[0]]
        self._floor = self._noise_floor()
        self._level_sum = sum(frames[i].rms for i in voiced)
        self._level_n = len(voiced)
        frames = frames[max(0, voiced[0] - self._pre_roll) :]
        self._in_speech = True
        self._silence_run = 0
        self._prev_voiced = True
        self._length = len(frames)
        self.first_voiced = first
        self.last_voiced = frame
        self.utterance_start = frames[0].entry_id
        return Step(started=True, frames=frames)

    def _continue(self, frame: Frame) -> Step:
        self._length += 1
        if frame.voiced and self._prev_voiced:
            self._silence_run = 0
            self.last_voiced = frame
        else:
            self._silence_run += 1
        self._prev_voiced = frame.voiced
        step = Step(frames=[frame])
        if self._silence_run >= self._end_frames or self._length >= self._max_frames:
            step.ended = True
            self.end()
        return step

    def end(self) -> None:
        """End the utterance in progress now (also used for call end or drain), then rebase on its tail."""
        if self._in_speech:
            self._in_speech = False
            self.first_voiced = None
            self.utterance_start = None
            self._rebase()

    def rebase(self) -> str | None:
        """Make the idle state replayable from a recent entry, and return that entry (``None`` in speech).

        A fresh VAD is fed the last ``pre_roll_ms`` of frames again; if they would start an utterance, they are
        dropped instead. Call this only when the result is checkpointed: it changes the VAD state, and a
        replaying owner reproduces only the rebases that were checkpointed.
        """
        if self._in_speech:
            return None
        self._rebase()
        return self.base_entry

    def _rebase(self) -> None:
        history = list(self._history)
        k = max(0, len(history) - self._pre_roll)
        before = history[k - 1].entry_id if k > 0 else self.base_entry
        while k < len(history) and history[k].entry_id == before:
            k += 1  # an entry holding two frames is replayed whole or not at all
        trial = VadEndpointer(self.config, start_after=before)
        for f in history[k:]:
            if trial.process(f.entry_id, f.pcm, f.arrived).started:
                trial = VadEndpointer(self.config, start_after=self.last_entry)
                break
        self._vad, self._history, self.base_entry = trial._vad, trial._history, trial.base_entry
