"""On a Redis Cluster an idempotent create's record and what it created live in different hash slots, often
on different masters. With REDIS_WAIT_REPLICAS=1 such a create is acknowledged, and a retry of it replayed,
only once a replica of the master that took the create has it, not just one of the record's master: else a
master cut off from its replicas would acknowledge creates that its failover then throws away. And only if
the master that serves the create's slot now holds that very create: a failover may have thrown it away
and given its id to another create.

A paused replica (SIGSTOP) stands for one that is cut off: its master takes writes, no replica confirms them."""

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from sprockets_cache.http.app import create_app
from sprockets_cache.http.web import idempotency_digest
from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.settings import Settings
from sprockets_cache.store import keys
from tests.cluster import local_cluster
from tests.conftest import PATIENT_S, lifespan
from tests.failover import SPROCKET

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedRedis]]:
    """3 masters with a replica each (cluster-node-timeout 15 s: a short pause fails nothing over)."""
    with local_cluster(tmp_path_factory.mktemp("cluster"), replicas=1) as nodes:
        yield nodes


@pytest.fixture
async def api(cluster: list[EmbeddedRedis]) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(redis_url=cluster[0].url, redis_cluster=True, redis_timeout_s=3.0, redis_wait_replicas=1)
    async with lifespan(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


def _master_of(nodes: list[EmbeddedRedis], key: str) -> EmbeddedRedis:
    with redis.Redis(port=nodes[0].port, socket_timeout=PATIENT_S) as client:
        slot = client.cluster("KEYSLOT", key)
        ranges = client.cluster("SLOTS")
    port = next(int(master[1]) for first, last, master, *_ in ranges if first <= slot <= last)
    return next(node for node in nodes if node.port == port)


def _replica_of(nodes: list[EmbeddedRedis], master: EmbeddedRedis) -> EmbeddedRedis:
    with redis.Redis(port=master.port, socket_timeout=PATIENT_S) as client:
        port = int(client.info("replication")["slave0"]["port"])
    return next(node for node in nodes if node.port == port)


def _key_kept_elsewhere(nodes: list[EmbeddedRedis], scope: str, resource_key: str, prefix: str) -> str:
    """An Idempotency-Key whose record lives on another master than `resource_key`."""
    avoid = _master_of(nodes, resource_key)
    for n in itertools.count():
        key = f"{prefix}-{n}"
        if _master_of(nodes, keys.key_for_idempotency(scope, idempotency_digest("", key))) is not avoid:
            return key
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _paused(node: EmbeddedRedis) -> Iterator[None]:
    os.kill(node.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(node.pid, signal.SIGCONT)


async def _post_until_not_503(api: httpx.AsyncClient, path: str, body: Any, key: str) -> httpx.Response:
    """The replica just resumed: it confirms writes again once it has caught up."""
    deadline = time.monotonic() + PATIENT_S
    while True:
        response = await api.post(path, json=body, headers={"Idempotency-Key": key})
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


async def test_an_idempotent_sprocket_create_waits_for_a_replica_of_the_sprockets_master(
    cluster: list[EmbeddedRedis], api: httpx.AsyncClient
) -> None:
    key = _key_kept_elsewhere(cluster, "sprockets", keys.SPROCKET_INDEX, "sprocket")
    body = {**SPROCKET, "teeth": 41}
    with _paused(_replica_of(cluster, _master_of(cluster, keys.SPROCKET_INDEX))):
        plain = await api.post("/api/v1/sprockets", json={**SPROCKET, "teeth": 40})
        assert plain.status_code == 503, plain.text
        first = await api.post("/api/v1/sprockets", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == 503, f"acknowledged with the sprocket on no replica: {first.text}"
        # The record is replicated by now; the sprocket is not: a retry must not be answered either.
        retry = await api.post("/api/v1/sprockets", json=body, headers={"Idempotency-Key": key})
        assert retry.status_code == 503, f"replayed with the sprocket on no replica: {retry.text}"
    replayed = await _post_until_not_503(api, "/api/v1/sprockets", body, key)
    assert replayed.status_code == 201, replayed.text
    assert replayed.headers["idempotent-replayed"] == "true"
    stored = await api.get(replayed.headers["location"])
    assert replayed.json() == stored.json()
    listed = (await api.get("/api/v1/sprockets")).json()["sprockets"]
    assert [s["id"] for s in listed if s["teeth"] == body["teeth"]] == [replayed.json()["id"]]


async def test_a_replay_of_an_acknowledged_create_waits_for_a_replica_of_the_sprockets_master_too(
    cluster: list[EmbeddedRedis], api: httpx.AsyncClient
) -> None:
    """The replay cannot tell whether the first answer was a 201 or a 503 for want of replicas."""
    key = _key_kept_elsewhere(cluster, "sprockets", keys.SPROCKET_INDEX, "replay")
    body = {**SPROCKET, "teeth": 42}
    created = await api.post("/api/v1/sprockets", json=body, headers={"Idempotency-Key": key})
    assert created.status_code == 201, created.text
    with _paused(_replica_of(cluster, _master_of(cluster, keys.SPROCKET_INDEX))):
        retry = await api.post("/api/v1/sprockets", json=body, headers={"Idempotency-Key": key})
        assert retry.status_code == 503, f"replayed with the sprocket's master confirmed by no replica: {retry.text}"
    replayed = await _post_until_not_503(api, "/api/v1/sprockets", body, key)
    assert replayed.status_code == 201, replayed.text
    assert (replayed.content, replayed.headers["location"]) == (created.content, created.headers["location"])


async def test_an_idempotent_factory_create_waits_for_a_replica_of_the_factorys_master(
    cluster: list[EmbeddedRedis], api: httpx.AsyncClient
) -> None:
    with redis.RedisCluster(host="127.0.0.1", port=cluster[0].port, socket_timeout=PATIENT_S) as client:
        factory_id = int(client.get(keys.FACTORY_NEXT_ID) or 0) + 1  # the id the next create takes
    factory_key = keys.key_for_factory(factory_id)
    key = _key_kept_elsewhere(cluster, "factories", factory_key, "factory")
    body = {"name": "cut off"}
    with _paused(_replica_of(cluster, _master_of(cluster, factory_key))):
        first = await api.post("/api/v1/factories", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == 503, f"acknowledged with the factory on no replica: {first.text}"
        retry = await api.post("/api/v1/factories", json=body, headers={"Idempotency-Key": key})
        assert retry.status_code == 503, f"replayed with the factory on no replica: {retry.text}"
    replayed = await _post_until_not_503(api, "/api/v1/factories", body, key)
    assert replayed.status_code == 201, replayed.text
    assert replayed.json()["id"] == factory_id
    listed = (await api.get("/api/v1/factories")).json()["factories"]
    assert [f["id"] for f in listed if f["name"] == "cut off"] == [factory_id]


async def test_a_replay_after_a_sprocket_is_deleted_still_replays_the_create(
    cluster: list[EmbeddedRedis], api: httpx.AsyncClient
) -> None:
    """The master no longer holds the sprocket, but its tombstone says that it held this create."""
    key = _key_kept_elsewhere(cluster, "sprockets", keys.SPROCKET_INDEX, "deleted")
    body = {**SPROCKET, "teeth": 43}
    created = await api.post("/api/v1/sprockets", json=body, headers={"Idempotency-Key": key})
    assert created.status_code == 201, created.text
    deleted = await api.delete(created.headers["location"])
    assert deleted.status_code == 204, deleted.text
    replayed = await api.post("/api/v1/sprockets", json=body, headers={"Idempotency-Key": key})
    assert replayed.status_code == 201, replayed.text
    assert replayed.headers["idempotent-replayed"] == "true"
    assert (replayed.content, replayed.headers["location"]) == (created.content, created.headers["location"])
    assert (await api.get(created.headers["location"])).status_code == 404


async def test_a_factory_create_without_a_key_waits_for_a_replica_of_the_factories_index_master(
    cluster: list[EmbeddedRedis], api: httpx.AsyncClient
) -> None:
    """The factory's WAIT counts its own master's replicas; its id and index entry are on {factories}'s."""
    index_master = _master_of(cluster, keys.FACTORY_INDEX)
    with redis.RedisCluster(host="127.0.0.1", port=cluster[0].port, socket_timeout=PATIENT_S) as client:
        # Take ids until the next one lives on another master than the index.
        while _master_of(cluster, keys.key_for_factory(int(client.get(keys.FACTORY_NEXT_ID) or 0) + 1)) is index_master:
            client.incr(keys.FACTORY_NEXT_ID)
    with _paused(_replica_of(cluster, index_master)):
        created = await api.post("/api/v1/factories", json={"name": "index unconfirmed"})
        assert created.status_code == 503, f"acknowledged with the factory's id listed on no replica: {created.text}"


async def test_a_replay_of_a_create_that_a_failover_threw_away_creates_it_again(tmp_path: Path) -> None:
    """The create reaches the sprockets' master but not its replica; the master dies and the replica, promoted
    without it, gives its id to another create. A retry with the key must not replay the first response
    (that id now holds another sprocket): it is told that nothing was created, and the next retry creates it."""
    with local_cluster(tmp_path, replicas=1) as nodes:
        settings = Settings(redis_url=nodes[0].url, redis_cluster=True, redis_timeout_s=3.0, redis_wait_replicas=1)
        async with lifespan(create_app(settings)) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
                await _replay_after_a_lost_create(nodes, api)


async def _replay_after_a_lost_create(nodes: list[EmbeddedRedis], api: httpx.AsyncClient) -> None:
    master = _master_of(nodes, keys.SPROCKET_INDEX)
    replica = _replica_of(nodes, master)
    key = _key_kept_elsewhere(nodes, "sprockets", keys.SPROCKET_INDEX, "lost")
    body = {**SPROCKET, "teeth": 61}
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        first = await api.post("/api/v1/sprockets", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == 503, first.text
        with redis.Redis(port=master.port, socket_timeout=PATIENT_S) as client:
            lost_id = int(client.get(keys.SPROCKET_NEXT_ID))
            assert client.hget(keys.key_for_sprocket(lost_id), "teeth") == b"61"
        # The replica dies before it reads what the master sent it, the master dies too, and the replica
        # comes back from its own append-only file and takes over the master's slots.
        master.kill()
        replica.kill()
    finally:
        with contextlib.suppress(ProcessLookupError, RuntimeError):
            os.kill(replica.pid, signal.SIGCONT)
    replica.start()
    with redis.Redis(port=replica.port, socket_timeout=PATIENT_S) as client:
        client.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
        _until(lambda: client.info("replication")["role"] == "master")
        master.start()  # rejoins as the new master's replica, and drops what the new master never had
        _until(lambda: client.info("replication").get("slave0", {}).get("state") == "online")
    assert _master_of(nodes, keys.SPROCKET_INDEX) is replica

    other = await _post_until_not_503(api, "/api/v1/sprockets", {**SPROCKET, "teeth": 62}, "another")
    assert other.status_code == 201, other.text
    assert other.json()["id"] == lost_id, "the new master was to hand out the lost create's id again"

    retry = await api.post("/api/v1/sprockets", json=body, headers={"Idempotency-Key": key})
    assert retry.status_code == 503, f"replayed a create the failover threw away: {retry.text}"
    assert "Nothing was created" in retry.json()["detail"]
    created = await api.post("/api/v1/sprockets", json=body, headers={"Idempotency-Key": key})
    assert created.status_code == 201, created.text
    assert "idempotent-replayed" not in created.headers
    assert created.json()["id"] != lost_id
    listed = (await api.get("/api/v1/sprockets")).json()["sprockets"]
    assert {s["id"]: s["teeth"] for s in listed if s["teeth"] in (61, 62)} == {
        lost_id: 62,
        created.json()["id"]: 61,
    }
    replayed = await api.post("/api/v1/sprockets", json=body, headers={"Idempotency-Key": key})
    assert replayed.status_code == 201, replayed.text
    assert (replayed.content, replayed.headers["idempotent-replayed"]) == (created.content, "true")


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENT_S
    while not condition():
        assert time.monotonic() < deadline, "not within PATIENT_S"
        time.sleep(0.1)
