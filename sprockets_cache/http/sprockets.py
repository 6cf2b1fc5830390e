"""HTTP handlers for /api/v1/sprockets."""

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sprockets_cache.errors import VersionMismatch
from sprockets_cache.http.problems import Problem
from sprockets_cache.http.web import (
    JSON,
    answer,
    idempotent,
    if_match,
    page,
    page_response,
    path_id,
    read_cache,
    read_json,
    settings,
    store,
    validate,
    versioned_response,
)
from sprockets_cache.models import SprocketIn, SprocketPatch, fields
from sprockets_cache.store.keys import SPROCKET_LIST, sprocket_changed
from sprockets_cache.store.sprockets import SPROCKET_FIELDS

MERGE_PATCH = "application/merge-patch+json"
# A PATCH re-reads and re-applies itself this often when other writers keep winning the race.
PATCH_ATTEMPTS = 5


def _location(sprocket_id: int) -> str:
    return f"/api/v1/sprockets/{sprocket_id}"


async def list_sprockets(request: Request) -> Response:
    after, limit = page(request)
    cache = read_cache(request)
    query = ("sprockets", after, limit)
    entry, ticket = cache.look(query)
    if entry is not None:
        return page_response(request, "sprockets", orjson.Fragment(entry.body), entry.next_id)
    sprockets, last = await store(request).list_sprockets(after, limit)
    body = orjson.dumps(sprockets)
    cache.keep(query, ticket, (SPROCKET_LIST,), body, next_id=last)
    return page_response(request, "sprockets", orjson.Fragment(body), last)


async def get_sprocket(request: Request) -> Response:
    sprocket_id = path_id(request, "sprocket_id")
    cache = read_cache(request)
    query = ("sprocket", sprocket_id)
    entry, ticket = cache.look(query)
    if entry is not None:
        return answer(request, entry.body, entry.version)
    sprocket = await store(request).get_sprocket(sprocket_id)
    cache.keep(query, ticket, (sprocket_changed(sprocket_id),), sprocket.json, sprocket.version)
    return answer(request, sprocket.json, sprocket.version)


async def create_sprocket(request: Request) -> Response:
    body = await read_json(request, settings(request).max_body_bytes)
    sprocket = validate(SprocketIn, body)

    async def create(idempotency: str | None) -> Response:
        try:
            created = await store(request).create_sprocket(fields(sprocket), idempotency)
        finally:
            read_cache(request).drop((SPROCKET_LIST,))
        body = orjson.Fragment(created.json)
        return versioned_response(request, body, created.version, status=201, location=_location(created.id))

    return await idempotent(request, "sprockets", body, create)


async def replace_sprocket(request: Request) -> Response:
    sprocket_id = path_id(request, "sprocket_id")
    sprocket = validate(SprocketIn, await read_json(request, settings(request).max_body_bytes))
    try:
        updated = await store(request).update_sprocket(sprocket_id, fields(sprocket), if_match(request))
    finally:
        _written(request, sprocket_id)
    return versioned_response(request, orjson.Fragment(updated.json), updated.version)


async def patch_sprocket(request: Request) -> Response:
    sprocket_id = path_id(request, "sprocket_id")
    accepted = if_match(request)
    # RFC 7396 on a flat object whose every field is required: the patch's fields replace the current ones.
    patch = validate(SprocketPatch, await read_json(request, settings(request).max_body_bytes, (MERGE_PATCH, JSON)))
    for _ in range(PATCH_ATTEMPTS):
        current, version = await store(request).sprocket_fields(sprocket_id)
        if accepted is not None and version not in accepted:
            raise VersionMismatch(sprocket_id)
        merged = {**{name: current[name] for name in SPROCKET_FIELDS}, **patch.model_dump()}
        sprocket = validate(SprocketIn, merged)
        try:
            updated = await store(request).update_sprocket(sprocket_id, sprocket.model_dump(), [version])
        except VersionMismatch:
            if accepted is not None:
                raise
            continue
        finally:
            _written(request, sprocket_id)
        return versioned_response(request, orjson.Fragment(updated.json), updated.version)
    raise Problem(409, "The sprocket kept changing while this patch was applied; retry it.")


async def delete_sprocket(request: Request) -> Response:
    sprocket_id = path_id(request, "sprocket_id")
    try:
        await store(request).delete_sprocket(sprocket_id, if_match(request))
    finally:
        _written(request, sprocket_id)
    return Response(status_code=204)


def _written(request: Request, sprocket_id: int) -> None:
    """After a write to a sprocket, done or not (it may have happened): drop what this process holds of it
    at once, since Redis's invalidation may reach us after the write's reply."""
    read_cache(request).drop((sprocket_changed(sprocket_id), SPROCKET_LIST))
