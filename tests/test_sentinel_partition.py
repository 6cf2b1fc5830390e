"""The master is cut off from its replicas and the Sentinels, not from the API, and keeps running: a replica
is promoted while the old master still takes writes. The API must follow the Sentinels to the new master
(not wait until the old one is demoted, which happens only once the cut heals), and with
REDIS_WAIT_REPLICAS=1 lose no acknowledged write.

The cut is iptables rules on lo in a chain of the test's own, between the addresses the servers and
Sentinels talk to each other from (tests/sentinel.py, own_hosts); the test reaches all of them on
127.0.0.1. It needs root and iptables, and skips without them."""

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sprockets_cache.ops.embedded import HOST
from sprockets_cache.store import keys
from tests.failover import lost_writes
from tests.sentinel import local_sentinels
from tests.test_failover import (
    _api,
    _check_after_failover,
    _kill_master_under_load,
    _named,
    _sentinel_settings,
    _subscribers,
)

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings(
        r"ignore:Exception ignored in. <function \w+.__del__:pytest.PytestUnraisableExceptionWarning"
    ),
]


def _iptables(*args: str) -> None:
    subprocess.run(["iptables", "-w", "10", *args], check=True, capture_output=True, timeout=30)


def _iptables_usable() -> str | None:
    """Why the test cannot cut traffic here, or None."""
    if os.geteuid() != 0:
        return "cutting traffic on lo takes iptables rules, which need root"
    if shutil.which("iptables") is None:
        return "no iptables on PATH"
    try:
        _iptables("-S", "INPUT")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        return f"iptables does not work here: {error}"
    return None


class Cut:
    """Rules in a chain of our own, jumped to from INPUT for lo only; gone with the context, also on failure."""

    def __init__(self, chain: str) -> None:
        self.chain = chain

    def isolate(self, host: str, others: list[str]) -> None:
        """Drops every packet between `host` and each of `others`, both ways."""
        for other in others:
            _iptables("-A", self.chain, "-s", host, "-d", other, "-j", "DROP")
            _iptables("-A", self.chain, "-s", other, "-d", host, "-j", "DROP")

    def heal(self) -> None:
        _iptables("-F", self.chain)


@contextlib.contextmanager
def _cuts() -> Iterator[Cut]:
    chain = f"sc-test-{secrets.token_hex(4)}"
    _iptables("-N", chain)
    try:
        _iptables("-I", "INPUT", "-i", "lo", "-j", chain)
        try:
            yield Cut(chain)
        finally:
            _iptables("-D", "INPUT", "-i", "lo", "-j", chain)
    finally:
        _iptables("-F", chain)
        _iptables("-X", chain)


async def test_with_the_old_master_cut_off_but_reachable_writes_follow_the_sentinels_and_none_is_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two replicas, REDIS_WAIT_REPLICAS=1: while the master is cut off, no replica confirms a write there
    (503); once a replica is promoted, writes must succeed on it, as they do after a kill."""
    reason = _iptables_usable()
    if reason:
        pytest.skip(reason)
    with local_sentinels(tmp_path, replicas=2, own_hosts=True) as deployment, _cuts() as cut:
        master, *others = deployment.hosts
        settings = _sentinel_settings(deployment, wait_replicas=1)
        subscribers = await _subscribers(settings)
        async for api in _api(settings):
            seen = await _kill_master_under_load(
                api, lambda: cut.isolate(master, others), _named(deployment), deployment.log_tails
            )
        with redis.Redis(port=deployment.master.port, socket_timeout=5) as old:
            # Still a master, still reachable: the API left it on the Sentinels' word alone.
            assert old.role()[0] == b"master", "the old master was demoted before the cut healed"
        store = await _check_after_failover(deployment, settings, subscribers)
        # The subscribers' client reads the new master's stream, not the old one's.
        newest, before = await store.redis.xrevrange(keys.key_for_factory_events(1), count=2)
        async with subscribers.subscribe() as subscriber:
            events = await subscriber.read_events(1, before[0].decode(), block_ms=1000)
        assert [event.id for event in events] == [newest[0].decode()]
        assert await lost_writes(store, seen) == []
        await store.close()
        await subscribers.close()
    assert seen.recovered_at is not None and seen.switched_at is not None and seen.failed_at is not None
    with capsys.disabled():
        sys.stdout.write(
            f"\npartitioned master: {len(seen.created) + len(seen.updated) + len(seen.points)} writes acknowledged, "
            f"none lost; the new master named {seen.switched_at - seen.failed_at:.1f} s after the cut, "
            f"writes succeeded again {seen.recovered_at - seen.switched_at:.1f} s after that ({HOST} reached all)\n"
        )
