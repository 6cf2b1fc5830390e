"""`python -m sprockets_cache keys new | add | list | revoke`: API keys and their scopes.

`new` makes a key for SPROCKETS_API_KEYS; `add`, `list` and `revoke` manage keys held in Redis,
which every API process picks up within a second, without a restart.
"""

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis

from sprockets_cache import access
from sprockets_cache.http.security import new_key
from sprockets_cache.settings import Settings
from sprockets_cache.store import keyring
from sprockets_cache.store.connections import connect_with, redacted

# A revoke names a key by at least this many leading hex digits of its digest.
MIN_PREFIX = 6


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    api_keys = commands.add_parser("keys", help="API keys: new, add, list, revoke")
    actions = api_keys.add_subparsers(required=True, metavar="ACTION")
    new = actions.add_parser("new", help="print a fresh key and its SPROCKETS_API_KEYS entry")
    _add_scopes(new)
    new.set_defaults(command=_new)
    add = actions.add_parser("add", help="make a key held in Redis; prints the key alone on the first line")
    _add_scopes(add)
    add.set_defaults(command=_add)
    listing = actions.add_parser("list", help="the keys held in Redis: id, scopes, when made and last used")
    listing.set_defaults(command=_list)
    revoke = actions.add_parser("revoke", help="revoke the key held in Redis whose id starts with PREFIX")
    revoke.add_argument("prefix", type=_prefix, metavar="PREFIX", help="its id from `keys list`, or a start of it")
    revoke.set_defaults(command=_revoke)


def _add_scopes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scope",
        action="append",
        default=[],
        type=_scope,
        dest="scopes",
        metavar="SCOPE",
        help=f"what the key may do, once per scope: {access.SCOPES_HELP} (none: admin)",
    )


def _scope(text: str) -> str:
    try:
        return access.parse_scope(text)
    except access.EntryError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _new(args: argparse.Namespace) -> int:
    key, digest = new_key()
    scopes = access.parse_scopes(args.scopes)
    _to_stdout(
        f"key:    {key}\ndigest: {digest}\nentry:  {access.entry(digest, scopes)}\n"
        "Give the key to the client; add the entry to SPROCKETS_API_KEYS (comma-separated)."
    )
    return 0


def _prefix(text: str) -> str:
    if not re.fullmatch(f"[0-9a-f]{{{MIN_PREFIX},64}}", text):
        raise argparse.ArgumentTypeError(f"give at least {MIN_PREFIX} lower-case hex digits of the key's id: {text!r}")
    return text


def _add(args: argparse.Namespace) -> int:
    key, digest = new_key()
    scopes = access.parse_scopes(args.scopes)
    code = _on_redis(lambda client: keyring.add(client, digest, scopes))
    if code == 0:
        _to_stdout(key)
        _to_stderr(
            f"id {keyring.key_id(digest)}, scopes {'+'.join(sorted(scopes))}: every API process accepts it "
            "within a second. Give the key (the line above) to the client; it is not stored anywhere."
        )
    return code


def _list(args: argparse.Namespace) -> int:
    found: list[keyring.HeldKey] = []

    async def read(client: Any) -> None:
        found.extend(await keyring.held(client))

    code = _on_redis(read)
    if code == 0:
        rows = [
            (keyring.key_id(key.digest), "+".join(sorted(key.scopes)), key.created_at, key.last_used_at or "never")
            for key in found
        ]
        width = max([len("scopes"), *(len(row[1]) for row in rows)])
        _to_stdout(f"{'id':<{keyring.ID_CHARS}}  {'scopes':<{width}}  {'created':<24}  last used")
        for row in rows:
            _to_stdout(f"{row[0]}  {row[1]:<{width}}  {row[2]:<24}  {row[3]}")
    return code


def _revoke(args: argparse.Namespace) -> int:
    revoked: list[str | None] = []

    async def remove(client: Any) -> None:
        revoked.append(await keyring.revoke(client, args.prefix))

    try:
        code = _on_redis(remove)
    except keyring.AmbiguousPrefix:
        _to_stderr(f"more than one key's id starts with {args.prefix}: give more of it (see `keys list`)")
        return 1
    if code:
        return code
    if revoked[0] is None:
        in_environment = any(digest.startswith(args.prefix) for digest in Settings.from_env().api_keys)
        where = "; it is in SPROCKETS_API_KEYS: remove its entry there and restart" if in_environment else ""
        _to_stderr(f"no key held in Redis has an id starting with {args.prefix}{where}")
        return 1
    _to_stdout(f"revoked {keyring.key_id(revoked[0])}: every API process refuses it within a second")
    return 0


def _on_redis(work: Callable[[Any], Awaitable[None]]) -> int:
    """Run `work` with a client of REDIS_URL: 0, or 1 after a line on stderr when Redis fails."""
    settings = Settings.from_env()

    async def run() -> None:
        client = connect_with(settings)
        try:
            await work(client)
        finally:
            await client.aclose()

    try:
        asyncio.run(run())
    except (redis.ConnectionError, redis.TimeoutError) as error:
        _to_stderr(f"cannot reach Redis at {redacted(settings.redis_url)}: {error}")
        return 1
    except redis.RedisError as error:
        _to_stderr(f"Redis at {redacted(settings.redis_url)} failed: {error}")
        return 1
    return 0


def _to_stdout(line: str) -> None:
    sys.stdout.write(line + "\n")


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
