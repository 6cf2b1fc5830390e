"""Factory answers kept in memory, each with the stamp of the factory it was read at.

An answer is served from here only when the factory's stamp in Redis, read first in one small round
trip, is the one it was read at. Every write that changes any answer of a factory (points, a trim,
downsampling, a create) bumps its version in the same Lua step (store/lua/factory_write.lua), and a
factory made again under the same id after the store was emptied has another created_at, so an
answer from here is never staler than Redis, whichever process wrote.
"""

from collections import OrderedDict

from sprockets_cache.http.observability import Metrics
from sprockets_cache.store.records import Stamp

# (factory id, from, to, bucket): the query, normalised (see key()).
Key = tuple[int, int, int, int | None]
# An entry's cost beyond its body: the key, the stamp, the tuple and the dict's slot, roughly.
ENTRY_OVERHEAD_BYTES = 400
# Larger answers are not kept: one of them would push out hundreds of small ones.
ENTRY_AT_MOST_BYTES = 4 * 1024 * 1024


def key(factory_id: int, first: int, last: int, bucket_s: int | None) -> Key:
    # Buckets of one second sum nothing: the same answer as none (every resolution is at least 1 s).
    return factory_id, first, last, bucket_s if bucket_s is not None and bucket_s > 1 else None


class ReadCache:
    """Encoded factory answers by query, least recently used first out, bounded by bytes."""

    def __init__(self, max_bytes: int, metrics: Metrics) -> None:
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.bytes = 0
        self._entries: OrderedDict[Key, tuple[Stamp, bytes]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, query: Key, stamp: Stamp) -> bytes | None:
        """The answer to `query` read at `stamp`, if kept."""
        entry = self._entries.get(query)
        if entry is None or entry[0] != stamp:
            self.metrics.read_cache_misses.inc()
            return None
        self._entries.move_to_end(query)
        self.metrics.read_cache_hits.inc()
        return entry[1]

    def put(self, query: Key, stamp: Stamp, body: bytes) -> None:
        """Keep `body`, the answer to `query` read at `stamp`, in place of any older one."""
        size = len(body) + ENTRY_OVERHEAD_BYTES
        old = self._entries.pop(query, None)
        if old is not None:
            self.bytes -= len(old[1]) + ENTRY_OVERHEAD_BYTES
        if size <= min(ENTRY_AT_MOST_BYTES, self.max_bytes):
            self._entries[query] = (stamp, body)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.bytes -= len(evicted) + ENTRY_OVERHEAD_BYTES
                self.metrics.read_cache_evictions.inc()
        self.metrics.read_cache_bytes.set(self.bytes)
