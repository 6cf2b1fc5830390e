"""Settings, read once from the environment and passed to create_app()."""

import os
from collections.abc import Mapping
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    # A Redis command slower than this fails the request with 503.
    redis_timeout_s: float = 1.0
    # Connections to Redis per API process; a request waits up to redis_timeout_s for one.
    redis_max_connections: int = 64
    # At start-up, how long to wait for Redis to answer before giving up.
    redis_startup_wait_s: float = 30.0
    max_body_bytes: int = 1 * MIB
    max_chart_body_bytes: int = 16 * MIB
    max_chart_points: int = 100_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        defaults = cls()
        return cls(
            redis_url=env.get("REDIS_URL", defaults.redis_url),
            redis_cluster=env.get("REDIS_CLUSTER", "false").strip().lower() in ("1", "true", "yes"),
            redis_timeout_s=float(env.get("REDIS_TIMEOUT_S", defaults.redis_timeout_s)),
            redis_max_connections=int(env.get("REDIS_MAX_CONNECTIONS", defaults.redis_max_connections)),
            redis_startup_wait_s=float(env.get("REDIS_STARTUP_WAIT_S", defaults.redis_startup_wait_s)),
            max_body_bytes=int(env.get("MAX_BODY_BYTES", defaults.max_body_bytes)),
            max_chart_body_bytes=int(env.get("MAX_CHART_BODY_BYTES", defaults.max_chart_body_bytes)),
            max_chart_points=int(env.get("MAX_CHART_POINTS", defaults.max_chart_points)),
        )
