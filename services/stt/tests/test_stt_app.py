"""stt's start-up pieces: the caller language brain publishes, and the model rebuilt when it changes."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from voxcart.common.bus import MemoryBus, keys
from voxcart.common.settings import load_settings
from voxcart.stt.app import CallerLanguage, build_provider, watch_language
from voxcart.stt.deepgram import DeepgramProvider
from voxcart.stt.embedded import PocketsphinxProvider
from voxcart.stt.fallback import FallbackProvider
from voxcart.stt.recognizer import RecognizerModel


async def _publish(bus: MemoryBus, samples: list[str], words: list[str], version: str) -> None:
    await bus.hset(keys.LANGUAGE, {"samples": json.dumps(samples), "words": json.dumps(words), "version": version})


async def test_a_new_store_language_rebuilds_the_model_for_new_calls_only() -> None:
    bus = MemoryBus()
    await _publish(bus, ["where is my order", "yes", "no"], ["hoodie"], "v1")
    language = await CallerLanguage.wait(bus)
    assert language.version == "v1" and language.words == ["hoodie"]
    provider = PocketsphinxProvider(await asyncio.to_thread(language.build), 600)
    first_model = provider.model
    open_call = provider.open_call("CAapp1")
    assert "parka" not in first_model.lm.words

    watcher = asyncio.create_task(watch_language(bus, provider, language.version, poll_s=0.01))
    try:
        await _publish(bus, ["is the parka jacket in stock", "yes", "no"], ["parka"], "v2")
        async with asyncio.timeout(20):
            while provider.model is first_model:
                await asyncio.sleep(0.01)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    assert "parka" in provider.model.lm.words
    assert open_call.recognizer.model is first_model  # a call in progress keeps its model
    assert provider.open_call("CAapp2").recognizer.model is provider.model
    await provider.aclose()


async def test_the_language_is_waited_for_until_brain_publishes_it() -> None:
    bus = MemoryBus()
    waiter = asyncio.create_task(CallerLanguage.wait(bus))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await _publish(bus, ["goodbye"], [], "")
    async with asyncio.timeout(5):
        language = await waiter
    assert language.samples == ["goodbye"] and len(language.version) == 16  # a digest when brain gave none


def test_providers_are_built_from_settings_with_the_embedded_one_as_fallback(model: RecognizerModel) -> None:
    provider, embedded = build_provider(load_settings({}, env_file=None), model)
    assert provider is embedded and embedded.model is model

    settings = load_settings({"STT_PROVIDER": "deepgram", "DEEPGRAM_API_KEY": "k"}, env_file=None)
    provider, embedded = build_provider(settings, model)
    assert isinstance(provider, FallbackProvider)
    assert isinstance(provider.primary, DeepgramProvider) and provider.fallback is embedded


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STT_PROVIDER": "deepgram"}, "DEEPGRAM_API_KEY: required"),
        ({"STT_PROVIDER": "whisper"}, "STT_MODEL_PATH"),
        ({"STT_PROVIDER": "whisper", "STT_MODEL_PATH": "/nonexistent/whisper"}, "/nonexistent/whisper"),
    ],
)
def test_a_provider_that_cannot_start_stops_the_service_with_the_setting_named(
    model: RecognizerModel, env: dict[str, str], message: str
) -> None:
    with pytest.raises(SystemExit, match=message):
        build_provider(load_settings(env, env_file=None), model)


async def test_the_published_catalogue_gives_the_model_its_product_grammar() -> None:
    bus = MemoryBus()
    await bus.hset(
        keys.LANGUAGE,
        {
            "samples": json.dumps(["is the trail hoodie in stock", "yes", "no"]),
            "words": json.dumps(["hoodie"]),
            "catalogue": json.dumps({"names": ["trail hoodie"], "colors": ["blue"], "sizes": ["medium"]}),
            "version": "v1",
        },
    )
    language = await CallerLanguage.wait(bus)
    assert language.catalogue is not None and language.catalogue.names == ("trail hoodie",)
    model = await asyncio.to_thread(language.build)
    search = model.search_for("product", [])
    assert search is not None and "trail" in model.vocabulary(search)
    model.close()
