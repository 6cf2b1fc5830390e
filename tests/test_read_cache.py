"""Answers kept in memory (READ_CACHE_MB): never staler than Redis, whichever process wrote, and within
their bound; with Redis's invalidations on real Redis, by stamp on fakeredis (tests/test_tracking.py has
the invalidations' own tests)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from sprockets_cache.http.app import create_app
from sprockets_cache.http.observability import Metrics
from sprockets_cache.http.read_cache import ENTRY_OVERHEAD_BYTES, ReadCache, factory_key
from sprockets_cache.settings import Settings
from sprockets_cache.store.connections import Client
from sprockets_cache.store.records import Stamp
from tests.conftest import PATIENT_S, lifespan
from tests.test_factories import chart
from tests.test_observability import sample

URL = "/api/v1/factories"


async def serve(stack: AsyncExitStack, settings: Settings, client: Client) -> httpx.AsyncClient:
    """An app instance on `client`, as an API process of its own would be (a cache of its own)."""
    manager = await stack.enter_async_context(lifespan(create_app(settings, client)))
    transport = httpx.ASGITransport(app=manager.app)
    return await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://t"))


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    """The apps' lifetimes: tests take it after their Redis fixture, so the apps stop before it is closed."""
    async with AsyncExitStack() as stack:
        yield stack


async def metric(api: httpx.AsyncClient, name: str) -> float:
    return sample((await api.get("/metrics")).text, name)


async def get(api: httpx.AsyncClient, path: str, **params: Any) -> httpx.Response:
    response = await api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response


async def write(api: httpx.AsyncClient, factory_id: int, *points: tuple[int, int, int]) -> None:
    response = await api.post(f"{URL}/{factory_id}/chart_data", json=chart(*points))
    assert response.status_code == 200, response.text


async def test_a_write_through_one_process_is_in_the_next_read_through_another(
    real_redis_pair: tuple[Client, Client], stack: AsyncExitStack
) -> None:
    settings = Settings(redis_timeout_s=PATIENT_S)
    first, second = [await serve(stack, settings, client) for client in real_redis_pair]
    created = await first.post(URL, json={"chart_data": chart((10, 1, 1), (20, 2, 2))})
    assert created.status_code == 201
    ranges = [{}, {"from": 0, "to": 15}, {"bucket": 60}]
    for api in (first, second):  # each process keeps its answers
        for params in ranges:
            await get(api, f"{URL}/1", **params)
        await get(api, URL)
    for writer, reader, time in [(first, second, 12), (second, first, 14), (first, first, 5)]:
        await write(writer, 1, (time, 100, 100))
        whole = await get(reader, f"{URL}/1")
        assert time in whole.json()["chart_data"]["time"]
        assert whole.headers["etag"] == (await get(writer, f"{URL}/1")).headers["etag"]
        early = (await get(reader, f"{URL}/1", **{"from": 0, "to": 15})).json()["chart_data"]
        assert time in early["time"]
        summed = (await get(reader, f"{URL}/1", bucket=60)).json()["chart_data"]
        assert summed["sprocket_production_actual"] == [sum(whole.json()["chart_data"]["sprocket_production_actual"])]
        listed = (await get(reader, URL)).json()["factories"]
        assert listed == [whole.json()]
    assert await metric(first, "read_cache_hits_total") > 0
    assert await metric(second, "read_cache_hits_total") > 0


@pytest.mark.parametrize(("retention_s", "downsample_s"), [(7200, 3600), (7200, 0)])
async def test_retention_trims_and_downsampling_change_what_a_kept_range_shows(
    redis_client: Client, stack: AsyncExitStack, retention_s: int, downsample_s: int
) -> None:
    api = await serve(stack, Settings(points_retention_s=retention_s, downsample_s=downsample_s), redis_client)
    # Two hours of points a minute: all inside the two-hour window.
    points = [(t, 1, 2) for t in range(0, 2 * 3600, 60)]
    assert (await api.post(URL, json={"chart_data": chart(*points)})).status_code == 201
    queries: list[dict[str, Any]] = [{}, {"from": 0, "to": 3599}, {"bucket": 3600}]
    for query in queries:
        for _ in range(2):  # the second from memory
            before = (await get(api, f"{URL}/1", **query)).json()
        assert before["resolution_s"] == (3600 if "bucket" in query else 1)
    listed_before = (await get(api, URL)).json()["factories"][0]
    assert len(listed_before["chart_data"]["time"]) == 120
    hits = await metric(api, "read_cache_hits_total")
    assert hits >= 3

    # A point an hour later moves the window: the first hour is trimmed (and summed into a span).
    await write(api, 1, (3 * 3600, 5, 5))
    whole = (await get(api, f"{URL}/1")).json()
    first_hour = (await get(api, f"{URL}/1", **{"from": 0, "to": 3599})).json()
    hourly = (await get(api, f"{URL}/1", bucket=3600)).json()
    if downsample_s:
        assert whole["resolution_s"] == first_hour["resolution_s"] == 3600
        assert first_hour["chart_data"] == chart((0, 60, 120))
        assert hourly["chart_data"] == chart((0, 60, 120), (3600, 60, 120), (3 * 3600, 5, 5))
    else:
        assert first_hour["chart_data"] == chart()
        assert whole["chart_data"]["time"][0] == 3600
        assert hourly["chart_data"] == chart((3600, 60, 120), (3 * 3600, 5, 5))
    assert (await get(api, URL)).json()["factories"][0] == whole
    assert await metric(api, "read_cache_hits_total") == hits + 1  # the listing: the whole range's entry


async def test_eviction_keeps_the_cache_under_its_bound(redis_client: Client, stack: AsyncExitStack) -> None:
    bound = 50 * 1024
    api = await serve(stack, Settings(read_cache_mb=bound / 1024 / 1024), redis_client)
    points = [(t, t % 7, t % 11) for t in range(0, 1000 * 60, 60)]
    assert (await api.post(URL, json={"chart_data": chart(*points)})).status_code == 201
    answers = {}
    for start in range(0, 60 * 1000, 60 * 25):  # 40 ranges of 500 points, about 9 KB each
        params = {"from": start, "to": start + 500 * 60}
        answers[start] = (await get(api, f"{URL}/1", **params)).content
        assert 0 < await metric(api, "read_cache_bytes") <= bound
    assert await metric(api, "read_cache_evictions_total") > 0
    # The newest are still held; the oldest were pushed out and are read again, the same.
    hits = await metric(api, "read_cache_hits_total")
    assert (await get(api, f"{URL}/1", **{"from": 975 * 60, "to": 1475 * 60})).content == answers[975 * 60]
    assert await metric(api, "read_cache_hits_total") == hits + 1
    assert (await get(api, f"{URL}/1", **{"from": 0, "to": 500 * 60})).content == answers[0]
    assert await metric(api, "read_cache_hits_total") == hits + 1


async def test_an_answer_over_the_entry_limit_is_not_kept(redis_client: Client, stack: AsyncExitStack) -> None:
    # A bound of 8 KB, under one answer of 1,000 points (about 16 KB).
    api = await serve(stack, Settings(read_cache_mb=8 / 1024), redis_client)
    points = [(t, 1000 + t % 7, 1000 + t % 11) for t in range(1000)]
    assert (await api.post(URL, json={"chart_data": chart(*points)})).status_code == 201
    for _ in range(2):
        assert len((await get(api, f"{URL}/1")).json()["chart_data"]["time"]) == 1000
    assert await metric(api, "read_cache_hits_total") == 0
    assert await metric(api, "read_cache_bytes") == 0


async def test_with_the_cache_off_the_answers_are_the_same(redis_client: Client, stack: AsyncExitStack) -> None:
    cached = await serve(stack, Settings(), redis_client)
    plain = await serve(stack, Settings(read_cache_mb=0), redis_client)
    for _ in range(3):
        assert (await cached.post(URL, json={"chart_data": chart((10, 1, 2), (3700, 3, 4))})).status_code == 201
    queries: list[dict[str, Any]] = [{}, {"from": 0, "to": 100}, {"bucket": 1}, {"bucket": 3600}, {"limit": 2}]
    for step in range(4):
        for path in (f"{URL}/1", f"{URL}/2", URL):
            for query in queries:
                for _ in range(2):
                    one, other = await cached.get(path, params=query), await plain.get(path, params=query)
                    assert (one.status_code, one.content) == (other.status_code, other.content)
                    assert (one.headers.get("etag"), one.headers.get("link")) == (
                        other.headers.get("etag"),
                        other.headers.get("link"),
                    )
        await write((cached, plain)[step % 2], 1 + step % 3, (20 + step, step, step))
    missing, also_missing = await cached.get(f"{URL}/9"), await plain.get(f"{URL}/9")
    assert (missing.status_code, missing.content) == (also_missing.status_code, also_missing.content)
    assert await metric(cached, "read_cache_hits_total") > 0
    assert await metric(plain, "read_cache_hits_total") == await metric(plain, "read_cache_misses_total") == 0


async def test_hits_and_misses_are_counted(redis_client: Client, stack: AsyncExitStack) -> None:
    api = await serve(stack, Settings(), redis_client)
    assert (await api.post(URL, json={"chart_data": chart((10, 1, 2))})).status_code == 201
    # With Redis's invalidations a page of the listing is an answer of its own, besides its factories'.
    tracking = await metric(api, "read_cache_tracking") == 1

    async def counts() -> tuple[float, float]:
        return await metric(api, "read_cache_hits_total"), await metric(api, "read_cache_misses_total")

    await get(api, f"{URL}/1")
    assert await counts() == (0, 1)
    await get(api, f"{URL}/1")
    await get(api, URL)  # the listing asks for the same range: the same entry
    assert await counts() == ((2, 2) if tracking else (2, 1))
    await get(api, f"{URL}/1", bucket=60)
    await get(api, f"{URL}/1", bucket=60)
    assert await counts() == ((3, 3) if tracking else (3, 2))
    await write(api, 1, (20, 3, 4))
    await get(api, URL)
    await get(api, f"{URL}/1")
    assert await counts() == ((4, 5) if tracking else (4, 3))
    if tracking:
        await get(api, URL)
        assert await counts() == (5, 5)


async def test_conditional_reads_get_304_until_a_write(redis_client: Client, stack: AsyncExitStack) -> None:
    for settings in (Settings(), Settings(read_cache_mb=0)):
        await redis_client.flushdb()
        api = await serve(stack, settings, redis_client)
        assert (await api.post(URL, json={"chart_data": chart((10, 1, 2))})).status_code == 201
        tag = (await get(api, f"{URL}/1")).headers["etag"]
        for _ in range(2):
            unchanged = await api.get(f"{URL}/1", headers={"If-None-Match": f'"0", {tag}'})
            assert (unchanged.status_code, unchanged.content, unchanged.headers["etag"]) == (304, b"", tag)
        await write(api, 1, (20, 3, 4))
        changed = await api.get(f"{URL}/1", headers={"If-None-Match": tag})
        assert changed.status_code == 200
        assert changed.json()["chart_data"] == chart((10, 1, 2), (20, 3, 4))
        assert changed.headers["etag"] != tag
        assert (await api.get(f"{URL}/9", headers={"If-None-Match": tag})).status_code == 404


async def test_a_flushed_and_reseeded_store_is_not_served_stale(redis_client: Client, stack: AsyncExitStack) -> None:
    """The same id at the same version after the store was emptied and filled again: other points."""
    api = await serve(stack, Settings(), redis_client)
    old = await api.post(URL, json={"name": "Line", "chart_data": chart((10, 1, 2))})
    assert old.status_code == 201
    for _ in range(2):
        await get(api, f"{URL}/1")
        await get(api, URL)
    await redis_client.flushdb()
    # created_at is to the millisecond: the new factory is not made within the old one's.
    await asyncio.sleep(0.01)
    new = await api.post(URL, json={"name": "Line", "chart_data": chart((10, 5, 6))})
    assert (new.headers["etag"], new.json()["id"]) == (old.headers["etag"], 1)
    assert (await get(api, f"{URL}/1")).json() == new.json()
    assert (await get(api, URL)).json()["factories"] == [new.json()]


def test_a_hit_moves_an_answer_to_the_back_of_the_eviction_order() -> None:
    size = len(b"a" * 100) + ENTRY_OVERHEAD_BYTES
    cache, stamp = ReadCache(3 * size, Metrics()), Stamp(1, b"t")
    for n in range(3):
        cache.put(factory_key(n, 0, 9, None), stamp, b"a" * 100, 1)
    assert cache.get(factory_key(0, 0, 9, None), stamp) is not None
    cache.put(factory_key(3, 0, 9, None), stamp, b"a" * 100, 1)
    assert factory_key(0, 0, 9, None) in cache  # used since: kept
    assert factory_key(1, 0, 9, None) not in cache  # the least recently used: out
    assert len(cache) == 3 and cache.bytes == 3 * size


def test_an_answer_replaced_counts_its_new_size_only() -> None:
    cache, query = ReadCache(1 << 20, Metrics()), factory_key(1, 0, 9, None)
    cache.put(query, Stamp(1, b"t"), b"a" * 1000, 1)
    cache.put(query, Stamp(2, b"t"), b"a" * 10, 1)
    assert cache.bytes == 10 + ENTRY_OVERHEAD_BYTES
    assert sample(generate_latest(cache.metrics.registry).decode(), "read_cache_bytes") == cache.bytes


async def test_a_warm_cache_ends_a_listing_where_a_cold_one_does(redis_client: Client, stack: AsyncExitStack) -> None:
    """The page's point budget counts the points of the answers held as it counts those it reads."""
    settings = Settings(max_response_points=25)
    warm, cold = (
        await serve(stack, settings, redis_client),
        await serve(stack, settings.model_copy(update={"read_cache_mb": 0}), redis_client),
    )
    for n in range(5):
        points = [(t, 1, 1) for t in range(10 * n, 10 * n + 10)]
        assert (await warm.post(URL, json={"chart_data": chart(*points)})).status_code == 201
    for factory_id in range(1, 6):
        await get(warm, f"{URL}/{factory_id}")
    hits = await metric(warm, "read_cache_hits_total")
    cursor: dict[str, Any] = {}
    pages = []
    while True:
        one, other = await get(warm, URL, **cursor), await get(cold, URL, **cursor)
        assert (one.content, one.headers.get("link")) == (other.content, other.headers.get("link"))
        pages.append([f["id"] for f in one.json()["factories"]])
        if one.json()["next_cursor"] is None:
            break
        cursor = {"cursor": one.json()["next_cursor"]}
    assert pages == [[1, 2], [3, 4], [5]]
    assert await metric(warm, "read_cache_hits_total") >= hits + 5
