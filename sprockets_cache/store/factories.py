"""Factories in Redis: a hash each, its points in hourly sorted sets, their sums, spans and events.

Part of the Store (store.py); a write is one Lua script over the factory's keys, which share its hash
tag, so it is atomic on a cluster too.
"""

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio.cluster import RedisCluster

from sprockets_cache.clock import now
from sprockets_cache.errors import BeforeRawWindow, NotFound, TooManyPoints
from sprockets_cache.store import keys, ranges
from sprockets_cache.store.connections import command
from sprockets_cache.store.points import Buckets, count, span
from sprockets_cache.store.records import Factory, Stamp, Summary
from sprockets_cache.store.scripts import Script, flat

# Events (writes) a factory's stream keeps for clients that resume with Last-Event-ID.
EVENTS_KEPT = 1000
# As many points as a read may return when the caller sets no bound.
UNLIMITED = 2**62
# The stamp of a factory that appeared between its stamp's read and its points': matches no other.
_NO_STAMP = Stamp(0, b"")


class FactoryStore:
    """The Store's factories and their points."""

    # Set by Store.__init__. Any: redis-py's annotations do not tell its sync and async replies apart.
    redis: Any
    wait_replicas: int
    wait_ms: int
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

    async def create_factory(self, factory_id: int, name: str, buckets: Buckets, wait: bool = True) -> int:
        """Write a factory with its points under a reserved id. Returns its version. `wait`: as create_sprocket.

        The index and the factory live in different hash slots, so this is two steps: the id is
        listed first, and lists skip ids whose factory is not written (yet, or ever, after a crash).
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.SCHEMA, keys.SCHEMA_VERSION, nx=True)  # points in this format are on their way
            pipe.zadd(keys.FACTORY_INDEX, {str(factory_id): factory_id})
            await pipe.execute()
        return await self._write(factory_id, buckets, {"name": name, "version": 0, "created_at": now()}, wait)

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
        version, created_at = await command(
            self.redis, "HMGET", keys.key_for_factory(factory_id), "version", "created_at"
        )
        if version is None:
            raise NotFound(factory_id)
        return Stamp(int(version), created_at or b"")

    async def list_factories(
        self, after: int, limit: int, first: int, last: int, most: int = UNLIMITED
    ) -> tuple[list[Factory], int | None]:
        """A page of factories with their points in [first, last]: at most `limit` factories and `most` points.

        Returns the page and the id to continue after (None at the end).
        """
        page, next_id = await self.list_stamped_factories(after, limit, first, last, most)
        return [factory for _, _, factory in page if factory is not None], next_id

    async def list_stamped_factories(
        self,
        after: int,
        limit: int,
        first: int,
        last: int,
        most: int = UNLIMITED,
        held: Callable[[int, Stamp], bool] = lambda factory_id, stamp: False,
    ) -> tuple[list[tuple[int, Stamp, Factory | None]], int | None]:
        """As list_factories, each factory with its id and its stamp, read before its points; a factory
        for which `held(id, stamp)` (the caller has its answer at that stamp) and whose version did not
        move since comes as None, its points unread. Returns the page and the id to continue after."""
        ids = await self.redis.zrangebyscore(keys.FACTORY_INDEX, f"({after}", "+inf", start=0, num=limit + 1)
        page = [int(i) for i in ids[:limit]]
        # The script only counts each factory's points here and names their buckets: the points come from
        # plain ZRANGEs, read for all factories at once, which cost Redis a fifth of what the script's do.
        reads = [ranges.script_args(factory_id, first, last, most, script_reads_at_most=0) for factory_id in page]
        stamps_and_replies: list[Any]
        if isinstance(self.redis, RedisCluster):
            # Concurrent calls: a cluster client cannot pipeline scripts, and factories live on different shards.
            async def stamped(factory_id: int, read: tuple[list[str], list[Any]]) -> tuple[Any, Any]:
                stamp = await self.redis.hmget(keys.key_for_factory(factory_id), "version", "created_at")
                return stamp, await self._read_factory(*read)

            pairs = await asyncio.gather(
                *(stamped(factory_id, read) for factory_id, read in zip(page, reads, strict=True))
            )
            stamps_and_replies = [item for pair in pairs for item in pair]
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for factory_id, (read_keys, read_args) in zip(page, reads, strict=True):
                    # In order on one connection: each stamp is read before its factory's points.
                    pipe.hmget(keys.key_for_factory(factory_id), "version", "created_at")
                    await self._read_factory(read_keys, read_args, client=pipe)
                stamps_and_replies = await pipe.execute()
        chosen: list[tuple[int, Stamp, Any]] = []
        next_id = page[-1] if len(ids) > limit else None
        budget = most
        for factory_id, (version, created_at), reply in zip(
            page, stamps_and_replies[0::2], stamps_and_replies[1::2], strict=True
        ):
            if reply is None:
                continue  # listed, but not written yet (or never, after a crash): see create_factory
            if reply[2] > budget:
                if not chosen:
                    raise TooManyPoints(reply[2], most)
                next_id = chosen[-1][0]  # the page is full of points: end it early
                break
            budget -= reply[2]
            stamp = _NO_STAMP if version is None else Stamp(int(version), created_at or b"")
            chosen.append((factory_id, stamp, reply))

        async def read(factory_id: int, stamp: Stamp, reply: Any) -> Factory | None:
            if int(reply[1]) == stamp.version and held(factory_id, stamp):
                return None
            return await ranges.factory(self.redis, factory_id, first, last, most, reply)

        factories = await asyncio.gather(*(read(*item) for item in chosen))
        return [(i, stamp, f) for (i, stamp, _), f in zip(chosen, factories, strict=True)], next_id
