"""What every handler does with a request: read and validate it, and answer in JSON."""

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sprockets_cache.deadlines import Deadlines
from sprockets_cache.errors import IdempotencyInProgress, IdempotencyKeyReused
from sprockets_cache.http.problems import Problem
from sprockets_cache.http.read_cache import ReadCache
from sprockets_cache.models import MAX_ID, MAX_TIME, error_list, validated
from sprockets_cache.settings import Settings
from sprockets_cache.store.store import Store

Model = TypeVar("Model", bound=BaseModel)

JSON = "application/json"
_JSON_BYTES = JSON.encode()
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# A cursor is the last id of a page in hex: every string of this form is one (openapi.py says so too).
CURSOR_PATTERN = "[0-9a-f]{1,16}"
# What the conditional headers and Idempotency-Key must look like; openapi.py publishes the same patterns.
# RFC 9110's entity tags (ours are digits, but any well-formed tag is a tag that does not match) or `*`.
_ENTITY_TAG = r'(?:W/)?"[\x21\x23-\x7e]*"'
ETAGS_PATTERN = rf"\*|{_ENTITY_TAG}(?:[ \t]*,[ \t]*{_ENTITY_TAG})*"
# Visible ASCII, spaces inside only: HTTP drops them at either end, so the key would not be the one sent.
IDEMPOTENCY_KEY_PATTERN = r"[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?"
_ETAGS = re.compile(ETAGS_PATTERN)
# One tag of a valid list: a tag may hold a comma, so the list is not split on commas.
_ETAG = re.compile(rf"\*|{_ENTITY_TAG}")
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
IDEMPOTENCY_TTL_S = 24 * 3600
# How long a first request may hold its Idempotency-Key before a retry may take over.
IDEMPOTENCY_CLAIM_TTL_S = 60


# The lifespan's state, straight from the scope: request.state would build a State object per request.
def store(request: Request) -> Store:
    return request.scope["state"]["store"]  # type: ignore[no-any-return]


def settings(request: Request) -> Settings:
    return request.scope["state"]["settings"]  # type: ignore[no-any-return]


def read_cache(request: Request) -> ReadCache:
    return request.scope["state"]["read_cache"]  # type: ignore[no-any-return]


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type=JSON)


async def read_json(request: Request, limit_bytes: int, media_types: Collection[str] = (JSON,)) -> Any:
    """The parsed body: 415 for another media type, 413 past the limit (before reading it whole),
    408 when it trickles in slower than the body timeout, 400 if malformed."""
    content_type, declared = b"", b""
    for name, value in request.scope["headers"]:  # one pass, where Headers.get scans once per name
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            declared = value
    if content_type.split(b";")[0].strip().lower().decode("latin-1") not in media_types:
        raise Problem(415, f"Send the body as {' or '.join(media_types)}.")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise Problem(413, f"The body is over the limit of {limit_bytes} bytes.")
    body = bytearray()
    deadlines: Deadlines = request.scope["state"]["deadlines"]
    task = deadlines.start(settings(request).body_timeout_s)
    try:
        # The ASGI messages themselves: request.stream() wraps them in an async generator, a few µs.
        more = True
        while more:
            message = await request.receive()
            if message["type"] != "http.request":
                raise ClientDisconnect
            body += message.get("body", b"")
            if len(body) > limit_bytes:
                raise Problem(413, f"The body is over the limit of {limit_bytes} bytes.")
            more = message.get("more_body", False)
    except asyncio.CancelledError as error:
        if deadlines.expired(task):
            raise Problem(408, "The body did not arrive in time.", headers={"Connection": "close"}) from error
        raise
    finally:
        # The request's time for Redis starts again now that the body is in.
        deadlines.start(settings(request).redis_timeout_s)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise Problem(400, f"The body is not valid JSON: {error}.") from error


def validate(model: type[Model], data: Any) -> Model:
    try:
        return validated(model, data)
    except ValidationError as error:
        raise Problem(422, "The body breaks the rules below.", errors=error_list(error)) from error


def path_id(request: Request, name: str) -> int:
    """The id in the path; ids that cannot exist are 404 without asking Redis."""
    value: int = request.path_params[name]
    if not 1 <= value <= MAX_ID:
        raise Problem(404, f"Nothing is at {request.url.path}.")
    return value


def _whole_number(text: str) -> int | None:
    """`text` as an int if it is ASCII digits of a number below 10**20; str.isdigit() alone also lets
    through "²" (which int() refuses) and numbers too long for int() to parse."""
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0")
    return int(digits or "0") if len(digits) <= 20 else None


def _query_param(request: Request, name: str) -> str | None:
    # Most reads have no query string: then there is nothing to parse (QueryParams would still be built).
    return request.query_params.get(name) if request.scope["query_string"] else None


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = _query_param(request, name)
    if raw is None:
        return default
    value = _whole_number(raw)
    if value is None or not low <= value <= high:
        message = f"must be a whole number from {low} to {high}"
        raise Problem(
            422, f"Query parameter {name} {message}.", errors=[{"field": f"query.{name}", "message": message}]
        )
    return value


def time_range(request: Request) -> tuple[int, int]:
    """`from` and `to`, both inclusive, in unix seconds."""
    first = _query_int(request, "from", 0, 0, MAX_TIME)
    last = _query_int(request, "to", MAX_TIME, 0, MAX_TIME)
    if first > last:
        message = "must not be after to"
        raise Problem(422, f"Query parameter from {message}.", errors=[{"field": "query.from", "message": message}])
    return first, last


def bucket_width(request: Request) -> int | None:
    """`bucket`: sum points per this many seconds (None: every point)."""
    return _query_int(request, "bucket", 0, 1, MAX_TIME) or None


def page(request: Request) -> tuple[int, int]:
    """(the id to continue after, limit) from `cursor` and `limit`."""
    limit = _query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    cursor = _query_param(request, "cursor")
    if cursor is None:
        return 0, limit
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise Problem(400, "The cursor is not one this API gave out.")
    # Past MAX_ID there is nothing: an empty last page.
    return int(cursor, 16), limit


def _cursor(after: int) -> str:
    """Opaque to clients: the last id of the page, so adds and deletes never shift a page."""
    return f"{after:x}"


def page_response(request: Request, name: str, items: Any, after: int | None) -> Response:
    """A page of a list: `{name: items, "next_cursor"}`, and a `Link: rel="next"` when there is more.
    `items`: a list, or its JSON as an orjson.Fragment."""
    if after is None:
        return json_response({name: items, "next_cursor": None})
    cursor = _cursor(after)
    query = urlencode({**request.query_params, "cursor": cursor})
    return json_response(
        {name: items, "next_cursor": cursor}, headers={"Link": f'<{request.url.path}?{query}>; rel="next"'}
    )


def header(request: Request, name: bytes) -> str | None:
    """A request header's first value (`name` in lower case, as ASGI gives names); request.headers
    would build a Headers object and scan it in more steps."""
    headers: list[tuple[bytes, bytes]] = request.scope["headers"]
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def etag(version: int) -> str:
    return f'"{version}"'


def _tags(request: Request, name: bytes) -> list[str] | None:
    """The entity tags (or `*`) a conditional header lists; None without the header, 400 when malformed."""
    value = header(request, name)
    if value is None:
        return None
    if not _ETAGS.fullmatch(value.strip()):
        title = name.decode().title()
        raise Problem(400, f'{title} must be * or entity tags separated by commas, such as "3", "4".')
    return _ETAG.findall(value)


def if_match(request: Request) -> list[int] | None:
    """The versions `If-Match` accepts (strong comparison), None when any version will do."""
    tags = _tags(request, b"if-match")
    if tags is None or tags == ["*"]:
        return None
    versions = (_whole_number(tag[1:-1]) for tag in tags if tag[0] == '"')
    return [version for version in versions if version is not None]


def not_modified(request: Request, version: int) -> bool:
    """True when `If-None-Match` names this version (weak comparison) or is `*`."""
    tags = _tags(request, b"if-none-match")
    return tags is not None and any(tag == "*" or tag.removeprefix("W/") == etag(version) for tag in tags)


class Answer(Response):
    """A read's encoded answer with its ETag, or 304 without a body, as versioned_response gives them, made
    without Response's __init__ (its rendering and header checks), a tenth of a read from memory."""

    def __init__(self, body: bytes, version: int, not_modified: bool) -> None:
        tag = b'"%d"' % version
        if not_modified:
            self.status_code, self.body = 304, b""
            self.raw_headers = [(b"etag", tag), (b"cache-control", b"no-cache")]
        else:
            self.status_code, self.body = 200, body
            self.raw_headers = [
                (b"content-length", b"%d" % len(body)),
                (b"content-type", _JSON_BYTES),
                (b"etag", tag),
                (b"cache-control", b"no-cache"),
            ]
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


def answer(request: Request, body: bytes, version: int) -> Response:
    return Answer(body, version, not_modified(request, version))


def versioned_response(
    request: Request, body: Any, version: int, status: int = 200, location: str | None = None
) -> Response:
    # Only a read may answer 304: a write that has happened must say so.
    if status == 200 and request.method in ("GET", "HEAD") and not_modified(request, version):
        response = Response(status_code=304)
    else:
        response = Response(orjson.dumps(body), status, media_type=JSON)
    # Raw headers: Response(headers=...) would encode and check a dict we know to be well formed.
    response.raw_headers += [(b"etag", etag(version).encode()), (b"cache-control", b"no-cache")]
    if location is not None:
        response.raw_headers.append((b"location", location.encode()))
    return response


async def idempotent(
    request: Request, scope: str, body: Any, create: Callable[[str | None], Awaitable[Response]]
) -> Response:
    """Run `create` once per Idempotency-Key: a retry with the same body gets the first response again.

    `create(idempotency)`: None without a key, and then its write waits for replicas itself; else the
    key's digest, and saving the response waits for replicas instead. Were the create to wait and fail
    to, no record would say what it created, and a retry would create it again."""
    key = header(request, b"idempotency-key")
    if key is None:
        return await create(None)
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise Problem(400, "Idempotency-Key must be 1 to 255 visible ASCII characters (spaces only inside).")
    key_digest = idempotency_digest(request.headers.get("authorization", ""), key)
    body_digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    # By then this request has ended, one way or another: its time for Redis is up (plus the deadline's
    # lateness, and clocks of API processes that differ by a second).
    ended_by = time.time() + settings(request).redis_timeout_s + 2
    claim = orjson.dumps({"body": body_digest, "ended_by": ended_by})
    held = await store(request).claim_idempotency(scope, key_digest, claim, IDEMPOTENCY_CLAIM_TTL_S)
    if held is not None:
        kept = orjson.loads(held)
        replay = _replay(kept, body_digest)
        created = _created_id(kept["headers"])
        await store(request).confirm_idempotency(scope, key_digest, held, created, kept.get("tagged", False))
        return replay
    try:
        response = await create(key_digest)
    except BaseException:
        # Best effort: if Redis is away the claim expires by itself.
        with contextlib.suppress(Exception):
            await store(request).release_idempotency(scope, key_digest)
        raise
    headers = {name: response.headers[name] for name in ("location", "etag") if name in response.headers}
    record = {
        "body": body_digest,
        "status": response.status_code,
        "headers": headers,
        "response": bytes(response.body).decode(),
    }
    created = _created_id(headers)
    if created is not None and store(request).tags_creates:
        record["tagged"] = True  # what it created keeps the key's tag: a replay looks for it
    await store(request).save_idempotency(scope, key_digest, orjson.dumps(record), IDEMPOTENCY_TTL_S, created)
    return response


def idempotency_digest(credential: str, key: str) -> str:
    """What an Idempotency-Key is kept under: per credential (the Authorization header), so two clients
    with different API keys never share one."""
    return hashlib.sha256(f"{credential}\n{key}".encode()).hexdigest()


def _created_id(headers: Mapping[str, str]) -> int | None:
    """The id of what a create made, from its Location: the store waits for replicas of its master too."""
    location = headers.get("location")
    return None if location is None else int(location.rsplit("/", 1)[1])


def _replay(record: dict[str, Any], body_digest: str) -> Response:
    if record["body"] != body_digest:
        raise IdempotencyKeyReused
    if "status" not in record:
        # A claim without a response: the first request runs, or ended without saving one.
        raise IdempotencyInProgress(ended=time.time() > record.get("ended_by", float("inf")))
    headers = {**record["headers"], "Idempotent-Replayed": "true"}
    return Response(record["response"], record["status"], headers=headers, media_type=JSON)
