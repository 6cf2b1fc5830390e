"""Reads from memory (the read cache, kept by Redis's invalidations): how many Redis commands a held read
sends, and how soon a write acknowledged through one API process is in a read through another."""

import time

import httpx
import redis
import report
import servers
import workloads

HELD_READS = 10_000
ALTERNATIONS = 1_000
# Sent meanwhile by clocks of their own: the tracking connections' heartbeat (PING), the API keys' version
# (GET, twice a second); and by this measurement (INFO, CONFIG RESETSTAT).
BACKGROUND = {"cmdstat_ping", "cmdstat_get", "cmdstat_info", "cmdstat_config|resetstat"}
COMMANDS_TARGET = report.Target(0, False, "0")
DELAY_TARGET = report.Target(2, False, "<= 2")
SPROCKET_FIELDS = ("teeth", "pitch_diameter", "outside_diameter", "pitch")


def commands_per_held_read(api: servers.Server, redis_url: str, paths: list[str]) -> float:
    """Redis's own count (INFO commandstats) of the commands sent while `api` answers HELD_READS reads of
    `paths`, each read once before (so held), per read."""
    with httpx.Client(base_url=api.url, timeout=30) as http, redis.Redis.from_url(redis_url) as client:
        for path in paths:
            http.get(path).raise_for_status()
        client.config_resetstat()
        for n in range(HELD_READS):
            http.get(paths[n % len(paths)]).raise_for_status()
        stats = client.info("commandstats")
    return sum(stat["calls"] for name, stat in stats.items() if name not in BACKGROUND) / HELD_READS


def invalidation_delay(api: servers.Server, redis_url: str, tmp: object, sprocket_id: int) -> tuple[list[float], int]:
    """A second API process holds a sprocket; it is written through `api`, and read through the other at once
    (and again, until the read shows the write). Returns the ms from the write's reply to the first read
    that shows it, for each of ALTERNATIONS writes, and how many reads did not show it."""
    path = f"/api/v1/sprockets/{sprocket_id}"
    delays, stale = [], 0
    with (
        servers.serve_api(redis_url, tmp, api.redis_pid, name="api-b") as other,  # type: ignore[arg-type]
        httpx.Client(timeout=30) as http,
    ):
        sprocket = http.get(api.url + path).json()
        fields = {name: sprocket[name] for name in SPROCKET_FIELDS}
        for n in range(ALTERNATIONS):
            http.get(other.url + path).raise_for_status()  # held by the other process from now on
            teeth = 1000 + n
            http.put(api.url + path, json={**fields, "teeth": teeth}).raise_for_status()
            acknowledged = time.perf_counter()
            while http.get(other.url + path).json()["teeth"] != teeth:
                stale += 1
            delays.append((time.perf_counter() - acknowledged) * 1000)
    return delays, stale


def rows(commands: float, delays: list[float], stale: int) -> list[list[str]]:
    return [
        report.figure_row(
            f"Redis commands per held read (INFO commandstats over {HELD_READS:,} reads of a sprocket, a factory, "
            "a summary and both listings)",
            commands,
            "",
            COMMANDS_TARGET,
        ),
        report.figure_row(
            f"A write through one API process, then a read of it through another, {ALTERNATIONS:,} times: ms from "
            f"the write's reply to the first read that shows it, p99 (reads that did not show it: {stale})",
            workloads.p99(delays),
            "ms",
            DELAY_TARGET,
        ),
    ]
