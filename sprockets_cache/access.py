"""What an API key may do: its scopes, and the scope each request needs.

A key's entry is its SHA-256 hex digest alone (every scope) or `DIGEST=SCOPE[+SCOPE...]`.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

ADMIN = "admin"
SPROCKETS = "sprockets"
FACTORIES = "factories"
READ = "read"
FACTORY_PREFIX = "factory:"
SCOPES_HELP = "admin, sprockets, factories, factory:<id>, read"

_DIGEST = re.compile(r"[0-9a-f]{64}")
_FACTORY_SCOPE = re.compile(r"factory:([1-9][0-9]{0,17})")
_NAMED = frozenset({ADMIN, SPROCKETS, FACTORIES, READ})
_SCOPE_WORD = re.compile(r"[A-Za-z_]{1,16}(:[0-9A-Za-z]{0,8})?")
_API = "/api/v1"
# The API's paths as app.py spells them, and the kind of resource each is about.
_TEMPLATES = [
    (f"{_API}/sprockets/{{sprocket_id:int}}", SPROCKETS),
    (f"{_API}/sprockets", SPROCKETS),
    (f"{_API}/factories/{{factory_id:int}}/chart_data", FACTORIES),
    (f"{_API}/factories/{{factory_id:int}}/summary", FACTORIES),
    (f"{_API}/factories/{{factory_id:int}}/events", FACTORIES),
    (f"{_API}/factories/{{factory_id:int}}", FACTORIES),
    (f"{_API}/factories", FACTORIES),
]
# Each path's pattern, with its id (Starlette's int convertor: digits) as group 1.
_PATHS = [(re.compile(re.sub(r"\{\w+:int\}", "([0-9]+)", route)), route, kind) for route, kind in _TEMPLATES]


class EntryError(ValueError):
    """A key entry or scope that cannot be used; the message never repeats the entry (it may be a key)."""


def parse_scope(scope: str) -> str:
    scope = scope.strip()
    if scope in _NAMED:
        return scope
    match = _FACTORY_SCOPE.fullmatch(scope)
    if match:
        return FACTORY_PREFIX + match[1]
    if scope.startswith(FACTORY_PREFIX):
        raise EntryError(f"scope {scope!r} needs a factory id from 1 up, as in factory:7")
    # Named only when it looks like a scope word: it could be a key pasted in the wrong place.
    shown = repr(scope) if _SCOPE_WORD.fullmatch(scope) else f"of {len(scope)} characters"
    raise EntryError(f"unknown scope {shown} (known: {SCOPES_HELP})")


def parse_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes, checked; none at all means every scope (admin)."""
    parsed = frozenset(parse_scope(scope) for scope in scopes)
    return parsed or frozenset({ADMIN})


def parse_entry(entry: str) -> tuple[str, frozenset[str]]:
    """(digest, scopes) of `DIGEST` or `DIGEST=SCOPE[+SCOPE...]`."""
    digest, equals, scopes = entry.strip().partition("=")
    if not _DIGEST.fullmatch(digest.strip()):
        raise EntryError("not the SHA-256 hex digest of a key (64 lower-case hex digits)")
    if equals and not scopes.strip():
        raise EntryError("no scope after '='")
    return digest.strip(), parse_scopes(scopes.split("+") if equals else [])


def parse_entries(entries: Iterable[str]) -> dict[str, frozenset[str]]:
    """Every entry checked, blank ones skipped; an EntryError names the first bad one by its position
    (from 1, blank ones counted)."""
    parsed: dict[str, frozenset[str]] = {}
    for position, entry in enumerate(entries, 1):
        if not entry.strip():
            continue
        try:
            digest, scopes = parse_entry(entry)
        except EntryError as error:
            raise EntryError(f"entry {position}: {error}") from None
        parsed[digest] = parsed.get(digest, frozenset()) | scopes
    return parsed


def entry(digest: str, scopes: Iterable[str]) -> str:
    """The SPROCKETS_API_KEYS entry of a key with these scopes."""
    return digest if set(scopes) == {ADMIN} else f"{digest}={'+'.join(sorted(scopes))}"


@dataclass(frozen=True, slots=True)
class Target:
    """What a request under /api/ touches: the route template, the id in the path if any, and its kind."""

    route: str
    resource_id: int | None
    kind: str | None


def routes() -> list[str]:
    """The route templates this module knows."""
    return [route for route, _ in _TEMPLATES]


def target(path: str) -> Target:
    static = _STATIC.get(path)
    if static is not None:
        return static
    for pattern, route, kind in _PATHS:
        match = pattern.fullmatch(path)
        if match:
            return Target(route, int(match[1]) if match.lastindex else None, kind)
    return Target("unmatched", None, None)


def needed_scopes(method: str, found: Target, private_reads: bool) -> tuple[str, ...]:
    """The scopes that admit a request, the one to name first (admin admits anything besides); none when
    any key will do."""
    if method in ("GET", "HEAD"):
        if not private_reads:
            return ()
        if found.kind == FACTORIES and found.resource_id is not None:
            return (READ, f"{FACTORY_PREFIX}{found.resource_id}")
        return (READ,)
    if method not in ("POST", "PUT", "PATCH", "DELETE") or found.kind is None:
        return ()
    if found.route.endswith("/chart_data"):
        return (f"{FACTORY_PREFIX}{found.resource_id}", FACTORIES)
    return (found.kind,)


def allows(scopes: frozenset[str], needed: tuple[str, ...]) -> bool:
    return not needed or ADMIN in scopes or any(scope in scopes for scope in needed)


# The paths without an id, found without a regex: the busiest writes (creates) go to them.
_STATIC = {route: Target(route, None, kind) for route, kind in _TEMPLATES if "{" not in route}
