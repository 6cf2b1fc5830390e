"""A local Sentinel deployment for the failover tests, set up as an operator would: a master, a replica
of it, and three Sentinels (`redis-server FILE --sentinel`) that watch the master, all on free ports."""

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
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


def _sentinel_config(directory: Path, port: int, master_port: int, password: str | None) -> Path:
    directory.mkdir(parents=True)
    config = directory / "sentinel.conf"  # Sentinel rewrites it: one file each
    # With requirepass a Sentinel also logs in to the other Sentinels with it.
    config.write_text(
        (f"requirepass {password}\n" if password else "")
        + f"port {port}\nbind {HOST}\ndir {directory}\nlogfile {directory / 'sentinel.log'}\n"
        f"sentinel monitor {MASTER_NAME} {HOST} {master_port} 2\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
    )
    return config


@contextlib.contextmanager
def local_sentinels(base_dir: Path, replicas: int = 1, password: str | None = None) -> Iterator[Deployment]:
    """A master with `replicas`, watched by three Sentinels that require `password`, if given."""
    with contextlib.ExitStack() as stack:
        master = stack.enter_context(EmbeddedRedis(base_dir / "master", appendfsync="always"))
        of_master = ["--replicaof", HOST, str(master.port)]
        copies = [
            stack.enter_context(EmbeddedRedis(base_dir / f"replica{n}", appendfsync="always", extra_args=of_master))
            for n in range(replicas)
        ]
        ports = [_free_port() for _ in range(SENTINELS)]
        for n, port in enumerate(ports):
            config = _sentinel_config(base_dir / f"sentinel{n}", port, master.port, password)
            process = subprocess.Popen(
                [find_redis_server(), str(config), "--sentinel"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.callback(_end, process)
        _wait_until_watching(ports, copies, password)
        logs = [base_dir / f"sentinel{n}" / "sentinel.log" for n in range(SENTINELS)]
        yield Deployment(master, copies, ports, password, logs)


def _end(process: subprocess.Popen[bytes]) -> None:
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
