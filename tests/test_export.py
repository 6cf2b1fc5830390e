"""`export` writes a seed file that `seed` loads into an empty Redis to the same API answers."""

from pathlib import Path

import httpx
import orjson
import pytest

from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.settings import Settings
from sprockets_cache.store.connections import connect
from tests.conftest import serve
from tests.test_cli import ROOT, cli

pytestmark = pytest.mark.redis_server

SPROCKET = {"teeth": 12, "pitch_diameter": 40.0, "outside_diameter": 44.0, "pitch": 10.5}


async def answers(http: httpx.AsyncClient) -> dict[str, object]:
    """What a client reads: every listing and every item."""
    factories = (await http.get("/api/v1/factories")).json()
    sprockets = (await http.get("/api/v1/sprockets")).json()
    seen: dict[str, object] = {"factories": factories, "sprockets": sprockets}
    for kind, items in (("factories", factories["factories"]), ("sprockets", sprockets["sprockets"])):
        for item in items:
            seen[f"/api/v1/{kind}/{item['id']}"] = (await http.get(f"/api/v1/{kind}/{item['id']}")).json()
    seen["summary"] = (await http.get("/api/v1/factories/4/summary")).json()
    return seen


async def test_export_then_seed_into_an_empty_redis_gives_the_same_answers(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    client = connect(redis_server.url)
    await client.flushdb()
    url = redis_server.url
    assert (
        cli(
            "seed", "seeds/seed_factory_data.json", "seeds/seed_sprocket_types.json", cwd=ROOT, REDIS_URL=url
        ).returncode
        == 0
    )
    async for http in serve(Settings(), client):
        dense = {
            "time": list(range(0, 7200)),
            "sprocket_production_actual": [3] * 7200,
            "sprocket_production_goal": [4] * 7200,
        }
        assert (await http.post("/api/v1/factories", json={"name": "Dense", "chart_data": dense})).status_code == 201
        await http.post(
            "/api/v1/factories/1/chart_data",
            json={"time": [60], "sprocket_production_actual": [1], "sprocket_production_goal": [2]},
        )
        await http.delete("/api/v1/sprockets/2")
        await http.post("/api/v1/sprockets", json=SPROCKET)
        await http.patch("/api/v1/sprockets/1", json={"teeth": 9})
        before = await answers(http)

    exported = cli("export", "--out", str(tmp_path / "backup.json"), cwd=tmp_path, REDIS_URL=url)
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr == f"exported 4 factories (7261 points) and 3 sprockets to {tmp_path / 'backup.json'}\n"
    assert not list(tmp_path.glob(".*partial"))
    to_stdout = cli("export", cwd=tmp_path, REDIS_URL=url)
    assert to_stdout.stdout.encode() == (tmp_path / "backup.json").read_bytes()
    document = orjson.loads(to_stdout.stdout)
    assert [f["id"] for f in document["factories"]] == [1, 2, 3, 4]
    assert [s["id"] for s in document["sprockets"]] == [1, 3, 4]

    await client.flushdb()
    seeded = cli("seed", str(tmp_path / "backup.json"), cwd=tmp_path, REDIS_URL=url)
    assert seeded.returncode == 0, seeded.stderr
    async for http in serve(Settings(), client):
        assert await answers(http) == before
        # New items continue after the restored ones.
        assert (await http.post("/api/v1/sprockets", json=SPROCKET)).json()["id"] == 5
    await client.aclose()


def test_export_of_an_unreachable_redis_exits_1_and_leaves_no_file(tmp_path: Path) -> None:
    failed = cli("export", "--out", str(tmp_path / "backup.json"), cwd=tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
    assert failed.returncode == 1
    assert failed.stderr.startswith("cannot reach Redis at redis://127.0.0.1:1/0")
    assert list(tmp_path.iterdir()) == []
