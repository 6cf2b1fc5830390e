"""A Redis that answers but refuses writes (out of memory, a read-only replica, failing to save, short of
replicas): writes get a clear 503 or 507 and write nothing, reads go on, /ready says 503, and writes work
again once Redis takes them."""

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from sprockets_cache.http.app import create_app
from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.settings import Settings
from sprockets_cache.store.connections import connect
from tests.conftest import PATIENT_S, keyspace, lifespan

SPROCKET = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}
CHART_DATA = {"time": [60, 120], "sprocket_production_actual": [1, 2], "sprocket_production_goal": [3, 4]}
# Long enough for a slow machine's BGSAVE, which forks.
SAVE_WAIT_S = 20


def _wait_for_save(operator: redis.Redis, status: str) -> None:
    deadline = time.monotonic() + SAVE_WAIT_S
    while (
        operator.info("persistence")["rdb_last_bgsave_status"] != status
        or operator.info("persistence")["rdb_bgsave_in_progress"]
    ):
        assert time.monotonic() < deadline, f"BGSAVE did not end with {status}"
        time.sleep(0.05)


def _fail_saving(operator: redis.Redis, server: EmbeddedRedis) -> None:
    """A snapshot that cannot be renamed into place (a directory holds its name): MISCONF from then on."""
    (server.data_dir / "dump.rdb").mkdir()
    operator.config_set("save", "3600 1")
    operator.bgsave()
    _wait_for_save(operator, "err")


def _save_again(operator: redis.Redis, server: EmbeddedRedis) -> None:
    (server.data_dir / "dump.rdb").rmdir()
    operator.bgsave()
    _wait_for_save(operator, "ok")


@dataclass
class Refusal:
    reason: str
    status: int
    refuse: Callable[[redis.Redis, EmbeddedRedis], object]
    accept: Callable[[redis.Redis, EmbeddedRedis], object]


REFUSALS = [
    Refusal(
        "out_of_memory",
        507,
        lambda operator, _: operator.config_set("maxmemory", 1),
        lambda operator, _: operator.config_set("maxmemory", 0),
    ),
    Refusal(
        # A demoted master: a replica of a master it cannot reach (nothing listens on port 1) keeps its
        # data and serves reads.
        "read_only",
        503,
        lambda operator, _: operator.replicaof("127.0.0.1", 1),
        lambda operator, _: operator.replicaof("NO", "ONE"),
    ),
    Refusal("persistence_failing", 503, _fail_saving, _save_again),
    Refusal(
        "no_replicas",
        503,
        lambda operator, _: operator.config_set("min-replicas-to-write", 1),
        lambda operator, _: operator.config_set("min-replicas-to-write", 0),
    ),
]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedRedis, httpx.AsyncClient]]:
    # A rate limit too: its counter is a write as well, and must not stop reads.
    settings = Settings(redis_url="", redis_timeout_s=5, rate_limit_per_s=1000, rate_limit_burst=1000)
    with EmbeddedRedis(tmp_path, appendfsync="always") as server:
        app = create_app(settings.model_copy(update={"redis_url": server.url}))
        async with lifespan(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
                yield server, api


WRITES = [
    ("POST", "/api/v1/sprockets", SPROCKET, {}),
    ("POST", "/api/v1/sprockets", SPROCKET, {"Idempotency-Key": "first-try"}),
    ("PUT", "/api/v1/sprockets/1", {**SPROCKET, "teeth": 9}, {}),
    ("PATCH", "/api/v1/sprockets/1", {"teeth": 9}, {}),
    ("DELETE", "/api/v1/sprockets/1", None, {}),
    ("POST", "/api/v1/factories", {"chart_data": CHART_DATA}, {}),
    ("POST", "/api/v1/factories/1/chart_data", {**CHART_DATA, "time": [180, 240]}, {}),
]


def _without_rate_limits(values: dict[bytes, object]) -> dict[bytes, object]:
    return {key: value for key, value in values.items() if not key.startswith(b"sc:ratelimit:")}


@pytest.mark.parametrize("refusal", REFUSALS, ids=[refusal.reason for refusal in REFUSALS])
async def test_refused_writes_are_clear_answers_that_write_nothing_while_reads_go_on(
    setup: tuple[EmbeddedRedis, httpx.AsyncClient], refusal: Refusal
) -> None:
    server, api = setup
    sprocket = (await api.post("/api/v1/sprockets", json=SPROCKET)).json()
    factory = (await api.post("/api/v1/factories", json={"chart_data": CHART_DATA})).json()
    async with connect(server.url) as client:
        before = _without_rate_limits(await keyspace(client))
        with redis.Redis.from_url(server.url) as operator:
            refusal.refuse(operator, server)
            for method, path, body, headers in WRITES:
                response = await api.request(method, path, json=body, headers=headers)
                assert response.status_code == refusal.status, (method, path, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert int(response.headers["retry-after"]) >= 1
                assert "nothing was written" in response.json()["detail"]
            assert _without_rate_limits(await keyspace(client)) == before
            assert (await api.get("/api/v1/sprockets/1")).json() == sprocket
            assert (await api.get("/api/v1/factories/1")).json() == factory
            ready = await api.get("/ready")
            assert (ready.status_code, ready.json()["reason"]) == (503, refusal.reason)
            metrics = (await api.get("/metrics")).text
            assert f'redis_refused_writes_total{{reason="{refusal.reason}"}} {len(WRITES)}.0' in metrics

            refusal.accept(operator, server)
            assert (await api.get("/ready")).status_code == 200
            created = await api.post("/api/v1/sprockets", json=SPROCKET, headers={"Idempotency-Key": "first-try"})
            assert (created.status_code, created.json()["id"]) == (201, 2)
            assert (await api.post("/api/v1/factories/1/chart_data", json=CHART_DATA)).status_code == 200


async def test_a_write_that_waits_for_replicas_on_a_demoted_master_is_refused_as_read_only(tmp_path: Path) -> None:
    """The WAIT sent behind the write gets an error of its own from a replica: it must not hide READONLY."""
    with EmbeddedRedis(tmp_path, appendfsync="always") as server:
        settings = Settings(redis_url=server.url, redis_wait_replicas=1, redis_timeout_s=3.0)
        async with lifespan(create_app(settings)) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
                with redis.Redis.from_url(server.url) as operator:
                    operator.replicaof("127.0.0.1", 1)
                    try:
                        response = await api.post("/api/v1/sprockets", json=SPROCKET)
                    finally:
                        operator.replicaof("NO", "ONE")
    assert response.status_code == 503, response.text
    assert "read-only replica" in response.json()["detail"]


@pytest.mark.parametrize("topology", ["redis-server", "redis-cluster"])
async def test_a_write_no_replica_confirms_is_a_503_that_a_retry_with_the_same_key_settles(
    tmp_path: Path, request: pytest.FixtureRequest, topology: str
) -> None:
    """REDIS_WAIT_REPLICAS=1 on a Redis, or a cluster, without replicas: Redis takes each write but none
    is confirmed."""
    with contextlib.ExitStack() as stack:
        if topology == "redis-cluster":
            url = request.getfixturevalue("redis_cluster")[0].url
            flushed = connect(url, cluster=True, timeout_s=PATIENT_S)
            await flushed.flushdb()
            await flushed.aclose()
        else:
            url = stack.enter_context(EmbeddedRedis(tmp_path, appendfsync="always")).url
        # Each write waits a third of this (1 s) for the replica that never comes; the rest is room for the
        # write itself on a loaded machine, so that it is refused for the replica, not for the time.
        settings = Settings(
            redis_url=url, redis_cluster=topology == "redis-cluster", redis_wait_replicas=1, redis_timeout_s=3.0
        )
        async with lifespan(create_app(settings)) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
                # The retry finds the first try's response, but cannot replay it until a replica has it.
                for _ in range(2):
                    response = await api.post("/api/v1/sprockets", json=SPROCKET, headers={"Idempotency-Key": "once"})
                    assert response.status_code == 503
                    assert response.headers["retry-after"] == "1"
                    assert "may or may not have been applied" in response.json()["detail"]
                    assert "0 of the 1 replicas" in response.json()["detail"]
                for method, path, body in [
                    ("PUT", "/api/v1/sprockets/1", {**SPROCKET, "teeth": 9}),
                    ("POST", "/api/v1/factories", {"chart_data": CHART_DATA}),
                    ("POST", "/api/v1/factories/1/chart_data", CHART_DATA),
                    ("DELETE", "/api/v1/sprockets/1", None),
                ]:
                    response = await api.request(method, path, json=body)
                    assert response.status_code == 503
                    assert "may or may not have been applied" in response.json()["detail"], (method, path)
                metrics = (await api.get("/metrics")).text
                assert "redis_unreplicated_writes_total 6.0" in metrics
        # What Redis took: one sprocket for the two tries with one key (deleted last), and the factory; on a
        # cluster only the factory's id, listed, since the listing waits first on {factories}'s master.
        operator = connect(url, cluster=topology == "redis-cluster", timeout_s=PATIENT_S)
        try:
            assert await operator.get("sc:{sprockets}:next_id") == b"1"
            assert await operator.zcard("sc:{sprockets}:index") == 0
            assert await operator.zrange("sc:{factories}:index", 0, -1) == [b"1"]
            written = await operator.hget("sc:{factory:1}:meta", "name")
            assert written == (None if topology == "redis-cluster" else b"Factory 1")
        finally:
            await operator.aclose()
