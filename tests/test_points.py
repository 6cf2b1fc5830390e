"""Point storage: any sequence of upserts ends where a plain dict of time -> point would."""

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import orjson
import pytest
import redis.exceptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprockets_cache.models import MAX_COUNT, MAX_TIME
from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.store import ranges
from sprockets_cache.store.connections import Client, connect
from sprockets_cache.store.points import NUMPY_FROM, Bucket, Buckets, buckets, by_time, parse
from sprockets_cache.store.store import Store

Point = tuple[int, int, int]
# Mostly a few neighbouring hour buckets, so writes land in, before, after and between stored points.
times = st.one_of(st.integers(0, 4 * 3600), st.integers(0, MAX_TIME))
points = st.tuples(times, st.integers(0, MAX_COUNT), st.integers(0, MAX_COUNT))
# Runs of one point a second: more points to a bucket than its write script adds one by one.
runs = st.builds(
    lambda start, length, actual: [(start + i, actual + i, i) for i in range(length)],
    st.integers(0, 4 * 3600),
    st.integers(65, 400),
    st.integers(0, 1000),
)
batches = st.lists(st.one_of(st.lists(points, max_size=40), runs), max_size=8)


@pytest.fixture(scope="module")
def redis_with_defaults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A redis-server with Redis's default zset-max-listpack-entries (128), not the 4,096 we ship: more
    points a bucket than that make its sorted set a skiplist, which the scripts must handle alike."""
    extra = ["--zset-max-ziplist-entries", "128"]
    with EmbeddedRedis(tmp_path_factory.mktemp("redis-defaults"), extra_args=extra) as server:
        yield server


@pytest.fixture(params=["fakeredis", "redis-server", "redis-server-defaults"])
def new_client(request: pytest.FixtureRequest) -> Iterator[Callable[[], Client]]:
    if request.param == "fakeredis":
        server = fakeredis.FakeServer()
        yield lambda: fakeredis.FakeAsyncRedis(server=server)
    else:
        fixture = "redis_server" if request.param == "redis-server" else "redis_with_defaults"
        redis_server: EmbeddedRedis = request.getfixturevalue(fixture)
        yield lambda: connect(redis_server.url)


def packed(batch: list[Point]) -> Buckets:
    return buckets(by_time([p[0] for p in batch], [p[1] for p in batch], [p[2] for p in batch]))


def test_points_keep_the_last_at_a_time_sorted_into_buckets_of_readable_members() -> None:
    points = by_time([7200, 5, 5, 3601], [1, 2, 3, 4], [5, 6, 7, 8])
    assert orjson.loads(orjson.dumps(points.as_chart_data())) == {
        "sprocket_production_actual": [3, 4, 1],
        "sprocket_production_goal": [7, 8, 5],
        "time": [5, 3601, 7200],
    }
    assert buckets(points) == {
        0: Bucket([5, "5:3:7"], 3, 7),
        1: Bucket([3601, "3601:4:8"], 4, 8),
        2: Bucket([7200, "7200:1:5"], 1, 5),
    }


@pytest.mark.parametrize("points", [0, 1, NUMPY_FROM - 1, NUMPY_FROM, 5000])
def test_small_and_large_reads_parse_alike(points: int) -> None:
    """Below NUMPY_FROM points parse uses orjson, from it on numpy: the JSON must not tell."""
    times = [1_600_000_000 + 7 * i for i in range(points)]  # a few hundred buckets at most
    actuals, goals = [MAX_COUNT - i for i in range(points)], [i % 3 for i in range(points)]
    members = ":".join(f"{t}:{a}:{g}" for t, a, g in zip(times, actuals, goals, strict=True)).encode()
    columns = parse(members, points)
    assert orjson.loads(orjson.dumps(columns.as_chart_data())) == {
        "sprocket_production_actual": actuals,
        "sprocket_production_goal": goals,
        "time": times,
    }
    sums = columns.bucketed(3600)
    assert list(map(int, sums.actual)) == [
        sum(a for t, a in zip(times, actuals, strict=True) if t // 3600 == start // 3600) for start in sums.time
    ]


@pytest.fixture(params=["direct", "script", "transaction"])
def script_reads_at_most(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each way a range is read: ranges of a few buckets in one transaction of the buckets their times
    name (direct), else by the read script, which leaves more than SCRIPT_READS_AT_MOST points to a
    transaction of the buckets it names."""
    if request.param != "direct":
        monkeypatch.setattr(ranges, "DIRECT_BUCKETS_AT_MOST", 0)
    if request.param == "transaction":
        monkeypatch.setattr(ranges, "SCRIPT_READS_AT_MOST", 3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=batches, first=times, last=times)
def test_any_sequence_of_writes_reads_back_as_a_dict_of_time_to_point(
    new_client: Callable[[], Client], script_reads_at_most: None, writes: list[list[Point]], first: int, last: int
) -> None:
    first, last = min(first, last), max(first, last)

    async def scenario() -> None:
        client = new_client()
        await client.flushdb()
        store = Store(client)
        await store.create_factory(1, "F", {})
        model: dict[int, tuple[int, int]] = {}
        for batch in writes:
            await store.write_points(1, packed(batch))
            model.update({time: (actual, goal) for time, actual, goal in batch})
        everything = (await store.get_factory(1, 0, MAX_TIME)).points
        in_range = (await store.get_factory(1, first, last)).points
        summary = await store.summarize_factory(1, first, last)
        await client.aclose()
        chosen = [t for t in sorted(model) if first <= t <= last]
        assert (summary.points, summary.actual_total, summary.goal_total) == (
            len(chosen),
            sum(model[t][0] for t in chosen),
            sum(model[t][1] for t in chosen),
        )
        assert (summary.first_time, summary.last_time) == ((chosen[0], chosen[-1]) if chosen else (None, None))
        assert list(map(int, everything.time)) == sorted(model)
        assert list(zip(map(int, everything.actual), map(int, everything.goal), strict=True)) == [
            model[t] for t in sorted(model)
        ]
        assert list(map(int, in_range.time)) == [t for t in sorted(model) if first <= t <= last]
        assert list(map(int, in_range.actual)) == [model[t][0] for t in map(int, in_range.time)]

    asyncio.run(scenario())


def test_a_read_over_thousands_of_buckets_returns_each_point_once(new_client: Callable[[], Client]) -> None:
    """2,500 hourly points: 2,500 buckets of one point, each read once."""
    times = [3600 * i + i % 60 for i in range(2500)]

    async def scenario() -> None:
        client = new_client()
        await client.flushdb()
        store = Store(client)
        await store.create_factory(1, "F", packed(list(zip(times, range(2500), [7] * 2500, strict=True))))
        everything = (await store.get_factory(1, 0, MAX_TIME)).points
        middle = (await store.get_factory(1, times[999], times[2001])).points
        await client.aclose()
        assert list(map(int, everything.time)) == times
        assert list(map(int, everything.actual)) == list(range(2500))
        assert list(map(int, middle.time)) == times[999:2002]

    asyncio.run(scenario())


@pytest.mark.parametrize(("settings", "encoding"), [("shipped", b"listpack"), ("defaults", b"skiplist")])
async def test_an_hour_of_points_a_second_is_compact_in_the_shipped_settings(
    request: pytest.FixtureRequest, settings: str, encoding: bytes
) -> None:
    """Redis's default keeps at most 128 points a sorted set compact; make run and compose keep 4,096."""
    server: EmbeddedRedis = request.getfixturevalue("redis_server" if settings == "shipped" else "redis_with_defaults")
    client = connect(server.url)
    await client.flushdb()
    store = Store(client)
    await store.create_factory(1, "F", packed([(7200 + i, i, 1) for i in range(0, 3600, 2)]))
    await store.write_points(1, packed([(7201 + i, i, 2) for i in range(0, 3600, 2)]))  # between those
    await store.write_points(1, packed([(7200 + i, 9, 9) for i in range(0, 100)]))  # over some of them

    assert await client.object("encoding", "sc:{factory:1}:points:2") == encoding
    assert not await client.exists("sc:{factory:1}:scratch")
    points = (await store.get_factory(1, 0, MAX_TIME)).points
    await client.aclose()
    assert list(map(int, points.time)) == list(range(7200, 10800))
    assert list(map(int, points.goal)) == [9] * 100 + [1 + i % 2 for i in range(100, 3600)]


async def reading_while_writing(
    redis_client: Client, monkeypatch: pytest.MonkeyPatch, writes: Callable[[int], list[Point]]
) -> tuple[Store, list[int]]:
    """A factory at 60 and 7260 s whose reads go through the transaction, each transaction (call n, from 1)
    preceded by a write of `writes(n)`, as if it landed between the script's reply and the transaction.
    Returns the store and the calls made so far."""
    monkeypatch.setattr(ranges, "SCRIPT_READS_AT_MOST", 1)
    store = Store(redis_client)
    await store.create_factory(1, "F", packed([(60, 1, 1), (7260, 2, 2)]))
    transaction = ranges.transaction
    calls: list[int] = []

    async def after_a_write(*args: Any) -> Any:
        calls.append(len(calls) + 1)
        written = writes(calls[-1])
        if written:
            await store.write_points(1, packed(written))
        return await transaction(*args)

    monkeypatch.setattr(ranges, "transaction", after_a_write)
    return store, calls


async def test_a_transaction_read_takes_in_buckets_written_since_the_script_listed_them(
    redis_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, calls = await reading_while_writing(redis_client, monkeypatch, lambda n: [(3660, 3, 3)] if n == 1 else [])
    factory = await store.get_factory(1, 0, MAX_TIME)

    assert len(calls) == 2
    assert (factory.version, list(factory.points.time), list(factory.points.actual)) == (2, [60, 3660, 7260], [1, 3, 2])


async def test_a_read_that_keeps_finding_new_buckets_gives_up_as_redis_too_slow(
    redis_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sees 503 and tries again, as when Redis is too slow, never a 500."""
    store, calls = await reading_while_writing(redis_client, monkeypatch, lambda n: [(3600 * (10 + n), 3, 3)])
    with pytest.raises(redis.exceptions.TimeoutError, match="kept gaining buckets"):
        await store.get_factory(1, 0, MAX_TIME)
    assert len(calls) == ranges.ATTEMPTS
