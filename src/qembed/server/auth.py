"""Bearer-token check for the routes that compute (/v1/*, /embeddings, /embed, /tokenize).

/health, /ready and /metrics stay open so that load balancers and Prometheus need no
secret. With no key configured every token is accepted (the OpenAI SDK insists on
sending one; "EMPTY" is the convention). Keys are compared with ``hmac.compare_digest``
against every configured key, so the time taken says nothing about how close a guess was.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

from fastapi import Request

from qembed.server.errors import APIError


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_authorization(header: str | None, keys: list[bytes]) -> None:
    """401 (``APIError``) unless the ``Authorization`` header carries one of ``keys`` (when any is set)."""
    if not keys:
        return
    token = _bearer(header)
    if token is None:
        raise APIError(
            401,
            "Missing API key: send 'Authorization: Bearer <key>' (the OpenAI SDK does this with api_key=...).",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = token.encode("utf-8", "surrogateescape")
    ok = False
    for key in keys:  # no early exit: every key is compared
        ok |= hmac.compare_digest(given, key)
    if not ok:
        raise APIError(
            401, "Incorrect API key provided.", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
        )


def is_authenticated(request: Request) -> bool:
    """Whether the caller sent a valid key (False when no key is configured: nobody proved anything)."""
    keys: list[bytes] = request.app.state.api_keys
    if not keys:
        return False
    try:
        check_authorization(request.headers.get("authorization"), keys)
    except APIError:
        return False
    return True


def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 unless the Bearer token is one of --api-key (when any is set).

    The ASGI gate (``RequestGate``) makes the same check before the body is read; this
    dependency keeps the routes protected when they are mounted without it."""
    check_authorization(request.headers.get("authorization"), request.app.state.api_keys)


def protected_paths(routers: Iterable[Any]) -> set[str]:
    """The paths of the routes of ``routers`` (those mounted behind ``require_api_key``): the
    gate checks the key for them before reading the body. (Read from the routers themselves:
    FastAPI >= 0.16x no longer copies included routes into ``app.routes``.)"""
    return {
        route.path
        for router in routers
        for route in router.routes
        if isinstance(getattr(route, "path", None), str)
    }
