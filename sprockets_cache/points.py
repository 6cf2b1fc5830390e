"""The packed form of production points, as kept in Redis.

A factory's points are split into buckets of `BUCKET_WIDTH_S` seconds. Each
bucket is one Redis string of 10-byte records sorted by time: the offset of
the time within the bucket (u16), actual (u32) and goal (u32), all
big-endian. That is about 10 bytes a point, where a sorted set member costs
over 100 (BENCHMARKS.md has the measurements).
"""

import bisect
import itertools
import operator
import struct
from collections.abc import Iterable, Mapping, Sequence

from sprockets_cache.keys import BUCKET_WIDTH_S

RECORD = struct.Struct(">HII")


class Columns:
    """Points as the three columns of `chart_data`, ordered by time."""

    __slots__ = ("actual", "goal", "time")

    def __init__(self) -> None:
        self.actual: list[int] = []
        self.goal: list[int] = []
        self.time: list[int] = []

    def bucketed(self, width_s: int) -> "Columns":
        """Sums of actual and goal over each `width_s` seconds, labelled with the span's first second."""
        sums = Columns()
        for time, actual, goal in zip(self.time, self.actual, self.goal, strict=True):
            start = time - time % width_s
            if sums.time and sums.time[-1] == start:
                sums.actual[-1] += actual
                sums.goal[-1] += goal
            else:
                sums.time.append(start)
                sums.actual.append(actual)
                sums.goal.append(goal)
        return sums

    def as_chart_data(self) -> dict[str, list[int]]:
        return {"sprocket_production_actual": self.actual, "sprocket_production_goal": self.goal, "time": self.time}


def pack(times: Sequence[int], actuals: Sequence[int], goals: Sequence[int]) -> dict[int, bytes]:
    """Group points into packed buckets. A later point at the same time replaces an earlier one."""
    if not all(map(operator.lt, times, times[1:])):
        # Out of order or repeated: sort, keeping the last point at each time.
        latest = dict(zip(times, zip(actuals, goals, strict=True), strict=True))
        times = sorted(latest)
        actuals, goals = zip(*map(latest.__getitem__, times), strict=True) if times else ((), ())
    buckets = {}
    start = 0
    while start < len(times):
        bucket = times[start] // BUCKET_WIDTH_S
        end = bisect.bisect_left(times, (bucket + 1) * BUCKET_WIDTH_S, start)
        base = bucket * BUCKET_WIDTH_S
        offsets = [time - base for time in times[start:end]]
        records = itertools.chain.from_iterable(zip(offsets, actuals[start:end], goals[start:end], strict=True))
        # One C call per bucket: a format of `end - start` records.
        buckets[bucket] = struct.pack(">" + "HII" * (end - start), *records)
        start = end
    return buckets


def unpack(buckets: Iterable[tuple[int, bytes]]) -> Columns:
    """The points of (bucket number, packed) pairs, in bucket order."""
    columns = Columns()
    for bucket, packed in buckets:
        base = bucket * BUCKET_WIDTH_S
        for offset, actual, goal in RECORD.iter_unpack(packed):
            columns.time.append(base + offset)
            columns.actual.append(actual)
            columns.goal.append(goal)
    return columns


def count(buckets: Mapping[int, bytes]) -> int:
    return sum(len(packed) for packed in buckets.values()) // RECORD.size


def span(buckets: Mapping[int, bytes]) -> tuple[int, int]:
    """The first and last time in non-empty buckets."""
    first, last = min(buckets), max(buckets)
    first_offset = RECORD.unpack_from(buckets[first])[0]
    last_offset = RECORD.unpack_from(buckets[last], len(buckets[last]) - RECORD.size)[0]
    return first * BUCKET_WIDTH_S + first_offset, last * BUCKET_WIDTH_S + last_offset
