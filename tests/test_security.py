import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import httpx
import pytest

from sprockets_cache.http.app import create_app
from sprockets_cache.http.security import digest, new_key
from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.settings import Settings
from sprockets_cache.store import keyring
from sprockets_cache.store.connections import Client, connect
from tests.conftest import PATIENT_S, keyspace, lifespan

SPROCKET = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}
KEY, DIGEST = new_key()
OTHER_KEY, OTHER_DIGEST = new_key()


async def serve(stack: AsyncExitStack, settings: Settings, client: Client) -> httpx.AsyncClient:
    manager = await stack.enter_async_context(lifespan(create_app(settings, client)))
    transport = httpx.ASGITransport(app=manager.app)
    return await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://t"))


@pytest.fixture
async def keyed(redis_client: Client) -> AsyncIterator[httpx.AsyncClient]:
    async with AsyncExitStack() as stack:
        yield await serve(stack, Settings(api_keys=frozenset({DIGEST, OTHER_DIGEST})), redis_client)


def test_a_new_key_comes_with_its_sha256_digest() -> None:
    assert DIGEST == digest(KEY)
    assert len(DIGEST) == 64
    assert KEY != new_key()[0]


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {KEY}", "Bearer ", f"Bearer {DIGEST}"], ids=str
)
async def test_a_write_without_a_valid_key_is_401_and_writes_nothing(
    keyed: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in [
        ("POST", "/api/v1/sprockets"),
        ("PUT", "/api/v1/sprockets/1"),
        ("DELETE", "/api/v1/sprockets/1"),
    ]:
        response = await keyed.request(method, path, json=SPROCKET, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="sprockets-cache"'
        assert response.headers["content-type"] == "application/problem+json"
    assert (await keyed.get("/api/v1/sprockets")).json()["sprockets"] == []


async def test_a_write_with_any_configured_key_succeeds_and_reads_stay_public(keyed: httpx.AsyncClient) -> None:
    for key in (KEY, OTHER_KEY):
        response = await keyed.post("/api/v1/sprockets", json=SPROCKET, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 201
    assert (await keyed.get("/api/v1/sprockets/2")).status_code == 200


async def test_private_reads_need_a_key_too(redis_client: Client) -> None:
    async with AsyncExitStack() as stack:
        api = await serve(stack, Settings(api_keys=frozenset({DIGEST}), private_reads=True), redis_client)
        assert (await api.get("/api/v1/sprockets")).status_code == 401
        assert (await api.get("/api/v1/sprockets", headers={"Authorization": f"Bearer {KEY}"})).status_code == 200
        assert (await api.get("/health")).status_code == 200


async def test_responses_carry_the_security_headers(api: httpx.AsyncClient) -> None:
    for response in (await api.get("/api/v1/sprockets"), await api.get("/nowhere"), await api.get("/health")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        assert "server" not in response.headers


async def test_cors_is_off_unless_origins_are_configured(api: httpx.AsyncClient, redis_client: Client) -> None:
    origin = {"Origin": "https://dash.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in (await api.get("/api/v1/sprockets", headers=origin)).headers
    async with AsyncExitStack() as stack:
        allowed = await serve(stack, Settings(cors_origins=("https://dash.example",)), redis_client)
        preflight = await allowed.options("/api/v1/sprockets", headers=origin)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://dash.example"
        other = await allowed.get("/api/v1/sprockets", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_the_rate_limit_is_shared_by_every_process_and_admits_no_more_than_it_allows(
    redis_server: EmbeddedRedis,
) -> None:
    """Three app instances (as three processes would) on one real Redis, 60 concurrent requests from one client."""
    per_s, burst = 2.0, 5
    # Patient timeouts: the 60 requests share one event loop, and a slow machine must not turn them into 503s.
    settings = Settings(rate_limit_per_s=per_s, rate_limit_burst=burst, redis_timeout_s=PATIENT_S)
    async with AsyncExitStack() as stack:
        clients = [connect(redis_server.url, timeout_s=PATIENT_S) for _ in range(3)]
        await clients[0].flushdb()
        for client in clients:
            stack.push_async_callback(client.aclose)
        apps = [await serve(stack, settings, client) for client in clients]
        started = time.monotonic()
        responses = await asyncio.gather(*(apps[n % 3].get("/api/v1/sprockets") for n in range(60)))
        elapsed = time.monotonic() - started
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(admitted) + len(refused) == 60
    assert burst <= len(admitted) <= burst + per_s * elapsed + 1
    assert refused[0].headers["content-type"] == "application/problem+json"
    assert int(refused[0].headers["retry-after"]) >= 1
    assert refused[0].headers["ratelimit-policy"] == "5;w=1"
    assert admitted[0].headers["ratelimit"].startswith("r=")


async def test_the_rate_limit_counts_each_key_on_its_own(redis_client: Client) -> None:
    settings = Settings(api_keys=frozenset({DIGEST, OTHER_DIGEST}), rate_limit_per_s=0.1, rate_limit_burst=2)
    async with AsyncExitStack() as stack:
        api = await serve(stack, settings, redis_client)
        for key, expected in [(KEY, [201, 201, 429]), (OTHER_KEY, [201, 201, 429])]:
            statuses = [
                (
                    await api.post("/api/v1/sprockets", json=SPROCKET, headers={"Authorization": f"Bearer {key}"})
                ).status_code
                for _ in range(3)
            ]
            assert statuses == expected
    assert len(await redis_client.keys("sc:{sprockets}:[0-9]*")) == 4


async def test_clients_with_different_keys_never_share_an_idempotency_key(keyed: httpx.AsyncClient) -> None:
    first = await keyed.post(
        "/api/v1/sprockets", json=SPROCKET, headers={"Authorization": f"Bearer {KEY}", "Idempotency-Key": "k"}
    )
    other = await keyed.post(
        "/api/v1/sprockets", json=SPROCKET, headers={"Authorization": f"Bearer {OTHER_KEY}", "Idempotency-Key": "k"}
    )
    assert (first.status_code, other.status_code) == (201, 201)
    assert first.json()["id"] != other.json()["id"]


CHART = {"sprocket_production_actual": [3], "sprocket_production_goal": [4], "time": [1_700_000_000]}
# Every kind of request, the scope a 403 names, and the scopes besides admin that admit it (reads are private here).
REQUESTS = [
    ("GET", "/api/v1/sprockets", None, "read", {"read"}),
    ("GET", "/api/v1/sprockets/1", None, "read", {"read"}),
    ("GET", "/api/v1/factories", None, "read", {"read"}),
    ("GET", "/api/v1/factories/1", None, "read", {"read", "factory:1"}),
    ("GET", "/api/v1/factories/1/summary", None, "read", {"read", "factory:1"}),
    ("GET", "/api/v1/factories/2", None, "read", {"read"}),
    ("POST", "/api/v1/sprockets", SPROCKET, "sprockets", {"sprockets"}),
    ("PUT", "/api/v1/sprockets/1", SPROCKET, "sprockets", {"sprockets"}),
    ("PATCH", "/api/v1/sprockets/1", {"teeth": 6}, "sprockets", {"sprockets"}),
    ("DELETE", "/api/v1/sprockets/1", None, "sprockets", {"sprockets"}),
    ("POST", "/api/v1/factories", {"name": "new"}, "factories", {"factories"}),
    ("POST", "/api/v1/factories/1/chart_data", CHART, "factory:1", {"factories", "factory:1"}),
    ("POST", "/api/v1/factories/2/chart_data", CHART, "factory:2", {"factories"}),
]


@pytest.mark.parametrize("scope", ["admin", "sprockets", "factories", "factory:1", "read"])
async def test_each_scope_admits_exactly_what_it_names_and_refuses_the_rest_with_403(
    redis_client: Client, scope: str
) -> None:
    scoped_key, scoped_digest = new_key()
    settings = Settings(api_keys={DIGEST: {"admin"}, scoped_digest: {scope}}, private_reads=True)
    async with AsyncExitStack() as stack:
        api = await serve(stack, settings, redis_client)
        admin = {"Authorization": f"Bearer {KEY}"}
        for path, body in [("sprockets", SPROCKET), ("factories", {}), ("factories", {})]:
            assert (await api.post(f"/api/v1/{path}", json=body, headers=admin)).status_code == 201
        for method, path, body, named, admitting in REQUESTS:
            before = await keyspace(redis_client)
            response = await api.request(method, path, json=body, headers={"Authorization": f"Bearer {scoped_key}"})
            if scope == "admin" or scope in admitting:
                assert response.status_code in (200, 201, 204), (method, path, response.text)
                continue
            assert response.status_code == 403, (method, path)
            assert response.headers["content-type"] == "application/problem+json"
            assert f"lacks the scope {named}" in response.json()["detail"]
            assert await keyspace(redis_client) == before


async def test_a_collector_key_for_one_factory_writes_only_that_factory(redis_client: Client) -> None:
    collector, collector_digest = new_key()
    settings = Settings(api_keys=f"{DIGEST},{collector_digest}=factory:1")
    async with AsyncExitStack() as stack:
        api = await serve(stack, settings, redis_client)
        for _ in range(2):
            await api.post("/api/v1/factories", json={}, headers={"Authorization": f"Bearer {KEY}"})
        as_collector = {"Authorization": f"Bearer {collector}"}
        own = await api.post("/api/v1/factories/1/chart_data", json=CHART, headers=as_collector)
        other = await api.post("/api/v1/factories/2/chart_data", json=CHART, headers=as_collector)
        create = await api.post("/api/v1/factories", json={}, headers=as_collector)
        sprocket = await api.post("/api/v1/sprockets", json=SPROCKET, headers=as_collector)
        assert own.json() == {"written": 1}
        assert (other.status_code, create.status_code, sprocket.status_code) == (403, 403, 403)
        assert other.json()["detail"] == (
            "This API key lacks the scope factory:2 (or factories), which POST /api/v1/factories/2/chart_data needs."
        )
        assert create.json()["detail"].startswith("This API key lacks the scope factories,")
        assert sprocket.json()["detail"].startswith("This API key lacks the scope sprockets,")
        assert 'error="insufficient_scope"' in sprocket.headers["www-authenticate"]
        assert (await api.get("/api/v1/factories/2")).json()["chart_data"]["time"] == []
        assert (await api.get("/api/v1/factories/3")).status_code == 404
        assert (await api.get("/api/v1/sprockets")).json()["sprockets"] == []


async def _eventually(request: Callable[[], Awaitable[httpx.Response]], status: int) -> None:
    """Repeat the request until it answers `status`: patiently, since a busy machine is slow."""
    deadline = time.monotonic() + PATIENT_S
    while (response := await request()).status_code != status:
        assert time.monotonic() < deadline, f"still {response.status_code}, not {status}"
        await asyncio.sleep(0.05)


async def test_a_key_added_in_redis_works_and_a_revoked_one_stops_in_every_process(
    real_redis_pair: tuple[Client, Client],
) -> None:
    key, key_digest = new_key()
    async with AsyncExitStack() as stack:
        apis = [await serve(stack, Settings(api_keys={DIGEST}), client) for client in real_redis_pair]
        headers = {"Authorization": f"Bearer {key}"}
        assert (await apis[0].post("/api/v1/sprockets", json=SPROCKET, headers=headers)).status_code == 401
        await keyring.add(real_redis_pair[0], key_digest, {"sprockets"})
        for api in apis:
            await _eventually(lambda api=api: api.post("/api/v1/sprockets", json=SPROCKET, headers=headers), 201)
        assert (await apis[1].post("/api/v1/factories", json={}, headers=headers)).status_code == 403
        await keyring.revoke(real_redis_pair[1], keyring.key_id(key_digest))
        for api in apis:
            await _eventually(lambda api=api: api.delete("/api/v1/sprockets/1", headers=headers), 401)
    assert (await keyring.held(real_redis_pair[0])) == []


async def test_the_first_key_added_in_redis_closes_open_writes_for_good_and_its_use_is_noted(
    redis_client: Client,
) -> None:
    key, key_digest = new_key()
    async with AsyncExitStack() as stack:
        api = await serve(stack, Settings(), redis_client)
        assert (await api.post("/api/v1/sprockets", json=SPROCKET)).status_code == 201
        await keyring.add(redis_client, key_digest, {"admin"})
        await _eventually(lambda: api.post("/api/v1/sprockets", json=SPROCKET), 401)
        headers = {"Authorization": f"Bearer {key}"}
        assert (await api.post("/api/v1/sprockets", json=SPROCKET, headers=headers)).status_code == 201
        # Revoking the last key does not open writes again.
        await keyring.revoke(redis_client, key_digest)
        await _eventually(lambda: api.post("/api/v1/sprockets", json=SPROCKET, headers=headers), 401)
        assert (await api.post("/api/v1/sprockets", json=SPROCKET)).status_code == 401


async def test_when_a_held_key_was_last_used_is_noted(redis_client: Client) -> None:
    key, key_digest = new_key()
    await keyring.add(redis_client, key_digest, {"sprockets"})
    async with AsyncExitStack() as stack:
        api = await serve(stack, Settings(), redis_client)
        headers = {"Authorization": f"Bearer {key}"}
        assert (await api.post("/api/v1/sprockets", json=SPROCKET, headers=headers)).status_code == 201
    # Each process writes it down every 10 s, and when it stops.
    assert (await keyring.held(redis_client))[0].last_used_at is not None
