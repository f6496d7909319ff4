"""``--baseline inproc``: the load bench's dialog with the same models, called in this process without the bus.

Each call feeds the caller's audio (the same μ-law lines, then silence, like a phone) frame by frame every 20 ms
into the stt provider the worker would build (:func:`voxcart.stt.app.build_provider`, on the domain model built
from the same store); each final goes straight to the rules :class:`~voxcart.brain.dialog.Dialog`
(``on_text``), and the reply's sentences to the tts voice (:func:`voxcart.tts.app.build_voice`, its phrase cache
warmed with the same stock phrases). The caller then waits while the reply "plays" (its audio length) and
``agent_silence_s`` more, as the simulated caller does. Nothing goes through Redis, a websocket or the pacer.

Per turn: ``endpointing`` (last voiced frame fed -> end of speech decided), ``recognition``, ``decision`` (the
dialog), ``synthesis`` (first chunk of the first sentence) and ``turn`` (last voiced frame fed -> first chunk
ready), the in-process counterpart of the stack's ``gateway_turn``.

Invariants: calls run concurrently in one event loop, started ``stagger_s`` apart as in the stack run;
recognition runs in threads (as the embedded provider does) so feeding never waits behind decoding of another
call; an overlapping caller item of the script is said after the reply instead (the same words, no barge-in).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from voxcart.common import events as ev
from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE, silence_ulaw
from voxcart.common.settings import Settings

from .load_measure import stats
from .load_probe import ResourceSampler, resource_report

__all__ = ["InprocModels", "InprocTurn", "build_models", "run_inproc"]

_TICK = FRAME_BYTES / SAMPLE_RATE
_SILENCE = silence_ulaw(FRAME_BYTES)


@dataclass(frozen=True)
class InprocTurn:
    """One answered line, in ms."""

    endpointing: float
    recognition: float
    decision: float
    synthesis: float
    turn: float
    eos_to_first_chunk: float


@dataclass
class InprocModels:
    """The models, built once like each service builds its own at start."""

    dialog: Any
    provider: Any
    voice: Any

    async def aclose(self) -> None:
        await self.provider.aclose()
        await self.voice.aclose()


async def build_models(settings: Settings) -> InprocModels:
    """The dialog, stt provider and voice the services would build from ``settings``.

    Raises:
        SystemExit: a setting the services would refuse (the message names it).
    """
    from voxcart.brain.app import build_dialog
    from voxcart.brain.dialog import sample_utterances, vocabulary
    from voxcart.brain.language import catalogue
    from voxcart.stt.app import CallerLanguage, build_provider
    from voxcart.stt.grammars import Catalogue
    from voxcart.tts.app import build_voice, phrase_cache_of

    dialog = build_dialog(settings)
    store = dialog.store
    language = CallerLanguage(
        sample_utterances(store), vocabulary(store), "inproc", Catalogue.from_mapping(catalogue(store))
    )
    model = await asyncio.to_thread(language.build)
    provider, _ = build_provider(settings, model)
    voice = build_voice(settings)
    cache = phrase_cache_of(voice)
    if cache is not None:
        await cache.warm(dialog.stock_phrases())
    return InprocModels(dialog, provider, voice)


class _Call:
    def __init__(self, models: InprocModels, index: int, agent_silence_s: float, reply_timeout_s: float) -> None:
        from voxcart.brain.dialog import DialogState

        self.models = models
        self.sid = f"CAinproc{index:04d}"
        self.from_number = f"+1555030{index:04d}"
        self.state = DialogState(call_id=self.sid)
        self.stt = models.provider.open_call(self.sid)
        self.frames: deque[bytes] = deque()
        self.finals: asyncio.Queue[Any] = asyncio.Queue()
        self.agent_silence_s, self.reply_timeout_s = agent_silence_s, reply_timeout_s
        self.turns: list[InprocTurn] = []
        self.timed_out = 0
        self.error: str | None = None

    async def ticker(self) -> None:
        """One frame every 20 ms into the recognizer (the caller's line, else silence); finals to the queue."""
        from voxcart.stt.results import Final

        loop = asyncio.get_running_loop()
        next_t, k = loop.time(), 0
        while True:
            frame = self.frames.popleft() if self.frames else _SILENCE
            k += 1
            for result in await self.stt.feed(f"1-{k}", frame, ev.now_ms()):
                if isinstance(result, Final):
                    self.finals.put_nowait(result)
            next_t += _TICK
            await asyncio.sleep(max(0.0, next_t - loop.time()))

    async def speak(self, sentences: Sequence[str]) -> tuple[float, float]:
        """Synthesize the reply as tts would, sentence after sentence: (epoch ms of the first chunk, audio seconds)."""
        from voxcart.tts.voice import aclosing_stream

        first = 0.0
        nbytes = 0
        for text in sentences:
            stream = self.models.voice.synthesize(text, call_sid=self.sid, cancel=threading.Event())
            async with aclosing_stream(stream) as chunks:
                async for chunk in chunks:
                    if not first and chunk:
                        first = ev.now_ms()
                    nbytes += len(chunk)
        return first or ev.now_ms(), nbytes / SAMPLE_RATE

    async def listen_to_reply(self, first_ms: float, audio_s: float) -> None:
        await asyncio.sleep(max(0.0, first_ms / 1000 + audio_s + self.agent_silence_s - ev.now_ms() / 1000))

    async def run(self, lines: Sequence[bytes]) -> None:
        dialog = self.models.dialog
        ticker = asyncio.create_task(self.ticker())
        try:
            greeting = dialog.greet(self.state, self.from_number)
            await self.listen_to_reply(*await self.speak(greeting.sentences))
            for audio in lines:
                while not self.finals.empty():
                    self.finals.get_nowait()
                self.frames.extend(
                    audio[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff") for i in range(0, len(audio), FRAME_BYTES)
                )
                try:
                    final = await asyncio.wait_for(self.finals.get(), len(audio) / SAMPLE_RATE + self.reply_timeout_s)
                except TimeoutError:
                    self.timed_out += 1
                    continue
                decide = ev.now_ms()
                reply = dialog.on_text(self.state, final.text, final.confidence)
                decided = ev.now_ms()
                keyterms = [] if reply.expect in ("digits", "yes_no") else dialog.keyterms()
                self.stt.listen(reply.expect, keyterms)
                if not reply.sentences:
                    continue
                first_ms, audio_s = await self.speak(reply.sentences)
                self.turns.append(
                    InprocTurn(
                        endpointing=final.endpointed_at - final.last_voiced_arrived,
                        recognition=final.recognized_at - final.endpointed_at,
                        decision=decided - decide,
                        synthesis=first_ms - decided,
                        turn=first_ms - final.last_voiced_arrived,
                        eos_to_first_chunk=first_ms - final.endpointed_at,
                    )
                )
                if reply.end_call:
                    break
                await self.listen_to_reply(first_ms, audio_s)
        except Exception as exc:  # a broken call is reported, the others go on
            self.error = f"{self.sid}: {type(exc).__name__}: {exc}"
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await self.stt.aclose()
            await self.models.voice.end_call(self.sid)


async def run_inproc(
    settings: Settings,
    lines: Sequence[bytes],
    calls: int,
    *,
    stagger_s: float,
    agent_silence_s: float = 0.8,
    reply_timeout_s: float = 15.0,
    models: InprocModels | None = None,
) -> dict[str, Any]:
    """Run ``calls`` in-process calls of ``lines`` (μ-law, one per caller line) and return the baseline report:
    per-segment statistics, timed-out lines, errors, and this process's CPU and memory over the calls."""
    own = models is None
    models = models or await build_models(settings)
    sampler = ResourceSampler({})
    try:
        runs = [_Call(models, i, agent_silence_s, reply_timeout_s) for i in range(calls)]

        async def one(k: int, call: _Call) -> None:
            await asyncio.sleep(k * stagger_s)
            await call.run(lines)

        sampler.start()
        await asyncio.gather(*(one(k, c) for k, c in enumerate(runs)))
        cpu_s, wall_s = await sampler.stop()
    finally:
        if own:
            await models.aclose()
    turns = [t for c in runs for t in c.turns]
    resources = resource_report(cpu_s, wall_s, sampler.idle_rss, sampler.peak_rss, calls)["services"]["caller"]
    return {
        "mode": "inproc",
        "calls": calls,
        "turns": len(turns),
        "timed_out_turns": sum(c.timed_out for c in runs),
        "errors": [c.error for c in runs if c.error],
        "segments_ms": {
            name: stats(getattr(t, name) for t in turns)
            for name in ("endpointing", "recognition", "decision", "synthesis", "eos_to_first_chunk", "turn")
        },
        "turn_ms": [round(t.turn, 1) for t in turns],
        "resources": resources,
    }
