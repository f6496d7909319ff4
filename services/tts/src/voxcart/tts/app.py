"""``voxcart serve tts``: run a tts worker replica."""

from __future__ import annotations

from voxcart.common.bus import RedisBus, keys
from voxcart.common.settings import Settings
from voxcart.common.worker import CallContext, CallHandler, Worker

from .espeak import VoiceSettings
from .synth import EspeakSynthesizer, Synthesizer
from .worker import TtsHandler

__all__ = ["build_synthesizer", "run"]


def build_synthesizer(settings: Settings) -> Synthesizer:
    """The configured engine; fails at start (not mid-call) on a bad voice."""
    if settings.tts_provider != "espeak":
        raise SystemExit(f"TTS_PROVIDER={settings.tts_provider!r} is not available yet; use 'espeak'")
    return EspeakSynthesizer(VoiceSettings(voice=settings.tts_voice, rate=settings.tts_rate))


async def run(settings: Settings) -> None:
    synth = build_synthesizer(settings)
    bus = RedisBus(settings.redis_dsn)

    async def factory(ctx: CallContext) -> CallHandler:
        return TtsHandler(ctx, synth)

    worker = Worker(bus, "tts", settings, lambda sid: [keys.tts(sid)], factory, peeks=True)
    try:
        await worker.run()
    finally:
        await bus.close()
