"""The processes under test: the API and the baseline, each uvicorn on a port of its own (one worker unless
asked for more)."""

import contextlib
import dataclasses
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import wrk

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# `uvicorn sprockets_cache.app:app` configures only uvicorn's own loggers, so the app's per-request
# JSON log line (observability.RequestObserver) is dropped unless the root logger takes INFO records.
# This is the config a deployment would pass with --log-config: every record as one JSON line on stderr.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "sprockets_cache.http.observability.JSONFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (uvicorn's workers when it runs more than one), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended while we looked
        if parent == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def machine_s() -> tuple[float, float]:
    """CPU seconds over all cores, from /proc/stat: what all processes have used (user, nice, system,
    irq, softirq), and what the hypervisor took away (steal: time this virtual machine's cores spent
    waiting for the host, which no process here can use)."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    used = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
    return used / _CLOCK_TICKS, ticks[7] / _CLOCK_TICKS


def _children_s() -> float:
    """CPU seconds of this process's children that have ended: the wrk runs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """Who used the cores over a stretch of the run: the servers, wrk, this script, and everyone else."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        sample = {name: cpu_s(pid) for name, pid in self.pids.items()}
        sample |= {"wrk": _children_s(), "this script": usage.ru_utime + usage.ru_stime}
        machine, steal = machine_s()
        return sample | {"machine": machine, "steal": steal, "wall": time.monotonic()}

    def cores(self) -> dict[str, float]:
        """Average cores used since the meter started, by each, by other processes, and taken by the
        hypervisor (steal)."""
        end = self._sample()
        elapsed_s = end["wall"] - self.start["wall"]
        used = {name: (end[name] - self.start[name]) / elapsed_s for name in end if name != "wall"}
        machine, steal = used.pop("machine"), used.pop("steal")
        return used | {"other processes": max(0.0, machine - sum(used.values())), "steal": steal}


def _uvicorn(app: str, port: int, extra: Sequence[str]) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", app,
        "--loop", "uvloop", "--http", "httptools", "--no-access-log",
        "--host", HOST, "--port", str(port), *extra,
    ]  # fmt: skip


@contextlib.contextmanager
def serve(
    app: str,
    redis_url: str,
    log_path: Path,
    extra: Sequence[str] = (),
    redis_pid: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator["Server"]:
    """Run `app` under uvicorn until the block ends; its stdout and stderr go to `log_path`.
    `redis_pid`, when given, lets CPU meters tell that Redis's time apart from other processes';
    `env` adds to (or overrides) this process's environment."""
    port = free_port()
    environment = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), **(env or {})}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            _uvicorn(app, port, extra), cwd=ROOT, env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        server = Server(process, f"http://{HOST}:{port}", log_path, redis_pid)
        server.wait_until_answering()
        yield server
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_api(
    redis_url: str,
    tmp: Path,
    redis_pid: int | None = None,
    *,
    name: str = "api",
    workers: int = 1,
    env: Mapping[str, str] | None = None,
) -> contextlib.AbstractContextManager["Server"]:
    """The API as production runs it: validation, ETags, problem+json, metrics and the JSON request log
    (in `tmp/<name>.log`); `workers` > 1 runs that many uvicorn worker processes behind one socket."""
    config = tmp / "log-config.json"
    config.write_text(json.dumps(LOG_CONFIG))
    extra = ["--log-config", str(config)] + (["--workers", str(workers)] if workers > 1 else [])
    if workers > 1:
        # As `python -m sprockets_cache serve --workers N` runs them: /metrics adds up every worker's.
        metrics = tmp / f"{name}-metrics"
        metrics.mkdir(exist_ok=True)
        env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics), **(env or {})}
    return serve("sprockets_cache.app:app", redis_url, tmp / f"{name}.log", extra, redis_pid, env)


def serve_baseline(
    redis_url: str, tmp: Path, redis_pid: int | None = None
) -> contextlib.AbstractContextManager["Server"]:
    extra = ["--app-dir", str(ROOT / "bench")]
    return serve("baseline:app", redis_url, tmp / "baseline.log", extra, redis_pid)


class Server:
    def __init__(
        self, process: subprocess.Popen[bytes], url: str, log_path: Path, redis_pid: int | None = None
    ) -> None:
        self.process, self.url, self.log_path, self.redis_pid = process, url, log_path, redis_pid

    def wait_until_answering(self) -> None:
        """Any HTTP answer will do (the baseline has no health route): it means the lifespan has run."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.url} exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{self.url}/health", timeout=1.0)
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.url} did not answer within {START_TIMEOUT_S:.0f} s; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: uvicorn's workers (spawned by multiprocessing, which also starts
        a resource tracker, left out), or uvicorn itself when it runs one."""
        spawned = [pid for pid in children(self.process.pid) if b"spawn_main" in _command_line(pid)]
        return spawned or [self.process.pid]

    def cpu_s(self) -> float:
        """CPU seconds of uvicorn and its child processes, if any."""
        return sum(cpu_s(pid) for pid in [self.process.pid, *children(self.process.pid)])


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # it has ended


def measured_wrk(server: "Server", path: str, duration_s: float, script: Path | None = None) -> wrk.WrkResult:
    """One wrk run, with the server's CPU time per request (a fair figure even when the 2 cores are busy)
    and the cores that processes other than the server, its Redis, wrk and this script took meanwhile."""
    pids = {"server": server.process.pid} | ({"Redis": server.redis_pid} if server.redis_pid else {})
    meter = CpuMeter(pids)
    before = server.cpu_s()
    result = wrk.run(server.url + path, duration_s, script)
    cpu_us = (server.cpu_s() - before) / result.requests * 1e6
    cores = meter.cores()
    return dataclasses.replace(
        result, server_cpu_us=cpu_us, other_cores=cores["other processes"], steal_cores=cores["steal"]
    )
