"""Everything the store holds as one seed file: the portable backup.

`write` streams `{"factories": [...], "sprockets": [...]}` one factory and one page of sprockets at
a time, each item with its id and the sprockets with their created_at and updated_at, so that
`seed` of the file into an empty Redis gives the same API answers (seed.py keeps ids given in a
file). Each factory is read in one step; writes made during an export may be in it or not.

A factory with a downsampled past (docs/retention.md) exports its spans as points at their start
times, followed by its raw points: restored, its totals are the same.
"""

from typing import BinaryIO

import orjson

from sprockets_cache.models import MAX_TIME
from sprockets_cache.store.points import Columns
from sprockets_cache.store.records import Factory
from sprockets_cache.store.store import Store

SPROCKETS_PER_PAGE = 1000
# A read of a factory's raw points finds its raw window moved since its spans were read (a write
# trimmed it): both are read again, this many times at most.
ATTEMPTS = 5


async def write(store: Store, out: BinaryIO) -> str:
    """Write the file to `out`; returns what it holds."""
    out.write(b'{"factories": [')
    factories = count = 0
    after: int | None = 0
    while after is not None:
        page, after = await store.list_factories(after, 1, 0, MAX_TIME)
        for factory in page:
            points = await _points(store, factory)
            out.write(b"\n" if not factories else b",\n")
            out.write(orjson.dumps({"id": factory.id, "name": factory.name, "chart_data": points.as_chart_data()}))
            factories += 1
            count += len(points.time)
    out.write(b'\n],\n"sprockets": [')
    sprockets = 0
    after = 0
    while after is not None:
        jsons, after = await store.list_sprockets(after, SPROCKETS_PER_PAGE)
        for json in jsons:
            out.write(b"\n" if not sprockets else b",\n")
            out.write(orjson.dumps(json))
            sprockets += 1
    out.write(b"\n]}\n")
    return f"{factories} factories ({count} points) and {sprockets} sprockets"


async def _points(store: Store, factory: Factory) -> Columns:
    """Every point of the factory: with a downsampled past, its spans as points, then its raw points."""
    for _ in range(ATTEMPTS):
        if factory.resolution_s == 1:
            return factory.points
        raw = await store.get_factory(factory.id, factory.raw_from, MAX_TIME)
        if raw.resolution_s == 1:
            kept = sum(1 for time in factory.points.time if time < factory.raw_from)
            spans = factory.points
            return Columns(
                [*spans.time[:kept], *map(int, raw.points.time)],
                [*spans.actual[:kept], *map(int, raw.points.actual)],
                [*spans.goal[:kept], *map(int, raw.points.goal)],
            )
        factory = await store.get_factory(factory.id, 0, MAX_TIME)
    raise TimeoutError(f"factory {factory.id} kept trimming its raw points while it was exported")
