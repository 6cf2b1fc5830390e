"""GET /api/v1/factories/{id}/events: Server-Sent Events of new points, over a real HTTP server
(uvicorn on a free port: an in-memory transport would wait for the endless body to end)."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import fakeredis
import httpx
import orjson
import pytest
import redis.asyncio as redis
import uvicorn

from sprockets_cache.http import events
from sprockets_cache.http.app import create_app
from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.settings import Settings
from sprockets_cache.store.connections import Client, connect, connect_subscribers
from sprockets_cache.store.points import buckets, by_time
from sprockets_cache.store.store import Store

CHART = {"sprocket_production_actual": [30, 31], "sprocket_production_goal": [32, 32], "time": [1000, 1060]}
# Patient: an event arrives in milliseconds; a lost one would never come. (Timings are for make bench.)
FIRST_EVENT_S = 30.0


@dataclass
class Backend:
    client: Client
    subscribers: Client


def _fake(max_clients: int) -> Backend:
    server = fakeredis.FakeServer()
    pool = redis.BlockingConnectionPool(
        connection_class=fakeredis.FakeAsyncRedisConnection, server=server, max_connections=max_clients, timeout=0
    )
    return Backend(fakeredis.FakeAsyncRedis(server=server), redis.Redis.from_pool(pool))


async def _real(url: str, cluster: bool, max_clients: int) -> Backend:
    client = connect(url, cluster=cluster)
    await client.flushdb()
    return Backend(client, connect_subscribers(url, cluster, 1.0, max_clients))


BackendFactory = Callable[[int], Any]


async def _backends(request: pytest.FixtureRequest) -> AsyncIterator[BackendFactory]:
    made: list[Backend] = []

    async def make(max_clients: int) -> Backend:
        if request.param == "fakeredis":
            backend = _fake(max_clients)
        elif request.param == "redis-server":
            server: EmbeddedRedis = request.getfixturevalue("redis_server")
            backend = await _real(server.url, False, max_clients)
        else:
            nodes: list[EmbeddedRedis] = request.getfixturevalue("redis_cluster")
            backend = await _real(nodes[0].url, True, max_clients)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.subscribers.aclose()
        await backend.client.aclose()


@pytest.fixture(params=["fakeredis", "redis-server", "redis-cluster"])
async def backends(request: pytest.FixtureRequest) -> AsyncIterator[BackendFactory]:
    """Makes (client, subscribers) pairs with a bound on subscribers: on fakeredis, one redis-server,
    and a 3-master cluster."""
    async for make in _backends(request):
        yield make


@pytest.fixture(params=["fakeredis", "redis-server"])
async def single(request: pytest.FixtureRequest) -> AsyncIterator[BackendFactory]:
    """Like `backends` on a single Redis only: on a cluster a subscriber holds no connection between reads."""
    async for make in _backends(request):
        yield make


def _free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port: int = listener.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running(backend: Backend, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app on uvicorn on a free port, and an HTTP client for it."""
    app = create_app(Settings(**settings), backend.client, backend.subscribers)
    port = _free_port()
    config = uvicorn.Config(app, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=FIRST_EVENT_S) as http:
            yield http
    finally:
        server.should_exit = True
        await task


class Stream:
    """One subscription: the events as they arrive, parsed from the text/event-stream body."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout_s: float = FIRST_EVENT_S) -> dict[str, str]:
        """The next event (its fields), skipping comments such as pings."""
        event: dict[str, str] = {}
        async with asyncio.timeout(timeout_s):
            async for line in self._lines:
                if not line:
                    if "data" in event:
                        return event
                    event = {}  # no data (a `retry:` alone): a browser dispatches nothing either
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(": ")
                event[name] = value
        raise AssertionError("the stream ended")

    async def comment(self, timeout_s: float) -> str:
        async with asyncio.timeout(timeout_s):
            async for line in self._lines:
                if line.startswith(":"):
                    return line
        raise AssertionError("the stream ended")


@contextlib.asynccontextmanager
async def subscribed(http: httpx.AsyncClient, factory_id: int, **headers: str) -> AsyncIterator[Stream]:
    async with http.stream("GET", f"/api/v1/factories/{factory_id}/events", headers=headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = Stream(response)
        # The first line is sent once the subscriber reads: anything written after it is seen.
        assert (await stream.comment(FIRST_EVENT_S)) == ": subscribed"
        yield stream


async def _factory(http: httpx.AsyncClient, chart_data: dict[str, list[int]] | None = None) -> int:
    response = await http.post("/api/v1/factories", json={"chart_data": chart_data} if chart_data else {})
    assert response.status_code == 201
    factory_id: int = response.json()["id"]
    return factory_id


async def _write(http: httpx.AsyncClient, factory_id: int, time: int, actual: int = 5) -> None:
    body = {"time": [time], "sprocket_production_actual": [actual], "sprocket_production_goal": [7]}
    response = await http.post(f"/api/v1/factories/{factory_id}/chart_data", json=body)
    assert response.status_code == 200


async def test_a_write_after_subscribing_arrives_as_an_event_with_its_points(
    backends: BackendFactory,
) -> None:
    async with running(await backends(4)) as http:
        factory_id = await _factory(http, {**CHART, "time": [10, 20]})
        async with subscribed(http, factory_id) as stream:
            response = await http.post(f"/api/v1/factories/{factory_id}/chart_data", json=CHART)
            event = await stream.next()
        assert event["event"] == "points"
        assert event["id"].count("-") == 1
        version = int(response.headers["etag"].strip('"'))
        assert orjson.loads(event["data"]) == {"version": version, "resolution_s": 1, "chart_data": CHART}


async def test_without_last_event_id_only_writes_from_now_on_are_sent(backends: BackendFactory) -> None:
    async with running(await backends(4)) as http:
        factory_id = await _factory(http, CHART)
        await _write(http, factory_id, 2000)
        async with subscribed(http, factory_id) as stream:
            await _write(http, factory_id, 3000)
            event = await stream.next()
        assert orjson.loads(event["data"])["chart_data"]["time"] == [3000]


async def test_last_event_id_resumes_without_losing_or_repeating_an_event(backends: BackendFactory) -> None:
    async with running(await backends(4)) as http:
        factory_id = await _factory(http)
        async with subscribed(http, factory_id) as stream:
            for time in (100, 200, 300):
                await _write(http, factory_id, time)
            seen = [await stream.next(), await stream.next()]
        # Written while nobody listens, then resumed after the last event seen.
        for time in (400, 500):
            await _write(http, factory_id, time)
        async with subscribed(http, factory_id, **{"Last-Event-ID": seen[-1]["id"]}) as stream:
            seen += [await stream.next() for _ in range(3)]
            await _write(http, factory_id, 600)
            seen.append(await stream.next())
    times = [orjson.loads(event["data"])["chart_data"]["time"] for event in seen]
    assert times == [[100], [200], [300], [400], [500], [600]]
    ids = [event["id"] for event in seen]
    assert len(set(ids)) == len(ids)


async def test_an_unknown_factory_is_404_before_any_stream(backends: BackendFactory) -> None:
    async with running(await backends(4)) as http:
        response = await http.get("/api/v1/factories/999/events")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("last_event_id", ["x", "12", "1-2-3", "-1"], ids=["word", "no-dash", "two-dashes", "minus"])
async def test_a_last_event_id_we_never_sent_is_400(single: BackendFactory, last_event_id: str) -> None:
    async with running(await single(4)) as http:
        factory_id = await _factory(http)
        response = await http.get(f"/api/v1/factories/{factory_id}/events", headers={"Last-Event-ID": last_event_id})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_last_event_id_past_the_newest_event_resumes_at_the_newest(single: BackendFactory) -> None:
    """Say after Redis was replaced by an empty one: the client must not wait for ids never to come."""
    async with running(await single(4)) as http:
        factory_id = await _factory(http)
        async with subscribed(http, factory_id, **{"Last-Event-ID": "99999999999999-0"}) as stream:
            await _write(http, factory_id, 100)
            event = await stream.next()
    assert orjson.loads(event["data"])["chart_data"]["time"] == [100]


async def _wait_until(condition: Callable[[], bool], timeout_s: float = FIRST_EVENT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_disconnect_returns_the_connection_to_the_pool(single: BackendFactory) -> None:
    backend = await single(1)
    pool = backend.subscribers.connection_pool
    async with running(backend, events_max_clients=1) as http:
        factory_id = await _factory(http)
        async with subscribed(http, factory_id):
            assert not pool.can_get_connection()
        await _wait_until(lambda: bool(pool.can_get_connection()))
        async with subscribed(http, factory_id) as stream:
            await _write(http, factory_id, 100)
            await stream.next()


async def test_past_the_bound_a_new_subscriber_gets_503_and_requests_still_work(single: BackendFactory) -> None:
    async with running(await single(2)) as http:
        factory_id = await _factory(http)
        async with subscribed(http, factory_id), subscribed(http, factory_id):
            response = await http.get(f"/api/v1/factories/{factory_id}/events")
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert int(response.headers["retry-after"]) >= 1
            assert (await http.get(f"/api/v1/factories/{factory_id}")).status_code == 200


async def test_head_opens_no_stream_and_holds_no_connection(single: BackendFactory) -> None:
    backend = await single(1)
    async with running(backend) as http:
        factory_id = await _factory(http)
        response = await http.head(f"/api/v1/factories/{factory_id}/events")
        assert response.status_code == 200
        await _wait_until(lambda: bool(backend.subscribers.connection_pool.can_get_connection()))


async def test_an_idle_stream_gets_heartbeats(single: BackendFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "PING_S", 0.2)
    async with running(await single(4)) as http:
        factory_id = await _factory(http)
        async with subscribed(http, factory_id) as stream:
            # A ping every 0.2 s; waited for patiently, as an event is.
            assert (await stream.comment(FIRST_EVENT_S)).startswith(": ping")


async def test_the_store_reads_the_writes_after_an_event_id(redis_client: Client) -> None:
    store = Store(redis_client)
    await store.create_factory(1, "one", {})
    before = await store.newest_event_id(1)
    assert before == "0-0"
    for time in (10, 20):
        await store.write_points(1, buckets(by_time([time], [1], [1])))
    async with store.subscribe() as subscriber:
        read = await subscriber.read_events(1, before, block_ms=100)
        assert [(event.first, event.last, event.points) for event in read] == [(10, 10, 1), (20, 20, 1)]
        assert await subscriber.read_events(1, read[-1].id, block_ms=50) == []
    assert await store.newest_event_id(1) == read[-1].id
