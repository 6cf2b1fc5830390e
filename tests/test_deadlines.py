"""Deadlines: one timer cancels whichever tasks overrun, and only those."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from sprockets_cache.deadlines import Deadlines

CHECK_S = 0.02
# Deadlines that must not fire while a test's own step runs: far longer than a loaded machine stalls a loop.
NOT_BEFORE_S = 30.0


class Lateness:
    """How late, at worst, this event loop ran a timer while the block ran: what a busy machine adds to any
    timer's time, the deadlines' checks included, measured in the same run."""

    WATCH_S = 0.005

    def __init__(self) -> None:
        self.worst = 0.0

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.WATCH_S)
            self.worst = max(self.worst, loop.time() - asked - self.WATCH_S)


@contextlib.asynccontextmanager
async def lateness() -> AsyncIterator[Lateness]:
    measured = Lateness()
    watching = asyncio.create_task(measured.watch())
    try:
        yield measured
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching


async def test_a_task_past_its_deadline_is_cancelled_and_told_so() -> None:
    deadlines = Deadlines(CHECK_S)
    loop = asyncio.get_running_loop()
    async with lateness() as late:
        started = loop.time()
        task = deadlines.start(0.1)
        with pytest.raises(asyncio.CancelledError):
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                assert deadlines.expired(task)
                raise
        elapsed = loop.time() - started
    deadlines.stop(task)
    # On an idle loop it fires within a check of the deadline (plus 0.1 s of slack). Each check is timed from
    # the one before, so a busy loop makes each of the checks up to the deadline late: that much more.
    checks = round(0.1 / CHECK_S) + 1
    assert 0.1 <= elapsed < 0.1 + CHECK_S + 0.1 + checks * late.worst, f"the loop ran timers {late.worst:.3f} s late"


async def test_a_task_that_stops_in_time_is_left_alone() -> None:
    deadlines = Deadlines(CHECK_S)
    task = deadlines.start(0.05)
    deadlines.stop(task)
    await asyncio.sleep(0.2)  # a cancellation would land here
    assert task.cancelling() == 0


async def test_starting_again_moves_the_deadline() -> None:
    deadlines = Deadlines(CHECK_S)
    task = deadlines.start(0.05)
    deadlines.start(NOT_BEFORE_S)
    await asyncio.sleep(0.2)  # the first deadline would have fired here
    deadlines.stop(task)
    assert task.cancelling() == 0


async def test_another_cancellation_is_not_taken_for_the_deadline() -> None:
    deadlines = Deadlines(CHECK_S)

    async def waits() -> bool:
        task = deadlines.start(NOT_BEFORE_S)
        try:
            await asyncio.sleep(NOT_BEFORE_S * 2)
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

    # Half the tasks finish at once, half would work for minutes: each of the first must end "done" however
    # slow the machine (a second is ages for an idle loop), each of the others "expired".
    results = await asyncio.gather(*(waits(1.0, NOT_BEFORE_S * 2 if i % 2 else 0.01) for i in range(20)))
    assert results == ["done", "expired"] * 10
