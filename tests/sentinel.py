"""A local Sentinel deployment for the failover tests and tests/partitions.py, set up as an operator would: a
master, a replica of it, and three Sentinels (`redis-server FILE --sentinel`) that watch the master, all on
free ports; with `own_hosts` (or `hosts`), each on a loopback address of its own too, so that a test can cut
one off from the others."""

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from sprockets_cache.ops.embedded import HOST, EmbeddedRedis, find_redis_server

MASTER_NAME = "sprockets"
SENTINELS = 3
# A master that has not answered for this long is down; a failover may take this long before it retries.
# Over 1000 ms: a Sentinel reconnects to an instance at most once a second, so its first ping to a newly
# promoted master may go out a second after the switch; with 1000 ms it may then find that master down
# and, still counting the other Sentinels' votes on the dead one, fail over again at once.
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 5000
# Patient: the Sentinels find each other through hello messages sent every 2 s.
READY_TIMEOUT_S = 30


@dataclass
class Deployment:
    master: EmbeddedRedis
    replicas: list[EmbeddedRedis]
    sentinels: list[int]  # their ports
    password: str | None = None  # the Sentinels' own, if they require one
    logs: list[Path] = field(default_factory=list)  # the Sentinels' logfiles
    # The address each talks to the others from: the master's, each replica's, each Sentinel's. The tests
    # reach all of them on HOST too.
    hosts: list[str] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for this deployment."""
        return ",".join(f"{HOST}:{port}" for port in self.sentinels)

    def master_port(self) -> int:
        """The port of the master the Sentinels name now."""
        with redis.Redis(port=self.sentinels[0], password=self.password, socket_timeout=5) as sentinel:
            _, port = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def log_tails(self, lines: int = 40) -> str:
        """The last `lines` of each Sentinel's log, for a failed assertion's message."""
        return "".join(
            f"\n--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in self.logs
            if path.exists()
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _own_hosts(count: int) -> list[str]:
    """`count` loopback addresses in a /24 of 127/8 picked at random, so that rules on them touch no one
    else's traffic (Linux routes all of 127/8 to lo)."""
    prefix = f"127.{random.randint(16, 254)}.{random.randint(0, 254)}"
    return [f"{prefix}.{n}" for n in range(2, 2 + count)]


def _bind(host: str) -> list[str]:
    """A server's arguments to listen on `host` and HOST, and to connect to the others from `host`."""
    if host == HOST:
        return []
    return ["--bind", host, HOST, "--bind-source-addr", host, "--protected-mode", "no"]


def _sentinel_config(directory: Path, port: int, host: str, master: str, password: str | None) -> Path:
    directory.mkdir(parents=True)
    config = directory / "sentinel.conf"  # Sentinel rewrites it: one file each
    # With requirepass a Sentinel also logs in to the other Sentinels with it.
    own = f"bind {host} {HOST}\nbind-source-addr {host}\nprotected-mode no\n" if host != HOST else f"bind {HOST}\n"
    config.write_text(
        (f"requirepass {password}\n" if password else "")
        + f"port {port}\n{own}dir {directory}\nlogfile {directory / 'sentinel.log'}\n"
        f"sentinel monitor {MASTER_NAME} {master} 2\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
    )
    return config


@contextlib.contextmanager
def local_sentinels(
    base_dir: Path,
    replicas: int = 1,
    password: str | None = None,
    own_hosts: bool = False,
    hosts: list[str] | None = None,
    server_args: Sequence[str] = (),
) -> Iterator[Deployment]:
    """A master with `replicas`, watched by three Sentinels that require `password`, if given; with
    `own_hosts`, each server and Sentinel talks to the others from an address of its own (Deployment.hosts),
    picked at random, or else those of `hosts` (the master's, each replica's, each Sentinel's). The master
    and replicas get `server_args` too."""
    if hosts is None:
        hosts = _own_hosts(1 + replicas + SENTINELS) if own_hosts else [HOST] * (1 + replicas + SENTINELS)

    def server(name: str, host: str, args: list[str]) -> EmbeddedRedis:
        extra_args = [*args, *_bind(host), *server_args]
        return EmbeddedRedis(base_dir / name, appendfsync="always", extra_args=extra_args, host=host)

    with contextlib.ExitStack() as stack:
        master = stack.enter_context(server("master", hosts[0], []))
        of_master = ["--replicaof", hosts[0], str(master.port)]
        copies = [
            stack.enter_context(server(f"replica{n}", host, of_master))
            for n, host in enumerate(hosts[1 : 1 + replicas])
        ]
        ports = [_free_port() for _ in range(SENTINELS)]
        for n, port in enumerate(ports):
            host = hosts[1 + replicas + n]
            config = _sentinel_config(base_dir / f"sentinel{n}", port, host, f"{hosts[0]} {master.port}", password)
            process = subprocess.Popen(
                [find_redis_server(), str(config), "--sentinel"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.callback(end_process, process)
        _wait_until_watching(ports, copies, password)
        logs = [base_dir / f"sentinel{n}" / "sentinel.log" for n in range(SENTINELS)]
        yield Deployment(master, copies, ports, password, logs, hosts)


def end_process(process: subprocess.Popen[bytes]) -> None:
    """Stopped for good, also if a test paused it (SIGSTOP)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_until_watching(ports: list[int], replicas: list[EmbeddedRedis], password: str | None) -> None:
    """Until the replicas are in sync and each Sentinel knows them and the other Sentinels."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _watching(ports, replicas, password):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Sentinels were not ready in {READY_TIMEOUT_S} s")
        time.sleep(0.2)


def _watching(ports: list[int], replicas: list[EmbeddedRedis], password: str | None) -> bool:
    try:
        for replica in replicas:
            with redis.Redis(port=replica.port, socket_timeout=5) as client:
                if client.info("replication")["master_link_status"] != "up":
                    return False
        for port in ports:
            with redis.Redis(port=port, password=password, socket_timeout=5) as sentinel:
                state = sentinel.sentinel_master(MASTER_NAME)
            if state["num-slaves"] < len(replicas) or state["num-other-sentinels"] < SENTINELS - 1:
                return False
    except redis.RedisError:
        return False  # a Sentinel not listening yet
    return True
