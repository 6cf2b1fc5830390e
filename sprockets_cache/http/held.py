"""The shortest way through for the busiest reads: a GET of one sprocket, or of one factory with no query
(its whole range, every point), answered from the read cache when it holds the answer. It runs inside the
API keys' and rate limit's middleware (security.Guard), the admission queue and the request observer, and
before Starlette's exception middleware, router and our endpoint wrapper, which a read from memory does
not need: they were about a third of its time (BENCHMARKS.md). A miss, a conditional read and every other
request go the usual way, which gives the same answer."""

import re

from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sprockets_cache.http.read_cache import Key, ReadCache, factory_key
from sprockets_cache.http.web import Answer
from sprockets_cache.models import MAX_TIME

_PATH = re.compile(r"/api/v1/(sprockets|factories)/([1-9][0-9]{0,17})")


def _key(kind: str, number: str) -> Key:
    if kind == "sprockets":
        return "sprocket", int(number)
    return factory_key(int(number), 0, MAX_TIME, None)  # as web.time_range and bucket_width read no query


class HeldReads:
    """Pure ASGI middleware; `routes` are the routes of /sprockets/{id} and /factories/{id}, which the
    request observer names in its metrics and log."""

    def __init__(self, app: ASGIApp, routes: dict[str, Route]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            match = _PATH.fullmatch(scope["path"])
            cache: ReadCache = scope["state"]["read_cache"]
            if match is not None and cache.tracking and not _conditional(scope):
                kind, number = match.groups()
                entry = cache.held(_key(kind, number), count_miss=False)
                if entry is not None:
                    scope["route"] = self.routes[kind]
                    await Answer(entry.body, entry.version, False)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _conditional(scope: Scope) -> bool:
    return any(name == b"if-none-match" for name, _ in scope["headers"])
