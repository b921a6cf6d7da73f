"""Two small ASGI middlewares (pure ASGI: no BaseHTTPMiddleware, which buffers responses and
breaks cancellation).

- ``RequestGate``: refuses requests that arrive after SIGTERM (503), collapses doubled slashes (``//v1/embeddings`` from a base_url that
  ends in ``/`` joined with ``/v1/...``) and drops a trailing one (served, never redirected), and enforces ``--payload-limit`` on the
  Content-Length header *and* on the bytes actually received (a chunked body has no
  Content-Length). The body is read here, once, and replayed to the app -- but only after
  the API key is checked (a protected route without a valid key is a 401 before a byte of
  the body is read, so unauthenticated uploads cost nothing).
- ``Observe``: request id, metrics by route and status, in-flight gauge, and one log line
  per request (id, route, status, inputs, tokens, latency). The line is structured and
  injection-proof: a request id a client sends is used only when it is 1-64 characters of
  ``[A-Za-z0-9._-]`` (otherwise one is generated), and the path (decoded, so ``%0a`` is a
  newline) and every other value are escaped (``path="/a\\nb"``). A client that goes away
  before its answer (an aborted upload too) is a 499, a body that stalls past
  ``--request-read-timeout`` a 408: client errors, not 500s.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qembed.server.auth import check_authorization
from qembed.server.errors import APIError, error_response
from qembed.server.metrics import Metrics

log = logging.getLogger("qembed.server.access")
_SLASHES = re.compile(r"/{2,}")
_QUIET = {"/health", "/ready", "/metrics"}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PLAIN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: logged as is, unless it has " \\ or =
CLIENT_CLOSED = 499  # nginx's status for a client that went away before its answer
READ_TIMEOUT = 408


def log_value(value: object) -> str:
    """One field of the access log line: plain tokens as they are, anything else JSON-quoted
    (newlines, quotes, spaces, control and non-ASCII characters escaped), so that no value
    can end the line or forge a field."""
    text = str(value)
    if _PLAIN.fullmatch(text) and not any(c in text for c in '"\\='):
        return text
    return json.dumps(text)  # ensure_ascii: non-ASCII and lone surrogates are \\uXXXX


def request_id_of(headers: dict[bytes, bytes]) -> str:
    """The client's X-Request-Id when it is a safe token, else a new one (never a raw echo)."""
    given = headers.get(b"x-request-id", b"").decode("latin-1")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]


class RequestGate:
    def __init__(
        self,
        app: ASGIApp,
        *,
        payload_limit: int,
        metrics: Metrics | None = None,
        draining: Callable[[], bool] = lambda: False,
        api_keys: list[bytes] | None = None,
        protected: set[str] | None = None,
    ) -> None:
        self.app = app
        self.limit = payload_limit
        self.metrics = metrics
        self.draining = draining
        self.api_keys = api_keys or []
        self.protected = protected or set()

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
        if "//" in path or (path.endswith("/") and path != "/"):
            # //v1/embeddings and /v1/embeddings/ are served as /v1/embeddings, not
            # redirected: a 307 would be answered before auth, with a Location built from
            # the client's Host header.
            scope["path"] = _SLASHES.sub("/", path).rstrip("/") or "/"
            scope["raw_path"] = scope["path"].encode("utf-8", "surrogateescape")
        if self.draining() and scope["path"] not in _QUIET:
            # After SIGTERM: requests that arrive now are refused; those already in go on.
            await self._refuse(
                scope,
                send,
                APIError(
                    503,
                    "The server is shutting down; retry on another instance.",
                    type="server_error",
                    code="shutting_down",
                ),
            )
            return
        headers = dict(scope.get("headers") or [])
        if self.api_keys and scope["method"] != "OPTIONS" and scope["path"] in self.protected:
            # Before any receive(): an unauthenticated upload is refused unread (and the
            # connection closed, so the rest of it is never buffered).
            try:
                check_authorization(
                    headers[b"authorization"].decode("latin-1") if b"authorization" in headers else None,
                    self.api_keys,
                )
            except APIError as err:
                await self._refuse(scope, send, err)
                return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await self._refuse(
                    scope,
                    send,
                    APIError(400, "The Content-Length header is not a number.", code="invalid_request"),
                )
                return
            if length > self.limit:
                await self._refuse(scope, send, self._too_large(str(length)))
                return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # An aborted upload: the client's doing (Observe logs and counts it as 499).
                scope.setdefault("state", {})["disconnected"] = True
                if self.metrics is not None:
                    self.metrics.errors.labels(kind="client_closed_request").inc()
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
        request_id = request_id_of(headers)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            if not started and state.get("read_timeout"):
                status = READ_TIMEOUT
            elif not started and state.get("disconnected"):
                status = CLIENT_CLOSED
            seconds = time.perf_counter() - start
            route = self._route(scope)
            self.metrics.requests.labels(route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(seconds)
            level = logging.DEBUG if route in _QUIET else logging.INFO  # probes would drown the log
            if log.isEnabledFor(level):
                extra = f" user={log_value(state['user'])}" if state.get("user") else ""
                extra += f" error={log_value(state['error'])}" if state.get("error") else ""
                log.log(
                    level,
                    "request id=%s method=%s path=%s status=%d inputs=%s tokens=%s latency_ms=%.1f%s",
                    request_id,
                    log_value(scope["method"]),
                    log_value(scope["path"]),
                    status,
                    log_value(state.get("inputs", "-")),
                    log_value(state.get("tokens", "-")),
                    seconds * 1000,
                    extra,
                )
