"""`python bench/overload.py`: the API under 64, 512 and 2,000 clients (wrk, 2 threads, 8 s, a 2 s client
timeout), for GET sprocket and a 1,000-point range read, with fair admission at its defaults: as one process
(`serve`'s default), then as two workers (`WORKERS=2`, as the compose file runs it), each on its own Redis.

wrk gives the throughput, the client timeouts, the answers that were not 2xx and the p99 of every answer
it got (200s and 503s alike). A probe beside it (one request every 20 ms on connections of its own, as
one more client) times each answer by its status, so the answered requests' p99 and the time to a 503
are told apart; it is a Python client on the same two cores as wrk, uvicorn and Redis, so its times
include its own waits for a core. `make bench` runs it at its end; run
alone, it writes bench/overload-results.md.
"""

import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import servers  # noqa: E402
import wrk  # noqa: E402

from sprockets_cache.ops.embedded import EmbeddedRedis  # noqa: E402

CLIENTS = (64, 512, 2000)
DURATION_S = 8
TIMEOUT_S = 2
PROBE_EVERY_S = 0.02
# Each connection's first request waits this long (not counted), so that the load starts once every
# connection is open: uvloop accepts one connection per turn of its loop, and while requests flow on the
# first ones, the last of 2,000 waited seconds to be accepted.
START_S = 2
RESULTS = BENCH / "overload-results.md"
TITLE = "Under overload"
SPROCKET = {"teeth": 5, "pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}
POINTS = 1000
CHART_DATA = {
    "time": list(range(POINTS)),
    "sprocket_production_actual": [1] * POINTS,
    "sprocket_production_goal": [2] * POINTS,
}
PATHS = {"GET sprocket": "/api/v1/sprockets/1", "range read (1,000 points)": f"/api/v1/factories/1?from=0&to={POINTS}"}
WORKERS = (1, 2)


@dataclass
class Run:
    clients: int
    requests_s: float  # 2xx answers a second
    timeouts: int
    not_2xx: int
    wrk_p99_ms: float  # of every answer wrk got, 2xx or not
    answered_p99_ms: float | None
    shed_max_ms: float | None
    probes: int


def _wrk(url: str, clients: int) -> tuple[float, int, int, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(wrk.start_together(clients, START_S))
        script.flush()
        command = ["wrk", "-t2", f"-c{clients}", f"-d{DURATION_S + START_S}s", f"--timeout={TIMEOUT_S}s"]
        command += ["--latency", "-s", script.name, url]
        out = subprocess.run(command, capture_output=True, text=True, timeout=DURATION_S + 60, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    timeouts = re.search(r"timeout (\d+)", out)
    not_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = int(not_2xx[1]) if not_2xx else 0
    return (total - bad) / DURATION_S, int(timeouts[1]) if timeouts else 0, bad, wrk.latency_ms(out, "99%")


async def _probe(url: str, stop: asyncio.Event) -> list[tuple[int, float]]:
    """(status, ms) of one request every PROBE_EVERY_S; 0 for a request that got no answer in time."""
    seen: list[tuple[int, float]] = []

    async def once(client: httpx.AsyncClient) -> None:
        started = time.monotonic()
        try:
            status = (await client.get(url)).status_code
        except httpx.HTTPError:
            status = 0
        seen.append((status, (time.monotonic() - started) * 1000))

    await asyncio.sleep(START_S)  # as wrk's load starts
    async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=httpx.Limits(max_connections=200)) as client:
        tasks = []
        while not stop.is_set():
            tasks.append(asyncio.create_task(once(client)))
            await asyncio.sleep(PROBE_EVERY_S)
        await asyncio.gather(*tasks)
    return seen


async def _measure(url: str, clients: int) -> Run:
    stop = asyncio.Event()
    probing = asyncio.create_task(_probe(url, stop))
    requests_s, timeouts, not_2xx, wrk_p99_ms = await asyncio.to_thread(_wrk, url, clients)
    stop.set()
    seen = await probing
    answered = sorted(ms for status, ms in seen if status == 200)
    shed = [ms for status, ms in seen if status == 503]
    p99 = answered[min(len(answered) - 1, int(len(answered) * 0.99))] if answered else None
    return Run(clients, requests_s, timeouts, not_2xx, wrk_p99_ms, p99, max(shed) if shed else None, len(seen))


def _row(name: str, workers: int, run: Run, base_s: float) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f} ms"

    share = run.requests_s / base_s
    return (
        f"| {name} | {workers} | {run.clients:,} | {run.requests_s:,.0f} ({share:.0%}) | {run.timeouts} "
        f"| {run.not_2xx:,} | {ms(run.wrk_p99_ms)} | {ms(run.answered_p99_ms)} | {ms(run.shed_max_ms)} |"
    )


def measure(tmp: Path) -> str:
    """The overload table, for BENCHMARKS.md."""
    lines = [
        "| endpoint | API processes | clients | 2xx/s (of 64 clients') | client timeouts | non-2xx "
        "| p99 of all answers (wrk) | answered p99 (probe) | slowest 503 (probe) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    probes = []
    for workers in WORKERS:
        name = f"overload-{workers}"
        with EmbeddedRedis(tmp / f"{name}-redis") as redis_server:
            with servers.serve_api(redis_server.url, tmp, redis_server.pid, name=name, workers=workers) as server:
                httpx.post(f"{server.url}/api/v1/sprockets", json=SPROCKET).raise_for_status()
                httpx.post(f"{server.url}/api/v1/factories", json={"chart_data": CHART_DATA}).raise_for_status()
                for endpoint, path in PATHS.items():
                    runs = [asyncio.run(_measure(server.url + path, clients)) for clients in CLIENTS]
                    lines += [_row(endpoint, workers, run, runs[0].requests_s) for run in runs]
                    probes += [run.probes for run in runs]
                    print("\n".join(lines[-len(runs) :]), flush=True)  # noqa: T201
    probed = (
        f"The probe sent about {statistics.median(probes):.0f} requests a run, one every {PROBE_EVERY_S * 1000:.0f} ms."
    )
    return "\n".join(lines) + "\n\n" + probed


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        RESULTS.write_text(f"## {TITLE}\n\n{measure(Path(directory))}\n")
