"""Connections to Redis: one client for requests, one for event subscribers, both failing fast."""

from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

Client = redis.Redis | RedisCluster

# What a client sees as 503: Redis is down, loading, or too slow to answer.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
# The same, or no answer within an asyncio.timeout put around a call (it raises the builtin TimeoutError).
UNAVAILABLE_OR_LATE: tuple[type[Exception], ...] = (*UNAVAILABLE_ERRORS, TimeoutError)
# How long one XREAD of a subscriber waits for a write; its client's read timeout is longer.
EVENTS_BLOCK_MS = 10_000


def connect(
    url: str,
    cluster: bool = False,
    timeout_s: float = 1.0,
    max_connections: int | None = None,
    *,
    time_each_command: bool = True,
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
    pool = redis.ConnectionPool.from_url(url, max_connections=max_connections or 1000, **options)
    return redis.Redis.from_pool(pool)


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


def connect_subscribers(url: str, cluster: bool, timeout_s: float, max_clients: int) -> Client:
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
