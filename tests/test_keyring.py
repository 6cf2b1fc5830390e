import asyncio
import random

import fakeredis
import orjson
import pytest

from sprockets_cache.http.security import new_key
from sprockets_cache.store import keyring, keys
from sprockets_cache.store.connections import Client
from sprockets_cache.store.keyring import Keyring
from tests.conftest import PATIENT_S

ENVIRONMENT = {"e" * 64: frozenset({"admin"})}


async def test_a_held_key_is_listed_with_its_scopes_and_never_the_key(redis_client: Client) -> None:
    key, digest = new_key()
    await keyring.add(redis_client, digest, {"factory:2", "read"})
    [held] = await keyring.held(redis_client)
    assert (held.digest, held.scopes, held.last_used_at) == (digest, {"factory:2", "read"}, None)
    assert held.created_at.endswith("Z")
    stored = b"".join(k + v for k, v in (await redis_client.hgetall(keys.API_KEYS)).items())
    assert key.encode() not in stored


async def test_a_refresh_picks_up_adds_and_revokes_and_keeps_the_environments_keys(redis_client: Client) -> None:
    ring = Keyring(redis_client, ENVIRONMENT)
    await ring.refresh()
    assert ring.keys == ENVIRONMENT
    _, digest = new_key()
    await keyring.add(redis_client, digest, {"sprockets"})
    await ring.refresh()
    assert ring.keys == {**ENVIRONMENT, digest: {"sprockets"}}
    assert await keyring.revoke(redis_client, digest[:10]) == digest
    await ring.refresh()
    assert ring.keys == ENVIRONMENT


async def test_revoking_needs_a_prefix_that_names_one_held_key(redis_client: Client) -> None:
    await keyring.add(redis_client, "ab" + "0" * 62, {"read"})
    await keyring.add(redis_client, "ab" + "1" * 62, {"read"})
    with pytest.raises(keyring.AmbiguousPrefix):
        await keyring.revoke(redis_client, "ab")
    assert await keyring.revoke(redis_client, "cd") is None
    assert len(await keyring.held(redis_client)) == 2


async def test_last_used_is_written_for_held_keys_only_and_goes_with_a_revoke(redis_client: Client) -> None:
    _, digest = new_key()
    await keyring.add(redis_client, digest, {"read"})
    ring = Keyring(redis_client, ENVIRONMENT)
    await ring.refresh()
    for used in (digest, *ENVIRONMENT):
        ring.used(used)
    await ring.write_last_used()
    [held] = await keyring.held(redis_client)
    assert held.last_used_at is not None
    assert set(await redis_client.hkeys(keys.API_KEYS_LAST_USED)) == {digest.encode()}
    await keyring.revoke(redis_client, digest)
    ring.used(digest)  # used just before the revoke reached this process
    await ring.write_last_used()
    assert await redis_client.exists(keys.API_KEYS_LAST_USED) == 0


async def test_a_malformed_record_grants_nothing(redis_client: Client) -> None:
    _, digest = new_key()
    await redis_client.hset(keys.API_KEYS, mapping={digest: orjson.dumps({"scopes": ["root"], "created_at": "x"})})
    await redis_client.hset(keys.API_KEYS, mapping={"not-a-digest": orjson.dumps({"scopes": ["admin"]})})
    await redis_client.incr(keys.API_KEYS_VERSION)
    ring = Keyring(redis_client, {})
    await ring.refresh()
    assert ring.keys == {}
    assert await keyring.held(redis_client) == []


async def test_the_refresh_loop_stops_with_its_block_even_when_a_cancel_meets_a_refresh_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Python 3.11 a cancel that lands as the refresh's own timeout expires can come out as TimeoutError;
    the loop must end all the same, or the app's shutdown never does."""
    monkeypatch.setattr(keyring, "REFRESH_S", 0.001)
    client = fakeredis.FakeAsyncRedis()
    rng = random.Random(7)
    for _ in range(300):
        block = keyring.kept_fresh(keyring.Keyring(client, {}), 0.0005)  # timeouts on nearly every refresh
        await block.__aenter__()
        await asyncio.sleep(rng.random() * 0.02)
        async with asyncio.timeout(PATIENT_S):
            await block.__aexit__(None, None, None)
