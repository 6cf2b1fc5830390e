"""HTTP handlers for /api/v1/factories."""

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sprockets_cache.http import read_cache
from sprockets_cache.http.problems import Problem
from sprockets_cache.http.read_cache import ReadCache
from sprockets_cache.http.web import (
    JSON,
    bucket_width,
    etag,
    header,
    idempotent,
    json_response,
    not_modified,
    page,
    page_response,
    path_id,
    read_json,
    settings,
    store,
    time_range,
    validate,
    versioned_response,
)
from sprockets_cache.models import ChartData, FactoryIn
from sprockets_cache.store.points import Columns, buckets, by_time
from sprockets_cache.store.records import Factory, Stamp


def _check_point_count(request: Request, chart_data: Any) -> None:
    """Refuse an over-long batch before validating it point by point."""
    limit = settings(request).max_chart_points
    times = chart_data.get("time") if isinstance(chart_data, dict) else None
    if isinstance(times, list) and len(times) > limit:
        raise Problem(413, f"A write holds at most {limit} points; this one has {len(times)}.")


def _points(chart_data: ChartData | None) -> Columns:
    if chart_data is None:
        return Columns([], [], [])
    return by_time(chart_data.time, chart_data.sprocket_production_actual, chart_data.sprocket_production_goal)


def _cache(request: Request) -> ReadCache:
    return request.scope["state"]["read_cache"]  # type: ignore[no-any-return]


def _encoded(factory: Factory, bucket_s: int | None) -> bytes:
    return orjson.dumps(factory.as_json(bucket_s))


async def list_factories(request: Request) -> Response:
    after, limit = page(request)
    first, last = time_range(request)
    most = settings(request).max_response_points
    bucket_s = bucket_width(request)
    cache = _cache(request)
    # The same entries as single reads: a factory held at its stamp in Redis is not read again.
    held: dict[int, bytes] = {}

    def holds(factory_id: int, stamp: Stamp) -> int | None:
        entry = cache.get(read_cache.key(factory_id, first, last, bucket_s), stamp)
        if entry is None:
            return None
        held[factory_id] = entry.body
        return entry.points

    listed, last_id = await store(request).list_stamped_factories(
        after, limit, first, last, most, holds if cache.enabled else None
    )
    items: list[Any] = []
    for factory_id, factory in listed:
        if factory is None:
            items.append(orjson.Fragment(held[factory_id]))
            continue
        body = _encoded(factory, bucket_s)
        cache.put(read_cache.key(factory_id, first, last, bucket_s), factory.stamp, body, len(factory.points.time))
        items.append(orjson.Fragment(body))
    return page_response(request, "factories", items, last_id)


async def get_factory(request: Request) -> Response:
    first, last = time_range(request)
    bucket_s = bucket_width(request)
    most = settings(request).max_response_points
    factory_id = path_id(request, "factory_id")
    cache = _cache(request)
    query = read_cache.key(factory_id, first, last, bucket_s)
    if query in cache or header(request, b"if-none-match") is not None:
        # The stamp alone (one small round trip) answers a conditional read, and tells whether the answer
        # kept is still Redis's.
        stamp = await store(request).factory_stamp(factory_id)
        if not_modified(request, stamp.version):
            return _answer(None, stamp.version)
        entry = cache.get(query, stamp)
        if entry is not None:
            return _answer(entry.body, stamp.version)
    elif cache.enabled:
        cache.get(query, None)  # a miss, counted
    # The points and the stamp they are of, read in one step: the answer is kept under that stamp.
    factory = await store(request).get_factory(factory_id, first, last, most)
    body = _encoded(factory, bucket_s)
    cache.put(query, factory.stamp, body, len(factory.points.time))
    return _answer(None if not_modified(request, factory.version) else body, factory.version)


def _answer(body: bytes | None, version: int) -> Response:
    """A read's answer with its ETag, or 304 without a body (None), as versioned_response gives them."""
    response = Response(status_code=304) if body is None else Response(body, media_type=JSON)
    response.raw_headers += [(b"etag", etag(version).encode()), (b"cache-control", b"no-cache")]
    return response


async def create_factory(request: Request) -> Response:
    body = await read_json(request, settings(request).max_chart_body_bytes)
    if isinstance(body, dict):
        _check_point_count(request, body.get("chart_data"))
    factory = validate(FactoryIn, body)
    points = _points(factory.chart_data)

    async def create(idempotency: str | None) -> Response:
        factory_id = await store(request).new_factory_ids()
        name = factory.name or f"Factory {factory_id}"
        version = await store(request).create_factory(factory_id, name, buckets(points), idempotency)
        request.state.metrics.points_written.inc(len(points.time))
        body = {"id": factory_id, "name": name, "resolution_s": 1, "chart_data": points.as_chart_data()}
        return versioned_response(request, body, version, status=201, location=f"/api/v1/factories/{factory_id}")

    return await idempotent(request, "factories", body, create)


async def write_chart_data(request: Request) -> Response:
    factory_id = path_id(request, "factory_id")
    body = await read_json(request, settings(request).max_chart_body_bytes)
    _check_point_count(request, body)
    points = _points(validate(ChartData, body))
    version = await store(request).write_points(factory_id, buckets(points))
    request.state.metrics.points_written.inc(len(points.time))
    return json_response({"written": len(points.time)}, headers={"ETag": etag(version)})


async def factory_summary(request: Request) -> Response:
    first, last = time_range(request)
    factory_id = path_id(request, "factory_id")
    summary = await store(request).summarize_factory(factory_id, first, last)
    actual_total, goal_total = summary.actual_total, summary.goal_total
    body = {
        "id": factory_id,
        "points": summary.points,
        "actual_total": actual_total,
        "goal_total": goal_total,
        "attainment": actual_total / goal_total if goal_total else None,
        "first_time": summary.first_time,
        "last_time": summary.last_time,
    }
    return versioned_response(request, body, summary.version)
