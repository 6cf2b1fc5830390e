"""The audit trail: one entry per write request, admitted or refused, in the capped stream sc:audit.

An entry holds the time, the key's id (a digest prefix, or `anonymous`), the client's address, the
method, the route, the resource's id, the status and the request id: never a key, a body or a
header's value. Read it with `redis-cli XREVRANGE sc:audit + - COUNT 20`.

Entries wait in the process for up to FLUSH_S and go to Redis together, as one JSON argument of one
script (lua/audit_append.lua): a write request costs no round trip of its own, and about a microsecond
of the API's CPU, where an XADD each through a pipeline cost 30 (measured). A crash of the process
loses at most that last moment's entries.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import orjson
import redis.asyncio as redis

from sprockets_cache.store import keys
from sprockets_cache.store.connections import Client
from sprockets_cache.store.scripts import Script

log = logging.getLogger(__name__)

# Entries the stream keeps, about: Redis trims whole nodes of it (MAXLEN ~), so a few more at times.
KEPT = 100_000
# The longest an entry waits in the process before it is written, in seconds.
FLUSH_S = 0.05
# Entries one script call appends at most, so that no call holds Redis up for long.
BATCH = 1000
# While Redis is away, entries held for a retry at most; past it the oldest are dropped, and logged.
MAX_PENDING = 10_000
# At shutdown, how long the last entries may take to be written, in seconds.
CLOSE_S = 2.0
FIELDS = ("time", "key", "client", "method", "route", "resource", "status", "request_id")


class AuditTrail:
    def __init__(self, client: Client, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._append = Script(client, "audit_append")
        self._pending: list[list[str]] = []
        self._scheduled = False
        # The flushes under way, held so that none is garbage-collected half done, and close waits for them.
        self._flushes: set[asyncio.Task[None]] = set()

    def record(self, entry: list[str]) -> None:
        """Queue an entry (the values of FIELDS, in order) to be written within FLUSH_S."""
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
        """Write every queued entry; on failure keep them (up to MAX_PENDING) for the next flush."""
        entries, self._pending = self._pending, []
        try:
            for start in range(0, len(entries), BATCH):
                async with asyncio.timeout(self.timeout_s):
                    await self._append(keys=[keys.AUDIT], args=[KEPT, orjson.dumps(entries[start : start + BATCH])])
        except (redis.RedisError, TimeoutError) as error:
            kept = (entries + self._pending)[-MAX_PENDING:]
            dropped = len(entries) + len(self._pending) - len(kept)
            self._pending = kept
            log.warning("cannot write %d audit entries (%s); %d dropped", len(entries), error, dropped)

    async def close(self) -> None:
        """Write what is queued: wait for the flushes under way, then flush the rest; in CLOSE_S at most,
        so that a slow Redis cannot hold up a shutdown."""
        try:
            async with asyncio.timeout(CLOSE_S):
                await asyncio.gather(*self._flushes)
                await self.flush()
        except TimeoutError:
            log.warning("the audit trail's last entries were not written within %s s", CLOSE_S)


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
