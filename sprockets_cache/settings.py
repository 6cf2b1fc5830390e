"""Settings, read once from the environment (names in upper case) and passed to create_app()."""

from collections.abc import Mapping
from typing import Annotated

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sprockets_cache import access

MIB = 1024 * 1024


class SettingsError(ValueError):
    """A setting that cannot be used, in one line fit for a terminal."""


def _comma_separated(value: object) -> object:
    return [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value


class Settings(BaseSettings):
    # hide_input_in_errors: a raw key pasted where a digest belongs must not reach the logs.
    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, hide_input_in_errors=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    # REDIS_URL names one node of a Redis Cluster.
    redis_cluster: bool = False
    # Sentinels ("host:port", comma-separated) that name the master: REDIS_URL's host and port are then
    # ignored, its password, database and scheme still apply.
    redis_sentinels: Annotated[tuple[str, ...], NoDecode] = ()
    # The name the Sentinels monitor the master under.
    redis_sentinel_master: str = Field("sprockets", min_length=1)
    # What the Sentinels require (their own `requirepass`, or an ACL user), if anything: not REDIS_URL's.
    redis_sentinel_username: str | None = None
    redis_sentinel_password: str | None = Field(None, repr=False)
    # Each write waits until this many replicas confirm it (WAIT), for at most a third of REDIS_TIMEOUT_S;
    # else 503. 0: a write is acknowledged once the master has it.
    redis_wait_replicas: int = Field(0, ge=0)
    # A Redis command slower than this fails the request with 503.
    redis_timeout_s: float = Field(1.0, gt=0)
    # Connections to Redis per API process (per node on a cluster); unset: 1000.
    redis_max_connections: int | None = Field(None, ge=1)
    # At start-up, how long to wait for Redis to answer before giving up.
    redis_startup_wait_s: float = Field(30.0, ge=0)
    # Event subscribers (GET .../events) per API process, each on a Redis connection of its own; 503 past it.
    events_max_clients: int = Field(100, ge=1)

    max_body_bytes: int = Field(1 * MIB, ge=1024)
    max_chart_body_bytes: int = Field(16 * MIB, ge=1024)
    max_chart_points: int = Field(100_000, ge=1)
    # A request body must arrive within this, so slow clients cannot hold a connection forever.
    body_timeout_s: float = Field(10.0, gt=0)
    # Connections one API process keeps open; while as many are open, uvicorn answers every request with a
    # plain-text 503. Requests are bounded by REQUESTS_AT_ONCE and REQUEST_QUEUE: this is only a ceiling
    # on connections, which clients such as dashboards keep open between requests.
    limit_concurrency: int = Field(10_000, ge=1)
    # API requests one process runs at once (0: no limit); later ones wait their turn in arrival order,
    # at most REQUEST_QUEUE of them, each at most REQUEST_QUEUE_WAIT_S (unset: REDIS_TIMEOUT_S); past
    # either bound a request gets 503 at once (http/admission.py). Generous by default: clients that
    # retry a 503 at once cost more than a wait in the queue (docs/durability.md, "Under overload").
    requests_at_once: int = Field(64, ge=0)
    request_queue: int = Field(10_000, ge=0)
    request_queue_wait_s: float | None = Field(None, gt=0)
    # One JSON line per request on stderr.
    access_log: bool = True
    # Points one response may hold; a page of factories ends early to stay under it.
    max_response_points: int = Field(1_000_000, ge=1)
    # Memory per API process for answers kept until Redis says their keys changed (http/read_cache.py); 0: off.
    read_cache_mb: float = Field(64.0, ge=0)

    # The API keys' SHA-256 hex digests, each with its scopes (access.py); none here or in Redis: writes are open.
    api_keys: Annotated[Mapping[str, frozenset[str]], NoDecode] = Field(
        {}, validation_alias=AliasChoices("api_keys", "sprockets_api_keys")
    )
    # Reads need a key too (when keys are configured).
    private_reads: bool = Field(False, validation_alias=AliasChoices("private_reads", "sprockets_private_reads"))
    # Requests per second per client (API key, else address), and how many may come at once; 0: off.
    rate_limit_per_s: float = Field(0.0, ge=0)
    rate_limit_burst: int = Field(20, ge=1)
    # Every write request, admitted or refused, goes into the capped stream sc:audit (audit.py).
    audit_trail: bool = True
    # Browser origins allowed to call the API (CORS); none by default.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()

    # Raw points older than this, counted back from the factory's newest, are trimmed; 0: kept forever.
    points_retention_s: int = Field(0, ge=0)
    # Trimmed points are first summed into spans of this many seconds; 0: dropped. At most 2**21 s (24
    # days), so a span's sums stay exact in Redis's Lua numbers.
    downsample_s: int = Field(0, ge=0, le=2**21)

    _split_lists = field_validator("cors_origins", "redis_sentinels", mode="before")(_comma_separated)

    @field_validator("redis_sentinels")
    @classmethod
    def _are_addresses(cls, addresses: tuple[str, ...]) -> tuple[str, ...]:
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"each entry must be host:port, not {address!r}")
        return addresses

    @model_validator(mode="after")
    def _one_topology(self) -> "Settings":
        if self.redis_sentinels and self.redis_cluster:
            raise ValueError("set REDIS_SENTINELS or REDIS_CLUSTER, not both")
        return self

    @property
    def queue_wait_s(self) -> float:
        return self.request_queue_wait_s or self.redis_timeout_s

    @property
    def sentinel_auth(self) -> dict[str, str]:
        """How to log in to the Sentinels: redis-py's `username` and `password`, where set."""
        auth = {"username": self.redis_sentinel_username, "password": self.redis_sentinel_password}
        return {name: value for name, value in auth.items() if value}

    @property
    def wait_ms(self) -> int:
        """How long a write waits for replicas: a third of the request's time for Redis, so that a write
        that finds its script gone (one WAIT in vain, a reload, a second WAIT) can still answer."""
        return max(1, int(self.redis_timeout_s * 1000 / 3))

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: object) -> object:
        """Entries as SPROCKETS_API_KEYS spells them (a comma-separated string, or a collection of
        entries), or a mapping of digest to scopes."""
        if isinstance(value, Mapping):
            return {access.parse_entry(digest)[0]: access.parse_scopes(scopes) for digest, scopes in value.items()}
        entries = value.split(",") if isinstance(value, str) else value
        if not isinstance(entries, list | tuple | set | frozenset):
            return value
        return access.parse_entries(str(entry) for entry in entries)

    @model_validator(mode="after")
    def _retention_fits(self) -> "Settings":
        if self.downsample_s and not self.points_retention_s:
            raise ValueError("DOWNSAMPLE_S needs POINTS_RETENTION_S: only points past the retention are downsampled")
        if self.downsample_s and self.points_retention_s % self.downsample_s:
            raise ValueError(
                f"DOWNSAMPLE_S ({self.downsample_s}) must divide POINTS_RETENTION_S ({self.points_retention_s})"
            )
        return self

    @classmethod
    def from_env(cls) -> "Settings":
        """Read from the environment: each field by its name in upper case (e.g. REDIS_URL). A bad value
        is a SettingsError naming the variable and what is wrong, in one line."""
        try:
            return cls()
        except ValidationError as error:
            first = error.errors()[0]
            name = _variable(str(first["loc"][0])) if first["loc"] else "settings"
            message = str(first["msg"]).removeprefix("Value error, ")
            raise SettingsError(f"{name}: {message}") from None


def _variable(field: str) -> str:
    """The environment variable a field is read from: its last alias (SPROCKETS_API_KEYS), else its name."""
    alias = Settings.model_fields[field].validation_alias if field in Settings.model_fields else None
    choices = alias.choices if isinstance(alias, AliasChoices) else []
    return str(choices[-1] if choices else field).upper()
