"""On a Redis Cluster: each factory's keys share one slot, and factories spread over the shards."""

import redis

from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.settings import Settings
from sprockets_cache.store import keys
from sprockets_cache.store.connections import connect
from tests.conftest import serve

CHART = {"sprocket_production_actual": [1, 2], "sprocket_production_goal": [1, 2], "time": [10, 7300]}


def owner(nodes: list[EmbeddedRedis], key: str) -> int:
    """The port of the master that holds `key`."""
    for node in nodes:
        client = redis.Redis(port=node.port)
        try:
            if client.exists(key):
                return node.port
        except redis.exceptions.MovedError:
            pass  # another master serves the key's slot
        finally:
            client.close()
    raise AssertionError(f"no node holds {key}")


async def test_factories_spread_over_shards_and_each_factory_stays_on_one(
    redis_cluster: list[EmbeddedRedis], settings: Settings
) -> None:
    client = connect(redis_cluster[0].url, cluster=True)
    await client.flushdb()
    async for api in serve(settings, client):
        for _ in range(12):
            response = await api.post("/api/v1/factories", json={"chart_data": CHART})
            assert response.status_code == 201
        listed = (await api.get("/api/v1/factories")).json()["factories"]
        assert [f["id"] for f in listed] == list(range(1, 13))
    await client.aclose()

    shards = set()
    for factory_id in range(1, 13):
        factory_keys = [
            keys.key_for_factory(factory_id),
            keys.key_for_factory_buckets(factory_id),
            keys.key_for_factory_events(factory_id),
            keys.key_for_factory_points(factory_id, 0),
            keys.key_for_factory_points(factory_id, 2),
        ]
        homes = {owner(redis_cluster, key) for key in factory_keys}
        assert len(homes) == 1, factory_id
        shards |= homes
    assert len(shards) > 1
