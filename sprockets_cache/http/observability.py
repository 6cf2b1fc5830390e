"""What the service shows about itself: Prometheus metrics and one JSON log line per request."""

import asyncio
import itertools
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sprockets_cache.clock import utc_stamp

ACCESS_LOGGER = "sprockets_cache.access"
# Set (before prometheus_client is imported) for several worker processes: see cli._shared_metrics.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Request ids: a random prefix per process and a counter, unique without a syscall per request.
_ID_PREFIX = uuid.uuid4().hex[:12] + "-"
_ids = itertools.count(1)
# A client's X-Request-ID is kept only if it looks like an id, so logs cannot be forged through it.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Where the request id waits in the ASGI scope for the middleware inside (the audit trail).
REQUEST_ID = "sprockets.request_id"


class Metrics:
    """The service's metrics, in a registry of their own (one per app, so tests can make many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Its _count series is the request counter: requests by method, route template and status.
        self.requests = Histogram(
            "http_request_duration_seconds",
            "Time to answer a request, by method, route template and status",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "redis_errors", "Requests failed because Redis was unreachable or too slow", registry=self.registry
        )
        self.refused_writes = Counter(
            "redis_refused_writes",
            "Writes Redis refused, by reason: out_of_memory, read_only, persistence_failing, no_replicas",
            ["reason"],
            registry=self.registry,
        )
        self.unreplicated_writes = Counter(
            "redis_unreplicated_writes",
            "Writes answered 503 because fewer replicas than REDIS_WAIT_REPLICAS confirmed them in time",
            registry=self.registry,
        )
        self.points_written = Counter("points_written", "Production points written", registry=self.registry)
        # The read cache (read_cache.py): answers sent from memory, read from Redis, pushed out, dropped.
        self.read_cache_hits = Counter("read_cache_hits", "Answers sent from the read cache", registry=self.registry)
        self.read_cache_misses = Counter(
            "read_cache_misses",
            "Reads the read cache could not answer (not held, or held at another version)",
            registry=self.registry,
        )
        self.read_cache_invalidations = Counter(
            "read_cache_invalidations",
            "Keys Redis said changed (client tracking), each dropping the answers read from it",
            registry=self.registry,
        )
        self.read_cache_flushes = Counter(
            "read_cache_flushes",
            "Times the read cache dropped everything, by reason: connection, failover, topology, flushall, "
            "tracking_started, refused",
            ["reason"],
            registry=self.registry,
        )
        # livemin: with several workers, 0 when any worker's tracking is down.
        self.read_cache_tracking = Gauge(
            "read_cache_tracking",
            "1 while Redis's invalidations reach this process on every node (client tracking), else 0",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self.read_cache_evictions = Counter(
            "read_cache_evictions",
            "Answers pushed out of the read cache to keep it under READ_CACHE_MB",
            registry=self.registry,
        )
        # livesum: with several workers, /metrics shows what the running ones hold together.
        self.read_cache_bytes = Gauge(
            "read_cache_bytes",
            "Bytes the read cache holds (its answers and their bookkeeping)",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        # Fair admission (admission.py): API requests waiting for their turn, how long they waited, and
        # those answered 503 at once.
        self.queued = Gauge(
            "requests_queued", "API requests waiting for a turn", registry=self.registry, multiprocess_mode="livesum"
        )
        self.waited = Histogram(
            "request_queue_wait_seconds",
            "Time an API request waited for its turn, of those that waited",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.shed = Counter(
            "requests_shed",
            "API requests answered 503 at once at capacity, by reason: queue_full, waited_too_long",
            ["reason"],
            registry=self.registry,
        )
        # labels() takes a lock and hashes its arguments: a request looks its series up here instead.
        self._series: dict[tuple[str, str, int], Any] = {}

    def exposed(self) -> CollectorRegistry:
        """What /metrics shows: this registry, or every worker's metrics when workers share a directory."""
        if MULTIPROCESS_DIR not in os.environ:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry

    def stopped(self) -> None:
        """At shutdown: with several workers, this one's live gauges leave the sums /metrics shows."""
        if MULTIPROCESS_DIR in os.environ:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def observe(self, method: str, route: str, status: int, duration_s: float) -> None:
        series = self._series.get((method, route, status))
        if series is None:
            series = self._series[method, route, status] = self.requests.labels(method, route, str(status))
        series.observe(duration_s)


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.state.metrics
    return Response(generate_latest(metrics.exposed()), media_type=CONTENT_TYPE_LATEST)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields."""

    # color_message: uvicorn adds a copy of its message with terminal colours.
    _standard = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": utc_stamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({key: value for key, value in vars(record).items() if key not in self._standard})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)


class AccessLog:
    """One JSON line per request on stderr, in the same shape as JSONFormatter's lines.

    Lines are buffered and written at most FLUSH_S later (or when BUFFER_BYTES fill): a line
    through `logging` costs more than the rest of a cached read, this costs a few microseconds.
    """

    FLUSH_S = 0.1
    BUFFER_BYTES = 64 * 1024

    def __init__(self, sink: Callable[[bytes], None] | None = None) -> None:
        self.sink = sink or _write_stderr
        self._buffer = bytearray()
        self._flush_scheduled = False

    def request(self, method: str, route: str, path: str, status: int, duration_s: float, request_id: str) -> None:
        # An f-string, not a dict through orjson: a third of the cost. Only the path needs escaping; the
        # method and request id are checked, the route is ours.
        self._buffer += (
            f'{{"time":"{utc_stamp(time.time())}","level":"info","logger":"{ACCESS_LOGGER}",'
            f'"message":"request","method":"{method}","route":"{route}","path":{orjson.dumps(path).decode()},'
            f'"status":{status},"duration_ms":{int(duration_s * 1e6) / 1000},"request_id":"{request_id}"}}\n'
        ).encode()
        if len(self._buffer) >= self.BUFFER_BYTES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self.FLUSH_S, self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            self.sink(data)


def _write_stderr(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(2, view) :]


class RequestObserver:
    """Pure ASGI middleware: a request id, the security headers, a metric sample and an access log
    line for every request."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        access_log: AccessLog | None,
        add_headers: Callable[[list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]],
    ) -> None:
        """`add_headers` gives the headers to add to a response (the security headers), from its own."""
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.add_headers = add_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = scope[REQUEST_ID] = _request_id(scope)
        status = 500

        # A plain function that hands back send's awaitable: an `async def` would add a coroutine a message.
        def send_with_id(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", [])
                message["headers"] = [*headers, *self.add_headers(headers), (b"x-request-id", request_id.encode())]
            return send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration_s = time.perf_counter() - start
            route = scope.get("route")
            # The route's template, not the path: ids in paths would make a metric series per id.
            template = route.path if route is not None else "unmatched"
            # Clients choose the method: anything unusual shares one series.
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.observe(method, template, status, duration_s)
            if self.access_log is not None:
                self.access_log.request(method, template, scope["path"], status, duration_s, request_id)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(candidate):
                return candidate
    return f"{_ID_PREFIX}{next(_ids):x}"
