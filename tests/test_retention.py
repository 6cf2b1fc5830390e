"""Retention and downsampling: any sequence of writes ends where a dict model with the same retention
and spans would, on fakeredis, a redis-server and a cluster."""

import asyncio
import itertools
import math
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fakeredis
import httpx
import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprockets_cache.errors import BeforeRawWindow
from sprockets_cache.http import events
from sprockets_cache.models import MAX_COUNT, MAX_TIME
from sprockets_cache.ops import export, seed
from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.settings import Settings
from sprockets_cache.store import keys
from sprockets_cache.store.connections import Client, connect
from sprockets_cache.store.points import buckets, by_time
from sprockets_cache.store.store import Store
from sprockets_cache.store.streams import Event
from tests.conftest import keyspace, serve
from tests.test_cli import cli
from tests.test_seed import dying_on_chunk, factory_file

Point = tuple[int, int, int]
# (POINTS_RETENTION_S, DOWNSAMPLE_S): spans of whole hours, of part of an hour, wider than an hour, none.
SETUPS = [(7200, 3600), (7200, 600), (14400, 7200), (7200, 0)]
# A dozen hours: batches land inside the raw window, before it and across its edge.
times = st.integers(0, 12 * 3600)
points = st.tuples(times, st.integers(0, MAX_COUNT), st.integers(0, MAX_COUNT))
runs = st.builds(
    lambda start, length: [(start + i, i, 2 * i) for i in range(length)],
    times,
    st.integers(65, 3000),
)
batches = st.lists(st.one_of(st.lists(points, min_size=1, max_size=30), runs), min_size=1, max_size=8)
factory_ids = itertools.count(1)


@dataclass
class Model:
    """What the store should hold: raw points by time, spans by start, and where the raw window starts."""

    retention_s: int
    span_s: int
    raw: dict[int, tuple[int, int]] = field(default_factory=dict)
    spans: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    raw_from: int = 0

    def write(self, batch: list[Point]) -> bool:
        """Apply a write; False when the store must refuse it."""
        if self.raw_from and min(t for t, _, _ in batch) < self.raw_from:
            return False
        self.raw.update({t: (a, g) for t, a, g in batch})
        grain = math.lcm(3600, self.span_s) if self.span_s else 3600
        raw_from = (max(self.raw) - self.retention_s) // grain * grain
        if raw_from > self.raw_from:
            for t in [t for t in self.raw if t < raw_from]:
                actual, goal = self.raw.pop(t)
                if self.span_s:
                    start = t - t % self.span_s
                    a, g, n = self.spans.get(start, (0, 0, 0))
                    self.spans[start] = (a + actual, g + goal, n + 1)
            self.raw_from = raw_from
        return True

    def read(self, first: int, last: int) -> tuple[int, list[tuple[int, int, int, int]]]:
        """(resolution_s, [(time, actual, goal, points)...]) as a read of [first, last] answers."""
        if not (self.span_s and self.raw_from and first < self.raw_from):
            return 1, [(t, *self.raw[t], 1) for t in sorted(self.raw) if first <= t <= last]
        width = self.span_s
        start, end = first - first % width, last - last % width + width - 1
        sums = {s: self.spans[s] for s in self.spans if start <= s <= end}
        for t in (t for t in self.raw if start <= t <= end):
            a, g, n = sums.get(t - t % width, (0, 0, 0))
            actual, goal = self.raw[t]
            sums[t - t % width] = (a + actual, g + goal, n + 1)
        return width, [(s, *sums[s]) for s in sorted(sums)]


def packed(batch: list[Point]) -> dict[int, object]:
    return buckets(by_time([p[0] for p in batch], [p[1] for p in batch], [p[2] for p in batch]))  # type: ignore[return-value]


@pytest.fixture(params=["fakeredis", "redis-server", "redis-cluster"])
def new_client(request: pytest.FixtureRequest) -> Iterator[Callable[[], Client]]:
    if request.param == "fakeredis":
        server = fakeredis.FakeServer()
        yield lambda: fakeredis.FakeAsyncRedis(server=server)
    elif request.param == "redis-server":
        redis_server: EmbeddedRedis = request.getfixturevalue("redis_server")
        yield lambda: connect(redis_server.url, timeout_s=30)
    else:
        nodes: list[EmbeddedRedis] = request.getfixturevalue("redis_cluster")
        yield lambda: connect(nodes[0].url, cluster=True, timeout_s=30)


async def _check(store: Store, model: Model, factory_id: int, first: int, last: int) -> None:
    resolution_s, expected = model.read(first, last)
    factory = await store.get_factory(factory_id, first, last)
    columns = factory.points
    got = list(zip(map(int, columns.time), map(int, columns.actual), map(int, columns.goal), strict=True))
    assert factory.resolution_s == resolution_s
    assert got == [row[:3] for row in expected]
    summary = await store.summarize_factory(factory_id, first, last)
    assert (summary.points, summary.actual_total, summary.goal_total) == (
        sum(row[3] for row in expected),
        sum(row[1] for row in expected),
        sum(row[2] for row in expected),
    )
    ends = (expected[0][0], expected[-1][0]) if expected else (None, None)
    if resolution_s == 1 or not expected:
        assert (summary.first_time, summary.last_time) == ends


@pytest.mark.parametrize(("retention_s", "span_s"), SETUPS, ids=[f"{r}s-by-{d}s" for r, d in SETUPS])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=batches, first=times, last=times)
def test_any_sequence_of_writes_keeps_raw_points_in_the_window_and_exact_sums_before_it(
    new_client: Callable[[], Client], retention_s: int, span_s: int, writes: list[list[Point]], first: int, last: int
) -> None:
    first, last = min(first, last), max(first, last)
    factory_id = next(factory_ids)

    async def scenario() -> None:
        client = new_client()
        store = Store(client, retention_s=retention_s, downsample_s=span_s)
        await store.create_factory(factory_id, "F", {})
        model = Model(retention_s, span_s)
        for batch in writes:
            before = await _stored(client, factory_id)
            if model.write(batch):
                await store.write_points(factory_id, packed(batch))  # type: ignore[arg-type]
            else:
                with pytest.raises(BeforeRawWindow) as refused:
                    await store.write_points(factory_id, packed(batch))  # type: ignore[arg-type]
                assert refused.value.raw_from == model.raw_from
                assert await _stored(client, factory_id) == before
        await _check(store, model, factory_id, 0, MAX_TIME)
        await _check(store, model, factory_id, first, last)
        await _check(store, model, factory_id, model.raw_from, MAX_TIME)
        await client.aclose()

    asyncio.run(scenario())


async def _stored(client: Client, factory_id: int) -> dict[str, object]:
    """The factory's points, spans, sums and raw window: all but its version and events."""
    numbers = await client.zrange(keys.key_for_factory_buckets(factory_id), 0, -1)
    return {
        "buckets": numbers,
        "points": [await client.zrange(keys.key_for_factory_points(factory_id, int(n)), 0, -1) for n in numbers],
        "sums": await client.hgetall(keys.key_for_factory_sums(factory_id)),
        "spans": await client.zrange(keys.key_for_factory_spans(factory_id), 0, -1, withscores=True),
        "raw_from": await client.hmget(keys.key_for_factory(factory_id), "raw_from", "span_s"),
    }


def test_a_write_that_moves_the_window_trims_once_and_its_rerun_changes_nothing(
    new_client: Callable[[], Client],
) -> None:
    factory_id = next(factory_ids)
    day = [(t, 2, 3) for t in range(0, 86400, 10)]  # a day of points every 10 s
    later = [(86400 + 2 * 3600 + 5, 7, 7)]  # moves the window two hours on

    async def scenario() -> None:
        client = new_client()
        store = Store(client, retention_s=86400, downsample_s=3600)
        await store.create_factory(factory_id, "F", packed(day))  # type: ignore[arg-type]
        assert (await _stored(client, factory_id))["spans"] == []
        await store.write_points(factory_id, packed(later))  # type: ignore[arg-type]
        once = await _stored(client, factory_id)
        assert once["spans"] == [(b"0:720:1080:360", 0.0), (b"3600:720:1080:360", 3600.0)]
        assert once["raw_from"] == [b"7200", b"3600"]
        await store.write_points(factory_id, packed(later))  # type: ignore[arg-type]
        assert await _stored(client, factory_id) == once
        summary = await store.summarize_factory(factory_id, 0, MAX_TIME)
        assert (summary.points, summary.actual_total, summary.goal_total) == (8641, 2 * 8640 + 7, 3 * 8640 + 7)
        await client.aclose()

    asyncio.run(scenario())


def test_retention_off_writes_no_window_and_no_spans(new_client: Callable[[], Client]) -> None:
    factory_id = next(factory_ids)

    async def scenario() -> None:
        client = new_client()
        store = Store(client)
        await store.create_factory(factory_id, "F", packed([(0, 1, 1), (10 * 86400, 1, 1)]))  # type: ignore[arg-type]
        stored = await _stored(client, factory_id)
        assert (stored["spans"], stored["raw_from"]) == ([], [None, None])
        assert len(stored["buckets"]) == 2  # type: ignore[arg-type]
        await client.aclose()

    asyncio.run(scenario())


@pytest.fixture
async def retained_api(redis_client: Client) -> AsyncIterator[httpx.AsyncClient]:
    """The API keeping two hours of raw points and hour spans before them."""
    async for http in serve(Settings(points_retention_s=7200, downsample_s=3600), redis_client):
        yield http


def chart(points: list[Point]) -> dict[str, list[int]]:
    return {
        "time": [t for t, _, _ in points],
        "sprocket_production_actual": [a for _, a, _ in points],
        "sprocket_production_goal": [g for _, _, g in points],
    }


async def test_responses_say_their_resolution_and_a_range_before_the_window_is_all_spans(
    retained_api: httpx.AsyncClient,
) -> None:
    # Three hours of points a minute and one more: the first hour falls out of the two-hour window.
    points = [(t, 1, 2) for t in range(0, 3 * 3600, 60)] + [(3 * 3600, 5, 5)]
    created = await retained_api.post("/api/v1/factories", json={"chart_data": chart(points)})
    assert (created.status_code, created.json()["resolution_s"]) == (201, 1)

    async def read(query: str) -> tuple[int, dict[str, list[int]]]:
        body = (await retained_api.get(f"/api/v1/factories/1?{query}")).json()
        return body["resolution_s"], body["chart_data"]

    hours = {"time": [0, 3600, 7200, 10800], "sprocket_production_actual": [60, 60, 60, 5]}
    hours["sprocket_production_goal"] = [120, 120, 120, 5]
    assert await read("") == (3600, hours)
    assert await read("from=1000&to=4000&bucket=60") == (3600, {key: value[:2] for key, value in hours.items()})
    assert await read("bucket=7200") == (
        7200,
        {"time": [0, 7200], "sprocket_production_actual": [120, 65], "sprocket_production_goal": [240, 125]},
    )
    assert await read("from=3600&to=3719") == (1, chart([(3600, 1, 2), (3660, 1, 2)]))
    assert await read("from=3600&to=7199&bucket=1800") == (1800, chart([(3600, 30, 60), (5400, 30, 60)]))
    listed = (await retained_api.get("/api/v1/factories")).json()["factories"]
    assert [f["resolution_s"] for f in listed] == [3600]
    summary = (await retained_api.get("/api/v1/factories/1/summary")).json()
    assert (summary["points"], summary["actual_total"], summary["goal_total"]) == (181, 185, 365)
    assert (summary["first_time"], summary["last_time"]) == (0, 10800)


async def test_a_write_before_the_raw_window_is_422_naming_the_retention_and_writes_nothing(
    retained_api: httpx.AsyncClient, redis_client: Client
) -> None:
    await retained_api.post("/api/v1/factories", json={"chart_data": chart([(0, 1, 1), (4 * 3600, 1, 1)])})
    before = await keyspace(redis_client)
    late = chart([(3599, 1, 1), (5 * 3600, 1, 1)])
    refused = await retained_api.post("/api/v1/factories/1/chart_data", json=late)
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert "7200 or later" in refused.json()["detail"]
    assert "POINTS_RETENTION_S=7200" in refused.json()["detail"]
    assert refused.json()["errors"][0]["field"] == "body.time"
    assert await keyspace(redis_client) == before


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"DOWNSAMPLE_S": "3600"}, "DOWNSAMPLE_S needs POINTS_RETENTION_S"),
        ({"DOWNSAMPLE_S": "7000", "POINTS_RETENTION_S": "86400"}, "DOWNSAMPLE_S (7000) must divide"),
        ({"POINTS_RETENTION_S": "-1"}, "POINTS_RETENTION_S: Input should be greater than or equal to 0"),
        ({"DOWNSAMPLE_S": str(2**22), "POINTS_RETENTION_S": str(2**23)}, "DOWNSAMPLE_S: Input should be less"),
    ],
    ids=["downsampling-without-retention", "not-dividing", "negative", "too-wide"],
)
def test_a_bad_retention_setting_stops_start_up_with_one_line(
    environment: dict[str, str], message: str, tmp_path: Path
) -> None:
    started = cli("serve", cwd=tmp_path, REDIS_URL="redis://127.0.0.1:1/0", **environment)
    assert started.returncode == 2
    assert started.stdout == ""
    assert len(started.stderr.splitlines()) == 1
    assert message in started.stderr


def test_good_retention_settings_are_taken() -> None:
    settings = Settings(points_retention_s=86400, downsample_s=3600)
    assert (settings.points_retention_s, settings.downsample_s) == (86400, 3600)
    assert (Settings().points_retention_s, Settings().downsample_s) == (0, 0)


async def test_an_export_of_a_downsampled_factory_restores_its_spans_as_points_and_its_raw_points(
    tmp_path: Path,
) -> None:
    store = Store(fakeredis.FakeAsyncRedis(), retention_s=7200, downsample_s=3600)
    points = [(t, 1, 2) for t in range(0, 3 * 3600, 60)] + [(3 * 3600, 5, 5)]
    await store.create_factory(await store.new_factory_ids(), "F", packed(points))  # type: ignore[arg-type]
    backup = tmp_path / "backup.json"
    with backup.open("wb") as out:
        assert await export.write(store, out) == "1 factories (122 points) and 0 sprockets"
    exported = orjson.loads(backup.read_bytes())["factories"][0]["chart_data"]
    assert exported["time"] == [0, *range(3600, 3 * 3600 + 1, 60)]
    restored = Store(fakeredis.FakeAsyncRedis(), retention_s=7200, downsample_s=3600)
    await seed.load(restored, [backup])
    for first, last in [(0, MAX_TIME), (3600, MAX_TIME), (0, 3599)]:
        after, before = [await s.summarize_factory(1, first, last) for s in (restored, store)]
        assert (after.actual_total, after.goal_total) == (before.actual_total, before.goal_total)
    # The points of a span come back as one: its sums are kept, their number is not.
    assert (await restored.summarize_factory(1, 0, MAX_TIME)).points == 181 - 60 + 1
    after, before = [orjson.dumps((await s.get_factory(1, 0, MAX_TIME)).as_json()) for s in (restored, store)]
    assert after == before


def test_with_retention_turned_off_a_trimmed_past_still_refuses_writes(new_client: Callable[[], Client]) -> None:
    """Points written behind a factory's spans would be hidden by them: the raw window stays where it was."""
    factory_id = next(factory_ids)

    async def scenario() -> None:
        client = new_client()
        retained = Store(client, retention_s=3600, downsample_s=3600)
        await retained.create_factory(factory_id, "F", packed([(0, 1, 1), (3 * 3600, 1, 1)]))  # type: ignore[arg-type]
        with pytest.raises(BeforeRawWindow) as refused:
            await Store(client).write_points(factory_id, packed([(10, 1, 1)]))  # type: ignore[arg-type]
        assert (refused.value.raw_from, refused.value.retention_s) == (7200, 0)
        await Store(client).write_points(factory_id, packed([(7200, 1, 1)]))  # type: ignore[arg-type]
        summary = await Store(client).summarize_factory(factory_id, 0, MAX_TIME)
        assert (summary.points, summary.actual_total) == (3, 3)
        await client.aclose()

    asyncio.run(scenario())


async def test_concurrent_writes_moving_the_window_count_each_accepted_point_once(real_redis: Client) -> None:
    """Eight writers race, each with three hours of points starting an hour after the one before: whatever
    order Redis runs them in, the totals are those of the writes it accepted (one that comes after a later
    one falls before the window and is refused), every point counted once, in spans or raw."""
    store = Store(real_redis, retention_s=7200, downsample_s=600)
    await store.create_factory(1, "F", {})
    batches = [[(w * 3600 + 8 * i + w, 1, w + 1) for i in range(3 * 450)] for w in range(8)]

    async def write(batch: list[Point]) -> list[Point]:
        try:
            await store.write_points(1, packed(batch))  # type: ignore[arg-type]
        except BeforeRawWindow:
            return []
        return batch

    accepted = [p for batch in await asyncio.gather(*map(write, batches)) for p in batch]
    assert accepted
    summary = await store.summarize_factory(1, 0, MAX_TIME)
    expected = (len(accepted), len(accepted), sum(g for _, _, g in accepted))
    assert (summary.points, summary.actual_total, summary.goal_total) == expected


async def test_an_interrupted_seed_with_retention_converges_on_rerun(
    redis_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rerun writes the file's first chunks again, which the first run wrote and trimmed since."""
    monkeypatch.setattr(seed, "CHUNK_POINTS", 100)
    path = factory_file(tmp_path / "big.json", factories=1, points=1000)  # 16 hours, a point a minute
    store = Store(redis_client, retention_s=7200, downsample_s=3600)
    write_points = dying_on_chunk(store, monkeypatch, 5)
    with pytest.raises(redis.ConnectionError):
        await seed.load(store, [path])
    monkeypatch.setattr(store, "write_points", write_points)
    assert await seed.load(store, [path]) == [f"{path}: finished an interrupted load of 1 factory (id 1, 1000 points)"]
    summary = await store.summarize_factory(1, 0, MAX_TIME)
    assert (summary.points, summary.actual_total, summary.goal_total) == (1000, 1000, sum(range(1000)))
    assert (await store.get_factory(1, 0, MAX_TIME)).resolution_s == 3600


async def test_an_event_of_a_write_that_reached_into_its_own_trimmed_past_says_it_holds_spans() -> None:
    store = Store(fakeredis.FakeAsyncRedis(), retention_s=7200, downsample_s=3600)
    version = await store.create_factory(1, "F", packed([(10, 1, 2), (3 * 3600, 3, 4)]))  # type: ignore[arg-type]
    data = await events._data(store, 1, Event("1-0", version, 10, 3 * 3600, 2), 1000)
    assert orjson.loads(data) == {
        "version": version,
        "resolution_s": 3600,
        "chart_data": {"sprocket_production_actual": [1, 3], "sprocket_production_goal": [2, 4], "time": [0, 10800]},
    }
