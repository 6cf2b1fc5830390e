"""Reading a factory's points in a time range: a script reads a few thousand points itself, and
leaves more to a transaction of plain ZRANGEs, which cost Redis a fifth as much a point."""

from typing import Any

import redis.exceptions

from sprockets_cache.errors import TooManyPoints
from sprockets_cache.store import keys
from sprockets_cache.store.connections import Client, transaction
from sprockets_cache.store.keys import BUCKET_WIDTH_S
from sprockets_cache.store.points import parse, parse_spans
from sprockets_cache.store.records import Factory

# Past this many points factory_read.lua leaves the reading to factory(): measured, the two cost
# about the same here, the script's CPU in Redis and the transaction's round trip and Python.
SCRIPT_READS_AT_MOST = 10_000
# A transaction finds buckets in the range that were not there a moment before (a write made them):
# it is tried again with those, this many times at most.
ATTEMPTS = 5


def script_args(
    factory_id: int, first: int, last: int, most: int, script_reads_at_most: int | None = None
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of factory_read.lua; past `script_reads_at_most` points (SCRIPT_READS_AT_MOST by
    default) it leaves the reading to factory()."""
    return (
        [keys.key_for_factory(factory_id), keys.key_for_factory_buckets(factory_id)],
        [
            keys.factory_points_prefix(factory_id),
            *(first, last, most, BUCKET_WIDTH_S),
            SCRIPT_READS_AT_MOST if script_reads_at_most is None else script_reads_at_most,
            keys.key_for_factory_spans(factory_id),
            keys.key_for_factory_sums(factory_id),
        ],
    )


async def factory(client: Client, factory_id: int, first: int, last: int, most: int, reply: list[Any]) -> Factory:
    """The factory from factory_read.lua's reply (not false), reading its buckets when the script left them."""
    name, version, points = reply[0].decode(), int(reply[1]), int(reply[2])
    if points > most:
        raise TooManyPoints(points, most)
    if reply[3] == b"members":
        return Factory(factory_id, name, version, parse(reply[4], points))
    if reply[3] == b"spans":  # the range reaches into the downsampled past (docs/retention.md)
        return Factory(factory_id, name, version, parse_spans(reply[5]), int(reply[4]), int(reply[6]))
    numbers = reply[4:]
    for _ in range(ATTEMPTS):
        # The bucket index and the version read in the same step as the buckets: the points are those of
        # that version, unless the index names buckets the read missed.
        index, version, *buckets = await transaction(
            client,
            [
                (
                    "ZRANGEBYSCORE",
                    keys.key_for_factory_buckets(factory_id),
                    first // BUCKET_WIDTH_S,
                    last // BUCKET_WIDTH_S,
                ),
                ("HGET", keys.key_for_factory(factory_id), "version"),
                *(_read(factory_id, int(number), first, last) for number in numbers),
            ],
        )
        if index == numbers:
            count = sum(map(len, buckets))
            if count > most:
                raise TooManyPoints(count, most)
            members = b":".join(b":".join(bucket) for bucket in buckets if bucket)
            return Factory(factory_id, name, int(version), parse(members, count))
        numbers = index
    # As Redis too slow for the request: 503, try again.
    raise redis.exceptions.TimeoutError(f"factory {factory_id} kept gaining buckets while it was read")


def _read(factory_id: int, number: int, first: int, last: int) -> tuple[Any, ...]:
    key = keys.key_for_factory_points(factory_id, number)
    if first <= number * BUCKET_WIDTH_S and (number + 1) * BUCKET_WIDTH_S - 1 <= last:
        return ("ZRANGE", key, 0, -1)
    return ("ZRANGEBYSCORE", key, first, last)
