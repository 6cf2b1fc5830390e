import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sprockets_cache.store.connections import Client

URL = "/api/v1/factories"
SEED = json.loads((Path(__file__).parent.parent / "seeds" / "seed_factory_data.json").read_text())
SEED_CHART = SEED["factories"][0]["factory"]["chart_data"]


def chart(*points: tuple[int, int, int]) -> dict[str, list[int]]:
    """chart_data from (time, actual, goal) points, in the order given."""
    return {
        "sprocket_production_actual": [actual for _, actual, _ in points],
        "sprocket_production_goal": [goal for _, _, goal in points],
        "time": [time for time, _, _ in points],
    }


async def create(api: httpx.AsyncClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await api.post(URL, json=body if body is not None else {})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_create_with_seed_chart_data_reads_back_equal(api: httpx.AsyncClient) -> None:
    response = await api.post(URL, json={"name": "Line A", "chart_data": SEED_CHART})
    assert response.status_code == 201
    assert response.headers["location"] == f"{URL}/1"
    created = response.json()
    assert created == {"id": 1, "name": "Line A", "resolution_s": 1, "chart_data": SEED_CHART}
    assert (await api.get(f"{URL}/1")).json() == created


async def test_create_with_no_body_fields_names_the_factory_by_id(api: httpx.AsyncClient) -> None:
    await create(api)
    second = await create(api)
    assert second == {"id": 2, "name": "Factory 2", "resolution_s": 1, "chart_data": chart()}


async def test_points_written_out_of_order_read_back_ordered_by_time(api: httpx.AsyncClient) -> None:
    await create(api)
    # Times span several buckets (an hour each) and arrive in no order, with one repeated in the batch.
    batch = chart((7300, 3, 4), (60, 1, 2), (3600, 5, 6), (60, 9, 9), (3599, 7, 8))
    response = await api.post(f"{URL}/1/chart_data", json=batch)
    assert response.status_code == 200
    assert response.json() == {"written": 4}
    body = (await api.get(f"{URL}/1")).json()
    assert body["chart_data"] == chart((60, 9, 9), (3599, 7, 8), (3600, 5, 6), (7300, 3, 4))


async def test_writing_at_an_existing_time_replaces_the_point(api: httpx.AsyncClient) -> None:
    await create(api, {"chart_data": chart((100, 1, 1), (200, 2, 2), (300, 3, 3))})
    await api.post(f"{URL}/1/chart_data", json=chart((200, 20, 21), (250, 5, 5), (50, 0, 0)))
    body = (await api.get(f"{URL}/1")).json()
    assert body["chart_data"] == chart((50, 0, 0), (100, 1, 1), (200, 20, 21), (250, 5, 5), (300, 3, 3))


async def test_appending_later_points_keeps_earlier_ones(api: httpx.AsyncClient) -> None:
    await create(api)
    for time in range(0, 600, 60):
        await api.post(f"{URL}/1/chart_data", json=chart((time, time // 60, 10)))
    body = (await api.get(f"{URL}/1")).json()
    assert body["chart_data"]["time"] == list(range(0, 600, 60))
    assert body["chart_data"]["sprocket_production_actual"] == list(range(10))


@pytest.mark.parametrize(
    ("query", "times"),
    [
        ("from=3600&to=7200", [3600, 5000, 7200]),
        ("from=3601", [5000, 7200, 7201, 90000]),
        ("to=3599", [0, 3599]),
        ("from=5000&to=5000", [5000]),
        ("from=91000", []),
        ("", [0, 3599, 3600, 5000, 7200, 7201, 90000]),
    ],
)
async def test_from_and_to_select_points_inclusively(api: httpx.AsyncClient, query: str, times: list[int]) -> None:
    points = [(t, 1, 2) for t in (0, 3599, 3600, 5000, 7200, 7201, 90000)]
    await create(api, {"chart_data": chart(*points)})
    one = (await api.get(f"{URL}/1?{query}")).json()
    every = (await api.get(f"{URL}?{query}")).json()
    assert one["chart_data"]["time"] == times
    assert every["factories"][0]["chart_data"]["time"] == times


@pytest.mark.parametrize("query", ["from=-1", "to=x", "from=10&to=9", "from=1.5", f"to={10**13}"])
async def test_a_bad_time_range_is_422(api: httpx.AsyncClient, query: str) -> None:
    await create(api)
    for url in (f"{URL}/1?{query}", f"{URL}?{query}", f"{URL}/1/summary?{query}"):
        response = await api.get(url)
        assert response.status_code == 422, url
        assert response.json()["errors"][0]["field"].startswith("query.")


async def test_list_returns_all_factories_in_id_order_and_pages(api: httpx.AsyncClient) -> None:
    for n in range(5):
        await create(api, {"name": f"F{n}", "chart_data": chart((n, n, n))})
    everything = (await api.get(URL)).json()
    assert [f["name"] for f in everything["factories"]] == ["F0", "F1", "F2", "F3", "F4"]
    assert everything["next_cursor"] is None
    first = (await api.get(f"{URL}?limit=2")).json()
    second = (await api.get(f"{URL}?limit=2&cursor={first['next_cursor']}")).json()
    third = (await api.get(f"{URL}?limit=2&cursor={second['next_cursor']}")).json()
    assert [f["id"] for f in first["factories"] + second["factories"] + third["factories"]] == [1, 2, 3, 4, 5]
    assert third["next_cursor"] is None


async def test_summary_totals_the_selected_points(api: httpx.AsyncClient) -> None:
    await create(api, {"chart_data": chart((10, 30, 32), (20, 29, 30), (30, 31, 31), (40, 0, 0))})
    summary = (await api.get(f"{URL}/1/summary?from=15&to=30")).json()
    assert summary == {
        "id": 1,
        "points": 2,
        "actual_total": 60,
        "goal_total": 61,
        "attainment": 60 / 61,
        "first_time": 20,
        "last_time": 30,
    }


async def test_summary_of_no_points_or_no_goal_has_null_attainment(api: httpx.AsyncClient) -> None:
    await create(api, {"chart_data": chart((10, 5, 0))})
    empty = (await api.get(f"{URL}/1/summary?from=11")).json()
    assert empty == {
        "id": 1,
        "points": 0,
        "actual_total": 0,
        "goal_total": 0,
        "attainment": None,
        "first_time": None,
        "last_time": None,
    }
    assert (await api.get(f"{URL}/1/summary")).json()["attainment"] is None


async def test_factory_etag_changes_when_a_point_is_written(api: httpx.AsyncClient) -> None:
    await create(api, {"chart_data": chart((10, 1, 1))})
    etag = (await api.get(f"{URL}/1")).headers["etag"]
    assert (await api.get(f"{URL}/1", headers={"If-None-Match": etag})).status_code == 304
    await api.post(f"{URL}/1/chart_data", json=chart((20, 1, 1)))
    assert (await api.get(f"{URL}/1", headers={"If-None-Match": etag})).status_code == 200


@pytest.mark.parametrize(
    "path", [f"{URL}/2", f"{URL}/2?from=0&to=7200", f"{URL}/0", f"{URL}/2/summary", f"{URL}/{2**63}"]
)
async def test_unknown_factory_is_404(api: httpx.AsyncClient, path: str) -> None:
    await create(api)
    assert (await api.get(path)).status_code == 404


async def test_writing_points_to_an_unknown_factory_is_404_and_writes_nothing(
    api: httpx.AsyncClient, redis_client: Client
) -> None:
    before = sorted(await redis_client.keys("*"))
    response = await api.post(f"{URL}/9/chart_data", json=chart((10, 1, 1)))
    assert response.status_code == 404
    assert sorted(await redis_client.keys("*")) == before


BAD_CHARTS = [
    ({**chart((10, 1, 1)), "time": [-1]}, "time.0"),
    ({**chart((10, 1, 1)), "time": [1.5]}, "time.0"),
    ({**chart((10, 1, 1)), "time": [True]}, "time.0"),
    ({**chart((10, 1, 1)), "sprocket_production_actual": [1e300]}, "sprocket_production_actual.0"),
    ({**chart((10, 1, 1), (20, 1, 1)), "time": [10.0, 20.5]}, "time.1"),
    ({**chart((10, 1, 1)), "time": ["10"]}, "time.0"),
    ({**chart((10, 1, 1)), "sprocket_production_actual": [-3]}, "sprocket_production_actual.0"),
    ({**chart((10, 1, 1)), "sprocket_production_goal": [2**32]}, "sprocket_production_goal.0"),
    ({**chart((10, 1, 1)), "sprocket_production_goal": [None]}, "sprocket_production_goal.0"),
    ({**chart((10, 1, 1), (20, 1, 1)), "time": [10]}, "time"),
    ({**chart((10, 1, 1)), "extra": []}, "extra"),
    ({"time": [1], "sprocket_production_actual": [1]}, "sprocket_production_goal"),
    ({**chart(), "time": 5}, "time"),
]


@pytest.mark.parametrize(("body", "field"), BAD_CHARTS, ids=[f"{field}-{i}" for i, (_, field) in enumerate(BAD_CHARTS)])
async def test_bad_chart_data_is_422_naming_the_field_and_writes_nothing(
    api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    await create(api, {"chart_data": chart((5, 5, 5))})
    written = await api.post(f"{URL}/1/chart_data", json=body)
    created = await api.post(URL, json={"chart_data": body})
    assert written.status_code == created.status_code == 422
    assert field in [error["field"] for error in written.json()["errors"]]
    assert f"chart_data.{field}" in [error["field"] for error in created.json()["errors"]]
    assert (await api.get(URL)).json()["factories"] == [
        {"id": 1, "name": "Factory 1", "resolution_s": 1, "chart_data": chart((5, 5, 5))}
    ]


async def test_numbers_with_a_zero_fraction_are_the_integers_they_equal(api: httpx.AsyncClient) -> None:
    # JSON Schema, and so the OpenAPI document, counts 352.0 as an integer: the server takes it as one.
    floats = {"time": [352.0, 10.0], "sprocket_production_actual": [7.0, 3], "sprocket_production_goal": [8.0, 4.0]}
    created = await api.post(URL, json={"chart_data": floats})
    assert created.status_code == 201, created.text
    # Compared as text too: in Python 352.0 == 352, on the wire they differ.
    assert b'"time":[10,352]' in created.content
    assert created.json()["chart_data"] == chart((10, 3, 4), (352, 7, 8))
    written = await api.post(f"{URL}/1/chart_data", json={**chart((352, 0, 0)), "time": [352.0]})
    assert written.json() == {"written": 1}
    read = await api.get(f"{URL}/1")
    assert b'"sprocket_production_actual":[3,0]' in read.content
    assert read.json()["chart_data"] == chart((10, 3, 4), (352, 0, 0))


@pytest.mark.parametrize(
    "body", [{"name": ""}, {"name": 5}, {"name": "x" * 201}, {"id": 3}, {"chart_data": None, "x": 1}, []]
)
async def test_bad_factory_body_is_422_and_creates_nothing(api: httpx.AsyncClient, body: Any) -> None:
    assert (await api.post(URL, json=body)).status_code == 422
    assert (await api.get(URL)).json()["factories"] == []


async def test_more_points_than_the_limit_is_413_and_writes_nothing(api: httpx.AsyncClient) -> None:
    await create(api)
    too_many = chart(*((t, 1, 1) for t in range(1001)))  # the test settings allow 1,000 a write
    response = await api.post(f"{URL}/1/chart_data", json=too_many)
    assert response.status_code == 413
    assert (await api.post(URL, json={"chart_data": too_many})).status_code == 413
    assert (await api.get(f"{URL}/1")).json()["chart_data"]["time"] == []
    assert len((await api.get(URL)).json()["factories"]) == 1


async def test_a_read_of_more_points_than_a_response_may_hold_is_422(api: httpx.AsyncClient) -> None:
    await create(api)
    for start in (0, 1000):  # the test settings allow 1,000 points a write and 1,500 a response
        await api.post(f"{URL}/1/chart_data", json=chart(*((t, 1, 1) for t in range(start, start + 1000))))
    # Read by the script (all of time) and by a transaction of the buckets the range names (two hours).
    for too_many in (await api.get(f"{URL}/1"), await api.get(f"{URL}/1?from=0&to=7200")):
        assert too_many.status_code == 422
        assert too_many.json()["errors"][0]["field"] == "query.from"
    assert (await api.get(URL)).status_code == 422
    narrowed = await api.get(f"{URL}/1?from=500&to=1999")
    assert len(narrowed.json()["chart_data"]["time"]) == 1500
    assert (await api.get(f"{URL}/1/summary")).json()["points"] == 2000


async def test_a_page_of_factories_ends_early_rather_than_hold_too_many_points(api: httpx.AsyncClient) -> None:
    for _ in range(3):
        await create(api, {"chart_data": chart(*((t, 1, 1) for t in range(600)))})
    first = (await api.get(URL)).json()
    assert [f["id"] for f in first["factories"]] == [1, 2]
    rest = (await api.get(f"{URL}?cursor={first['next_cursor']}")).json()
    assert [f["id"] for f in rest["factories"]] == [3]
    assert rest["next_cursor"] is None


async def test_a_retried_factory_create_with_an_idempotency_key_creates_one(api: httpx.AsyncClient) -> None:
    body = {"name": "Plant", "chart_data": chart((1, 2, 3))}
    first = await api.post(URL, json=body, headers={"Idempotency-Key": "abc"})
    retry = await api.post(URL, json=body, headers={"Idempotency-Key": "abc"})
    assert retry.status_code == 201
    assert retry.json() == first.json()
    assert len((await api.get(URL)).json()["factories"]) == 1


async def test_concurrent_batches_into_one_factory_all_land(real_api: httpx.AsyncClient) -> None:
    await create(real_api)
    batches = [chart(*((t, w, w) for t in range(w, 7000, 7))) for w in range(7)]
    responses = await asyncio.gather(*(real_api.post(f"{URL}/1/chart_data", json=b) for b in batches))
    assert {r.status_code for r in responses} == {200}
    times = []
    for start in range(0, 7000, 1400):  # a response holds at most 1,500 points in the test settings
        page = (await real_api.get(f"{URL}/1?from={start}&to={start + 1399}")).json()
        times += page["chart_data"]["time"]
    assert times == list(range(7000))


async def test_points_are_sorted_sets_an_operator_can_read(api: httpx.AsyncClient, redis_client: Client) -> None:
    await create(api, {"chart_data": chart((60, 1, 2), (7260, 3, 4), (7200, 5, 6))})
    await api.post(f"{URL}/1/chart_data", json=chart((7260, 7, 8)))
    assert await redis_client.zrange("sc:{factory:1}:buckets", 0, -1) == [b"0", b"2"]
    assert await redis_client.hget("sc:{factory:1}:meta", "name") == b"Factory 1"
    assert await redis_client.zrangebyscore("sc:{factory:1}:points:2", 7200, 7299, withscores=True) == [
        (b"7200:5:6", 7200.0),
        (b"7260:7:8", 7260.0),
    ]


async def test_each_write_of_points_adds_one_event_to_the_factory_stream(
    api: httpx.AsyncClient, redis_client: Client
) -> None:
    await create(api, {"chart_data": chart((60, 1, 2))})
    await api.post(f"{URL}/1/chart_data", json=chart((7300, 3, 4), (120, 5, 6)))
    etag = (await api.get(f"{URL}/1")).headers["etag"]
    assert (await api.post(f"{URL}/1/chart_data", json=chart())).json() == {"written": 0}
    assert (await api.get(f"{URL}/1")).headers["etag"] == etag
    events = await redis_client.xrange("sc:{factory:1}:events")
    assert [fields for _, fields in events] == [
        {b"version": b"1", b"first": b"60", b"last": b"60", b"points": b"1"},
        {b"version": b"2", b"first": b"120", b"last": b"7300", b"points": b"2"},
    ]


async def test_bucket_sums_actual_and_goal_per_span_of_seconds(api: httpx.AsyncClient) -> None:
    await create(api, {"chart_data": chart((0, 1, 2), (59, 3, 4), (60, 5, 6), (3600, 7, 8), (3659, 9, 10))})
    hourly = (await api.get(f"{URL}/1?bucket=3600")).json()["chart_data"]
    assert hourly == chart((0, 9, 12), (3600, 16, 18))
    minutes = (await api.get(f"{URL}?bucket=60&from=59")).json()["factories"][0]["chart_data"]
    assert minutes == chart((0, 3, 4), (60, 5, 6), (3600, 16, 18))
    assert (await api.get(f"{URL}/1?bucket=0")).status_code == 422
