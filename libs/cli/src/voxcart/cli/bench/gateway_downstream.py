"""The gateway bench's stand-in for stt, brain and tts: for each call the gateway starts, the agent talks.

It watches ``vc:calls:lifecycle`` and, for each ``call.started``, writes the agent's turns to the call's
``audio.out`` exactly as the tts worker does: :class:`~voxcart.common.events.AudioChunk` entries of 100 ms
(``<turn>-<seq * 1000 + k>`` ids), a sentence's first chunk alone and the rest together right after (synthesis runs
faster than real time), the next sentence ``synth_s`` later, through one pipelined writer. A turn of
``sentences`` sentences is followed by ``gap_s`` of silence (the caller's turn), then the next turn, until the
call ends (``call.ended``). So the gateway reads, paces and sends a reply the whole call long, as it would at its
busiest, and nothing else of the stack runs.

Invariants: what is written to each call is counted (:attr:`FakeDownstream.chunks`, :attr:`FakeDownstream.bytes`)
so the bench can tell audio that never reached the callers from audio that reached them late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import numpy as np

from voxcart.common import events as ev
from voxcart.common.audio import SAMPLE_RATE, pcm16_to_ulaw
from voxcart.common.bus import Bus, BusError, Output, keys
from voxcart.common.bus.writer import Writer
from voxcart.common.tasks import cancel_and_wait

__all__ = ["FakeDownstream", "agent_audio"]

log = logging.getLogger("voxcart.cli.bench.gateway")

CHUNK_BYTES = SAMPLE_RATE // 10
"""100 ms of μ-law, the tts worker's chunk."""


def agent_audio(seconds: float) -> bytes:
    """μ-law of a voice-like signal (a 180 Hz buzz with a 4 Hz syllable envelope), ``seconds`` long."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    signal = 6000 * envelope * (np.sin(2 * np.pi * 180 * t) + 0.4 * np.sin(2 * np.pi * 540 * t))
    return pcm16_to_ulaw(signal.astype(np.int16))


class FakeDownstream:
    """Writes every started call's agent turns to its ``audio.out`` (see the module docstring).

    Args:
        bus: the stack's bus.
        sentences: sentences per turn.
        sentence_s: audio per sentence.
        gap_s: silence between two turns.
        synth_s: from one sentence's chunks to the next's.
    """

    def __init__(
        self, bus: Bus, *, sentences: int = 3, sentence_s: float = 2.0, gap_s: float = 1.5, synth_s: float = 0.15
    ) -> None:
        if sentences < 1 or sentence_s <= 0 or gap_s < 0 or synth_s < 0:
            raise ValueError(
                f"FakeDownstream: need sentences >= 1, sentence_s > 0, gap_s >= 0, synth_s >= 0; got {sentences}, "
                f"{sentence_s}, {gap_s}, {synth_s}"
            )
        self.bus = bus
        self.sentences, self.sentence_s, self.gap_s, self.synth_s = sentences, sentence_s, gap_s, synth_s
        self.writer = Writer(bus, ttl_ms=keys.CALL_TTL_MS)
        self.audio = agent_audio(sentence_s)
        self.calls: dict[str, asyncio.Task[None]] = {}
        self.chunks = 0
        self.bytes = 0
        self.started = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start watching: calls started from now on get an agent."""
        position = await self.bus.last_id(keys.LIFECYCLE) or "0-0"
        self.writer.start()
        self._task = asyncio.create_task(self._watch(position), name="fake-downstream")

    async def stop(self) -> None:
        await cancel_and_wait(self._task, *self.calls.values())
        self.calls.clear()
        await self.writer.close()

    async def _watch(self, position: str) -> None:
        while True:
            try:
                entries = await self.bus.read({keys.LIFECYCLE: position}, count=500, block_ms=100)
            except BusError as exc:
                log.warning("lifecycle read failed: %s", exc)
                await asyncio.sleep(0.2)
                continue
            for entry in entries:
                position = entry.id
                with contextlib.suppress(ev.EventDecodeError):
                    event = ev.decode(entry.data)
                    if isinstance(event, ev.CallStarted) and event.call_sid not in self.calls:
                        self.started += 1
                        self.calls[event.call_sid] = asyncio.create_task(self._talk(event.call_sid))
                    elif isinstance(event, ev.CallEnded) and event.call_sid in self.calls:
                        await cancel_and_wait(self.calls.pop(event.call_sid))

    async def _talk(self, sid: str) -> None:
        loop = asyncio.get_running_loop()
        stream = keys.audio_out(sid)
        turn_no, turn_start = 1, loop.time()
        chunks = [self.audio[i : i + CHUNK_BYTES] for i in range(0, len(self.audio), CHUNK_BYTES)]
        while True:
            for seq in range(self.sentences):
                for k, payload in enumerate(chunks):
                    if k == 1:
                        await asyncio.sleep(0)  # the first chunk goes out alone, the rest after it
                    last = k == len(chunks) - 1
                    chunk = ev.AudioChunk(
                        call_sid=sid,
                        turn_no=turn_no,
                        seq=seq,
                        k=k,
                        payload=payload,
                        last_in_sentence=last,
                        last_in_turn=last and seq == self.sentences - 1,
                    )
                    out_id = f"{turn_no}-{seq * 1000 + k}"
                    self.writer.put(Output(stream, ev.encode(chunk), id=out_id, maxlen=keys.AUDIO_OUT_MAXLEN))
                    self.chunks += 1
                    self.bytes += len(payload)
                await asyncio.sleep(self.synth_s)
            turn_start += self.sentences * self.sentence_s + self.gap_s
            turn_no += 1
            await asyncio.sleep(max(0.0, turn_start - loop.time()))
