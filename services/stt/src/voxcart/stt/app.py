"""``voxcart serve stt``: run an stt worker replica.

The domain model is built from the caller language brain publishes (``vc:stt:language``: sample sentences and
words from the store). stt watches its ``version`` and rebuilds the model when the store changes; calls already
open keep the model they started with, new calls get the new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import replace

from voxcart.common.bus import Bus, keys, open_bus
from voxcart.common.settings import Settings
from voxcart.common.tasks import cancel_and_wait
from voxcart.common.worker import CallContext, CallHandler, Worker

from .denoise import load_librnnoise
from .embedded import PocketsphinxProvider
from .endpointer import EndpointerConfig
from .fallback import FallbackProvider
from .grammars import Catalogue
from .provider import ProviderError, SttProvider
from .recognizer import RecognizerModel
from .vad import load_silero
from .worker import SttHandler

__all__ = ["CallerLanguage", "build_provider", "run", "watch_language"]

log = logging.getLogger("voxcart.stt.app")

LANGUAGE_POLL_S = 5.0
"""How often a replica checks whether brain published a new caller language."""


class CallerLanguage:
    """What callers say, as published by brain: sample sentences, extra words, the product catalogue (names,
    colours, sizes: the product grammar), and a version."""

    def __init__(self, samples: list[str], words: list[str], version: str, catalogue: Catalogue | None = None) -> None:
        self.samples = samples
        self.words = words
        self.version = version
        self.catalogue = catalogue

    @classmethod
    async def read(cls, bus: Bus) -> CallerLanguage | None:
        raw = await bus.hgetall(keys.LANGUAGE)
        if "samples" not in raw:
            return None
        version = raw.get("version", b"").decode() or hashlib.sha256(raw["samples"]).hexdigest()[:16]
        products = Catalogue.from_mapping(json.loads(raw["catalogue"])) if "catalogue" in raw else None
        return cls(json.loads(raw["samples"]), json.loads(raw.get("words", b"[]")), version, products)

    @classmethod
    async def wait(cls, bus: Bus) -> CallerLanguage:
        """Wait until brain has published the language."""
        waited = 0.0
        while (language := await cls.read(bus)) is None:
            if waited % 10 < 0.25:
                log.info("waiting for brain to publish the caller language (%s)", keys.LANGUAGE)
            await asyncio.sleep(0.25)
            waited += 0.25
        return language

    def build(self) -> RecognizerModel:
        return RecognizerModel.build(self.samples, self.words, catalogue=self.catalogue)


def build_provider(settings: Settings, model: RecognizerModel) -> tuple[SttProvider, PocketsphinxProvider]:
    """The configured provider and the embedded one under it (the fallback, and the one whose model is rebuilt).

    A cloud or whisper provider is wrapped in :class:`FallbackProvider`: when it fails mid-call, PocketSphinx
    takes the call over from the start of the utterance in progress.

    Raises:
        SystemExit: the provider cannot start (a missing model folder, no API key): said at start, not mid-call.
    """
    try:
        endpointer = EndpointerConfig(
            vad=settings.stt_vad, denoise=settings.stt_denoise, early_end_ms=settings.stt_early_end_ms
        )
    except ValueError as exc:
        raise SystemExit(f"STT_EARLY_END_MS={settings.stt_early_end_ms}: {exc}") from None
    if settings.stt_vad == "silero":
        try:
            load_silero()  # a missing model stops the replica now, not a call later
        except FileNotFoundError as exc:
            raise SystemExit(f"STT_VAD=silero: {exc}") from None
    if settings.stt_denoise != "off":
        try:
            load_librnnoise()  # a missing library stops the replica now, not a noisy call later
        except (FileNotFoundError, OSError) as exc:
            raise SystemExit(f"STT_DENOISE={settings.stt_denoise}: {exc}") from None
    embedded = PocketsphinxProvider(model, settings.stt_end_silence_ms, endpointer=endpointer)
    primary: SttProvider
    if settings.stt_provider == "pocketsphinx":
        return embedded, embedded
    if settings.stt_provider == "deepgram":
        from .deepgram import DeepgramProvider

        if not settings.deepgram_api_key:
            raise SystemExit("DEEPGRAM_API_KEY: required with STT_PROVIDER=deepgram")
        try:
            primary = DeepgramProvider(
                settings.deepgram_api_key,
                url=settings.deepgram_url,
                model=settings.deepgram_model,
                end_silence_ms=settings.stt_end_silence_ms,
                timeout_s=settings.provider_timeout_ms / 1000,
            )
        except ValueError as exc:
            raise SystemExit(f"STT_PROVIDER=deepgram: {exc}") from None
    else:
        from .whisper import WhisperProvider

        try:
            primary = WhisperProvider.load(
                settings.stt_model_path,
                end_silence_ms=settings.stt_end_silence_ms,
                endpointer_config=replace(endpointer, denoise="off"),  # STT_DENOISE is tuned for PocketSphinx
            )
        except ProviderError as exc:
            raise SystemExit(str(exc)) from None
    return FallbackProvider(primary, embedded), embedded


async def watch_language(
    bus: Bus, embedded: PocketsphinxProvider, version: str, poll_s: float = LANGUAGE_POLL_S
) -> None:
    """Rebuild the domain model when brain publishes a new language (the store changed).

    Each poll reads only the ``version`` field; the sentences (~100 KB) are read when it changed.
    """
    while True:
        await asyncio.sleep(poll_s)
        try:
            published = await bus.hget(keys.LANGUAGE, "version")
            if published is not None and published.decode() == version:
                continue
            language = await CallerLanguage.read(bus)
        except Exception as exc:  # Redis away for a moment: the worker's own reconnects handle it
            log.warning("could not read the caller language: %s", exc)
            continue
        if language is None or language.version == version:
            continue
        log.info("caller language changed (%s -> %s): rebuilding the domain model", version, language.version)
        try:
            model = await asyncio.to_thread(language.build)
        except ValueError as exc:
            log.error("the new caller language is unusable, keeping the current model: %s", exc)
            version = language.version
            continue
        old, embedded.model = embedded.model, model
        version = language.version
        old.close()  # decoders already created keep working: PocketSphinx has read the files


async def run(settings: Settings) -> None:
    bus = open_bus(settings.redis_dsn, cluster=settings.redis_cluster)
    language = await CallerLanguage.wait(bus)
    model = await asyncio.to_thread(language.build)
    provider, embedded = build_provider(settings, model)

    async def factory(ctx: CallContext) -> CallHandler:
        return SttHandler(ctx, provider)

    worker = Worker(
        bus,
        "stt",
        settings,
        lambda sid: [keys.audio_in(sid), keys.listen(sid)],
        factory,
        read_interval_ms=settings.stt_read_interval_ms,  # each read a batch of frames, not one
    )
    watcher = asyncio.create_task(watch_language(bus, embedded, language.version))
    try:
        await worker.run()
    finally:
        await cancel_and_wait(watcher)
        await provider.aclose()  # a FallbackProvider closes the embedded one too
        await bus.close()
