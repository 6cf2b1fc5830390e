"""Everything the service keeps in Redis: sprockets, factories and their points.

The store speaks in ids, dicts and points by bucket; it never sees a request.
Each write that touches several keys is one Lua script over keys of one
hash slot, so it is atomic on a single Redis and on a cluster alike. Its
sprockets are in sprockets.py and its factories in factories.py.
"""

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

from sprockets_cache.errors import CreateLost
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
        # On a cluster with replicas required, what a create with an Idempotency-Key makes keeps the key's
        # tag (keys.CREATED_WITH): so that confirming the create (_confirm_created) can tell it from another
        # create given the same id by a master that a failover rolled back.
        self.tags_creates = bool(wait_replicas) and isinstance(client, RedisCluster)
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
        `scope` is the kind of what it created ("sprockets", "factories"), `created` its id. CreateLost
        (and the key freed) when a cluster's failover threw the create away."""
        key = keys.key_for_idempotency(scope, digest)
        if self.wait_replicas:
            await execute_and_wait(self.redis, key, self.wait_replicas, self.wait_ms, "SET", key, record, "EX", ttl_s)
            await self._confirm_created(key, record, scope, digest, created, self.tags_creates)
        else:
            await self.redis.set(key, record, ex=ttl_s)

    async def confirm_idempotency(
        self, scope: str, digest: str, record: bytes, created: int | None = None, tagged: bool = False
    ) -> None:
        """Before a replay, when writes wait for replicas: the record written again as it is (value and
        expiry), to wait until replicas have it and what it created, since the first answer may have
        been that they did not. `tagged`: the record says its create was tagged (tags_creates)."""
        if self.wait_replicas:
            key = keys.key_for_idempotency(scope, digest)
            wait = (self.wait_replicas, self.wait_ms)
            await execute_and_wait(self.redis, key, *wait, "SET", key, record, "KEEPTTL", "XX")
            await self._confirm_created(key, record, scope, digest, created, tagged)

    async def _confirm_created(
        self, record_key: str, record: bytes, kind: str, digest: str, created: int | None, tagged: bool
    ) -> None:
        """On one master, the WAIT after the record counted everything before it, the create included. On a
        cluster it counted the record's master only, and the create may have gone to a master that a
        failover has since replaced: in each hash slot the create wrote, the master that serves the slot
        now looks for the create (its tag, or its id in the index), writes a marker, and a WAIT after it
        on the same connection counts that master's replicas. Only where the create is, and enough
        replicas have everything the master has, is it confirmed (NotReplicated when too few confirm).
        Where the master lacks it and its replicas confirm, the create was lost: the record is deleted,
        so that a retry creates it again, and CreateLost."""
        if created is None or not isinstance(self.redis, RedisCluster):
            return
        markers: tuple[str, ...] = keys.created_markers(kind, created)
        # A record of a create that was not tagged (made before creates were) has its master write the
        # marker only, as then.
        by_tag: tuple[str, Any] = ("tagged", keys.idempotency_tag(digest)) if tagged else ("", "")
        looks: list[tuple[list[str], tuple[str, Any]]]
        if kind == "sprockets":
            looks = [([markers[0], keys.key_for_sprocket(created), keys.key_for_deleted_sprocket(created)], by_tag)]
        else:
            looks = [
                ([markers[0], keys.key_for_factory(created)], by_tag),
                ([markers[1], keys.FACTORY_INDEX], ("listed", created)),
            ]
        found = await asyncio.gather(
            *(self._created_check(keys=where, args=[_MARKER_TTL_S, *how]) for where, how in looks),
            return_exceptions=True,
        )
        if 0 in found:
            await self._release_idempotency_record(keys=[record_key], args=[record])
            raise CreateLost
        for outcome in found:
            if isinstance(outcome, BaseException):
                raise outcome

    @functools.cached_property
    def _created_check(self) -> Script:
        return Script(self.redis, "created_check", self.wait_replicas, self.wait_ms)

    @functools.cached_property
    def _release_idempotency_record(self) -> Script:
        return Script(self.redis, "idempotency_release")

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
