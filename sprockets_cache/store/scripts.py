"""The Lua scripts of lua/, and how the store runs them."""

from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from sprockets_cache.store.commands import execute, execute_and_wait, pipelined
from sprockets_cache.store.connections import Client


def flat(pairs: Mapping[str, Any]) -> list[Any]:
    """A mapping as a script takes it in ARGV: name, value, name, value..."""
    return [item for pair in pairs.items() for item in pair]


class Script:
    """A script of lua/, run with EVALSHA: on one Redis by commands.execute, else (on a cluster, or
    queued in a pipeline) by redis-py's AsyncScript, which routes by key. Called as AsyncScript is.

    With `replicas`, a call waits (WAIT, on the same connection: on a cluster, one of the master that
    owns the first key's slot) until that many replicas confirm it, for at most `wait_ms`;
    NotReplicated if they do not."""

    def __init__(self, client: Client, name: str, replicas: int = 0, wait_ms: int = 0) -> None:
        self.redis = client
        # The short way (commands.execute), on one Redis only.
        self.client = None if isinstance(client, RedisCluster) else client
        self.script = client.register_script(files("sprockets_cache.store").joinpath(f"lua/{name}.lua").read_text())
        self.replicas, self.wait_ms = replicas, wait_ms

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any], client: Any = None, wait: bool = True) -> Any:
        """`wait`=False: skip the WAIT, when a later write of the same request waits for both."""
        waits = bool(self.replicas and wait and client is None)
        if not waits and (client is not None or self.client is None):
            return await self.script(keys, args, client)
        try:
            if not waits:
                assert self.client is not None
                return await execute(self.client, "EVALSHA", self.script.sha, len(keys), *keys, *args)
            return await self._run_and_wait(keys, args)
        except NoScriptError:
            # Redis lost its scripts (a restart, a failover, SCRIPT FLUSH) and ran nothing: load and run it.
            if not waits:
                return await self.script(keys, args)
            await self.redis.script_load(self.script.script)
            return await self._run_and_wait(keys, args)

    async def _run_and_wait(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        command = ("EVALSHA", self.script.sha, len(keys), *keys, *args)
        return await execute_and_wait(self.redis, keys[0], self.replicas, self.wait_ms, *command)

    async def many(self, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """The replies of calls (keys, args) of a script that writes nothing, in one round trip (on a
        cluster, concurrent calls), without WAIT."""
        commands = [("EVALSHA", self.script.sha, len(keys), *keys, *args) for keys, args in calls]
        replies = await pipelined(self.redis, commands)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            await self.redis.script_load(self.script.script)  # on a cluster, to every master
            replies = await pipelined(self.redis, commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies
