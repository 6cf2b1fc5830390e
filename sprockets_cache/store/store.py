"""Everything the service keeps in Redis: sprockets, factories and their points.

The store speaks in ids, dicts and points by bucket; it never sees a request.
Each write that touches several keys is one Lua script over keys of one
hash slot, so it is atomic on a single Redis and on a cluster alike.
"""

import asyncio
import contextlib
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster

from sprockets_cache.clock import now
from sprockets_cache.errors import BeforeRawWindow, NotFound, TooManyPoints, VersionMismatch
from sprockets_cache.store import keys, ranges, streams
from sprockets_cache.store.connections import Client, execute, execute_and_wait
from sprockets_cache.store.points import Buckets, count, span
from sprockets_cache.store.records import Factory, Sprocket, Summary
from sprockets_cache.store.scripts import Script

SPROCKET_FIELDS = ("teeth", "pitch_diameter", "outside_diameter", "pitch")

# Events (writes) a factory's stream keeps for clients that resume with Last-Event-ID.
EVENTS_KEPT = 1000
# Writes nothing, yet Redis counts it a write (it has a flags line without no-writes) and checks before
# running it what it checks before a write: it answers READONLY, OOM, MISCONF or NOREPLICAS instead.
_WRITE_PROBE = "#!lua\nreturn 1"
# As many points as a read may return when the caller sets no bound.
UNLIMITED = 2**62


def _fields(pairs: Mapping[str, Any]) -> list[Any]:
    return [item for pair in pairs.items() for item in pair]


def _versions(accepted: list[int] | None) -> str:
    """The versions a script accepts, as ",3,4,"; "" accepts any."""
    return "" if accepted is None else "," + ",".join(map(str, accepted)) + ","


def _fields_of(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    """A sprocket hash's fields, typed as the API shows them."""
    return {
        "teeth": int(raw[b"teeth"]),
        "pitch_diameter": float(raw[b"pitch_diameter"]),
        "outside_diameter": float(raw[b"outside_diameter"]),
        "pitch": float(raw[b"pitch"]),
        "created_at": raw[b"created_at"].decode(),
        "updated_at": raw[b"updated_at"].decode(),
    }


def _sprocket_json(sprocket_id: int, fields: Mapping[str, Any]) -> bytes:
    return orjson.dumps({"id": sprocket_id, **fields})


class Store:
    def __init__(
        self,
        client: Client,
        subscribers: Client | None = None,
        wait_replicas: int = 0,
        wait_ms: int = 0,
        retention_s: int = 0,
        downsample_s: int = 0,
    ) -> None:
        """Each write waits until `wait_replicas` replicas confirm it, for at most `wait_ms`: see Script."""
        # Any: redis-py's annotations do not tell its sync and async replies apart.
        self.redis: Any = client
        # POINTS_RETENTION_S and DOWNSAMPLE_S (docs/retention.md); 0: off.
        self.retention_s, self.downsample_s = retention_s, downsample_s
        # The client event subscribers read with (connect_subscribers); `client` when none is given.
        self.subscribers: Any = subscribers or client
        self.wait_replicas, self.wait_ms = wait_replicas, wait_ms
        self._create_sprocket = Script(client, "sprocket_create", wait_replicas, wait_ms)
        self._update_sprocket = Script(client, "sprocket_update", wait_replicas, wait_ms)
        self._delete_sprocket = Script(client, "sprocket_delete", wait_replicas, wait_ms)
        self._read_factory = Script(client, "factory_read")
        self._write_factory = Script(client, "factory_write", wait_replicas, wait_ms)
        self._summarize_factory = Script(client, "factory_summary")
        self._claim = Script(client, "idempotency_claim")
        self._rate_limit = Script(client, "rate_limit")

    async def _command(self, *args: Any) -> Any:
        """A command that needs no response callback, the short way on one Redis (connections.execute)."""
        if isinstance(self.redis, RedisCluster):
            return await self.redis.execute_command(*args)
        return await execute(self.redis, *args)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def check_writable(self) -> None:
        """Raises what a write would now (on a cluster: to any master), if Redis refuses writes."""
        if isinstance(self.redis, RedisCluster):
            await self.redis.execute_command("EVAL", _WRITE_PROBE, 0, target_nodes=RedisCluster.PRIMARIES)
        else:
            await self._command("EVAL", _WRITE_PROBE, 0)

    # Sprockets

    async def create_sprocket(self, fields: Mapping[str, Any], wait: bool = True) -> Sprocket:
        """`wait`=False: do not wait for replicas (see Store), when a later write of the request will."""
        stamp = now()
        values = {**fields, "created_at": stamp, "updated_at": stamp}
        # The script puts the new id in front of the rest of the JSON: `{"id":<id>,` + tail.
        tail = orjson.dumps(values)[1:]
        sprocket_id = await self._create_sprocket(
            keys=[keys.SPROCKET_NEXT_ID, keys.SPROCKET_INDEX],
            args=[keys.sprocket_prefix(), tail, *_fields(values)],
            wait=wait,
        )
        return Sprocket(sprocket_id, b'{"id":%d,' % sprocket_id + tail, 1)

    async def get_sprocket(self, sprocket_id: int) -> Sprocket:
        json, version = await self._command("HMGET", keys.key_for_sprocket(sprocket_id), "json", "version")
        if version is None:
            raise NotFound(sprocket_id)
        if json is None:  # a hash written by hand, say: render it from its fields
            json = _sprocket_json(sprocket_id, (await self.sprocket_fields(sprocket_id))[0])
        return Sprocket(sprocket_id, json, int(version))

    async def sprocket_fields(self, sprocket_id: int) -> tuple[dict[str, Any], int]:
        """A sprocket's fields (created_at and updated_at too) and version."""
        raw = await self.redis.hgetall(keys.key_for_sprocket(sprocket_id))
        if not raw:
            raise NotFound(sprocket_id)
        return _fields_of(raw), int(raw[b"version"])

    async def list_sprockets(self, after: int, limit: int) -> tuple[list[orjson.Fragment], int | None]:
        """A page of sprockets' JSON in id order, and the id to continue after (None at the end)."""
        ids = await self.redis.zrangebyscore(keys.SPROCKET_INDEX, f"({after}", "+inf", start=0, num=limit + 1)
        page = [int(i) for i in ids[:limit]]
        async with self.redis.pipeline(transaction=False) as pipe:
            for sprocket_id in page:
                pipe.hmget(keys.key_for_sprocket(sprocket_id), "json", "version")
            replies = await pipe.execute()
        sprockets = []
        for sprocket_id, (json, version) in zip(page, replies, strict=True):
            if version is not None:  # else deleted between the two round trips: left out
                sprockets.append(orjson.Fragment(json or (await self.get_sprocket(sprocket_id)).json))
        return sprockets, (page[-1] if len(ids) > limit else None)

    async def update_sprocket(
        self, sprocket_id: int, fields: Mapping[str, Any], accepted: list[int] | None
    ) -> Sprocket:
        """Write the fields if the version is one of `accepted` (None: any)."""
        values = {**fields, "updated_at": now()}
        # The script puts the stored created_at between the two halves of the JSON.
        head = orjson.dumps({"id": sprocket_id, **fields, "created_at": ""})[:-2]
        tail = b'","updated_at":"%s"}' % values["updated_at"].encode()
        reply = await self._update_sprocket(
            keys=[keys.key_for_sprocket(sprocket_id)], args=[_versions(accepted), head, tail, *_fields(values)]
        )
        if reply == 0:
            raise NotFound(sprocket_id)
        if reply == -1:
            raise VersionMismatch(sprocket_id)
        json, version = reply
        return Sprocket(sprocket_id, json, int(version))

    async def delete_sprocket(self, sprocket_id: int, accepted: list[int] | None) -> None:
        reply = await self._delete_sprocket(
            keys=[keys.key_for_sprocket(sprocket_id), keys.SPROCKET_INDEX], args=[_versions(accepted), sprocket_id]
        )
        if reply == 0:
            raise NotFound(sprocket_id)
        if reply == -1:
            raise VersionMismatch(sprocket_id)

    # Factories

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
                *_fields(created),
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

    async def list_factories(
        self, after: int, limit: int, first: int, last: int, most: int = UNLIMITED
    ) -> tuple[list[Factory], int | None]:
        """A page of factories with their points in [first, last]: at most `limit` factories and `most` points.

        Returns the page and the id to continue after (None at the end).
        """
        ids = await self.redis.zrangebyscore(keys.FACTORY_INDEX, f"({after}", "+inf", start=0, num=limit + 1)
        page = [int(i) for i in ids[:limit]]
        # The script only counts each factory's points here and names their buckets: the points come from
        # plain ZRANGEs, read for all factories at once, which cost Redis a fifth of what the script's do.
        reads = [ranges.script_args(factory_id, first, last, most, script_reads_at_most=0) for factory_id in page]
        if isinstance(self.redis, RedisCluster):
            # Concurrent calls: a cluster client cannot pipeline scripts, and factories live on different shards.
            replies = await asyncio.gather(*(self._read_factory(*read) for read in reads))
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                for read_keys, read_args in reads:
                    await self._read_factory(read_keys, read_args, client=pipe)
                replies = await pipe.execute()
        chosen: list[tuple[int, Any]] = []
        next_id = page[-1] if len(ids) > limit else None
        budget = most
        for factory_id, reply in zip(page, replies, strict=True):
            if reply is None:
                continue  # listed, but not written yet (or never, after a crash): see create_factory
            if reply[2] > budget:
                if not chosen:
                    raise TooManyPoints(reply[2], most)
                next_id = chosen[-1][0]  # the page is full of points: end it early
                break
            budget -= reply[2]
            chosen.append((factory_id, reply))
        reading = (ranges.factory(self.redis, factory_id, first, last, most, reply) for factory_id, reply in chosen)
        return list(await asyncio.gather(*reading)), next_id

    # Events

    async def newest_event_id(self, factory_id: int) -> str:
        return await streams.newest_event_id(self.redis, factory_id)

    def subscribe(self) -> contextlib.AbstractAsyncContextManager[streams.Subscriber]:
        return streams.subscribe(self.subscribers)

    # Idempotency records and seed records

    async def claim_idempotency(self, scope: str, digest: str, claim: bytes, ttl_s: int) -> bytes | None:
        """Claim the key for a first request; if it is taken, return what it holds."""
        held: bytes | None = await self._claim(keys=[keys.key_for_idempotency(scope, digest)], args=[claim, ttl_s])
        return held

    async def save_idempotency(self, scope: str, digest: str, record: bytes, ttl_s: int) -> None:
        """The last write of a create with an Idempotency-Key: it waits for replicas for the create too."""
        key = keys.key_for_idempotency(scope, digest)
        if self.wait_replicas:
            await execute_and_wait(self.redis, self.wait_replicas, self.wait_ms, "SET", key, record, "EX", ttl_s)
        else:
            await self.redis.set(key, record, ex=ttl_s)

    async def confirm_idempotency(self, scope: str, digest: str, record: bytes) -> None:
        """Before a replay, when writes wait for replicas: the record written again as it is (value and
        expiry), to wait until replicas have it, since the first answer may have been that they did not."""
        if self.wait_replicas:
            key = keys.key_for_idempotency(scope, digest)
            await execute_and_wait(self.redis, self.wait_replicas, self.wait_ms, "SET", key, record, "KEEPTTL", "XX")

    async def release_idempotency(self, scope: str, digest: str) -> None:
        await self.redis.delete(keys.key_for_idempotency(scope, digest))

    async def rate_limit(self, client: str, per_s: float, burst: int) -> tuple[bool, int, int]:
        """Count one request of `client`: (allowed, ms until the next would be, requests left)."""
        allowed, wait_ms, left = await self._rate_limit(
            keys=[keys.key_for_rate_limit(client)], args=[1000 / per_s, burst]
        )
        return bool(allowed), int(wait_ms), int(left)

    # Seeding

    @functools.cached_property
    def _put_sprockets(self) -> Script:
        return Script(self.redis, "sprocket_put")

    async def new_sprocket_ids(self, count: int = 1) -> int:
        """Reserve `count` consecutive sprocket ids; returns the first."""
        return int(await self.redis.incrby(keys.SPROCKET_NEXT_ID, count)) - count + 1

    async def put_sprockets(self, ids: Sequence[int], sprockets: Sequence[Mapping[str, Any]]) -> None:
        """Write sprockets as new (version 1) under reserved ids, and list them.

        Each mapping holds the same fields, and created_at and updated_at if they are to be kept (else
        now). A sprocket already at one of those ids is replaced.
        """
        if not sprockets:
            return
        stamp = now()
        rows = []
        for sprocket_id, fields in zip(ids, sprockets, strict=True):
            values = {"created_at": stamp, "updated_at": stamp, **fields}
            values = {name: values[name] for name in (*SPROCKET_FIELDS, "created_at", "updated_at")}
            rows.append({**values, "json": _sprocket_json(sprocket_id, values)})
        await self._put_sprockets(
            keys=[keys.SPROCKET_INDEX, *(keys.key_for_sprocket(i) for i in ids)],
            args=[len(rows[0]), *ids, *(item for row in rows for item in _fields(row))],
        )

    async def taken_ids(self, kind: str, ids: Sequence[int]) -> list[int]:
        """Those of `ids` that a factory or sprocket (`kind`) has."""
        index = keys.FACTORY_INDEX if kind == "factories" else keys.SPROCKET_INDEX
        scores = await self.redis.zmscore(index, list(ids)) if ids else []
        return [i for i, score in zip(ids, scores, strict=True) if score is not None]

    async def raise_next_id(self, kind: str, at_least: int) -> None:
        """Make sure the id counter of factories or sprockets (`kind`) hands out no id up to `at_least`."""
        counter = keys.FACTORY_NEXT_ID if kind == "factories" else keys.SPROCKET_NEXT_ID
        await self._raise_counter(keys=[counter], args=[at_least])

    @functools.cached_property
    def _raise_counter(self) -> Script:
        return Script(self.redis, "counter_raise")

    async def is_empty(self) -> bool:
        """True when there is no factory and no sprocket."""
        # Two commands: the indexes live in different hash slots on a cluster.
        return not await self.redis.exists(keys.FACTORY_INDEX) and not await self.redis.exists(keys.SPROCKET_INDEX)

    async def get_seed(self, digest: str) -> bytes | None:
        """The record of the seed file with this SHA-256 hex digest, if it was ever loaded."""
        record: bytes | None = await self.redis.hget(keys.SEEDS, digest)
        return record

    async def claim_seed(self, digest: str, record: bytes) -> bytes:
        """Save `record` unless the file has one already; returns the record in force."""
        await self.redis.hsetnx(keys.SEEDS, digest, record)
        held: bytes = await self.redis.hget(keys.SEEDS, digest)
        return held

    async def save_seed(self, digest: str, record: bytes) -> None:
        await self.redis.hset(keys.SEEDS, digest, record)
