"""Production points as kept in Redis: sorted sets that a person can read with redis-cli.

A factory's points are split into buckets of `BUCKET_WIDTH_S` seconds. Each bucket is a sorted set:
score = the point's unix time, member = "time:actual:goal" (for example "1611194818:32:30"). An
hour of points a minute stays in Redis's compact listpack encoding under its default settings
(BENCHMARKS.md has the measurements).
"""

import bisect
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy
import orjson

from sprockets_cache.store.keys import BUCKET_WIDTH_S

# From this many points on, reads parse with numpy (BENCHMARKS.md): each numpy call costs microseconds
# when its code is not in the CPU's caches, as between a server's requests, so small reads use orjson.
NUMPY_FROM = 256

Column = list[int] | numpy.ndarray[tuple[int], numpy.dtype[numpy.int64]]


@dataclass(frozen=True, slots=True)
class Bucket:
    """Points of one bucket, to write: ZADD's arguments, time and member pairs, newest first (a ZADD
    into a compact sorted set walks it from the start to each member's place), and their sums."""

    pairs: list[int | str]
    actual: int
    goal: int


# By bucket number, in order.
Buckets = dict[int, Bucket]


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


def by_time(times: Sequence[int], actuals: Sequence[int], goals: Sequence[int]) -> Columns:
    """The points in time order; a later point at the same time replaces an earlier one."""
    if not all(map(operator.lt, times, times[1:])):
        latest = dict(zip(times, zip(actuals, goals, strict=True), strict=True))
        times = sorted(latest)
        actuals, goals = zip(*map(latest.__getitem__, times), strict=True) if times else ((), ())
    return Columns(list(times), list(actuals), list(goals))


def buckets(points: Columns) -> Buckets:
    """Points in time order (see by_time), split into buckets."""
    times = points.time
    members = [f"{time}:{actual}:{goal}" for time, actual, goal in zip(times, points.actual, points.goal, strict=True)]
    grouped: Buckets = {}
    start = 0
    while start < len(times):
        bucket = int(times[start]) // BUCKET_WIDTH_S
        end = bisect.bisect_left(times, (bucket + 1) * BUCKET_WIDTH_S, start)
        pairs: list[int | str] = [0] * (2 * (end - start))
        pairs[0::2] = times[start:end][::-1]
        pairs[1::2] = members[start:end][::-1]
        grouped[bucket] = Bucket(pairs, sum(points.actual[start:end]), sum(points.goal[start:end]))
        start = end
    return grouped


def count(buckets: Mapping[int, Bucket]) -> int:
    return sum(len(bucket.pairs) for bucket in buckets.values()) // 2


def span(buckets: Mapping[int, Bucket]) -> tuple[int, int]:
    """The first and last time in non-empty buckets."""
    return int(buckets[min(buckets)].pairs[-2]), int(buckets[max(buckets)].pairs[0])


def parse_spans(members: bytes) -> Columns:
    """Columns from spans' members joined by ":" ("start:actual:goal:points:..."), points left out."""
    numbers = orjson.loads(b"[" + members.replace(b":", b",") + b"]") if members else []
    return Columns(numbers[0::4], numbers[1::4], numbers[2::4])


def parse(members: bytes, points: int) -> Columns:
    """Columns from `points` members joined by ":" ("time:actual:goal:time:actual:goal...")."""
    if points < NUMPY_FROM:
        numbers = orjson.loads(b"[" + members.replace(b":", b",") + b"]") if points else []
        return Columns(numbers[0::3], numbers[1::3], numbers[2::3])
    table = numpy.fromstring(members, numpy.int64, sep=":").reshape(points, 3)
    return Columns(*(numpy.ascontiguousarray(table[:, column]) for column in range(3)))
