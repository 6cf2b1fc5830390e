import hashlib
import json
import random
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as redis

from sprockets_cache.ops import seed
from sprockets_cache.ops.seed import SeedError
from sprockets_cache.store import keys
from sprockets_cache.store.connections import Client
from sprockets_cache.store.points import Buckets
from sprockets_cache.store.store import Store
from tests.conftest import keyspace

SEEDS = Path(__file__).parent.parent / "seeds"
FACTORY_SEED = SEEDS / "seed_factory_data.json"
SPROCKET_SEED = SEEDS / "seed_sprocket_types.json"
EVERY_TIME = (0, 2**40)


def write(path: Path, document: Any) -> Path:
    path.write_bytes(orjson.dumps(document))
    return path


def chart(points: list[tuple[int, int, int]]) -> dict[str, list[int]]:
    """chart_data from (time, actual, goal) points, in the order given."""
    return {
        "sprocket_production_actual": [actual for _, actual, _ in points],
        "sprocket_production_goal": [goal for _, _, goal in points],
        "time": [time for time, _, _ in points],
    }


def factory_file(path: Path, factories: int, points: int) -> Path:
    """`factories` factories of `points` points a minute apart, in the seed format."""
    items = [
        {"factory": {"chart_data": chart([(60 * i, f, i) for i in range(points)])}} for f in range(1, factories + 1)
    ]
    return write(path, {"factories": items})


async def sprockets_json(store: Store) -> list[dict[str, Any]]:
    """The first page of sprockets as the API shows them."""
    page, _ = await store.list_sprockets(0, 100)
    return orjson.loads(orjson.dumps(page))  # type: ignore[no-any-return]


async def factories_json(store: Store) -> list[dict[str, Any]]:
    factories, _ = await store.list_factories(0, 1000, *EVERY_TIME)
    return [orjson.loads(orjson.dumps(factory.as_json())) for factory in factories]


async def seed_records(client: Client) -> dict[str, dict[str, Any]]:
    records: dict[bytes, bytes] = await client.hgetall(keys.SEEDS)  # type: ignore[assignment]
    return {digest.decode(): json.loads(record) for digest, record in records.items()}


async def test_published_seeds_give_factories_and_sprockets_1_to_3_with_the_files_points(store: Store) -> None:
    lines = await seed.load(store, [FACTORY_SEED, SPROCKET_SEED])

    assert lines == [
        f"{FACTORY_SEED}: loaded 3 factories (ids 1-3, 60 points)",
        f"{SPROCKET_SEED}: loaded 3 sprockets (ids 1-3)",
    ]
    expected = json.loads(FACTORY_SEED.read_text())["factories"]
    assert await factories_json(store) == [
        {"id": i, "name": f"Factory {i}", "resolution_s": 1, "chart_data": item["factory"]["chart_data"]}
        for i, item in enumerate(expected, start=1)
    ]
    sprockets = await sprockets_json(store)
    fields = ("id", "teeth", "pitch_diameter", "outside_diameter", "pitch")
    assert [{name: s[name] for name in fields} for s in sprockets] == [
        {"id": i, **item} for i, item in enumerate(json.loads(SPROCKET_SEED.read_text())["sprockets"], start=1)
    ]
    assert {s["created_at"] for s in sprockets} == {s["updated_at"] for s in sprockets}
    assert (await store.get_sprocket(1)).version == 1


async def test_each_loaded_file_is_recorded_by_content_digest(store: Store, redis_client: Client) -> None:
    await seed.load(store, [FACTORY_SEED, SPROCKET_SEED])

    records = await seed_records(redis_client)
    digest = hashlib.sha256(FACTORY_SEED.read_bytes()).hexdigest()
    assert set(records) == {digest, hashlib.sha256(SPROCKET_SEED.read_bytes()).hexdigest()}
    assert records[digest].pop("at").endswith("Z")
    assert records[digest] == {
        "file": str(FACTORY_SEED),
        "kind": "factories",
        "first_id": 1,
        "count": 3,
        "ids_kept": False,
        "state": "done",
    }


async def test_a_rerun_adds_nothing_even_from_a_copy_under_another_name(
    store: Store, redis_client: Client, tmp_path: Path
) -> None:
    await seed.load(store, [FACTORY_SEED, SPROCKET_SEED])
    before = await keyspace(redis_client)
    copy = tmp_path / "copy.json"
    copy.write_bytes(FACTORY_SEED.read_bytes())

    lines = await seed.load(store, [FACTORY_SEED, SPROCKET_SEED, copy])

    paths = [FACTORY_SEED, SPROCKET_SEED, copy]
    assert [line.removeprefix(f"{path}: ")[:14] for line, path in zip(lines, paths, strict=True)] == [
        "already loaded"
    ] * 3
    assert lines[0].startswith(f"{FACTORY_SEED}: already loaded 3 factories (ids 1-3, 60 points) at ")
    assert await keyspace(redis_client) == before
    assert await redis_client.zrange(keys.FACTORY_INDEX, 0, -1) == [b"1", b"2", b"3"]
    assert await redis_client.get(keys.SPROCKET_NEXT_ID) == b"3"


async def test_seeding_a_store_that_has_data_takes_the_next_ids(store: Store, tmp_path: Path) -> None:
    await store.create_factory(await store.new_factory_ids(), "Existing", {})
    await store.create_sprocket({"teeth": 9, "pitch_diameter": 2.0, "outside_diameter": 3.0, "pitch": 1.0})

    lines = await seed.load(store, [FACTORY_SEED, SPROCKET_SEED])

    assert lines[0] == f"{FACTORY_SEED}: loaded 3 factories (ids 2-4, 60 points)"
    assert lines[1] == f"{SPROCKET_SEED}: loaded 3 sprockets (ids 2-4)"
    assert [f["name"] for f in await factories_json(store)] == ["Existing", "Factory 2", "Factory 3", "Factory 4"]


def dying_on_chunk(store: Store, monkeypatch: pytest.MonkeyPatch, chunk: int) -> Callable[..., Awaitable[int]]:
    """Make the store's write_points fail as a killed connection would on its `chunk`-th call (from 1);
    returns the real one, to put back for the rerun."""
    write_points = store.write_points
    calls = 0

    async def dies(factory_id: int, buckets: Buckets) -> int:
        nonlocal calls
        calls += 1
        if calls == chunk:
            raise redis.ConnectionError("killed")
        return await write_points(factory_id, buckets)

    monkeypatch.setattr(store, "write_points", dies)
    return write_points


async def test_an_interrupted_factory_load_converges_on_rerun_into_the_same_ids(
    store: Store, redis_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seed, "CHUNK_POINTS", 100)
    path = factory_file(tmp_path / "big.json", factories=2, points=1000)
    write_points = dying_on_chunk(store, monkeypatch, 3)
    with pytest.raises(redis.ConnectionError):
        await seed.load(store, [path])
    [record] = (await seed_records(redis_client)).values()
    assert (record["state"], record["first_id"], record["count"]) == ("loading", 1, 2)
    # Someone creates a factory before the rerun: the reserved ids stay the seed's.
    assert await store.new_factory_ids() == 3
    await store.create_factory(3, "Meanwhile", {})

    assert await seed.unfinished(store, [FACTORY_SEED, path]) == [path]
    monkeypatch.setattr(store, "write_points", write_points)
    lines = await seed.load(store, [path])

    assert lines == [f"{path}: finished an interrupted load of 2 factories (ids 1-2, 2000 points)"]
    assert await factories_json(store) == [
        {"id": 1, "name": "Factory 1", "resolution_s": 1, "chart_data": chart([(60 * i, 1, i) for i in range(1000)])},
        {"id": 2, "name": "Factory 2", "resolution_s": 1, "chart_data": chart([(60 * i, 2, i) for i in range(1000)])},
        {"id": 3, "name": "Meanwhile", "resolution_s": 1, "chart_data": chart([])},
    ]
    assert await redis_client.get(keys.FACTORY_NEXT_ID) == b"3"
    assert [r["state"] for r in (await seed_records(redis_client)).values()] == ["done"]
    assert await seed.unfinished(store, [path]) == []


async def test_an_interrupted_sprocket_load_converges_on_rerun_into_the_same_ids(
    store: Store, redis_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seed, "SPROCKET_BATCH", 2)
    sprockets = [{"teeth": t, "pitch_diameter": 1.5, "outside_diameter": 2.5, "pitch": 0.5} for t in range(1, 6)]
    path = write(tmp_path / "sprockets.json", {"sprockets": sprockets})
    put_sprockets = store.put_sprockets

    async def dies_on_the_second_batch(ids: list[int], batch: list[dict[str, Any]]) -> None:
        if ids[0] > 1:
            raise redis.ConnectionError("killed")
        await put_sprockets(ids, batch)

    monkeypatch.setattr(store, "put_sprockets", dies_on_the_second_batch)
    with pytest.raises(redis.ConnectionError):
        await seed.load(store, [path])
    assert len((await store.list_sprockets(0, 100))[0]) == 2
    monkeypatch.setattr(store, "put_sprockets", put_sprockets)

    assert await seed.load(store, [path]) == [f"{path}: finished an interrupted load of 5 sprockets (ids 1-5)"]
    listed = await sprockets_json(store)
    assert [(s["id"], s["teeth"]) for s in listed] == [(i, i) for i in range(1, 6)]
    assert {(await store.get_sprocket(i)).version for i in range(1, 6)} == {1}
    assert await redis_client.get(keys.SPROCKET_NEXT_ID) == b"5"


async def test_malformed_json_names_file_line_and_column_and_writes_nothing(
    store: Store, redis_client: Client, tmp_path: Path
) -> None:
    await seed.load(store, [SPROCKET_SEED])
    before = await keyspace(redis_client)
    bad = tmp_path / "bad.json"
    bad.write_text('{"sprockets": [\n  {"teeth": 5,}\n]}')

    # A good file listed first is not written either: every file is checked before any write.
    with pytest.raises(SeedError, match=rf"^{bad}: line 2 column 14: not valid JSON: trailing comma"):
        await seed.load(store, [FACTORY_SEED, bad])

    assert await keyspace(redis_client) == before


async def test_a_missing_file_is_a_seed_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(SeedError, match=rf"^{tmp_path}/none.json: cannot read it: No such file"):
        await seed.load(store, [tmp_path / "none.json"])


def factories_with_a_negative_time() -> dict[str, Any]:
    factories = [{"factory": {"chart_data": chart([(60 * i, 1, 1) for i in range(10)])}} for _ in range(3)]
    factories[2]["factory"]["chart_data"]["time"][5] = -60
    return {"factories": factories}


SPROCKET = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            factories_with_a_negative_time(),
            "factories[2].factory.chart_data.time[5]: Input should be greater than or equal to 0",
        ),
        (
            {"factories": [{"chart_data": {**chart([(1, 1, 1)]), "time": [1, 2]}}]},
            "factories[0].chart_data.time: must have as many entries as sprocket_production_actual",
        ),
        ({"factories": [{"factory": {}, "id": 1, "extra": 1}]}, "factories[0].extra: Extra inputs are not permitted"),
        ({"factories": [{"name": ""}]}, "factories[0].name: String should have at least 1 character"),
        (
            {"sprockets": [SPROCKET, {**SPROCKET, "outside_diameter": 5.0}]},
            "sprockets[1].outside_diameter: must be greater than pitch_diameter",
        ),
        ({"sprockets": [{**SPROCKET, "teeth": "5"}]}, "sprockets[0].teeth: Input should be a valid integer"),
        ({"sprockets": [{**SPROCKET, "color": "red"}]}, "sprockets[0].color: Extra inputs are not permitted"),
        ({"sprockets": [{**SPROCKET, "teeth": 5.5}]}, "sprockets[0].teeth: Input should be a valid integer"),
        ({"sprockets": {}}, "sprockets: Input should be a valid list"),
        ({"sprockets": [], "widgets": []}, "widgets: Extra inputs are not permitted"),
        ([SPROCKET], 'must be a JSON object holding a list "factories", "sprockets" or both'),
    ],
    ids=[
        "negative-time",
        "columns-differ",
        "wrapper-extra-field",
        "empty-name",
        "tips-inside-pitch-circle",
        "string-teeth",
        "unknown-field",
        "float-teeth",
        "not-a-list",
        "unknown-top-level",
        "top-level-list",
    ],
)
async def test_a_rule_broken_names_file_and_path_and_writes_nothing(
    store: Store, redis_client: Client, tmp_path: Path, document: Any, message: str
) -> None:
    await seed.load(store, [FACTORY_SEED])
    before = await keyspace(redis_client)
    path = write(tmp_path / "bad.json", document)

    with pytest.raises(SeedError) as raised:
        await seed.load(store, [path])

    assert str(raised.value).startswith(f"{path}: {message}")
    assert await keyspace(redis_client) == before


async def test_every_broken_rule_is_listed_up_to_a_limit(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "bad.json", {"sprockets": [{**SPROCKET, "teeth": 0}] * 50})
    with pytest.raises(SeedError) as raised:
        await seed.load(store, [path])
    lines = str(raised.value).splitlines()
    assert len(lines) == seed.MAX_ERRORS
    assert lines[1] == f"{path}: sprockets[1].teeth: Input should be greater than or equal to 1"


async def test_what_the_api_lists_loads_back_with_its_ids_and_timestamps(
    api: httpx.AsyncClient, redis_client: Client, store: Store, tmp_path: Path
) -> None:
    await seed.load(store, [FACTORY_SEED, SPROCKET_SEED])
    await api.post("/api/v1/factories", json={"name": "Line A", "chart_data": chart([(7200, 5, 6), (60, 1, 2)])})
    await api.delete("/api/v1/sprockets/1")
    # One page with a next_cursor: the cursor is ignored; ids, with their gaps, and timestamps are kept.
    factories = (await api.get("/api/v1/factories", params={"limit": 4})).json()
    sprockets = (await api.get("/api/v1/sprockets", params={"limit": 1})).json()
    assert factories["next_cursor"] is None and sprockets["next_cursor"] is not None
    await redis_client.flushall()

    exported = [write(tmp_path / "factories.json", factories), write(tmp_path / "sprockets.json", sprockets)]
    lines = await seed.load(store, exported)

    assert lines == [
        f"{exported[0]}: loaded 4 factories (ids 1-4, 62 points)",
        f"{exported[1]}: loaded 1 sprocket (id 2)",
    ]
    assert (await api.get("/api/v1/factories")).json() == factories
    assert (await api.get("/api/v1/sprockets")).json()["sprockets"] == sprockets["sprockets"]
    # The counters moved past the kept ids.
    assert (await api.post("/api/v1/factories", json={})).json()["id"] == 5
    assert (await api.post("/api/v1/sprockets", json=SPROCKET)).json()["id"] == 3


async def test_a_file_of_both_lists_loads_both_once(store: Store, redis_client: Client, tmp_path: Path) -> None:
    both = {"factories": [{"name": "A"}, {"name": "B"}], "sprockets": [SPROCKET]}
    path = write(tmp_path / "both.json", both)

    assert await seed.load(store, [path]) == [
        f"{path}: loaded 2 factories (ids 1-2, 0 points)",
        f"{path}: loaded 1 sprocket (id 1)",
    ]
    [again_factories, again_sprockets] = await seed.load(store, [path])

    assert again_factories.startswith(f"{path}: already loaded 2 factories")
    assert again_sprockets.startswith(f"{path}: already loaded 1 sprocket")
    assert len(await seed_records(redis_client)) == 2


async def test_a_file_that_keeps_ids_is_refused_where_one_is_taken_and_writes_nothing(
    store: Store, redis_client: Client, tmp_path: Path
) -> None:
    await store.create_sprocket(SPROCKET)
    before = await keyspace(redis_client)
    both = {"factories": [{"id": 7, "name": "A"}], "sprockets": [{"id": 4, **SPROCKET}, {"id": 1, **SPROCKET}]}
    path = write(tmp_path / "export.json", both)

    with pytest.raises(SeedError, match=rf"^{path}: sprockets 1 exist already: a list that keeps its ids"):
        await seed.load(store, [path])

    assert await keyspace(redis_client) == before


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"id": 1, **SPROCKET}, SPROCKET], "sprockets: every item has an id (they are kept) or none has"),
        ([{"id": 2, **SPROCKET}, {"id": 2, **SPROCKET}], "sprockets: an id appears twice"),
        ([{"id": 0, **SPROCKET}], "sprockets[0].id: must be a whole number from 1 to 9223372036854775807"),
        ([{"id": "1", **SPROCKET}], "sprockets[0].id: must be a whole number"),
        ([{"id": 1, **SPROCKET, "created_at": "yesterday"}], "sprockets[0].created_at: must be an RFC 3339 time"),
    ],
    ids=["some-ids", "repeated-id", "zero", "string-id", "bad-time"],
)
async def test_bad_ids_and_times_are_refused_before_anything_is_written(
    store: Store, redis_client: Client, tmp_path: Path, items: list[Any], message: str
) -> None:
    path = write(tmp_path / "bad.json", {"sprockets": items})
    with pytest.raises(SeedError, match=rf"^{path}: {re.escape(message)}"):
        await seed.load(store, [path])
    assert await redis_client.dbsize() == 0


async def test_out_of_order_times_end_up_ordered_and_a_repeated_time_keeps_the_last(
    store: Store, tmp_path: Path
) -> None:
    points = [(t, t % 7, t % 5) for t in range(0, 3 * 3600, 90)]
    shuffled = random.Random(4).sample(points, len(points))
    path = write(tmp_path / "shuffled.json", {"factories": [{"chart_data": chart([*shuffled, (90, 99, 99)])}]})

    await seed.load(store, [path])

    [factory] = await factories_json(store)
    expected = sorted(points)
    expected[1] = (90, 99, 99)
    assert factory["chart_data"] == chart(expected)


async def test_big_factories_are_written_in_chunks_with_progress(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seed, "CHUNK_POINTS", 1000)
    path = factory_file(tmp_path / "big.json", factories=1, points=20_000)
    messages: list[str] = []

    assert await seed.load(store, [path], messages.append) == [f"{path}: loaded 1 factory (id 1, 20000 points)"]

    assert messages[0].startswith(f"{path}: read 1 factory, 20000 points in ")
    written = [m for m in messages if m.endswith("points written")]
    assert 10 <= len(written) <= 20
    assert written[-1] == f"{path}: 20000/20000 points written"
    assert len((await store.get_factory(1, *EVERY_TIME)).points.time) == 20_000


async def test_an_empty_list_loads_as_nothing_and_is_recorded(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path / "empty.json", {"factories": [], "next_cursor": None})
    assert await seed.load(store, [path]) == [f"{path}: loaded 0 factories"]
    [again] = await seed.load(store, [path])
    assert again.startswith(f"{path}: already loaded 0 factories at ")
