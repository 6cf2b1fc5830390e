"""A pooled connection that is reset while it waits in the pool: the next request still gets its answer
(the write fails as a ConnectionError, which the retry answers on a new connection), never a 500, on the
plain asyncio loop the tests use and on uvloop, which `serve` runs; on one Redis, through a Sentinel and
on a cluster. And a pipeline of no commands, which writes nothing, so the client still closes."""

import asyncio
import contextlib
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection

from sprockets_cache.http.app import create_app
from sprockets_cache.ops.embedded import HOST, EmbeddedRedis, find_redis_server, free_port
from sprockets_cache.settings import Settings
from sprockets_cache.store.commands import pipelined
from sprockets_cache.store.connections import Client, connect, connect_with
from tests.conftest import PATIENT_S, lifespan
from tests.sentinel import MASTER_NAME

SPROCKET = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}
CHART = {"time": [10, 7300], "sprocket_production_actual": [1, 2], "sprocket_production_goal": [1, 2]}
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class ResettingProxy:
    """A TCP hop in front of one Redis that resets every connection it carries on request: the app's side
    gets a TCP RST, as from a load balancer or NAT that drops an idle flow, or a Redis killed with bytes unread.
    Redis's own CLIENT KILL would not do: it closes the socket cleanly, the client reads EOF, and
    redis-py's check of a connection taken from the pool already catches that."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._carried: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["ResettingProxy"]:
        server = await asyncio.start_server(self._carry, HOST, 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for downstream, upstream in list(self._carried):
                downstream.transport.abort()
                upstream.transport.abort()
            await server.wait_closed()

    def reset(self) -> None:
        for downstream, upstream in list(self._carried):
            if not downstream.transport.is_closing():  # else its socket may be gone
                # No lingering: the socket's close sends an RST rather than a FIN.
                linger = struct.pack("ii", 1, 0)
                downstream.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            downstream.transport.abort()
            upstream.transport.abort()

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.upstream_port)
        pair = (writer, upstream_writer)
        self._carried.add(pair)
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            self._carried.discard(pair)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


def _pooled(client: Client) -> list[AbstractConnection]:
    """The client's open connections that no call holds."""
    if isinstance(client, RedisCluster):
        held = [connection for node in client.get_nodes() for connection in node._free]
    else:
        held = list(client.connection_pool._available_connections)  # type: ignore[attr-defined]
    return [connection for connection in held if connection.is_connected]


async def _closed(client: Client) -> None:
    """Closes the client's connections; the next call opens new ones."""
    for pool in client.get_nodes() if isinstance(client, RedisCluster) else [client.connection_pool]:
        await pool.disconnect()


async def _reset_and_noticed(proxies: list[ResettingProxy], client: Client) -> None:
    """Resets every connection, and waits until the event loop has handled the reset of each pooled one (its
    reader holds the error), so that the next request writes to a connection already known to be lost.
    Polled at every turn of the loop, so that the keyring's refresh (every half second) is unlikely to take
    and replace a reset connection before the request does."""
    readers = [connection._reader for connection in _pooled(client)]
    assert readers, "no pooled connection to reset: the test would prove nothing"
    for proxy in proxies:
        proxy.reset()
    async with asyncio.timeout(PATIENT_S):
        while not all(reader is not None and reader.exception() for reader in readers):
            await asyncio.sleep(0)


async def _requests_after_resets(settings: Settings, proxies: list[ResettingProxy], client: Client) -> None:
    await client.flushdb()
    app = create_app(settings, client)
    async with lifespan(app) as manager:
        # A 500 as the client sees it, rather than the app's exception raised into the test.
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            sprocket = (await api.post("/api/v1/sprockets", json=SPROCKET)).json()["id"]
            factory = (await api.post("/api/v1/factories", json={"chart_data": CHART})).json()["id"]
            calls: list[tuple[str, str, Any, int]] = [
                ("GET", f"/api/v1/sprockets/{sprocket}", None, 200),  # commands.execute
                ("POST", "/api/v1/sprockets", SPROCKET, 201),  # a script, by commands.execute on one Redis
                ("GET", f"/api/v1/factories/{factory}", None, 200),  # commands.transaction on one Redis
                ("POST", f"/api/v1/factories/{factory}/chart_data", CHART, 200),
                ("GET", "/api/v1/sprockets", None, 200),  # redis-py's own commands and pipeline
                ("GET", "/ready", None, 200),
            ]
            answers = {}
            for method, path, body, _ in calls:
                await _closed(client)  # what the last step's reset left, on nodes its request did not reach
                await api.get("/ready")  # a pooled connection to each master again
                await _reset_and_noticed(proxies, client)
                answers[f"{method} {path}"] = (await api.request(method, path, json=body)).status_code
            assert answers == {f"{method} {path}": status for method, path, _, status in calls}


def _settings(url: str, **options: Any) -> Settings:
    # No audit trail: its flush, 50 ms after each write, would take a reset connection before the request.
    return Settings(redis_url=url, redis_timeout_s=PATIENT_S, audit_trail=False, **options)


def _run(loop: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_request_on_one_redis_after_its_pooled_connections_were_reset_gets_its_answer(
    loop: str, redis_server: EmbeddedRedis
) -> None:
    async def scenario() -> None:
        async with ResettingProxy(redis_server.port).running() as proxy:
            settings = _settings(f"redis://{HOST}:{proxy.port}/0")
            client = connect_with(settings, time_each_command=False)
            try:
                await _requests_after_resets(settings, [proxy], client)
            finally:
                await client.aclose()

    _run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_request_on_a_cluster_after_its_pooled_connections_were_reset_gets_its_answer(
    loop: str, redis_cluster: list[EmbeddedRedis]
) -> None:
    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            proxies = [await stack.enter_async_context(ResettingProxy(node.port).running()) for node in redis_cluster]
            through = {node.port: proxy.port for node, proxy in zip(redis_cluster, proxies, strict=True)}
            settings = _settings(f"redis://{HOST}:{proxies[0].port}", redis_cluster=True)
            client = connect_with(settings, time_each_command=False)
            assert isinstance(client, RedisCluster)
            # The nodes name their own ports; the client is to reach each through its proxy.
            client.nodes_manager.address_remap = lambda address: (address[0], through.get(address[1], address[1]))
            try:
                await _requests_after_resets(settings, proxies, client)
            finally:
                await client.aclose()

    _run(loop, scenario)


@contextlib.contextmanager
def _sentinel(directory: Path, master_port: int) -> Iterator[int]:
    """The port of one Sentinel that names the master at `master_port` (it has no replica to fail over to)."""
    port = free_port()
    config = directory / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind {HOST}\ndir {directory}\nsentinel monitor {MASTER_NAME} {HOST} {master_port} 1\n"
    )
    command = [find_redis_server(), str(config), "--sentinel"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        process.terminate()
        process.wait()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_request_through_a_sentinel_after_its_pooled_connections_were_reset_gets_its_answer(
    loop: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with ResettingProxy(redis_server.port).running() as proxy:
            with _sentinel(tmp_path, proxy.port) as sentinel_port:
                # The app waits at start-up (REDIS_STARTUP_WAIT_S) until the Sentinel names the master.
                settings = _settings("redis://unused.invalid:1/0", redis_sentinels=f"{HOST}:{sentinel_port}")
                client = connect_with(settings, time_each_command=False)
                try:
                    await _requests_after_resets(settings, [proxy], client)
                finally:
                    await client.aclose()

    _run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_pipeline_of_no_commands_takes_no_connection_and_the_client_closes(
    loop: str, redis_server: EmbeddedRedis
) -> None:
    """As a listing whose every factory the read cache holds asks. It used to write no bytes on a pooled
    connection: on the asyncio loop from Python 3.12 on, that write stayed in the transport's buffer, and
    aclose() waited for it to drain until the connect timeout, then failed."""

    async def scenario() -> None:
        client = connect(redis_server.url, timeout_s=PATIENT_S)
        try:
            assert await pipelined(client, []) == []
            assert not _pooled(client)
            await client.ping()
            assert await pipelined(client, []) == []
        finally:
            await client.aclose()

    _run(loop, scenario)
