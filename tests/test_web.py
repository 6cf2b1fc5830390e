"""Request parsing that once answered 500 or the wrong thing (found by reading and by `make contract`)."""

import httpx
import pytest
from starlette.requests import Request

from sprockets_cache.http import events

SPROCKET = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}
URL = "/api/v1/sprockets"


@pytest.mark.parametrize(
    "query",
    ["limit=%C2%B2", "limit=%D9%A3", f"limit={'1' * 5000}", f"limit={'0' * 30}7"],
    ids=["superscript-two", "arabic-three", "5000-digits", "leading-zeros"],
)
async def test_a_query_number_is_ascii_digits_or_422(api: httpx.AsyncClient, query: str) -> None:
    response = await api.get(f"{URL}?{query}")
    expected = 200 if query.startswith("limit=000") else 422
    assert response.status_code == expected, response.text


@pytest.mark.parametrize("tag", [b'"1x"', b'"1,2"', b'"' + b"1" * 5000 + b'"', b'""', b'W/"1"'])
async def test_an_if_match_that_names_no_version_is_412(api: httpx.AsyncClient, tag: bytes) -> None:
    assert (await api.post(URL, json=SPROCKET)).status_code == 201
    response = await api.put(f"{URL}/1", json=SPROCKET, headers={"If-Match": tag})
    assert response.status_code == 412, response.text


@pytest.mark.parametrize("value", [b"", b" ", b"1", b'"1" "2"', b'"1",', b'*, "1"', b'w/"1"', b'"\xb2"'])
async def test_a_conditional_header_not_of_the_documented_form_is_400_and_writes_nothing(
    api: httpx.AsyncClient, value: bytes
) -> None:
    assert (await api.post(URL, json=SPROCKET)).status_code == 201
    read = await api.get(f"{URL}/1", headers={"If-None-Match": value})
    replaced = await api.put(f"{URL}/1", json={**SPROCKET, "teeth": 9}, headers={"If-Match": value})
    deleted = await api.delete(f"{URL}/1", headers={"If-Match": value})
    assert [read.status_code, replaced.status_code, deleted.status_code] == [400, 400, 400]
    assert "If-Match" in replaced.json()["detail"]
    assert (await api.get(f"{URL}/1")).json()["teeth"] == 5


@pytest.mark.parametrize("value", [b'"1"', b'W/"0", "1"', b"*", b'"7" ,\t"1"'])
async def test_a_conditional_header_of_the_documented_form_is_taken(api: httpx.AsyncClient, value: bytes) -> None:
    assert (await api.post(URL, json=SPROCKET)).status_code == 201
    assert (await api.get(f"{URL}/1", headers={"If-None-Match": value})).status_code == 304
    assert (await api.put(f"{URL}/1", json=SPROCKET, headers={"If-Match": value})).status_code == 200


@pytest.mark.parametrize("key", [b"", b" ", b"a" * 256, b"caf\xe9", b"tab\there"])
async def test_an_idempotency_key_not_of_the_documented_form_is_400_and_creates_nothing(
    api: httpx.AsyncClient, key: bytes
) -> None:
    response = await api.post(URL, json=SPROCKET, headers={"Idempotency-Key": key})
    assert response.status_code == 400, response.text
    assert (await api.get(URL)).json()["sprockets"] == []


async def test_if_none_match_on_a_write_never_hides_it_behind_a_304(api: httpx.AsyncClient) -> None:
    assert (await api.post(URL, json=SPROCKET)).status_code == 201
    response = await api.put(f"{URL}/1", json={**SPROCKET, "teeth": 9}, headers={"If-None-Match": "*"})
    assert response.status_code == 200
    assert response.json()["teeth"] == 9


@pytest.mark.parametrize("cursor", ["", "0", "ff", "ffffffffffffffff"])
async def test_every_cursor_of_the_documented_form_is_accepted(api: httpx.AsyncClient, cursor: str) -> None:
    response = await api.get(URL, params={"cursor": cursor})
    assert response.status_code == (400 if cursor == "" else 200)


async def test_a_reused_idempotency_key_names_the_header_in_errors(api: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k"}
    assert (await api.post(URL, json=SPROCKET, headers=headers)).status_code == 201
    response = await api.post(URL, json={**SPROCKET, "teeth": 6}, headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "header.Idempotency-Key", "message": "was already used with a different request body"}
    ]


@pytest.mark.parametrize(
    ("last_seen", "resume_after"),
    [
        ("3-1", "3-1"),
        ("9-0", "5-0"),
        ("0-20000000000000000000", "0-18446744073709551615"),
        ("99999999999999999999-0", "5-0"),
    ],
    ids=["seen", "past-the-newest", "sequence-past-64-bits", "time-past-64-bits"],
)
def test_a_last_event_id_resumes_at_an_id_redis_can_read_after(last_seen: str, resume_after: str) -> None:
    # Redis refuses a stream id half past 64 bits: the stream would break after its 200.
    request = Request({"type": "http", "headers": [(b"last-event-id", last_seen.encode())]})
    assert events._resume_after(request, "5-0") == resume_after
