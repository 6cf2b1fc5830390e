"""Deadlines for requests, with one timer for all of them rather than one each."""

import asyncio
from typing import Any

Task = asyncio.Task[Any]


class Deadlines:
    """Cancels a task that is still between `start` and `stop` past its deadline, checked every
    `check_every_s`.

    asyncio.timeout arms and disarms a timer each time, about 7 µs, and redis-py's per-command
    timeout costs more (a task and a timer per command): together a tenth of a small POST. Here a
    request costs a few dict operations, and one timer, while any task is waiting, checks them all.
    """

    def __init__(self, check_every_s: float) -> None:
        self.check_every_s = check_every_s
        self._waiting: dict[Task, float] = {}
        self._expired: set[Task] = set()
        self._checking = False

    def start(self, seconds: float) -> Task:
        """Gives the current task `seconds` from now (again, if it had a deadline)."""
        task = asyncio.current_task()
        assert task is not None, "called outside a task"
        loop = task.get_loop()
        self._waiting[task] = loop.time() + seconds
        if not self._checking:
            self._checking = True
            loop.call_later(self.check_every_s, self._check, loop)
        return task

    def stop(self, task: Task) -> None:
        self._waiting.pop(task, None)
        self._expired.discard(task)

    def expired(self, task: Task) -> bool:
        """After a CancelledError: True, and the cancellation undone, if the deadline caused it."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in list(self._waiting.items()):
            if deadline <= now:
                del self._waiting[task]
                self._expired.add(task)
                task.cancel()
        self._checking = bool(self._waiting)
        if self._checking:
            loop.call_later(self.check_every_s, self._check, loop)
