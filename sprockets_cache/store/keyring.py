"""The API keys a process accepts: those of SPROCKETS_API_KEYS and those held in Redis.

Each process keeps its own copy of the keys held in Redis, so checking a key costs no round
trip: every REFRESH_S it reads a version counter that each add and revoke bumps, and reads the
keys again only when it changed. An add or a revoke is honoured within a second, everywhere.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as redis

from sprockets_cache import access
from sprockets_cache.clock import now
from sprockets_cache.store import keys
from sprockets_cache.store.connections import Client
from sprockets_cache.store.scripts import Script

log = logging.getLogger(__name__)

# How often a process looks for added and revoked keys, in seconds: with the round trip, under 1 s.
REFRESH_S = 0.5
# How often a process writes down when its keys were last used, in seconds.
LAST_USED_EVERY_S = 10.0
# The digest prefix that names a key in `keys list`, the audit trail and the rate limiter.
ID_CHARS = 16


def key_id(digest: str) -> str:
    return digest[:ID_CHARS]


@dataclass(frozen=True, slots=True)
class HeldKey:
    """A key held in Redis, as `keys list` shows it."""

    digest: str
    scopes: frozenset[str]
    created_at: str
    last_used_at: str | None


class AmbiguousPrefix(Exception):
    """More than one key's digest starts with the prefix given."""


async def add(client: Client, digest: str, scopes: Iterable[str]) -> None:
    record = orjson.dumps({"scopes": sorted(scopes), "created_at": now()})
    await Script(client, "api_key_add")(keys=[keys.API_KEYS, keys.API_KEYS_VERSION], args=[digest, record])


async def held(client: Any) -> list[HeldKey]:
    """Every key held in Redis, oldest first."""
    records, last_used = await asyncio.gather(client.hgetall(keys.API_KEYS), client.hgetall(keys.API_KEYS_LAST_USED))
    found = []
    for digest, scopes, created_at in _parsed(records):
        used = last_used.get(digest.encode())
        found.append(HeldKey(digest, scopes, created_at, used.decode() if used else None))
    return sorted(found, key=lambda key: (key.created_at, key.digest))


async def revoke(client: Any, prefix: str) -> str | None:
    """Revoke the one held key whose digest starts with `prefix`: its digest, or None when no key's does."""
    matches = [digest for digest in map(bytes.decode, await client.hkeys(keys.API_KEYS)) if digest.startswith(prefix)]
    if len(matches) > 1:
        raise AmbiguousPrefix(prefix)
    if not matches:
        return None
    script = Script(client, "api_key_revoke")
    await script(keys=[keys.API_KEYS, keys.API_KEYS_LAST_USED, keys.API_KEYS_VERSION], args=[matches[0]])
    return matches[0]


def _parsed(records: Mapping[bytes, bytes]) -> Iterable[tuple[str, frozenset[str], str]]:
    """(digest, scopes, created_at) of each well-formed record; one edited by hand into something
    else is logged and left out, so it grants nothing."""
    for raw_digest, raw in records.items():
        digest = raw_digest.decode()
        try:
            record = orjson.loads(raw)
            access.parse_entry(digest)
            yield digest, access.parse_scopes(record["scopes"]), str(record["created_at"])
        except (orjson.JSONDecodeError, access.EntryError, KeyError, TypeError) as error:
            log.warning("API key %s in Redis is malformed (%s); it is not accepted", key_id(digest), error)


class Keyring:
    """The keys this process accepts, by digest: the environment's and its copy of Redis's."""

    def __init__(self, client: Client, environment: Mapping[str, frozenset[str]]) -> None:
        self.client: Any = client
        self.environment = environment
        # digest -> scopes; read on every request, replaced (never changed) by a refresh.
        self.keys: Mapping[str, frozenset[str]] = environment
        self._held: frozenset[str] = frozenset()
        self._version: bytes | None = None
        self._used: set[str] = set()
        self._used_written = time.monotonic()
        self._note_used = Script(client, "api_key_used")

    @property
    def required(self) -> bool:
        """Whether writes need a key: once any key was ever held in Redis they do, even after the
        last one is revoked, so that revoking a key never opens writes to anyone."""
        return bool(self.keys) or self._version is not None

    def used(self, digest: str) -> None:
        """Note a request with this key, for `keys list`; written to Redis now and then."""
        if digest in self._held:
            self._used.add(digest)

    async def refresh(self) -> None:
        """Read the keys held in Redis again if any was added or revoked since the last read."""
        version = await self.client.get(keys.API_KEYS_VERSION)
        if version == self._version:
            return
        # Read after the version: a change in between is read now and again at the next refresh.
        held = {digest: scopes for digest, scopes, _ in _parsed(await self.client.hgetall(keys.API_KEYS))}
        merged = dict(held)
        for digest, scopes in self.environment.items():
            merged[digest] = merged.get(digest, frozenset()) | scopes
        self.keys, self._held, self._version = merged, frozenset(held), version

    async def write_last_used(self) -> None:
        used, self._used = self._used, set()
        self._used_written = time.monotonic()
        if used:
            await self._note_used(keys=[keys.API_KEYS, keys.API_KEYS_LAST_USED], args=[now(), *sorted(used)])

    async def keep_fresh(self, timeout_s: float, stop: asyncio.Event) -> None:
        """Refresh every REFRESH_S until `stop` is set; while Redis is away, the last copy stays in force.

        `stop` ends the loop, not only a cancel: on Python 3.11 a cancel that lands as a refresh's
        asyncio.timeout expires can come out as TimeoutError, which the loop would take for a slow Redis
        and go on (seen as a shutdown that never ended)."""
        failing = False
        while not stop.is_set():
            await asyncio.sleep(REFRESH_S)
            try:
                async with asyncio.timeout(timeout_s):
                    await self.refresh()
                    if time.monotonic() - self._used_written >= LAST_USED_EVERY_S:
                        await self.write_last_used()
            except Exception as error:  # whatever it is, the loop must go on: a stopped one would miss revokes
                if stop.is_set():
                    return
                if not failing:
                    log.warning("cannot read the API keys held in Redis (%r); keeping the last copy", error)
                failing = True
                continue
            if failing:
                log.info("reading the API keys held in Redis again")
            failing = False


@contextlib.asynccontextmanager
async def kept_fresh(keyring: Keyring, timeout_s: float) -> AsyncIterator[Keyring]:
    """The keyring read once, then refreshed in the background until the block ends."""
    try:
        async with asyncio.timeout(timeout_s):
            await keyring.refresh()
    except (redis.RedisError, TimeoutError) as error:
        log.warning("cannot read the API keys held in Redis yet (%s); retrying", error)
    stop = asyncio.Event()
    task = asyncio.create_task(keyring.keep_fresh(timeout_s, stop))
    try:
        yield keyring
    finally:
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(redis.RedisError, TimeoutError):
            # Briefly: a slow Redis must not hold up a shutdown for the sake of "last used".
            async with asyncio.timeout(min(timeout_s, 2.0)):
                await keyring.write_last_used()
