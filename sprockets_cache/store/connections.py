"""Connections to Redis: one client for requests, one for event subscribers, both failing fast."""

from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, SSLConnection, UnixDomainSocketConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    SlotNotCoveredError,
)

from sprockets_cache.settings import Settings
from sprockets_cache.store.sentinels import FollowingConnection, FollowingPool, FollowingSSLConnection

Client = redis.Redis | RedisCluster
_C = TypeVar("_C", redis.Redis, RedisCluster)
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
    fails at once (503) rather than queue: REQUESTS_AT_ONCE (http/admission.py) bounds requests before that.
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout_s if time_each_command else None,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    }
    if cluster:
        return _guarded(RedisCluster.from_url(url, max_connections=max_connections or 1000, **options))
    if sentinels:
        connections = max_connections or 1000
        return _sentinel_master(
            url, sentinels, master, timeout_s, sentinel_auth, max_connections=connections, **options
        )
    pool = _Pool.from_url(url, max_connections=max_connections or 1000, **options)
    return _guarded(redis.Redis.from_pool(pool))


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


class _WritesOnlyWhileConnected(AbstractConnection):
    """Fails a write to a connection that the event loop has already found reset (by Redis, or by a proxy or
    NAT on the way, while it sat in a pool) with the ConnectionError that the retry and the 503 expect, and
    before any byte is sent, so the retry is safe for any command. Else the transport raises what is no
    OSError, and the request got a 500: TypeError from asyncio's writelines on Python 3.12, 3.13 before
    3.13.10 and 3.14.0 (CPython gh-136234), RuntimeError ("the handler is closed") from uvloop on any
    version. A pool's check of a connection taken misses it: a reset leaves the reader holding an error,
    neither EOF nor data, and a cluster's nodes hand out connections unchecked.

    A plain method that returns the coroutine: an async override would cost every command a coroutine more."""

    def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> Coroutine[Any, Any, None]:
        writer = self._writer
        if writer is not None and writer.transport.is_closing():
            return self._lost()
        return super().send_packed_command(command, check_health)

    async def _lost(self) -> None:
        await self.disconnect(nowait=True)
        raise redis.ConnectionError(f"Error while writing to {self._host_error()}: the connection was reset.")


class _Connection(_WritesOnlyWhileConnected, redis.Connection):
    pass


class _SSLConnection(_WritesOnlyWhileConnected, SSLConnection):
    pass


class _UnixConnection(_WritesOnlyWhileConnected, UnixDomainSocketConnection):
    pass


class _SentinelConnection(_WritesOnlyWhileConnected, FollowingConnection):
    pass


class _SentinelSSLConnection(_WritesOnlyWhileConnected, FollowingSSLConnection):
    pass


_GUARDED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    redis.Connection: _Connection,
    SSLConnection: _SSLConnection,
    UnixDomainSocketConnection: _UnixConnection,
    SentinelManagedConnection: _SentinelConnection,
    SentinelManagedSSLConnection: _SentinelSSLConnection,
}


# Connections over TCP or a unix socket, without TLS: those a tracking connection (tracking.py) can copy.
PLAIN_CONNECTIONS = (_Connection, _UnixConnection, _SentinelConnection)


def _guarded(client: _C) -> _C:
    """`client`, its connections made as their _WritesOnlyWhileConnected kind. Set after the client is made,
    as from_url picks the class by the URL's scheme and RedisCluster takes none; before any connection
    is (a KeyError for a class we do not know yet, at start-up)."""
    if isinstance(client, RedisCluster):
        options = client.nodes_manager.connection_kwargs  # what every node found later is made with
        options["connection_class"] = _GUARDED[options["connection_class"]]
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = options["connection_class"]
    else:
        pool = client.connection_pool
        pool.connection_class = _GUARDED[pool.connection_class]
    return client


class _Pool(redis.ConnectionPool):
    """Takes and gives back a pool's connections without what redis-py 8 puts around each (an asyncio lock,
    four awaited observability records and a released-connection event): GET sprocket's CPU per request
    went from about 115 to 98 µs, 13% less. One event loop uses the pool, and between awaits nothing else
    touches its lists, so the lock guards nothing here; we use neither the records (OpenTelemetry) nor
    the event (re-authentication by a streaming credential provider). The check that a connection taken
    is still connected and has nothing left to read stays."""

    async def get_connection(self, *_: Any, **__: Any) -> AbstractConnection:
        connection: AbstractConnection = self.get_available_connection()  # type: ignore[no-untyped-call]
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        if connection.should_reconnect():  # type: ignore[no-untyped-call]
            await connection.disconnect()
        self._in_use_connections.remove(connection)
        self._available_connections.append(connection)


class _SentinelPool(_Pool, FollowingPool):
    """Follows the Sentinels (sentinels.py), and closes the connections to them with its own, so closing the
    client leaves nothing open."""

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
    connection that finds its server demoted (READONLY) or gone is dropped, and when they name another
    master every connection to the old one is (sentinels.py), so after a failover the next connection, or
    the retry of the failed call, reaches the new master. From `url` only the password,
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
    for sentinel in manager.sentinels:
        _guarded(sentinel)
    client: redis.Redis = manager.master_for(master, connection_pool_class=_SentinelPool, **settings, **options)
    return _guarded(client)


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
        return _guarded(RedisCluster.from_url(url, **options))
    if sentinels:
        return _sentinel_master(url, sentinels, master, timeout_s, sentinel_auth, health_check_interval=30, **options)
    pool = redis.BlockingConnectionPool.from_url(url, timeout=0, health_check_interval=30, **options)
    return _guarded(redis.Redis.from_pool(pool))


def redacted(url: str) -> str:
    """The URL without its password, fit for a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
