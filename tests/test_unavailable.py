"""Redis going away: fast 503s, never a hang or a 500, and recovery without a restart."""

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from sprockets_cache.http.app import create_app
from sprockets_cache.http.security import digest
from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.settings import Settings
from sprockets_cache.store import keyring
from tests.conftest import PATIENT_S, lifespan

SPROCKET = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}
# REDIS_TIMEOUT_S of these tests: a frozen Redis is waited out for this long a request, a few times a test;
# a healthy Redis answers a loaded machine's calls well within it, so only the failures count as errors.
REDIS_TIMEOUT_S = 2.0
# A 503 comes within REDIS_TIMEOUT_S (at once when Redis is stopped); this adds what a loaded machine may
# need besides. A hang would be for ever: nothing but the deadline ends a call to a frozen Redis.
NEVER_HANGS_S = REDIS_TIMEOUT_S + 5


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path, appendfsync="always") as redis_server:
        yield redis_server


@pytest.fixture
async def api(server: EmbeddedRedis) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(redis_url=server.url, redis_timeout_s=REDIS_TIMEOUT_S))
    async with lifespan(app) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as client:
            yield client


async def timed(api: httpx.AsyncClient, method: str, path: str, **kwargs: object) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = await api.request(method, path, **kwargs)  # type: ignore[arg-type]
    return response, time.monotonic() - start


async def assert_unavailable(api: httpx.AsyncClient) -> None:
    for method, path, body in [
        ("GET", "/api/v1/sprockets/1", None),
        ("POST", "/api/v1/sprockets", SPROCKET),
        ("GET", "/api/v1/factories", None),
    ]:
        response, elapsed = await timed(api, method, path, json=body)
        assert response.status_code == 503, path
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/problem+json"
        assert elapsed < NEVER_HANGS_S
    assert (await api.get("/ready")).status_code == 503
    assert (await api.get("/health")).status_code == 200


async def test_a_stopped_redis_gives_503_and_the_api_recovers_when_it_returns(
    api: httpx.AsyncClient, server: EmbeddedRedis
) -> None:
    assert (await api.post("/api/v1/sprockets", json=SPROCKET)).status_code == 201
    server.stop()
    await assert_unavailable(api)
    server.start()
    assert (await api.get("/ready")).status_code == 200
    assert (await api.get("/api/v1/sprockets/1")).json()["teeth"] == 5
    assert (await api.post("/api/v1/sprockets", json=SPROCKET)).json()["id"] == 2
    metrics = (await api.get("/metrics")).text
    assert "redis_errors_total 3.0" in metrics


async def test_a_frozen_redis_gives_503_after_the_timeout_not_a_hang(
    api: httpx.AsyncClient, server: EmbeddedRedis
) -> None:
    created = await api.post("/api/v1/sprockets", json=SPROCKET)
    pid = server.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await assert_unavailable(api)
    finally:
        os.kill(pid, signal.SIGCONT)
    # The timed-out calls' connections were closed: no late reply to them is read as another's.
    for _ in range(3):
        assert (await api.get("/api/v1/sprockets/1")).json() == created.json()


async def test_with_keys_and_a_rate_limit_a_frozen_redis_still_gives_503_not_a_hang(server: EmbeddedRedis) -> None:
    key = "k" * 32
    settings = Settings(
        redis_url=server.url,
        redis_timeout_s=REDIS_TIMEOUT_S,
        api_keys=[digest(key)],
        rate_limit_per_s=100,
        rate_limit_burst=100,
    )
    async with lifespan(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as api:
            assert (await api.post("/api/v1/sprockets", json=SPROCKET)).status_code == 201
            os.kill(server.pid, signal.SIGSTOP)
            try:
                await assert_unavailable(api)
            finally:
                os.kill(server.pid, signal.SIGCONT)
            assert (await api.get("/api/v1/sprockets/1")).status_code == 200


async def test_the_api_waits_at_start_up_for_a_redis_that_comes_up_late(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    late = EmbeddedRedis(tmp_path)
    late.start()  # to learn a free port, then away until the app is starting
    late.stop()
    app = create_app(Settings(redis_url=late.url, redis_timeout_s=REDIS_TIMEOUT_S, redis_startup_wait_s=PATIENT_S))
    starting = asyncio.create_task(lifespan(app).__aenter__())
    await asyncio.sleep(1.0)  # time for several tries (a fraction of a second apart), each refused
    assert not starting.done()
    late.start()
    try:
        manager = await starting
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as client:
            assert (await client.get("/ready")).status_code == 200
        await manager.__aexit__(None, None, None)
    finally:
        late.stop()
    assert any("Redis is not answering yet" in record.getMessage() for record in caplog.records)


async def test_start_up_gives_up_after_the_wait_when_redis_never_comes(tmp_path: Path) -> None:
    absent = EmbeddedRedis(tmp_path)
    absent.start()
    absent.stop()
    app = create_app(Settings(redis_url=absent.url, redis_timeout_s=0.2, redis_startup_wait_s=0.5))
    with pytest.raises(redis.exceptions.ConnectionError):
        async with lifespan(app):
            pass


async def test_dropped_connections_and_flushed_scripts_cost_no_request_an_error(
    api: httpx.AsyncClient, server: EmbeddedRedis
) -> None:
    """An operator's CLIENT KILL, or a Redis that lost its scripts: the next requests reconnect and
    load the scripts again, and none of them sees a 503."""
    assert (await api.post("/api/v1/sprockets", json=SPROCKET)).status_code == 201
    chart_data = {"time": [60, 120], "sprocket_production_actual": [1, 2], "sprocket_production_goal": [3, 4]}
    for _ in range(2):
        assert (await api.post("/api/v1/factories", json={"chart_data": chart_data})).status_code == 201
    with redis.Redis.from_url(server.url) as operator:
        assert operator.client_kill_filter(_type="normal", skipme=True) >= 1
        operator.script_flush()
    # The listing's reads go in one pipeline, which finds the script gone and loads it first.
    listed = (await api.get("/api/v1/factories")).json()["factories"]
    assert [(f["id"], f["chart_data"]) for f in listed] == [(1, chart_data), (2, chart_data)]
    assert (await api.get("/api/v1/factories/2")).json()["chart_data"] == chart_data
    assert (await api.post("/api/v1/sprockets", json=SPROCKET)).json()["id"] == 2
    assert (await api.get("/api/v1/sprockets/2")).status_code == 200
    assert "redis_errors_total 0.0" in (await api.get("/metrics")).text


async def test_a_create_whose_redis_froze_after_its_claim_leaves_a_key_that_says_so_and_creates_nothing(
    api: httpx.AsyncClient, server: EmbeddedRedis
) -> None:
    """A create's Redis stops answering once its Idempotency-Key is sent, then comes back having taken the
    claim but nothing more, as after a failover that kept the claim but not the response: the retry is
    told that the first request ended without saving its response, not that it is still running."""
    # Another create first, so that Redis has the claim's script when the frozen one's call reaches it.
    assert (await api.post("/api/v1/sprockets", json=SPROCKET, headers={"Idempotency-Key": "first"})).status_code == 201
    headers = {"Idempotency-Key": "frozen"}
    os.kill(server.pid, signal.SIGSTOP)
    try:
        assert (await api.post("/api/v1/sprockets", json=SPROCKET, headers=headers)).status_code == 503
    finally:
        os.kill(server.pid, signal.SIGCONT)
    with redis.Redis.from_url(server.url) as operator:
        deadline = time.monotonic() + 30
        while not operator.keys("sc:idempotency:*"):  # the claim, sent before the freeze, lands after it
            assert time.monotonic() < deadline, "the claim never landed"
            await asyncio.sleep(0.1)
    # Past the time by which the first request has certainly ended: its claim says REDIS_TIMEOUT_S + 2 s
    # from when it was made, before the freeze (time.time(), as the claim has it, whatever the machine's speed).
    await asyncio.sleep(REDIS_TIMEOUT_S + 2 + 0.5)
    retry = await api.post("/api/v1/sprockets", json=SPROCKET, headers=headers)
    assert retry.status_code == 409
    assert "ended without its response being saved" in retry.json()["detail"]
    assert "retry-after" not in retry.headers
    assert [sprocket["id"] for sprocket in (await api.get("/api/v1/sprockets")).json()["sprockets"]] == [1]


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENT_S
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {PATIENT_S} s"
        await asyncio.sleep(0.05)


async def test_past_redis_max_connections_a_request_gets_503_at_once_and_the_pool_gets_its_connections_back(
    server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the requests use the pool while Redis is frozen: no audit trail to flush, and the keys are read
    # once, at start-up, not again every half second; and every read goes to Redis (no read cache).
    monkeypatch.setattr(keyring, "REFRESH_S", 3600)
    settings = Settings(
        redis_url=server.url, redis_timeout_s=PATIENT_S, redis_max_connections=2, audit_trail=False, read_cache_mb=0
    )
    async with lifespan(create_app(settings)) as manager:
        pool = manager._state["store"].redis.connection_pool  # the app's own, as the lifespan made it
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=PATIENT_S * 2) as api:
            created = await api.post("/api/v1/sprockets", json=SPROCKET)
            for _ in range(2):  # the second time round needs both connections given back by the first
                os.kill(server.pid, signal.SIGSTOP)
                try:
                    holding = [asyncio.create_task(api.get("/api/v1/sprockets/1")) for _ in range(2)]
                    # Both reach the frozen Redis, each on a connection of the two.
                    await _until(
                        lambda: not pool.can_get_connection(), "the two requests did not take both connections"
                    )
                    refused, elapsed = await timed(api, "GET", "/api/v1/sprockets/1")
                    assert refused.status_code == 503
                    assert refused.headers["content-type"] == "application/problem+json"
                    assert elapsed < NEVER_HANGS_S
                    assert not any(answer.done() for answer in holding)
                finally:
                    os.kill(server.pid, signal.SIGCONT)
                assert [(await answer).json() for answer in holding] == [created.json()] * 2
