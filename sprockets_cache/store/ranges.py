"""Reading a factory's points in a time range. A range of a few buckets is read in one transaction of
plain ZRANGEs of the buckets its times name (direct()); a longer one by a script, which finds the buckets
that hold points and reads a few thousand points itself, and leaves more to a transaction of ZRANGEs.
A point that a script reads costs Redis five times what a ZRANGE's reply of it does."""

from typing import Any

import redis.exceptions

from sprockets_cache.errors import NotFound, TooManyPoints
from sprockets_cache.store import keys
from sprockets_cache.store.commands import transaction
from sprockets_cache.store.connections import Client
from sprockets_cache.store.keys import BUCKET_WIDTH_S
from sprockets_cache.store.points import parse, parse_spans
from sprockets_cache.store.records import Factory

# Past this many points factory_read.lua leaves the reading to factory(): measured, the two cost
# about the same here, the script's CPU in Redis and the transaction's round trip and Python.
SCRIPT_READS_AT_MOST = 10_000
# A range over at most this many buckets (two days) is read by direct(). Its buckets are named by its
# times alone, so a long range of few points would cost one empty ZRANGE an hour; past this, the script
# finds the buckets that exist. At most 172,800 points are read (one a second), also when the answer
# is TooManyPoints.
DIRECT_BUCKETS_AT_MOST = 48
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


def is_direct(first: int, last: int) -> bool:
    return last // BUCKET_WIDTH_S - first // BUCKET_WIDTH_S < DIRECT_BUCKETS_AT_MOST


async def direct(client: Client, factory_id: int, first: int, last: int, most: int) -> Factory | None:
    """The factory with its points in [first, last] (is_direct), in one transaction: its fields, and each
    bucket whose hour the range touches. None when the range reaches into the downsampled past, which the
    script answers (docs/retention.md)."""
    (name, version, created_at, raw_from, span_s), *buckets = await transaction(
        client,
        [
            ("HMGET", keys.key_for_factory(factory_id), "name", "version", "created_at", "raw_from", "span_s"),
            *(_read(factory_id, n, first, last) for n in range(first // BUCKET_WIDTH_S, last // BUCKET_WIDTH_S + 1)),
        ],
    )
    if version is None:
        raise NotFound(factory_id)
    if span_s is not None and first < int(raw_from):
        return None
    count = sum(map(len, buckets))
    if count > most:
        raise TooManyPoints(count, most)
    members = b":".join([b":".join(bucket) for bucket in buckets if bucket])
    return Factory(factory_id, name.decode(), int(version), parse(members, count), created_at=created_at or b"")


async def factory(client: Client, factory_id: int, first: int, last: int, most: int, reply: list[Any]) -> Factory:
    """The factory from factory_read.lua's reply (not false), reading its buckets when the script left them."""
    name, version, created_at, points = reply[0].decode(), int(reply[1]), reply[2], int(reply[3])
    if points > most:
        raise TooManyPoints(points, most)
    if reply[4] == b"members":
        return Factory(factory_id, name, version, parse(reply[5], points), created_at=created_at)
    if reply[4] == b"spans":  # the range reaches into the downsampled past (docs/retention.md)
        spans = parse_spans(reply[6])
        return Factory(factory_id, name, version, spans, int(reply[5]), int(reply[7]), created_at)
    numbers = reply[5:]
    for _ in range(ATTEMPTS):
        # The bucket index and the version read in the same step as the buckets: the points are those of
        # that version, unless the index names buckets the read missed.
        index, (version, created_at), *buckets = await transaction(
            client,
            [
                (
                    "ZRANGEBYSCORE",
                    keys.key_for_factory_buckets(factory_id),
                    first // BUCKET_WIDTH_S,
                    last // BUCKET_WIDTH_S,
                ),
                ("HMGET", keys.key_for_factory(factory_id), "version", "created_at"),
                *(_read(factory_id, int(number), first, last) for number in numbers),
            ],
        )
        if index == numbers:
            count = sum(map(len, buckets))
            if count > most:
                raise TooManyPoints(count, most)
            members = b":".join([b":".join(bucket) for bucket in buckets if bucket])
            return Factory(factory_id, name, int(version), parse(members, count), created_at=created_at or b"")
        numbers = index
    # As Redis too slow for the request: 503, try again.
    raise redis.exceptions.TimeoutError(f"factory {factory_id} kept gaining buckets while it was read")


def _read(factory_id: int, number: int, first: int, last: int) -> tuple[Any, ...]:
    key = keys.key_for_factory_points(factory_id, number)
    if first <= number * BUCKET_WIDTH_S and (number + 1) * BUCKET_WIDTH_S - 1 <= last:
        return ("ZRANGE", key, 0, -1)
    return ("ZRANGEBYSCORE", key, first, last)
