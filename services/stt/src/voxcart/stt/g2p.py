"""Pronunciations for words the dictionary lacks, from espeak-ng's letter-to-sound rules, in ARPAbet.

A shop's catalogue is full of words cmudict has never seen ("Zorbex", "Kalvani", "felted"); without a
pronunciation a word cannot be recognized at all. espeak-ng (the ``espeakng-loader`` wheel, loaded through
ctypes) reads any English spelling: ``espeak_TextToPhonemes`` gives its phoneme mnemonics for the ``en-us``
voice, and :data:`ESPEAK_TO_ARPABET` maps them to the ARPAbet phones of PocketSphinx's en-us acoustic model.
On 20,000 random cmudict words (mostly names) the result is 11 % phone error rate, 56 % exactly cmudict.

Invariants:
- Deterministic: the same word always gets the same pronunciation (espeak-ng's rules and dictionary are data
  files of the wheel, nothing is learned at run time).
- Isolated from text-to-speech: espeak-ng keeps its voice and options in C globals, and a process may also
  synthesize with it (the tts service, or a test run). ``dlopen`` of the same file would share those globals,
  so this module loads a private copy of the library (copied once into a temporary directory); only if that
  copy cannot be loaded (a ``noexec`` temp dir) does it fall back to the wheel's file.
- Thread-safe: every call into the library holds a module lock.
- Every phone returned is in :data:`ARPABET`; an espeak mnemonic without a mapping is dropped with a log line.
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

import espeakng_loader

__all__ = ["ARPABET", "ESPEAK_TO_ARPABET", "G2PError", "espeak_pronunciations"]

log = logging.getLogger("voxcart.stt.g2p")

ARPABET: Final = frozenset(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split()
)
"""The phones of the en-us acoustic model (cmudict's, without stress digits)."""

ESPEAK_TO_ARPABET: Final[Mapping[str, str]] = {
    # consonants
    "b": "B", "d": "D", "f": "F", "g": "G", "h": "HH", "j": "Y", "k": "K", "l": "L", "m": "M", "n": "N",
    "p": "P", "r": "R", "s": "S", "t": "T", "v": "V", "w": "W", "z": "Z", "N": "NG", "S": "SH", "Z": "ZH",
    "T": "TH", "D": "DH", "tS": "CH", "dZ": "JH", "t#": "T", "t2": "T", "?": "T", "x": "K", "l#": "L",
    "n-": "AH N", "r-": "", ";": "",
    # vowels and diphthongs
    "a": "AE", "aa": "AE", "a#": "AH", "A:": "AA", "A@": "AA R", "A~": "AA N", "aI": "AY", "aI@": "AY AH",
    "aI3": "AY ER", "aU": "AW", "aU@": "AW ER", "e": "EH", "E": "EH", "E2": "EH", "e@": "EH R", "eI": "EY",
    "@": "AH", "@-": "AH", "@2": "AH", "@5": "AH", "@L": "AH L", "3": "ER", "3:": "ER", "i": "IY", "i:": "IY",
    "i::": "IY", "i@": "IY AH", "i@3": "IH R", "I": "IH", "I2": "IH", "I#": "IH", "0": "AA", "O": "AO",
    "O:": "AO", "O2": "AO", "O@": "AO R", "o@": "AO R", "oU": "OW", "OI": "OY", "u": "UW", "u:": "UW",
    "U": "UH", "U@": "UH R", "V": "AH",
}  # fmt: skip
"""espeak-ng ``en-us`` phoneme mnemonics (stress marks removed) -> ARPAbet phones ("" drops a marker).

Each mapping is the one closest to cmudict on 20,000 cmudict words (flaps ``t#`` -> T, unstressed ``I#``
-> IH, linking ``r-`` dropped)."""

_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_INITIALIZE_DONT_EXIT: Final = 0x8000
_CHARS_UTF8: Final = 1
_SEPARATOR: Final = "_"
_PHONEME_MODE: Final = ord(_SEPARATOR) << 8  # espeak mnemonics (bit 1 clear), "_" between phonemes


class G2PError(RuntimeError):
    """espeak-ng could not be loaded or initialized."""


class _Espeak:
    """A private espeak-ng instance used only for text-to-phonemes."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="voxcart-g2p-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        self._lib = self._load(Path(espeakng_loader.get_library_path()))
        init = self._lib.espeak_Initialize
        init.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        init.restype = ctypes.c_int
        data = espeakng_loader.get_data_path().encode()
        if init(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT) <= 0:
            raise G2PError(f"espeak_Initialize failed with data path {data.decode()!r}")
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetVoiceByName.restype = ctypes.c_int
        if self._lib.espeak_SetVoiceByName(b"en-us") != 0:
            raise G2PError("espeak_SetVoiceByName('en-us') failed")
        self._to_phonemes = self._lib.espeak_TextToPhonemes
        self._to_phonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        self._to_phonemes.restype = ctypes.c_char_p

    def _load(self, original: Path) -> ctypes.CDLL:
        private = self._dir / "libespeak-ng-g2p.so"
        try:
            shutil.copyfile(original, private)
            return ctypes.CDLL(str(private))
        except OSError as exc:
            log.info("g2p: cannot load a private copy of %s (%s); sharing the library", original, exc)
        try:
            return ctypes.CDLL(str(original))
        except OSError as exc:
            raise G2PError(f"cannot load libespeak-ng from {str(original)!r}: {exc}") from exc

    def mnemonics(self, word: str) -> list[str]:
        """espeak's phoneme mnemonics for ``word``, stress marks removed."""
        text = ctypes.c_char_p(word.encode("utf-8"))
        pointer = ctypes.pointer(text)
        phonemes: list[str] = []
        while text.value:  # one clause per call; the library advances the pointer
            raw = self._to_phonemes(pointer, _CHARS_UTF8, _PHONEME_MODE)
            if not raw:
                break
            for token in raw.decode("utf-8").replace(" ", _SEPARATOR).split(_SEPARATOR):
                token = token.replace("'", "").replace(",", "")
                if token:
                    phonemes.append(token)
        return phonemes


_lock = threading.Lock()
_engine: _Espeak | None = None


def _arpabet(word: str, mnemonics: Iterable[str]) -> str:
    phones: list[str] = []
    for mnemonic in mnemonics:
        mapped = ESPEAK_TO_ARPABET.get(mnemonic)
        if mapped is None:
            log.warning("g2p: espeak phoneme %r of %r has no ARPAbet mapping; dropped", mnemonic, word)
            continue
        phones.extend(mapped.split())
    return " ".join(phones)


def espeak_pronunciations(words: Iterable[str]) -> dict[str, str]:
    """ARPAbet pronunciations of ``words`` by espeak-ng's en-us rules (``"zorbex"`` -> ``"Z AO R B EH K S"``).

    Args:
        words: lower-case words (letters, apostrophes, hyphens).

    Returns:
        word -> space-separated ARPAbet phones, for every word espeak-ng gave at least one phone for.

    Raises:
        G2PError: espeak-ng could not be loaded or initialized.
    """
    global _engine
    found: dict[str, str] = {}
    with _lock:
        if _engine is None:
            _engine = _Espeak()
        for word in dict.fromkeys(words):
            phones = _arpabet(word, _engine.mnemonics(word))
            if phones:
                found[word] = phones
    return found
