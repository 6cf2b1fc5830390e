"""Retention and downsampling (docs/retention.md): ingestion of points a second into one factory with
POINTS_RETENTION_S=86400 and DOWNSAMPLE_S=3600 through the API, and the memory it then holds against
one day of raw points plus its spans; and, with retention off, ingestion against the same API without
the retention code (`--before DIR`, a checkout of the commit before it), to show it costs nothing.

`make bench` (bench/run.py) measures these too and puts their rows into BENCHMARKS.md;
`python bench/retention.py` measures only these and puts its rows into BENCHMARKS.md's results
table in place of the last ones.
"""

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import redis  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402
import workloads  # noqa: E402

from sprockets_cache.ops.embedded import EmbeddedRedis  # noqa: E402
from sprockets_cache.store import keys  # noqa: E402

RETENTION = {"POINTS_RETENTION_S": "86400", "DOWNSAMPLE_S": "3600"}
DAY = 86400
INGEST_TARGET = report.Target(200_000, True, ">= 200,000")
MEMORY_TARGET = report.Target(1.10, False, "<= 1.10")
NAME = "Retention"


def _bodies(points: int, batch: int) -> list[bytes]:
    """Points 0 .. points - 1, one a second from workloads.T0, as chart_data bodies of `batch` points."""
    bodies = []
    for first in range(0, points, batch):
        indexes = range(first, min(points, first + batch))
        chart = {
            "sprocket_production_actual": [25 + i % 11 for i in indexes],
            "sprocket_production_goal": [30 + i % 6 for i in indexes],
            "time": [workloads.T0 + i for i in indexes],
        }
        bodies.append(orjson.dumps(chart))
    return bodies


def _ingest(api: servers.Server, points: int, batch: int, in_flight: int) -> float:
    """Points/s of writing `points` points a second into a new factory through the API."""
    factory_id = workloads.create_factory(api.url, f"{points:,} points a second")
    url = f"{api.url}/api/v1/factories/{factory_id}/chart_data"
    elapsed_s = asyncio.run(workloads._ingest(url, _bodies(points, batch), batch, in_flight))
    return points / elapsed_s


def _with_api(tmp: Path, name: str, env: dict[str, str], run: Any, root: Path | None = None) -> Any:
    """run(api, redis_url) against an API of its own on a redis-server of its own (AOF everysec)."""
    with EmbeddedRedis(tmp / f"redis-{name}", port=0, appendfsync="everysec") as redis_server:
        if root:  # uvicorn puts --app-dir first on sys.path: that checkout's package is served
            config = tmp / "log-config.json"
            config.write_text(orjson.dumps(servers.LOG_CONFIG).decode())
            extra = ["--log-config", str(config), "--app-dir", str(root)]
            serving = servers.serve("sprockets_cache.app:app", redis_server.url, tmp / f"{name}.log", extra)
        else:
            serving = servers.serve_api(redis_server.url, tmp, redis_server.pid, name=name, env=env)
        with serving as api:
            return run(api, redis_server.url)


def _events_bytes(redis_url: str) -> int:
    """The factory's events stream, capped at about 1,000 writes however many points they held: left out of
    both sides of the memory ratio, since the retained factory made 1,000 writes and the one-day one 10."""
    with redis.Redis.from_url(redis_url) as client:
        return int(client.memory_usage(keys.key_for_factory_events(1), samples=0) or 0)


def _retained(api: servers.Server, redis_url: str, points: int, batch: int, in_flight: int) -> dict[str, float]:
    before = workloads.used_memory(redis_url)
    points_s = _ingest(api, points, batch, in_flight)
    grown = workloads.used_memory(redis_url) - before - _events_bytes(redis_url)
    held = workloads.factory_key_bytes(redis_url, 1)
    with redis.Redis.from_url(redis_url) as client:
        spans_bytes = client.memory_usage(keys.key_for_factory_spans(1), samples=0) or 0
        spans = client.zcard(keys.key_for_factory_spans(1))
        raw = sum(int(v.split(b":")[0]) for v in client.hvals(keys.key_for_factory_sums(1)))
    return {"points_s": points_s, "grown": grown, "held": held, "spans_bytes": spans_bytes, "spans": spans, "raw": raw}


def _one_day(api: servers.Server, redis_url: str, batch: int, in_flight: int) -> tuple[float, float]:
    """used_memory growth (the events stream aside) and MEMORY USAGE of the factory's point keys, of one day
    of raw points a second, retention off."""
    before = workloads.used_memory(redis_url)
    _ingest(api, DAY, DAY // 10, in_flight)
    grown = workloads.used_memory(redis_url) - before - _events_bytes(redis_url)
    return grown, workloads.factory_key_bytes(redis_url, 1)


def measure(tmp: Path, points: int, batch: int, in_flight: int, before_root: Path | None) -> dict[str, float]:
    figures = _with_api(tmp, "retained", RETENTION, lambda api, url: _retained(api, url, points, batch, in_flight))
    figures["day"], figures["day_held"] = _with_api(
        tmp, "one-day", {}, lambda api, url: _one_day(api, url, batch, in_flight)
    )
    off = min(points, 2_000_000) // batch * batch
    figures["off_points"] = off
    figures["off_s"] = _with_api(tmp, "off", {}, lambda api, _: _ingest(api, off, batch, in_flight))
    if before_root:
        ingest = lambda api, _: _ingest(api, off, batch, in_flight)  # noqa: E731
        figures["before_s"] = _with_api(tmp, "before", {}, ingest, before_root)
    # What the factory's keys hold (MEMORY USAGE), against one day of raw points plus the spans: used_memory
    # growth, given too, moves by a few hundred KiB from run to run with what else Redis allocated.
    figures["memory_ratio"] = figures["held"] / (figures["day_held"] + figures["spans_bytes"])
    return figures


def rows(figures: dict[str, float], points: int, batch: int, in_flight: int) -> list[list[str]]:
    off_points = int(figures["off_points"])
    before = figures.get("before_s")
    compared = f"; retention off, {off_points:,} points: {figures['off_s']:,.0f} points/s" + (
        f", {before:,.0f} without the retention code (x{figures['off_s'] / before:.2f})" if before else ""
    )
    return [
        report.figure_row(
            f"{NAME}: ingestion of {points:,} points a second into one factory, POINTS_RETENTION_S=86400, "
            f"DOWNSAMPLE_S=3600, {batch:,}-point batches, {in_flight} in flight: points/s{compared}",
            figures["points_s"],
            "points/s",
            INGEST_TARGET,
        ),
        report.figure_row(
            f"{NAME}: memory of the factory's point keys after it ({figures['held'] / 2**20:.2f} MiB: "
            f"{int(figures['raw']):,} raw points and {int(figures['spans']):,} spans) / one day of raw points "
            f"({figures['day_held'] / 2**20:.2f} MiB) plus the spans ({figures['spans_bytes'] / 2**10:.0f} KiB); "
            f"used_memory growth, events streams aside: {figures['grown'] / 2**20:.1f} / "
            f"{figures['day'] / 2**20:.1f} MiB",
            figures["memory_ratio"],
            "",
            MEMORY_TARGET,
        ),
    ]


def _put_rows(path: Path, new_rows: list[list[str]]) -> None:
    """Replace this benchmark's rows of the results table in `path`, or add them at its end."""
    lines = path.read_text().splitlines()
    lines = [line for line in lines if not line.startswith(f"| {NAME}: ")]
    header = next(i for i, line in enumerate(lines) if line.startswith("| measurement |"))
    end = next(i for i in range(header, len(lines)) if not lines[i].startswith("|"))
    lines[end:end] = ["| " + " | ".join(row) + " |" for row in new_rows]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=10_000, help="points per chart_data write")
    parser.add_argument("--in-flight", type=int, default=3, help="chart_data writes in flight")
    parser.add_argument("--before", type=Path, help="a checkout without retention: ingestion with it off, compared")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sprockets-retention-") as tmp:
        figures = measure(Path(tmp), args.points, args.batch, args.in_flight, args.before)
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())  # noqa: T201
    new_rows = rows(figures, args.points, args.batch, args.in_flight)
    _put_rows(args.output, new_rows)
    print("\n".join("| " + " | ".join(row) + " |" for row in new_rows))  # noqa: T201


if __name__ == "__main__":
    main()
