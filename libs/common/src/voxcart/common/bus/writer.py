"""One pipelined, coalescing writer per process.

Producers call :meth:`Writer.put` (no await, no round trip); a single task sends whatever has queued since its
last round trip as one pipeline. Measured in design.md: versus one awaited XADD per frame this cuts client CPU
~6x, needs 5 connections instead of 200, and keeps p99 frame age under 3 ms at 10k frames/s.

If Redis is unreachable the batch is kept and re-sent (explicit ids make re-sends safe) while the backlog
stays under ``max_backlog``; beyond that the oldest entries are dropped and counted, so a long outage costs
audio, never memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

from ..metrics import BUS_BATCH_SIZE, BUS_PUBLISH_SECONDS, DEDUPE_HITS
from ..tasks import cancel_and_wait
from .base import Bus, BusError, Output

__all__ = ["Writer"]

log = logging.getLogger("voxcart.common.writer")


class Writer:
    """Coalesces ``put`` calls into pipelined publishes.

    Args:
        bus: the bus.
        ttl_ms: TTL given to each stream the first time this writer writes to it.
        max_batch: most entries in one pipeline.
        max_backlog: entries kept while Redis is unreachable (~5 s of 50 calls' audio by default).
    """

    def __init__(self, bus: Bus, ttl_ms: int = 0, max_batch: int = 500, max_backlog: int = 12_500) -> None:
        self.bus = bus
        self.ttl_ms = ttl_ms
        self.max_batch = max_batch
        self._queue: collections.deque[Output] = collections.deque(maxlen=max_backlog)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._known: set[str] = set()
        self.rejected = 0
        """Entries Redis refused as duplicates (explicit id not above the top)."""
        self.dropped = 0
        """Entries dropped because the backlog overflowed during an outage."""
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bus-writer")

    def put(self, output: Output) -> None:
        """Queue an entry; returns at once."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(output)
        self._idle.clear()
        self._wakeup.set()

    def forget(self, stream: str) -> None:
        """The stream is finished (call ended): stop tracking it."""
        self._known.discard(stream)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far has been sent (or ``timeout``)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = [self._queue[i] for i in range(min(self.max_batch, len(self._queue)))]
            fresh = {o.stream for o in batch} - self._known
            started = time.perf_counter()
            dropped_before = self.dropped
            try:
                ids = await self.bus.publish(batch, ttl_ms=self.ttl_ms if fresh else 0)
            except BusError as exc:
                log.warning("publish failed, will retry: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            BUS_PUBLISH_SECONDS.observe(time.perf_counter() - started)
            BUS_BATCH_SIZE.observe(len(batch))
            self._known |= fresh
            refused = sum(1 for i in ids if i is None)
            self.rejected += refused
            if refused:
                DEDUPE_HITS.labels("stream_id").inc(refused)
            # Entries dropped from the left during the round trip were part of this batch.
            for _ in range(max(0, len(batch) - (self.dropped - dropped_before))):
                self._queue.popleft()
