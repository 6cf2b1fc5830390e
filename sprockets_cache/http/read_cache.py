"""Answers kept in this process's memory, and how they are kept true.

With a Redis reached over TCP or a unix socket, Redis tells this process which keys changed
(store/tracking.py), and an answer is dropped the moment a key it was read from changes: a held answer
is sent with no Redis command at all. What an answer depends on (keys.what_changed): a sprocket, its
hash; a factory's answers (any range, bucket, summary), its keys; a page of sprockets or factories, the
index and every id on it. Before an answer is sent from memory, the invalidations that have reached the
process are taken in, so a write acknowledged to any process is seen by the next read through this one
on the same host (docs/scaling.md). A read that misses takes a ticket first; an invalidation of what it
depends on that arrives while it reads Redis voids its answer, which is then not kept. A process's own
writes drop what they change themselves, even when they fail or time out (they may have happened). Any
fault of the invalidations (a connection lost, a failover, a cluster's layout changed, FLUSHALL) drops
everything, and nothing is sent from memory until every node's tracking is back.

Without tracking (fakeredis, TLS, a Redis that refuses it), factory answers are kept with their
factory's stamp (version and created_at), and sent only after Redis says, in one small round trip, that
the stamp is still that one; everything else is read from Redis.
"""

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import NamedTuple

from sprockets_cache.http.observability import Metrics
from sprockets_cache.store.keys import Changed, what_changed
from sprockets_cache.store.records import Stamp
from sprockets_cache.store.tracking import Invalidations

# A query, normalised: ("factory", id, from, to, bucket) and so on (see factory_key()).
Key = tuple[Hashable, ...]
# An entry's cost beyond its body: the key, the tuple and the dict's slot, roughly; and each thing it
# depends on, in the index of what depends on what.
ENTRY_OVERHEAD_BYTES = 400
DEPENDENCY_BYTES = 100
# Larger answers are not kept: one of them would push out hundreds of small ones.
ENTRY_AT_MOST_BYTES = 4 * 1024 * 1024
# The invalidations remembered for reads in flight; past this, those reads are not kept.
REMEMBERED_CHANGES = 100_000


class Entry(NamedTuple):
    body: bytes
    version: int
    # The points read for it (before any bucketing), as a page of the listing counts them.
    points: int
    # What it depends on (tracking), or the factory's stamp it was read at (stamps).
    depends: tuple[Changed, ...]
    stamp: Stamp | None
    # A page's id to continue after (None: the last page).
    next_id: int | None = None


class Ticket(NamedTuple):
    """Taken before a miss reads Redis: what the cache had heard by then."""

    generation: int
    heard: int


def factory_key(factory_id: int, first: int, last: int, bucket_s: int | None) -> Key:
    # Buckets of one second sum nothing: the same answer as none (every resolution is at least 1 s).
    return "factory", factory_id, first, last, bucket_s if bucket_s is not None and bucket_s > 1 else None


class ReadCache:
    """Encoded answers by query, least recently used first out, bounded by bytes."""

    def __init__(self, max_bytes: int, metrics: Metrics) -> None:
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.bytes = 0
        self.invalidations: Invalidations | None = None
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._dependents: dict[Changed, set[Key]] = {}
        # Invalidations heard, each numbered; the number of the last one of each thing changed, from _floor.
        self._heard = 0
        self._changed_at: dict[Changed, int] = {}
        self._floor = 0
        self._generation = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def tracking(self) -> bool:
        """Whether Redis's invalidations keep this cache (else factory answers are checked by stamp)."""
        return self.enabled and self.invalidations is not None and not self.invalidations.refused

    def __contains__(self, query: Key) -> bool:
        """Whether an answer to `query` is kept."""
        return query in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    # Kept by Redis's invalidations

    def held(self, query: Key, count_miss: bool = True) -> Entry | None:
        """The answer to `query` if held and still Redis's; None: a miss (take a ticket, read Redis, keep()).
        `count_miss`=False: a look whose miss the usual way counts (held.HeldReads)."""
        invalidations = self.invalidations
        assert invalidations is not None
        invalidations.take_in()
        entry = self._entries.get(query) if invalidations.confirmed else None
        if entry is None:
            if count_miss:
                self.metrics.read_cache_misses.inc()
            return None
        self._entries.move_to_end(query)
        self.metrics.read_cache_hits.inc()
        return entry

    def look(self, query: Key) -> tuple[Entry | None, Ticket | None]:
        """With tracking: the answer held, or None and the ticket to keep the answer read from Redis with."""
        if not self.tracking:
            return None, None
        entry = self.held(query)
        return entry, None if entry is not None else self.ticket()

    def ticket(self) -> Ticket | None:
        """What a miss keeps its answer with; None while the invalidations are not confirmed."""
        invalidations = self.invalidations
        if invalidations is None:
            return None
        invalidations.take_in()
        return Ticket(self._generation, self._heard) if invalidations.confirmed else None

    def keep(
        self,
        query: Key,
        ticket: Ticket | None,
        depends: Iterable[Changed],
        body: bytes,
        version: int = 0,
        points: int = 0,
        next_id: int | None = None,
    ) -> None:
        """Keep the answer a miss read after taking `ticket`, unless what it depends on changed since."""
        if ticket is None or self.invalidations is None:
            return
        self.invalidations.take_in()  # what arrived while the miss read Redis
        if ticket.generation != self._generation or ticket.heard < self._floor:
            return
        depends = tuple(depends)
        changed_at = self._changed_at
        if any(changed_at.get(thing, -1) > ticket.heard for thing in depends):
            return  # its read may be older than the change
        self._put(query, Entry(body, version, points, depends, None, next_id))

    def changed(self, keys: list[bytes]) -> None:
        """Redis's invalidation of `keys`."""
        self.metrics.read_cache_invalidations.inc(len(keys))
        self.drop(thing for key in keys for thing in what_changed(key))

    def drop(self, things: Iterable[Changed]) -> None:
        """Drop every answer that depends on any of `things`, and void the reads in flight that do."""
        for thing in things:
            self._heard += 1
            self._changed_at[thing] = self._heard
            for query in self._dependents.pop(thing, ()):
                self._remove(query)
        if len(self._changed_at) > REMEMBERED_CHANGES:
            self._changed_at.clear()
            self._floor = self._heard
        self.metrics.read_cache_bytes.set(self.bytes)

    def flush(self, reason: str) -> None:
        """Drop everything, and void every read in flight: nothing held can be trusted any more."""
        self._generation += 1
        self._entries.clear()
        self._dependents.clear()
        self._changed_at.clear()
        self._floor = self._heard
        self.bytes = 0
        self.metrics.read_cache_flushes.labels(reason).inc()
        self.metrics.read_cache_bytes.set(0)
        invalidations = self.invalidations
        self.metrics.read_cache_tracking.set(int(invalidations is not None and invalidations.confirmed))

    # Kept by stamp

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
        self._put(query, Entry(body, stamp.version, points, (), stamp))

    def _put(self, query: Key, entry: Entry) -> None:
        if not self.enabled:
            return
        self._remove(query)
        size = _size(entry)
        if size > min(ENTRY_AT_MOST_BYTES, self.max_bytes):
            return
        self._entries[query] = entry
        self.bytes += size
        for thing in entry.depends:
            self._dependents.setdefault(thing, set()).add(query)
        while self.bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))
            self.metrics.read_cache_evictions.inc()
        self.metrics.read_cache_bytes.set(self.bytes)

    def _remove(self, query: Key) -> None:
        entry = self._entries.pop(query, None)
        if entry is None:
            return
        self.bytes -= _size(entry)
        for thing in entry.depends:
            dependents = self._dependents.get(thing)
            if dependents is not None:
                dependents.discard(query)
                if not dependents:
                    del self._dependents[thing]


def _size(entry: Entry) -> int:
    return len(entry.body) + ENTRY_OVERHEAD_BYTES + DEPENDENCY_BYTES * len(entry.depends)
