"""The OpenAPI 3.1 document, built once at start-up from the pydantic models that validate requests.

Schemas come from `model_json_schema()`; the bounds of path and query parameters from the same
constants and types the handlers check them with (openapi_components.py). Change a model and the
document follows.
"""

from typing import Any

import orjson

from sprockets_cache.http.openapi_components import (
    HEADERS,
    NOT_MODIFIED,
    PARAMETERS,
    RESPONSES,
    created_response,
    operation,
    problem,
    response,
    schemas,
    versioned,
)
from sprockets_cache.http.sprockets import MERGE_PATCH
from sprockets_cache.http.web import JSON

API = "/api/v1"
DESCRIPTION = """Sprocket factory production data and sprocket types, kept in Redis.

Every error is `application/problem+json` (RFC 9457). A method a path does not list gets 405 with `Allow`.
Integers are written as JSON integers: `5`, not `5.0`. When API keys are configured, writes need
`Authorization: Bearer <key>` (reads too, with private reads), and a key without the scope a request
needs gets 403 naming it (scopes: admin, sprockets, factories, factory:<id>, read); when a rate limit is
configured, `/api/` responses carry `RateLimit` and `RateLimit-Policy`, and a client over it gets 429 with
`Retry-After`."""


def _sprocket_paths() -> dict[str, Any]:
    created = created_response(
        "Sprocket", "sprocket_id", "getSprocket", "replaceSprocket", "patchSprocket", "deleteSprocket"
    )
    written = versioned("The sprocket as written.", "Sprocket")
    kept_changing = problem("The sprocket kept changing while the patch was applied; retry it.")
    conditional = ("sprocket_id", "If-Match")
    return {
        f"{API}/sprockets": {
            "get": operation(
                "listSprockets",
                "Sprockets in id order, a page at a time",
                {"200": response("A page of sprockets.", "SprocketPage", "Link")},
                ("400", "422"),
                ("limit", "cursor"),
            ),
            "post": operation(
                "createSprocket", "Create a sprocket", {"201": created}, ("409",), ("Idempotency-Key",), ("SprocketIn",)
            ),
        },
        f"{API}/sprockets/{{sprocket_id}}": {
            "get": operation(
                "getSprocket",
                "A sprocket",
                {"200": versioned("The sprocket.", "Sprocket"), "304": NOT_MODIFIED},
                ("400", "404"),
                ("sprocket_id", "If-None-Match"),
            ),
            "put": operation(
                "replaceSprocket", "Replace a sprocket", {"200": written}, ("404", "412"), conditional, ("SprocketIn",)
            ),
            "patch": operation(
                "patchSprocket",
                "Change some fields of a sprocket (JSON merge patch)",
                {"200": written, "409": kept_changing},
                ("404", "412"),
                conditional,
                ("SprocketPatch", MERGE_PATCH, JSON),
            ),
            "delete": operation(
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
    created = created_response("Factory", "factory_id", "getFactory", "getFactorySummary", "writeChartData")
    read = ("factory_id", "from", "to", "If-None-Match")
    return {
        f"{API}/factories": {
            "get": operation(
                "listFactories",
                "Factories in id order with their chart data, a page at a time",
                {"200": response("A page of factories.", "FactoryPage", "Link")},
                ("400", "422"),
                ("limit", "cursor", "from", "to", "bucket"),
            ),
            "post": operation(
                "createFactory", "Create a factory", {"201": created}, ("409",), ("Idempotency-Key",), ("FactoryIn",)
            ),
        },
        item: {
            "get": operation(
                "getFactory",
                "A factory with its chart data",
                {"200": versioned("The factory.", "Factory"), "304": NOT_MODIFIED},
                ("400", "404", "422"),
                (*read, "bucket"),
            ),
        },
        f"{item}/chart_data": {
            "post": operation(
                "writeChartData",
                "Write points; a point at an existing time replaces it",
                {"200": response("The points written.", "Written", "ETag", required=("ETag",))},
                ("404",),
                ("factory_id",),
                ("ChartData",),
            ),
        },
        f"{item}/events": {
            "get": operation(
                "factoryEvents",
                "Server-Sent Events: a `points` event, data `{version, resolution_s, chart_data}`, "
                "for each write from now on",
                {"200": {"description": "An endless stream.", "content": {"text/event-stream": {"schema": {}}}}},
                ("400", "404"),
                ("factory_id", "Last-Event-ID"),
            ),
        },
        f"{item}/summary": {
            "get": operation(
                "getFactorySummary",
                "Totals and attainment over the points in a time range",
                {"200": versioned("The summary.", "Summary"), "304": NOT_MODIFIED},
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

    unavailable = response(
        "Redis does not answer, or refuses writes.", "Readiness", "Retry-After", required=("Retry-After",)
    )
    document = {"description": "OpenAPI 3.1.", "content": {JSON: {"schema": {"type": "object"}}}}
    return {
        "/": get("dashboard", "The dashboard: production charts", {"200": text("text/html", "A page.")}),
        "/health": get("health", "Liveness; does not ask Redis", {"200": response("Alive.", "Health")}),
        "/ready": get(
            "ready", "Whether Redis takes writes", {"200": response("Ready.", "Readiness"), "503": unavailable}
        ),
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
            "schemas": schemas(),
            "parameters": PARAMETERS,
            "headers": HEADERS,
            "responses": dict(RESPONSES.values()),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key."}},
        },
    }


def document_bytes(api_keys: bool = False, private_reads: bool = False) -> bytes:
    return orjson.dumps(document(api_keys, private_reads))
