"""The OpenAPI 3.1 document, built once at start-up from the pydantic models that validate requests.

Schemas come from `model_json_schema()`; the bounds of path and query parameters from the same
constants and types the handlers check them with. Change a model and the document follows.
"""

from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from sprockets_cache import models
from sprockets_cache.models import Id, UnixTime
from sprockets_cache.problems import MEDIA_TYPE as PROBLEM
from sprockets_cache.sprockets import MERGE_PATCH
from sprockets_cache.web import CURSOR_PATTERN, DEFAULT_LIMIT, JSON, MAX_LIMIT

API = "/api/v1"
REF = "#/components/schemas/{model}"
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    models.SprocketIn,
    models.SprocketPatch,
    models.ChartData,
    models.FactoryIn,
)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    models.Sprocket,
    models.SprocketPage,
    models.Factory,
    models.FactoryPage,
    models.Summary,
    models.Written,
    models.Health,
    models.Readiness,
    models.Problem,
    models.ValidationProblem,
)


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schemas() -> dict[str, Any]:
    """Every model's schema by name, with the models they nest hoisted beside them."""
    schemas: dict[str, Any] = {}
    modes: tuple[tuple[JsonSchemaMode, tuple[type[BaseModel], ...]], ...] = (
        ("validation", REQUEST_MODELS),
        ("serialization", RESPONSE_MODELS),
    )
    for mode, group in modes:
        for model in group:
            schema = model.model_json_schema(ref_template=REF, mode=mode)
            for name, sub in {**schema.pop("$defs", {}), model.__name__: schema}.items():
                if schemas.setdefault(name, sub) != sub:
                    raise ValueError(f"two different schemas are named {name}")
    return schemas


def _header(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "schema": schema}


HEADERS = {
    "ETag": _header("The version of the resource (strong).", {"type": "string", "pattern": r'^"[0-9]+"$'}),
    "Cache-Control": _header("Revalidate with If-None-Match before reusing.", {"type": "string"}),
    "Location": _header("The URL of the new resource.", {"type": "string", "format": "uri-reference"}),
    "Link": _header('The next page, as `<URL>; rel="next"`; absent on the last page.', {"type": "string"}),
    "Retry-After": _header("Seconds to wait before retrying.", {"type": "integer", "minimum": 0}),
    "Allow": _header("The methods the path allows.", {"type": "string"}),
    "Idempotent-Replayed": _header(
        "`true` when this is the stored response to an earlier request with the same Idempotency-Key.",
        {"type": "string", "enum": ["true"]},
    ),
}


def _parameter(name: str, where: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description, "schema": schema, **extra}


def _time(name: str, description: str) -> dict[str, Any]:
    return _parameter(name, "query", TypeAdapter(UnixTime).json_schema(), description)


PARAMETERS = {
    "sprocket_id": _parameter("sprocket_id", "path", TypeAdapter(Id).json_schema(), "A sprocket's id.", required=True),
    "factory_id": _parameter("factory_id", "path", TypeAdapter(Id).json_schema(), "A factory's id.", required=True),
    "limit": _parameter(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "Items on a page at most.",
    ),
    "cursor": _parameter(
        "cursor",
        "query",
        {"type": "string", "pattern": f"^{CURSOR_PATTERN}$"},
        "The `next_cursor` of the previous page; omit for the first page.",
    ),
    "from": _time("from", "Only points at or after this time (unix seconds); at most `to`."),
    "to": _time("to", "Only points at or before this time (unix seconds)."),
    "If-Match": _parameter(
        "If-Match", "header", {"type": "string"}, 'Write only if the ETag is one of these (`"3"`, `"3", "4"` or `*`).'
    ),
    "If-None-Match": _parameter(
        "If-None-Match", "header", {"type": "string"}, "Answer 304 if the ETag is one of these (or `*`)."
    ),
    "Idempotency-Key": _parameter(
        "Idempotency-Key",
        "header",
        {"type": "string", "minLength": 1, "maxLength": 255},
        "A retry with the same key and body gets the first response again and creates nothing (for 24 hours).",
    ),
}


def _problem(description: str, schema: str = "Problem", header: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {PROBLEM: {"schema": _ref("schemas", schema)}}}
    if header is not None:
        response["headers"] = {header: {**HEADERS[header], "required": True}}
    return response


RESPONSES = {
    "BadRequest": _problem("Malformed JSON, or a cursor or Idempotency-Key this API does not accept."),
    "NotFound": _problem("Nothing has this id."),
    "MethodNotAllowed": _problem("Any method a path does not list.", header="Allow"),
    "Conflict": _problem("A request with this Idempotency-Key is still running.", header="Retry-After"),
    "PreconditionFailed": _problem("The ETag is not one that If-Match names; nothing was written."),
    "ContentTooLarge": _problem("The body is over the size (or point count) limit."),
    "UnsupportedMediaType": _problem("The body is not in a media type this operation takes."),
    "UnprocessableContent": _problem("The request breaks the rules that `errors` lists.", "ValidationProblem"),
    "Unavailable": _problem("Redis is unreachable or too slow.", header="Retry-After"),
    "NotModified": {
        "description": "The ETag is one that If-None-Match names.",
        "headers": {"ETag": _ref("headers", "ETag"), "Cache-Control": _ref("headers", "Cache-Control")},
    },
}
_ERRORS = {
    "400": "BadRequest",
    "404": "NotFound",
    "409": "Conflict",
    "412": "PreconditionFailed",
    "413": "ContentTooLarge",
    "415": "UnsupportedMediaType",
    "422": "UnprocessableContent",
}


def _json(description: str, schema: str, *headers: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": _ref("schemas", schema)}}}
    if headers:
        # A $ref takes no `required` beside it, so each header is written out.
        response["headers"] = {name: {**HEADERS[name], "required": name in required} for name in headers}
    return response


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Any],
    errors: tuple[int, ...] = (),
    parameters: tuple[str, ...] = (),
    body: tuple[str, tuple[str, ...]] | None = None,
) -> dict[str, Any]:
    """An operation; `errors` are the problem+json statuses it can answer with besides 503."""
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if parameters:
        operation["parameters"] = [_ref("parameters", name) for name in parameters]
    if body is not None:
        schema, media_types = body
        content = {media_type: {"schema": _ref("schemas", schema)} for media_type in media_types}
        operation["requestBody"] = {"required": True, "content": content}
    for status in errors:
        responses[str(status)] = _ref("responses", _ERRORS[str(status)])
    responses["503"] = _ref("responses", "Unavailable")
    operation["responses"] = responses
    return operation


def _links(parameter: str, *targets: str) -> dict[str, Any]:
    """Links from a created resource to the operations on it, for clients and schemathesis's stateful phase."""
    return {
        target[0].upper() + target[1:]: {"operationId": target, "parameters": {parameter: "$response.body#/id"}}
        for target in targets
    }


def _created(schema: str, links: dict[str, Any]) -> dict[str, Any]:
    created = _json(
        "Created; a retry with the same Idempotency-Key and body gets this response again.",
        schema,
        "Location",
        "ETag",
        "Cache-Control",
        "Idempotent-Replayed",
        required=("Location", "ETag"),
    )
    return {**created, "links": links}


def _versioned(description: str, schema: str) -> dict[str, Any]:
    return _json(description, schema, "ETag", "Cache-Control", required=("ETag", "Cache-Control"))


def _sprocket_paths() -> dict[str, Any]:
    item = f"{API}/sprockets/{{sprocket_id}}"
    sprocket_links = _links("sprocket_id", "getSprocket", "replaceSprocket", "patchSprocket", "deleteSprocket")
    conditional = ("sprocket_id", "If-Match")
    return {
        f"{API}/sprockets": {
            "get": _operation(
                "listSprockets",
                "Sprockets in id order, a page at a time",
                "sprockets",
                {"200": _json("A page of sprockets.", "SprocketPage", "Link")},
                (400, 422),
                ("limit", "cursor"),
            ),
            "post": _operation(
                "createSprocket",
                "Create a sprocket",
                "sprockets",
                {"201": _created("Sprocket", sprocket_links)},
                (400, 409, 413, 415, 422),
                ("Idempotency-Key",),
                ("SprocketIn", (JSON,)),
            ),
        },
        item: {
            "get": _operation(
                "getSprocket",
                "A sprocket",
                "sprockets",
                {"200": _versioned("The sprocket.", "Sprocket"), "304": _ref("responses", "NotModified")},
                (404,),
                ("sprocket_id", "If-None-Match"),
            ),
            "put": _operation(
                "replaceSprocket",
                "Replace every field of a sprocket",
                "sprockets",
                {"200": _versioned("The sprocket as written.", "Sprocket")},
                (400, 404, 412, 413, 415, 422),
                conditional,
                ("SprocketIn", (JSON,)),
            ),
            "patch": _operation(
                "patchSprocket",
                "Change some fields of a sprocket (JSON merge patch)",
                "sprockets",
                {
                    "200": _versioned("The sprocket as written.", "Sprocket"),
                    "409": _problem("The sprocket kept changing while the patch was applied; retry it."),
                },
                (400, 404, 412, 413, 415, 422),
                conditional,
                ("SprocketPatch", (MERGE_PATCH, JSON)),
            ),
            "delete": _operation(
                "deleteSprocket",
                "Delete a sprocket",
                "sprockets",
                {"204": {"description": "Deleted."}},
                (404, 412),
                conditional,
            ),
        },
    }


def _factory_paths() -> dict[str, Any]:
    item = f"{API}/factories/{{factory_id}}"
    factory_links = _links("factory_id", "getFactory", "getFactorySummary", "writeChartData")
    return {
        f"{API}/factories": {
            "get": _operation(
                "listFactories",
                "Factories in id order with their chart data, a page at a time",
                "factories",
                {"200": _json("A page of factories.", "FactoryPage", "Link")},
                (400, 422),
                ("limit", "cursor", "from", "to"),
            ),
            "post": _operation(
                "createFactory",
                "Create a factory, with chart data if given",
                "factories",
                {"201": _created("Factory", factory_links)},
                (400, 409, 413, 415, 422),
                ("Idempotency-Key",),
                ("FactoryIn", (JSON,)),
            ),
        },
        item: {
            "get": _operation(
                "getFactory",
                "A factory with its chart data",
                "factories",
                {"200": _versioned("The factory.", "Factory"), "304": _ref("responses", "NotModified")},
                (404, 422),
                ("factory_id", "from", "to", "If-None-Match"),
            ),
        },
        f"{item}/chart_data": {
            "post": _operation(
                "writeChartData",
                "Write points; a point at an existing time replaces it",
                "factories",
                {"200": _json("The points written.", "Written", "ETag", required=("ETag",))},
                (400, 404, 413, 415, 422),
                ("factory_id",),
                ("ChartData", (JSON,)),
            ),
        },
        f"{item}/summary": {
            "get": _operation(
                "getFactorySummary",
                "Totals and attainment over the points in a time range",
                "factories",
                {"200": _versioned("The summary.", "Summary"), "304": _ref("responses", "NotModified")},
                (404, 422),
                ("factory_id", "from", "to", "If-None-Match"),
            ),
        },
    }


def _meta_paths() -> dict[str, Any]:
    def get(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"operationId": operation_id, "summary": summary, "tags": ["service"], "responses": responses}}

    unavailable = _json("Redis does not answer.", "Readiness", "Retry-After", required=("Retry-After",))
    return {
        "/health": get("health", "Liveness; does not ask Redis", {"200": _json("Alive.", "Health")}),
        "/ready": get(
            "ready", "Readiness: whether Redis answers", {"200": _json("Ready.", "Readiness"), "503": unavailable}
        ),
        "/openapi.json": get(
            "openapi",
            "This document",
            {"200": {"description": "OpenAPI 3.1.", "content": {JSON: {"schema": {"type": "object"}}}}},
        ),
        "/docs": get(
            "docs",
            "Swagger UI for this document",
            {"200": {"description": "An HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
        ),
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sprockets-cache",
            "version": "1",
            "description": "Sprocket factory production data and sprocket types, kept in Redis. "
            "Every error is application/problem+json (RFC 9457); a method a path does not list gets 405 "
            "with `Allow` (see components/responses/MethodNotAllowed).",
        },
        "paths": {**_meta_paths(), **_factory_paths(), **_sprocket_paths()},
        "components": {
            "schemas": _schemas(),
            "parameters": PARAMETERS,
            "headers": HEADERS,
            "responses": RESPONSES,
        },
    }


def document_bytes() -> bytes:
    return orjson.dumps(document())
