"""`make contract`: schemathesis against the app served by uvicorn on a redis-server of its own.

Starts redis-server in a temp dir and uvicorn on free ports, runs `schemathesis run` on /openapi.json
with every check (valid requests accepted, invalid ones refused, responses as documented) and every
phase (stateful included), then stops both. tests/contract_hooks.py says which refusals of valid
requests the document cannot express. Fails when schemathesis
does, and when the server logged an exception that no response showed (say, in a stream after its
200). Arguments after the script's name go to schemathesis (say `--seed 1` to replay a run).
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from sprockets_cache.http.security import new_key
from sprockets_cache.ops.embedded import EmbeddedRedis

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
# Enough to find the usual mistakes in about a minute; CI and people run the same bound.
MAX_EXAMPLES = 100
BIN = Path(sys.executable).parent
HOOKS = Path(__file__).with_name("contract_hooks.py")
KEY, DIGEST = new_key()
CONFIG = Path(__file__).with_name("schemathesis.toml")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"uvicorn exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}/ready did not answer 200 within {START_TIMEOUT_S:.0f} s")


def _schemathesis(url: str, extra: list[str]) -> int:
    command = [
        str(BIN / "schemathesis"),
        f"--config-file={CONFIG}",
        "run",
        f"{url}/openapi.json",
        "--phases=examples,coverage,fuzzing,stateful",
        f"--max-examples={MAX_EXAMPLES}",
        # One worker: Hypothesis calls ast.parse, which CPython 3.11.7 does not make safe across threads.
        "--workers=1",
        "--request-timeout=5",
        f"--header=Authorization: Bearer {KEY}",
        *extra,
    ]
    return subprocess.run(command, env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}, check=False).returncode


def _serve_and_test(port: int, redis_url: str, log: IO[bytes], extra: list[str]) -> int:
    command = [sys.executable, "-m", "uvicorn", "sprockets_cache.app:app", "--host", HOST, "--port", str(port)]
    # No access logs: what the server prints is start-up, shutdown and errors.
    # With an API key configured, so schemathesis's auth checks see writes refused without it.
    env = {**os.environ, "REDIS_URL": redis_url, "ACCESS_LOG": "false", "SPROCKETS_API_KEYS": DIGEST}
    server = subprocess.Popen([*command, "--no-access-log"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://{HOST}:{port}"
        _wait_until_ready(url, server)
        return _schemathesis(url, extra)
    finally:
        server.terminate()
        server.wait(timeout=10)


def main(extra: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="contract-") as data_dir, EmbeddedRedis(Path(data_dir)) as redis:
        server_log = Path(data_dir) / "server.log"
        with server_log.open("wb") as log:
            status = _serve_and_test(_free_port(), redis.url, log, extra)
        printed = server_log.read_text(errors="replace")
    if "Traceback" in printed:
        sys.stderr.write(f"\nThe server logged an exception that no response showed:\n{printed}")
        return status or 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
