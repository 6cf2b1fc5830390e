"""Connections to Redis: one client for requests, one for event subscribers, both failing fast."""

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
)

from sprockets_cache.errors import NotReplicated
from sprockets_cache.settings import Settings

Client = redis.Redis | RedisCluster
# What a cluster says when a key's master is not where the client thinks: gone, demoted or moved.
_LAYOUT_CHANGED = (
    redis.ConnectionError,
    redis.TimeoutError,
    MovedError,
    AskError,
    ClusterDownError,
    ReadOnlyError,
    SlotNotCoveredError,
    TryAgainError,
)

# What a client sees as 503: Redis is down, loading, or too slow to answer; or a cluster is down (CLUSTERDOWN,
# as while a dead master's replica takes over), or part of it (MASTERDOWN, a slot that no node serves).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    SlotNotCoveredError,
)
# The same, or no answer within an asyncio.timeout put around a call (it raises the builtin TimeoutError).
UNAVAILABLE_OR_LATE: tuple[type[Exception], ...] = (*UNAVAILABLE_ERRORS, TimeoutError)
# An error reply of Redis's: a refusal (see refusal()) or a bug of ours.
ERROR_REPLIES: tuple[type[Exception], ...] = (redis.ResponseError,)
# Error replies with which Redis refuses a write it has not applied, while it still serves reads: the
# reason (as the metric's label) by the reply's first word. redis-py strips the word from OOM and
# READONLY replies, which it raises as classes of their own.
REFUSALS = {
    "OOM": "out_of_memory",
    "READONLY": "read_only",
    "MISCONF": "persistence_failing",
    "NOREPLICAS": "no_replicas",
}
_REFUSED_CLASSES: dict[type[Exception], str] = {
    redis.OutOfMemoryError: "out_of_memory",
    redis.ReadOnlyError: "read_only",
}
# How long one XREAD of a subscriber waits for a write; its client's read timeout is longer.
EVENTS_BLOCK_MS = 10_000


def refusal(error: Exception) -> str | None:
    """Why Redis refused a write, when `error` is such a refusal (see REFUSALS), else None."""
    reason = _REFUSED_CLASSES.get(type(error))
    if reason is None and isinstance(error, redis.ResponseError):
        message = str(error)
        # A pipeline's reply names the failed command first: "Command # 1 (...) of pipeline caused error: ".
        reason = REFUSALS.get(message.rpartition("caused error: ")[2].split(" ", 1)[0])
    return reason


def connect(
    url: str,
    cluster: bool = False,
    timeout_s: float = 1.0,
    max_connections: int | None = None,
    *,
    time_each_command: bool = True,
    sentinels: Sequence[str] = (),
    master: str = "",
    sentinel_auth: Mapping[str, str] | None = None,
) -> Client:
    """A client that fails fast and never piles up connections: one quick retry on a dropped
    connection, never on a timeout, since a write that timed out may have happened.

    Connecting, and unless `time_each_command` is False each command, fails after `timeout_s`. The
    app passes False and bounds each request's Redis calls itself (see deadlines.py): redis-py's
    per-command timeout starts a task and a timer for every command.

    At most `max_connections` (default 1000; per node on a cluster) are open; past that a call
    fails at once (503) rather than queue: uvicorn's LIMIT_CONCURRENCY bounds requests before that.
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout_s if time_each_command else None,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    }
    if cluster:
        return RedisCluster.from_url(url, max_connections=max_connections or 1000, **options)
    if sentinels:
        connections = max_connections or 1000
        return _sentinel_master(
            url, sentinels, master, timeout_s, sentinel_auth, max_connections=connections, **options
        )
    pool = redis.ConnectionPool.from_url(url, max_connections=max_connections or 1000, **options)
    return redis.Redis.from_pool(pool)


def connect_with(settings: Settings, max_connections: int | None = None, *, time_each_command: bool = True) -> Client:
    """`connect` to the Redis the settings name: one, a cluster, or the master the Sentinels name."""
    return connect(
        settings.redis_url,
        settings.redis_cluster,
        settings.redis_timeout_s,
        max_connections,
        time_each_command=time_each_command,
        sentinels=settings.redis_sentinels,
        master=settings.redis_sentinel_master,
        sentinel_auth=settings.sentinel_auth,
    )


class _SentinelPool(SentinelConnectionPool):
    """Closes the connections to the Sentinels with its own, so closing the client leaves nothing open."""

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.sentinel_manager.aclose()


def _sentinel_master(
    url: str,
    sentinels: Sequence[str],
    master: str,
    timeout_s: float,
    sentinel_auth: Mapping[str, str] | None,
    **options: Any,
) -> redis.Redis:
    """A client of the master the Sentinels (each "host:port") name `master`, logged in to them with
    `sentinel_auth` (username, password) if given. Each new connection asks them where the master is; a
    connection that finds its server demoted (READONLY) or gone is dropped, so after a failover the next
    connection, or the retry of the failed call, reaches the new master. From `url` only the password,
    user, database and scheme (rediss: TLS) apply, to the master and its replicas."""
    settings: dict[str, Any] = dict(parse_url(url))
    if "path" in settings:
        raise ValueError("REDIS_URL must be redis:// or rediss:// with Sentinels, not a unix socket")
    settings.pop("host", None)
    settings.pop("port", None)
    settings["ssl"] = settings.pop("connection_class", None) is redis.SSLConnection
    addresses = [(host, int(port)) for host, _, port in (address.rpartition(":") for address in sentinels)]
    # The Sentinels answer in their own time, not the one commands get (which may be none: see connect).
    timeouts = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    manager = Sentinel(addresses, sentinel_kwargs={**timeouts, **(sentinel_auth or {})})  # type: ignore[no-untyped-call]
    client: redis.Redis = manager.master_for(master, connection_pool_class=_SentinelPool, **settings, **options)
    return client


async def command(client: Client, *args: Any) -> Any:
    """A command that needs no response callback: by `execute` on one Redis, by redis-py on a cluster."""
    if isinstance(client, RedisCluster):
        return await client.execute_command(*args)
    return await execute(client, *args)


async def execute(client: redis.Redis, *args: Any) -> Any:
    """One command on a connection of `client`'s pool, with the client's retry on a dropped connection,
    but not the rest of what redis-py's execute_command puts around each call (a closure for the retry,
    its observability hooks, response callbacks): 8-18 µs less CPU a request, 7-12% of it
    (BENCHMARKS.md). The reply is Redis's as hiredis parses it, so only for commands that have no
    response callback, such as EVALSHA and HMGET."""
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        return await connection.retry.call_with_retry(
            lambda: _send_and_read(connection, args), lambda _: connection.disconnect()
        )
    finally:
        await pool.release(connection)


async def _send_and_read(connection: redis.Connection, args: tuple[Any, ...]) -> Any:
    # hiredis packs in C what redis-py's asyncio connection packs in Python: a 10,000-point write's
    # 20,000 arguments in a quarter of the time, the same bytes.
    await connection.send_packed_command(hiredis.pack_command(args))
    return await connection.read_response()


async def execute_and_wait(client: Client, key: Any, replicas: int, wait_ms: int, *args: Any) -> Any:
    """execute(), then WAIT on the same connection, in the same round trip: NotReplicated unless
    `replicas` replicas confirm, within `wait_ms`, that they have this write and every one before it.

    On a cluster both go to the master that owns `key`'s slot, whose replicas WAIT counts; a failed call
    there (the master gone or demoted, the slot moved) has the client learn the cluster's layout again,
    as redis-py does after its own failed calls, so that a retry finds the new master."""
    if isinstance(client, RedisCluster):
        reply, confirmed = await _send_and_wait_on_cluster(client, key, args, replicas, wait_ms)
    else:
        pool = client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            reply, confirmed = await connection.retry.call_with_retry(
                lambda: _send_and_wait(connection, args, replicas, wait_ms), lambda _: connection.disconnect()
            )
        finally:
            await pool.release(connection)
    if confirmed < replicas:
        raise NotReplicated(confirmed, replicas)
    return reply


async def _send_and_wait_on_cluster(
    client: RedisCluster, key: Any, args: tuple[Any, ...], replicas: int, wait_ms: int
) -> tuple[Any, int]:
    try:
        node = client.get_node_from_key(key)
        assert node is not None  # None only when a replica is asked for
        connection = node.acquire_connection()
        try:
            return await _send_and_wait(connection, args, replicas, wait_ms)
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            node.release(connection)
    except _LAYOUT_CHANGED:
        with contextlib.suppress(redis.RedisError):
            await client.nodes_manager.initialize()
        raise


async def _send_and_wait(
    connection: redis.Connection, args: tuple[Any, ...], replicas: int, wait_ms: int
) -> tuple[Any, int]:
    wait: tuple[Any, ...] = ("WAIT", replicas, wait_ms)
    await connection.send_packed_command(hiredis.pack_command(args) + hiredis.pack_command(wait))
    try:
        reply = await connection.read_response()
    except redis.ResponseError:
        await connection.read_response()  # WAIT's reply, so the connection stays in step
        raise
    return reply, await connection.read_response()


def connect_subscribers(
    url: str,
    cluster: bool,
    timeout_s: float,
    max_clients: int,
    sentinels: Sequence[str] = (),
    master: str = "",
    sentinel_auth: Mapping[str, str] | None = None,
) -> Client:
    """A second client, for event subscribers that block in XREAD, so they never take the connections
    requests need. On one Redis each subscriber holds one of at most `max_clients` connections and
    none is waited for (see Store.subscribe); a cluster client bounds each node's connections instead."""
    options: dict[str, Any] = {
        "socket_timeout": EVENTS_BLOCK_MS / 1000 + timeout_s,
        "socket_connect_timeout": timeout_s,
        "max_connections": max_clients,
    }
    if cluster:
        return RedisCluster.from_url(url, **options)
    if sentinels:
        return _sentinel_master(url, sentinels, master, timeout_s, sentinel_auth, health_check_interval=30, **options)
    pool = redis.BlockingConnectionPool.from_url(url, timeout=0, health_check_interval=30, **options)
    return redis.Redis.from_pool(pool)


async def transaction(client: Client, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """The commands' replies, run in one MULTI/EXEC (on a cluster their keys must share a slot).

    On one Redis, sent in one write on a pooled connection and read without redis-py's pipeline, which
    costs about as much again for thousands of commands; the client's retry on a dropped connection
    holds, since a transaction that did not reach EXEC did nothing. Replies as hiredis parses them."""
    if isinstance(client, RedisCluster):
        async with client.pipeline(transaction=True) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute())
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        replies: list[Any] = await connection.retry.call_with_retry(
            lambda: _send_transaction(connection, commands), lambda _: connection.disconnect()
        )
    except BaseException:
        await connection.disconnect()  # replies may be left unread on it
        raise
    finally:
        await pool.release(connection)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


async def _send_transaction(connection: redis.Connection, commands: Sequence[tuple[Any, ...]]) -> Any:
    await connection.send_packed_command(b"".join(map(hiredis.pack_command, [("MULTI",), *commands, ("EXEC",)])))
    for _ in range(len(commands) + 1):
        await connection.read_response()  # OK, then QUEUED for each command
    return await connection.read_response()


def redacted(url: str) -> str:
    """The URL without its password, fit for a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
