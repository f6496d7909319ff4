"""A call's one pending timed action (brain's DTMF entry pause and silence re-prompt).

Kept apart from the worker so the handler reads as "what happens on each event" while the mechanics of a
delayed action (replace, cancel, run under the lock, fail over) live in one place.

Invariants:
- At most one action is pending: starting one cancels the one before.
- The action runs under the handler's lock, so it never interleaves with an entry being handled.
- An action whose commit meets a :class:`BusError` releases the call (``ctx.give_up()``) for its next owner to
  continue from the checkpoint and state, as the worker does for an entry; it never dies unseen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from voxcart.common.bus import BusError
from voxcart.common.tasks import cancel_and_wait
from voxcart.common.worker import CallContext

__all__ = ["Timer"]

log = logging.getLogger("voxcart.brain.timer")


class Timer:
    """One pending action of a call, fired after a delay under the call handler's lock.

    Args:
        ctx: the call (its ``give_up`` is called when the action meets a :class:`BusError`).
        lock: the handler's lock, held while the action runs.
    """

    def __init__(self, ctx: CallContext, lock: asyncio.Lock) -> None:
        self._ctx = ctx
        self._lock = lock
        self._task: asyncio.Task[None] | None = None

    def start(self, delay: float, action: Callable[[], Awaitable[None]]) -> None:
        """Run ``action`` after ``delay`` seconds, replacing the action pending (if any)."""
        self.cancel()
        self._task = asyncio.create_task(self._fire(delay, action))

    def cancel(self) -> None:
        """Drop the pending action (from within the action itself, only forget it: it runs to its end)."""
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._task = None

    async def close(self) -> None:
        """Cancel the pending action and wait until it is gone (the call stops being ours)."""
        await cancel_and_wait(self._task)

    async def _fire(self, delay: float, action: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            try:
                await action()
            except BusError as exc:
                # as for an entry: the commit may or may not have landed; the next owner continues the call
                # from its checkpoint and state (and arms the silence timer again, see ``BrainHandler.create``)
                log.warning("Redis failed in a timer (%s): releasing the call", exc, extra={"call_sid": self._ctx.sid})
                self._ctx.give_up()
