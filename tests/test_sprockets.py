import asyncio
from typing import Any

import httpx
import pytest

from sprockets_cache.settings import Settings
from sprockets_cache.store.connections import Client
from tests.conftest import serve

SPROCKET = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}
URL = "/api/v1/sprockets"


async def create(api: httpx.AsyncClient, **changes: Any) -> httpx.Response:
    response = await api.post(URL, json={**SPROCKET, **changes})
    assert response.status_code == 201, response.text
    return response


def fields(body: dict[str, Any]) -> dict[str, Any]:
    return {name: body[name] for name in SPROCKET}


async def test_create_returns_the_sprocket_with_location_and_etag(api: httpx.AsyncClient) -> None:
    response = await create(api)
    body = response.json()
    assert fields(body) == SPROCKET
    assert body["id"] == 1
    assert body["created_at"] == body["updated_at"]
    assert response.headers["location"] == f"{URL}/1"
    assert response.headers["etag"] == '"1"'
    assert (await api.get(response.headers["location"])).json() == body


async def test_lengths_sent_as_whole_numbers_are_stored_and_answered_as_decimals(api: httpx.AsyncClient) -> None:
    response = await create(api, pitch_diameter=5, outside_diameter=6, pitch=1)
    stored = (await api.get(response.headers["location"])).content
    for answer in (response.content, stored):
        assert b'"pitch_diameter":5.0,"outside_diameter":6.0,"pitch":1.0' in answer


async def test_get_then_if_none_match_is_304_until_the_sprocket_changes(api: httpx.AsyncClient) -> None:
    await create(api)
    first = await api.get(f"{URL}/1")
    assert first.status_code == 200
    etag = first.headers["etag"]
    cached = await api.get(f"{URL}/1", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    await api.put(f"{URL}/1", json={**SPROCKET, "teeth": 9})
    changed = await api.get(f"{URL}/1", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["teeth"] == 9
    assert changed.headers["etag"] != etag


async def test_a_tooth_count_with_a_zero_fraction_is_that_integer_in_every_write(api: httpx.AsyncClient) -> None:
    created = await api.post(URL, json={**SPROCKET, "teeth": 12.0})
    assert created.status_code == 201, created.text
    assert b'"teeth":12,' in created.content
    replaced = await api.put(f"{URL}/1", json={**SPROCKET, "teeth": 13.0})
    assert b'"teeth":13,' in replaced.content
    patched = await api.patch(f"{URL}/1", json={"teeth": 14.0})
    assert b'"teeth":14,' in patched.content
    assert (await api.get(f"{URL}/1")).json()["teeth"] == 14
    assert (await api.patch(f"{URL}/1", json={"teeth": 14.5})).status_code == 422


async def test_put_replaces_every_field_and_keeps_created_at(api: httpx.AsyncClient) -> None:
    created = (await create(api)).json()
    replacement = {"teeth": 12, "pitch_diameter": 10.5, "outside_diameter": 11.25, "pitch": 2.0}
    response = await api.put(f"{URL}/1", json=replacement)
    assert response.status_code == 200
    body = response.json()
    assert fields(body) == replacement
    assert body["created_at"] == created["created_at"]
    assert response.headers["etag"] == '"2"'
    assert (await api.get(f"{URL}/1")).json() == body


async def test_put_of_an_unknown_id_is_404_and_creates_nothing(api: httpx.AsyncClient) -> None:
    response = await api.put(f"{URL}/7", json=SPROCKET)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert (await api.get(f"{URL}/7")).status_code == 404
    assert (await api.get(URL)).json()["sprockets"] == []


async def test_stale_if_match_is_412_and_changes_nothing(api: httpx.AsyncClient) -> None:
    await create(api)
    assert (await api.put(f"{URL}/1", json={**SPROCKET, "teeth": 6}, headers={"If-Match": '"1"'})).status_code == 200
    for method in ("PUT", "PATCH"):
        stale = await api.request(method, f"{URL}/1", json={**SPROCKET, "teeth": 7}, headers={"If-Match": '"1"'})
        assert stale.status_code == 412, method
    assert (await api.delete(f"{URL}/1", headers={"If-Match": '"1"'})).status_code == 412
    current = await api.get(f"{URL}/1")
    assert current.json()["teeth"] == 6
    assert current.headers["etag"] == '"2"'


async def test_if_match_star_or_the_current_etag_lets_the_write_through(api: httpx.AsyncClient) -> None:
    await create(api)
    assert (await api.put(f"{URL}/1", json=SPROCKET, headers={"If-Match": "*"})).status_code == 200
    assert (await api.patch(f"{URL}/1", json={"teeth": 8}, headers={"If-Match": '"5", "2"'})).status_code == 200
    assert (await api.delete(f"{URL}/1", headers={"If-Match": '"3"'})).status_code == 204


async def test_patch_changes_only_the_named_fields(api: httpx.AsyncClient) -> None:
    await create(api)
    response = await api.patch(
        f"{URL}/1", content=b'{"teeth": 40}', headers={"Content-Type": "application/merge-patch+json"}
    )
    assert response.status_code == 200
    assert fields(response.json()) == {**SPROCKET, "teeth": 40}
    assert response.headers["etag"] == '"2"'


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"pitch_diameter": 7.0}, "outside_diameter"),
        ({"teeth": None}, "teeth"),
        ({"teeth": 0}, "teeth"),
        ({"colour": "red"}, "colour"),
        ({"id": 2}, "id"),
        ([], ""),
    ],
    ids=["breaks-diameter-rule", "null-removes-a-required-field", "zero-teeth", "unknown-field", "id", "not-object"],
)
async def test_patch_that_breaks_a_rule_is_422_and_changes_nothing(
    api: httpx.AsyncClient, patch: Any, field: str
) -> None:
    created = (await create(api)).json()
    response = await api.patch(f"{URL}/1", json=patch)
    assert response.status_code == 422
    assert field in [error["field"] for error in response.json()["errors"]]
    assert (await api.get(f"{URL}/1")).json() == created


async def test_delete_removes_the_sprocket_and_a_second_delete_is_404(api: httpx.AsyncClient) -> None:
    await create(api)
    assert (await api.delete(f"{URL}/1")).status_code == 204
    assert (await api.get(f"{URL}/1")).status_code == 404
    assert (await api.delete(f"{URL}/1")).status_code == 404
    assert (await api.get(URL)).json()["sprockets"] == []


async def test_list_pages_in_id_order_with_a_cursor(api: httpx.AsyncClient) -> None:
    for teeth in range(1, 8):
        await create(api, teeth=teeth)
    seen = []
    url = f"{URL}?limit=3"
    while True:
        body = (await api.get(url)).json()
        seen += [sprocket["teeth"] for sprocket in body["sprockets"]]
        if body["next_cursor"] is None:
            break
        url = f"{URL}?limit=3&cursor={body['next_cursor']}"
    assert seen == list(range(1, 8))


async def test_a_page_with_more_after_it_links_to_the_next_page(api: httpx.AsyncClient) -> None:
    for teeth in range(1, 4):
        await create(api, teeth=teeth)
    first = await api.get(f"{URL}?limit=2")
    cursor = first.json()["next_cursor"]
    assert first.headers["link"] == f'<{URL}?limit=2&cursor={cursor}>; rel="next"'
    last = await api.get(first.links["next"]["url"])
    assert [s["teeth"] for s in last.json()["sprockets"]] == [3]
    assert "link" not in last.headers


async def test_cursor_skips_nothing_when_items_are_deleted_and_added_between_pages(api: httpx.AsyncClient) -> None:
    for teeth in range(1, 6):
        await create(api, teeth=teeth)
    first = (await api.get(f"{URL}?limit=2")).json()
    await api.delete(f"{URL}/2")
    await api.delete(f"{URL}/3")
    await create(api, teeth=6)
    rest = (await api.get(f"{URL}?limit=10&cursor={first['next_cursor']}")).json()
    assert [s["id"] for s in first["sprockets"]] == [1, 2]
    assert [s["id"] for s in rest["sprockets"]] == [4, 5, 6]


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=-1", "limit=ten"])
async def test_limit_out_of_range_is_422(api: httpx.AsyncClient, query: str) -> None:
    response = await api.get(f"{URL}?{query}")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.limit"


@pytest.mark.parametrize("cursor", ["!!!", "bm90LWEtbnVtYmVy", "YWZ0ZXI6LTE", "%00"])
async def test_a_cursor_the_api_did_not_give_is_400(api: httpx.AsyncClient, cursor: str) -> None:
    response = await api.get(f"{URL}?cursor={cursor}")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


BAD_BODIES = [
    ({**SPROCKET, "teeth": 0}, "teeth"),
    ({**SPROCKET, "teeth": 5.5}, "teeth"),
    ({**SPROCKET, "teeth": "5"}, "teeth"),
    ({**SPROCKET, "teeth": True}, "teeth"),
    ({**SPROCKET, "teeth": 2**40}, "teeth"),
    ({**SPROCKET, "pitch": 0}, "pitch"),
    ({**SPROCKET, "pitch": -1.5}, "pitch"),
    ({**SPROCKET, "pitch": None}, "pitch"),
    ({**SPROCKET, "outside_diameter": 5.0}, "outside_diameter"),
    ({**SPROCKET, "outside_diameter": 4.0}, "outside_diameter"),
    ({**SPROCKET, "colour": "red"}, "colour"),
    ({**SPROCKET, "id": 9}, "id"),
    ({"teeth": 5}, "pitch"),
    ([SPROCKET], ""),
    ("sprocket", ""),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES, ids=[f"{field}-{i}" for i, (_, field) in enumerate(BAD_BODIES)])
async def test_a_body_that_breaks_a_rule_is_422_naming_the_field_and_writes_nothing(
    api: httpx.AsyncClient, body: Any, field: str
) -> None:
    for response in (await api.post(URL, json=body), await api.put(f"{URL}/1", json=body)):
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == 422
        assert field in [error["field"] for error in problem["errors"]]
    assert (await api.get(URL)).json()["sprockets"] == []


@pytest.mark.parametrize(
    "raw",
    [b"{", b"", b'{"teeth": NaN}', b'{"pitch": Infinity}', b'{"pitch": 1e400}', b"[" * 2000, b"\xff\xfe"],
    ids=["truncated", "empty", "nan", "infinity", "overflow", "deep", "not-utf8"],
)
async def test_malformed_json_is_400_and_writes_nothing(api: httpx.AsyncClient, raw: bytes) -> None:
    response = await api.post(URL, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert (await api.get(URL)).json()["sprockets"] == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_in_another_media_type_is_415(api: httpx.AsyncClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await api.post(URL, content=b'{"teeth": 5}', headers=headers)
    assert response.status_code == 415


async def test_a_body_over_the_limit_is_413_whether_or_not_it_declares_its_length(api: httpx.AsyncClient) -> None:
    big = b'{"teeth": 5, "pad": "' + b"x" * 5000 + b'"}'
    declared = await api.post(URL, content=big, headers={"Content-Type": "application/json"})

    async def chunks() -> Any:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    streamed = await api.post(URL, content=chunks(), headers={"Content-Type": "application/json"})
    assert declared.status_code == streamed.status_code == 413
    assert (await api.get(URL)).json()["sprockets"] == []


async def test_a_body_that_trickles_in_too_slowly_is_408_and_writes_nothing(
    settings: Settings, redis_client: Client
) -> None:
    async def stalled() -> Any:
        yield b'{"teeth": 5,'
        await asyncio.sleep(5)
        yield b"}"

    slow = settings.model_copy(update={"body_timeout_s": 0.2})
    async for api in serve(slow, redis_client):
        response = await api.post(URL, content=stalled(), headers={"Content-Type": "application/json"})
        assert response.status_code == 408
        assert (await api.get(URL)).json()["sprockets"] == []


async def test_a_body_gets_its_own_time_not_the_time_for_redis(settings: Settings, redis_client: Client) -> None:
    async def slow_but_in_time() -> Any:
        yield b'{"teeth": 5, "pitch_diameter": 5.0,'
        await asyncio.sleep(2.0)
        yield b'"outside_diameter": 6.0, "pitch": 1.0}'

    # The body takes twice the time for Redis, which is still a second: ages for a healthy Redis, even on a
    # loaded machine.
    timeouts = settings.model_copy(update={"body_timeout_s": 10.0, "redis_timeout_s": 1.0})
    async for api in serve(timeouts, redis_client):
        response = await api.post(URL, content=slow_but_in_time(), headers={"Content-Type": "application/json"})
        assert response.status_code == 201
        assert (await api.get(URL)).json()["sprockets"] == [response.json()]


@pytest.mark.parametrize("path", [f"{URL}/0", f"{URL}/99", f"{URL}/{2**64}", f"{URL}/abc", f"{URL}/-1"])
async def test_unknown_ids_are_404_problems(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path)
    assert response.status_code == 404
    assert response.json()["title"] == "Not Found"


async def test_wrong_method_is_405_with_allow(api: httpx.AsyncClient) -> None:
    response = await api.put(URL, json=SPROCKET)
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_retry_with_the_same_idempotency_key_replays_the_first_response(api: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await api.post(URL, json=SPROCKET, headers=headers)
    retry = await api.post(URL, json=dict(reversed(SPROCKET.items())), headers=headers)
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["location"] == first.headers["location"]
    assert retry.headers["etag"] == first.headers["etag"]
    assert len((await api.get(URL)).json()["sprockets"]) == 1
    other = await api.post(URL, json=SPROCKET, headers={"Idempotency-Key": "order-43"})
    assert other.json()["id"] == 2


async def test_the_same_idempotency_key_with_another_body_is_422(api: httpx.AsyncClient) -> None:
    await api.post(URL, json=SPROCKET, headers={"Idempotency-Key": "k"})
    response = await api.post(URL, json={**SPROCKET, "teeth": 6}, headers={"Idempotency-Key": "k"})
    assert response.status_code == 422
    assert len((await api.get(URL)).json()["sprockets"]) == 1


async def test_three_hundred_concurrent_creates_get_three_hundred_ids(real_api: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(real_api.post(URL, json={**SPROCKET, "teeth": n}) for n in range(1, 301)))
    assert sorted(r.json()["id"] for r in responses) == list(range(1, 301))
    listed = (await real_api.get(f"{URL}?limit=1000")).json()["sprockets"]
    assert sorted(s["teeth"] for s in listed) == list(range(1, 301))


async def test_racing_updates_with_one_version_let_exactly_one_win(real_api: httpx.AsyncClient) -> None:
    await create(real_api)
    responses = await asyncio.gather(
        *(real_api.put(f"{URL}/1", json={**SPROCKET, "teeth": n}, headers={"If-Match": '"1"'}) for n in range(2, 52))
    )
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1
    assert sorted({r.status_code for r in responses}) == [200, 412]
    assert (await real_api.get(f"{URL}/1")).json()["teeth"] == winners[0].json()["teeth"]


async def test_concurrent_patches_without_if_match_all_apply(real_api: httpx.AsyncClient) -> None:
    await create(real_api, teeth=1, pitch=1.0)
    patches = [{"teeth": 2}, {"pitch": 2.5}, {"pitch_diameter": 5.5}]
    responses = await asyncio.gather(*(real_api.patch(f"{URL}/1", json=p) for p in patches))
    assert [r.status_code for r in responses] == [200, 200, 200]
    final = (await real_api.get(f"{URL}/1")).json()
    assert fields(final) == {"teeth": 2, "pitch_diameter": 5.5, "outside_diameter": 6.0, "pitch": 2.5}
    assert (await real_api.get(f"{URL}/1")).headers["etag"] == '"4"'


async def test_sprocket_is_a_hash_an_operator_can_read(api: httpx.AsyncClient, redis_client: Client) -> None:
    await create(api)
    stored = await redis_client.hgetall("sc:{sprockets}:1")
    assert stored[b"teeth"] == b"5"
    assert float(stored[b"outside_diameter"]) == 6.0
    assert await redis_client.zrange("sc:{sprockets}:index", 0, -1) == [b"1"]


async def test_the_hash_keeps_the_rendered_json_and_a_hash_written_by_hand_still_reads(
    api: httpx.AsyncClient, redis_client: Client
) -> None:
    created = (await create(api)).content
    assert await redis_client.hget("sc:{sprockets}:1", "json") == created
    await redis_client.hset(
        "sc:{sprockets}:2", mapping={**SPROCKET, "version": 1, "created_at": "t", "updated_at": "t"}
    )
    by_hand = await api.get(f"{URL}/2")
    assert by_hand.json() == {"id": 2, **SPROCKET, "created_at": "t", "updated_at": "t"}
