"""Fair, bounded waiting under overload: API requests run at most `limit` at a time, and later ones wait in
arrival order, each for at most `wait_s`, at most `queue` of them. A request that would wait longer, or
finds the queue full, is answered 503 at once, from bytes made in advance.

Without it the event loop serves whichever request it happens to pick, so under overload some clients
wait seconds (and give up, after costing us their work) while others are served at once.
"""

import asyncio
import collections

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from sprockets_cache.http.observability import Metrics
from sprockets_cache.http.problems import MEDIA_TYPE

# Only the API waits: health, readiness, metrics, the docs and the dashboard's files never queue behind it.
QUEUED_PREFIX = "/api/"


def _answer(detail: str) -> tuple[dict[str, object], dict[str, object]]:
    body = orjson.dumps({"type": "about:blank", "title": "Service Unavailable", "status": 503, "detail": detail})
    headers = [
        (b"content-type", MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
    ]
    return {"type": "http.response.start", "status": 503, "headers": headers}, {
        "type": "http.response.body",
        "body": body,
    }


SHED = {
    "queue_full": _answer("The service is at capacity and its queue is full; retry in a second."),
    "waited_too_long": _answer("The service is at capacity and this request waited too long; retry in a second."),
}


class Admission:
    """ASGI middleware: see the module. `limit` 0 turns it off."""

    def __init__(self, app: ASGIApp, limit: int, queue: int, wait_s: float, metrics: Metrics) -> None:
        self.app, self.limit, self.queue, self.wait_s, self.metrics = app, limit, queue, wait_s, metrics
        self.running = 0
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.limit or scope["type"] != "http" or not scope["path"].startswith(QUEUED_PREFIX):
            await self.app(scope, receive, send)
            return
        if self.running < self.limit and not self.waiting:
            self.running += 1
        else:
            reason = await self._wait()
            if reason:
                self.metrics.shed.labels(reason).inc()
                start, body = SHED[reason]
                await send(start)
                await send(body)
                return
        try:
            await self.app(scope, receive, send)
        finally:
            self._release()

    async def _wait(self) -> str | None:
        """Waits for a turn, handed over by a request that ends; or says why it was not given one."""
        if len(self.waiting) >= self.queue:
            return "queue_full"
        loop = asyncio.get_running_loop()
        turn = loop.create_future()
        timer = loop.call_later(self.wait_s, _expire, turn)
        started = loop.time()
        self.waiting.append(turn)
        self.metrics.queued.set(len(self.waiting))
        try:
            await turn
        except TimeoutError:
            self._forget(turn)
            return "waited_too_long"
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._release()  # handed a turn just as it was cancelled: pass it on
            else:
                self._forget(turn)
            raise
        finally:
            timer.cancel()
            self.metrics.waited.observe(loop.time() - started)
        return None

    def _forget(self, turn: asyncio.Future[None]) -> None:
        # Turns mostly run out in the order they were queued: the oldest is at the left.
        if self.waiting and self.waiting[0] is turn:
            self.waiting.popleft()
        elif turn in self.waiting:
            self.waiting.remove(turn)
        self.metrics.queued.set(len(self.waiting))

    def _release(self) -> None:
        """Hands this request's turn to the longest waiting request, if any still waits."""
        if self.waiting:  # else the gauge says 0 already, and a request saves setting it
            while self.waiting:
                turn = self.waiting.popleft()
                if not turn.done():  # else it ran out of time, and its request is on its way out
                    turn.set_result(None)
                    self.metrics.queued.set(len(self.waiting))
                    return
            self.metrics.queued.set(0)
        self.running -= 1


def _expire(turn: asyncio.Future[None]) -> None:
    if not turn.done():
        turn.set_exception(TimeoutError())
