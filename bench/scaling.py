"""Scale-out rows of `make bench` (issue 8): the API as 2 uvicorn workers against 1 on one Redis, and as 1
worker on a local 3-master Redis Cluster against 1 on one Redis. Each setup serves the same two reads under
wrk and takes point ingestion spread over several factories (a cluster shards by factory)."""

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import redis
import servers
import workloads
import wrk

from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.store import keys
from tests.cluster import local_cluster

ONE_WORKER, TWO_WORKERS, CLUSTER = "1 worker, one Redis", "2 workers, one Redis", "1 worker, 3-master cluster"
READS = {"GET sprocket": "/api/v1/sprockets/{sprocket}", "GET factory (20 points)": "/api/v1/factories/{small_factory}"}
INGESTION = "ingestion"
# Each ingestion run writes this many new factories at once, so that a cluster spreads them over its masters.
FACTORIES = 6
FACTORY_POINTS = 200_000
IN_FLIGHT = 4
WARMUP_S = 1


@dataclass(frozen=True, slots=True)
class Run:
    """One wrk run, or one ingestion run, of one setup."""

    rate: float  # req/s, or points/s for ingestion
    p99_ms: float | None  # None for ingestion
    worker_cores: tuple[float, ...]  # cores each API worker process used meanwhile
    redis_cores: float  # cores Redis used meanwhile (all three masters, on the cluster)
    client_cores: float  # cores the load generator used meanwhile: wrk, or this script for ingestion
    other_cores: float  # cores every other process on the machine used meanwhile
    steal_cores: float  # cores the hypervisor took meanwhile


@dataclass
class Setup:
    name: str
    server: servers.Server
    redis_pids: list[int]
    ids: dict[str, int]
    runs: dict[str, list[Run]] = field(default_factory=dict)
    written_factories: list[int] = field(default_factory=list)

    def median(self, workload: str, attribute: str = "rate") -> float:
        return float(statistics.median(getattr(run, attribute) for run in self.runs[workload]))


def _say(line: str) -> None:
    print(line, flush=True)  # noqa: T201


def _meter(setup: Setup) -> servers.CpuMeter:
    pids = {f"worker {pid}": pid for pid in setup.server.worker_pids()}
    return servers.CpuMeter(pids | {f"redis {pid}": pid for pid in setup.redis_pids})


def _run(meter: servers.CpuMeter, rate: float, p99_ms: float | None) -> Run:
    used = meter.cores()
    workers = tuple(cores for name, cores in used.items() if name.startswith("worker "))
    redis_cores = sum(cores for name, cores in used.items() if name.startswith("redis "))
    client_cores = used["wrk"] + used["this script"]
    return Run(rate, p99_ms, workers, redis_cores, client_cores, used["other processes"], used["steal"])


def _read(setup: Setup, path: str, duration_s: float) -> Run:
    meter = _meter(setup)
    result = wrk.run(setup.server.url + path.format(**setup.ids), duration_s)
    return _run(meter, result.requests_s, result.p99_ms)


async def _post_all(requests: list[tuple[str, bytes, int]]) -> float:
    """POST every (url, body, points) with IN_FLIGHT at a time from one client; seconds taken."""
    queue = iter(requests)  # shared by the workers: each takes the next request when it is free

    async def worker(client: httpx.AsyncClient) -> None:
        for url, body, points in queue:
            response = await client.post(url, content=body, headers=workloads.JSON)
            if response.status_code != 200 or response.json() != {"written": points}:
                raise RuntimeError(f"{url}: {response.status_code} {response.text[:500]}")

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=IN_FLIGHT)) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(IN_FLIGHT)))
        return time.perf_counter() - start


def _ingest(setup: Setup, batch: int) -> Run:
    """FACTORIES new factories, FACTORY_POINTS points each, in `batch`-point writes that take the factories
    in turn (bodies encoded beforehand); checked through the summaries afterwards."""
    url = setup.server.url
    factory_ids = [workloads.create_factory(url, f"scale-out {n}") for n in range(FACTORIES)]
    batches = [(first, min(batch, FACTORY_POINTS - first)) for first in range(0, FACTORY_POINTS, batch)]
    bodies = [(orjson.dumps(workloads.chart_data(first, points)), points) for first, points in batches]
    requests = [(f"{url}/api/v1/factories/{f}/chart_data", body, n) for body, n in bodies for f in factory_ids]
    meter = _meter(setup)
    elapsed_s = asyncio.run(_post_all(requests))
    run = _run(meter, FACTORIES * FACTORY_POINTS / elapsed_s, None)
    for factory_id in factory_ids:
        if workloads.count_points(url, factory_id) != FACTORY_POINTS:
            raise RuntimeError(f"{setup.name}: factory {factory_id} does not hold the {FACTORY_POINTS} points written")
    setup.written_factories += factory_ids
    return run


def _spread(nodes: list[EmbeddedRedis], factory_ids: list[int]) -> list[int]:
    """How many of the factories each master holds."""
    client = redis.RedisCluster(host="127.0.0.1", port=nodes[0].port)
    try:
        homes = Counter(client.get_node_from_key(keys.key_for_factory(f)).port for f in factory_ids)
    finally:
        client.close()
    return [homes[node.port] for node in nodes]


def measure(tmp: Path, duration_s: float, rounds: int, batch: int) -> tuple[list[Setup], list[int]]:
    """The three setups side by side, each workload run on each setup in turn (the order rotating by round);
    also how the cluster's ingested factories spread over its masters."""
    with contextlib.ExitStack() as stack:
        single = stack.enter_context(EmbeddedRedis(tmp / "scaling-redis", port=0, appendfsync="everysec"))
        nodes = stack.enter_context(local_cluster(tmp / "scaling-cluster"))
        for node in nodes:  # local_cluster fsyncs on every write; the rest of the benchmark does it every second
            with redis.Redis(port=node.port) as client:
                client.config_set("appendfsync", "everysec")
        one = stack.enter_context(servers.serve_api(single.url, tmp, name="api-1-worker"))
        two = stack.enter_context(servers.serve_api(single.url, tmp, name="api-2-workers", workers=2))
        clustered = stack.enter_context(
            servers.serve_api(nodes[0].url, tmp, name="api-cluster", env={"REDIS_CLUSTER": "true"})
        )
        ids = workloads.prepare_api(one.url, 0, 0, 1)
        setups = [
            Setup(ONE_WORKER, one, [single.pid], ids),
            Setup(TWO_WORKERS, two, [single.pid], ids),
            Setup(CLUSTER, clustered, [node.pid for node in nodes], workloads.prepare_api(clustered.url, 0, 0, 1)),
        ]
        for setup in setups:
            for path in READS.values():
                wrk.run(setup.server.url + path.format(**setup.ids), WARMUP_S)
        for round_number in range(rounds):
            order = setups[round_number % 3 :] + setups[: round_number % 3]
            for workload in [*READS, INGESTION]:
                for setup in order:
                    run = _ingest(setup, batch) if workload == INGESTION else _read(setup, READS[workload], duration_s)
                    setup.runs.setdefault(workload, []).append(run)
                    _say(
                        f"scale-out round {round_number + 1} {workload}, {setup.name}: {run.rate:,.0f}/s, "
                        f"cores: API {_cores(run.worker_cores)}, Redis {run.redis_cores:.2f}, "
                        f"load generator {run.client_cores:.2f}, others {run.other_cores:.2f}, "
                        f"steal {run.steal_cores:.2f}"
                    )
        return setups, _spread(nodes, setups[2].written_factories)


def _cores(worker_cores: tuple[float, ...]) -> str:
    total = f"{sum(worker_cores):.2f}"
    return total if len(worker_cores) == 1 else f"{total} ({' + '.join(f'{c:.2f}' for c in worker_cores)})"


def ratios(setups: list[Setup]) -> dict[str, dict[str, float]]:
    """The two comparisons, as ratios of median rates by workload."""
    one, two, clustered = setups
    return {
        "2 workers / 1 worker": {w: two.median(w) / one.median(w) for w in [*READS, INGESTION]},
        "cluster / one Redis": {w: clustered.median(w) / one.median(w) for w in [*READS, INGESTION]},
    }


def _table(setups: list[Setup]) -> str:
    one, two, clustered = setups
    header = ["setup", *(f"{r}: {m}" for r in READS for m in ("req/s", "p99 ms")), "ingestion: points/s"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]

    def figures(setup: Setup) -> list[str]:
        cells = [c for r in READS for c in (f"{setup.median(r):,.0f}", f"{setup.median(r, 'p99_ms'):.2f}")]
        return [*cells, f"{setup.median(INGESTION):,.0f}"]

    def ratio(name: str, ours: Setup) -> list[str]:
        cells = []
        for read in READS:
            cells += [ours.median(read) / one.median(read), ours.median(read, "p99_ms") / one.median(read, "p99_ms")]
        cells.append(ours.median(INGESTION) / one.median(INGESTION))
        return [f"**{name}**", *(f"**{cell:.2f}x**" for cell in cells)]

    rows = [[one.name, *figures(one)], [two.name, *figures(two)], ratio("2 workers / 1 worker", two)]
    rows += [[clustered.name, *figures(clustered)], ratio("cluster / one Redis", clustered)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def _balance(setup: Setup) -> str:
    """How evenly the workers shared the work: the busier one's part of their CPU time, median over the runs."""
    shares = {
        workload: statistics.median(max(run.worker_cores) / max(sum(run.worker_cores), 1e-9) for run in runs)
        for workload, runs in setup.runs.items()
    }
    parts = ", ".join(f"{workload} {share:.0%}" for workload, share in shares.items())
    return (
        f"With {setup.name}, the busier worker's part of the workers' CPU time (median run): {parts}. uvicorn's "
        f"workers accept connections from one socket and a connection stays with the worker that took it, so the "
        f"ingestion client's {IN_FLIGHT} keep-alive connections may all land on one worker, which then does all "
        f"the work while the other idles; wrk's 64 connections spread. Many clients, or a load balancer that opens "
        f"many connections, spread the same way."
    )


def _runs_table(setups: list[Setup]) -> str:
    lines = [
        "| setup | workload | req/s or points/s per round "
        "| cores per round: API, Redis, load generator, others, steal |",
        "|---|---|---|---|",
    ]
    for setup in setups:
        for workload, runs in setup.runs.items():
            rates = ", ".join(f"{run.rate:,.0f}" for run in runs)
            cores = "; ".join(
                f"{_cores(run.worker_cores)}, {run.redis_cores:.2f}, {run.client_cores:.2f}, {run.other_cores:.2f}, "
                f"{run.steal_cores:.2f}"
                for run in runs
            )
            lines.append(f"| {setup.name} | {workload} | {rates} | {cores} |")
    return "\n".join(lines)


def section(setups: list[Setup], spread: list[int], args: argparse.Namespace) -> str:
    """BENCHMARKS.md's scale-out section: how it was measured, the medians with the two ratios, every run."""
    method = (
        f"Three setups side by side, on Redis started for these rows (AOF, `appendfsync everysec`): the API as "
        f"1 uvicorn worker and as 2 (`--workers 2`: one listening socket, the kernel hands each connection to one "
        f"worker; metrics in shared files, as `serve --workers 2` keeps them), both on one redis-server, and as "
        f"1 worker with `REDIS_CLUSTER=true` on a 3-master Redis Cluster "
        f"(`tests/cluster.py`: three redis-servers joined with CLUSTER ADDSLOTSRANGE and MEET). Reads: after a "
        f"{WARMUP_S} s warm-up, wrk `-t1 -c64 -d{args.scaling_duration_s:g}s --latency` on each setup in turn, "
        f"{args.scaling_rounds} rounds with the order rotating (fewer rounds than above, to keep these rows to "
        f"about a minute and a half). Ingestion: each run creates {FACTORIES} "
        f"factories and writes {FACTORY_POINTS:,} points into each ({FACTORIES * FACTORY_POINTS:,} in all) in "
        f"{args.batch:,}-point POSTs that take the factories in turn, {IN_FLIGHT} in flight from one httpx client; "
        f"on the cluster the {sum(spread)} factories written sat {' / '.join(map(str, spread))} on the three "
        f"masters. The table gives medians over the rounds. **The machine has {os.cpu_count()} cores, and wrk, the "
        f"ingestion client and Redis run on them next to the API**: a second worker gets only what they leave, so "
        f"2 workers cannot double throughput here, and three Redis processes on the same cores add no CPU. Every "
        f"read here touches one hash slot (all sprocket keys share `{{sprockets}}`, a factory's keys share its own "
        f"tag), so the cluster rows show what the cluster client costs, not what sharding gains: a cluster pays "
        f"off in memory and write capacity beyond one Redis process, on more machines than this one."
    )
    runs = (
        "Every run (cores: the average number of cores used during the run by the API's worker processes (one term "
        "per worker), by the Redis servers, by the load generator (wrk for reads, this script's httpx client for "
        "ingestion) and by all other processes, and the cores the hypervisor took from this virtual machine, steal):"
    )
    return f"{method}\n\n{_table(setups)}\n\n{_balance(setups[1])}\n\n{runs}\n\n{_runs_table(setups)}"
