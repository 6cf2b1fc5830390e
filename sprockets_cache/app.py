"""The ASGI application: routes, error handlers and the Redis connection's lifetime."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sprockets_cache import factories, sprockets
from sprockets_cache.problems import exception_handlers
from sprockets_cache.settings import Settings
from sprockets_cache.store import UNAVAILABLE_ERRORS, Client, Store, connect
from sprockets_cache.web import json_response, store

log = logging.getLogger(__name__)


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    try:
        await store(request).ping()
    except UNAVAILABLE_ERRORS:
        return json_response({"status": "unavailable"}, 503, headers={"Retry-After": "1"})
    return json_response({"status": "ready"})


async def _wait_for_redis(store: Store, wait_s: float) -> None:
    """Ping until Redis answers, logging each miss, for at most `wait_s` seconds."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            await store.ping()
            return
        except UNAVAILABLE_ERRORS as error:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            log.warning("Redis is not answering yet (%s); retrying", error)
            await asyncio.sleep(0.5)


def create_app(settings: Settings | None = None, client: Client | None = None) -> Starlette:
    """The app; `client` hands in a Redis client (tests pass fakeredis), else one is made from settings."""
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        store = Store(client or connect(settings.redis_url, settings.redis_cluster, settings.redis_timeout_s))
        await _wait_for_redis(store, settings.redis_startup_wait_s)
        try:
            yield {"store": store, "settings": settings}
        finally:
            if client is None:
                await store.close()

    api = "/api/v1"
    routes = [
        Route("/health", health),
        Route("/ready", ready),
        Route(f"{api}/factories", factories.list_factories),
        Route(f"{api}/factories", factories.create_factory, methods=["POST"]),
        Route(f"{api}/factories/{{factory_id:int}}", factories.get_factory),
        Route(f"{api}/factories/{{factory_id:int}}/chart_data", factories.write_chart_data, methods=["POST"]),
        Route(f"{api}/factories/{{factory_id:int}}/summary", factories.factory_summary),
        Route(f"{api}/sprockets", sprockets.list_sprockets),
        Route(f"{api}/sprockets", sprockets.create_sprocket, methods=["POST"]),
        Route(f"{api}/sprockets/{{sprocket_id:int}}", sprockets.get_sprocket),
        Route(f"{api}/sprockets/{{sprocket_id:int}}", sprockets.replace_sprocket, methods=["PUT"]),
        Route(f"{api}/sprockets/{{sprocket_id:int}}", sprockets.patch_sprocket, methods=["PATCH"]),
        Route(f"{api}/sprockets/{{sprocket_id:int}}", sprockets.delete_sprocket, methods=["DELETE"]),
    ]
    return Starlette(routes=routes, exception_handlers=exception_handlers(UNAVAILABLE_ERRORS), lifespan=lifespan)


# For `uvicorn sprockets_cache.app:app`; settings come from the environment.
app = create_app()
