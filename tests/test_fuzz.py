"""Arbitrary bodies at every write endpoint: never a 5xx, and a refusal writes nothing."""

import asyncio
import json
from typing import Any

import fakeredis
import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from sprockets_cache.http.app import create_app
from sprockets_cache.settings import Settings
from tests.conftest import keyspace, lifespan

SPROCKET = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}
CHART = {"sprocket_production_actual": [1], "sprocket_production_goal": [2], "time": [3]}
WRITES = [
    ("POST", "/api/v1/sprockets"),
    ("PUT", "/api/v1/sprockets/1"),
    ("PATCH", "/api/v1/sprockets/1"),
    ("POST", "/api/v1/factories"),
    ("POST", "/api/v1/factories/1/chart_data"),
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from([*SPROCKET, *CHART, "name", "chart_data", "x"]), inner, max_size=5)
    ),
    max_leaves=20,
)
# Bodies that are nearly right: one field of a valid body replaced by anything.
near_misses = st.one_of(
    st.builds(lambda k, v: {**SPROCKET, k: v}, st.sampled_from(list(SPROCKET)), json_values),
    st.builds(lambda k, v: {**CHART, k: v}, st.sampled_from(list(CHART)), json_values),
    st.builds(lambda v: {"name": "F", "chart_data": v}, json_values),
)
# json, not orjson: it writes integers past 64 bits, and Infinity.
bodies = st.one_of(st.binary(max_size=64), st.one_of(json_values, near_misses).map(lambda v: json.dumps(v).encode()))


async def exchange(method: str, path: str, body: bytes, content_type: str) -> tuple[int, Any, Any]:
    redis = fakeredis.FakeAsyncRedis()
    async with lifespan(create_app(Settings(), redis)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
            await api.post("/api/v1/sprockets", json=SPROCKET)
            await api.post("/api/v1/factories", json={"chart_data": CHART})
            before = await keyspace(redis)
            response = await api.request(method, path, content=body, headers={"Content-Type": content_type})
            after = await keyspace(redis)
    await redis.aclose()
    return response.status_code, before, after


@settings(max_examples=150, deadline=None)
@given(
    write=st.sampled_from(WRITES),
    body=bodies,
    content_type=st.sampled_from(["application/json", "application/merge-patch+json", "text/plain"]),
)
def test_no_body_gets_a_5xx_and_a_refused_one_changes_nothing(
    write: tuple[str, str], body: bytes, content_type: str
) -> None:
    status, before, after = asyncio.run(exchange(*write, body, content_type))
    assert status < 500
    if status >= 400:
        assert before == after
