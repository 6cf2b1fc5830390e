"""Run wrk and read its report; any non-2xx answer or socket error fails the whole benchmark."""

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

THREADS = 1
CONNECTIONS = 64
# Each connection's first request waits this long, so that every connection is open before the load
# starts: uvloop (libuv) accepts one connection per turn of its loop, so when requests flow on the first
# connections while later ones wait to be accepted, those wait longer the more each turn has to do, up
# to half a second (their first requests made a 1 s run's p99). This time is not counted in req/s.
START_DELAY_S = 0.1


def start_together(connections: int, delay_s: float) -> str:
    """A wrk Lua script whose first `connections` requests (one a connection) wait `delay_s` first."""
    return f"""
local started = 0
function delay()
  started = started + 1
  if started <= {connections} then return {delay_s * 1000:g} end
  return 0
end
"""


START_TOGETHER = start_together(CONNECTIONS, START_DELAY_S)
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_DURATION = r"([\d.]+)(us|ms|s|m)\b"


class WrkError(RuntimeError):
    """wrk failed, or saw answers other than 2xx/3xx, or socket errors: the figures would lie."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    # Filled in by the caller, which knows the pids: the server process's CPU time per request (µs),
    # the cores other processes on the machine used during the run, and the cores the hypervisor took.
    server_cpu_us: float = 0.0
    other_cores: float = 0.0
    steal_cores: float = 0.0


def latency_ms(text: str, label: str) -> float:
    """A latency percentile (label "99%" and so on) of wrk --latency's output, in ms."""
    match = re.search(rf"^\s*{label}\s+{_DURATION}", text, re.MULTILINE)
    if not match:
        raise WrkError(f"no {label!r} latency in wrk's output:\n{text}")
    return float(match[1]) * _UNITS_MS[match[2]]


def parse(text: str) -> WrkResult:
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non_2xx:
        raise WrkError(f"{non_2xx[1]} non-2xx/3xx responses:\n{text}")
    socket_errors = re.search(r"Socket errors: .*", text)
    if socket_errors:
        raise WrkError(f"{socket_errors[0]}:\n{text}")
    total = re.search(rf"(\d+) requests in {_DURATION}", text)
    if not total:
        raise WrkError(f"cannot read wrk's output:\n{text}")
    requests, loaded_s = int(total[1]), float(total[2]) * _UNITS_MS[total[3]] / 1000 - START_DELAY_S
    return WrkResult(requests / loaded_s, latency_ms(text, "50%"), latency_ms(text, "99%"), requests)


def run(url: str, duration_s: float, script: Path | None = None) -> WrkResult:
    """`wrk -t1 -c64 -dNs --latency URL` with START_TOGETHER; `script` (a .lua file) adds the method and body."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(START_TOGETHER + (script.read_text() if script else ""))
        lua.flush()
        command = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration_s:g}s", "--latency", "-s", lua.name]
        done = subprocess.run([*command, url], capture_output=True, text=True, timeout=duration_s + 60)
    if done.returncode != 0:
        raise WrkError(f"{' '.join(command)} {url} exited with {done.returncode}:\n{done.stdout}{done.stderr}")
    return parse(done.stdout)
