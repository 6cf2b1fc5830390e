"""Following the Sentinels: a client of the master they name leaves a server as soon as they name another.

redis-py's SentinelConnectionPool asks the Sentinels where the master is only when it opens a connection,
and drops only its idle connections when the answer changes. A master cut off from its replicas and the
Sentinels, but not from us, breaks none of our connections: we would go on writing to it after a replica
was promoted, until it rejoined as a replica and threw those writes away (or, with REDIS_WAIT_REPLICAS,
answer 503 all that time). So each pool also listens for the Sentinels' +switch-master messages, asks
them again when a write finds too few replicas or a connection breaks, and on a new answer drops every
connection to the old master: the idle ones at once, the ones in use when they are given back.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection

log = logging.getLogger(__name__)

# What a Sentinel publishes when it names a new master: "<name> <old ip> <old port> <new ip> <new port>".
SWITCH_CHANNEL = "+switch-master"
# Asked again at most this often: every write answers NotReplicated while a master has lost its replicas.
ASK_EVERY_S = 0.25
# A lost subscription is made again after this long, doubled at each failure up to RESUBSCRIBE_MAX_S.
RESUBSCRIBE_MIN_S = 0.5
RESUBSCRIBE_MAX_S = 10.0
# A subscription quiet for this long is pinged; quiet twice in a row (no pong either), it is made again.
QUIET_S = 15.0


class FollowingPool(SentinelConnectionPool):
    """A SentinelConnectionPool that follows the Sentinels (see the module's doc), from its first
    connection until aclose()."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._doubted = asyncio.Event()
        self._following: asyncio.Task[None] | None = None
        # Called when the Sentinels name another master (the read cache's invalidations follow it).
        self.on_switch: list[Callable[[], None]] = []

    def doubt(self) -> None:
        """Have the Sentinels asked again soon where the master is. Cheap and never waits: for error paths."""
        self._doubted.set()

    async def get_master_address(self) -> Any:
        """Where the Sentinels say the master is (redis-py's choice: the first Sentinel that names a master
        it thinks up); asked by each new connection, and by the follower."""
        if self._following is None:
            self._following = asyncio.create_task(self._follow(), name=f"follow {self.service_name}")
        address = await self.sentinel_manager.discover_master(self.service_name)
        old, self.master_address = self.master_address, address
        if old is not None and old != address:
            log.warning("the Sentinels name %s:%s the master of %r, not %s:%s", *address, self.service_name, *old)
            for connection in self._in_use_connections:
                connection.mark_for_reconnect()  # type: ignore[no-untyped-call]  # dropped when given back (see connections._Pool.release)
            with contextlib.suppress(redis.RedisError):
                await self.disconnect(inuse_connections=False)
            for switched in self.on_switch:
                switched()
        return address

    async def aclose(self) -> None:
        task, self._following = self._following, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await super().aclose()

    async def _follow(self) -> None:
        sentinels = list(self.sentinel_manager.sentinels)
        listeners = [asyncio.create_task(self._listen(sentinel)) for sentinel in sentinels]
        try:
            while True:
                await self._doubted.wait()
                self._doubted.clear()
                # MasterNotFoundError (a ConnectionError): no Sentinel names a master it thinks up, as while
                # the master is down and not yet replaced. Then nothing changes.
                with contextlib.suppress(redis.RedisError):
                    await self.get_master_address()
                await asyncio.sleep(ASK_EVERY_S)
        finally:
            for listener in listeners:
                listener.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)

    async def _listen(self, sentinel: redis.Redis) -> None:
        """Subscribes to `sentinel`'s +switch-master for good, again after each loss, with backoff."""
        pause = RESUBSCRIBE_MIN_S
        while True:
            try:
                async with sentinel.pubsub() as pubsub:
                    await pubsub.subscribe(SWITCH_CHANNEL)
                    pause = RESUBSCRIBE_MIN_S
                    self.doubt()  # a switch may have happened while we were not subscribed
                    await self._read_switches(sentinel, pubsub)
            except (redis.RedisError, OSError) as error:
                log.debug("lost %r (%s)", sentinel, error)
            await asyncio.sleep(pause)
            pause = min(2 * pause, RESUBSCRIBE_MAX_S)

    async def _read_switches(self, sentinel: redis.Redis, pubsub: Any) -> None:
        quiet = 0
        while quiet < 2:
            message = await pubsub.get_message(timeout=QUIET_S)
            if message is None:
                quiet += 1
                await pubsub.ping()
                continue
            quiet = 0
            if message["type"] == "message" and message["data"].split(b" ", 1)[0] == self.service_name.encode():
                # Asked first from now on: a Sentinel that has not heard of the switch yet may still name
                # the old master as up (the failover's leader does for seconds after a SENTINEL FAILOVER).
                sentinels = self.sentinel_manager.sentinels
                if sentinel in sentinels:
                    sentinels.insert(0, sentinels.pop(sentinels.index(sentinel)))
                self.doubt()


class FollowingConnection(SentinelManagedConnection):
    """Has its pool ask the Sentinels again when it breaks: redis-py disconnects with nowait=True only on
    an error (a reset, a timeout, a cancelled call), never when it closes a connection in good order."""

    async def disconnect(
        self,
        nowait: bool = False,
        error: Exception | None = None,
        failure_count: int | None = None,
        health_check_failed: bool = False,
    ) -> None:
        if nowait:
            with contextlib.suppress(ReferenceError):  # the pool holds itself here weakly
                doubt = getattr(self.connection_pool, "doubt", None)
                if doubt is not None:
                    doubt()
        await super().disconnect(nowait, error, failure_count, health_check_failed)


class FollowingSSLConnection(FollowingConnection, SSLConnection):
    pass
