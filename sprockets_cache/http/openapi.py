"""The OpenAPI 3.1 document, built once at start-up from the pydantic models that validate requests.

Schemas come from `model_json_schema()`; the bounds of path and query parameters from the same
constants and types the handlers check them with. Change a model and the document follows.
"""

from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from sprockets_cache import models
from sprockets_cache.http.problems import MEDIA_TYPE as PROBLEM
from sprockets_cache.http.sprockets import MERGE_PATCH
from sprockets_cache.http.web import (
    CURSOR_PATTERN,
    DEFAULT_LIMIT,
    ETAGS_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    JSON,
    MAX_LIMIT,
)
from sprockets_cache.models import MAX_TIME, Id, UnixTime

API = "/api/v1"
REF = "#/components/schemas/{model}"
# As events.py reads Last-Event-ID; empty is as good as none.
EVENT_ID = "^(([0-9]{1,20})-([0-9]{1,20}))?$"
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    models.SprocketIn,
    models.SprocketPatch,
    models.ChartData,
    models.FactoryIn,
)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    *(models.Sprocket, models.SprocketPage, models.Factory, models.FactoryPage, models.Summary, models.Written),
    *(models.Health, models.Readiness, models.Problem, models.ValidationProblem),
)
DESCRIPTION = """Sprocket factory production data and sprocket types, kept in Redis.

Every error is `application/problem+json` (RFC 9457). A method a path does not list gets 405 with `Allow`.
Integers are written as JSON integers: `5`, not `5.0`. When API keys are configured, writes need
`Authorization: Bearer <key>` (reads too, with private reads), and a key without the scope a request
needs gets 403 naming it (scopes: admin, sprockets, factories, factory:<id>, read); when a rate limit is
configured, `/api/` responses carry `RateLimit` and `RateLimit-Policy`, and a client over it gets 429 with
`Retry-After`."""


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


def _string(description: str, **schema: Any) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string", **schema}}


HEADERS = {
    "ETag": _string("The version of the resource (strong).", pattern=r'^"[0-9]+"$'),
    "Cache-Control": _string("Revalidate with If-None-Match before reusing."),
    "Location": _string("The URL of the new resource.", format="uri-reference"),
    "Link": _string('The next page, as `<URL>; rel="next"`; absent on the last page.'),
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 0}},
    "Allow": _string("The methods the path allows."),
    "WWW-Authenticate": _string("The scheme to authenticate with: Bearer."),
    "RateLimit": _string("Requests left (`r`), and seconds until there are more (`t`)."),
    "RateLimit-Policy": _string("The limit: burst and window."),
    "Idempotent-Replayed": _string(
        "The stored response to an earlier request with this Idempotency-Key.", enum=["true"]
    ),
}


def _parameter(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description, "schema": schema, "required": where == "path"}


PARAMETERS = {
    "sprocket_id": _parameter("sprocket_id", "path", TypeAdapter(Id).json_schema(), "A sprocket's id."),
    "factory_id": _parameter("factory_id", "path", TypeAdapter(Id).json_schema(), "A factory's id."),
    "limit": _parameter(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "Page size.",
    ),
    "cursor": _parameter(
        "cursor", "query", {"type": "string", "pattern": f"^{CURSOR_PATTERN}$"}, "`next_cursor` of the previous page."
    ),
    "from": _parameter("from", "query", TypeAdapter(UnixTime).json_schema(), "Points at or after (at most `to`)."),
    "to": _parameter("to", "query", TypeAdapter(UnixTime).json_schema(), "Points at or before this time."),
    "bucket": _parameter(
        "bucket",
        "query",
        {"type": "integer", "minimum": 1, "maximum": MAX_TIME},
        "Sum the points per this many s (before the raw window: at least DOWNSAMPLE_S; see resolution_s).",
    ),
    "If-Match": _parameter(
        "If-Match",
        "header",
        {"type": "string", "pattern": f"^({ETAGS_PATTERN})$"},
        'Write only at these ETags (`"3", "4"` or `*`).',
    ),
    "If-None-Match": _parameter(
        "If-None-Match", "header", {"type": "string", "pattern": f"^({ETAGS_PATTERN})$"}, "304 at these ETags (or `*`)."
    ),
    "Last-Event-ID": _parameter(
        "Last-Event-ID", "header", {"type": "string", "pattern": EVENT_ID}, "Resume after this event's id."
    ),
    "Idempotency-Key": _parameter(
        "Idempotency-Key",
        "header",
        {"type": "string", "pattern": f"^({IDEMPOTENCY_KEY_PATTERN})$"},
        "A retry with the same key and body gets the first response again and creates nothing (for 24 hours).",
    ),
}


def _problem(description: str, schema: str = "Problem", *headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {PROBLEM: {"schema": _ref("schemas", schema)}}}
    if headers:
        # A $ref takes no `required` beside it, so each header is written out.
        response["headers"] = {name: {**HEADERS[name], "required": True} for name in headers}
    return response


RESPONSES = {
    "400": (
        "BadRequest",
        _problem("Malformed JSON, or a cursor or header not of the form the document gives."),
    ),
    "401": ("Unauthorized", _problem("A needed API key is missing or wrong.", "Problem", "WWW-Authenticate")),
    "403": (
        "Forbidden",
        _problem("The API key lacks the scope this request needs; `detail` names it.", "Problem", "WWW-Authenticate"),
    ),
    "404": ("NotFound", _problem("Nothing has this id.")),
    "405": ("MethodNotAllowed", _problem("Any method a path does not list.", "Problem", "Allow")),
    "408": ("RequestTimeout", _problem("The body did not arrive within the body timeout.")),
    "409": ("Conflict", _problem("A request with this Idempotency-Key is still running.", "Problem", "Retry-After")),
    "412": ("PreconditionFailed", _problem("The ETag is not one that If-Match names; nothing was written.")),
    "413": ("ContentTooLarge", _problem("The body is over the size (or point count) limit.")),
    "415": ("UnsupportedMediaType", _problem("The body is not in a media type this operation takes.")),
    "422": ("UnprocessableContent", _problem("The request breaks the rules `errors` lists.", "ValidationProblem")),
    "429": (
        "TooManyRequests",
        _problem("Over the rate limit.", "Problem", "Retry-After", "RateLimit", "RateLimit-Policy"),
    ),
    "503": (
        "Unavailable",
        _problem(
            "Redis is unreachable or too slow; or it refuses writes (a read-only replica, failing to save, short"
            " of replicas); or too few replicas confirmed a write (REDIS_WAIT_REPLICAS): it may or may not"
            " have been applied, and repeating it is safe (a create with the same Idempotency-Key).",
            "Problem",
            "Retry-After",
        ),
    ),
    "507": (
        "InsufficientStorage",
        _problem("Redis is out of memory and refuses writes; nothing was written.", "Problem", "Retry-After"),
    ),
}
NOT_MODIFIED = {
    "description": "The ETag is one that If-None-Match names.",
    "headers": {"ETag": _ref("headers", "ETag"), "Cache-Control": _ref("headers", "Cache-Control")},
}
# What every operation under /api/ may answer, and every one that reads a body besides.
_API_ERRORS = ("401", "403", "429", "503")
_BODY_ERRORS = ("400", "408", "413", "415", "422")
# And every one that writes.
_WRITE_ERRORS = ("507",)


def _json(description: str, schema: str, *headers: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": _ref("schemas", schema)}}}
    if headers:
        response["headers"] = {name: {**HEADERS[name], "required": name in required} for name in headers}
    return response


def _versioned(description: str, schema: str) -> dict[str, Any]:
    return _json(description, schema, "ETag", "Cache-Control", required=("ETag", "Cache-Control"))


def _created(schema: str, parameter: str, *targets: str) -> dict[str, Any]:
    """201 with links to the operations on the new resource, for clients and schemathesis's stateful phase."""
    headers = ("Location", "ETag", "Cache-Control", "Idempotent-Replayed")
    created = _json("Created (or replayed, for the same Idempotency-Key and body).", schema, *headers)
    for name in ("Location", "ETag"):
        created["headers"][name]["required"] = True
    links = {
        target[0].upper() + target[1:]: {"operationId": target, "parameters": {parameter: "$response.body#/id"}}
        for target in targets
    }
    return {**created, "links": links}


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    errors: tuple[str, ...] = (),
    parameters: tuple[str, ...] = (),
    body: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An /api/ operation. `errors`: the problem statuses it may answer besides those every one may;
    `body`: the request body's schema, then the media types it is taken in (JSON if none)."""
    tag = "sprockets" if "Sprocket" in operation_id else "factories"
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    # Optional: a key is needed only when keys are configured (see the description).
    operation["security"] = [{}, {"bearer": []}]
    if parameters:
        operation["parameters"] = [_ref("parameters", name) for name in parameters]
    if body:
        schema, *media_types = body
        content = {media_type: {"schema": _ref("schemas", schema)} for media_type in media_types or [JSON]}
        operation["requestBody"] = {"required": True, "content": content}
        errors = (*errors, *_BODY_ERRORS)
    if body or operation_id.startswith("delete"):
        errors = (*errors, *_WRITE_ERRORS)
    for status in sorted({*errors, *_API_ERRORS}):
        responses.setdefault(status, _ref("responses", RESPONSES[status][0]))
    operation["responses"] = responses
    return operation


def _sprocket_paths() -> dict[str, Any]:
    created = _created("Sprocket", "sprocket_id", "getSprocket", "replaceSprocket", "patchSprocket", "deleteSprocket")
    written = _versioned("The sprocket as written.", "Sprocket")
    kept_changing = _problem("The sprocket kept changing while the patch was applied; retry it.")
    conditional = ("sprocket_id", "If-Match")
    return {
        f"{API}/sprockets": {
            "get": _operation(
                "listSprockets",
                "Sprockets in id order, a page at a time",
                {"200": _json("A page of sprockets.", "SprocketPage", "Link")},
                ("400", "422"),
                ("limit", "cursor"),
            ),
            "post": _operation(
                "createSprocket", "Create a sprocket", {"201": created}, ("409",), ("Idempotency-Key",), ("SprocketIn",)
            ),
        },
        f"{API}/sprockets/{{sprocket_id}}": {
            "get": _operation(
                "getSprocket",
                "A sprocket",
                {"200": _versioned("The sprocket.", "Sprocket"), "304": NOT_MODIFIED},
                ("400", "404"),
                ("sprocket_id", "If-None-Match"),
            ),
            "put": _operation(
                "replaceSprocket", "Replace a sprocket", {"200": written}, ("404", "412"), conditional, ("SprocketIn",)
            ),
            "patch": _operation(
                "patchSprocket",
                "Change some fields of a sprocket (JSON merge patch)",
                {"200": written, "409": kept_changing},
                ("404", "412"),
                conditional,
                ("SprocketPatch", MERGE_PATCH, JSON),
            ),
            "delete": _operation(
                "deleteSprocket",
                "Delete a sprocket",
                {"204": {"description": "Deleted."}},
                ("400", "404", "412"),
                conditional,
            ),
        },
    }


def _factory_paths() -> dict[str, Any]:
    item = f"{API}/factories/{{factory_id}}"
    created = _created("Factory", "factory_id", "getFactory", "getFactorySummary", "writeChartData")
    read = ("factory_id", "from", "to", "If-None-Match")
    return {
        f"{API}/factories": {
            "get": _operation(
                "listFactories",
                "Factories in id order with their chart data, a page at a time",
                {"200": _json("A page of factories.", "FactoryPage", "Link")},
                ("400", "422"),
                ("limit", "cursor", "from", "to", "bucket"),
            ),
            "post": _operation(
                "createFactory", "Create a factory", {"201": created}, ("409",), ("Idempotency-Key",), ("FactoryIn",)
            ),
        },
        item: {
            "get": _operation(
                "getFactory",
                "A factory with its chart data",
                {"200": _versioned("The factory.", "Factory"), "304": NOT_MODIFIED},
                ("400", "404", "422"),
                (*read, "bucket"),
            ),
        },
        f"{item}/chart_data": {
            "post": _operation(
                "writeChartData",
                "Write points; a point at an existing time replaces it",
                {"200": _json("The points written.", "Written", "ETag", required=("ETag",))},
                ("404",),
                ("factory_id",),
                ("ChartData",),
            ),
        },
        f"{item}/events": {
            "get": _operation(
                "factoryEvents",
                "Server-Sent Events: a `points` event, data `{version, resolution_s, chart_data}`, "
                "for each write from now on",
                {"200": {"description": "An endless stream.", "content": {"text/event-stream": {"schema": {}}}}},
                ("400", "404"),
                ("factory_id", "Last-Event-ID"),
            ),
        },
        f"{item}/summary": {
            "get": _operation(
                "getFactorySummary",
                "Totals and attainment over the points in a time range",
                {"200": _versioned("The summary.", "Summary"), "304": NOT_MODIFIED},
                ("400", "404", "422"),
                read,
            ),
        },
    }


def _service_paths() -> dict[str, Any]:
    def get(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"operationId": operation_id, "summary": summary, "tags": ["service"], "responses": responses}}

    def text(media_type: str, description: str) -> dict[str, Any]:
        return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}

    unavailable = _json(
        "Redis does not answer, or refuses writes.", "Readiness", "Retry-After", required=("Retry-After",)
    )
    document = {"description": "OpenAPI 3.1.", "content": {JSON: {"schema": {"type": "object"}}}}
    return {
        "/": get("dashboard", "The dashboard: production charts", {"200": text("text/html", "A page.")}),
        "/health": get("health", "Liveness; does not ask Redis", {"200": _json("Alive.", "Health")}),
        "/ready": get("ready", "Whether Redis takes writes", {"200": _json("Ready.", "Readiness"), "503": unavailable}),
        "/metrics": get("metrics", "Prometheus metrics", {"200": text("text/plain", "The text exposition format.")}),
        "/openapi.json": get("openapi", "This document", {"200": document}),
        "/docs": get("docs", "Swagger UI for this document", {"200": text("text/html", "A page.")}),
    }


def document(api_keys: bool = False, private_reads: bool = False) -> dict[str, Any]:
    """The document for a deployment: with API keys, writes (and, with private reads, reads) need one."""
    paths = {**_service_paths(), **_factory_paths(), **_sprocket_paths()}
    if api_keys:
        for path, operations in paths.items():
            for method, operation in operations.items():
                if path.startswith("/api/") and (method != "get" or private_reads):
                    operation["security"] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "sprockets-cache", "version": "1", "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "parameters": PARAMETERS,
            "headers": HEADERS,
            "responses": dict(RESPONSES.values()),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key."}},
        },
    }


def document_bytes(api_keys: bool = False, private_reads: bool = False) -> bytes:
    return orjson.dumps(document(api_keys, private_reads))
