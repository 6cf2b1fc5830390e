"""The Redis versions the API supports: 7.0 or later (or Valkey). An older Redis is refused at start-up,
by the API and by every command that writes, with one line naming what was found and what is needed."""

import logging

import pytest

from sprockets_cache.http.app import create_app
from sprockets_cache.settings import Settings
from sprockets_cache.store import schema
from sprockets_cache.store.connections import Client, connect
from sprockets_cache.store.store import Store
from tests.conftest import lifespan
from tests.test_cli import FACTORY_SEED, cli

REFUSAL = "the server is Redis 6.2.14; sprockets-cache needs Redis 7.0 or later"


async def test_a_supported_server_reads_script_flags_and_passes_the_check(redis_client: Client) -> None:
    store = Store(redis_client)
    assert await store.reads_script_flags()
    await schema.check(store)


@pytest.mark.redis_server
async def test_a_real_server_says_its_release(real_redis: Client) -> None:
    assert schema.supported(await Store(real_redis).release())


@pytest.mark.parametrize(
    ("release", "supported"),
    [("6.2.14", False), ("6.0.16", False), ("7.0.0", True), ("7.0.15", True), ("7.4-rc1", True), ("10.0.1", True)],
)
def test_releases_from_7_0_on_are_supported(release: str, supported: bool) -> None:
    assert schema.supported(release) is supported


@pytest.mark.redis_server
async def test_the_app_refuses_to_start_on_redis_6_2_with_one_line(
    old_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(old_redis_url)
    with caplog.at_level(logging.ERROR), pytest.raises(schema.UnsupportedRedis, match=f"^{REFUSAL}$"):
        async with lifespan(create_app(Settings(), client)):
            pass
    assert f"cannot serve: {REFUSAL}" in caplog.messages
    assert await client.dbsize() == 0
    await client.aclose()


@pytest.mark.redis_server
@pytest.mark.parametrize("command", [["seed", FACTORY_SEED], ["run"], ["migrate"], ["export"]], ids=lambda c: c[0])
def test_a_command_on_redis_6_2_exits_2_with_one_line_and_writes_nothing(
    old_redis_url: str, command: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    workdir = tmp_path_factory.mktemp("work")
    (workdir / "seeds").mkdir()
    (workdir / FACTORY_SEED).write_text('{"factories": [{"factory": {"name": "A", "chart_data": {}}}]}')
    failed = cli(*command, cwd=workdir, REDIS_URL=old_redis_url)
    assert (failed.returncode, failed.stdout) == (2, "")
    assert failed.stderr.splitlines()[-1].endswith(REFUSAL)
    assert len([line for line in failed.stderr.splitlines() if REFUSAL in line]) == 1
