"""espeak-ng through ctypes: the embedded, pip-installed speech engine.

The shared library and its data come from the ``espeakng-loader`` wheel (no apt). espeak-ng keeps all of its
state in C globals (voice, parameters, the synthesis callback), so this module enforces:

* **one initialization per process**: :func:`get_espeak` returns the single :class:`Espeak`, created on first
  use under a module lock (``espeak_Initialize`` in ``AUDIO_OUTPUT_SYNCHRONOUS`` mode, 22050 Hz);
* **one synthesis at a time**: :meth:`Espeak.synthesize` holds :attr:`Espeak.lock` from setting the voice to the
  last sample, so callers on any number of threads serialize and never see each other's voice, rate or audio;
* **no Python exception escapes into C**: an error raised by a caller's sink aborts synthesis (the callback
  returns 1) and is re-raised from :meth:`Espeak.synthesize` in the calling thread.

In synchronous mode ``espeak_Synth`` runs the whole synthesis on the calling thread and hands int16 samples to
the callback every 60 ms of audio; ctypes releases the GIL while espeak computes.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import espeakng_loader
import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_VOICE",
    "Espeak",
    "EspeakError",
    "SynthResult",
    "VoiceSettings",
    "get_espeak",
]

log = logging.getLogger("voxcart.tts.espeak")

DEFAULT_VOICE = "en-us+f3"
"""A female en-us variant; clearer on a phone line than espeak's default male voice."""

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, flags and error codes from speak_lib.h (espeak-ng 1.52).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() when the data is missing
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_EE_OK = 0
_EE_NOT_FOUND = 2

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

RATE_RANGE = (80, 450)
PITCH_RANGE = (0, 100)
VOLUME_RANGE = (0, 200)


class EspeakError(RuntimeError):
    """espeak-ng could not be loaded or initialized, or rejected a call."""


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    """What a synthesis sounds like.

    Attributes:
        voice: an espeak-ng voice name, optionally with a variant: ``"en-us"``, ``"en-us+f3"``, ``"en-gb-x-rp"``.
        rate: speaking rate in words per minute (espeak's default is 175).
        pitch: base pitch, 0-100 (espeak's default is 50).
        volume: amplitude, 0-200 (espeak's default is 100).
    """

    voice: str = DEFAULT_VOICE
    rate: int = 165
    pitch: int = 50
    volume: int = 100

    def __post_init__(self) -> None:
        if not self.voice or not self.voice.isascii() or any(c.isspace() for c in self.voice):
            raise ValueError(f"VoiceSettings.voice: expected an espeak voice name like 'en-us+f3', got {self.voice!r}")
        for name, value, (lo, hi) in (
            ("rate", self.rate, RATE_RANGE),
            ("pitch", self.pitch, PITCH_RANGE),
            ("volume", self.volume, VOLUME_RANGE),
        ):
            if not lo <= value <= hi:
                raise ValueError(f"VoiceSettings.{name}: expected {lo}..{hi}, got {value!r}")


@dataclass(frozen=True, slots=True)
class SynthResult:
    """The outcome of one :meth:`Espeak.synthesize` call.

    Attributes:
        samples: int16 samples handed to the sink.
        completed: False when the sink asked to stop before the end of the text.
    """

    samples: int
    completed: bool


Sink = Callable[[npt.NDArray[np.int16]], bool]
"""Receives each block of int16 samples (a copy it may keep); returns False to abort synthesis."""


class Espeak:
    """The process's espeak-ng engine. Use :func:`get_espeak`; do not construct it directly."""

    BLOCK_MS = 60
    """Audio per callback (espeak's ``buflength``): 60 ms is the smallest block espeak-ng 1.52 honours."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        """Held for the whole of every call into espeak-ng; callers never need to take it themselves."""
        self._lib = self._load()
        data_path = espeakng_loader.get_data_path().encode()
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, self.BLOCK_MS, data_path, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data path {data_path.decode()!r}")
        self.sample_rate: int = rate
        """Output sample rate in Hz (22050 for espeak-ng's voices)."""
        self._sink: Sink | None = None
        self._sink_error: BaseException | None = None
        self._samples = 0
        self._aborted = False
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: C holds only the raw pointer
        self._lib.espeak_SetSynthCallback(self._callback)
        self._current: VoiceSettings | None = None
        log.debug("espeak-ng initialized at %d Hz from %s", rate, data_path.decode())

    @staticmethod
    def _load() -> ctypes.CDLL:
        path = espeakng_loader.get_library_path()
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise EspeakError(f"cannot load libespeak-ng from {path!r}: {exc}") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        return lib

    @property
    def version(self) -> str:
        """The espeak-ng library version, e.g. ``"1.52.0"``."""
        with self.lock:
            raw: bytes = self._lib.espeak_Info(None)
        return raw.decode()

    def check_voice(self, settings: VoiceSettings) -> None:
        """Select ``settings`` once, so that a bad voice name fails at start-up rather than mid-call.

        Raises:
            EspeakError: espeak-ng does not know the voice or rejects a parameter.
        """
        with self.lock:
            self._apply(settings)

    def synthesize(self, text: str, settings: VoiceSettings, sink: Sink) -> SynthResult:
        """Synthesize ``text`` on the calling thread, handing int16 blocks to ``sink`` as they are made.

        Blocks other callers for the duration (espeak-ng is process-global). ``sink`` runs under the lock, so
        it must not call back into this engine.

        Args:
            text: plain text (UTF-8 capable; SSML is not interpreted).
            settings: voice, rate, pitch and volume for this synthesis.
            sink: receives each block; returning False aborts the synthesis.

        Returns:
            How many samples the sink received and whether the text was synthesized to its end.

        Raises:
            EspeakError: the voice is unknown or espeak_Synth failed.
            BaseException: whatever ``sink`` raised, after synthesis was aborted.
        """
        data = text.encode("utf-8")
        with self.lock:
            self._apply(settings)
            self._sink, self._sink_error, self._samples, self._aborted = sink, None, 0, False
            try:
                err = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
                error, samples, aborted = self._sink_error, self._samples, self._aborted
            finally:
                self._sink, self._sink_error = None, None
        if error is not None:
            raise error
        if err != _EE_OK:
            raise EspeakError(f"espeak_Synth failed with error {err} for {len(text)} characters of text")
        return SynthResult(samples=samples, completed=not aborted)

    def _apply(self, settings: VoiceSettings) -> None:
        """Select the voice and parameters; the caller holds the lock."""
        if self._current == settings:
            return
        if self._current is None or self._current.voice != settings.voice:
            err = self._lib.espeak_SetVoiceByName(settings.voice.encode("ascii"))
            if err != _EE_OK:
                self._current = None
                reason = "unknown voice" if err == _EE_NOT_FOUND else f"error {err}"
                raise EspeakError(f"espeak_SetVoiceByName({settings.voice!r}) failed: {reason}")
        for param, name, value in (
            (_PARAM_RATE, "rate", settings.rate),
            (_PARAM_PITCH, "pitch", settings.pitch),
            (_PARAM_VOLUME, "volume", settings.volume),
        ):
            err = self._lib.espeak_SetParameter(param, value, 0)
            if err != _EE_OK:
                self._current = None
                raise EspeakError(f"espeak_SetParameter({name}={value}) failed with error {err}")
        self._current = settings

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], n: int, _events: int | None) -> int:
        """The C callback: 0 continues, 1 aborts. Runs on the thread inside ``espeak_Synth``."""
        if n <= 0 or not wav or self._sink is None:
            return 1 if self._aborted else 0
        try:
            block = np.ctypeslib.as_array(wav, shape=(n,)).copy()
            self._samples += n
            keep_going = self._sink(block)
        except BaseException as exc:  # noqa: B036 - must not propagate into C; re-raised by synthesize()
            self._sink_error = exc
            keep_going = False
        if not keep_going:
            self._aborted = True
            return 1
        return 0


_instance: Espeak | None = None
_instance_lock = threading.Lock()


def get_espeak() -> Espeak:
    """The process's espeak-ng engine, initialized on first use (thread-safe).

    Raises:
        EspeakError: the library or its data could not be loaded.
    """
    global _instance
    if _instance is None:
        with _instance_lock:
            if _instance is None:
                _instance = Espeak()
    return _instance
