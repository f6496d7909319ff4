"""cancel_and_wait: tasks stopped and awaited; the stopper's own cancellation is never swallowed."""

from __future__ import annotations

import asyncio

import pytest

from voxcart.common.tasks import cancel_and_wait


async def test_cancels_and_waits_for_every_task() -> None:
    cleaned: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append(name)

    a, b = asyncio.create_task(forever("a")), asyncio.create_task(forever("b"))
    await asyncio.sleep(0)
    await cancel_and_wait(a, None, b)
    assert a.cancelled() and b.cancelled() and sorted(cleaned) == ["a", "b"]


async def test_a_task_that_had_failed_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> None:
        raise RuntimeError("broken")

    task = asyncio.create_task(boom(), name="boomer")
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert "boomer" in caplog.text and "broken" in caplog.text


async def test_the_stoppers_own_cancellation_propagates() -> None:
    """The trap of ``cancel(); with suppress(CancelledError): await task``: a stopper cancelled while it waits
    for a slow-to-stop task must itself stop, not carry on."""
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.shield(release.wait())

    carried_on: list[bool] = []

    async def stopper(task: asyncio.Task[None]) -> None:
        await cancel_and_wait(task)
        carried_on.append(True)

    inner = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    outer = asyncio.create_task(stopper(inner))
    await asyncio.sleep(0.01)
    outer.cancel()
    await asyncio.sleep(0.01)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert carried_on == []
