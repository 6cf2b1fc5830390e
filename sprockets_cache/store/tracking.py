"""Redis telling this process which of the service's keys changed (server-assisted client-side caching).

One connection per Redis node, outside the client's pools, registers `CLIENT TRACKING on BCAST` with the
service's key prefixes, redirected to its own id, and subscribes to `__redis__:invalidate` itself: RESP2,
so the pools' connections never see a push, and no other connection whose loss would go unnoticed carries
its messages. BCAST rather than per-key tracking: Redis remembers the keys a connection reads only for the
connection that reads them, and ours read on the pools. BCAST also orders each invalidation before the
write's reply: Redis sends the broadcast messages of an event-loop turn before it writes that turn's
replies, so on one host an invalidation is in our socket before the writer hears its write succeeded.

The socket is ours, non-blocking: `take_in()` reads whatever has reached it without waiting, which a read
answered from memory does first, whatever order the event loop runs things in, and so does a miss before
it keeps its answer; else every TAKE_IN_EVERY_S. A heartbeat PINGs each connection; a connection lost,
silent or refused, a null invalidation (FLUSHALL, FLUSHDB), a Sentinel failover or a change in a cluster's
nodes or slots calls `flushed(reason)`, and `confirmed` is False until every node's tracking is back.
"""

import asyncio
import contextlib
import logging
import select
import socket
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.event import AsyncAfterSlotsCacheRefreshEvent, AsyncEventListenerInterface

from sprockets_cache.store import keys
from sprockets_cache.store.connections import PLAIN_CONNECTIONS, Client
from sprockets_cache.store.sentinels import FollowingPool

log = logging.getLogger(__name__)

CHANNEL = b"__redis__:invalidate"
# What CLIENT LIST calls each tracking connection.
CLIENT_NAME = "sprockets-cache:tracking"
# A PING a second; a connection with no pong for HEARTBEAT_S + the Redis timeout is given up.
HEARTBEAT_S = 1.0
# What has arrived is taken in before every read from memory, and at least this often: not as each message
# arrives, which would wake the event loop for every few writes (7% of a POST sprocket's CPU).
TAKE_IN_EVERY_S = 0.1
_READ_BYTES = 1 << 16


class Unsupported(Exception):
    """The client's connections are not plain TCP or unix sockets (TLS, or fakeredis in tests)."""


class RefusedError(Exception):
    """Redis refused the tracking handshake (an ACL without CLIENT, an old server)."""


class _Node:
    """One node's tracking connection."""

    def __init__(self, address: Any, credentials: Sequence[str], owner: "Invalidations") -> None:
        self.address = address  # (host, port) or a unix socket's path
        self.credentials = credentials  # AUTH's arguments, or none
        self.owner = owner
        self.sock: socket.socket | None = None
        self.reader = hiredis.Reader()
        self.confirmed = False
        self.last_pong = 0.0

    async def open(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_UNIX if isinstance(self.address, str) else socket.AF_INET
        if family == socket.AF_INET and ":" in self.address[0]:
            family = socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        self.sock, self.reader = sock, hiredis.Reader()
        async with asyncio.timeout(timeout_s):
            await loop.sock_connect(sock, self.address)
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.credentials:
                await self._ask(("AUTH", *self.credentials))
            await self._ask(("CLIENT", "SETNAME", CLIENT_NAME))
            own_id = await self._ask(("CLIENT", "ID"))
            prefixes = [item for prefix in keys.TRACKED_PREFIXES for item in ("PREFIX", prefix)]
            await self._ask(("CLIENT", "TRACKING", "on", "REDIRECT", own_id, "BCAST", *prefixes))
            await self._ask(("SUBSCRIBE", CHANNEL))
        self.last_pong = loop.time()
        self.confirmed = True
        self.owner.watch(self, sock.fileno())

    async def _ask(self, command: tuple[Any, ...]) -> Any:
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(self.sock, hiredis.pack_command(command))
        while (reply := self.reader.gets()) is False:
            data = await loop.sock_recv(self.sock, _READ_BYTES)
            if not data:
                raise ConnectionError("closed during the handshake")
            self.reader.feed(data)
        if isinstance(reply, hiredis.ReplyError):
            raise RefusedError(str(reply))
        return reply

    def take_in(self) -> None:
        """Read what has reached the socket, without waiting, and act on each message in it."""
        sock = self.sock
        if sock is None or not self.confirmed:
            return
        try:
            while True:
                data = sock.recv(_READ_BYTES)
                if not data:
                    raise ConnectionError("closed by the server")
                self.reader.feed(data)
                if len(data) < _READ_BYTES:
                    break
        except BlockingIOError:
            pass
        except OSError as error:
            self.lose(f"lost: {error}")
            return
        try:
            while (message := self.reader.gets()) is not False:
                self._act(message)
        except hiredis.ProtocolError as error:
            self.lose(f"protocol error: {error}")

    def _act(self, message: Any) -> None:
        if not isinstance(message, list) or len(message) < 2:
            self.lose(f"unexpected reply {message!r}")
        elif message[0] == b"message" and message[1] == CHANNEL and message[2] is None:
            self.owner.flushed("flushall", str(self.address))  # FLUSHALL or FLUSHDB
        elif message[0] == b"message" and message[1] == CHANNEL:
            self.owner.changed(message[2])
        elif message[0] == b"pong":
            self.last_pong = asyncio.get_running_loop().time()

    def ping(self) -> None:
        if self.sock is not None and self.confirmed:
            try:
                self.sock.send(hiredis.pack_command(("PING",)))
            except OSError as error:
                self.lose(f"lost: {error}")

    def lose(self, why: str) -> None:
        was = self.confirmed
        self.close()
        if was:
            self.owner.flushed("connection", f"{self.address}: {why}")

    def close(self) -> None:
        self.confirmed = False
        sock, self.sock = self.sock, None
        if sock is not None:
            self.owner.unwatch(sock.fileno())
            sock.close()


class Invalidations:
    """The tracking connections of a client: to a single Redis, to the master the Sentinels name, or to
    each node of a cluster (replicas too: one promoted while a cut-off master still answers us reports
    the writes it takes). `changed(keys)` gets each invalidation's keys, `flushed(reason)` each fault
    after which nothing held can be trusted; `confirmed`: every node's tracking is registered and heard."""

    def __init__(
        self,
        client: Client,
        timeout_s: float,
        changed: Callable[[list[bytes]], None],
        flushed: Callable[[str], None],
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.changed, self._flushed = changed, flushed
        self.credentials = _credentials(client)
        self.nodes: dict[Any, _Node] = {}
        self._task: asyncio.Task[None] | None = None
        self._topology: Any = None
        self._resync = asyncio.Event()
        # Redis refused tracking: the cache checks stamps instead, for good.
        self.refused = False
        # Whether every node's tracking is registered and heard from.
        self.confirmed = False
        self._poll = select.poll()
        self._watched: dict[int, _Node] = {}
        self._closing = False

    def take_in(self) -> None:
        """Act on every invalidation that has reached this process: before an answer from memory. One
        poll() for every node's socket, which costs a held read about a microsecond; a recv() that finds
        nothing would cost it five, in its exception."""
        for fd, _ in self._poll.poll(0):
            if fd in self._watched:  # else closed by a node before it in this loop
                self._watched[fd].take_in()

    def watch(self, node: _Node, fd: int) -> None:
        self._poll.register(fd, select.POLLIN)
        self._watched[fd] = node
        self._count()

    def unwatch(self, fd: int) -> None:
        if self._watched.pop(fd, None) is not None:
            self._poll.unregister(fd)
        self._count()

    def _count(self) -> None:
        nodes = self.nodes
        self.confirmed = bool(nodes) and all(node.confirmed for node in nodes.values())

    def flushed(self, reason: str, detail: str = "") -> None:
        log.info("read cache flushed (%s) %s", reason, detail)
        self._flushed(reason)

    async def start(self) -> None:
        """Track every node, waiting at most the Redis timeout for them, and keep at it until aclose()."""
        with contextlib.suppress(redis.RedisError, OSError):
            await self._sync()
        await asyncio.gather(*(self._open(node) for node in self.nodes.values()))
        if isinstance(self.client, RedisCluster):
            self.client.nodes_manager._event_dispatcher.register_listeners(
                {AsyncAfterSlotsCacheRefreshEvent: [_Listener(self)]}
            )
        pool = getattr(self.client, "connection_pool", None)
        if isinstance(pool, FollowingPool):
            pool.on_switch.append(self._switched)
        self._task = asyncio.create_task(self._run(), name="read cache invalidations")
        self._every(asyncio.get_running_loop())

    def _every(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is not None:
            self.take_in()
            loop.call_later(TAKE_IN_EVERY_S, self._every, loop)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # Also woken and told: redis-py's cluster client can turn a cancel into an error of its own.
            self._closing = True
            self._resync.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        nodes, self.nodes = self.nodes, {}
        for node in nodes.values():
            node.close()

    def _switched(self) -> None:
        """The Sentinels named another master: nothing is held or kept until it is tracked."""
        for node in self.nodes.values():
            node.close()
        self.flushed("failover")
        self._resync.set()

    def topology_changed(self) -> None:
        """A cluster client learnt the slots' layout anew: follow it if its nodes or masters moved."""
        if isinstance(self.client, RedisCluster) and _layout(self.client) != self._topology:
            if self._topology is not None:
                self.flushed("topology")
            self._resync.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                await self._sync()
            except (redis.RedisError, OSError) as error:
                log.debug("tracking: cannot learn the nodes (%s)", error)
            deadline = HEARTBEAT_S + self.timeout_s
            for node in list(self.nodes.values()):
                node.take_in()
                if node.confirmed and loop.time() - node.last_pong > deadline:
                    node.lose("no pong")
                node.ping()
                if not node.confirmed and not self.refused:
                    await self._open(node)
            self._resync.clear()
            # Not asyncio.timeout: on Python 3.11 it can swallow a cancel that comes as it expires.
            beat = loop.call_later(HEARTBEAT_S, self._resync.set)
            try:
                await self._resync.wait()
            finally:
                beat.cancel()

    async def _open(self, node: _Node) -> None:
        node.close()
        try:
            await node.open(self.timeout_s)
            # Anything held was read before this node's tracking was (again) in place.
            self.flushed("tracking_started", str(node.address))
        except (OSError, TimeoutError, ConnectionError, hiredis.ProtocolError) as error:
            node.close()
            log.debug("tracking %s: %s", node.address, error)
        except RefusedError as error:
            node.close()
            log.warning("Redis at %s refused client tracking (%s): answers are checked by stamp", node.address, error)
            self.refused = True
            self.flushed("refused")

    async def _sync(self) -> None:
        """The nodes to track: made and dropped as the client's Redis, master or cluster changes."""
        if isinstance(self.client, RedisCluster):
            if self._topology is not None:
                await self.client.nodes_manager.initialize()  # a promotion elsewhere, heard about a second late
            self._topology = _layout(self.client)
            wanted = {(node.host, node.port) for node in self.client.get_nodes()}
        else:
            pool = self.client.connection_pool
            if isinstance(pool, FollowingPool):
                wanted = {tuple(pool.master_address or await pool.get_master_address())}
            else:
                options = pool.connection_kwargs
                wanted = {options["path"] if "path" in options else (options["host"], int(options["port"]))}
        for address in set(self.nodes) - wanted:
            self.nodes.pop(address).close()
        for address in wanted - set(self.nodes):
            self.nodes[address] = _Node(address, self.credentials, self)
        self._count()


class _Listener(AsyncEventListenerInterface):
    """redis-py's cluster client calls this after it learns the slots again."""

    def __init__(self, invalidations: Invalidations) -> None:
        self.invalidations = invalidations

    async def listen(self, event: object) -> None:
        self.invalidations.topology_changed()


def _layout(client: RedisCluster) -> tuple[frozenset[str], tuple[str, ...]]:
    """The cluster's nodes, and each slot's master, as the client knows them."""
    manager = client.nodes_manager
    masters = tuple(manager.slots_cache[slot][0].name if slot in manager.slots_cache else "" for slot in range(16384))
    return frozenset(manager.nodes_cache), masters


def _credentials(client: Client) -> tuple[str, ...]:
    """AUTH's arguments for the client's nodes; Unsupported unless they are reached over TCP or a unix socket."""
    if isinstance(client, RedisCluster):
        options = client.nodes_manager.connection_kwargs
    elif isinstance(client, redis.Redis):
        options = client.connection_pool.connection_kwargs
        options = {**options, "connection_class": client.connection_pool.connection_class}
    else:
        raise Unsupported(type(client).__name__)
    kind = options.get("connection_class")
    if kind not in PLAIN_CONNECTIONS:
        raise Unsupported(getattr(kind, "__name__", "no connection class"))
    password, username = options.get("password"), options.get("username")
    return () if password is None else (username, password) if username else (password,)
