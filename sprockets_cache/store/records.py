"""What the store hands out: sprockets and factories as read from Redis."""

from dataclasses import dataclass
from typing import Any

from sprockets_cache.store.points import Columns


@dataclass(frozen=True, slots=True)
class Sprocket:
    id: int
    # The API's JSON of it, kept in Redis beside its fields and written with them, so a read sends it
    # as it is: no decoding, no encoding.
    json: bytes
    version: int


@dataclass(frozen=True, slots=True)
class Factory:
    id: int
    name: str
    version: int
    points: Columns
    # 1: the points as written; else they are sums over spans of this many seconds (docs/retention.md).
    resolution_s: int = 1
    # With spans: where the raw window starts (the spans before it are sums kept of trimmed points).
    raw_from: int = 0
    # Read in the same step as the points: with version, the stamp they are of.
    created_at: bytes = b""

    @property
    def stamp(self) -> "Stamp":
        return Stamp(self.version, self.created_at)

    def as_json(self, bucket_s: int | None = None) -> dict[str, Any]:
        """The API's shape; with `bucket_s`, points summed per that many seconds (spans, if wider)."""
        coarser = bucket_s is not None and bucket_s > self.resolution_s
        points = self.points.bucketed(bucket_s) if coarser and bucket_s else self.points
        resolution_s = bucket_s if coarser and bucket_s else self.resolution_s
        return {"id": self.id, "name": self.name, "resolution_s": resolution_s, "chart_data": points.as_chart_data()}


@dataclass(frozen=True, slots=True)
class Stamp:
    """What identifies a factory's state: every write that changes an answer bumps its version (in the
    same Lua step), and created_at tells a factory from another made under the same id after the store
    was emptied (a new factory starts again at version 1)."""

    version: int
    created_at: bytes


@dataclass(frozen=True, slots=True)
class Summary:
    """A factory's points over a time range, added up; first and last time None when there are none."""

    version: int
    points: int
    actual_total: int
    goal_total: int
    first_time: int | None
    last_time: int | None

    @classmethod
    def from_reply(cls, reply: list[bytes]) -> "Summary":
        """From factory_summary.lua's reply: version, first and last time, then "points:actual:goal" sums."""
        points = actual = goal = 0
        for sums in reply[3:]:
            count, actual_sum, goal_sum = map(int, sums.split(b":"))
            points, actual, goal = points + count, actual + actual_sum, goal + goal_sum
        first, last = (int(time) if time else None for time in reply[1:3])
        return cls(int(reply[0]), points, actual, goal, first, last)
