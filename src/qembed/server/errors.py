"""Every error the server sends, in OpenAI's shape: ``{"error": {message, type, param, code}}``.

Why one place: clients (the OpenAI SDK, LangChain, curl users) read ``error.message``;
if FastAPI's own 422/404/405 bodies or a bare 500 leaked through, they would get a
different shape for each mistake. So qembed's error classes, FastAPI/pydantic validation
errors, Starlette's HTTP errors and anything unexpected all end here, and the status for
each qembed error class is chosen in ``STATUS`` below and nowhere else.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from qembed.errors import (
    ClientDisconnected,
    ForeignTokenIds,
    IndexBusy,
    IndexDamaged,
    InputError,
    InputTooLong,
    ModelError,
    ModelOutputError,
    ModelRunError,
    NotFound,
    QembedError,
    QueueFull,
    RequestTooLarge,
    Unavailable,
    describe_validation_errors,
)

log = logging.getLogger(__name__)

INVALID = "invalid_request_error"
SERVER = "server_error"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


class APIError(Exception):
    """An HTTP error with OpenAI fields, raised anywhere in the server."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


# qembed error class -> (status, OpenAI type). First match wins: subclasses first.
STATUS: list[tuple[type[QembedError], int, str]] = [
    (InputTooLong, 400, INVALID),
    (ForeignTokenIds, 400, INVALID),
    (NotFound, 404, INVALID),
    (RequestTooLarge, 413, INVALID),
    (ClientDisconnected, 499, INVALID),
    (InputError, 400, INVALID),
    (QueueFull, 429, "rate_limit_error"),
    (Unavailable, 503, SERVER),
    (IndexDamaged, 503, SERVER),
    (IndexBusy, 503, SERVER),
    (ModelOutputError, 500, SERVER),
    (ModelRunError, 500, SERVER),
    (ModelError, 500, SERVER),
]


def from_qembed(exc: QembedError) -> APIError:
    """The HTTP form of a qembed error (status from ``STATUS``; 500 for anything else)."""
    status, kind = next(((s, t) for cls, s, t in STATUS if isinstance(exc, cls)), (500, SERVER))
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFull) else None
    return APIError(status, exc.message, type=kind, param=exc.param, code=exc.code, headers=headers)


def error_response(err: APIError) -> Response:
    body = {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}
    return Response(
        orjson.dumps(body), status_code=err.status, media_type="application/json", headers=err.headers
    )


def count(request: Request, err: APIError) -> None:
    """Errors by kind: the ``code`` (or the status when there is none)."""
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(kind=err.code or str(err.status)).inc()


def _respond(request: Request, err: APIError) -> Response:
    count(request, err)
    request.state.error = err.message
    return error_response(err)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into an OpenAI error body."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> Response:
        return _respond(request, exc)

    @app.exception_handler(QembedError)
    async def _qembed_error(request: Request, exc: QembedError) -> Response:
        err = from_qembed(exc)
        if err.status >= 500:
            log.error("request failed: %s", exc.message)
        return _respond(request, err)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        message, param = describe_validation_errors(list(exc.errors()))
        return _respond(request, APIError(400, message, param=param, code="invalid_request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            message, code = (
                f"No route {request.method} {request.url.path}; see /docs for the routes.",
                "not_found",
            )
        elif exc.status_code == 405:
            message, code = f"{request.method} is not allowed on {request.url.path}.", "method_not_allowed"
        else:
            message, code = str(exc.detail), None
        kind = INVALID if exc.status_code < 500 else SERVER
        return _respond(
            request, APIError(exc.status_code, message, type=kind, code=code, headers=dict(exc.headers or {}))
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _respond(
            request,
            APIError(
                500,
                f"Internal server error ({type(exc).__name__}); see the server log.",
                type=SERVER,
                code="internal_error",
            ),
        )
