"""Factories in Redis: a hash each, its points in hourly sorted sets, their sums, spans and events.

Part of the Store (store.py); a write is one Lua script over the factory's keys, which share its hash
tag, so it is atomic on a cluster too.
"""

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from redis.asyncio.cluster import RedisCluster

from sprockets_cache.clock import now
from sprockets_cache.errors import BeforeRawWindow, NotFound, TooManyPoints
from sprockets_cache.store import keys, ranges
from sprockets_cache.store.commands import command, pipelined
from sprockets_cache.store.points import Buckets, count, span
from sprockets_cache.store.records import Factory, Stamp, Summary
from sprockets_cache.store.scripts import Script, flat

# Events (writes) a factory's stream keeps for clients that resume with Last-Event-ID.
EVENTS_KEPT = 1000
# As many points as a read may return when the caller sets no bound.
UNLIMITED = 2**62


class FactoryStore:
    """The Store's factories and their points."""

    # Set by Store.__init__. Any: redis-py's annotations do not tell its sync and async replies apart.
    redis: Any
    wait_replicas: int
    wait_ms: int
    tags_creates: bool
    retention_s: int
    downsample_s: int

    @functools.cached_property
    def _read_factory(self) -> Script:
        return Script(self.redis, "factory_read")

    @functools.cached_property
    def _write_factory(self) -> Script:
        return Script(self.redis, "factory_write", self.wait_replicas, self.wait_ms)

    @functools.cached_property
    def _summarize_factory(self) -> Script:
        return Script(self.redis, "factory_summary")

    async def new_factory_ids(self, count: int = 1) -> int:
        """Reserve `count` consecutive ids; returns the first."""
        return int(await self.redis.incrby(keys.FACTORY_NEXT_ID, count)) - count + 1

    @functools.cached_property
    def _list_factory(self) -> Script:
        return Script(self.redis, "factory_list", self.wait_replicas, self.wait_ms)

    async def create_factory(self, factory_id: int, name: str, buckets: Buckets, idempotency: str | None = None) -> int:
        """Write a factory with its points under a reserved id. Returns its version. `idempotency`: as
        create_sprocket's (the factory's hash keeps the key's tag where creates are tagged).

        The index and the factory live in different hash slots, so this is two steps: the id is
        listed first, and lists skip ids whose factory is not written (yet, or ever, after a crash).
        """
        wait = idempotency is None
        created: dict[str, Any] = {"name": name, "version": 0, "created_at": now()}
        if idempotency and self.tags_creates:
            created[keys.CREATED_WITH] = keys.idempotency_tag(idempotency)
        if isinstance(self.redis, RedisCluster):
            # {factories} is often on another master than the factory, so the factory's WAIT does not count
            # it: the listing waits for that master's replicas itself (when the create waits at all), and
            # keeps that master from handing the id out again should a failover have lost its INCR.
            await self.redis.set(keys.SCHEMA, keys.SCHEMA_VERSION, nx=True)
            await self._list_factory(keys=[keys.FACTORY_INDEX, keys.FACTORY_NEXT_ID], args=[factory_id], wait=wait)
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(keys.SCHEMA, keys.SCHEMA_VERSION, nx=True)  # points in this format are on their way
                pipe.zadd(keys.FACTORY_INDEX, {str(factory_id): factory_id})
                await pipe.execute()
        return await self._write(factory_id, buckets, created, wait)

    async def write_points(self, factory_id: int, buckets: Buckets) -> int:
        """Upsert points by bucket (see points.buckets) into an existing factory. Returns its new version."""
        return await self._write(factory_id, buckets, {})

    async def _write(self, factory_id: int, buckets: Buckets, created: Mapping[str, Any], wait: bool = True) -> int:
        numbers = sorted(buckets)
        first, last = span(buckets) if buckets else (0, 0)
        reply = await self._write_factory(
            keys=[
                keys.key_for_factory(factory_id),
                keys.key_for_factory_buckets(factory_id),
                keys.key_for_factory_events(factory_id),
                keys.key_for_factory_scratch(factory_id),
                keys.key_for_factory_sums(factory_id),
                *(keys.key_for_factory_points(factory_id, n) for n in numbers),
            ],
            args=[
                len(created),
                *flat(created),
                *(first, last, count(buckets), EVENTS_KEPT),
                *(
                    item
                    for n in numbers
                    for item in (n, len(buckets[n].pairs) // 2, buckets[n].actual, buckets[n].goal)
                ),
                *(item for n in numbers for item in buckets[n].pairs),
                *self._retention_args(factory_id),
            ],
            wait=wait,
        )
        if reply is None:
            raise NotFound(factory_id)
        if isinstance(reply, list):  # [b"before_raw_from", the oldest time it may write]
            raise BeforeRawWindow(int(reply[1]), self.retention_s)
        return int(reply)

    def _retention_args(self, factory_id: int) -> tuple[Any, ...]:
        """The last ARGV of factory_write.lua when retention is on; none (and no cost) when it is off."""
        if not self.retention_s:
            return ()
        spans = keys.key_for_factory_spans(factory_id)
        return (keys.factory_points_prefix(factory_id), spans, self.retention_s, self.downsample_s)

    async def get_factory(self, factory_id: int, first: int, last: int, most: int = UNLIMITED) -> Factory:
        """The factory with its points in [first, last]; TooManyPoints when there are more than `most`."""
        if ranges.is_direct(first, last):
            factory = await ranges.direct(self.redis, factory_id, first, last, most)
            if factory is not None:
                return factory
        reply = await self._read_factory(*ranges.script_args(factory_id, first, last, most))
        if reply is None:
            raise NotFound(factory_id)
        return await ranges.factory(self.redis, factory_id, first, last, most, reply)

    async def summarize_factory(self, factory_id: int, first: int, last: int) -> Summary:
        """The factory's points in [first, last], added up."""
        reply = await self._summarize_factory(
            keys=[
                keys.key_for_factory(factory_id),
                keys.key_for_factory_buckets(factory_id),
                keys.key_for_factory_sums(factory_id),
                keys.key_for_factory_spans(factory_id),
            ],
            args=[keys.factory_points_prefix(factory_id), first, last, keys.BUCKET_WIDTH_S],
        )
        if reply is None:
            raise NotFound(factory_id)
        return Summary.from_reply(reply)

    async def factory_stamp(self, factory_id: int) -> Stamp:
        """The factory's version and created_at, in one small round trip; NotFound when there is none."""
        version, created_at = await command(self.redis, *_stamp(factory_id))
        if version is None:
            raise NotFound(factory_id)
        return Stamp(int(version), created_at or b"")

    async def list_factories(
        self, after: int, limit: int, first: int, last: int, most: int = UNLIMITED
    ) -> tuple[list[Factory], int | None]:
        """A page of factories with their points in [first, last]: at most `limit` factories and `most`
        points. Returns the page and the id to continue after (None at the end)."""
        listed = await self.list_stamped_factories(after, limit, first, last, most)
        return [factory for _, factory in listed.factories if factory is not None], listed.next_id

    async def list_stamped_factories(
        self,
        after: int,
        limit: int,
        first: int,
        last: int,
        most: int = UNLIMITED,
        held: Callable[[int, Stamp], int | None] | None = None,
    ) -> "Listed":
        """As list_factories, each factory with its id, and every id the page looked at. With `held`, each
        factory's stamp is read first, and a factory for which `held(id, stamp)` gives a number of points
        (the caller has its answer at that stamp) comes as None, its points unread."""
        ids = await self.redis.zrangebyscore(keys.FACTORY_INDEX, f"({after}", "+inf", start=0, num=limit + 1)
        page = [int(i) for i in ids[:limit]]
        next_id = page[-1] if len(ids) > limit else None
        counts: list[int | None] = [None] * len(page)
        if held is not None:
            stamps = await pipelined(self.redis, [_stamp(i) for i in page])
            counts = [
                None if version is None else held(factory_id, Stamp(int(version), created_at or b""))
                for factory_id, (version, created_at) in zip(page, stamps, strict=True)
            ]
        # The script only counts the points of each factory not held, and names their buckets: the points
        # come from plain ZRANGEs, which cost Redis a fifth of what the script's reads do.
        unread = [factory_id for factory_id, points in zip(page, counts, strict=True) if points is None]
        replies = dict(
            zip(
                unread,
                await self._read_factory.many(
                    [ranges.script_args(i, first, last, most, script_reads_at_most=0) for i in unread]
                ),
                strict=True,
            )
        )
        chosen: list[tuple[int, Any]] = []
        budget = most
        for factory_id, held_points in zip(page, counts, strict=True):
            reply = replies.get(factory_id)
            if held_points is not None:
                points = held_points
            elif reply is not None:
                points = int(reply[3])
            else:
                continue  # listed, but not written yet (or never, after a crash): see create_factory
            if points > budget:
                if not chosen:
                    raise TooManyPoints(points, most)
                next_id = chosen[-1][0]  # the page is full of points: end it early
                break
            budget -= points
            chosen.append((factory_id, reply))

        async def read(factory_id: int, reply: Any) -> Factory | None:
            if reply is None:
                return None
            return await ranges.factory(self.redis, factory_id, first, last, most, reply)

        factories = await asyncio.gather(*(read(*item) for item in chosen))
        return Listed([(i, f) for (i, _), f in zip(chosen, factories, strict=True)], next_id, page)


class Listed(NamedTuple):
    """A page of factories (see list_stamped_factories)."""

    factories: list[tuple[int, Factory | None]]
    # The id to continue after (None at the end).
    next_id: int | None
    # Every id the page looked at: those listed, those not written yet, the one that cut the page short.
    ids: list[int]


def _stamp(factory_id: int) -> tuple[str, ...]:
    """The command that reads what identifies a factory's state (records.Stamp)."""
    return ("HMGET", keys.key_for_factory(factory_id), "version", "created_at")
