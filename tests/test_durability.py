"""With appendfsync always, no write that got a 2xx is lost when Redis is killed with SIGKILL."""

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import orjson
import pytest

from sprockets_cache.http.app import create_app
from sprockets_cache.models import MAX_TIME
from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.settings import Settings
from sprockets_cache.store.connections import connect
from sprockets_cache.store.store import Store
from tests.conftest import PATIENT_S, lifespan

SPROCKET = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedRedis, httpx.AsyncClient]]:
    with EmbeddedRedis(tmp_path, appendfsync="always") as server:
        # Patient: a write that a loaded machine makes slow is still acknowledged, so the load runs.
        app = create_app(Settings(redis_url=server.url, redis_timeout_s=PATIENT_S))
        async with lifespan(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
                yield server, api


class Acknowledged:
    """What the API said it wrote: the writers record only 2xx answers."""

    def __init__(self) -> None:
        self.created: dict[int, int] = {}  # sprocket id -> teeth
        self.updated: dict[int, dict[int, int]] = {}  # sprocket id -> version -> teeth
        self.points: dict[int, int] = {}  # time -> actual
        self.refused = 0  # answers other than 2xx


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENT_S
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {PATIENT_S} s"
        await asyncio.sleep(0.02)


async def creator(api: httpx.AsyncClient, seen: Acknowledged, stop: asyncio.Event) -> None:
    for teeth in itertools.count(1):
        if stop.is_set():
            return
        response = await api.post("/api/v1/sprockets", json={**SPROCKET, "teeth": teeth})
        if response.status_code == 201:
            seen.created[response.json()["id"]] = teeth
        else:
            seen.refused += 1


async def updater(api: httpx.AsyncClient, seen: Acknowledged, stop: asyncio.Event) -> None:
    for teeth in itertools.count(1000):
        if stop.is_set():
            return
        response = await api.put("/api/v1/sprockets/1", json={**SPROCKET, "teeth": teeth})
        if response.status_code == 200:
            seen.updated.setdefault(1, {})[int(response.headers["etag"].strip('"'))] = teeth
        else:
            seen.refused += 1


async def point_writer(api: httpx.AsyncClient, seen: Acknowledged, stop: asyncio.Event, lane: int) -> None:
    for batch in itertools.count():
        if stop.is_set():
            return
        times = [(batch * 100 + i) * 4 + lane for i in range(100)]
        body = {"time": times, "sprocket_production_actual": [t % 97 for t in times], "sprocket_production_goal": times}
        response = await api.post("/api/v1/factories/1/chart_data", json=body)
        if response.status_code == 200:
            seen.points.update({t: t % 97 for t in times})
        else:
            seen.refused += 1
        await asyncio.sleep(0)


@pytest.mark.parametrize("run", range(3))
async def test_every_acknowledged_write_survives_kill_9(
    setup: tuple[EmbeddedRedis, httpx.AsyncClient], run: int
) -> None:
    server, api = setup
    assert (await api.post("/api/v1/sprockets", json=SPROCKET)).status_code == 201
    assert (await api.post("/api/v1/factories", json={})).status_code == 201
    seen, stop = Acknowledged(), asyncio.Event()
    writers = [
        *(creator(api, seen, stop) for _ in range(3)),
        updater(api, seen, stop),
        *(point_writer(api, seen, stop, lane) for lane in range(4)),
    ]
    tasks = [asyncio.create_task(writer) for writer in writers]
    # Each run kills Redis at another point of the load: after a longer time, and more writes of each kind
    # (a slow machine takes longer to get there).
    started, at_least = time.monotonic(), 5 * (run + 1)
    await until(
        lambda: (
            time.monotonic() - started >= 0.4 + 0.2 * run
            and len(seen.created) >= at_least
            and len(seen.updated.get(1, {})) >= at_least
            and len(seen.points) >= 100 * at_least
        ),
        f"{at_least} acknowledged writes of each kind",
    )
    server.kill()
    # Writers keep going into a dead Redis: 503s, not acknowledged.
    refused = seen.refused
    await until(lambda: seen.refused >= refused + len(writers), "writes refused by the dead Redis")
    stop.set()
    await asyncio.gather(*tasks)
    server.start()

    async with connect(server.url) as client:
        store = Store(client)
        for sprocket_id, teeth in seen.created.items():
            if sprocket_id != 1:
                assert orjson.loads((await store.get_sprocket(sprocket_id)).json)["teeth"] == teeth
        final = await store.get_sprocket(1)
        last_version = max(seen.updated[1])
        assert final.version >= last_version
        if final.version == last_version:
            assert orjson.loads(final.json)["teeth"] == seen.updated[1][last_version]
        points = (await store.get_factory(1, 0, MAX_TIME)).points
    stored = dict(zip(map(int, points.time), map(int, points.actual), strict=True))
    assert {t: stored.get(t) for t in seen.points} == seen.points
