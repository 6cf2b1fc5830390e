"""`make partitions`: faults injected into real processes under a write load, Jepsen-style, and a check that
no acknowledged write is lost or duplicated.

Each run starts its own deployment: a Sentinel-managed master with 1 or 2 replicas and 3 Sentinels, or a
Redis Cluster of 3 masters with 1 or 2 replicas each; every Redis process listens on a loopback address of its own
(127.42.0.x: `bind` and `bind-source-addr`), so that iptables rules on `lo` between address pairs cut any
group of them off from any other. Two API processes (`python -m sprockets_cache serve`) listen on addresses of
their own, and their connections to Redis and the Sentinels leave from those addresses too (see serve_api).
Eight writers, four on each API, create sprockets, each with a unique Idempotency-Key and a unique `teeth`
that names the logical write; a create that fails is sent again with the same key until it is acknowledged
or the run ends. After ~3 s of load a nemesis strikes for ~10 s (a partition, SIGSTOP or SIGKILL), then heals;
the load goes on for ~9 s more. Meanwhile the harness polls the Sentinels (or the cluster's slot map) for the
moment a new master is named. Once the deployment has settled (one master named everywhere, replicas caught
up) it reads every sprocket from the master and counts: acknowledged writes, lost ones (acknowledged, then
absent or holding another write's teeth), duplicated ones (one write's teeth stored twice), indeterminate ones
(never acknowledged: they may or may not have happened), acknowledgements per phase, and how long after the
promotion and after the heal the first write that was kept got acknowledged.

Prints one line a run, then a Markdown table. The gates (--ci, and any run of a recommended setup: Sentinel, 2
replicas, REDIS_WAIT_REPLICAS=1, in nemeses 1, 3, 4 and 5; the cluster, 2 replicas each, REDIS_WAIT_REPLICAS=1,
in nemeses c1 and c2): no acknowledged write lost or duplicated, a write acknowledged within 3 s of the promotion
and within 3 s of the heal; exits 1 naming each gate that failed.
Nemesis 2 is not gated: its minority holds the old master and a replica that confirm writes the majority never
sees, and its majority a new master with no replica to confirm any (WAIT is not consensus). Lost or duplicated
writes in any other run are printed as notes.

Needs root (iptables) and Linux. The rules live in a chain of their own (SC-PARTITIONS, jumped to from INPUT
and OUTPUT for `lo` only); the chain, its jumps and every process are removed at the end, on failure and on
Ctrl-C, and a leftover chain of a crashed run is removed first. It lives under tests/ beside compose_check.py:
it checks correctness under faults and gates CI, while bench/ measures speed.
"""

import argparse
import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

# tests/sentinel.py: this file runs as a script (python tests/partitions.py), with tests/ first on sys.path.
from sentinel import MASTER_NAME, end_process, local_sentinels

from sprockets_cache.ops.cli import main as sprockets_cache_main
from sprockets_cache.ops.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
CHAIN = "SC-PARTITIONS"
# Addresses of our own on loopback, away from 127.0.0.x, which other tests on the machine may use.
NET = "127.42.0."
CLUSTER_NODE_TIMEOUT_MS = 2000
MIN_REPLICAS_MAX_LAG_S = 2
LOAD_BEFORE_S = 3.0
FAULT_S = 10.0
LOAD_AFTER_S = 9.0
WRITERS = 8
# Pacing, so that eight writers leave room on a 2-core machine for the servers they load.
WRITE_PAUSE_S = 0.02
RETRY_PAUSE_S = 0.1
CLIENT_TIMEOUT_S = 5.0
POLL_S = 0.1
START_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 60.0
# The gates: a write acknowledged again within this long of the promotion, and of the heal.
BACK_WITHIN_S = 3.0
SPROCKET = {"pitch_diameter": 5.0, "outside_diameter": 6.0, "pitch": 1.0}
INDEX = "sc:{sprockets}:index"


def sprocket_key(sprocket_id: int) -> str:
    return f"sc:{{sprockets}}:{sprocket_id}"


def say(text: str, stream: Any = sys.stdout) -> None:
    stream.write(text + "\n")
    stream.flush()


def address(n: int) -> str:
    return f"{NET}{n}"


# --- setups and nemeses -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    cluster: bool
    replicas: int  # per master
    wait: int  # REDIS_WAIT_REPLICAS
    min_replicas: bool = False  # min-replicas-to-write 1 on every server

    @property
    def name(self) -> str:
        return (
            ("cluster-" if self.cluster else "")
            + f"r{self.replicas}-w{self.wait}"
            + ("-min" if self.min_replicas else "")
        )

    @property
    def title(self) -> str:
        kind = "cluster, " if self.cluster else "Sentinel, "
        replicas = f"{self.replicas} replica{'s' if self.replicas > 1 else ''}" + (" each" if self.cluster else "")
        return kind + replicas + f", WAIT {self.wait}" + (", min-replicas 1" if self.min_replicas else "")


SENTINEL_SETUPS = [Setup(False, r, w, m) for r in (2, 1) for w in (1, 0) for m in (False, True)]
CLUSTER_SETUPS = [Setup(True, r, w) for r in (1, 2) for w in (1, 0)]
RECOMMENDED = Setup(False, 2, 1)
# With 1 replica each and WAIT 1, a promoted replica has no replica of its own to confirm a write until the old
# master rejoins as one, after the heal: N + 1 replicas for WAIT N.
CLUSTER_RECOMMENDED = Setup(True, 2, 1)
SETUPS = {setup.name: setup for setup in SENTINEL_SETUPS + CLUSTER_SETUPS}
NEMESES = {
    "1": "master cut off from replicas and Sentinels",
    "2": "master, a replica and API 2 cut off from the rest",
    "3": "a replica cut off",
    "4": "master paused (SIGSTOP)",
    "5": "master killed (SIGKILL) and restarted",
    "c1": "a master cut off from the other nodes",
    "c2": "a master paused (SIGSTOP)",
}
SENTINEL_NEMESES = ["1", "2", "3", "4", "5"]
CLUSTER_NEMESES = ["c1", "c2"]
# The nemeses gated on each recommended setup (see the module's docstring for nemesis 2).
GATED = {RECOMMENDED.name: {"1", "3", "4", "5"}, CLUSTER_RECOMMENDED.name: {"c1", "c2"}}
# Two runs at once would share addresses and the chain: the second waits for this lock.
LOCK = Path(tempfile.gettempdir()) / "sc-partitions.lock"


# --- iptables ---------------------------------------------------------------------------------------------


def iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # -w: wait for the lock other users of iptables on this machine may hold.
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=check)


def remove_chain() -> None:
    """Our chain and its jumps, if there (a crashed run's leftovers too); nobody else's rules are touched."""
    for hook, direction in (("INPUT", "-i"), ("OUTPUT", "-o")):
        while iptables("-D", hook, direction, "lo", "-j", CHAIN, check=False).returncode == 0:
            pass
    iptables("-F", CHAIN, check=False)
    iptables("-X", CHAIN, check=False)


def create_chain() -> None:
    remove_chain()
    iptables("-N", CHAIN)
    iptables("-I", "INPUT", "1", "-i", "lo", "-j", CHAIN)
    iptables("-I", "OUTPUT", "1", "-o", "lo", "-j", CHAIN)


def cut(side: list[str], rest: list[str]) -> None:
    """Drop every packet between an address of `side` and one of `rest`, both ways, all rules at once."""
    rules = [f"-A {CHAIN} -s {a} -d {b} -j DROP" for x in side for y in rest for a, b in ((x, y), (y, x))]
    text = "*filter\n" + "\n".join(rules) + "\nCOMMIT\n"
    subprocess.run(["iptables-restore", "-w", "--noflush"], input=text, text=True, check=True, capture_output=True)


def heal_partition() -> None:
    iptables("-F", CHAIN)


# --- processes --------------------------------------------------------------------------------------------


def min_replicas(setup: Setup) -> list[str]:
    """A server's arguments for the setup's min-replicas-to-write, if any."""
    if not setup.min_replicas:
        return []
    return ["--min-replicas-to-write", "1", "--min-replicas-max-lag", str(MIN_REPLICAS_MAX_LAG_S)]


def redis_server(directory: Path, host: str, extra: list[str], setup: Setup, port: int = 0) -> EmbeddedRedis:
    """An EmbeddedRedis on `host`, whose own connections (to its master, to cluster peers) leave from `host`."""
    args = ["--bind-source-addr", host, "--protected-mode", "no", *extra, *min_replicas(setup)]
    return EmbeddedRedis(directory, port=port, appendfsync="always", extra_args=args, host=host)


def client(host: str, port: int) -> redis.Redis:
    return redis.Redis(host=host, port=port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)


def until(what: str, condition: Callable[[], bool], timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, httpx.HTTPError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(POLL_S)


@dataclass
class Deployment:
    setup: Setup
    master: EmbeddedRedis  # the one the nemeses strike (on a cluster: the master of the sprockets' slot)
    replicas: list[EmbeddedRedis]  # the master's replicas
    others: list[EmbeddedRedis]  # the cluster's other nodes
    sentinels: list[tuple[str, int]]
    apis: list[tuple[str, int]] = field(default_factory=list)
    api_env: dict[str, str] = field(default_factory=dict)

    @property
    def servers(self) -> list[EmbeddedRedis]:
        return [self.master, *self.replicas, *self.others]


def start_sentinels(stack: contextlib.ExitStack, setup: Setup, base: Path) -> Deployment:
    """A master at .11, replicas at .12 and .13, Sentinels at .31 to .33: tests/sentinel.py's deployment."""
    hosts = [address(11), *(address(12 + n) for n in range(setup.replicas)), *(address(31 + n) for n in range(3))]
    local = stack.enter_context(local_sentinels(base, setup.replicas, hosts=hosts, server_args=min_replicas(setup)))
    sentinels = list(zip(hosts[1 + setup.replicas :], local.sentinels, strict=True))
    env = {
        "REDIS_URL": "redis://unused.invalid:1/0",
        "REDIS_SENTINELS": ",".join(f"{host}:{port}" for host, port in sentinels),
        "REDIS_SENTINEL_MASTER": MASTER_NAME,
    }
    return Deployment(setup, local.master, local.replicas, [], sentinels, api_env=env)


def start_cluster(stack: contextlib.ExitStack, setup: Setup, base: Path) -> Deployment:
    """Masters at .41 to .43, replicas from .44 on, joined as tests/cluster.py does, on our own addresses."""
    nodes = []
    for n in range(3 * (1 + setup.replicas)):
        host = address(41 + n)
        cluster_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        cluster_args += ["--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS)]
        node = redis_server(base / f"node{n}", host, cluster_args, setup, port=_port_with_free_bus(host))
        nodes.append(stack.enter_context(node))
    clients = [client(node.host, node.port) for node in nodes]
    try:
        slots = 16384 // 3
        for n, c in enumerate(clients[:3]):
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", n * slots, 16383 if n == 2 else (n + 1) * slots - 1)
        for node in nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", node.host, node.port)
        ids = [c.execute_command("CLUSTER", "MYID") for c in clients[:3]]
        for n, c in enumerate(clients[3:]):
            master_id = ids[n % 3]
            until("a replica hearing of its master", lambda c=c, i=master_id: i in str(c.cluster("NODES")))
            c.execute_command("CLUSTER", "REPLICATE", master_id)
        until("the cluster ok", lambda: all(c.cluster("INFO")["cluster_state"] == "ok" for c in clients))
        until(
            "the replicas in sync",
            lambda: all(c.info("replication").get("master_link_status") == "up" for c in clients[3:]),
        )
        slot = clients[0].cluster("KEYSLOT", INDEX)
        owner = next(n for n in range(3) if n * slots <= slot < (16384 if n == 2 else (n + 1) * slots))
    finally:
        for c in clients:
            c.close()
    replicas = [nodes[3 + k] for k in range(len(nodes) - 3) if k % 3 == owner]
    others = [node for node in nodes if node is not nodes[owner] and node not in replicas]
    env = {"REDIS_URL": nodes[0].url, "REDIS_CLUSTER": "true"}
    return Deployment(setup, nodes[owner], replicas, others, [], api_env=env)


def _port_with_free_bus(host: str) -> int:
    """A free port whose cluster bus port (10,000 higher) is free too."""
    for _ in range(100):
        port = free_port(host)
        if port + 10_000 < 65_536:
            with socket.socket() as probe:
                try:
                    probe.bind((host, port + 10_000))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair for a cluster node")


def start_apis(stack: contextlib.ExitStack, deployment: Deployment, base: Path) -> None:
    """API 1 at .21 and API 2 at .22, each through serve_api so its Redis connections leave from its address."""
    for n in range(2):
        host = address(21 + n)
        port = free_port(host)
        env = {
            **os.environ,
            **deployment.api_env,
            "REDIS_WAIT_REPLICAS": str(deployment.setup.wait),
            "ACCESS_LOG": "false",
            "PYTHONPATH": str(ROOT),
        }
        command = [sys.executable, str(Path(__file__)), "--serve-api", host, str(port)]
        with (base / f"api{n + 1}.log").open("ab") as log:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        stack.callback(end_process, process)
        until(f"API {n + 1} ready", lambda h=host, p=port: httpx.get(f"http://{h}:{p}/ready", timeout=2).is_success)
        deployment.apis.append((host, port))


def serve_api(host: str, port: int) -> int:
    """`python -m sprockets_cache serve` on host:port, with every connection it opens (to Redis, to the
    Sentinels: redis-py opens them with asyncio.open_connection) bound to `host` as its source address, so
    that rules between addresses can cut this API process off from some servers and not from others. Without
    it, Linux gives loopback connections the source 127.0.0.1 whatever the destination."""
    opened = asyncio.open_connection

    async def open_from_host(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("local_addr", (host, 0))
        return await opened(*args, **kwargs)

    asyncio.open_connection = open_from_host  # type: ignore[assignment]
    return sprockets_cache_main(["serve", "--host", host, "--port", str(port)])


# --- the load ---------------------------------------------------------------------------------------------


@dataclass
class Write:
    """One logical write: a create of a sprocket with this teeth, under one Idempotency-Key."""

    writer: int
    teeth: int
    attempts: list[tuple[float, float, str]] = field(default_factory=list)  # sent, answered, outcome
    acked_at: float | None = None
    sprocket_id: int | None = None


async def writer(number: int, api: httpx.AsyncClient, writes: list[Write], start: float, stop: asyncio.Event) -> None:
    for n in itertools.count(1):
        write = Write(number, number * 1_000_000 + n)
        writes.append(write)
        key = f"{number}-{n}"
        while not stop.is_set():  # the same create, with the same key, until acknowledged or the run ends
            sent = time.monotonic() - start
            try:
                response = await api.post(
                    "/api/v1/sprockets", json={**SPROCKET, "teeth": write.teeth}, headers={"Idempotency-Key": key}
                )
                outcome = str(response.status_code)
            except httpx.HTTPError as error:
                response, outcome = None, type(error).__name__
            write.attempts.append((sent, time.monotonic() - start, outcome))
            if response is not None and response.status_code in (200, 201):
                write.acked_at = write.attempts[-1][1]
                write.sprocket_id = response.json()["id"]
                break
            if outcome == "409":
                # The key's first request ended without its response: a retry with it gets 409 for a minute.
                break
            await asyncio.sleep(RETRY_PAUSE_S)
        if stop.is_set():
            return
        await asyncio.sleep(WRITE_PAUSE_S)


# --- promotion, faults, settling --------------------------------------------------------------------------


def named_master(deployment: Deployment) -> tuple[str, int] | None:
    """Where the Sentinels (any one of them), or the cluster's slot map, say the master is now."""
    if deployment.setup.cluster:
        node = deployment.others[0]
        with client(node.host, node.port) as c:
            slot = c.cluster("KEYSLOT", INDEX)
            for first, last, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return master[0], int(master[1])
        return None
    named = set()
    for host, port in deployment.sentinels:
        with contextlib.suppress(redis.RedisError), client(host, port) as s:
            found = s.sentinel_get_master_addr_by_name(MASTER_NAME)
            if found:
                named.add((found[0], int(found[1])))
    first = (deployment.master.host, deployment.master.port)
    return next((m for m in named if m != first), first if named else None)


async def watch_promotion(deployment: Deployment, start: float, found: list[float]) -> None:
    first = (deployment.master.host, deployment.master.port)
    while not found:
        try:
            now = await asyncio.to_thread(named_master, deployment)
        except redis.RedisError:
            now = None
        if now is not None and now != first:
            found.append(time.monotonic() - start)
            return
        await asyncio.sleep(POLL_S)


def partition_sides(deployment: Deployment, nemesis: str) -> tuple[list[str], list[str]]:
    master, replicas = deployment.master.host, [r.host for r in deployment.replicas]
    sentinels = [host for host, _ in deployment.sentinels]
    apis = [host for host, _ in deployment.apis]
    others = [node.host for node in deployment.others]
    if nemesis == "1":
        return [master], replicas + sentinels
    if nemesis == "2":
        return [master, replicas[0], apis[1]], replicas[1:] + sentinels + [apis[0]]
    if nemesis == "3":
        return [replicas[-1]], [master, *replicas[:-1], *sentinels, *apis]
    if nemesis == "c1":
        return [master], replicas + others
    raise ValueError(nemesis)


def strike(deployment: Deployment, nemesis: str) -> Callable[[], None]:
    """Starts the fault; returns what heals it."""
    master = deployment.master
    if nemesis in ("4", "c2"):
        os.kill(master.pid, signal.SIGSTOP)
        return lambda: os.kill(master.pid, signal.SIGCONT)
    if nemesis == "5":
        master.kill()
        return master.start  # same dir, same port: it rejoins as whatever the Sentinels say
    cut(*partition_sides(deployment, nemesis))
    return heal_partition


def settled(deployment: Deployment) -> tuple[str, int] | None:
    """The master, once one is named everywhere and every replica of it is in sync with it; else None."""
    if deployment.setup.cluster:
        return _cluster_settled(deployment)
    masters = set()
    for host, port in deployment.sentinels:
        with client(host, port) as s:
            found = s.sentinel_get_master_addr_by_name(MASTER_NAME)
            masters.add((found[0], int(found[1])) if found else None)
    if len(masters) != 1 or None in masters:
        return None
    (host, port) = masters.pop()  # type: ignore[misc]
    with client(host, port) as m:
        info = m.info("replication")
    if info["role"] != "master":
        return None
    for server in deployment.servers:
        if (server.host, server.port) == (host, port):
            continue
        with client(server.host, server.port) as r:
            replica = r.info("replication")
        if (replica["role"], replica.get("master_host"), replica.get("master_link_status")) != ("slave", host, "up"):
            return None
        if replica.get("slave_repl_offset") != info["master_repl_offset"]:
            return None
    return host, port


def _cluster_settled(deployment: Deployment) -> tuple[str, int] | None:
    offsets = {}
    for server in deployment.servers:
        with client(server.host, server.port) as c:
            if c.cluster("INFO")["cluster_state"] != "ok":
                return None
            offsets[(server.host, server.port)] = c.info("replication")
    for replication in offsets.values():
        if replication["role"] == "slave":
            master = offsets.get((replication["master_host"], int(replication["master_port"])))
            if replication["master_link_status"] != "up" or master is None:
                return None
            if replication["slave_repl_offset"] != master["master_repl_offset"]:
                return None
    return named_master(deployment)


def stored_teeth(host: str, port: int) -> dict[int, int]:
    """Every sprocket the master holds: id -> teeth."""
    with client(host, port) as m:
        ids = [int(i) for i in m.zrange(INDEX, 0, -1)]
        with m.pipeline(transaction=False) as pipe:
            for sprocket_id in ids:
                pipe.hget(sprocket_key(sprocket_id), "teeth")
            teeth = pipe.execute()
    return {i: int(t) for i, t in zip(ids, teeth, strict=True) if t is not None}


# --- one run ----------------------------------------------------------------------------------------------


@dataclass
class Result:
    setup: str
    nemesis: str
    acknowledged: int
    lost: int
    duplicated: int
    indeterminate: int
    indeterminate_stored: int
    phases: dict[str, int]  # acknowledgements: before, fault (before the promotion), promoted, healed
    fault_at: float
    promoted_at: float | None
    healed_at: float
    promotion_to_write_s: float | None
    heal_to_write_s: float | None
    settled: bool
    outcomes: dict[str, int]  # every attempt's answer: status code or exception
    lost_examples: list[str]


async def drive(deployment: Deployment, nemesis: str) -> tuple[list[Write], float, float | None, float]:
    """The load, the fault and the heal; every write with its attempts, and when the fault, the promotion
    and the heal happened (seconds since the load began)."""
    writes: list[Write] = []
    stop = asyncio.Event()
    start = time.monotonic()
    clients = [
        httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=CLIENT_TIMEOUT_S) for host, port in deployment.apis
    ]
    tasks = [asyncio.create_task(writer(n, clients[n % 2], writes, start, stop)) for n in range(WRITERS)]
    promoted: list[float] = []
    watcher: asyncio.Task[None] | None = None
    heal: Callable[[], None] | None = None
    try:
        await asyncio.sleep(LOAD_BEFORE_S)
        if not any(w.acked_at for w in writes):
            raise RuntimeError("no write acknowledged before the fault: see the API logs")
        fault_at = time.monotonic() - start
        watcher = asyncio.create_task(watch_promotion(deployment, start, promoted))
        heal = await asyncio.to_thread(strike, deployment, nemesis)
        await asyncio.sleep(FAULT_S)
        healed_at = time.monotonic() - start
        await asyncio.to_thread(heal)
        heal = None
        await asyncio.sleep(LOAD_AFTER_S)
    finally:
        if heal is not None:  # interrupted or failed during the fault
            await asyncio.to_thread(heal)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        for c in clients:
            await c.aclose()
    return writes, fault_at, (promoted[0] if promoted else None), healed_at


def check(
    deployment: Deployment,
    nemesis: str,
    writes: list[Write],
    fault_at: float,
    promoted_at: float | None,
    healed_at: float,
) -> Result:
    master: tuple[str, int] | None = None
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while master is None and time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            master = settled(deployment)
        if master is None:
            time.sleep(POLL_S)
    is_settled = master is not None
    if master is None:  # read what the Sentinels or the slot map name, and say it had not settled
        master = named_master(deployment)
        assert master is not None, "no master named after the run"
    stored = stored_teeth(*master)
    acked = [w for w in writes if w.acked_at is not None]
    lost = [w for w in acked if stored.get(w.sprocket_id or 0) != w.teeth]
    copies = Counter(stored.values())
    kept = sorted(w.acked_at for w in acked if w not in lost and w.acked_at is not None)
    unacked = [w for w in writes if w.acked_at is None and w.attempts]
    present = set(stored.values())

    def phase(at: float) -> str:
        if at < fault_at:
            return "before"
        if at >= healed_at:
            return "healed"
        return "promoted" if promoted_at is not None and at >= promoted_at else "fault"

    def first_after(moment: float | None) -> float | None:
        later = [at for at in kept if moment is not None and at >= moment]
        return later[0] - moment if later and moment is not None else None

    phases = Counter(phase(w.acked_at) for w in acked if w.acked_at is not None)
    return Result(
        setup=deployment.setup.name,
        nemesis=nemesis,
        acknowledged=len(acked),
        lost=len(lost),
        duplicated=sum(n - 1 for n in copies.values() if n > 1),
        indeterminate=len(unacked),
        indeterminate_stored=sum(1 for w in unacked if w.teeth in present),
        phases={p: phases.get(p, 0) for p in ("before", "fault", "promoted", "healed")},
        fault_at=fault_at,
        promoted_at=promoted_at,
        healed_at=healed_at,
        promotion_to_write_s=first_after(promoted_at),
        heal_to_write_s=first_after(healed_at),
        settled=is_settled,
        outcomes=dict(Counter(outcome for w in writes for *_, outcome in w.attempts)),
        lost_examples=[
            f"teeth {w.teeth} acknowledged at {w.acked_at:.2f} s as id {w.sprocket_id}, "
            f"stored: {stored.get(w.sprocket_id or 0)}"
            for w in lost[:5]
        ],
    )


def run_once(setup: Setup, nemesis: str, keep: Path | None) -> Result:
    """One run on a deployment of its own, in a temporary directory (under `keep`, and kept, if given: the
    servers' and Sentinels' logs)."""
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if keep:
            base = Path(tempfile.mkdtemp(prefix=f"{setup.name}-{nemesis}-", dir=keep))
        else:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="partitions-")))
        deployment = start_cluster(stack, setup, base) if setup.cluster else start_sentinels(stack, setup, base)
        start_apis(stack, deployment, base)
        writes, fault_at, promoted_at, healed_at = asyncio.run(drive(deployment, nemesis))
        return check(deployment, nemesis, writes, fault_at, promoted_at, healed_at)


# --- gates and the table ----------------------------------------------------------------------------------


def gates(result: Result) -> list[str]:
    """What a run of the recommended setup failed, in words (nothing for other setups and nemeses)."""
    if not is_gated(result):
        return []
    failed = []
    where = f"{result.setup}, nemesis {result.nemesis}"
    if result.lost or result.duplicated:
        failed.append(f"{where}: {result.lost} acknowledged writes lost, {result.duplicated} duplicated")
    if result.promoted_at is not None and not _within(result.promotion_to_write_s):
        failed.append(f"{where}: no write acknowledged within {BACK_WITHIN_S:.0f} s of the promotion")
    if not _within(result.heal_to_write_s):
        failed.append(f"{where}: no write acknowledged within {BACK_WITHIN_S:.0f} s of the heal")
    return failed


def is_gated(result: Result) -> bool:
    return result.nemesis in GATED.get(result.setup, set())


def _within(seconds: float | None) -> bool:
    return seconds is not None and seconds <= BACK_WITHIN_S


def _seconds(values: list[float | None]) -> str:
    """Median and max over the runs that had the moment; `never` counts runs with no write after it."""
    seen = [v for v in values if v is not None]
    text = ""
    if seen:
        text = f"{statistics.median(seen):.1f}" + (f" (max {max(seen):.1f})" if len(seen) > 1 else "")
    never = len(values) - len(seen)
    if never:
        text += ("; " if text else "") + f"never ×{never}"
    return text


def table(results: list[Result]) -> str:
    rows = [
        "| setup | nemesis | runs | acknowledged | lost | duplicated | indeterminate | acks before / fault / "
        "promoted / healed | promotion → first write (s) | heal → first write (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        groups.setdefault((result.setup, result.nemesis), []).append(result)
    for (setup, nemesis), runs in groups.items():
        phases = " / ".join(str(sum(r.phases[p] for r in runs)) for p in ("before", "fault", "promoted", "healed"))
        promotions = [r.promotion_to_write_s for r in runs if r.promoted_at is not None]
        unpromoted = sum(1 for r in runs if r.promoted_at is None)
        promotion = _seconds(promotions) if promotions else ""
        if unpromoted:
            promotion += ("; " if promotion else "") + f"no promotion ×{unpromoted}"
        rows.append(
            f"| {SETUPS[setup].title} | {nemesis}: {NEMESES[nemesis]} | {len(runs)} | "
            f"{sum(r.acknowledged for r in runs)} | {sum(r.lost for r in runs)} | {sum(r.duplicated for r in runs)} | "
            f"{sum(r.indeterminate for r in runs)} | {phases} | {promotion} | "
            f"{_seconds([r.heal_to_write_s for r in runs])} |"
        )
    return "\n".join(rows)


def describe(result: Result, run: int, runs: int) -> str:
    after = lambda s: f"{s:.1f} s" if s is not None else "never"  # noqa: E731
    promoted = "no promotion"
    if result.promoted_at is not None:
        promoted = f"promoted at {result.promoted_at:.1f} s (first write {after(result.promotion_to_write_s)} after)"
    return (
        f"{result.setup} nemesis {result.nemesis} run {run}/{runs}: {result.acknowledged} acknowledged, "
        f"{result.lost} lost, {result.duplicated} duplicated, {result.indeterminate} indeterminate "
        f"({result.indeterminate_stored} of them stored); fault at {result.fault_at:.1f} s, {promoted}, healed at "
        f"{result.healed_at:.1f} s (first write {after(result.heal_to_write_s)} after)"
        f"{'' if result.settled else '; NOT SETTLED'}; "
        f"answers {result.outcomes}" + "".join(f"\n  lost: {e}" for e in result.lost_examples)
    )


# --- the command ------------------------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> list[tuple[Setup, str]]:
    if args.ci:
        return [(RECOMMENDED, n) for n in SENTINEL_NEMESES] + [(CLUSTER_RECOMMENDED, n) for n in CLUSTER_NEMESES]
    names = (
        list(SETUPS) if args.matrix else (args.setups or f"{RECOMMENDED.name},{CLUSTER_RECOMMENDED.name}").split(",")
    )
    chosen = []
    for name in names:
        if name not in SETUPS:
            raise SystemExit(f"unknown setup {name!r}; known: {', '.join(SETUPS)}")
        setup = SETUPS[name]
        kind = CLUSTER_NEMESES if setup.cluster else SENTINEL_NEMESES
        wanted = args.nemeses.split(",") if args.nemeses else kind
        chosen += [(setup, n) for n in wanted if n in kind]
    return chosen


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Faults under a write load (needs root): lost, duplicated and indeterminate writes, and "
        "how soon writes come back.",
        epilog="setups: " + "; ".join(f"{s.name} ({s.title})" for s in SETUPS.values())
        + ". nemeses: " + "; ".join(f"{k}: {v}" for k, v in NEMESES.items()),
    )  # fmt: skip
    p.add_argument("--ci", action="store_true", help="one run of each nemesis on the recommended setups, gated")
    p.add_argument("--matrix", action="store_true", help="every setup with each of its nemeses")
    p.add_argument("--setups", help=f"comma-separated setups (default {RECOMMENDED.name},{CLUSTER_RECOMMENDED.name})")
    p.add_argument("--nemeses", help="comma-separated nemeses (default: every one that applies)")
    p.add_argument("--runs", type=int, default=1, help="runs of each setup and nemesis (default 1)")
    p.add_argument("--out", type=Path, help="append each run's result to this file, one JSON object a line")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep each run's directory (logs) under DIR")
    p.add_argument("--report", type=Path, nargs="+", metavar="FILE", help="only print the table of --out files")
    return p


def stack_lock() -> Any:
    """Held until closed: a second harness on this machine waits here instead of removing our rules."""
    lock = LOCK.open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve-api"]:
        return serve_api(argv[1], int(argv[2]))
    args = parser().parse_args(argv)
    if args.report:
        results = [Result(**json.loads(line)) for path in args.report for line in path.read_text().splitlines()]
        say(table(results))
        return 0
    if sys.platform != "linux" or os.geteuid() != 0:
        say("partitions: needs root on Linux (it adds iptables rules on lo); run it as root", sys.stderr)
        return 2
    if not (shutil.which("iptables") and shutil.which("iptables-restore")):
        say("partitions: iptables and iptables-restore are not on PATH", sys.stderr)
        return 2
    todo = plan(args)
    # SIGTERM ends the run as Ctrl-C does, so that the finally blocks remove rules and processes.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results, failed, notes = [], [], []
    began = time.monotonic()
    lock = stack_lock()
    try:
        create_chain()
        for setup, nemesis in todo:
            for run in range(1, args.runs + 1):
                result = run_once(setup, nemesis, args.keep)
                results.append(result)
                say(describe(result, run, args.runs))
                if args.out:
                    with args.out.open("a") as out:
                        out.write(json.dumps(asdict(result)) + "\n")
                failed += gates(result)
                if not is_gated(result) and (result.lost or result.duplicated):
                    notes.append(
                        f"{result.setup}, nemesis {result.nemesis}: {result.lost} lost, {result.duplicated} duplicated"
                    )
    finally:
        remove_chain()
        lock.close()
    say(f"\n{len(results)} runs in {time.monotonic() - began:.0f} s\n")
    say(table(results))
    for note in notes:
        say(f"not gated: {note}")
    for gate in failed:
        say(f"GATE FAILED: {gate}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, after every rule and process was removed
        say("partitions: interrupted", sys.stderr)
        sys.exit(130)
