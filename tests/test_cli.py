"""`python -m sprockets_cache` as a user runs it: subprocesses against a real redis-server."""

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from sprockets_cache.ops.embedded import EmbeddedRedis
from tests.test_observability import sample

ROOT = Path(__file__).parent.parent
FACTORY_SEED = "seeds/seed_factory_data.json"
SPROCKET_SEED = "seeds/seed_sprocket_types.json"
# Patient: a Python process under coverage, and an embedded Redis, starting on a loaded machine.
START_TIMEOUT_S = 60.0

pytestmark = pytest.mark.redis_server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def environment(**overrides: str) -> dict[str, str]:
    """This environment without Redis settings, the package importable from any directory."""
    env = {name: value for name, value in os.environ.items() if name not in ("REDIS_URL", "REDIS_CLUSTER")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **overrides}


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sprockets_cache", *args]
    return subprocess.run(command, cwd=cwd, env=environment(**env), capture_output=True, text=True, timeout=30)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory with a copy of the seeds, as `make run` has."""
    shutil.copytree(ROOT / "seeds", tmp_path / "seeds")
    return tmp_path


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()
        yield redis_server.url


def test_seed_prints_a_line_per_file_and_a_rerun_says_already_loaded(workdir: Path, redis_url: str) -> None:
    first = cli("seed", FACTORY_SEED, SPROCKET_SEED, cwd=workdir, REDIS_URL=redis_url)
    assert (first.returncode, first.stdout) == (
        0,
        f"{FACTORY_SEED}: loaded 3 factories (ids 1-3, 60 points)\n{SPROCKET_SEED}: loaded 3 sprockets (ids 1-3)\n",
    )

    again = cli("seed", FACTORY_SEED, SPROCKET_SEED, cwd=workdir, REDIS_URL=redis_url)
    assert again.returncode == 0
    assert [line.split(": ")[1][:14] for line in again.stdout.splitlines()] == ["already loaded"] * 2
    with redis.Redis.from_url(redis_url) as client:
        assert client.zcard("sc:{factories}:index") == client.zcard("sc:{sprockets}:index") == 3


def test_seed_with_progress_reports_points_written_on_stderr(workdir: Path, redis_url: str) -> None:
    done = cli("seed", "--progress", FACTORY_SEED, cwd=workdir, REDIS_URL=redis_url)
    assert done.returncode == 0
    assert f"{FACTORY_SEED}: 60/60 points written" in done.stderr.splitlines()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"factories": [\n  {"factory": {"name": "A",}}\n]}', "bad.json: line 2 column 27: not valid JSON"),
        ('{"sprockets": [{"teeth": 0}]}', "bad.json: sprockets[0].teeth: Input should be greater than or equal to 1"),
    ],
    ids=["malformed-json", "rule-broken"],
)
def test_seed_of_a_bad_file_exits_2_naming_file_and_position_and_writes_nothing(
    workdir: Path, redis_url: str, content: str, message: str
) -> None:
    (workdir / "bad.json").write_text(content)

    failed = cli("seed", FACTORY_SEED, "bad.json", cwd=workdir, REDIS_URL=redis_url)

    assert failed.returncode == 2
    assert failed.stdout == ""
    assert failed.stderr.startswith(message)
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


def test_seed_with_redis_unreachable_exits_1_fast_with_one_line(workdir: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    # What starting the CLI alone costs on this machine now (a command that needs no Redis).
    started = time.monotonic()
    assert cli("keys", "new", cwd=workdir).returncode == 0
    start_up = time.monotonic() - started
    started = time.monotonic()

    failed = cli("seed", FACTORY_SEED, cwd=workdir, REDIS_URL=url)

    # Refused at once, before any file is read: no wait for Redis, no retries for seconds.
    assert time.monotonic() - started < start_up + 5
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"cannot reach Redis at {url}: ")
    assert len(failed.stderr.splitlines()) == 1


def test_seed_never_prints_the_redis_password(workdir: Path) -> None:
    failed = cli("seed", FACTORY_SEED, cwd=workdir, REDIS_URL=f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    assert failed.returncode == 1
    assert "hunter2" not in failed.stderr
    assert ":***@127.0.0.1" in failed.stderr


def test_seed_into_a_redis_that_is_full_exits_1_naming_the_refusal_and_writes_nothing(
    workdir: Path, redis_url: str
) -> None:
    with redis.Redis.from_url(redis_url) as client:
        limit = client.config_get("maxmemory")["maxmemory"]
        # A Redis at its memory limit with no eviction refuses every write with OOM.
        client.config_set("maxmemory", "1")
        try:
            failed = cli("seed", FACTORY_SEED, cwd=workdir, REDIS_URL=redis_url)
        finally:
            client.config_set("maxmemory", limit)
        assert client.dbsize() == 0
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"Redis at {redis_url} failed: ")
    assert "maxmemory" in failed.stderr


def test_keys_new_prints_a_fresh_key_and_the_digest_that_admits_it(workdir: Path) -> None:
    printed = [cli("keys", "new", cwd=workdir) for _ in range(2)]
    assert [done.returncode for done in printed] == [0, 0]
    pairs = [re.findall(r"^(?:key|digest): +(\S+)$", done.stdout, re.MULTILINE) for done in printed]
    assert all(len(pair) == 2 for pair in pairs)
    assert pairs[0][0] != pairs[1][0]
    for key, digest in pairs:
        assert hashlib.sha256(key.encode()).hexdigest() == digest


@pytest.mark.parametrize(
    ("args", "env", "complaint"),
    [
        (["--port", "http"], {}, "not a port number: 'http'"),
        (["--port", "70000"], {}, "not a port number: '70000'"),
        ([], {"PORT": "eighty"}, "not a port number: 'eighty'"),
        (["--workers", "0"], {}, "not a whole number >= 1: '0'"),
        ([], {"WORKERS": "-2"}, "not a whole number >= 1: '-2'"),
    ],
)
def test_serve_with_a_bad_port_or_worker_count_is_a_usage_error(
    workdir: Path, args: list[str], env: dict[str, str], complaint: str
) -> None:
    failed = cli("serve", *args, cwd=workdir, **env)
    assert failed.returncode == 2
    assert complaint in failed.stderr
    assert "usage:" in failed.stderr


class Run:
    """`python -m sprockets_cache run` (or `python ARGS`) in `workdir`, its log in run.log."""

    def __init__(self, workdir: Path, port: int, *args: str, **env: str) -> None:
        self.log = workdir / f"run-{time.monotonic_ns()}.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, *(args or ("-m", "sprockets_cache", "run"))],
                cwd=workdir,
                env=environment(PORT=str(port), **env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{port}"

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail(f"run did not serve within {START_TIMEOUT_S} s:\n{self.log.read_text()}")

    def redis_pid(self) -> int:
        match = re.search(r"embedded Redis at (redis://\S+),", self.log.read_text())
        assert match, self.log.read_text()
        with redis.Redis.from_url(match[1]) as client:
            return int(client.info("server")["process_id"])

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=30)


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def run_in(workdir: Path) -> Iterator[list[Run]]:
    """Runs started by a test; any left running are killed at the end."""
    runs: list[Run] = []
    yield runs
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


@pytest.mark.timeout(120)
def test_run_serves_the_seeded_factories_on_an_embedded_redis_and_stops_both(workdir: Path, run_in: list[Run]) -> None:
    port = free_port()
    run = Run(workdir, port)
    run_in.append(run)
    run.wait_until_serving()
    redis_pid = run.redis_pid()

    factories = httpx.get(f"{run.url}/api/v1/factories").json()["factories"]
    assert [(f["id"], f["name"], len(f["chart_data"]["time"])) for f in factories] == [
        (1, "Factory 1", 20),
        (2, "Factory 2", 20),
        (3, "Factory 3", 20),
    ]
    assert len(httpx.get(f"{run.url}/api/v1/sprockets").json()["sprockets"]) == 3

    assert run.stop(signal.SIGINT) == 0
    assert not is_running(redis_pid)
    assert list((workdir / "data").rglob("*.aof"))

    # Rerun on the same data: nothing seeded twice, and SIGTERM stops both as well.
    rerun = Run(workdir, port)
    run_in.append(rerun)
    rerun.wait_until_serving()
    redis_pid = rerun.redis_pid()
    assert [f["id"] for f in httpx.get(f"{rerun.url}/api/v1/factories").json()["factories"]] == [1, 2, 3]
    assert "not seeding" in rerun.log.read_text()
    assert rerun.stop(signal.SIGTERM) == 0
    assert not is_running(redis_pid)


@pytest.mark.timeout(180)
def test_serve_answers_while_more_connections_than_its_request_queue_are_open(
    workdir: Path, redis_url: str, run_in: list[Run]
) -> None:
    """Dashboards keep connections open between polls: 1,200 idle ones, more than REQUESTS_AT_ONCE and
    REQUEST_QUEUE together, must not make the server refuse the requests that do come."""
    run = Run(workdir, free_port(), "-m", "sprockets_cache", "serve", REDIS_URL=redis_url)
    run_in.append(run)
    run.wait_until_serving()
    host, port = run.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=30) for _ in range(1200)]
    try:
        # The server has taken them all: a request on the last one is answered.
        idle[-1].sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        assert idle[-1].recv(64).startswith(b"HTTP/1.1 200")
        response = httpx.get(f"{run.url}/api/v1/sprockets", timeout=30)
        assert response.status_code == 200, response.text
    finally:
        for connection in idle:
            connection.close()


@pytest.mark.timeout(120)
def test_with_two_workers_metrics_count_the_requests_of_both(workdir: Path, run_in: list[Run]) -> None:
    tmp = workdir / "tmp"
    tmp.mkdir()
    run = Run(workdir, free_port(), WORKERS="2", TMPDIR=str(tmp))
    run_in.append(run)
    run.wait_until_serving()
    requests = 100
    # A new connection each, for either worker to accept; a request id starts with its worker's prefix.
    workers = {httpx.get(f"{run.url}/api/v1/sprockets").headers["x-request-id"].split("-")[0] for _ in range(requests)}
    if len(workers) < 2:
        pytest.skip("the kernel handed every connection to one worker")
    metrics = httpx.get(f"{run.url}/metrics").text
    counted = re.search(
        r'http_request_duration_seconds_count\{method="GET",route="/api/v1/sprockets",status="200"\} (\S+)', metrics
    )
    assert counted, metrics
    assert float(counted[1]) == requests

    def cache_reads() -> float:
        metrics = httpx.get(f"{run.url}/metrics").text
        return sample(metrics, "read_cache_hits_total") + sample(metrics, "read_cache_misses_total")

    before, reads = cache_reads(), 20
    for _ in range(reads):
        assert httpx.get(f"{run.url}/api/v1/factories/1").status_code == 200
    assert cache_reads() - before == reads
    assert sample(httpx.get(f"{run.url}/metrics").text, "read_cache_bytes") > 0  # the workers' caches, added up
    assert run.stop(signal.SIGINT) == 0
    assert list(tmp.iterdir()) == []  # the workers' metric files went with the run


@pytest.mark.timeout(120)
def test_run_with_redis_url_serves_that_redis_and_says_which_seed_files_are_missing(
    tmp_path: Path, redis_url: str, run_in: list[Run]
) -> None:
    # No seeds/ in this directory: nothing to load, and the log says so; no embedded Redis either.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = Run(elsewhere, free_port(), REDIS_URL=redis_url)
    run_in.append(run)
    run.wait_until_serving()
    created = httpx.post(f"{run.url}/api/v1/factories", json={"name": "Line A"})
    assert created.status_code == 201, created.text
    with redis.Redis.from_url(redis_url) as client:
        assert client.hget("sc:{factory:1}:meta", "name") == b"Line A"
    assert run.stop(signal.SIGTERM) == 0
    log = run.log.read_text()
    assert f"no seed file at {elsewhere / FACTORY_SEED}" in log
    assert "embedded Redis" not in log
    assert not (elsewhere / "data").exists()


@pytest.mark.timeout(120)
def test_uvicorn_serves_the_app_at_the_path_the_docs_give(workdir: Path, redis_url: str, run_in: list[Run]) -> None:
    port = free_port()
    run_in.append(
        Run(workdir, port, "-m", "uvicorn", "sprockets_cache.app:app", "--port", str(port), REDIS_URL=redis_url)
    )
    run_in[0].wait_until_serving()
    assert httpx.get(f"{run_in[0].url}/api/v1/sprockets", timeout=10).json() == {"sprockets": [], "next_cursor": None}


def test_serve_with_a_bad_key_entry_exits_2_with_one_line_naming_its_position(tmp_path: Path) -> None:
    entries = f"{'a' * 64},{'b' * 64}=sprockets+raed"
    failed = cli("serve", cwd=tmp_path, SPROCKETS_API_KEYS=entries, PORT=str(free_port()))
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [
        "SPROCKETS_API_KEYS: entry 2: unknown scope 'raed' (known: admin, sprockets, factories, factory:<id>, read)"
    ]


def test_keys_new_prints_a_key_and_the_entry_that_grants_its_scopes(tmp_path: Path) -> None:
    made = cli("keys", "new", "--scope", "factory:3", "--scope", "read", cwd=tmp_path)
    lines = dict(line.split(":", 1) for line in made.stdout.splitlines()[:3])
    key, digest = lines["key"].strip(), lines["digest"].strip()
    assert hashlib.sha256(key.encode()).hexdigest() == digest
    assert lines["entry"].strip() == f"{digest}=factory:3+read"


def test_keys_add_list_and_revoke_manage_keys_held_in_redis(tmp_path: Path, redis_url: str) -> None:
    added = cli("keys", "add", "--scope", "factory:1", cwd=tmp_path, REDIS_URL=redis_url)
    assert added.returncode == 0, added.stderr
    key = added.stdout.splitlines()[0]
    key_id = hashlib.sha256(key.encode()).hexdigest()[:16]
    assert key_id in added.stderr

    listed = cli("keys", "list", cwd=tmp_path, REDIS_URL=redis_url)
    [header, row] = listed.stdout.splitlines()
    assert header.split() == ["id", "scopes", "created", "last", "used"]
    assert row.split()[:2] == [key_id, "factory:1"]
    assert row.split()[3] == "never"
    assert key not in listed.stdout

    revoked = cli("keys", "revoke", key_id[:8], cwd=tmp_path, REDIS_URL=redis_url)
    assert revoked.stdout.startswith(f"revoked {key_id}")
    again = cli("keys", "revoke", key_id[:8], cwd=tmp_path, REDIS_URL=redis_url)
    assert (again.returncode, again.stderr) == (1, f"no key held in Redis has an id starting with {key_id[:8]}\n")
    assert cli("keys", "list", cwd=tmp_path, REDIS_URL=redis_url).stdout.splitlines()[1:] == []


def test_keys_add_with_redis_unreachable_exits_1_and_prints_no_key(tmp_path: Path) -> None:
    failed = cli("keys", "add", cwd=tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert (failed.returncode, failed.stdout) == (1, "")
    assert failed.stderr.startswith("cannot reach Redis at ")
