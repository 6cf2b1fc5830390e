"""`make soak`: a mixed read/write load on the API, one uvicorn worker on a Redis of its own, for a bounded
time (SOAK_S, default 60 s); then, as long again, 2,000 clients (wrk) reading factories, eight times what
the process serves at once with its queue. Reports requests, errors, p99 latency and the API process's
memory at the start and end of each; exits 1 if any request of the mixed load failed, if the overload
got any answer but 200 and 503, or if memory grew by more than a quarter after warm-up, the read cache's
bytes left out (it fills up to READ_CACHE_MB by design: the mixed load's ranges move with its clock)."""

import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import wrk
from overload import START_S
from servers import serve_api

from sprockets_cache.ops.embedded import EmbeddedRedis

DURATION_S = float(os.environ.get("SOAK_S", "60"))
CLIENTS = 16
WARM_UP_S = min(10.0, DURATION_S / 6)
SPROCKET = {"teeth": 12, "pitch_diameter": 40.0, "outside_diameter": 44.0, "pitch": 10.5}
OVERLOAD_CLIENTS = 2000
# Growth past warm-up that counts as a leak: a quarter, or 20 MiB for a small process.
LEAK_RATIO, LEAK_FLOOR_KIB = 1.25, 20 * 1024


def report(line: str) -> None:
    print(f"soak: {line}", flush=True)  # noqa: T201


def cache_kib(url: str) -> int:
    """The read cache's bytes, from /metrics."""
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    return int(float(re.search(r"^read_cache_bytes (\S+)", metrics, re.MULTILINE)[1]) / 1024)  # type: ignore[index]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def one_request(api: httpx.AsyncClient, rng: random.Random, clock: list[int]) -> httpx.Response:
    """A mix a factory floor would make: mostly reads, some point writes, a few sprocket edits."""
    roll = rng.random()
    factory = rng.randint(1, 10)
    if roll < 0.35:
        return await api.get(f"/api/v1/factories/{factory}", params={"bucket": 3600})
    if roll < 0.45:
        return await api.get("/api/v1/factories", params={"from": clock[0] - 3600})
    if roll < 0.55:
        return await api.get(f"/api/v1/factories/{factory}/summary")
    if roll < 0.75:
        clock[0] += 60
        times = [clock[0] + i for i in range(rng.randint(1, 50))]
        body = {
            "time": times,
            "sprocket_production_actual": [30] * len(times),
            "sprocket_production_goal": [32] * len(times),
        }
        return await api.post(f"/api/v1/factories/{factory}/chart_data", json=body)
    if roll < 0.85:
        return await api.get(f"/api/v1/sprockets/{rng.randint(1, 20)}")
    if roll < 0.95:
        return await api.patch(f"/api/v1/sprockets/{rng.randint(1, 20)}", json={"teeth": rng.randint(1, 99)})
    return await api.get("/api/v1/sprockets", params={"limit": 10})


async def client(
    api: httpx.AsyncClient, seed: int, until: float, clock: list[int], results: list[tuple[int, float]]
) -> None:
    rng = random.Random(seed)
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            status = (await one_request(api, rng, clock)).status_code
        except httpx.HTTPError:
            status = 0
        results.append((status, time.monotonic() - started))


async def soak(url: str, pid: int) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=10) as api:
        for _ in range(20):
            assert (await api.post("/api/v1/sprockets", json=SPROCKET)).status_code == 201
        for _ in range(10):
            assert (
                await api.post("/api/v1/factories", json={}, headers={"Content-Type": "application/json"})
            ).status_code == 201
        clock = [1_700_000_000]
        warm: list[tuple[int, float]] = []
        await asyncio.gather(*(client(api, n, time.monotonic() + WARM_UP_S, clock, warm) for n in range(CLIENTS)))
        start_kib, start_cache_kib = rss_kib(pid), cache_kib(url)
        results: list[tuple[int, float]] = []
        until = time.monotonic() + DURATION_S - WARM_UP_S
        await asyncio.gather(*(client(api, n + CLIENTS, until, clock, results) for n in range(CLIENTS)))
        end_kib, end_cache_kib = rss_kib(pid), cache_kib(url)
    statuses = Counter(status for status, _ in warm + results)
    errors = sum(count for status, count in statuses.items() if status == 0 or status >= 400)
    latencies = sorted(duration for _, duration in results)
    p99_ms = latencies[int(len(latencies) * 0.99)] * 1000
    start_kib, end_kib = start_kib - start_cache_kib, end_kib - end_cache_kib
    grew = end_kib > max(start_kib * LEAK_RATIO, start_kib + LEAK_FLOOR_KIB)
    report(f"{DURATION_S:.0f} s, {CLIENTS} clients, {sum(statuses.values())} requests, statuses {dict(statuses)}")
    report(f"errors {errors}, p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99_ms:.1f} ms")
    cached = f"the read cache's {start_cache_kib / 1024:.1f} and {end_cache_kib / 1024:.1f} MiB left out"
    report(f"API memory {start_kib / 1024:.1f} MiB after warm-up, {end_kib / 1024:.1f} MiB at the end ({cached})")
    return 1 if errors or grew else 0


def overload(url: str, pid: int) -> int:
    """OVERLOAD_CLIENTS connections, each reading one of the soak's factories again as soon as it is answered."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        # The load starts once every connection is open (see overload.py).
        script.write(wrk.start_together(OVERLOAD_CLIENTS, START_S))
        script.flush()
        command = ["wrk", "-t2", f"-c{OVERLOAD_CLIENTS}", "--timeout=10s", "--latency", "-s", script.name]
        target = url + "/api/v1/factories/1?bucket=3600"
        subprocess.run([*command, f"-d{WARM_UP_S + START_S:.0f}s", target], capture_output=True, check=True)
        start_kib = rss_kib(pid)
        out = subprocess.run(
            [*command, f"-d{DURATION_S + START_S:.0f}s", target], capture_output=True, text=True, check=True
        )
        end_kib = rss_kib(pid)
    total = int(re.search(r"(\d+) requests in", out.stdout)[1])  # type: ignore[index]
    not_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    errors = re.search(r"Socket errors: .*", out.stdout)
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    shed = sum(float(n) for n in re.findall(r'^requests_shed_total{reason="\w+"} (\S+)', metrics, re.MULTILINE))
    answered_otherwise = (int(not_2xx[1]) if not_2xx else 0) - int(shed)
    p99 = re.search(r"^\s*99%\s+(\S+)", out.stdout, re.MULTILINE)
    report(f"{DURATION_S:.0f} s, {OVERLOAD_CLIENTS} clients (wrk), {total} answers, {int(shed)} of them 503s in all")
    report(f"p99 {p99[1] if p99 else '?'}, {errors[0] if errors else 'no socket errors'}")
    report(f"API memory {start_kib / 1024:.1f} MiB after warm-up, {end_kib / 1024:.1f} MiB at the end")
    grew = end_kib > max(start_kib * LEAK_RATIO, start_kib + LEAK_FLOOR_KIB)
    return 1 if answered_otherwise > 0 or grew else 0


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis_server:
        # A small read cache, full by the end of the warm-up: past it, its memory stays as it is.
        with serve_api(redis_server.url, Path(tmp), env={"READ_CACHE_MB": "8"}) as api:
            failed = asyncio.run(soak(api.url, api.process.pid))
            return overload(api.url, api.process.pid) or failed


if __name__ == "__main__":
    sys.exit(main())
