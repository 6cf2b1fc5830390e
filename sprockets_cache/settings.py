"""Settings, read once from the environment (names in upper case) and passed to create_app()."""

import re
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _comma_separated(value: object) -> object:
    return [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value


class Settings(BaseSettings):
    # hide_input_in_errors: a raw key pasted where a digest belongs must not reach the logs.
    model_config = SettingsConfigDict(frozen=True, populate_by_name=True, hide_input_in_errors=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    # REDIS_URL names one node of a Redis Cluster.
    redis_cluster: bool = False
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
    # Connections one API process serves at once; uvicorn answers 503 past it.
    limit_concurrency: int = Field(1000, ge=1)
    # One JSON line per request on stderr.
    access_log: bool = True
    # Points one response may hold; a page of factories ends early to stay under it.
    max_response_points: int = Field(1_000_000, ge=1)

    # SHA-256 hex digests of the API keys that may write; none: writes are open.
    api_keys: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), validation_alias=AliasChoices("api_keys", "sprockets_api_keys")
    )
    # Reads need a key too (when keys are configured).
    private_reads: bool = Field(False, validation_alias=AliasChoices("private_reads", "sprockets_private_reads"))
    # Requests per second per client (API key, else address), and how many may come at once; 0: off.
    rate_limit_per_s: float = Field(0.0, ge=0)
    rate_limit_burst: int = Field(20, ge=1)
    # Browser origins allowed to call the API (CORS); none by default.
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()

    # Raw points older than this, counted back from the factory's newest, are trimmed; 0: kept forever.
    points_retention_s: int = Field(0, ge=0)
    # Trimmed points are first summed into spans of this many seconds; 0: dropped. At most 2**21 s (24
    # days), so a span's sums stay exact in Redis's Lua numbers.
    downsample_s: int = Field(0, ge=0, le=2**21)

    _split_keys = field_validator("api_keys", "cors_origins", mode="before")(_comma_separated)

    @field_validator("api_keys")
    @classmethod
    def _are_digests(cls, digests: frozenset[str]) -> frozenset[str]:
        for digest in digests:
            if not _DIGEST.fullmatch(digest):
                raise ValueError("each entry must be the SHA-256 hex digest of a key (64 lower-case hex digits)")
        return digests

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
        """Read from the environment: each field by its name in upper case (e.g. REDIS_URL)."""
        return cls()
