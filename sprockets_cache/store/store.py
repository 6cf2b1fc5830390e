"""Everything the service keeps in Redis: sprockets, factories and their points.

The store speaks in ids, dicts and points by bucket; it never sees a request.
Each write that touches several keys is one Lua script over keys of one
hash slot, so it is atomic on a single Redis and on a cluster alike. Its
sprockets are in sprockets.py and its factories in factories.py.
"""

import contextlib
import functools
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

from sprockets_cache.store import keys, streams
from sprockets_cache.store.commands import command, execute_and_wait
from sprockets_cache.store.connections import Client
from sprockets_cache.store.factories import FactoryStore
from sprockets_cache.store.scripts import Script
from sprockets_cache.store.sprockets import SprocketStore

# Writes nothing, yet Redis counts it a write (it has a flags line without no-writes) and checks before
# running it what it checks before a write: it answers READONLY, OOM, MISCONF or NOREPLICAS instead.
_WRITE_PROBE = "#!lua\nreturn 1"
# How long a key of keys.created_markers lives: it is written only so that its write is replicated.
_MARKER_TTL_S = 10
# Reads nothing and writes nothing; a Redis older than 7.0 cannot compile its flags line.
_FLAGS_PROBE = "#!lua flags=no-writes\nreturn 1"


class Store(SprocketStore, FactoryStore):
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
        self.redis = client
        # POINTS_RETENTION_S and DOWNSAMPLE_S (docs/retention.md); 0: off.
        self.retention_s, self.downsample_s = retention_s, downsample_s
        # The client event subscribers read with (connect_subscribers); `client` when none is given.
        self.subscribers: Any = subscribers or client
        self.wait_replicas, self.wait_ms = wait_replicas, wait_ms
        self._claim = Script(client, "idempotency_claim")
        self._rate_limit = Script(client, "rate_limit")

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def reads_script_flags(self) -> bool:
        """Whether the server reads a script's flags line (`#!lua`), as Redis does from 7.0 on."""
        try:
            await command(self.redis, "EVAL", _FLAGS_PROBE, 0)
        except redis.ResponseError as error:
            if "Error compiling script" in str(error):
                return False
            raise
        return True

    async def release(self) -> str:
        """The Redis release the server says it is: "7.0.15" (Valkey says which Redis it matches)."""
        if isinstance(self.redis, RedisCluster):
            info = await self.redis.info("server", target_nodes=self.redis.get_default_node())
        else:
            info = await self.redis.info("server")
        return str(info["redis_version"])

    async def check_writable(self) -> None:
        """Raises what a write would now (on a cluster: to any master), if Redis refuses writes."""
        if isinstance(self.redis, RedisCluster):
            await self.redis.execute_command("EVAL", _WRITE_PROBE, 0, target_nodes=RedisCluster.PRIMARIES)
        else:
            await command(self.redis, "EVAL", _WRITE_PROBE, 0)

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

    async def save_idempotency(
        self, scope: str, digest: str, record: bytes, ttl_s: int, created: int | None = None
    ) -> None:
        """The last write of a create with an Idempotency-Key: it waits for replicas for the create too.
        `scope` is the kind of what it created ("sprockets", "factories"), `created` its id."""
        key = keys.key_for_idempotency(scope, digest)
        if self.wait_replicas:
            await execute_and_wait(self.redis, key, self.wait_replicas, self.wait_ms, "SET", key, record, "EX", ttl_s)
            await self._wait_for_created(key, scope, created)
        else:
            await self.redis.set(key, record, ex=ttl_s)

    async def confirm_idempotency(self, scope: str, digest: str, record: bytes, created: int | None = None) -> None:
        """Before a replay, when writes wait for replicas: the record written again as it is (value and
        expiry), to wait until replicas have it and what it created, since the first answer may have
        been that they did not."""
        if self.wait_replicas:
            key = keys.key_for_idempotency(scope, digest)
            wait = (self.wait_replicas, self.wait_ms)
            await execute_and_wait(self.redis, key, *wait, "SET", key, record, "KEEPTTL", "XX")
            await self._wait_for_created(key, scope, created)

    async def _wait_for_created(self, record_key: str, kind: str, created: int | None) -> None:
        """On one master, the WAIT after the record counted everything before it, the create included. On a
        cluster it counted the record's master only: on each other master the create wrote to, a write and
        a WAIT after it on the same connection, which counts that master's earlier writes, the create's."""
        cluster = self.redis
        if created is None or not isinstance(cluster, RedisCluster):
            return
        waited = {_master(cluster, record_key)}
        for marker in keys.created_markers(kind, created):
            if _master(cluster, marker) not in waited:
                waited.add(_master(cluster, marker))
                wait = (self.wait_replicas, self.wait_ms)
                await execute_and_wait(cluster, marker, *wait, "SET", marker, 1, "EX", _MARKER_TTL_S)

    async def release_idempotency(self, scope: str, digest: str) -> None:
        await self.redis.delete(keys.key_for_idempotency(scope, digest))

    async def rate_limit(self, client: str, per_s: float, burst: int) -> tuple[bool, int, int]:
        """Count one request of `client`: (allowed, ms until the next would be, requests left)."""
        allowed, wait_ms, left = await self._rate_limit(
            keys=[keys.key_for_rate_limit(client)], args=[1000 / per_s, burst]
        )
        return bool(allowed), int(wait_ms), int(left)

    # Seeding

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


def _master(cluster: RedisCluster, key: str) -> str:
    """The name (host:port) of the master that serves `key`'s slot, as the client knows it."""
    node = cluster.get_node_from_key(key)
    assert node is not None  # None only when a replica is asked for
    return node.name
