"""Voice-activity detectors for 20 ms frames of 8 kHz int16: Silero v6 (ONNX) and WebRTC's GMM VAD.

Both give each frame a speech probability (WebRTC's is 0 or 1), so the endpointer takes either by name
(:func:`new_detector`, ``STT_VAD``).

:class:`SileroVad` runs the ``silero_vad.onnx`` model that ships in the ``silero-vad`` wheel with onnxruntime
and numpy: the package itself is never imported (its ``__init__`` needs torch, speech.md §3). The model reads
256-sample windows at 8 kHz, each preceded by the last 32 samples of the one before (its context), and carries
an RNN state between windows. Frames are 160 samples, so samples are buffered and a window runs whenever 256
are there (5 windows per 8 frames); a frame's probability is that of the latest window (0 before the first).

Pre-filter: a frame quieter than ``quiet_level`` RMS can't be speech for the endpointer anyway (its level gate
drops it), so after ``quiet_frames`` such frames in a row the detector holds: it stops running the model (the
frame gets probability 0) and drops its state. The first louder frame resumes from a fresh state, with the last
64 ms of quiet audio run in front of it (the model needs the rise of a word to call it early: onset p90 80 ms
on 60 human prompts, 126 ms without). Resuming from a fresh state rather than from one that saw silence keeps
false alarms at zero on a line whose noise hovers around ``quiet_level``. On a quiet line (digital silence, a
muted or noise-gated mobile) this costs ~2 µs a frame instead of ~60-100 µs; on a noisy line it never holds.

Invariants:
- A detector's output is a function of the frames fed since it was created (state, window phase and the
  pre-filter's count included): a fresh detector fed the same frames gives the same probabilities, bit for bit
  (onnxruntime runs single-threaded, so its float sums are in a fixed order). That holds on one kind of CPU; on
  another (other SIMD kernels) the last bits may differ, which changes a decision only for a probability
  within ~1e-6 of a threshold.
- One onnxruntime session per process, created on first use and shared by every detector (``run`` is
  thread-safe); each detector owns only its small state.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from pocketsphinx import Vad

__all__ = [
    "SILERO_PACKAGE",
    "DetectorKind",
    "SileroVad",
    "SpeechDetector",
    "WebRtcVad",
    "load_silero",
    "new_detector",
    "silero_model_path",
]

DetectorKind = Literal["silero", "webrtc"]

SILERO_PACKAGE = "silero-vad==6.2.3"
"""The wheel that ships the model (installed without torch; see the root pyproject's override-dependencies)."""

_SAMPLE_RATE = 8000
_FRAME_SAMPLES = 160
_WINDOW = 256
"""Samples per Silero window at 8 kHz."""
_CONTEXT = 32
"""Samples of the previous window in front of each one at 8 kHz."""
_LOOKBACK = 512
"""Quiet samples run in front of the first loud frame after the pre-filter held (64 ms): the model needs the
rise of a word to call it early."""

Float32Array = npt.NDArray[np.float32]


class SpeechDetector(Protocol):
    """Gives each 20 ms frame of 8 kHz int16 a speech probability, 0..1."""

    def probability(self, pcm: bytes, rms: float) -> float:
        """The next frame's speech probability.

        Args:
            pcm: 160 samples of int16 little-endian (320 bytes).
            rms: the frame's RMS level (int16 units), which the caller has computed anyway.
        """
        ...


def silero_model_path() -> Path:
    """Where the installed ``silero-vad`` wheel keeps ``silero_vad.onnx`` (found without importing the package).

    Raises:
        FileNotFoundError: the package is not installed, or its wheel has no model file.
    """
    spec = importlib.util.find_spec("silero_vad")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise FileNotFoundError(
            f"Silero VAD: the silero_vad package is not installed (pip install --no-deps {SILERO_PACKAGE}), "
            "or set STT_VAD=webrtc"
        )
    path = Path(locations[0]) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"Silero VAD: {path} is missing; reinstall {SILERO_PACKAGE} (or set STT_VAD=webrtc)")
    return path


class _SileroModel:
    """The process's one Silero session, single-threaded (a window is ~50 µs: threads would only add overhead)."""

    def __init__(self, path: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self._sr = np.array(_SAMPLE_RATE, dtype=np.int64)

    def run(self, window: Float32Array, state: Float32Array) -> tuple[float, Float32Array]:
        """One window (context + 256 samples): its speech probability and the next state."""
        prob, next_state = self._session.run(None, {"input": window, "state": state, "sr": self._sr})
        return float(prob[0, 0]), next_state


_model_lock = threading.Lock()
_model: _SileroModel | None = None


def _silero() -> _SileroModel:
    global _model
    with _model_lock:
        if _model is None:
            _model = _SileroModel(silero_model_path())
        return _model


def load_silero() -> None:
    """Load the process's Silero session now (~50 ms) rather than on the first call's first frame.

    Call it at worker start with ``STT_VAD=silero``, so that a missing model fails the start, not a call.

    Raises:
        FileNotFoundError: the model file is missing (see :func:`silero_model_path`).
    """
    _silero()


class SileroVad:
    """Silero v6 on one call's frames (see the module docstring).

    Args:
        quiet_level: frames under this RMS (int16 units) count as quiet for the pre-filter; 0 turns it off.
        quiet_frames: quiet frames in a row after which the model stops running, until a louder frame.

    Raises:
        FileNotFoundError: the model file is missing (see :func:`silero_model_path`).
        ValueError: a knob is out of range.
    """

    def __init__(self, quiet_level: float = 50.0, quiet_frames: int = 5) -> None:
        if not 0 <= quiet_level < 32768:
            raise ValueError(f"SileroVad: quiet_level {quiet_level!r} is outside 0..32767")
        if quiet_frames < 1:
            raise ValueError(f"SileroVad: quiet_frames {quiet_frames!r} is under 1")
        self._model = _silero()
        self._quiet_level = quiet_level
        self._quiet_frames = quiet_frames
        self._input: Float32Array = np.zeros((1, _CONTEXT + _WINDOW), dtype=np.float32)
        self._state: Float32Array = np.zeros((2, 1, 128), dtype=np.float32)
        self._pending: Float32Array = np.zeros(0, dtype=np.float32)
        """Samples not run yet (under 256)."""
        self._recent: Float32Array = self._pending
        """While the pre-filter holds: the last context + lookback quiet samples."""
        self._quiet_run = 0
        self._prob = 0.0
        self.windows = 0
        """Model runs so far (for cost accounting)."""

    def probability(self, pcm: bytes, rms: float) -> float:
        """The next frame's speech probability: the latest window's (0 while the pre-filter holds)."""
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        if rms < self._quiet_level:
            self._quiet_run += 1
            if self._quiet_run >= self._quiet_frames:
                if self._quiet_run == self._quiet_frames:  # the line went quiet: hold, and start afresh after
                    self._state = np.zeros((2, 1, 128), dtype=np.float32)
                    self._recent = np.concatenate((np.zeros(_CONTEXT + _LOOKBACK, np.float32), self._pending))
                    self._pending = np.zeros(0, dtype=np.float32)
                    self._prob = 0.0
                self._recent = np.concatenate((self._recent, samples))[-(_CONTEXT + _LOOKBACK) :]
                return 0.0
        elif self._quiet_run >= self._quiet_frames:  # loud again: resume with the last quiet samples in front
            self._input[0, :_CONTEXT] = self._recent[:_CONTEXT]
            self._pending = self._recent[_CONTEXT:]
            self._quiet_run = 0
        else:
            self._quiet_run = 0
        self._pending = np.concatenate((self._pending, samples)) if len(self._pending) else samples
        while len(self._pending) >= _WINDOW:
            self._input[0, _CONTEXT:] = self._pending[:_WINDOW]
            self._pending = self._pending[_WINDOW:]
            self._prob, self._state = self._model.run(self._input, self._state)
            self._input[0, :_CONTEXT] = self._input[0, -_CONTEXT:]
            self.windows += 1
        return self._prob


class WebRtcVad:
    """WebRTC's GMM VAD (``pocketsphinx.Vad``, ~1.5 µs a frame): probability 1.0 for speech, else 0.0.

    Args:
        mode: aggressiveness, ``Vad.LOOSE`` (0) to ``Vad.STRICT`` (3). LOOSE flags most noise as speech
            (speech.md §3).

    Raises:
        ValueError: ``mode`` is not 0..3.
    """

    def __init__(self, mode: int = Vad.STRICT) -> None:
        if mode not in (Vad.LOOSE, Vad.MEDIUM_LOOSE, Vad.MEDIUM_STRICT, Vad.STRICT):
            raise ValueError(f"WebRtcVad: mode {mode!r} is not 0..3")
        self._vad = Vad(mode, _SAMPLE_RATE, _FRAME_SAMPLES / _SAMPLE_RATE)

    def probability(self, pcm: bytes, rms: float) -> float:
        """1.0 if the frame is speech, else 0.0."""
        return 1.0 if self._vad.is_speech(pcm) else 0.0


def new_detector(kind: DetectorKind, *, webrtc_mode: int = Vad.STRICT, quiet_level: float = 50.0) -> SpeechDetector:
    """A fresh detector of the given kind.

    Args:
        kind: ``"silero"`` or ``"webrtc"`` (``STT_VAD``).
        webrtc_mode: WebRTC's aggressiveness (``"webrtc"`` only).
        quiet_level: the Silero pre-filter's level (``"silero"`` only); 0 turns it off.

    Raises:
        ValueError: an unknown kind or a bad knob.
        FileNotFoundError: Silero's model file is missing.
    """
    if kind == "silero":
        return SileroVad(quiet_level=quiet_level)
    if kind == "webrtc":
        return WebRtcVad(webrtc_mode)
    raise ValueError(f"new_detector: unknown VAD {kind!r}, expected 'silero' or 'webrtc'")
