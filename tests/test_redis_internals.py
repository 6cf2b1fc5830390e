"""What store/commands.py and store/connections.py take from redis-py beyond its public API, for speed: the
pool's lists, the hiredis parser's reader, a cluster node's connections. pyproject.toml bounds redis-py to the
minor release this was written against; a release that changes any of these fails here, naming it, before a
request fails in production."""

import inspect
from importlib.metadata import version

import pytest
import redis.asyncio as redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.cluster import ClusterNode, NodesManager, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from sprockets_cache.ops.embedded import EmbeddedRedis
from sprockets_cache.store.connections import _WritesOnlyWhileConnected, connect

pytestmark = pytest.mark.redis_server


def test_redis_py_is_the_minor_release_the_store_was_written_against() -> None:
    assert version("redis").split(".")[:2] == ["8", "1"], "update pyproject.toml's bound and this module together"
    assert version("hiredis").split(".")[0] == "3"


async def test_a_pooled_connection_reads_with_hiredis_whose_reader_says_when_it_has_nothing(
    redis_server: EmbeddedRedis,
) -> None:
    client = connect(redis_server.url)
    assert isinstance(client, redis.Redis)
    pool = client.connection_pool
    try:
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        assert pool._in_use_connections == {connection} and pool._available_connections == []
        await connection.send_command("PING")
        assert isinstance(connection._parser, _AsyncHiredisParser)
        reader = connection._parser._reader
        assert reader is not None
        assert await connection.read_response() == b"PONG"
        assert reader.gets() is NOT_ENOUGH_DATA
        assert connection.should_reconnect() is False  # type: ignore[no-untyped-call]
        connection.mark_for_reconnect()  # type: ignore[no-untyped-call]  # what sentinels.py does to a connection in use
        assert connection.should_reconnect() is True  # type: ignore[no-untyped-call]
        assert inspect.iscoroutinefunction(connection.retry.call_with_retry)
        await pool.release(connection)  # and it is closed when given back
        assert not connection.is_connected and connection.should_reconnect() is False  # type: ignore[no-untyped-call]
        assert pool._in_use_connections == set() and pool._available_connections == [connection]
        assert pool.get_available_connection() is connection  # type: ignore[no-untyped-call]
        assert inspect.iscoroutinefunction(pool.ensure_connection)
        await pool.release(connection)
    finally:
        await client.aclose()


async def test_every_client_makes_its_connections_of_the_class_its_pool_or_nodes_manager_names() -> None:
    single, cluster = connect("redis://127.0.0.1:1"), connect("redis://127.0.0.1:1", cluster=True)
    assert isinstance(single, redis.Redis) and isinstance(cluster, RedisCluster)
    assert isinstance(single.connection_pool.make_connection(), _WritesOnlyWhileConnected)
    assert issubclass(cluster.nodes_manager.connection_kwargs["connection_class"], _WritesOnlyWhileConnected)
    for node in cluster.nodes_manager.startup_nodes.values():
        assert isinstance(node.connection_class(**node.connection_kwargs), _WritesOnlyWhileConnected)
    await single.aclose()
    await cluster.aclose()


def test_a_sentinel_pool_keeps_the_master_it_was_told_of_and_asks_its_manager_again() -> None:
    parameters = inspect.signature(SentinelConnectionPool.__init__).parameters
    assert {"service_name", "sentinel_manager"} <= parameters.keys()
    assert "inuse_connections" in inspect.signature(SentinelConnectionPool.disconnect).parameters
    assert inspect.iscoroutinefunction(Sentinel.discover_master)
    manager = Sentinel([("127.0.0.1", 1)])  # type: ignore[no-untyped-call]
    assert isinstance(manager.sentinels, list)
    pool = SentinelConnectionPool("sprockets", manager)  # type: ignore[no-untyped-call]
    assert pool.master_address is None


def test_a_cluster_client_hands_out_a_nodes_connections_and_can_learn_the_layout_again() -> None:
    assert inspect.signature(ClusterNode.acquire_connection).parameters.keys() == {"self"}
    assert list(inspect.signature(ClusterNode.release).parameters) == ["self", "connection"]
    assert inspect.iscoroutinefunction(NodesManager.initialize)
    assert "key" in inspect.signature(RedisCluster.get_node_from_key).parameters
