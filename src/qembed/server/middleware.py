"""Two small ASGI middlewares (pure ASGI: no BaseHTTPMiddleware, which buffers responses and
breaks cancellation).

- ``RequestGate``: refuses requests that arrive after SIGTERM (503), collapses doubled slashes (``//v1/embeddings`` from a base_url that
  ends in ``/`` joined with ``/v1/...``), and enforces ``--payload-limit`` on the
  Content-Length header *and* on the bytes actually received (a chunked body has no
  Content-Length). The body is read here, once, and replayed to the app.
- ``Observe``: request id, metrics by route and status, in-flight gauge, and one log line
  per request (id, route, status, inputs, tokens, latency).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qembed.server.errors import APIError, error_response
from qembed.server.metrics import Metrics

log = logging.getLogger("qembed.server.access")
_SLASHES = re.compile(r"/{2,}")
_QUIET = {"/health", "/ready", "/metrics"}


class RequestGate:
    def __init__(
        self, app: ASGIApp, *, payload_limit: int, metrics: Metrics | None = None, draining: Callable[[], bool] = lambda: False
    ) -> None:
        self.app = app
        self.limit = payload_limit
        self.metrics = metrics
        self.draining = draining

    async def _refuse(self, scope: Scope, send: Send, err: APIError) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(kind=err.code or str(err.status)).inc()
        scope.setdefault("state", {})["error"] = err.message
        response = error_response(err)
        response.headers["Connection"] = "close"
        await response(scope, _never_receive, send)

    def _too_large(self, size: str) -> APIError:
        return APIError(
            413,
            f"The request body is {size} bytes; the limit is {self.limit} (--payload-limit, env QEMBED_PAYLOAD_LIMIT). "
            "Send fewer or shorter inputs per request, or raise the limit.",
            code="payload_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if "//" in path:
            scope["path"] = _SLASHES.sub("/", path)
            scope["raw_path"] = scope["path"].encode()
        if self.draining() and scope["path"] not in _QUIET:
            # After SIGTERM: requests that arrive now are refused; those already in go on.
            await self._refuse(scope, send, APIError(503, "The server is shutting down; retry on another instance.", type="server_error", code="shutting_down"))
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await self._refuse(scope, send, APIError(400, "The Content-Length header is not a number.", code="invalid_request"))
                return
            if length > self.limit:
                await self._refuse(scope, send, self._too_large(str(length)))
                return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.limit:
                await self._refuse(scope, send, self._too_large(f"more than {self.limit}"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _never_receive() -> Message:  # pragma: no cover - a refused request reads nothing
    return {"type": "http.disconnect"}


class Observe:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, known_paths: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
        normalized = _SLASHES.sub("/", scope["path"])
        return normalized if normalized in self.known_paths else "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")[:64]
        request_id = given if given and given.isprintable() else uuid.uuid4().hex[:16]
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - start
            route = self._route(scope)
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(seconds)
            level = logging.DEBUG if route in _QUIET else logging.INFO  # probes would drown the log
            if log.isEnabledFor(level):
                extra = f" user={state['user']!r}" if state.get("user") else ""
                extra += f" error={state['error']!r}" if state.get("error") else ""
                log.log(
                    level,
                    "request id=%s %s %s status=%d inputs=%s tokens=%s latency_ms=%.1f%s",
                    request_id, scope["method"], scope["path"], status,
                    state.get("inputs", "-"), state.get("tokens", "-"), seconds * 1000, extra,
                )
