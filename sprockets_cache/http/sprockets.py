"""HTTP handlers for /api/v1/sprockets."""

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sprockets_cache.errors import VersionMismatch
from sprockets_cache.http.problems import Problem
from sprockets_cache.http.web import (
    JSON,
    idempotent,
    if_match,
    page,
    page_response,
    path_id,
    read_json,
    settings,
    store,
    validate,
    versioned_response,
)
from sprockets_cache.models import SprocketIn, SprocketPatch, fields
from sprockets_cache.store.sprockets import SPROCKET_FIELDS

MERGE_PATCH = "application/merge-patch+json"
# A PATCH re-reads and re-applies itself this often when other writers keep winning the race.
PATCH_ATTEMPTS = 5


def _location(sprocket_id: int) -> str:
    return f"/api/v1/sprockets/{sprocket_id}"


async def list_sprockets(request: Request) -> Response:
    after, limit = page(request)
    sprockets, last = await store(request).list_sprockets(after, limit)
    return page_response(request, "sprockets", sprockets, last)


async def get_sprocket(request: Request) -> Response:
    sprocket = await store(request).get_sprocket(path_id(request, "sprocket_id"))
    return versioned_response(request, orjson.Fragment(sprocket.json), sprocket.version)


async def create_sprocket(request: Request) -> Response:
    body = await read_json(request, settings(request).max_body_bytes)
    sprocket = validate(SprocketIn, body)

    async def create(idempotency: str | None) -> Response:
        created = await store(request).create_sprocket(fields(sprocket), idempotency)
        body = orjson.Fragment(created.json)
        return versioned_response(request, body, created.version, status=201, location=_location(created.id))

    return await idempotent(request, "sprockets", body, create)


async def replace_sprocket(request: Request) -> Response:
    sprocket_id = path_id(request, "sprocket_id")
    sprocket = validate(SprocketIn, await read_json(request, settings(request).max_body_bytes))
    updated = await store(request).update_sprocket(sprocket_id, fields(sprocket), if_match(request))
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
        return versioned_response(request, orjson.Fragment(updated.json), updated.version)
    raise Problem(409, "The sprocket kept changing while this patch was applied; retry it.")


async def delete_sprocket(request: Request) -> Response:
    await store(request).delete_sprocket(path_id(request, "sprocket_id"), if_match(request))
    return Response(status_code=204)
