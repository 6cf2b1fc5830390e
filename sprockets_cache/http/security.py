"""Who may write, how often anyone may call, and the headers every response carries."""

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sprockets_cache import access
from sprockets_cache.clock import now
from sprockets_cache.http.observability import REQUEST_ID
from sprockets_cache.http.problems import problem_response
from sprockets_cache.settings import Settings
from sprockets_cache.store.audit import AuditTrail
from sprockets_cache.store.connections import ERROR_REPLIES, UNAVAILABLE_OR_LATE, refusal
from sprockets_cache.store.keyring import Keyring, key_id
from sprockets_cache.store.store import Store

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# HTML pages load their scripts and styles from this origin only: no inline script.
_HTML_POLICY = (
    b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
# Anything else is data, never a page.
_DATA_POLICY = b"default-src 'none'; frame-ancestors 'none'"
_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
_HTML_HEADERS = [*_COMMON_HEADERS, (b"content-security-policy", _HTML_POLICY)]
_DATA_HEADERS = [*_COMMON_HEADERS, (b"content-security-policy", _DATA_POLICY)]


def new_key() -> tuple[str, str]:
    """A fresh API key and the SHA-256 hex digest to put in SPROCKETS_API_KEYS."""
    key = secrets.token_urlsafe(32)
    return key, digest(key)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Guard:
    """Pure ASGI middleware for /api/: API keys and their scopes (writes, or every call with private
    reads), then a per-client rate limit kept in Redis, so every API process shares it."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.limited = settings.rate_limit_per_s > 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        method, state = scope["method"], scope["state"]
        keyring: Keyring = state["keyring"]
        write = method in WRITE_METHODS
        needs_key = keyring.required and (write or self.settings.private_reads)
        trail: AuditTrail | None = state["audit"] if write else None
        if not needs_key and not self.limited and trail is None:
            await self.app(scope, receive, send)
            return
        found = access.target(scope["path"])
        digest_, scopes = _credential(scope, keyring) if keyring.keys else ("", None)
        if trail is None:
            await self._admit(scope, receive, send, found, digest_, scopes, needs_key)
            return
        status, location = 500, b""

        # A plain function that hands back send's awaitable, as in observability.RequestObserver.
        def seen(message: Message) -> Awaitable[None]:
            nonlocal status, location
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 201:  # a create: its Location names the new resource
                    location = next((value for name, value in message["headers"] if name == b"location"), b"")
            return send(message)

        try:
            await self._admit(scope, receive, seen, found, digest_, scopes, needs_key)
        finally:
            trail.record(_entry(scope, found, digest_, status, location))

    async def _admit(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        found: access.Target,
        digest_: str,
        scopes: frozenset[str] | None,
        needs_key: bool,
    ) -> None:
        """The request, unless its key is missing, unknown or short of a scope, or it is over the rate limit."""
        if needs_key:
            refused = self._refusal(scope, found, scopes)
            if refused is not None:
                await refused(scope, receive, send)
                return
        client = f"key:{key_id(digest_)}" if digest_ else f"ip:{_address(scope)}"
        await self._limited(client, scope, receive, send)

    def _refusal(self, scope: Scope, found: access.Target, scopes: frozenset[str] | None) -> Response | None:
        """401 without a known key, 403 naming the scope the key lacks, None when the key may go on."""
        if scopes is None:
            return problem_response(
                401,
                "Send a valid API key as `Authorization: Bearer <key>`.",
                headers={"WWW-Authenticate": 'Bearer realm="sprockets-cache"'},
            )
        needed = access.needed_scopes(scope["method"], found, self.settings.private_reads)
        if access.allows(scopes, needed):
            return None
        others = "".join(f" (or {scope})" for scope in needed[1:])
        detail = f"This API key lacks the scope {needed[0]}{others}, which {scope['method']} {scope['path']} needs."
        challenge = f'Bearer realm="sprockets-cache", error="insufficient_scope", scope="{needed[0]}"'
        return problem_response(403, detail, headers={"WWW-Authenticate": challenge})

    async def _limited(self, client: str, scope: Scope, receive: Receive, send: Send) -> None:
        """The request, unless `client` is over the rate limit (when one is set): then 429."""
        if not self.limited:
            await self.app(scope, receive, send)
            return
        store: Store = scope["state"]["store"]
        try:
            async with asyncio.timeout(self.settings.redis_timeout_s):
                allowed, wait_ms, left = await store.rate_limit(
                    client, self.settings.rate_limit_per_s, self.settings.rate_limit_burst
                )
        except UNAVAILABLE_OR_LATE:
            # The limiter is a guard, not a dependency: when Redis is away the handler answers 503 itself.
            await self.app(scope, receive, send)
            return
        except ERROR_REPLIES as error:
            # Redis refuses writes (its limiter script may write out of memory): reads go on, writes get
            # the refusal from the handler.
            if refusal(error) is None:
                raise
            await self.app(scope, receive, send)
            return
        policy = f"{self.settings.rate_limit_burst};w={max(1, round(1 / self.settings.rate_limit_per_s))}"
        if not allowed:
            retry_after = str(max(1, -(-wait_ms // 1000)))
            headers = {"Retry-After": retry_after, "RateLimit-Policy": policy, "RateLimit": f"r=0;t={retry_after}"}
            await problem_response(429, "Too many requests; slow down.", headers=headers)(scope, receive, send)
            return
        extra = [(b"ratelimit-policy", policy.encode()), (b"ratelimit", f"r={left}".encode())]
        await self.app(scope, receive, _with_headers(send, extra))


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _entry(scope: Scope, found: access.Target, digest_: str, status: int, location: bytes) -> list[str]:
    """The audit entry of a write (audit.FIELDS): nothing in it comes from the client but checked ids
    and the address."""
    if location:  # a create: the new resource's id ends its Location
        resource = location.rsplit(b"/", 1)[-1].decode("latin-1")
    else:
        resource = "-" if found.resource_id is None else str(found.resource_id)
    key = key_id(digest_) if digest_ else "anonymous"
    return [
        now(),
        key,
        _address(scope),
        scope["method"],
        found.route,
        resource,
        str(status),
        scope.get(REQUEST_ID, "-"),
    ]


def _credential(scope: Scope, keyring: Keyring) -> tuple[str, frozenset[str] | None]:
    """The digest of the bearer key and its scopes; ("", None) when there is no key we know."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            key = key.strip()
            if scheme.lower() != "bearer" or not key:
                return "", None
            candidate = digest(key)
            # A dict lookup is safe here: its timing depends on the digest of what the client sent,
            # which the client can compute itself, and a digest does not give away its key.
            scopes = keyring.keys.get(candidate)
            if scopes is None:
                return "", None
            keyring.used(candidate)
            return candidate, scopes
    return "", None


def _with_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *headers]
        await send(message)

    return wrapped


def response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The security headers to add to a response with these headers: nosniff, no framing, no referrer,
    and a Content-Security-Policy, strict for HTML pages and stricter still for data. (The request
    observer adds them, so every response passes one wrapper instead of two.)"""
    for name, value in headers:
        if name == b"content-type":
            return _HTML_HEADERS if value.startswith(b"text/html") else _DATA_HEADERS
    return _DATA_HEADERS
