"""HTTP handlers for /api/v1/factories."""

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sprockets_cache.http.problems import Problem
from sprockets_cache.http.read_cache import Key, ReadCache, Ticket, factory_key
from sprockets_cache.http.web import (
    answer,
    bucket_width,
    etag,
    header,
    idempotent,
    json_response,
    not_modified,
    page,
    page_response,
    path_id,
    read_cache,
    read_json,
    settings,
    store,
    time_range,
    validate,
    versioned_response,
)
from sprockets_cache.models import ChartData, FactoryIn
from sprockets_cache.store.keys import FACTORY_LIST, factory_changed
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


def _encoded(factory: Factory, bucket_s: int | None) -> bytes:
    return orjson.dumps(factory.as_json(bucket_s))


async def list_factories(request: Request) -> Response:
    after, limit = page(request)
    first, last = time_range(request)
    most = settings(request).max_response_points
    bucket_s = bucket_width(request)
    cache = read_cache(request)
    query = ("factories", after, limit, first, last, bucket_s, most)
    entry, ticket = cache.look(query)
    if entry is not None:
        return page_response(request, "factories", orjson.Fragment(entry.body), entry.next_id)
    # The same entries as single reads: a factory held (at its stamp in Redis) is not read again.
    held: dict[int, bytes] = {}

    def holds(factory_id: int, stamp: Stamp) -> int | None:
        key = factory_key(factory_id, first, last, bucket_s)
        entry = cache.held(key) if cache.tracking else cache.get(key, stamp)
        if entry is None:
            return None
        held[factory_id] = entry.body
        return entry.points

    listed = await store(request).list_stamped_factories(
        after, limit, first, last, most, holds if cache.enabled else None
    )
    items: list[Any] = []
    for factory_id, factory in listed.factories:
        if factory is None:
            items.append(orjson.Fragment(held[factory_id]))
            continue
        body = _encoded(factory, bucket_s)
        _keep(cache, ticket, factory_key(factory_id, first, last, bucket_s), factory, body)
        items.append(orjson.Fragment(body))
    if ticket is not None:
        depends = (FACTORY_LIST, *map(factory_changed, listed.ids))
        cache.keep(query, ticket, depends, orjson.dumps(items), next_id=listed.next_id)
    return page_response(request, "factories", items, listed.next_id)


def _keep(cache: ReadCache, ticket: Ticket | None, query: Key, factory: Factory, body: bytes) -> None:
    points = len(factory.points.time)
    if cache.tracking:
        cache.keep(query, ticket, (factory_changed(factory.id),), body, factory.version, points)
    else:
        cache.put(query, factory.stamp, body, points)


async def get_factory(request: Request) -> Response:
    first, last = time_range(request)
    bucket_s = bucket_width(request)
    most = settings(request).max_response_points
    factory_id = path_id(request, "factory_id")
    cache = read_cache(request)
    query = factory_key(factory_id, first, last, bucket_s)
    entry, ticket = cache.look(query)
    if entry is not None:
        return answer(request, entry.body, entry.version)
    if not cache.tracking:
        kept = await _kept_by_stamp(request, cache, query, factory_id)
        if kept is not None:
            return kept
    # The points and the stamp they are of, read in one step: the answer is kept under that stamp.
    factory = await store(request).get_factory(factory_id, first, last, most)
    body = _encoded(factory, bucket_s)
    _keep(cache, ticket, query, factory, body)
    return answer(request, body, factory.version)


async def _kept_by_stamp(request: Request, cache: ReadCache, query: Key, factory_id: int) -> Response | None:
    """Without tracking: the answer kept, if the factory's stamp in Redis is still the one it was read at;
    None: read the points. The stamp alone (one small round trip) also answers a conditional read."""
    if query not in cache and header(request, b"if-none-match") is None:
        if cache.enabled:
            cache.get(query, None)  # a miss, counted
        return None
    stamp = await store(request).factory_stamp(factory_id)
    if not_modified(request, stamp.version):
        return answer(request, b"", stamp.version)
    entry = cache.get(query, stamp)
    return None if entry is None else answer(request, entry.body, stamp.version)


async def create_factory(request: Request) -> Response:
    body = await read_json(request, settings(request).max_chart_body_bytes)
    if isinstance(body, dict):
        _check_point_count(request, body.get("chart_data"))
    factory = validate(FactoryIn, body)
    points = _points(factory.chart_data)

    async def create(idempotency: str | None) -> Response:
        factory_id = await store(request).new_factory_ids()
        name = factory.name or f"Factory {factory_id}"
        try:
            version = await store(request).create_factory(factory_id, name, buckets(points), idempotency)
        finally:
            read_cache(request).drop((FACTORY_LIST, factory_changed(factory_id)))
        request.state.metrics.points_written.inc(len(points.time))
        body = {"id": factory_id, "name": name, "resolution_s": 1, "chart_data": points.as_chart_data()}
        return versioned_response(request, body, version, status=201, location=f"/api/v1/factories/{factory_id}")

    return await idempotent(request, "factories", body, create)


async def write_chart_data(request: Request) -> Response:
    factory_id = path_id(request, "factory_id")
    body = await read_json(request, settings(request).max_chart_body_bytes)
    _check_point_count(request, body)
    points = _points(validate(ChartData, body))
    try:
        version = await store(request).write_points(factory_id, buckets(points))
    finally:
        # Redis's invalidation may reach us after the reply; the write may have happened if it failed.
        read_cache(request).drop((factory_changed(factory_id),))
    request.state.metrics.points_written.inc(len(points.time))
    return json_response({"written": len(points.time)}, headers={"ETag": etag(version)})


async def factory_summary(request: Request) -> Response:
    first, last = time_range(request)
    factory_id = path_id(request, "factory_id")
    cache = read_cache(request)
    entry, ticket = cache.look(("summary", factory_id, first, last))
    if entry is not None:
        return answer(request, entry.body, entry.version)
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
    encoded = orjson.dumps(body)
    cache.keep(("summary", factory_id, first, last), ticket, (factory_changed(factory_id),), encoded, summary.version)
    return answer(request, encoded, summary.version)
