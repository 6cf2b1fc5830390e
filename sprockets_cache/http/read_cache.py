"""Factory answers kept in memory, each with the stamp of the factory it was read at.

An answer is kept with the stamp read in the same step as its points, and served from here only when
the factory's stamp in Redis, read first in one small round trip, is still that one. Every write that
changes any answer of a factory (points, a trim, downsampling, a create) bumps its version in the same
Lua step (store/lua/factory_write.lua), and a factory made again under the same id after the store was
emptied has another created_at, so an answer from here is never staler than Redis, whichever process
wrote.
"""

from collections import OrderedDict
from typing import NamedTuple

from sprockets_cache.http.observability import Metrics
from sprockets_cache.store.records import Stamp

# (factory id, from, to, bucket): the query, normalised (see key()).
Key = tuple[int, int, int, int | None]
# An entry's cost beyond its body: the key, the stamp, the tuple and the dict's slot, roughly.
ENTRY_OVERHEAD_BYTES = 400
# Larger answers are not kept: one of them would push out hundreds of small ones.
ENTRY_AT_MOST_BYTES = 4 * 1024 * 1024


class Entry(NamedTuple):
    stamp: Stamp
    body: bytes
    # The points read for it (before any bucketing), as a page of the listing counts them.
    points: int


def key(factory_id: int, first: int, last: int, bucket_s: int | None) -> Key:
    # Buckets of one second sum nothing: the same answer as none (every resolution is at least 1 s).
    return factory_id, first, last, bucket_s if bucket_s is not None and bucket_s > 1 else None


class ReadCache:
    """Encoded factory answers by query, least recently used first out, bounded by bytes."""

    def __init__(self, max_bytes: int, metrics: Metrics) -> None:
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.bytes = 0
        self._entries: OrderedDict[Key, Entry] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __contains__(self, query: Key) -> bool:
        """Whether an answer to `query` is kept, at whatever stamp."""
        return query in self._entries

    def get(self, query: Key, stamp: Stamp | None) -> Entry | None:
        """The answer to `query` read at `stamp`, if kept (None: a miss, its stamp not read)."""
        entry = self._entries.get(query)
        if entry is None or entry.stamp != stamp:
            self.metrics.read_cache_misses.inc()
            return None
        self._entries.move_to_end(query)
        self.metrics.read_cache_hits.inc()
        return entry

    def put(self, query: Key, stamp: Stamp, body: bytes, points: int) -> None:
        """Keep `body`, the answer to `query` read at `stamp`, in place of any older one."""
        if not self.enabled:
            return
        size = len(body) + ENTRY_OVERHEAD_BYTES
        old = self._entries.pop(query, None)
        if old is not None:
            self.bytes -= len(old.body) + ENTRY_OVERHEAD_BYTES
        if size <= min(ENTRY_AT_MOST_BYTES, self.max_bytes):
            self._entries[query] = Entry(stamp, body, points)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= len(evicted.body) + ENTRY_OVERHEAD_BYTES
                self.metrics.read_cache_evictions.inc()
        self.metrics.read_cache_bytes.set(self.bytes)
