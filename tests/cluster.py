"""A local Redis Cluster of three masters, and optionally replicas, for the integration tests, made the
way an operator would by hand: redis-servers with cluster mode on, each master given a third of the slots
(CLUSTER ADDSLOTSRANGE), all introduced to each other (CLUSTER MEET), each replica told its master
(CLUSTER REPLICATE). No redis-cli is needed, so it runs on the server `make run` would use."""

import contextlib
import functools
import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from sprockets_cache.ops.embedded import EmbeddedRedis

MASTERS = 3
CLUSTER_SLOTS = 16384
# Patient: 3 to 9 nodes joining on a loaded machine.
READY_TIMEOUT_S = 60


@contextlib.contextmanager
def local_cluster(base_dir: Path, replicas: int = 0, node_timeout_ms: int = 15_000) -> Iterator[list[EmbeddedRedis]]:
    """The nodes, masters first. A master unreachable for `node_timeout_ms` fails over to its replica."""
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
        _join(nodes)
        _wait_until_ok(nodes)
        _wait_until_replicating(nodes[MASTERS:])
        yield nodes


def _join(nodes: list[EmbeddedRedis]) -> None:
    clients = [redis.Redis(port=node.port, socket_timeout=READY_TIMEOUT_S) for node in nodes]
    try:
        slots = CLUSTER_SLOTS // MASTERS
        for n, client in enumerate(clients[:MASTERS]):
            last = CLUSTER_SLOTS - 1 if n == MASTERS - 1 else (n + 1) * slots - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", n * slots, last)
        for node in nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        ids = [client.execute_command("CLUSTER", "MYID").decode() for client in clients[:MASTERS]]
        for n, client in enumerate(clients[MASTERS:]):
            master = ids[n % MASTERS]
            # A replica can follow a master only once it has heard of it through the cluster bus.
            _wait_for(functools.partial(_knows, client, master))
            client.execute_command("CLUSTER", "REPLICATE", master)
    finally:
        for client in clients:
            client.close()


def _knows(client: redis.Redis, node_id: str) -> bool:
    return node_id in str(client.execute_command("CLUSTER", "NODES"))


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cluster did not come together in {READY_TIMEOUT_S} s")
        time.sleep(0.1)


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
