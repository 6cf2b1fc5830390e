"""A store of the first format (points packed in strings) is refused at start-up and converted by
`migrate`: the same points and versions, however often it is run or wherever it was cut short."""

import struct
from pathlib import Path
from typing import Any

import pytest
import redis

from sprockets_cache.http.app import create_app
from sprockets_cache.ops import migration
from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.settings import Settings
from sprockets_cache.store import keys, schema
from sprockets_cache.store.connections import Client, connect
from sprockets_cache.store.store import Store
from tests.conftest import lifespan, serve
from tests.test_cli import ROOT, cli

Point = tuple[int, int, int]
# One hour of points a second, two points an hour apart, and a point at the largest counts.
DENSE = [(7200 + i, i % 97, 100) for i in range(3600)]
SPARSE = [(60, 1, 2), (3660, 3, 4), (11000, 2**32 - 1, 2**32 - 1)]
OLD_FACTORIES = {1: ("Line one", DENSE + SPARSE, 7), 2: ("Line two", [], 1), 3: ("Line three", SPARSE, 2)}


async def write_first_format(client: Client) -> None:
    """The keys the first format wrote: each bucket a string of 10-byte records."""
    for factory_id, (name, points, version) in OLD_FACTORIES.items():
        await client.zadd(keys.FACTORY_INDEX, {str(factory_id): factory_id})
        meta = {"name": name, "version": version, "created_at": "2021-01-21T02:00:00Z"}
        await client.hset(keys.key_for_factory(factory_id), mapping=meta)
        await client.xadd(keys.key_for_factory_events(factory_id), {"version": version, "first": 0, "last": 0})
        buckets: dict[int, bytes] = {}
        for time, actual, goal in sorted(points):
            record = struct.pack(">HII", time % 3600, actual, goal)
            buckets[time // 3600] = buckets.get(time // 3600, b"") + record
        for bucket, packed in buckets.items():
            await client.set(keys.key_for_factory_points(factory_id, bucket), packed)
            await client.zadd(keys.key_for_factory_buckets(factory_id), {str(bucket): bucket})
    await client.set(keys.FACTORY_NEXT_ID, 3)


async def read_back(client: Client) -> dict[int, tuple[str, int, list[Point]]]:
    store = Store(client)
    factories = {}
    for factory_id in OLD_FACTORIES:
        factory = await store.get_factory(factory_id, 0, 2**40)
        points = factory.points
        rows = list(zip(*(map(int, column) for column in (points.time, points.actual, points.goal)), strict=True))
        factories[factory_id] = (factory.name, factory.version, rows)
    return factories


EXPECTED = {
    factory_id: (name, version, sorted(points)) for factory_id, (name, points, version) in OLD_FACTORIES.items()
}


async def test_migrate_converts_every_bucket_keeping_points_and_versions(redis_client: Client) -> None:
    await write_first_format(redis_client)
    lines: list[str] = []

    done = await migration.migrate(Store(redis_client), lines.append)

    assert done == "converted 3606 points in 7 buckets of 3 factories; the store is in format 2"
    assert lines == ["factory 1: converted 3603 points", "factory 3: converted 3 points"]
    assert await read_back(redis_client) == EXPECTED
    for factory_id, (_, points, _) in OLD_FACTORIES.items():  # the buckets' sums, kept for summaries
        summary = await Store(redis_client).summarize_factory(factory_id, 3600, 2**40)
        later = [p for p in points if p[0] >= 3600]
        assert (summary.points, summary.actual_total, summary.goal_total) == (
            len(later),
            sum(p[1] for p in later),
            sum(p[2] for p in later),
        )
    assert await redis_client.get(keys.SCHEMA) == b"2"
    assert await redis_client.zrange("sc:{factory:1}:points:3", 0, 0, withscores=True) == [
        (b"11000:4294967295:4294967295", 11000.0)
    ]
    assert not await redis_client.exists(keys.key_for_factory_scratch(1))
    # A rerun finds nothing to do.
    assert await migration.migrate(Store(redis_client), lines.append) == "the store is in format 2: nothing to convert"


async def test_a_migration_cut_short_finishes_on_a_rerun_with_nothing_lost_or_doubled(
    redis_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    await write_first_format(redis_client)
    convert = migration._convert
    calls = 0

    async def dies_after_three_buckets(*args: Any) -> int:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise redis.ConnectionError("killed")
        return await convert(*args)

    monkeypatch.setattr(migration, "_convert", dies_after_three_buckets)
    with pytest.raises(redis.ConnectionError):
        await migration.migrate(Store(redis_client), print)
    assert await redis_client.get(keys.SCHEMA) is None  # not done: start-up still refuses
    with pytest.raises(schema.OutdatedStore):
        await schema.check(Store(redis_client))

    monkeypatch.setattr(migration, "_convert", convert)
    done = await migration.migrate(Store(redis_client), lambda line: None)

    assert done.endswith("of 3 factories; the store is in format 2")
    assert await read_back(redis_client) == EXPECTED


async def test_the_app_refuses_to_start_on_the_first_format_naming_the_command(redis_client: Client) -> None:
    await write_first_format(redis_client)
    app = create_app(Settings(), redis_client)
    with pytest.raises(schema.OutdatedStore, match="python -m sprockets_cache migrate"):
        async with lifespan(app):
            pass

    await migration.migrate(Store(redis_client), lambda line: None)
    async for http in serve(Settings(), redis_client):
        factory = await http.get("/api/v1/factories/3")
        assert factory.headers["ETag"] == '"2"'
        assert factory.json()["chart_data"]["time"] == [60, 3660, 11000]


async def test_a_newer_format_is_refused_by_start_up_and_migrate(redis_client: Client) -> None:
    await redis_client.set(keys.SCHEMA, 3)
    for refused in (schema.check(Store(redis_client)), migration.migrate(Store(redis_client), print)):
        with pytest.raises(schema.OutdatedStore, match="format 3, written by a newer version"):
            await refused


async def test_a_store_without_factories_needs_no_migration_and_its_first_factory_marks_the_format(
    redis_client: Client,
) -> None:
    store = Store(redis_client)
    await schema.check(store)
    await store.create_factory(await store.new_factory_ids(), "New", {})
    assert await redis_client.get(keys.SCHEMA) == b"2"
    await schema.check(store)


@pytest.mark.redis_server
async def test_the_migrate_command_converts_and_seed_refuses_until_then(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    client = connect(redis_server.url)
    await client.flushdb()
    await write_first_format(client)

    refused = cli("seed", str(ROOT / "seeds/seed_sprocket_types.json"), cwd=tmp_path, REDIS_URL=redis_server.url)
    assert refused.returncode == 2
    assert "python -m sprockets_cache migrate" in refused.stderr

    converted = cli("migrate", cwd=tmp_path, REDIS_URL=redis_server.url)
    assert converted.returncode == 0, converted.stderr
    assert converted.stdout == "converted 3606 points in 7 buckets of 3 factories; the store is in format 2\n"
    assert "factory 1: converted 3603 points" in converted.stderr
    again = cli("migrate", cwd=tmp_path, REDIS_URL=redis_server.url)
    assert again.stdout == "the store is in format 2: nothing to convert\n"
    assert await read_back(client) == EXPECTED
    await client.aclose()
