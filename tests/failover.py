"""A write load for the failover tests: concurrent creates (each retried with its Idempotency-Key until it
is acknowledged), updates and chart_data writes, recording every write that got a 2xx, and what a store
then holds of them."""

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import httpx
import orjson

from sprockets_cache.errors import NotFound
from sprockets_cache.models import MAX_TIME
from sprockets_cache.store.store import Store

SPROCKET = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}
CREATORS = 3
POINT_LANES = 2
# Each point writer writes this many points a request.
BATCH = 50


@dataclass
class Acknowledged:
    """What the API said it wrote, and when writes began to succeed again after `failed_at`."""

    created: dict[int, int] = field(default_factory=dict)  # sprocket id -> teeth
    updated: dict[int, int] = field(default_factory=dict)  # version of sprocket 1 -> teeth
    points: dict[int, int] = field(default_factory=dict)  # time -> actual
    failed_at: float | None = None
    # When the first sprocket write sent after `failed_at` got a 2xx, in time.monotonic() seconds (on a
    # cluster, the factory's points may live on another master).
    recovered_at: float | None = None
    # When the test first saw the new master named, in time.monotonic() seconds.
    switched_at: float | None = None

    def succeeded(self, sent_at: float) -> None:
        if self.failed_at is not None and sent_at > self.failed_at and self.recovered_at is None:
            self.recovered_at = time.monotonic()


async def _creator(api: httpx.AsyncClient, seen: Acknowledged, stop: asyncio.Event, lane: int) -> None:
    for n in itertools.count(1):
        teeth = lane * 100_000 + n
        while not stop.is_set():  # the same create, with the same key, until it is acknowledged
            sent_at = time.monotonic()
            response = await api.post(
                "/api/v1/sprockets", json={**SPROCKET, "teeth": teeth}, headers={"Idempotency-Key": f"{lane}-{n}"}
            )
            if response.status_code == 201:
                seen.created[response.json()["id"]] = teeth
                seen.succeeded(sent_at)
                break
            await asyncio.sleep(0.05)
        if stop.is_set():
            return


async def _updater(api: httpx.AsyncClient, seen: Acknowledged, stop: asyncio.Event) -> None:
    for teeth in itertools.count(1000):
        if stop.is_set():
            return
        sent_at = time.monotonic()
        response = await api.put("/api/v1/sprockets/1", json={**SPROCKET, "teeth": teeth})
        if response.status_code == 200:
            seen.updated[int(response.headers["etag"].strip('"'))] = teeth
            seen.succeeded(sent_at)
        else:
            await asyncio.sleep(0.05)


async def _point_writer(api: httpx.AsyncClient, seen: Acknowledged, stop: asyncio.Event, lane: int) -> None:
    for batch in itertools.count():
        if stop.is_set():
            return
        times = [(batch * BATCH + i) * POINT_LANES + lane for i in range(BATCH)]
        body = {"time": times, "sprocket_production_actual": [t % 97 for t in times], "sprocket_production_goal": times}
        response = await api.post("/api/v1/factories/1/chart_data", json=body)
        if response.status_code == 200:
            seen.points.update({t: t % 97 for t in times})
        else:
            await asyncio.sleep(0.05)


def start_load(api: httpx.AsyncClient, seen: Acknowledged, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """The writers, as tasks; sprocket 1 and factory 1 must exist."""
    writers = [
        *(_creator(api, seen, stop, lane) for lane in range(CREATORS)),
        _updater(api, seen, stop),
        *(_point_writer(api, seen, stop, lane) for lane in range(POINT_LANES)),
    ]
    return [asyncio.create_task(writer) for writer in writers]


async def lost_writes(store: Store, seen: Acknowledged) -> list[str]:
    """The acknowledged writes that `store` does not hold, each said in words."""
    lost = []
    for sprocket_id, teeth in seen.created.items():
        try:
            stored = orjson.loads((await store.get_sprocket(sprocket_id)).json)["teeth"]
        except NotFound:
            stored = None
        if stored != teeth:
            lost.append(f"sprocket {sprocket_id} created with teeth {teeth}, now {stored}")
    final = await store.get_sprocket(1)
    last_version = max(seen.updated, default=0)
    if final.version < last_version:
        lost.append(f"sprocket 1 is at version {final.version}, after version {last_version} was acknowledged")
    elif final.version == last_version and orjson.loads(final.json)["teeth"] != seen.updated[last_version]:
        lost.append(f"sprocket 1's version {last_version} does not hold the acknowledged teeth")
    points = (await store.get_factory(1, 0, MAX_TIME)).points
    stored_points = dict(zip(map(int, points.time), map(int, points.actual), strict=True))
    lost += [f"point at {t}" for t, actual in seen.points.items() if stored_points.get(t) != actual]
    return lost
