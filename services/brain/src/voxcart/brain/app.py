"""``voxcart serve brain``: run a brain worker replica."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from voxcart.common.bus import Bus, RedisBus, keys, open_bus
from voxcart.common.settings import Settings
from voxcart.common.worker import CallContext, CallHandler, Worker

from .dialog import Dialog, sample_utterances, vocabulary
from .language import catalogue
from .llm import LlmAgent, LlmClient, LlmConfig
from .store import StoreError, build_store, demo_seed_path
from .turntaking import Policy
from .worker import BrainHandler

__all__ = ["BrainWorker", "build_agent", "build_dialog", "build_worker", "publish_language", "run"]


def build_dialog(settings: Settings) -> Dialog:
    """Open the store (``STORE_URL``, else ``STORE_SEED``, else the demo store) and build the dialog; exits when the
    store cannot be opened, with the setting at fault named."""
    try:
        store = build_store(settings, default_seed=str(demo_seed_path()))
    except StoreError as exc:
        raise SystemExit(str(exc)) from None
    return Dialog(store, min_confidence=settings.brain_min_confidence)


def build_agent(settings: Settings, dialog: Dialog) -> LlmAgent | None:
    """The LLM agent when ``BRAIN_MODE=llm`` (None in rules mode); exits when the endpoint is not configured."""
    if settings.brain_mode != "llm":
        return None
    missing = [
        name
        for name, value in (("LLM_BASE_URL", settings.llm_base_url), ("LLM_MODEL", settings.llm_model))
        if not value
    ]
    if missing:
        raise SystemExit(f"BRAIN_MODE=llm needs {' and '.join(missing)} (an OpenAI-compatible server and its model)")
    if not settings.llm_base_url.startswith(("http://", "https://")):
        raise SystemExit(f"LLM_BASE_URL={settings.llm_base_url!r}: expected an http:// or https:// URL")
    wait = settings.provider_timeout_ms / 1000
    config = LlmConfig(
        base_url=settings.llm_base_url,
        model=settings.llm_model,
        api_key=settings.llm_api_key,
        connect_s=wait,
        first_token_s=wait,
        idle_s=wait,
    )
    return LlmAgent(LlmClient(config), dialog, turn_s=4 * wait)


async def publish_language(bus: RedisBus, dialog: Dialog) -> str:
    """Publish what callers of this store say (stt builds its domain model from it); returns its version.

    The version is a digest of the content, so every brain replica of one store publishes the same one and stt
    rebuilds only when the store really changed.
    """
    samples = json.dumps(sample_utterances(dialog.store))
    words = json.dumps(vocabulary(dialog.store))
    products = json.dumps(catalogue(dialog.store))
    version = hashlib.sha256(f"{samples}\n{words}\n{products}".encode()).hexdigest()[:16]
    await bus.hset(keys.LANGUAGE, {"samples": samples, "words": words, "catalogue": products, "version": version})
    await bus.hset(keys.PHRASES, {"phrases": json.dumps(dialog.stock_phrases()), "version": version})
    return version


@dataclass
class BrainWorker:
    """A brain replica ready to run: the worker, and the LLM agent to close after it (LLM mode)."""

    worker: Worker
    dialog: Dialog
    agent: LlmAgent | None

    async def aclose(self) -> None:
        if self.agent is not None:
            await self.agent.aclose()


def build_worker(settings: Settings, bus: Bus, dialog: Dialog | None = None) -> BrainWorker:
    """The brain worker ``voxcart serve brain`` runs (also run in-process by ``voxcart chat``): the rules dialog or,
    with ``BRAIN_MODE=llm``, the LLM agent in front of it; exits on a bad store or LLM setting."""
    dialog = dialog or build_dialog(settings)
    agent = build_agent(settings, dialog)

    policy = Policy(pause_on_onset=settings.brain_pause_on_onset == "on")
    silence_s = settings.brain_silence_timeout_ms / 1000

    async def factory(ctx: CallContext) -> CallHandler:
        return await BrainHandler.create(ctx, dialog, agent, policy, silence_s)

    # in LLM mode the worker peeks at finals as they are read, so a reply still streaming stops for a newer one
    worker = Worker(bus, "brain", settings, lambda sid: [keys.events(sid)], factory, peeks=agent is not None)
    return BrainWorker(worker, dialog, agent)


async def run(settings: Settings) -> None:
    bus = open_bus(settings.redis_dsn, cluster=settings.redis_cluster)
    brain = build_worker(settings, bus)
    await publish_language(bus, brain.dialog)
    try:
        await brain.worker.run()
    finally:
        await brain.aclose()
        await bus.close()
