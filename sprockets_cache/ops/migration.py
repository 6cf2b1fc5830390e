"""The conversion of the store's first format's points into sorted sets (see store/schema.py).

`migrate` converts bucket by bucket, each in one Lua step that leaves a converted bucket alone, so a
conversion cut short (killed, Redis gone) finishes on a rerun, with nothing lost or doubled; the
version key is written only at the end. Versions (ETags) and event streams are kept: the points are
the same.
"""

import asyncio
from collections.abc import Callable

from sprockets_cache.store import keys
from sprockets_cache.store.schema import SCHEMA_VERSION, OutdatedStore, check, version
from sprockets_cache.store.scripts import Script
from sprockets_cache.store.store import Store

# Buckets converted at once: each is one script call of a millisecond or less.
BUCKETS_AT_ONCE = 50


async def migrate(store: Store, progress: Callable[[str], None]) -> str:
    """Convert every factory's buckets to sorted sets; returns what was done."""
    try:
        await check(store)
        return f"the store is in format {SCHEMA_VERSION}: nothing to convert"
    except OutdatedStore:
        if await version(store) is not None:
            raise  # a newer format
    convert = Script(store.redis, "bucket_convert")
    factories = buckets = points = 0
    for factory_id in map(int, await store.redis.zrange(keys.FACTORY_INDEX, 0, -1)):
        numbers = list(map(int, await store.redis.zrange(keys.key_for_factory_buckets(factory_id), 0, -1)))
        converted = []
        for start in range(0, len(numbers), BUCKETS_AT_ONCE):
            calls = (_convert(convert, factory_id, number) for number in numbers[start : start + BUCKETS_AT_ONCE])
            converted += await asyncio.gather(*calls)
        factories += 1
        buckets += sum(1 for count in converted if count)
        points += sum(converted)
        if any(converted):
            progress(f"factory {factory_id}: converted {sum(converted)} points")
    await store.redis.set(keys.SCHEMA, SCHEMA_VERSION)
    return (
        f"converted {points} points in {buckets} buckets of {factories} factories; "
        f"the store is in format {SCHEMA_VERSION}"
    )


async def _convert(convert: Script, factory_id: int, bucket: int) -> int:
    """The points of one bucket converted (0 when it was converted before)."""
    bucket_keys = [
        keys.key_for_factory_points(factory_id, bucket),
        keys.key_for_factory_scratch(factory_id),
        keys.key_for_factory_sums(factory_id),
    ]
    converted: int = await convert(keys=bucket_keys, args=[bucket, bucket * keys.BUCKET_WIDTH_S])
    return converted
