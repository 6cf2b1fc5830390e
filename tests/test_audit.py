from contextlib import AsyncExitStack

import pytest

from sprockets_cache.http.security import new_key
from sprockets_cache.settings import Settings
from sprockets_cache.store import audit
from sprockets_cache.store.connections import Client
from tests.test_security import SPROCKET, serve

ADMIN_KEY, ADMIN_DIGEST = new_key()
CATALOG_KEY, CATALOG_DIGEST = new_key()
SECRETS = ("body-marker", "header-marker", "idempotency-marker", ADMIN_KEY, CATALOG_KEY, ADMIN_DIGEST, CATALOG_DIGEST)


async def _entries(client: Client) -> list[dict[str, str]]:
    return [
        {name.decode(): value.decode() for name, value in fields.items()}
        for _, fields in await client.xrange("sc:audit")
    ]


async def test_every_write_is_recorded_admitted_or_refused_with_its_key_id_and_nothing_secret(
    redis_client: Client,
) -> None:
    settings = Settings(api_keys={ADMIN_DIGEST: {"admin"}, CATALOG_DIGEST: {"sprockets"}})
    admin = {"Authorization": f"Bearer {ADMIN_KEY}", "X-Note": "header-marker", "X-Request-ID": "req-1"}
    catalog = {"Authorization": f"Bearer {CATALOG_KEY}", "Idempotency-Key": "idempotency-marker"}
    async with AsyncExitStack() as stack:
        api = await serve(stack, settings, redis_client)
        statuses = [
            (await api.post("/api/v1/sprockets", json=SPROCKET, headers=admin)).status_code,
            (await api.post("/api/v1/factories", json={"name": "body-marker"}, headers=catalog)).status_code,
            (await api.put("/api/v1/sprockets/1", json={**SPROCKET, "teeth": 9}, headers=catalog)).status_code,
            (await api.delete("/api/v1/sprockets/1", headers={"Authorization": "Bearer body-marker"})).status_code,
            (await api.post("/api/v1/sprockets", json={"teeth": "body-marker"}, headers=catalog)).status_code,
            (await api.get("/api/v1/sprockets/1")).status_code,
        ]
    # The app writes what it still holds as it stops.
    entries = await _entries(redis_client)
    assert statuses == [201, 403, 200, 401, 422, 200]
    admin_id, catalog_id = ADMIN_DIGEST[:16], CATALOG_DIGEST[:16]
    sprocket, sprockets = "/api/v1/sprockets/{sprocket_id:int}", "/api/v1/sprockets"
    assert [(e["key"], e["method"], e["route"], e["resource"], e["status"]) for e in entries] == [
        (admin_id, "POST", sprockets, "1", "201"),
        (catalog_id, "POST", "/api/v1/factories", "-", "403"),
        (catalog_id, "PUT", sprocket, "1", "200"),
        ("anonymous", "DELETE", sprocket, "1", "401"),
        (catalog_id, "POST", sprockets, "-", "422"),
    ]
    assert entries[0]["request_id"] == "req-1"
    for entry in entries:
        assert list(entry) == list(audit.FIELDS)
        assert entry["client"] == "127.0.0.1"
        assert entry["time"].endswith("Z")
        assert not [secret for secret in SECRETS if secret in str(entry)], entry


async def test_with_open_writes_the_writer_is_anonymous(redis_client: Client) -> None:
    async with AsyncExitStack() as stack:
        api = await serve(stack, Settings(), redis_client)
        await api.post("/api/v1/factories", json={})
    [entry] = await _entries(redis_client)
    assert (entry["key"], entry["route"], entry["resource"], entry["status"]) == (
        "anonymous",
        "/api/v1/factories",
        "1",
        "201",
    )


async def test_the_audit_trail_can_be_turned_off(redis_client: Client) -> None:
    async with AsyncExitStack() as stack:
        api = await serve(stack, Settings(audit_trail=False), redis_client)
        assert (await api.post("/api/v1/sprockets", json=SPROCKET)).status_code == 201
    assert await redis_client.exists("sc:audit") == 0


async def test_the_stream_is_capped(real_redis: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "KEPT", 200)
    trail = audit.AuditTrail(real_redis, timeout_s=30)
    for number in range(1000):
        trail.record([str(number)] * len(audit.FIELDS))
    await trail.close()
    # MAXLEN ~ trims whole nodes of the stream (100 entries each, by default): about 200 are left.
    assert 200 <= await real_redis.xlen("sc:audit") < 400
    newest = await real_redis.xrevrange("sc:audit", count=1)
    assert newest[0][1][b"status"] == b"999"
