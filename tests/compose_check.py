"""`make compose-check`: docker-compose.yml as a user runs it, each profile from nothing.

Builds the image, then for each profile (default, sentinel, cluster; name some as arguments to run only
those), under a project name of its own: brings it up with `up --wait` as the compose file's header
documents it and checks, over HTTP on 127.0.0.1, what a user checks: the seeds are listed, a write with
the API key gets 201 and one without 401, AOF is on, no container has an anonymous volume; then that
`down` + `up` keeps every written sprocket and takes writes, and that a write through one of the API's
two workers is in the next read through the other (each holds its own answers in memory). For sentinel
and cluster, a killed master fails over, writes resume (on sentinel, each confirmed by a replica), the
workers still agree, the old master comes back as a replica, and the same holds after `down` + `up` (for
cluster, a plain restart first too). Each profile
ends with `down -v`, also when a check fails.

The settings (a random REDIS_PASSWORD, a fresh API key, free ports on 127.0.0.1) go in an env file of its
own, so a user's .env is neither read nor changed. Fails with one line naming the profile and the check.
"""

import functools
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from sprockets_cache.http.security import new_key

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
KEY, DIGEST = new_key()
SPROCKET = {"teeth": 5, "pitch_diameter": 5, "outside_diameter": 6, "pitch": 1}
# Patient: CI machines are slow and busy. A Redis failover takes 5-10 s (down-after / node timeout 5 s).
UP_TIMEOUT_S = 300
COMMAND_TIMEOUT_S = 600
RECOVERY_S = 120
POLL_S = 1.0
# A new connection each request, which the kernel hands to either of the API's workers.
CLOSE = {"Connection": "close"}


class CheckFailed(Exception):
    pass


class StaleRead(CheckFailed):
    """Not retried: a read that did not show a write acknowledged before it."""


def _worker(answer: httpx.Response) -> str:
    """Which API worker answered: its request ids start with a prefix of its own."""
    return answer.headers["x-request-id"].split("-")[0]


def _seed_count(name: str, kind: str) -> int:
    return len(json.loads((ROOT / "seeds" / name).read_text())[kind])


SEEDED = {
    "factories": _seed_count("seed_factory_data.json", "factories"),
    "sprockets": _seed_count("seed_sprocket_types.json", "sprockets"),
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _until(what: str, seconds: float, attempt: Callable[[], Any]) -> Any:
    """attempt()'s first truthy result within `seconds`; CheckFailed naming `what` and the last answer if none."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while True:
        try:
            last = attempt()
            if last:
                return last
        except StaleRead:
            raise
        except (httpx.HTTPError, CheckFailed) as error:
            last = error
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not within {seconds:.0f} s (last: {last!r:.200})")
        time.sleep(POLL_S)


def _soon(what: str, attempt: Callable[[], bool], requests: int = 500) -> None:
    """attempt() again at once until it is true, at most `requests` times: for checks that need a request
    to land on one worker or the other, which only takes more of them, not time."""
    last: Any = None
    for _ in range(requests):
        try:
            if attempt():
                return
        except StaleRead:
            raise
        except (httpx.HTTPError, CheckFailed) as error:  # a worker still finding the new master, say
            last = error
            time.sleep(0.1)
    raise CheckFailed(f"{what}: not in {requests} requests (last: {last!r:.200})")


class Stack:
    """One compose project of one profile, with its API on 127.0.0.1."""

    def __init__(self, profile: str, settings: "Settings") -> None:
        self.project = f"sprockets-check-{profile}-{secrets.token_hex(3)}"
        self.settings = settings
        self.options = ["--project-name", self.project]
        if profile != "default":
            self.options += ["--profile", profile]
        # The API and, through its dependencies, all it needs: the header's partial commands.
        self.services = [] if profile == "default" else [f"api-{profile}"]
        self.api = httpx.Client(base_url=f"http://{HOST}:{settings.port}", timeout=10)
        self.written: list[int] = []

    def compose(self, *args: str, check: bool = True) -> str:
        return self.settings.compose(*self.options, *args, check=check)

    def up(self) -> None:
        self.compose("up", "--detach", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), *self.services)

    def redis(self, service: str, *command: str) -> str:
        # The password is in the container's REDISCLI_AUTH. Some redis-cli versions exit 1 on an error
        # reply (MOVED says something here), others 0; no answer at all is a failure.
        answer = self.compose("exec", "-T", service, "redis-cli", *command, check=False).strip()
        if not answer:
            raise CheckFailed(f"`redis-cli {' '.join(command)}` in {service} answered nothing")
        return answer

    def role(self, service: str) -> str:
        return self.redis(service, "role").splitlines()[0]

    def write(self) -> bool:
        answer = self.api.post("/api/v1/sprockets", json=SPROCKET, headers={"Authorization": f"Bearer {KEY}"})
        if answer.status_code != 201:
            raise CheckFailed(f"{answer.status_code} {answer.text:.100}")
        self.written.append(answer.json()["id"])
        return True

    def check_writes(self, when: str) -> None:
        _until(f"a keyed POST /sprockets gets 201 {when}", RECOVERY_S, self.write)

    def get(self, path: str) -> Any:
        answer = self.api.get(path)
        if answer.status_code != 200:
            raise CheckFailed(f"GET {path} got {answer.status_code}: {answer.text:.100}")
        return answer.json()

    def check_workers_agree(self, when: str, writes: int = 5) -> None:
        """Each API worker holds its own answers: a write through one is in the next read through the other."""
        path = f"/api/v1/sprockets/{self.written[-1]}"
        for teeth in range(10, 10 + writes):
            reads: dict[str, int] = {}
            _soon(f"reads through both API workers {when}", functools.partial(self._held_by_both, path, reads))
            auth = {**CLOSE, "Authorization": f"Bearer {KEY}"}
            written = self.api.put(path, json={**SPROCKET, "teeth": teeth}, headers=auth)
            if written.status_code != 200:
                raise CheckFailed(f"PUT {path} got {written.status_code}: {written.text:.100}")
            _soon(
                f"a read through the other API worker {when}",
                functools.partial(self._read_by_the_other, path, teeth, _worker(written), when),
            )

    def _held_by_both(self, path: str, reads: dict[str, int]) -> bool:
        answer = self.api.get(path, headers=CLOSE)
        if answer.status_code != 200:
            raise CheckFailed(f"GET {path} got {answer.status_code}: {answer.text:.100}")
        worker = _worker(answer)
        reads[worker] = reads.get(worker, 0) + 1
        return len(reads) == 2 and min(reads.values()) >= 2  # each read it twice: held

    def _read_by_the_other(self, path: str, teeth: int, writer: str, when: str) -> bool:
        answer = self.api.get(path, headers=CLOSE)
        if answer.status_code != 200:
            raise CheckFailed(f"GET {path} got {answer.status_code}: {answer.text:.100}")
        if answer.json()["teeth"] != teeth:
            raise StaleRead(
                f"{when}: after a write through worker {writer}, worker {_worker(answer)} answered "
                f"{answer.status_code} {answer.text:.100}"
            )
        return _worker(answer) != writer

    def check_ready(self, when: str) -> None:
        # `up --wait` waits for the API's healthcheck, which does not ask Redis; /ready does.
        _until(f"GET /ready answers 200 {when}", RECOVERY_S, lambda: self.get("/ready"))

    def check_kept(self, when: str) -> None:
        for sprocket_id in self.written:
            try:
                self.get(f"/api/v1/sprockets/{sprocket_id}")
            except CheckFailed as error:
                raise CheckFailed(f"a sprocket written before, {when}: {error}") from None

    def check_first_start(self) -> None:
        self.check_ready("after `up`")
        for kind, count in SEEDED.items():
            listed = self.get(f"/api/v1/{kind}")[kind]
            if len(listed) != count:
                raise CheckFailed(f"GET /api/v1/{kind} lists {len(listed)}, the seeds have {count}")
        self.check_writes("after `up`")
        self.check_workers_agree("after `up`")
        keyless = self.api.post("/api/v1/sprockets", json=SPROCKET).status_code
        if keyless != 401:
            raise CheckFailed(f"a keyless POST /sprockets got {keyless}, not 401")
        self.check_volumes()

    def check_aof(self, service: str) -> None:
        if self.redis(service, "config", "get", "appendonly").split() != ["appendonly", "yes"]:
            raise CheckFailed(f"{service}: appendonly is not yes")

    def check_volumes(self) -> None:
        containers = self.compose("ps", "--all", "--quiet").split()
        mounts = subprocess.run(
            ["docker", "inspect", "--format", '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}']
            + containers,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        anonymous = [name for name in mounts if not name.startswith(f"{self.project}_")]
        if anonymous:
            raise CheckFailed(f"{len(anonymous)} anonymous volume(s) mounted")

    def restart(self, when: str = "") -> None:
        self.compose("down")
        self.up()
        self.check_ready(f"after `down` + `up`{when}")
        self.check_kept(f"after `down` + `up`{when}")
        self.check_writes(f"after `down` + `up`{when}")


def check_default(stack: Stack) -> None:
    stack.up()
    stack.check_first_start()
    stack.check_aof("redis")
    stack.restart()


def _replicating(stack: Stack, replica: str) -> bool:
    info = stack.redis(replica, "info", "replication")
    return "role:slave" in info and "master_link_status:up" in info


def check_sentinel(stack: Stack) -> None:
    master, replicas = "redis-sentinel-master", ["redis-sentinel-replica", "redis-sentinel-replica-2"]
    stack.up()
    stack.check_first_start()
    stack.check_aof(master)
    for replica in replicas:
        _until(f"{replica} replicates {master}", RECOVERY_S, lambda replica=replica: _replicating(stack, replica))
    ping = ("exec", "-T", "-e", "REDISCLI_AUTH=", "sentinel-1", "redis-cli", "-p", "26379", "ping")
    anonymous = stack.compose(*ping, check=False)
    if "NOAUTH" not in anonymous:
        raise CheckFailed(f"a Sentinel answered a client without its password: {anonymous.strip()}")
    stack.compose("kill", master)
    # With REDIS_WAIT_REPLICAS=1 a write succeeds only once the other replica follows the promoted one.
    stack.check_writes(f"after `kill {master}`")
    stack.check_workers_agree(f"after `kill {master}`")
    promoted = [replica for replica in replicas if stack.role(replica) == "master"]
    if len(promoted) != 1:
        raise CheckFailed(f"after `kill {master}`, the masters among {replicas} are {promoted}")
    stack.compose("start", master)
    _until(f"the old master {master} replicates {promoted[0]}", RECOVERY_S, lambda: _replicating(stack, master))
    stack.restart(" after the failover")
    roles = {service: stack.role(service) for service in (master, *replicas)}
    expected = {service: "master" if service == promoted[0] else "slave" for service in roles}
    if roles != expected:
        raise CheckFailed(f"after the failover and `down` + `up` the roles are {roles}")


CLUSTER_NODES = [f"redis-cluster-{n}" for n in range(1, 7)]


def _sprockets_master(stack: Stack, asked: str) -> str:
    """The node that serves the sprockets' slot (all their keys share one), by a MOVED if `asked` does not."""
    answer = stack.redis(asked, "exists", "sc:{sprockets}:next_id")
    return answer.split()[2].rpartition(":")[0] if answer.startswith("MOVED") else asked


def _all_ok(stack: Stack, nodes: list[str]) -> bool:
    return all("cluster_state:ok" in stack.redis(node, "cluster", "info") for node in nodes)


def check_cluster(stack: Stack) -> None:
    stack.up()
    stack.check_first_start()
    for node in CLUSTER_NODES:
        stack.check_aof(node)
    stack.restart()
    killed = _sprockets_master(stack, CLUSTER_NODES[0])
    stack.compose("kill", killed)
    stack.check_writes(f"after `kill {killed}`")
    stack.check_workers_agree(f"after `kill {killed}`")
    others = [node for node in CLUSTER_NODES if node != killed]
    if _sprockets_master(stack, others[0]) == killed:
        raise CheckFailed(f"after `kill {killed}`, it still serves the sprockets' slot")
    stack.compose("start", killed)
    _until(f"the old master {killed} is a replica", RECOVERY_S, lambda: stack.role(killed) == "slave")
    _until("cluster_state:ok on every node", RECOVERY_S, lambda: _all_ok(stack, CLUSTER_NODES))
    stack.restart(" after the failover")


CHECKS: dict[str, Callable[[Stack], None]] = {
    "default": check_default,
    "sentinel": check_sentinel,
    "cluster": check_cluster,
}


class Settings:
    """An env file of the check's own (compose then reads no .env), and the environment to run compose in."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        values = {
            "REDIS_PASSWORD": secrets.token_urlsafe(24),
            "REDIS_SENTINEL_PASSWORD": secrets.token_urlsafe(24),
            "SPROCKETS_API_KEYS": DIGEST,
            **{name: f"{HOST}:{self.port}" for name in ("API_PORT", "API_CLUSTER_PORT", "API_SENTINEL_PORT")},
        }
        self.env_file = directory / "env"
        self.env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
        # The caller's environment would win over the env file; and no COMPOSE_* settings of theirs.
        kept = {name: value for name, value in os.environ.items() if not name.startswith("COMPOSE_")}
        self.env = {**kept, **values}

    def compose(self, *args: str, check: bool = True) -> str:
        command = ["docker", "compose", "--env-file", str(self.env_file), *args]
        done = subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
        if check and done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
            raise CheckFailed(f"`docker compose {' '.join(args)}` exited {done.returncode}: {said[0]}")
        return done.stdout


def run(profile: str, settings: Settings) -> None:
    stack = Stack(profile, settings)
    try:
        CHECKS[profile](stack)
    except Exception:
        sys.stderr.write(stack.compose("logs", "--no-color", "--tail", "20", check=False)[-20_000:])
        raise
    finally:
        stack.api.close()
        stack.compose("down", "--volumes", "--remove-orphans", check=False)


def main(profiles: list[str]) -> int:
    unknown = set(profiles) - set(CHECKS)
    if unknown:
        sys.stderr.write(f"compose-check: no profile {', '.join(sorted(unknown))}; there are {', '.join(CHECKS)}\n")
        return 2
    with tempfile.TemporaryDirectory(prefix="compose-check-") as directory:
        settings = Settings(Path(directory))
        # The image from this tree: `up` would use an older one of the same name as it is.
        for step in ["build", *(profiles or CHECKS)]:
            started = time.monotonic()
            try:
                settings.compose("build", "api") if step == "build" else run(step, settings)
            except (CheckFailed, subprocess.TimeoutExpired, httpx.HTTPError) as error:
                sys.stderr.write(f"compose-check: {step}: FAILED: {error}\n")
                return 1
            sys.stdout.write(f"compose-check: {step}: passed in {time.monotonic() - started:.0f} s\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
