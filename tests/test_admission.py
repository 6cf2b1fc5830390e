"""Fair admission under overload: API requests past REQUESTS_AT_ONCE wait in arrival order, and past the
queue or its wait are answered 503 at once; health, readiness and metrics never wait. A frozen Redis
(SIGSTOP) holds the running requests, so what waits and what is shed is decided without timing."""

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from sprockets_cache.http.app import create_app
from sprockets_cache.ops.embedded import EmbeddedRedis, free_port
from sprockets_cache.settings import Settings
from tests.conftest import PATIENT_S, lifespan

SPROCKET = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}

pytestmark = pytest.mark.redis_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path) as redis_server:
        yield redis_server


@asynccontextmanager
async def serving(server: EmbeddedRedis, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    # Requests that run wait for the frozen Redis as long as the test needs.
    app = create_app(Settings(redis_url=server.url, redis_timeout_s=PATIENT_S, **settings))
    async with lifespan(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=PATIENT_S * 2) as api:
            yield api


@asynccontextmanager
async def frozen(server: EmbeddedRedis) -> AsyncIterator[None]:
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


async def metric(api: httpx.AsyncClient, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", (await api.get("/metrics")).text, re.MULTILINE)
    return float(found[1]) if found else 0.0


async def started() -> None:
    """Lets the request just started reach the frozen Redis: it needs a millisecond of this otherwise idle
    event loop, and gets a second."""
    await asyncio.sleep(1)


async def until_queued(api: httpx.AsyncClient, count: int) -> None:
    """Until `count` requests wait for a turn (the metrics are never queued themselves)."""
    for _ in range(int(PATIENT_S * 20)):
        if await metric(api, "requests_queued") == count:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{count} requests never waited")


async def test_waiting_requests_are_served_in_the_order_they_arrived(server: EmbeddedRedis) -> None:
    async with serving(server, requests_at_once=1, request_queue=10, request_queue_wait_s=PATIENT_S) as api:
        async with frozen(server):
            creates = [asyncio.create_task(api.post("/api/v1/sprockets", json=SPROCKET))]
            await started()
            for waiting in range(1, 6):
                creates.append(asyncio.create_task(api.post("/api/v1/sprockets", json=SPROCKET)))
                await until_queued(api, waiting)
        # One at a time, each create takes the next id: the ids give the order they ran in.
        assert [(await create).json()["id"] for create in creates] == [1, 2, 3, 4, 5, 6]
        assert await metric(api, "requests_queued") == 0


async def test_past_a_full_queue_a_request_is_503_at_once_and_health_never_waits(server: EmbeddedRedis) -> None:
    async with serving(server, requests_at_once=1, request_queue=1, request_queue_wait_s=PATIENT_S) as api:
        async with frozen(server):
            running = asyncio.create_task(api.get("/api/v1/sprockets"))
            await started()
            waiting = asyncio.create_task(api.get("/api/v1/sprockets"))
            await until_queued(api, 1)
            shed = await api.get("/api/v1/sprockets")
            assert (shed.status_code, shed.headers["retry-after"]) == (503, "1")
            assert shed.headers["content-type"] == "application/problem+json"
            assert "queue is full" in shed.json()["detail"]
            assert (await api.get("/health")).status_code == 200
            assert not running.done() and not waiting.done()
        assert [(await request).status_code for request in (running, waiting)] == [200, 200]
        assert await metric(api, 'requests_shed_total{reason="queue_full"}') == 1


async def test_a_request_that_waits_past_its_bound_is_503_while_the_one_ahead_still_runs(
    server: EmbeddedRedis,
) -> None:
    async with serving(server, requests_at_once=1, request_queue=10, request_queue_wait_s=0.2) as api:
        async with frozen(server):
            running = asyncio.create_task(api.post("/api/v1/sprockets", json=SPROCKET))
            await started()
            shed = await api.post("/api/v1/sprockets", json=SPROCKET)
            assert shed.status_code == 503
            assert "waited too long" in shed.json()["detail"]
            assert not running.done()
        assert (await running).json()["id"] == 1
        assert await metric(api, 'requests_shed_total{reason="waited_too_long"}') == 1
        assert await metric(api, "request_queue_wait_seconds_count") == 1
        # Nothing was written for the shed request.
        assert [s["id"] for s in (await api.get("/api/v1/sprockets")).json()["sprockets"]] == [1]


async def test_a_shed_write_leaves_its_connection_open_for_the_next_request(server: EmbeddedRedis) -> None:
    """The 503 goes out before the write's body is read: uvicorn must still read the body past it, so that
    the client's next request on the same keep-alive connection is answered."""
    app = create_app(Settings(redis_url=server.url, redis_timeout_s=PATIENT_S, requests_at_once=1, request_queue=0))
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None, access_log=False)
    serving = uvicorn.Server(config)
    served = asyncio.create_task(serving.serve())
    try:
        while not serving.started:
            assert not served.done()
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.port}", timeout=PATIENT_S * 2) as api:
            async with frozen(server):
                running = asyncio.create_task(api.get("/api/v1/sprockets"))
                await started()
                reader, writer = await asyncio.open_connection("127.0.0.1", config.port)
                body = b'{"time": [' + b", ".join(b"%d" % t for t in range(50_000)) + b"]}"
                head = b"POST /api/v1/factories/1/chart_data HTTP/1.1\r\nContent-Type: application/json\r\n"
                writer.write(head + b"Host: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                shed = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENT_S)
                length = int(re.search(rb"content-length: (\d+)", shed, re.IGNORECASE)[1])  # type: ignore[index]
                assert shed.startswith(b"HTTP/1.1 503") and b"queue is full" in await reader.readexactly(length)
                writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), PATIENT_S)).startswith(b"HTTP/1.1 200")
                writer.close()
            assert (await running).status_code == 200
    finally:
        serving.should_exit = True
        await served
