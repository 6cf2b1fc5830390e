"""Connections to Redis: one client for requests, one for event subscribers, both failing fast."""

from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
    await connection.send_command(*args)
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


def redacted(url: str) -> str:
    """The URL without its password, fit for a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
