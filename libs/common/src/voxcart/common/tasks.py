"""Stopping background tasks without losing the stopper's own cancellation.

``task.cancel(); with suppress(CancelledError): await task`` has a trap: if the task running that code is itself
cancelled while it waits, the suppress swallows *its* cancellation too, and it carries on (a shutdown that then
waits forever). :func:`cancel_and_wait` re-raises in that case.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["cancel_and_wait"]

log = logging.getLogger("voxcart.tasks")


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` (``None`` entries are skipped) and wait until each has finished.

    A task's own ``CancelledError`` is absorbed; another exception it ended with is logged, not raised (the task is
    being discarded). If the caller is cancelled while waiting, the cancellation propagates.
    """
    pending = [t for t in tasks if t is not None]
    for task in pending:
        task.cancel()
    for task in pending:
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception:
            log.exception("task %r had failed before it was stopped", task.get_name())
