"""Errors as application/problem+json (RFC 9457), and the handlers that make them."""

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sprockets_cache.errors import (
    BeforeRawWindow,
    CreateLost,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    NotFound,
    NotReplicated,
    SubscribersFull,
    TooManyPoints,
    VersionMismatch,
    WriteRefused,
)

MEDIA_TYPE = "application/problem+json"
# Seconds a client should wait before retrying when Redis is away.
RETRY_AFTER_S = 1
# Seconds a new event subscriber should wait when every subscriber connection is taken.
SUBSCRIBERS_RETRY_AFTER_S = 5


class Problem(Exception):
    """Raised by the HTTP layer to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers


def problem_response(
    status: int, detail: str, errors: list[dict[str, Any]] | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return Response(orjson.dumps(body), status, headers=headers, media_type=MEDIA_TYPE)


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc.status, exc.detail, exc.errors, exc.headers)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 404:
        detail = f"Nothing is at {request.url.path}."
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}."
    return problem_response(exc.status_code, detail, headers=exc.headers)


async def _not_found(request: Request, exc: Exception) -> Response:
    return problem_response(404, f"Nothing is at {request.url.path}.")


async def _version_mismatch(request: Request, exc: Exception) -> Response:
    return problem_response(412, "The resource has changed since the version named in If-Match.")


async def _in_progress(request: Request, exc: Exception) -> Response:
    if isinstance(exc, IdempotencyInProgress) and exc.ended:
        # Retrying with this key cannot help until its claim expires: no Retry-After.
        return problem_response(
            409,
            "The first request with this Idempotency-Key ended without its response being saved (Redis failed"
            " over or became unreachable while it ran), so it may or may not have created the resource. Look"
            " for it before creating it again, with a new Idempotency-Key; this one is held for up to a minute"
            " after the first request (web.IDEMPOTENCY_CLAIM_TTL_S).",
        )
    return problem_response(
        409, "A request with this Idempotency-Key is still running; retry later.", headers=_retry_after()
    )


async def _key_reused(request: Request, exc: Exception) -> Response:
    message = "was already used with a different request body"
    errors = [{"field": "header.Idempotency-Key", "message": message}]
    return problem_response(422, f"This Idempotency-Key {message}.", errors)


async def _too_many_points(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TooManyPoints)
    detail = f"The range holds {exc.points} points, more than the {exc.most} a response may hold."
    return problem_response(422, detail, errors=[{"field": "query.from", "message": "narrow the range from/to"}])


async def _before_raw_window(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BeforeRawWindow)
    setting = f" (POINTS_RETENTION_S={exc.retention_s})" if exc.retention_s else ""
    message = f"must be {exc.raw_from} or later: older points are trimmed, or kept only as sums{setting}"
    return problem_response(422, f"Every time {message}.", errors=[{"field": "body.time", "message": message}])


async def _subscribers_full(request: Request, exc: Exception) -> Response:
    detail = "Every connection for event subscribers is taken; retry later, or poll with If-None-Match."
    return problem_response(503, detail, headers={"Retry-After": str(SUBSCRIBERS_RETRY_AFTER_S)})


async def _unavailable(request: Request, exc: Exception) -> Response:
    request.state.metrics.redis_errors.inc()
    return problem_response(503, "The datastore is unavailable; retry shortly.", headers=_retry_after())


# Why Redis refuses writes, as a person can act on it: (status, detail, seconds to wait before a retry).
_REFUSED = {
    "out_of_memory": (507, "The datastore is out of memory and refuses writes", 30),
    "read_only": (503, "The datastore is a read-only replica just now, as during a failover", 1),
    "persistence_failing": (503, "The datastore refuses writes because it cannot save to disk", 30),
    "no_replicas": (503, "The datastore refuses writes because too few of its replicas are connected", 5),
}


async def _write_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WriteRefused)
    request.state.metrics.refused_writes.labels(exc.reason).inc()
    status, cause, retry_after_s = _REFUSED[exc.reason]
    detail = f"{cause}; nothing was written. Reads still work; retry the write later."
    return problem_response(status, detail, headers={"Retry-After": str(retry_after_s)})


async def _not_replicated(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotReplicated)
    request.state.metrics.unreplicated_writes.inc()
    detail = (
        f"The write may or may not have been applied: Redis took it, but {exc.confirmed} of the {exc.required} "
        "replicas required confirmed it in time, so a failover could lose it. Repeating the request is safe "
        "(a create with the same Idempotency-Key)."
    )
    return problem_response(503, detail, headers=_retry_after())


async def _create_lost(request: Request, exc: Exception) -> Response:
    request.state.metrics.unreplicated_writes.inc()
    detail = (
        "Nothing was created: a failover threw the create away before any replica had it. Repeating the "
        "request creates it (the Idempotency-Key is free again)."
    )
    return problem_response(503, detail, headers=_retry_after())


async def _server_error(request: Request, exc: Exception) -> Response:
    return problem_response(500, "The server failed to handle this request.")


def _retry_after() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_S)}


def exception_handlers(unavailable: tuple[type[Exception], ...]) -> dict[Any, Any]:
    """The handler table for Starlette; `unavailable` are the store's errors that mean 503."""
    handlers: dict[Any, Any] = {
        Problem: _problem,
        HTTPException: _http,
        NotFound: _not_found,
        VersionMismatch: _version_mismatch,
        IdempotencyInProgress: _in_progress,
        IdempotencyKeyReused: _key_reused,
        TooManyPoints: _too_many_points,
        BeforeRawWindow: _before_raw_window,
        SubscribersFull: _subscribers_full,
        WriteRefused: _write_refused,
        NotReplicated: _not_replicated,
        CreateLost: _create_lost,
        Exception: _server_error,
    }
    handlers.update({error: _unavailable for error in unavailable})
    return handlers
