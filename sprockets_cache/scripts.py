"""The Lua scripts of lua/, and how the store runs them."""

from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from sprockets_cache.connections import Client, execute


class Script:
    """A script of lua/, run with EVALSHA: on one Redis by connections.execute, else (on a cluster, or
    queued in a pipeline) by redis-py's AsyncScript, which routes by key. Called as AsyncScript is."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = None if isinstance(client, RedisCluster) else client
        self.script = client.register_script(files("sprockets_cache").joinpath(f"lua/{name}.lua").read_text())

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any], client: Any = None) -> Any:
        if client is not None or self.client is None:
            return await self.script(keys, args, client)
        try:
            return await execute(self.client, "EVALSHA", self.script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # Redis lost its scripts (a restart, a failover, SCRIPT FLUSH) and ran nothing: load and run it.
            return await self.script(keys, args)
