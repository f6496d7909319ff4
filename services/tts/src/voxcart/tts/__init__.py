"""voxcart tts: speech synthesis to μ-law 8 kHz chunks.

Engines: espeak-ng (always there), piper (the natural embedded voice) and ElevenLabs, each a
:class:`~voxcart.tts.voice.Voice`; the worker drives a ``Voice`` built by :func:`voxcart.tts.app.build_voice`.

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
from voxcart.tts.voice import FallbackVoice, ThreadedVoice, Voice, VoiceError

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
    "FallbackVoice",
    "ThreadedVoice",
    "Voice",
    "VoiceError",
    "espeak_normalize",
    "get_espeak",
    "normalize_text",
    "spell_out",
]
