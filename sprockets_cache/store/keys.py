"""Every Redis key name the service uses, in one place.

Keys that one atomic write touches together share a hash tag (the part in
braces), so the same code runs on Redis Cluster: all sprocket keys share
`{sprockets}`, and each factory's keys share `{factory:<id>}`, so a cluster
shards by factory.
"""

PREFIX = "sc:"

# Production points are kept in buckets of this many seconds of time.
BUCKET_WIDTH_S = 3600

SPROCKET_TAG = "{sprockets}"
FACTORY_TAG = "{factories}"

SPROCKET_NEXT_ID = f"{PREFIX}{SPROCKET_TAG}:next_id"
SPROCKET_INDEX = f"{PREFIX}{SPROCKET_TAG}:index"
FACTORY_NEXT_ID = f"{PREFIX}{FACTORY_TAG}:next_id"
FACTORY_INDEX = f"{PREFIX}{FACTORY_TAG}:index"
SEEDS = f"{PREFIX}seeds"
# The store's format: SCHEMA_VERSION, set when the first factory is created (see schema.py).
SCHEMA = f"{PREFIX}schema"
SCHEMA_VERSION = 2


def key_for_sprocket(sprocket_id: int) -> str:
    return f"{PREFIX}{SPROCKET_TAG}:{sprocket_id}"


def sprocket_prefix() -> str:
    """What a Lua script prepends to a new sprocket's id to name its hash."""
    return f"{PREFIX}{SPROCKET_TAG}:"


def key_for_factory(factory_id: int) -> str:
    return f"{PREFIX}{{factory:{factory_id}}}:meta"


def key_for_factory_buckets(factory_id: int) -> str:
    return f"{PREFIX}{{factory:{factory_id}}}:buckets"


def key_for_factory_events(factory_id: int) -> str:
    """A stream of the factory's writes: version, first and last time, points."""
    return f"{PREFIX}{{factory:{factory_id}}}:events"


def factory_points_prefix(factory_id: int) -> str:
    """Bucket keys (sorted sets of points) are this prefix plus the bucket number (time // BUCKET_WIDTH_S)."""
    return f"{PREFIX}{{factory:{factory_id}}}:points:"


def key_for_factory_points(factory_id: int, bucket: int) -> str:
    return f"{factory_points_prefix(factory_id)}{bucket}"


def key_for_factory_sums(factory_id: int) -> str:
    """A hash: for each bucket number, "points:actual total:goal total" of the bucket."""
    return f"{PREFIX}{{factory:{factory_id}}}:sums"


def key_for_factory_spans(factory_id: int) -> str:
    """A sorted set of the factory's downsampled past: score = span start, member =
    "start:actual total:goal total:points" (see docs/retention.md)."""
    return f"{PREFIX}{{factory:{factory_id}}}:spans"


def key_for_factory_scratch(factory_id: int) -> str:
    """A sorted set that a write script fills and deletes within one step: never there between steps."""
    return f"{PREFIX}{{factory:{factory_id}}}:scratch"


# What each API process's read cache hears about from Redis (tracking.py): every sprocket key, every
# factory's keys and the factory index.
TRACKED_PREFIXES = (f"{PREFIX}{SPROCKET_TAG}:", f"{PREFIX}{{factory:", f"{PREFIX}{FACTORY_TAG}:")
_SPROCKET_KEYS = TRACKED_PREFIXES[0].encode()
_FACTORY_KEYS = TRACKED_PREFIXES[1].encode()
_FACTORY_LIST_KEYS = TRACKED_PREFIXES[2].encode()
# What a changed key says changed: a sprocket, a factory (either: its id), or one of these.
SPROCKET_LIST = "sprockets"
FACTORY_LIST = "factories"
Changed = str | tuple[str, int]


def sprocket_changed(sprocket_id: int) -> Changed:
    return "sprocket", sprocket_id


def factory_changed(factory_id: int) -> Changed:
    return "factory", factory_id


def what_changed(key: bytes) -> tuple[Changed, ...]:
    """What a write to `key` changed, as readers depend on it: a sprocket (its hash: the sprocket, and
    the list of sprockets, which shows it), the sprockets' index or next id (SPROCKET_LIST), a factory's
    keys (the factory), the factories' index or next id (FACTORY_LIST); nothing for other keys."""
    if key.startswith(_SPROCKET_KEYS):
        rest = key[len(_SPROCKET_KEYS) :]
        return (sprocket_changed(int(rest)), SPROCKET_LIST) if rest.isdigit() else (SPROCKET_LIST,)
    if key.startswith(_FACTORY_KEYS):
        number = key[len(_FACTORY_KEYS) :].partition(b"}")[0]
        return (factory_changed(int(number)),) if number.isdigit() else ()
    if key.startswith(_FACTORY_LIST_KEYS):
        return (FACTORY_LIST,)
    return ()


def key_for_idempotency(scope: str, digest: str) -> str:
    """`digest` is a hash of the client's Idempotency-Key: clients never name a key."""
    return f"{PREFIX}idempotency:{scope}:{digest}"


def created_markers(kind: str, created_id: int) -> tuple[str, str] | tuple[str]:
    """A key in each hash slot that a create of `kind` ("sprockets", "factories") with this id writes:
    written by the look for what it created on that slot's master (lua/created_check.lua), so that a
    WAIT after it counts that master's replicas (see Store.save_idempotency). A factory's create also
    takes its id, and lists it, in `{factories}`. The keys hold nothing of use and expire."""
    if kind == "sprockets":
        return (f"{PREFIX}{SPROCKET_TAG}:replicated",)
    return (f"{PREFIX}{{factory:{created_id}}}:replicated", f"{PREFIX}{FACTORY_TAG}:replicated")


# The field of a sprocket's or factory's hash that holds the tag of the Idempotency-Key it was created
# with (on a cluster with REDIS_WAIT_REPLICAS only): what tells it from another create given its id.
CREATED_WITH = "idempotency"


def idempotency_tag(digest: str) -> str:
    """What CREATED_WITH holds of an Idempotency-Key's digest (web.idempotency_digest): 64 bits of it."""
    return digest[:16]


def key_for_deleted_sprocket(sprocket_id: int) -> str:
    """The tag a deleted sprocket was created with (CREATED_WITH), kept as long as its key's record: a
    replay of its create still finds it. Written only where creates are tagged."""
    return f"{PREFIX}{SPROCKET_TAG}:deleted:{sprocket_id}"


def key_for_rate_limit(client: str) -> str:
    """`client` is "key:<digest prefix>" or "ip:<address>"."""
    return f"{PREFIX}ratelimit:{client}"


# API keys held in Redis (python -m sprockets_cache keys add): their SHA-256 digests, never the keys.
API_KEY_TAG = "{apikeys}"
# hash: digest -> JSON {"scopes": [...], "created_at": RFC 3339}
API_KEYS = f"{PREFIX}{API_KEY_TAG}:keys"
# hash: digest -> RFC 3339 time the key was last seen (to within a few seconds)
API_KEYS_LAST_USED = f"{PREFIX}{API_KEY_TAG}:last_used"
# string: a counter bumped by every add and revoke, which each API process polls
API_KEYS_VERSION = f"{PREFIX}{API_KEY_TAG}:version"

# stream: one entry per write request, admitted or refused (capped; see audit.py)
AUDIT = f"{PREFIX}audit"
