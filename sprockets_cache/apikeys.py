"""`python -m sprockets_cache keys new | add | list | revoke`: API keys and their scopes.

`new` makes a key for SPROCKETS_API_KEYS; `add`, `list` and `revoke` manage keys held in Redis,
which every API process picks up within a second, without a restart.
"""

import argparse
import sys

from sprockets_cache import access
from sprockets_cache.security import new_key


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    api_keys = commands.add_parser("keys", help="API keys: new, add, list, revoke")
    actions = api_keys.add_subparsers(required=True, metavar="ACTION")
    new = actions.add_parser("new", help="print a fresh key and its SPROCKETS_API_KEYS entry")
    _add_scopes(new)
    new.set_defaults(command=_new)


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


def _to_stdout(line: str) -> None:
    sys.stdout.write(line + "\n")
