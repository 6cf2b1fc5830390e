"""The audit trail: one entry per write request, admitted or refused, in the capped stream sc:audit.

An entry holds the time, the key's id (a digest prefix, or `anonymous`), the client's address, the
method, the route, the resource's id, the status and the request id: never a key, a body or a
header's value. Read it with `redis-cli XREVRANGE sc:audit + - COUNT 20`.

Entries wait in the process for up to FLUSH_S and go to Redis in one pipeline, so a write request
costs no round trip of its own; a crash of the process loses at most that last moment's entries.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as redis

from sprockets_cache import keys
from sprockets_cache.connections import Client

log = logging.getLogger(__name__)

# Entries the stream keeps, about: Redis trims whole nodes of it (MAXLEN ~), so a few more at times.
KEPT = 100_000
# The longest an entry waits in the process before it is written, in seconds.
FLUSH_S = 0.05
# While Redis is away, entries held for a retry at most; past it the oldest are dropped, and logged.
MAX_PENDING = 10_000
FIELDS = ("time", "key", "client", "method", "route", "resource", "status", "request_id")


class AuditTrail:
    def __init__(self, client: Client, timeout_s: float) -> None:
        self.client: Any = client
        self.timeout_s = timeout_s
        self._pending: list[dict[str, str]] = []
        self._scheduled = False
        # The flushes under way, held so that none is garbage-collected half done, and close waits for them.
        self._flushes: set[asyncio.Task[None]] = set()

    def record(self, entry: dict[str, str]) -> None:
        """Queue an entry (FIELDS, as text) to be written within FLUSH_S."""
        self._pending.append(entry)
        if not self._scheduled:
            self._scheduled = True
            flush = asyncio.get_running_loop().create_task(self._flush_soon())
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_S)
        self._scheduled = False  # entries recorded from now on wait for a flush of their own
        await self.flush()

    async def flush(self) -> None:
        """Write every queued entry in one pipeline; on failure keep them (up to MAX_PENDING) for the next."""
        entries, self._pending = self._pending, []
        if not entries:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.client.pipeline(transaction=False) as pipe:
                    for entry in entries:
                        pipe.xadd(keys.AUDIT, entry, maxlen=KEPT, approximate=True)
                    await pipe.execute()
        except (redis.RedisError, TimeoutError) as error:
            kept = (entries + self._pending)[-MAX_PENDING:]
            dropped = len(entries) + len(self._pending) - len(kept)
            self._pending = kept
            log.warning("cannot write %d audit entries (%s); %d dropped", len(entries), error, dropped)

    async def close(self) -> None:
        """Write what is queued: wait for the flushes under way (FLUSH_S at most), then flush the rest."""
        await asyncio.gather(*self._flushes)
        await self.flush()


@contextlib.asynccontextmanager
async def kept(client: Client, timeout_s: float, enabled: bool) -> AsyncIterator[AuditTrail | None]:
    """An audit trail that is written out when the block ends; None when auditing is off."""
    if not enabled:
        yield None
        return
    trail = AuditTrail(client, timeout_s)
    try:
        yield trail
    finally:
        await trail.close()
