"""Everything the store holds as one seed file: the portable backup.

`write` streams `{"factories": [...], "sprockets": [...]}` one factory and one page of sprockets at
a time, each item with its id and the sprockets with their created_at and updated_at, so that
`seed` of the file into an empty Redis gives the same API answers (seed.py keeps ids given in a
file). Each factory is read in one step; writes made during an export may be in it or not.
"""

from typing import BinaryIO

import orjson

from sprockets_cache.models import MAX_TIME
from sprockets_cache.store import Store

SPROCKETS_PER_PAGE = 1000


async def write(store: Store, out: BinaryIO) -> str:
    """Write the file to `out`; returns what it holds."""
    out.write(b'{"factories": [')
    factories = points = 0
    after: int | None = 0
    while after is not None:
        page, after = await store.list_factories(after, 1, 0, MAX_TIME)
        for factory in page:
            out.write(b"\n" if not factories else b",\n")
            out.write(orjson.dumps(factory.as_json()))
            factories += 1
            points += len(factory.points.time)
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
    return f"{factories} factories ({points} points) and {sprockets} sprockets"
