"""Sprockets in Redis: one hash each, with its JSON as the API shows it, and an index of ids.

Part of the Store (store.py); a write is one Lua script over the sprocket's hash and the index.
"""

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from sprockets_cache.clock import now
from sprockets_cache.errors import NotFound, VersionMismatch
from sprockets_cache.store import keys
from sprockets_cache.store.commands import command
from sprockets_cache.store.records import Sprocket
from sprockets_cache.store.scripts import Script, flat

SPROCKET_FIELDS = ("teeth", "pitch_diameter", "outside_diameter", "pitch")
# How long a deleted sprocket's tombstone lives: at least as long as the record of the Idempotency-Key it
# was created with (web.IDEMPOTENCY_TTL_S), so that a replay of its create finds it.
TOMBSTONE_TTL_S = 24 * 3600


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


class SprocketStore:
    """The Store's sprockets."""

    # Set by Store.__init__. Any: redis-py's annotations do not tell its sync and async replies apart.
    redis: Any
    wait_replicas: int
    wait_ms: int
    tags_creates: bool

    @functools.cached_property
    def _create_sprocket(self) -> Script:
        return Script(self.redis, "sprocket_create", self.wait_replicas, self.wait_ms)

    @functools.cached_property
    def _update_sprocket(self) -> Script:
        return Script(self.redis, "sprocket_update", self.wait_replicas, self.wait_ms)

    @functools.cached_property
    def _delete_sprocket(self) -> Script:
        return Script(self.redis, "sprocket_delete", self.wait_replicas, self.wait_ms)

    async def create_sprocket(self, fields: Mapping[str, Any], idempotency: str | None = None) -> Sprocket:
        """With `idempotency` (the digest of the request's Idempotency-Key) the create does not wait for
        replicas: saving the key's record does (Store.save_idempotency). Where creates are tagged
        (Store.tags_creates), the sprocket's hash keeps the key's tag."""
        stamp = now()
        values = {**fields, "created_at": stamp, "updated_at": stamp}
        # The script puts the new id in front of the rest of the JSON: `{"id":<id>,` + tail.
        tail = orjson.dumps(values)[1:]
        tagged = (keys.CREATED_WITH, keys.idempotency_tag(idempotency)) if idempotency and self.tags_creates else ()
        sprocket_id = await self._create_sprocket(
            keys=[keys.SPROCKET_NEXT_ID, keys.SPROCKET_INDEX],
            args=[keys.sprocket_prefix(), tail, *flat(values), *tagged],
            wait=idempotency is None,
        )
        return Sprocket(sprocket_id, b'{"id":%d,' % sprocket_id + tail, 1)

    async def get_sprocket(self, sprocket_id: int) -> Sprocket:
        json, version = await command(self.redis, "HMGET", keys.key_for_sprocket(sprocket_id), "json", "version")
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
            keys=[keys.key_for_sprocket(sprocket_id)], args=[_versions(accepted), head, tail, *flat(values)]
        )
        if reply == 0:
            raise NotFound(sprocket_id)
        if reply == -1:
            raise VersionMismatch(sprocket_id)
        json, version = reply
        return Sprocket(sprocket_id, json, int(version))

    async def delete_sprocket(self, sprocket_id: int, accepted: list[int] | None) -> None:
        """Where creates are tagged, a tombstone keeps the tag for as long as its key's record lives."""
        tombstone = [keys.key_for_deleted_sprocket(sprocket_id)] if self.tags_creates else []
        reply = await self._delete_sprocket(
            keys=[keys.key_for_sprocket(sprocket_id), keys.SPROCKET_INDEX, *tombstone],
            args=[_versions(accepted), sprocket_id, *([TOMBSTONE_TTL_S] if tombstone else [])],
        )
        if reply == 0:
            raise NotFound(sprocket_id)
        if reply == -1:
            raise VersionMismatch(sprocket_id)

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
            args=[len(rows[0]), *ids, *(item for row in rows for item in flat(row))],
        )
