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
from collections.abc import Mapping, Sequence

import numpy
import orjson

from sprockets_cache.keys import BUCKET_WIDTH_S

RECORD = struct.Struct(">HII")
# The same record, as numpy reads a run of them.
RECORDS = numpy.dtype([("offset", ">u2"), ("actual", ">u4"), ("goal", ">u4")])
# From this many points on, reads decode with numpy (BENCHMARKS.md): 1,000 points decode and render in a
# quarter of the time plain Python takes, but each numpy call costs microseconds when its code is not in
# the CPU's caches, as between a server's requests: a 20-point read cost 15% more CPU through numpy.
NUMPY_FROM = 256

Column = list[int] | numpy.ndarray[tuple[int], numpy.dtype[numpy.int64]]


class Columns:
    """Points as the three columns of `chart_data`, ordered by time: lists, or int64 arrays for many
    points, which orjson renders without a Python object per value."""

    __slots__ = ("actual", "goal", "time")

    def __init__(self, time: Column, actual: Column, goal: Column) -> None:
        self.time, self.actual, self.goal = time, actual, goal

    def bucketed(self, width_s: int) -> "Columns":
        """Sums of actual and goal over each `width_s` seconds, labelled with the span's first second."""
        if not len(self.time):
            return self
        time = numpy.asarray(self.time, numpy.int64)
        starts = time - time % width_s
        first = numpy.flatnonzero(numpy.diff(starts, prepend=-1))  # where each span begins
        sums = (numpy.add.reduceat(numpy.asarray(column, numpy.int64), first) for column in (self.actual, self.goal))
        return Columns(starts[first], *sums)

    def as_chart_data(self) -> orjson.Fragment:
        """The `chart_data` object, rendered."""
        chart_data = {
            "sprocket_production_actual": self.actual,
            "sprocket_production_goal": self.goal,
            "time": self.time,
        }
        return orjson.Fragment(orjson.dumps(chart_data, option=orjson.OPT_SERIALIZE_NUMPY))


def pack(times: Sequence[int], actuals: Sequence[int], goals: Sequence[int]) -> dict[int, bytes]:
    """Group points into packed buckets, in bucket order. A later point at the same time replaces an earlier one."""
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


def unpack(buckets: Mapping[int, bytes]) -> Columns:
    """The points of packed buckets by bucket number, the numbers in ascending order."""
    if sum(map(len, buckets.values())) < NUMPY_FROM * RECORD.size:
        times: list[int] = []
        actuals: list[int] = []
        goals: list[int] = []
        for bucket, packed in buckets.items():
            start = bucket * BUCKET_WIDTH_S
            for offset, actual, goal in RECORD.iter_unpack(packed):
                times.append(start + offset)
                actuals.append(actual)
                goals.append(goal)
        return Columns(times, actuals, goals)
    int64 = numpy.int64
    records = numpy.frombuffer(b"".join(buckets.values()), RECORDS)
    starts = numpy.fromiter(buckets, int64, len(buckets)) * BUCKET_WIDTH_S
    times = starts.repeat([len(packed) // RECORD.size for packed in buckets.values()]) + records["offset"]
    return Columns(times, records["actual"].astype(int64), records["goal"].astype(int64))


def count(buckets: Mapping[int, bytes]) -> int:
    return sum(len(packed) for packed in buckets.values()) // RECORD.size


def span(buckets: Mapping[int, bytes]) -> tuple[int, int]:
    """The first and last time in non-empty buckets."""
    first, last = min(buckets), max(buckets)
    first_offset = RECORD.unpack_from(buckets[first])[0]
    last_offset = RECORD.unpack_from(buckets[last], len(buckets[last]) - RECORD.size)[0]
    return first * BUCKET_WIDTH_S + first_offset, last * BUCKET_WIDTH_S + last_offset
