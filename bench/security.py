"""What API keys and the audit trail cost: POST sprocket against the baseline with the audit trail off,
on, and on with a scoped API key sent and checked; and the key check's own CPU time per request.

Each round runs, for each setup, the API and the baseline back to back (the API first in odd rounds);
the table gives medians of each app's runs and of the pairs' ratios. The key check and the audit
trail are also timed in-process, which a busy machine disturbs far less. `make bench` runs this at
its end; `python bench/security.py` runs it alone and puts its section into BENCHMARKS.md (and
bench/security-results.md).
"""

import argparse
import asyncio
import contextlib
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio as redis  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402
import wrk  # noqa: E402

from sprockets_cache import access  # noqa: E402
from sprockets_cache.http import security  # noqa: E402
from sprockets_cache.http.observability import REQUEST_ID  # noqa: E402
from sprockets_cache.ops.embedded import EmbeddedRedis  # noqa: E402
from sprockets_cache.settings import Settings  # noqa: E402
from sprockets_cache.store.audit import AuditTrail  # noqa: E402
from sprockets_cache.store.keyring import Keyring  # noqa: E402

POST_SCRIPT = BENCH / "post_sprocket.lua"
RESULTS = BENCH / "security-results.md"
TITLE = "API keys and the audit trail"
TARGET = report.Target(0.85, True, ">= 0.85x baseline")
WARMUP_S = 2
CHECKS = 200_000
# Run alone, wait for the CPUs to be at most this busy with other work first.
QUIET = 0.10


@dataclasses.dataclass(frozen=True, slots=True)
class Setup:
    name: str
    env: dict[str, str]
    key: str | None = None


def key_check_us() -> float:
    """CPU µs of the Guard's key check for one write with a scoped key: the header found, the key
    hashed and looked up, the route matched and the scope checked, over a realistic keyring."""
    key, digest = security.new_key()
    held = {security.new_key()[1]: frozenset({f"factory:{n}"}) for n in range(1, 200)}
    # A client that never connects: a check reads only the keyring's in-process copy.
    keyring = Keyring(redis.Redis(), {**held, digest: frozenset({"sprockets"})})
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    scope = {
        "method": "POST",
        "path": "/api/v1/sprockets",
        "headers": [*headers, (b"authorization", b"Bearer " + key.encode())],
    }

    def check() -> bool:
        found = access.target(scope["path"])
        _, scopes = security._credential(scope, keyring)
        return scopes is not None and access.allows(scopes, access.needed_scopes("POST", found, False))

    assert check()
    return min(timeit.repeat(check, number=CHECKS, repeat=5)) / CHECKS * 1e6


async def _guard_us(redis_url: str, audit: bool, requests: int = 50_000) -> float:
    """CPU µs per POST through the Guard alone (an app that only answers 201), with the audit trail
    on or off; with it on, its writes to Redis (one script call per batch) are counted too."""
    client = redis.Redis.from_url(redis_url)

    async def created(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": [(b"location", b"/api/v1/sprockets/7")]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def ignore(message: Any) -> None:
        pass

    guard = security.Guard(created, Settings())
    trail = AuditTrail(client, 5.0) if audit else None
    state = {"keyring": Keyring(client, {}), "audit": trail}
    started = time.process_time()
    for number in range(requests):
        scope = {"type": "http", "method": "POST", "path": "/api/v1/sprockets", "headers": [], "state": state}
        await guard(scope | {"client": ("127.0.0.1", 5000), REQUEST_ID: f"bench-{number}"}, ignore, ignore)
        if number % 100 == 0:
            await asyncio.sleep(0)  # as between requests: the batches go out meanwhile
    if trail is not None:
        await trail.close()
    spent_s = time.process_time() - started
    await client.aclose()
    return spent_s / requests * 1e6


def audit_us(redis_url: str) -> float:
    """What the audit trail adds to a write request's CPU time in the API process (best of 3)."""
    on = min(asyncio.run(_guard_us(redis_url, True)) for _ in range(3))
    off = min(asyncio.run(_guard_us(redis_url, False)) for _ in range(3))
    return on - off


def measure(tmp: Path, rounds: int, duration_s: float) -> str:
    """Run the comparison on a Redis of its own; the section's markdown."""
    key, digest = security.new_key()
    setups = [
        Setup("audit trail off, no key", {"AUDIT_TRAIL": "false"}),
        Setup("audit trail on, no key", {}),
        Setup("audit trail on, scoped key checked", {"SPROCKETS_API_KEYS": f"{digest}=sprockets"}, key),
    ]
    busy = report.busy_fraction()
    with EmbeddedRedis(tmp / "security-redis", port=0, appendfsync="everysec") as redis_server:
        with servers.serve_baseline(redis_server.url, tmp, redis_server.pid) as base:
            runs = _rounds(redis_server, base, setups, tmp, rounds, duration_s)
        added_us = audit_us(redis_server.url)
    check_us = key_check_us()
    return _section(runs, setups, rounds, duration_s, busy, check_us, added_us)


def _rounds(
    redis_server: EmbeddedRedis, base: servers.Server, setups: list[Setup], tmp: Path, rounds: int, duration_s: float
) -> dict[str, list[tuple[wrk.WrkResult, wrk.WrkResult]]]:
    """Per setup, a (API, baseline) pair of back-to-back runs each round, the API first in odd rounds."""
    scripts = {}
    for setup in setups:
        path = tmp / f"post-{len(scripts)}.lua"
        auth = f'wrk.headers["Authorization"] = "Bearer {setup.key}"\n' if setup.key else ""
        path.write_text(POST_SCRIPT.read_text() + auth)
        scripts[setup.name] = path
    pairs: dict[str, list[tuple[wrk.WrkResult, wrk.WrkResult]]] = {setup.name: [] for setup in setups}
    with contextlib.ExitStack() as stack:
        apis = {
            setup.name: stack.enter_context(
                servers.serve_api(redis_server.url, tmp, redis_server.pid, name=f"security-{n}", env=setup.env)
            )
            for n, setup in enumerate(setups)
        }
        servers.measured_wrk(base, "/sprockets", WARMUP_S, POST_SCRIPT)
        for name, api in apis.items():
            servers.measured_wrk(api, "/api/v1/sprockets", WARMUP_S, scripts[name])
        for round_number in range(1, rounds + 1):
            for name, api in apis.items():
                if round_number % 2:
                    ours = servers.measured_wrk(api, "/api/v1/sprockets", duration_s, scripts[name])
                    theirs = servers.measured_wrk(base, "/sprockets", duration_s, POST_SCRIPT)
                else:
                    theirs = servers.measured_wrk(base, "/sprockets", duration_s, POST_SCRIPT)
                    ours = servers.measured_wrk(api, "/api/v1/sprockets", duration_s, scripts[name])
                pairs[name].append((ours, theirs))
            print(  # noqa: T201
                f"security round {round_number}: "
                + ", ".join(f"{name} {p[-1][0].requests_s / p[-1][1].requests_s:.2f}x" for name, p in pairs.items()),
                flush=True,
            )
    return pairs


def _section(
    pairs: dict[str, list[tuple[wrk.WrkResult, wrk.WrkResult]]],
    setups: list[Setup],
    rounds: int,
    duration_s: float,
    busy: float,
    check_us: float,
    added_us: float,
) -> str:
    lines = [
        "| POST sprocket | API req/s | baseline req/s | API / baseline, req/s | baseline / API, server CPU "
        "µs/req | API server CPU µs/req | target (req/s ratio) | verdict |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    cpu = {}
    for setup in setups:
        ours, theirs = [pair[0] for pair in pairs[setup.name]], [pair[1] for pair in pairs[setup.name]]
        ratio = statistics.median(a.requests_s / b.requests_s for a, b in pairs[setup.name])
        cpu_ratio = statistics.median(b.server_cpu_us / a.server_cpu_us for a, b in pairs[setup.name])
        cpu[setup.name] = statistics.median(r.server_cpu_us for r in ours)
        target = TARGET if setup.env.get("AUDIT_TRAIL") != "false" else None
        lines.append(
            f"| API, {setup.name} | {statistics.median(r.requests_s for r in ours):,.0f} | "
            f"{statistics.median(r.requests_s for r in theirs):,.0f} | {ratio:.2f}x | {cpu_ratio:.2f}x | "
            f"{cpu[setup.name]:.1f} | {target.text if target else ''} | {target.verdict(ratio) if target else ''} |"
        )
    everything = [run for runs in pairs.values() for pair in runs for run in pair]
    steal = max(r.steal_cores for r in everything)
    others = statistics.median(r.other_cores for r in everything)
    return "\n".join(
        [
            f"POST sprocket under wrk as in Method, on a redis-server of its own: {rounds} rounds, each a pair "
            f"of back-to-back {duration_s:g} s runs (API, baseline; the API first in odd rounds) for each of "
            "three setups of the API. The audit trail is on by default; the key is a `sprockets`-scoped entry "
            "of `SPROCKETS_API_KEYS`, sent as a bearer token. Ratios are medians of the pairs' ratios; the CPU "
            "ratio (baseline's server CPU per request over the API's) is what req/s would be if the server's "
            f"CPU were all that limits it, and it is the steadier figure here: the {os.cpu_count()} cores are "
            f"shared with wrk, Redis and other people's work on this machine (the CPUs were {busy:.0%} busy "
            f"just before; other processes took a median {others:.2f} cores during the runs, the host up to "
            f"{steal:.2f}, steal), so single runs are noisy.",
            "",
            *lines,
            "",
            "The key check on its own (the Authorization header found, the key hashed with SHA-256 and looked up "
            f"among 200 keys, the route matched, the scope checked) takes **{check_us:.2f} µs** of CPU per request "
            f"(timeit, best of 5 x {CHECKS:,}). The audit trail adds **{added_us:.1f} µs** of the API's CPU to a "
            "write (the Guard alone, 50,000 POSTs with the trail on against off, its batched writes to Redis "
            "included, best of 3). End to end, from the table's medians: the API's CPU per request with the key "
            f"checked minus without, {cpu[setups[2].name] - cpu[setups[1].name]:+.1f} µs; with the audit trail "
            f"on minus off, {cpu[setups[1].name] - cpu[setups[0].name]:+.1f} µs; on a machine this busy a "
            "difference of a few µs either way is noise, and the in-process figures are the ones to go by.",
        ]
    )


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--duration-s", type=float, default=1)
    parser.add_argument("--quiet-wait-s", type=float, default=60, help="wait this long at most for idle cores")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    return parser.parse_args()


def _wait_for_quiet(wait_s: float) -> None:
    """Wait up to `wait_s` for other processes to leave the cores idle, as run.py does."""
    deadline = time.monotonic() + wait_s
    while (busy := report.busy_fraction()) > QUIET and time.monotonic() < deadline:
        print(f"the CPUs are {busy:.0%} busy with other work; waiting for them to calm down", flush=True)  # noqa: T201


def main() -> None:
    args = _arguments()
    _wait_for_quiet(args.quiet_wait_s)
    with tempfile.TemporaryDirectory(prefix="sprockets-security-") as tmp:
        section = measure(Path(tmp), args.rounds, args.duration_s)
    RESULTS.write_text(f"# {TITLE}\n\n{section}\n")
    report.put_section(args.output, TITLE, section)
    print(section)  # noqa: T201


if __name__ == "__main__":
    main()
