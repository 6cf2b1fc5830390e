"""Factory event streams in Redis: where a stream ends, and subscribers that wait for what comes next."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster

from sprockets_cache.errors import NotFound, SubscribersFull
from sprockets_cache.store import keys
from sprockets_cache.store.connections import EVENTS_BLOCK_MS

# Events one read returns at most: a subscriber far behind catches up in steps.
EVENTS_PER_READ = 100


@dataclass(frozen=True, slots=True)
class Event:
    """One write of a factory's points: its stream entry id, the factory's version after it, and
    the first and last time and the number of the points it wrote."""

    id: str
    version: int
    first: int
    last: int
    points: int


@dataclass(frozen=True, slots=True)
class Subscriber:
    client: Any

    async def read_events(self, factory_id: int, after_id: str, block_ms: int = EVENTS_BLOCK_MS) -> list[Event]:
        """The factory's events after `after_id` (a stream entry id), waiting up to `block_ms` for one."""
        key = keys.key_for_factory_events(factory_id)
        reply = await self.client.xread({key: after_id}, count=EVENTS_PER_READ, block=block_ms)
        entries = reply[0][1] if reply else []
        names = (b"version", b"first", b"last", b"points")
        return [Event(entry_id.decode(), *(int(fields[name]) for name in names)) for entry_id, fields in entries]


async def newest_event_id(client: Any, factory_id: int) -> str:
    """The id of the factory's newest event ("0-0" before its first), so that a subscriber reading
    after it misses no later write; NotFound for an unknown factory."""
    exists, newest = await asyncio.gather(
        client.exists(keys.key_for_factory(factory_id)),
        client.xrevrange(keys.key_for_factory_events(factory_id), count=1),
    )
    if not exists:
        raise NotFound(factory_id)
    return newest[0][0].decode() if newest else "0-0"


@contextlib.asynccontextmanager
async def subscribe(subscribers: Any) -> AsyncIterator[Subscriber]:
    """A connection of the subscribers' pool for one subscriber, held until the block ends, so the
    pool's bound is a bound on subscribers; SubscribersFull at once when none is free. A cluster
    client cannot hold one: there each read takes a connection of the key's node for its block."""
    if isinstance(subscribers, RedisCluster):
        yield Subscriber(subscribers)
        return
    if not subscribers.connection_pool.can_get_connection():
        raise SubscribersFull
    client = subscribers.client()
    try:
        await client.initialize()
        yield Subscriber(client)
    finally:
        await client.aclose()
