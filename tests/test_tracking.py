"""Answers held in memory, kept true by Redis's invalidations (client tracking): on a real redis-server,
a cluster and a Sentinel deployment, two API processes (two apps, each with its own cache and tracking
connections), one writing, the other reading."""

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis

from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.settings import Settings
from sprockets_cache.store import keyring
from sprockets_cache.store.connections import Client, connect
from sprockets_cache.store.tracking import CLIENT_NAME
from tests.cluster import local_cluster
from tests.conftest import PATIENT_S
from tests.sentinel import MASTER_NAME, local_sentinels
from tests.test_factories import chart
from tests.test_read_cache import metric, serve
from tests.test_sprockets import SPROCKET

ALTERNATIONS = 1000
RACES = 300


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def ok(response: Any) -> httpx.Response:
    response = await response
    assert response.status_code in (200, 201), response.text
    return response  # type: ignore[no-any-return]


async def tracking(api: httpx.AsyncClient) -> bool:
    """Whether the app's invalidations are confirmed on every node, waiting for them (patiently) if not."""
    async with asyncio.timeout(PATIENT_S):
        while await metric(api, "read_cache_tracking") != 1:
            await asyncio.sleep(0.05)
    return True


async def tracked_pair(clients: tuple[Client, Client], stack: AsyncExitStack) -> list[httpx.AsyncClient]:
    """Two apps, one on each client, their invalidations confirmed."""
    settings = Settings(redis_timeout_s=PATIENT_S)
    apps = [await serve(stack, settings, client) for client in clients]
    for app in apps:
        assert await tracking(app)
    return apps


def reads(sprocket_id: int, factory_id: int) -> list[tuple[str, dict[str, Any]]]:
    """What the reader reads after each write: a sprocket, a page of them, a factory whole, a range of it,
    buckets, a summary, the factories' listing."""
    factory = f"/api/v1/factories/{factory_id}"
    return [
        (f"/api/v1/sprockets/{sprocket_id}", {}),
        ("/api/v1/sprockets", {}),
        (factory, {}),
        (factory, {"from": 0, "to": 10**6}),
        (factory, {"bucket": 3600}),
        (f"{factory}/summary", {}),
        ("/api/v1/factories", {}),
    ]


async def alternate(writer: httpx.AsyncClient, reader: httpx.AsyncClient, rounds: int) -> None:
    """`rounds` writes through `writer`, each followed by every read through `reader`: each read must show
    the write (the reader held every answer before it, so a missed invalidation would show)."""
    await ok(writer.post("/api/v1/sprockets", json=SPROCKET))
    await ok(writer.post("/api/v1/factories", json={"chart_data": chart((0, 0, 0))}))
    hits = await metric(reader, "read_cache_hits_total")
    for n in range(1, rounds + 1):
        for path, params in reads(1, 1):
            await ok(reader.get(path, params=params))
        if n % 2:
            await ok(writer.put("/api/v1/sprockets/1", json={**SPROCKET, "teeth": n}))
        else:
            await ok(writer.post("/api/v1/factories/1/chart_data", json=chart((n, n, 1))))
        sprocket, sprockets, whole, ranged, bucketed, summary, listed = [
            (await ok(reader.get(path, params=params))).json() for path, params in reads(1, 1)
        ]
        teeth = n if n % 2 else n - 1
        assert sprocket["teeth"] == teeth, f"round {n}: a stale sprocket"
        assert sprockets["sprockets"][0]["teeth"] == teeth, f"round {n}: a stale page of sprockets"
        last = n if n % 2 == 0 else n - 1
        assert whole["chart_data"]["time"][-1] == last, f"round {n}: a stale factory"
        assert ranged["chart_data"]["time"][-1] == last, f"round {n}: a stale range"
        assert sum(bucketed["chart_data"]["sprocket_production_actual"]) == sum(range(0, last + 1, 2))
        assert summary["last_time"] == last, f"round {n}: a stale summary"
        assert listed["factories"] == [whole], f"round {n}: a stale listing"
    # The reads before each write were answered from memory: the check above would have seen a stale one.
    assert await metric(reader, "read_cache_hits_total") - hits >= rounds * len(reads(1, 1))


async def test_a_write_through_one_process_is_in_the_next_read_through_another(
    real_redis_pair: tuple[Client, Client], stack: AsyncExitStack
) -> None:
    first, second = await tracked_pair(real_redis_pair, stack)
    await alternate(first, second, ALTERNATIONS)


async def test_with_sentinels_writes_through_one_process_are_read_through_another_also_after_a_failover(
    tmp_path: Path, stack: AsyncExitStack
) -> None:
    with local_sentinels(tmp_path, replicas=1) as deployment:
        settings = Settings(
            redis_url="redis://unused.invalid:1/0",
            redis_sentinels=deployment.addresses,
            redis_sentinel_master=MASTER_NAME,
            redis_timeout_s=PATIENT_S,
        )
        first, second = [await serve(stack, settings, None) for _ in range(2)]
        assert await tracking(first) and await tracking(second)
        await alternate(first, second, ALTERNATIONS // 4)
        sentinel = redis.Redis(port=deployment.sentinels[0])
        await sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        await sentinel.aclose()
        # Both processes hear of the new master (the Sentinels' +switch-master) and drop what they hold.
        async with asyncio.timeout(PATIENT_S):
            for api in (first, second):
                while await metric(api, 'read_cache_flushes_total{reason="failover"}') < 1:
                    await asyncio.sleep(0.05)
        assert await tracking(first) and await tracking(second)
        await ok(first.put("/api/v1/sprockets/1", json={**SPROCKET, "teeth": 999}))
        assert (await ok(second.get("/api/v1/sprockets/1"))).json()["teeth"] == 999
        await stack.aclose()


async def test_a_lost_tracking_connection_drops_everything_until_it_is_back(
    real_redis_pair: tuple[Client, Client], stack: AsyncExitStack
) -> None:
    """A write made while the reader's invalidations were cut off is in its next read all the same."""
    writer, reader = await tracked_pair(real_redis_pair, stack)
    await ok(writer.post("/api/v1/sprockets", json=SPROCKET))
    for _ in range(2):
        await ok(reader.get("/api/v1/sprockets/1"))
    flushes = await metric(reader, 'read_cache_flushes_total{reason="connection"}')
    # Every tracking connection of both apps, on every node: the writer's come back as the reader's do.
    client = real_redis_pair[0]
    nodes = client.get_nodes() if hasattr(client, "get_nodes") else [None]
    for node in nodes:
        for connection in await _clients(client, node):
            if connection["name"] == CLIENT_NAME:
                await _kill(client, node, connection["id"])
    await ok(writer.put("/api/v1/sprockets/1", json={**SPROCKET, "teeth": 77}))
    assert (await ok(reader.get("/api/v1/sprockets/1"))).json()["teeth"] == 77
    assert await metric(reader, 'read_cache_flushes_total{reason="connection"}') > flushes
    assert await tracking(reader)
    hits = await metric(reader, "read_cache_hits_total")
    for _ in range(2):
        assert (await ok(reader.get("/api/v1/sprockets/1"))).json()["teeth"] == 77
    assert await metric(reader, "read_cache_hits_total") == hits + 1


async def _clients(client: Client, node: Any) -> list[dict[str, Any]]:
    if node is None:
        return await client.client_list()  # type: ignore[no-any-return]
    return await client.execute_command("CLIENT LIST", target_nodes=node)  # type: ignore[no-any-return]


async def _kill(client: Client, node: Any, client_id: str) -> None:
    if node is None:
        await client.execute_command("CLIENT", "KILL", "ID", client_id)
    else:
        await client.execute_command("CLIENT", "KILL", "ID", client_id, target_nodes=node)


async def test_a_write_racing_a_miss_is_never_kept_stale(
    real_redis_pair: tuple[Client, Client], stack: AsyncExitStack
) -> None:
    writer, reader = await tracked_pair(real_redis_pair, stack)
    await ok(writer.post("/api/v1/sprockets", json=SPROCKET))
    await ok(writer.post("/api/v1/factories", json={"chart_data": chart((0, 0, 0))}))
    for n in range(1, RACES + 1):
        # The reader's miss and the write at once: whichever Redis runs first, the next read is the write's.
        await asyncio.gather(
            ok(reader.get("/api/v1/sprockets/1")),
            ok(reader.get("/api/v1/factories/1")),
            ok(writer.put("/api/v1/sprockets/1", json={**SPROCKET, "teeth": n})),
            ok(writer.post("/api/v1/factories/1/chart_data", json=chart((n, n, 1)))),
        )
        assert (await ok(reader.get("/api/v1/sprockets/1"))).json()["teeth"] == n, f"round {n}"
        assert (await ok(reader.get("/api/v1/factories/1"))).json()["chart_data"]["time"][-1] == n, f"round {n}"


async def test_a_held_read_sends_redis_no_command(
    redis_server: Any, stack: AsyncExitStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyring, "REFRESH_S", 3600)  # the API keys' version, read on a clock of its own
    client = connect(redis_server.url, timeout_s=PATIENT_S)
    stack.push_async_callback(client.aclose)
    await client.flushdb()
    api = await serve(stack, Settings(redis_timeout_s=PATIENT_S), client)
    assert await tracking(api)
    await ok(api.post("/api/v1/sprockets", json=SPROCKET))
    await ok(api.post("/api/v1/factories", json={"chart_data": chart((0, 0, 0), (60, 1, 1))}))
    for path, params in reads(1, 1):
        await ok(api.get(path, params=params))
    await client.config_resetstat()
    for _ in range(100):
        for path, params in reads(1, 1):
            await ok(api.get(path, params=params))
    stats = await client.info("commandstats")
    # What else reaches Redis meanwhile: the tracking connection's heartbeat, and the two commands here.
    others = ("cmdstat_ping", "cmdstat_info", "cmdstat_config|resetstat")
    sent = {name: stat["calls"] for name, stat in stats.items() if name not in others}
    assert sent == {}


async def test_on_a_cluster_a_failover_drops_everything_and_reads_stay_fresh(
    tmp_path: Path, stack: AsyncExitStack
) -> None:
    """The replica of the sprockets' master takes over (CLUSTER FAILOVER): writes through one process go to
    it, the other process's reads show them, and it drops what it held once its map shows the new master."""
    with local_cluster(tmp_path, replicas=1, node_timeout_ms=2000) as nodes:
        # The replicas in the slots' layout the apps start with, as gossip spreads it: they track them all.
        async with redis.Redis(port=nodes[0].port) as first, asyncio.timeout(PATIENT_S):
            while any(len(shard) < 4 for shard in await first.execute_command("CLUSTER", "SLOTS")):
                await asyncio.sleep(0.05)
        settings = Settings(redis_url=nodes[0].url, redis_cluster=True, redis_timeout_s=PATIENT_S)
        writer, reader = [await serve(stack, settings, None) for _ in range(2)]
        assert await tracking(writer) and await tracking(reader)
        await ok(writer.post("/api/v1/sprockets", json=SPROCKET))
        for _ in range(2):
            await ok(reader.get("/api/v1/sprockets/1"))
        async with redis.Redis(port=nodes[0].port) as any_node:
            slot = await any_node.execute_command("CLUSTER", "KEYSLOT", "sc:{sprockets}:1")
        replicas = [node for node in nodes if await _serves_as_replica(node.port, slot)]
        async with redis.Redis(port=replicas[0].port) as promoted:
            await promoted.execute_command("CLUSTER", "FAILOVER")
            async with asyncio.timeout(PATIENT_S):
                while (await promoted.execute_command("ROLE"))[0] != b"master":
                    await asyncio.sleep(0.05)
        for teeth in range(10, 30):
            await ok(writer.put("/api/v1/sprockets/1", json={**SPROCKET, "teeth": teeth}))
            assert (await ok(reader.get("/api/v1/sprockets/1"))).json()["teeth"] == teeth
        async with asyncio.timeout(PATIENT_S):
            while await metric(reader, 'read_cache_flushes_total{reason="topology"}') < 1:
                await asyncio.sleep(0.1)
        await ok(writer.put("/api/v1/sprockets/1", json={**SPROCKET, "teeth": 99}))
        assert (await ok(reader.get("/api/v1/sprockets/1"))).json()["teeth"] == 99
        await stack.aclose()


async def _serves_as_replica(port: int, slot: int) -> bool:
    """Whether the node at `port` is a replica of the master of `slot`."""
    async with redis.Redis(port=port) as node:
        role = await node.execute_command("ROLE")
        if role[0] != b"slave":
            return False
        async with redis.Redis(host=role[1].decode(), port=int(role[2])) as master:
            shards = await master.execute_command("CLUSTER", "SLOTS")
            mine = await master.execute_command("CLUSTER", "MYID")
    return any(start <= slot <= end and first[2] == mine for start, end, first, *_ in shards)


@pytest.mark.parametrize(("rights", "kept_by"), [("+@all", "invalidations"), ("+@all -client", "stamps")])
async def test_an_acl_user_gets_invalidations_if_it_may_and_stamps_if_it_may_not(
    redis_server: Any, stack: AsyncExitStack, rights: str, kept_by: str
) -> None:
    """Logged in as a user of its own; one refused CLIENT (so CLIENT TRACKING) still gets right answers,
    its factory answers checked by stamp, and says so in /metrics."""
    admin = connect(redis_server.url, timeout_s=PATIENT_S)
    stack.push_async_callback(admin.aclose)
    await admin.flushdb()
    await admin.execute_command("ACL", "SETUSER", "reader", "reset", "on", ">secret", "~*", "&*", *rights.split())
    stack.push_async_callback(admin.execute_command, "ACL", "DELUSER", "reader")
    url = redis_server.url.replace("redis://", "redis://reader:secret@")
    settings = Settings(redis_url=url, redis_timeout_s=PATIENT_S)
    writer, reader = [await serve(stack, settings, None) for _ in range(2)]
    await ok(writer.post("/api/v1/factories", json={"chart_data": chart((0, 0, 0))}))
    for n in range(1, 4):
        await ok(reader.get("/api/v1/factories/1"))
        await ok(writer.post("/api/v1/factories/1/chart_data", json=chart((n, n, 1))))
        assert (await ok(reader.get("/api/v1/factories/1"))).json()["chart_data"]["time"][-1] == n
    assert await metric(reader, "read_cache_hits_total") > 0
    assert await metric(reader, "read_cache_tracking") == (kept_by == "invalidations")
    refused = await metric(reader, 'read_cache_flushes_total{reason="refused"}')
    assert refused == (kept_by == "stamps")


async def test_a_frozen_redis_stops_answers_from_memory_until_it_answers_again(
    tmp_path: Path, stack: AsyncExitStack
) -> None:
    """No pong for a heartbeat and the Redis timeout: what is held may be stale by the time Redis is back
    (a failover elsewhere, say), so it is dropped, and tracking starts again once Redis answers."""
    with EmbeddedRedis(tmp_path, appendfsync="always") as server:
        api = await serve(stack, Settings(redis_url=server.url, redis_timeout_s=1.0), None)
        assert await tracking(api)
        await ok(api.post("/api/v1/sprockets", json=SPROCKET))
        await ok(api.get("/api/v1/sprockets/1"))
        os.kill(server.pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(PATIENT_S):
                while await metric(api, "read_cache_tracking") != 0:
                    await asyncio.sleep(0.1)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert await metric(api, 'read_cache_flushes_total{reason="connection"}') == 1
        assert await tracking(api)
        hits = await metric(api, "read_cache_hits_total")
        for _ in range(2):
            await ok(api.get("/api/v1/sprockets/1"))
        assert await metric(api, "read_cache_hits_total") == hits + 1
        await stack.aclose()
