"""Running commands on a connection of a client's pool, with less of redis-py around them than its own
calls put there: what the store's hot paths send (BENCHMARKS.md has what it saves)."""

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

from sprockets_cache.errors import NotReplicated
from sprockets_cache.store.connections import Client
from sprockets_cache.store.sentinels import FollowingPool

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
        if isinstance(client, redis.Redis) and isinstance(client.connection_pool, FollowingPool):
            # The master may have lost its replicas to a failover that we have not heard of yet.
            client.connection_pool.doubt()
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
        # RedisClusterException: no node answered; the call's own error says more (and maps to a 503).
        with contextlib.suppress(redis.RedisError, RedisClusterException):
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
        # WAIT's reply, so the connection stays in step: on a replica (a demoted master) an error of its own,
        # which must not hide the write's (READONLY, MOVED).
        with contextlib.suppress(redis.ResponseError):
            await connection.read_response()
        raise
    return reply, await connection.read_response()


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
    *_, replies = await _read_replies(connection, len(commands) + 2)  # OK, QUEUED for each command, EXEC's
    if isinstance(replies, Exception):
        raise replies  # EXECABORT: a command was refused when queued, and nothing ran
    return replies


async def pipelined(client: Client, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """The replies of read commands, errors among them as exceptions, in one round trip on one Redis (as
    transaction(), without MULTI; a dropped connection sends them all again); on a cluster, concurrent
    calls, each routed by its key. No commands, no call: on the plain asyncio loop from Python 3.12 on, a
    write of no bytes stays in the transport's buffer (CPython gh-155888), so the loop runs its write callback
    at every turn and closing the connection waits for a drain that never comes."""
    if not commands:
        return []
    if isinstance(client, RedisCluster):
        return list(await asyncio.gather(*(client.execute_command(*c) for c in commands), return_exceptions=True))
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        return await connection.retry.call_with_retry(  # type: ignore[no-any-return]
            lambda: _send_pipeline(connection, commands), lambda _: connection.disconnect()
        )
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


async def _send_pipeline(connection: redis.Connection, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    await connection.send_packed_command(b"".join(map(hiredis.pack_command, commands)))
    return await _read_replies(connection, len(commands))


async def _read_replies(connection: redis.Connection, count: int) -> list[Any]:
    """The next `count` replies on `connection`, errors as exceptions among them. Those already received
    are taken from hiredis's reader at once: redis-py's read_response() costs 5-8 µs a reply around
    hiredis's parsing, which a transaction of a few dozen commands pays for each QUEUED."""
    parser = connection._parser
    reader = parser._reader if isinstance(parser, _AsyncHiredisParser) else None
    replies: list[Any] = []
    while len(replies) < count:
        reply = NOT_ENOUGH_DATA if reader is None else reader.gets()
        if reply is NOT_ENOUGH_DATA:
            try:
                reply = await connection.read_response()
            except redis.ResponseError as error:
                reply = error
        elif isinstance(reply, redis.ConnectionError):
            raise reply
        replies.append(reply)
    return replies
