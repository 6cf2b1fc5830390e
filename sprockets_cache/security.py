"""Who may write, how often anyone may call, and the headers every response carries."""

import asyncio
import hashlib
import hmac
import secrets

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sprockets_cache.connections import ERROR_REPLIES, UNAVAILABLE_OR_LATE, refusal
from sprockets_cache.problems import problem_response
from sprockets_cache.settings import Settings
from sprockets_cache.store import Store

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


def _known(key: str, digests: frozenset[str]) -> bool:
    """Constant time in the key: every digest is compared, whatever matches."""
    candidate = digest(key)
    return sum(hmac.compare_digest(candidate, known) for known in digests) > 0


class Guard:
    """Pure ASGI middleware for /api/: API keys (writes, or every call with private reads),
    then a per-client rate limit kept in Redis, so every API process shares it."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        client = self._client(scope)
        if client is None:
            response = problem_response(
                401,
                "Send a valid API key as `Authorization: Bearer <key>`.",
                headers={"WWW-Authenticate": 'Bearer realm="sprockets-cache"'},
            )
            await response(scope, receive, send)
            return
        if self.settings.rate_limit_per_s <= 0:
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

    def _client(self, scope: Scope) -> str | None:
        """Who is calling: "key:<digest prefix>" or "ip:<address>"; None when a needed key is missing or wrong."""
        digests = self.settings.api_keys
        needs_key = bool(digests) and (scope["method"] in WRITE_METHODS or self.settings.private_reads)
        scheme, _, key = Headers(scope=scope).get("authorization", "").partition(" ")
        key = key.strip()
        if digests and scheme.lower() == "bearer" and key and _known(key, digests):
            return "key:" + digest(key)[:16]
        if needs_key:
            return None
        address = scope.get("client") or ("unknown", 0)
        return f"ip:{address[0]}"


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
