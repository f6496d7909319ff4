"""``voxcart serve tts``: run a tts worker replica.

:func:`build_voice` turns the settings into the :class:`~voxcart.tts.voice.Voice` every call shares:

========================  =====================================================================================
``TTS_PROVIDER``          voice
========================  =====================================================================================
``espeak``                espeak-ng (``TTS_VOICE``, ``TTS_RATE``)
``piper``                 piper (``TTS_VOICE_PATH`` + ``TTS_VOICE_SHA256``, or the bundled joe voice), falling
                          back to espeak-ng
``elevenlabs``            ElevenLabs (``ELEVENLABS_*``, ``PROVIDER_TIMEOUT_MS``), falling back to espeak-ng
========================  =====================================================================================

With ``TTS_PHRASE_CACHE`` > 0 the primary voice is wrapped in a :class:`~voxcart.tts.phrase_cache.PhraseCache`
*inside* the fallback, so that only the primary's audio is ever cached. Everything that can be wrong with a voice
(unknown espeak voice, missing or tampered piper file, no API key) stops the replica at start with a message
naming the setting, never mid-call. At start the cache is warmed with the stock phrases brain publishes
(``vc:tts:phrases``), so a call's greeting is ready before the call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from voxcart.common.bus import Bus, keys, open_bus
from voxcart.common.settings import Settings
from voxcart.common.tasks import cancel_and_wait
from voxcart.common.worker import CallContext, CallHandler, Worker

from .espeak import EspeakError, VoiceSettings
from .phrase_cache import PhraseCache
from .piper import PiperSynthesizer, VoiceFileError
from .synth import EspeakSynthesizer, SynthesisError
from .voice import FallbackVoice, ThreadedVoice, Voice
from .worker import TtsHandler

__all__ = ["build_voice", "phrase_cache_of", "run", "warm_phrases"]

log = logging.getLogger("voxcart.tts.app")

_ESPEAK_REFERENCE_WPM = 175
"""``TTS_RATE`` at which piper speaks at its voice's own speed; other rates scale it proportionally."""
_PIPER_THREADS = 2
"""onnxruntime threads per piper inference. On the 2-core machine, a 16-word sentence takes 182 ms with 2 threads
and 314 ms with 1 when a core is free; with both cores busy 2 threads cost ~20 % more (381 vs 314 ms). Time to
first audio is what callers hear, so 2 (spinning is off, so idle threads cost nothing)."""


def build_voice(settings: Settings) -> Voice:
    """The configured voice, checked now.

    Raises:
        SystemExit: the voice cannot work; the message names the setting and what is wrong.
    """
    espeak = _espeak(settings)
    if settings.tts_provider == "espeak":
        return _cached(espeak, settings)
    primary = _piper(settings) if settings.tts_provider == "piper" else _elevenlabs(settings)
    return FallbackVoice(_cached(primary, settings), espeak, cooldown_s=settings.tts_fallback_cooldown_ms / 1000)


def _cached(voice: Voice, settings: Settings) -> Voice:
    return PhraseCache(voice, settings.tts_phrase_cache) if settings.tts_phrase_cache > 0 else voice


def _espeak(settings: Settings) -> Voice:
    try:
        synth = EspeakSynthesizer(VoiceSettings(voice=settings.tts_voice, rate=settings.tts_rate))
    except (EspeakError, ValueError) as exc:
        raise SystemExit(f"TTS_VOICE={settings.tts_voice!r} / TTS_RATE={settings.tts_rate}: {exc}") from None
    return ThreadedVoice(synth, "espeak")


def _piper(settings: Settings) -> Voice:
    what = f"TTS_VOICE_PATH={settings.tts_voice_path!r}" if settings.tts_voice_path else "the bundled joe piper voice"
    if settings.tts_voice_path and not settings.tts_voice_sha256:
        raise SystemExit(f"{what}: TTS_VOICE_SHA256 is required with TTS_VOICE_PATH (the voice file's SHA-256)")
    try:
        synth = PiperSynthesizer.from_file(
            settings.tts_voice_path or None,
            settings.tts_voice_sha256,
            threads=_PIPER_THREADS,
            speed=settings.tts_rate / _ESPEAK_REFERENCE_WPM,
        )
        started = time.perf_counter()
        if not list(synth.synthesize("Hello.")):  # a voice that loads but cannot speak fails here, not mid-call
            raise SynthesisError("no audio for 'Hello.'")
    except (VoiceFileError, SynthesisError, ValueError) as exc:
        raise SystemExit(f"TTS_PROVIDER=piper, {what}: {exc}") from None
    log.info("piper voice ready (first synthesis %.0f ms)", (time.perf_counter() - started) * 1e3)
    return ThreadedVoice(synth, "piper")


def _elevenlabs(settings: Settings) -> Voice:
    if not settings.elevenlabs_api_key:
        raise SystemExit("TTS_PROVIDER=elevenlabs needs ELEVENLABS_API_KEY")
    from .elevenlabs import ElevenLabsVoice

    try:
        voice: Voice = ElevenLabsVoice(
            settings.elevenlabs_api_key,
            base_url=settings.elevenlabs_url,
            voice_id=settings.elevenlabs_voice_id,
            model=settings.elevenlabs_model,
            timeout_s=settings.provider_timeout_ms / 1000,
        )
    except ValueError as exc:
        raise SystemExit(f"TTS_PROVIDER=elevenlabs: {exc}") from None
    return voice


def phrase_cache_of(voice: Voice) -> PhraseCache | None:
    """The phrase cache inside a voice built by :func:`build_voice`, if any."""
    if isinstance(voice, FallbackVoice):
        voice = voice.primary
    return voice if isinstance(voice, PhraseCache) else None


async def warm_phrases(bus: Bus, cache: PhraseCache, *, wait_s: float = 60.0, poll_s: float = 0.5) -> int:
    """Synthesize the stock phrases brain publishes (``vc:tts:phrases``) into the cache; returns how many.

    Waits up to ``wait_s`` for brain to publish them (the services start in any order); never raises.
    """
    waited = 0.0
    while True:
        try:
            raw = await bus.hgetall(keys.PHRASES)
        except Exception as exc:
            log.warning("could not read the stock phrases: %s", exc)
            return 0
        if "phrases" in raw:
            break
        if waited >= wait_s:
            log.info("no stock phrases published by brain within %.0f s: the cache fills as calls go", wait_s)
            return 0
        await asyncio.sleep(poll_s)
        waited += poll_s
    phrases = [p for p in json.loads(raw["phrases"]) if isinstance(p, str)]
    started = time.perf_counter()
    done = await cache.warm(phrases)
    log.info(
        "phrase cache warmed: %d of %d phrases in %.0f ms", done, len(phrases), (time.perf_counter() - started) * 1e3
    )
    return done


async def run(settings: Settings) -> None:
    voice = build_voice(settings)
    bus = open_bus(settings.redis_dsn, cluster=settings.redis_cluster)
    cache = phrase_cache_of(voice)
    warming = asyncio.create_task(warm_phrases(bus, cache)) if cache is not None else None

    async def factory(ctx: CallContext) -> CallHandler:
        return TtsHandler(ctx, voice)

    worker = Worker(bus, "tts", settings, lambda sid: [keys.tts(sid)], factory, peeks=True)
    try:
        await worker.run()
    finally:
        if warming is not None:
            await cancel_and_wait(warming)
        try:
            await voice.aclose()
        finally:
            await bus.close()
