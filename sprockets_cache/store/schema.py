"""The store's format, checked before the API or a command uses a store.

Format 1 (no `keys.SCHEMA` key) kept each bucket of points as a string of packed 10-byte records;
format 2 keeps sorted sets a person can read (points.py). `python -m sprockets_cache migrate`
(ops/migration.py) converts the first into the second.
"""

from sprockets_cache.store import keys
from sprockets_cache.store.store import Store

SCHEMA_VERSION = keys.SCHEMA_VERSION
MIGRATE_COMMAND = "python -m sprockets_cache migrate"


class OutdatedStore(Exception):
    """The store's points are in a format this version does not read."""


async def check(store: Store) -> None:
    """Start-up: OutdatedStore unless the store is in this version's format or holds no factory yet."""
    found = await version(store)
    if found == SCHEMA_VERSION or (found is None and not await store.redis.exists(keys.FACTORY_INDEX)):
        return
    if found is None:
        raise OutdatedStore(
            "the store holds production points in the packed format of an earlier version; "
            f"convert them with `{MIGRATE_COMMAND}` (same REDIS_URL), then start again"
        )
    raise OutdatedStore(f"the store is in format {found}, written by a newer version; this one reads format 2")


async def version(store: Store) -> int | None:
    """The format the store says it is in; None when it says none (format 1, or no factory yet)."""
    found = await store.redis.get(keys.SCHEMA)
    return None if found is None else int(found)
