"""What REDIS_WAIT_REPLICAS=1 costs: POST sprocket (wrk) and a 10,000-point chart_data write (one after
another), on an API that waits for one replica against one that does not, both on the same Redis
(appendfsync everysec, as the main bench) with one replica beside it on this machine.

`python bench/replication.py` runs this part alone and puts its section into BENCHMARKS.md; `make bench`
runs it with the rest."""

import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# sprockets_cache from this checkout, also when the project is not installed into this python.
sys.path.insert(0, str(BENCH.parent))

import httpx  # noqa: E402
import redis  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402
import workloads  # noqa: E402
import wrk  # noqa: E402

from sprockets_cache.ops.embedded import HOST, EmbeddedRedis  # noqa: E402

TITLE = "Replicated acknowledgements"
POST_SCRIPT = BENCH / "post_sprocket.lua"
POINTS = 10_000
# Alternating rounds, so both settings see the same moments of a shared machine.
ROUNDS = 3
POST_S = 5
WRITES = 20


def _write_ms(url: str, factory_id: int, round_: int) -> list[float]:
    """Each of WRITES chart_data writes of POINTS new points, one after another, in ms."""
    samples = []
    with httpx.Client(timeout=60) as client:
        for n in range(WRITES):
            first = (round_ * WRITES + n) * POINTS
            body = workloads.chart_data(first, POINTS)
            start = time.perf_counter()
            response = client.post(f"{url}/api/v1/factories/{factory_id}/chart_data", json=body)
            samples.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
    return samples


def measure(tmp: Path) -> dict[str, dict[str, list[float]]]:
    """By setting ("0", "1"): POST req/s and p99 ms per wrk round, and every write's ms."""
    results: dict[str, dict[str, list[float]]] = {n: {"rps": [], "p99": [], "write": []} for n in ("0", "1")}
    with contextlib.ExitStack() as stack:
        master = stack.enter_context(EmbeddedRedis(tmp / "master", appendfsync="everysec"))
        of_master = ["--replicaof", HOST, str(master.port)]
        stack.enter_context(EmbeddedRedis(tmp / "replica", appendfsync="everysec", extra_args=of_master))
        _wait_in_sync(master)
        api0, api1 = (
            stack.enter_context(
                servers.serve_api(master.url, tmp, master.pid, name=f"wait{n}", env={"REDIS_WAIT_REPLICAS": n})
            )
            for n in results
        )
        factory_id = workloads.create_factory(api0.url, "replication")
        for round_ in range(ROUNDS):
            for n, api in (("0", api0), ("1", api1)):
                posted = wrk.run(api.url + "/api/v1/sprockets", POST_S, POST_SCRIPT)
                results[n]["rps"].append(posted.requests_s)
                results[n]["p99"].append(posted.p99_ms)
                results[n]["write"] += _write_ms(api.url, factory_id, round_ * 2 + int(n))
    return results


def _wait_in_sync(master: EmbeddedRedis) -> None:
    deadline = time.monotonic() + 30
    with redis.Redis(port=master.port) as client:
        while client.info("replication").get("connected_slaves", 0) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not connect in 30 s")
            time.sleep(0.1)


def section(results: dict[str, dict[str, list[float]]]) -> str:
    zero, one = results["0"], results["1"]
    rows = []
    for name, field, pick in [
        ("POST sprocket: req/s", "rps", statistics.median),
        ("POST sprocket: p99 ms", "p99", statistics.median),
        (f"chart_data write of {POINTS:,} points: median ms", "write", statistics.median),
        (f"chart_data write of {POINTS:,} points: p99 ms", "write", workloads.p99),
    ]:
        a, b = pick(zero[field]), pick(one[field])
        rows.append([name, _figure(a), _figure(b), f"{b / a:.2f}x"])
    lines = ["| measurement | REDIS_WAIT_REPLICAS=0 | =1 | =1 / =0 |", "|---|---:|---:|---:|"]
    table = "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])
    return (
        f"{table}\n\nBy bench/replication.py (`make bench` runs it last; it also runs alone). "
        "One API process each, on one Redis (appendfsync everysec) with one replica beside it on "
        f"this machine; {ROUNDS} alternating rounds of {POST_S} s of wrk on POST /api/v1/sprockets and "
        f"{WRITES} chart_data writes of {POINTS:,} new points one after another. With =1 each write is followed "
        "by WAIT 1 on its connection, in the same round trip. The machine is shared: absolute figures are "
        "noisy, the ratio less so."
    )


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sprockets-replication-") as tmp:
        body = section(measure(Path(tmp)))
    report.put_section(BENCH.parent / "BENCHMARKS.md", TITLE, body)
    sys.stdout.write(body + "\n")


if __name__ == "__main__":
    main()
