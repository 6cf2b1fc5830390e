"""What the store hands out: sprockets and factories as read from Redis."""

from dataclasses import dataclass
from typing import Any

from sprockets_cache.points import Columns, parse


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

    def as_json(self, bucket_s: int | None = None) -> dict[str, Any]:
        """The API's shape; with `bucket_s`, points summed per that many seconds."""
        points = self.points.bucketed(bucket_s) if bucket_s else self.points
        return {"id": self.id, "name": self.name, "chart_data": points.as_chart_data()}

    @classmethod
    def from_reply(cls, factory_id: int, reply: list[Any]) -> "Factory":
        """From factory_read.lua's reply: name, version, the number of points and their members."""
        return cls(factory_id, reply[0].decode(), int(reply[1]), parse(reply[3], reply[2]))
