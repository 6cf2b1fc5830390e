"""The yardstick for `make bench`: about the least a Starlette + Redis service can do per request.

No validation, ETags, problem+json, metrics or logging: each handler is one Redis round trip
(redis.asyncio with hiredis), a decode, and orjson. POST chart_data runs the API's own write script
(sprockets_cache/store/lua/factory_write.lua) with the keys and arguments the API gives it, so that the
two compare what each does around the same Redis writes. Served like the API, one uvicorn worker:
`python -m uvicorn baseline:app --app-dir bench --loop uvloop --http httptools`, REDIS_URL from the
environment. Its keys start with `bl:` so they never meet the API's `sc:` keys in the same Redis.
"""

import contextlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import redis.asyncio as redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SPROCKET_NEXT_ID = "bl:sprocket:next_id"
SPROCKET_INDEX = "bl:sprocket:index"
SPROCKET_PREFIX = "bl:sprocket:"
FIELDS = ("teeth", "pitch_diameter", "outside_diameter", "pitch")
FACTORY_WRITE = Path(__file__).resolve().parent.parent / "sprockets_cache" / "store" / "lua" / "factory_write.lua"
# As the API's store: points are kept in sorted sets of an hour each, and the events stream keeps 1,000 writes.
BUCKET_WIDTH_S = 3600
EVENTS_KEPT = 1000

# INCR + HSET + ZADD in one round trip, as the API's sprocket_create.lua does (minus the version field).
CREATE_SPROCKET = """
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', ARGV[1] .. id, unpack(ARGV, 2))
redis.call('ZADD', KEYS[2], id, id)
return id
"""


def key_for_sprocket(sprocket_id: int) -> str:
    return f"{SPROCKET_PREFIX}{sprocket_id}"


def key_for_factory(factory_id: int) -> str:
    """A sorted set of "time:actual:goal" members, score = time (unix s)."""
    return f"bl:factory:{factory_id}"


def factory_prefix(factory_id: int) -> str:
    """The write script's keys, laid out as the API's (hash tag included): this plus ":buckets" and so on."""
    return f"bl:{{factory:{factory_id}}}"


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


async def get_sprocket(request: Request) -> Response:
    sprocket_id = request.path_params["id"]
    raw = await request.state.redis.hgetall(key_for_sprocket(sprocket_id))
    if not raw:
        return Response(status_code=404)
    return _json(
        {
            "id": sprocket_id,
            "teeth": int(raw[b"teeth"]),
            "pitch_diameter": float(raw[b"pitch_diameter"]),
            "outside_diameter": float(raw[b"outside_diameter"]),
            "pitch": float(raw[b"pitch"]),
            "created_at": raw[b"created_at"].decode(),
            "updated_at": raw[b"updated_at"].decode(),
        }
    )


async def get_factory(request: Request) -> Response:
    factory_id = request.path_params["id"]
    members = await request.state.redis.zrange(key_for_factory(factory_id), 0, -1)
    if not members:
        return Response(status_code=404)
    actual, goal, time = [], [], []
    for member in members:
        t, a, g = member.split(b":")
        time.append(int(t))
        actual.append(int(a))
        goal.append(int(g))
    chart_data = {"sprocket_production_actual": actual, "sprocket_production_goal": goal, "time": time}
    return _json({"id": factory_id, "name": f"Factory {factory_id}", "resolution_s": 1, "chart_data": chart_data})


async def create_sprocket(request: Request) -> Response:
    body = orjson.loads(await request.body())
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    fields = {**body, "created_at": stamp, "updated_at": stamp}
    args = [SPROCKET_PREFIX, *(item for pair in fields.items() for item in pair)]
    sprocket_id = await request.state.create_sprocket(keys=[SPROCKET_NEXT_ID, SPROCKET_INDEX], args=args)
    return _json({"id": sprocket_id, **fields}, 201)


async def write_chart_data(request: Request) -> Response:
    """The points grouped by bucket and written by factory_write.lua, keys and arguments as its header
    says. The points come in time order (the benchmark's bodies do), which the API would sort."""
    prefix = factory_prefix(request.path_params["id"])
    body = orjson.loads(await request.body())
    times = body["time"]
    buckets: dict[int, list[tuple[int, int, int]]] = {}
    for point in zip(times, body["sprocket_production_actual"], body["sprocket_production_goal"], strict=True):
        buckets.setdefault(point[0] // BUCKET_WIDTH_S, []).append(point)
    keys = [prefix, f"{prefix}:buckets", f"{prefix}:events", f"{prefix}:scratch", f"{prefix}:sums"]
    keys += [f"{prefix}:points:{n}" for n in buckets]
    args: list[int | str] = [0, times[0], times[-1], len(times), EVENTS_KEPT]
    for n, points in buckets.items():
        args += [n, len(points), sum(p[1] for p in points), sum(p[2] for p in points)]
    for points in buckets.values():
        for t, a, g in reversed(points):  # newest first
            args += [t, f"{t}:{a}:{g}"]
    if await request.state.write_factory(keys=keys, args=args) is None:
        return Response(status_code=404)  # no factory hash: the script wrote nothing
    return _json({"written": len(times)})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        yield {
            "redis": client,
            "create_sprocket": client.register_script(CREATE_SPROCKET),
            "write_factory": client.register_script(FACTORY_WRITE.read_text()),
        }
    finally:
        await client.aclose()


app = Starlette(
    routes=[
        Route("/sprockets/{id:int}", get_sprocket),
        Route("/factories/{id:int}", get_factory),
        Route("/sprockets", create_sprocket, methods=["POST"]),
        Route("/factories/{id:int}/chart_data", write_chart_data, methods=["POST"]),
    ],
    lifespan=lifespan,
)
