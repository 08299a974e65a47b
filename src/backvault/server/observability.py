"""Request metrics for Prometheus and one JSON access log line per request.

Metric labels use the route template (``/v1/repos/{repo}/{kind}/{name}``), not the path,
so the number of series stays small and no repository or object name reaches them. Log
lines carry the path but never a header, so a token is never logged. A path that contains
a passkey ceremony id is logged as its route template instead.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ACCESS_LOGGER = "backvault.server.access"
UNMATCHED_ROUTE = "unmatched"
# Path parameters that are capabilities: a reader of the log could use one.
SECRET_PATH_PARAMETERS = ("{ceremony}",)


class Metrics:
    """The server's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "backvault_http_requests", "HTTP requests handled",
            ["method", "route", "status"], registry=self.registry,
        )
        self.duration = Histogram(
            "backvault_http_request_duration_seconds", "Time to handle an HTTP request",
            ["method", "route"], registry=self.registry,
        )
        self.bytes_received = Counter(
            "backvault_http_received_bytes", "Request body bytes received",
            ["route"], registry=self.registry,
        )
        self.bytes_sent = Counter(
            "backvault_http_sent_bytes", "Response body bytes sent",
            ["route"], registry=self.registry,
        )


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object, with the record's ``extra`` fields included."""

    # uvicorn adds "color_message", a copy of the message with terminal colour codes.
    _standard = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._standard and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """Send backvault's and uvicorn's logs to standard error as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("backvault", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


class RequestObserver:
    """ASGI middleware that times each HTTP request, counts its bytes and logs it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics
        self._logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        started = time.perf_counter()
        counts = {"status": 500, "received": 0, "sent": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counts["received"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                counts["status"] = message["status"]
            elif message["type"] == "http.response.body":
                counts["sent"] += len(message.get("body", b""))
            await send(message)

        try:
            await self._app(scope, counting_receive, counting_send)
        finally:
            self._record(scope, counts, time.perf_counter() - started)

    def _record(self, scope: Scope, counts: dict[str, int], seconds: float) -> None:
        route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
        method = scope["method"]
        status = counts["status"]
        self._metrics.requests.labels(method, route, str(status)).inc()
        self._metrics.duration.labels(method, route).observe(seconds)
        self._metrics.bytes_received.labels(route).inc(counts["received"])
        self._metrics.bytes_sent.labels(route).inc(counts["sent"])
        state = scope.get("state") or {}
        self._logger.info(
            "request",
            extra={
                "account_id": state.get("account_id"),
                "client": _client_address(scope),
                "method": method,
                "path": _loggable_path(scope["path"], route),
                "status": status,
                "bytes_received": counts["received"],
                "bytes_sent": counts["sent"],
                "duration_ms": round(seconds * 1000, 2),
            },
        )


def _loggable_path(path: str, route: str) -> str:
    """Return the path for the access log, or the route template when the path contains
    a secret: a passkey ceremony id is the only key to its ceremony."""
    if any(parameter in route for parameter in SECRET_PATH_PARAMETERS):
        return route
    return path


def _client_address(scope: Scope) -> str | None:
    # The peer's address as uvicorn reports it (behind a proxy, with --proxy-headers
    # and --forwarded-allow-ips, the address the proxy names).
    client = scope.get("client")
    return str(client[0]) if client else None
