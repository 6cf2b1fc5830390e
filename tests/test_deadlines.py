"""Deadlines: one timer cancels whichever tasks overrun, and only those."""

import asyncio

import pytest

from sprockets_cache.deadlines import Deadlines

CHECK_S = 0.02


async def test_a_task_past_its_deadline_is_cancelled_and_told_so() -> None:
    deadlines = Deadlines(CHECK_S)
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = deadlines.start(0.1)
    with pytest.raises(asyncio.CancelledError):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            assert deadlines.expired(task)
            raise
    assert 0.1 <= loop.time() - started < 0.1 + CHECK_S + 0.1
    deadlines.stop(task)


async def test_a_task_that_stops_in_time_is_left_alone() -> None:
    deadlines = Deadlines(CHECK_S)
    task = deadlines.start(0.05)
    deadlines.stop(task)
    await asyncio.sleep(0.2)  # a cancellation would land here
    assert task.cancelling() == 0


async def test_starting_again_moves_the_deadline() -> None:
    deadlines = Deadlines(CHECK_S)
    task = deadlines.start(0.05)
    deadlines.start(1.0)
    await asyncio.sleep(0.2)
    deadlines.stop(task)
    assert task.cancelling() == 0


async def test_another_cancellation_is_not_taken_for_the_deadline() -> None:
    deadlines = Deadlines(CHECK_S)

    async def waits() -> bool:
        task = deadlines.start(5)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return deadlines.expired(task)
        finally:
            deadlines.stop(task)
        return False

    waiting = asyncio.create_task(waits())
    await asyncio.sleep(0.05)
    waiting.cancel()
    assert await waiting is False


async def test_each_of_many_tasks_gets_its_own_deadline() -> None:
    deadlines = Deadlines(CHECK_S)

    async def waits(seconds: float, work_s: float) -> str:
        task = deadlines.start(seconds)
        try:
            await asyncio.sleep(work_s)
            return "done"
        except asyncio.CancelledError:
            return "expired" if deadlines.expired(task) else "cancelled"
        finally:
            deadlines.stop(task)

    results = await asyncio.gather(*(waits(0.1, 0.3 if i % 2 else 0.01) for i in range(20)))
    assert results == ["done", "expired"] * 10
