"""GET /api/v1/factories/{id}/events: Server-Sent Events of a factory's new points.

Each points write adds an entry to the factory's capped stream (factory_write.lua); a subscriber
reads the stream with XREAD BLOCK on a connection of its own, from the subscribers' pool, so
long-lived subscribers never take the connections that requests need.
"""

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator

import anyio
import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from sprockets_cache.errors import TooManyPoints
from sprockets_cache.http.problems import Problem
from sprockets_cache.http.web import path_id, settings, store
from sprockets_cache.settings import Settings
from sprockets_cache.store.connections import UNAVAILABLE_OR_LATE
from sprockets_cache.store.store import Store
from sprockets_cache.store.streams import Event, Subscriber

log = logging.getLogger(__name__)

# A comment line this often keeps proxies from closing an idle stream.
PING_S = 15
# How long a browser waits before it reconnects to a stream that ended, in ms.
RETRY_MS = 2000
_EVENT_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
# Each half of a stream id is an unsigned 64-bit number; Redis refuses a larger one.
_MAX_HALF = 2**64 - 1


def _position(event_id: str) -> tuple[int, int]:
    """Past the largest half is the same place as at it: no id lies between the two."""
    milliseconds, sequence = event_id.split("-")
    return min(int(milliseconds), _MAX_HALF), min(int(sequence), _MAX_HALF)


def _resume_after(request: Request, newest: str) -> str:
    """Where to start: after `Last-Event-ID` when the client sends one (never past the newest
    event, say after Redis was replaced), else after the newest event: only writes from now on."""
    last_seen = request.headers.get("last-event-id", "").strip()
    if not last_seen:
        return newest
    if not _EVENT_ID.fullmatch(last_seen):
        raise Problem(400, "Last-Event-ID must be the id of an event this stream sent (digits-digits).")
    return "{}-{}".format(*min(_position(last_seen), _position(newest)))


async def factory_events(request: Request) -> Response:
    factory_id = path_id(request, "factory_id")
    newest = await store(request).newest_event_id(factory_id)
    after = _resume_after(request, newest)
    # Held from here, before the 200, so a full pool answers 503; let go when the stream ends.
    hold = contextlib.AsyncExitStack()
    subscriber = await hold.enter_async_context(store(request).subscribe())
    stream = _stream(store(request), subscriber, factory_id, after, settings(request), hold)
    # The background task lets go too when the stream never starts (HEAD).
    return EventSourceResponse(stream, ping=PING_S, background=BackgroundTask(hold.aclose))


async def _stream(
    store: Store,
    subscriber: Subscriber,
    factory_id: int,
    after: str,
    settings: Settings,
    hold: contextlib.AsyncExitStack,
) -> AsyncIterator[ServerSentEvent]:
    try:
        yield ServerSentEvent(comment="subscribed", retry=RETRY_MS)
        while True:
            for event in await subscriber.read_events(factory_id, after):
                # After the handler has returned, so outside its deadline: this read gets its own.
                async with asyncio.timeout(settings.redis_timeout_s):
                    data = await _data(store, factory_id, event, settings.max_response_points)
                yield ServerSentEvent(data, id=event.id, event="points")
                after = event.id
    except UNAVAILABLE_OR_LATE as error:
        # The stream ends; the client reconnects with Last-Event-ID and loses nothing.
        log.warning("event stream of factory %s ended: %s", factory_id, error)
    finally:
        # Shielded: on a client disconnect this runs inside a cancelled scope, and must still finish.
        with anyio.CancelScope(shield=True):
            await hold.aclose()


async def _data(store: Store, factory_id: int, event: Event, most: int) -> str:
    """The points now stored in the span of the write, at their resolution (spans when the write reached
    into the downsampled past, docs/retention.md); chart_data null when there are too many to send."""
    try:
        body = (await store.get_factory(factory_id, event.first, event.last, most)).as_json()
        resolution_s, chart_data = body["resolution_s"], body["chart_data"]
    except TooManyPoints:
        resolution_s, chart_data = 1, None
    return orjson.dumps({"version": event.version, "resolution_s": resolution_s, "chart_data": chart_data}).decode()
