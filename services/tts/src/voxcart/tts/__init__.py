"""voxcart tts: speech synthesis to μ-law 8 kHz chunks (embedded espeak-ng; other engines plug in later).

Importing this package does not load espeak-ng: the library is loaded and initialized on first use.
"""

from voxcart.tts.espeak import DEFAULT_VOICE, EspeakError, VoiceSettings, get_espeak
from voxcart.tts.synth import (
    CancelToken,
    EspeakSynthesizer,
    SynthesisError,
    SynthesisStats,
    SynthesisStream,
    Synthesizer,
    espeak_normalize,
)
from voxcart.tts.text import normalize_text, spell_out

__all__ = [
    "DEFAULT_VOICE",
    "CancelToken",
    "EspeakError",
    "EspeakSynthesizer",
    "SynthesisError",
    "SynthesisStats",
    "SynthesisStream",
    "Synthesizer",
    "VoiceSettings",
    "espeak_normalize",
    "get_espeak",
    "normalize_text",
    "spell_out",
]
