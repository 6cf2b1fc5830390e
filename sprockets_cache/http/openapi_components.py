"""The OpenAPI document's shared parts: schemas from the pydantic models that validate requests, and the
parameters, headers and responses its operations refer to, with the builders of those operations.

The bounds of path and query parameters come from the same constants and types the handlers check them
with. openapi.py puts the paths together.
"""

from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from sprockets_cache import models
from sprockets_cache.http.problems import MEDIA_TYPE as PROBLEM
from sprockets_cache.http.web import (
    CURSOR_PATTERN,
    DEFAULT_LIMIT,
    ETAGS_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    JSON,
    MAX_LIMIT,
)
from sprockets_cache.models import MAX_TIME, Id, UnixTime

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


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def schemas() -> dict[str, Any]:
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


def problem(description: str, schema: str = "Problem", *headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {PROBLEM: {"schema": ref("schemas", schema)}}}
    if headers:
        # A $ref takes no `required` beside it, so each header is written out.
        response["headers"] = {name: {**HEADERS[name], "required": True} for name in headers}
    return response


RESPONSES = {
    "400": (
        "BadRequest",
        problem("Malformed JSON, or a cursor or header not of the form the document gives."),
    ),
    "401": ("Unauthorized", problem("A needed API key is missing or wrong.", "Problem", "WWW-Authenticate")),
    "403": (
        "Forbidden",
        problem("The API key lacks the scope this request needs; `detail` names it.", "Problem", "WWW-Authenticate"),
    ),
    "404": ("NotFound", problem("Nothing has this id.")),
    "405": ("MethodNotAllowed", problem("Any method a path does not list.", "Problem", "Allow")),
    "408": ("RequestTimeout", problem("The body did not arrive within the body timeout.")),
    "409": (
        "Conflict",
        {
            **problem(
                "A request with this Idempotency-Key is still running (with Retry-After); or it ended without its"
                " response being saved, as when Redis failed over while it ran (no Retry-After: `detail` says"
                " what to do)."
            ),
            "headers": {"Retry-After": {**HEADERS["Retry-After"], "required": False}},
        },
    ),
    "412": ("PreconditionFailed", problem("The ETag is not one that If-Match names; nothing was written.")),
    "413": ("ContentTooLarge", problem("The body is over the size (or point count) limit.")),
    "415": ("UnsupportedMediaType", problem("The body is not in a media type this operation takes.")),
    "422": ("UnprocessableContent", problem("The request breaks the rules `errors` lists.", "ValidationProblem")),
    "429": (
        "TooManyRequests",
        problem("Over the rate limit.", "Problem", "Retry-After", "RateLimit", "RateLimit-Policy"),
    ),
    "503": (
        "Unavailable",
        problem(
            "Redis is unreachable or too slow; or it refuses writes (a read-only replica, failing to save, short"
            " of replicas); or too few replicas confirmed a write (REDIS_WAIT_REPLICAS): it may or may not"
            " have been applied, and repeating it is safe (a create with the same Idempotency-Key).",
            "Problem",
            "Retry-After",
        ),
    ),
    "507": (
        "InsufficientStorage",
        problem("Redis is out of memory and refuses writes; nothing was written.", "Problem", "Retry-After"),
    ),
}
NOT_MODIFIED = {
    "description": "The ETag is one that If-None-Match names.",
    "headers": {"ETag": ref("headers", "ETag"), "Cache-Control": ref("headers", "Cache-Control")},
}
# What every operation under /api/ may answer, and every one that reads a body besides.
_API_ERRORS = ("401", "403", "429", "503")
_BODY_ERRORS = ("400", "408", "413", "415", "422")
# And every one that writes.
_WRITE_ERRORS = ("507",)


def response(description: str, schema: str, *headers: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": ref("schemas", schema)}}}
    if headers:
        response["headers"] = {name: {**HEADERS[name], "required": name in required} for name in headers}
    return response


def versioned(description: str, schema: str) -> dict[str, Any]:
    return response(description, schema, "ETag", "Cache-Control", required=("ETag", "Cache-Control"))


def created_response(schema: str, parameter: str, *targets: str) -> dict[str, Any]:
    """201 with links to the operations on the new resource, for clients and schemathesis's stateful phase."""
    headers = ("Location", "ETag", "Cache-Control", "Idempotent-Replayed")
    created = response("Created (or replayed, for the same Idempotency-Key and body).", schema, *headers)
    for name in ("Location", "ETag"):
        created["headers"][name]["required"] = True
    links = {
        target[0].upper() + target[1:]: {"operationId": target, "parameters": {parameter: "$response.body#/id"}}
        for target in targets
    }
    return {**created, "links": links}


def operation(
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
        operation["parameters"] = [ref("parameters", name) for name in parameters]
    if body:
        schema, *media_types = body
        content = {media_type: {"schema": ref("schemas", schema)} for media_type in media_types or [JSON]}
        operation["requestBody"] = {"required": True, "content": content}
        errors = (*errors, *_BODY_ERRORS)
    if body or operation_id.startswith("delete"):
        errors = (*errors, *_WRITE_ERRORS)
    for status in sorted({*errors, *_API_ERRORS}):
        responses.setdefault(status, ref("responses", RESPONSES[status][0]))
    operation["responses"] = responses
    return operation
