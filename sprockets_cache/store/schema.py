"""What this version needs of a store, checked before the API or a command uses one: a Redis of 7.0 or
later (or Valkey), and points in this version's format.

Format 1 (no `keys.SCHEMA` key) kept each bucket of points as a string of packed 10-byte records;
format 2 keeps sorted sets a person can read (points.py). `python -m sprockets_cache migrate`
(ops/migration.py) converts the first into the second.
"""

import re

from sprockets_cache.store import keys
from sprockets_cache.store.store import Store

SCHEMA_VERSION = keys.SCHEMA_VERSION
MIGRATE_COMMAND = "python -m sprockets_cache migrate"


# Every write script declares flags (`#!lua`), which Redis reads from 7.0 on, so that Redis refuses a
# write whole before it starts (out of memory, read-only); Valkey began at 7.2.
OLDEST_REDIS = (7, 0)
OLDEST_TEXT = ".".join(map(str, OLDEST_REDIS))


class IncompatibleStore(Exception):
    """This version cannot use the store as it is."""


class UnsupportedRedis(IncompatibleStore):
    """The server is a Redis older than OLDEST_REDIS."""


class OutdatedStore(IncompatibleStore):
    """The store's points are in a format this version does not read."""


async def check(store: Store) -> None:
    """Start-up: UnsupportedRedis on a Redis older than 7.0; OutdatedStore unless the store is in this
    version's format or holds no factory yet."""
    if not await store.reads_script_flags():
        release = await store.release()
        raise UnsupportedRedis(f"the server is Redis {release}; sprockets-cache needs Redis {OLDEST_TEXT} or later")
    found = await version(store)
    if found == SCHEMA_VERSION or (found is None and not await store.redis.exists(keys.FACTORY_INDEX)):
        return
    if found is None:
        raise OutdatedStore(
            "the store holds production points in the packed format of an earlier version; "
            f"convert them with `{MIGRATE_COMMAND}` (same REDIS_URL), then start again"
        )
    raise OutdatedStore(f"the store is in format {found}, written by a newer version; this one reads format 2")


def supported(release: str) -> bool:
    """Whether a Redis release ("7.0.15", "6.2.14", "7.4-rc1") is OLDEST_REDIS or later."""
    return tuple(int(number) for number in re.findall(r"\d+", release)[:2]) >= OLDEST_REDIS


async def version(store: Store) -> int | None:
    """The format the store says it is in; None when it says none (format 1, or no factory yet)."""
    found = await store.redis.get(keys.SCHEMA)
    return None if found is None else int(found)
