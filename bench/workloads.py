"""What the benchmark writes and reads besides the wrk runs: test data, point ingestion, sequential
latency, Redis memory, and the seed command."""

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import baseline
import httpx
import orjson
import redis
from servers import ROOT

from sprockets_cache.models import MAX_TIME
from sprockets_cache.store import keys
from sprockets_cache.store.connections import connect
from sprockets_cache.store.points import buckets, by_time
from sprockets_cache.store.store import Store

# Points as bench/storage.py makes them, so its figures and ours describe the same data.
T0 = 1_600_000_000
SPACING_S = 60
SPROCKET = {"teeth": 12, "pitch_diameter": 12.0, "outside_diameter": 13.5, "pitch": 1.0}
JSON = {"content-type": "application/json"}


def chart_data(first: int, count: int) -> dict[str, list[int]]:
    """Points first .. first + count - 1 of the series, as a chart_data object."""
    indexes = range(first, first + count)
    return {
        "sprocket_production_actual": [25 + i % 11 for i in indexes],
        "sprocket_production_goal": [30 + i % 6 for i in indexes],
        "time": [T0 + i * SPACING_S for i in indexes],
    }


def time_of(index: int) -> int:
    return T0 + index * SPACING_S


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def _created(response: httpx.Response) -> int:
    if response.status_code != 201:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:500]}")
    return int(response.json()["id"])


def prepare_api(url: str, factories: int, factory_points: int, sprockets: int) -> dict[str, int]:
    """Through the API: `factories` factories of `factory_points` points first (so they are ids 1..N and
    GET /factories?limit=N lists exactly them), then a 20-point factory, an empty one for the chart_data
    writes, and the sprockets."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(factories):
            _created(client.post("/api/v1/factories", json={"chart_data": chart_data(0, factory_points)}))
        small = _created(client.post("/api/v1/factories", json={"chart_data": chart_data(0, 20)}))
        written = _created(client.post("/api/v1/factories", json={"name": "chart_data writes"}))
        first = _created(client.post("/api/v1/sprockets", json=SPROCKET))
        for _ in range(sprockets - 1):
            _created(client.post("/api/v1/sprockets", json=SPROCKET))
    return {"small_factory": small, "written_factory": written, "sprocket": first}


def prepare_baseline(redis_url: str, sprockets: int) -> None:
    """Directly in Redis, the baseline's keys: the same sprockets and the same 20 points as the API's, and
    the hash of the factory its chart_data writes go to (the write script wants it there)."""
    stamp = "2026-01-01T00:00:00.000Z"
    sprocket = {**SPROCKET, "created_at": stamp, "updated_at": stamp}
    points = chart_data(0, 20)
    columns = zip(points["time"], points["sprocket_production_actual"], points["sprocket_production_goal"], strict=True)
    client = redis.Redis.from_url(redis_url)
    with client.pipeline(transaction=False) as pipe:
        for sprocket_id in range(1, sprockets + 1):
            pipe.hset(baseline.key_for_sprocket(sprocket_id), mapping=sprocket)
            pipe.zadd(baseline.SPROCKET_INDEX, {sprocket_id: sprocket_id})
        pipe.set(baseline.SPROCKET_NEXT_ID, sprockets)
        pipe.zadd(baseline.key_for_factory(1), {f"{t}:{a}:{g}": t for t, a, g in columns})
        pipe.hset(baseline.factory_prefix(1), mapping={"name": "chart_data writes", "version": 0, "created_at": stamp})
        pipe.execute()
    client.close()


def create_factory(url: str, name: str) -> int:
    return _created(httpx.post(f"{url}/api/v1/factories", json={"name": name}, timeout=30))


async def _ingest(url: str, bodies: list[bytes], batch: int, in_flight: int) -> float:
    queue = iter(bodies)  # shared by the workers: each takes the next body when it is free

    async def worker(client: httpx.AsyncClient) -> None:
        for body in queue:
            response = await client.post(url, content=body, headers=JSON)
            if response.status_code != 200 or response.json() != {"written": batch}:
                raise RuntimeError(f"{url}: {response.status_code} {response.text[:500]}")

    limits = httpx.Limits(max_connections=in_flight)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(in_flight)))
        return time.perf_counter() - start


def ingest(url: str, factory_id: int, points: int, batch: int, in_flight: int) -> float:
    """Write points 0 .. points - 1 into the factory in batches (bodies encoded beforehand); points/s."""
    bodies = [orjson.dumps(chart_data(first, min(batch, points - first))) for first in range(0, points, batch)]
    elapsed_s = asyncio.run(_ingest(f"{url}/api/v1/factories/{factory_id}/chart_data", bodies, batch, in_flight))
    return points / elapsed_s


def used_memory(redis_url: str, settle_s: float = 15.0) -> int:
    """INFO used_memory once it holds still: Redis shrinks idle clients' query buffers over a few
    seconds after a burst of writes, and those buffers are not what a point costs."""
    client = redis.Redis.from_url(redis_url)
    try:
        readings = [int(client.info("memory")["used_memory"])]
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and (len(readings) < 4 or len(set(readings[-4:])) > 1):
            time.sleep(0.5)
            readings.append(int(client.info("memory")["used_memory"]))
        return readings[-1]
    finally:
        client.close()


def memory_at_one_point_a_second(redis_url: str, points: int) -> float:
    """used_memory growth a point over `points` points a second, written through the store into a factory of
    their own (an hour's bucket holds 3,600 points), in 10,000-point writes."""
    before = used_memory(redis_url)

    async def write() -> None:
        store = Store(connect(redis_url, timeout_s=60))
        factory_id = await store.new_factory_ids()
        await store.create_factory(factory_id, "a point a second", {})
        for first in range(0, points, 10_000):
            times = [T0 + i for i in range(first, min(points, first + 10_000))]
            await store.write_points(factory_id, buckets(by_time(times, [i % 50 for i in times], [30] * len(times))))
        await store.close()

    asyncio.run(write())
    return (used_memory(redis_url) - before) / points


def factory_key_bytes(redis_url: str, factory_id: int) -> int:
    """MEMORY USAGE summed over the keys of the factory's points: its hash, bucket index, bucket sorted sets,
    their sums and its spans (with retention), not its events stream (capped at about 1,000 writes)."""
    client = redis.Redis.from_url(redis_url)
    names = [keys.key_for_factory(factory_id), keys.key_for_factory_buckets(factory_id)]
    names += [keys.key_for_factory_sums(factory_id), keys.key_for_factory_spans(factory_id)]
    names += client.scan_iter(match=keys.factory_points_prefix(factory_id) + "*", count=1000)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.memory_usage(name, samples=0)
        total = sum(usage or 0 for usage in pipe.execute())  # None: no such key
    client.close()
    return int(total)


def count_points(url: str, factory_id: int, first: int = 0, last: int = MAX_TIME) -> int:
    """Through the summary, which has no cap on the points it reads."""
    response = httpx.get(f"{url}/api/v1/factories/{factory_id}/summary", params={"from": first, "to": last}, timeout=60)
    response.raise_for_status()
    return int(response.json()["points"])


def sequential_latency_ms(url: str, requests: int, warmup: int = 3) -> list[float]:
    """Time each of `requests` GETs, one after another, to the whole body read (not parsed)."""
    samples = []
    with httpx.Client(timeout=60) as client:
        for i in range(warmup + requests):
            start = time.perf_counter()
            response = client.get(url)
            elapsed_ms = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.text[:500]}")
            if i >= warmup:
                samples.append(elapsed_ms)
    return samples


def _cli_has_seed() -> bool:
    done = subprocess.run([sys.executable, "-m", "sprockets_cache", "seed", "--help"], cwd=ROOT, capture_output=True)
    return done.returncode == 0


def seed(redis_url: str, api_url: str, path: Path, points: int) -> tuple[float | None, str]:
    """Seconds to load a seed file of one factory with `points` points, and how it was loaded;
    the API (`api_url`, idle meanwhile) checks that the points arrived."""
    document = {"factories": [{"factory": {"name": "Seeded", "chart_data": chart_data(0, points)}}]}
    path.write_bytes(orjson.dumps(document))
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    if _cli_has_seed():
        command = [sys.executable, "-m", "sprockets_cache", "seed", str(path)]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        elapsed_s = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
        said = done.stdout.strip().split(": ", 1)[-1]  # without the temp file's path
        how = f"`python -m sprockets_cache seed FILE` in a new process, start-up included (it said: {said})"
    else:
        try:
            from sprockets_cache.seed import load
        except ImportError:
            return None, "not measured: neither the seed command nor sprockets_cache.seed.load exists yet"
        elapsed_s = asyncio.run(_load_in_process(load, redis_url, path))
        how = "`sprockets_cache.seed.load` in this process (the seed command is not there yet)"
    client = redis.Redis.from_url(redis_url)
    factory_id = int(client.get(keys.FACTORY_NEXT_ID))  # ids come from INCR: the seeded one is the last
    client.close()
    loaded = count_points(api_url, factory_id)
    if loaded != points:
        raise RuntimeError(f"the seed load left {loaded} points, not {points}")
    return elapsed_s, how


async def _load_in_process(load: Any, redis_url: str, path: Path) -> float:
    store = Store(connect(redis_url, timeout_s=30.0))
    try:
        start = time.perf_counter()
        await load(store, [path])
        return time.perf_counter() - start
    finally:
        await store.close()
