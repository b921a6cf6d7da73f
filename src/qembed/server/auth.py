"""Bearer-token check for the routes that compute (/v1/*, /embeddings, /embed, /tokenize).

/health, /ready and /metrics stay open so that load balancers and Prometheus need no
secret. With no key configured every token is accepted (the OpenAI SDK insists on
sending one; "EMPTY" is the convention). Keys are compared with ``hmac.compare_digest``
against every configured key, so the time taken says nothing about how close a guess was.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from qembed.server.errors import APIError


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 unless the Bearer token is one of --api-key (when any is set)."""
    keys: list[bytes] = request.app.state.api_keys
    if not keys:
        return
    token = _bearer(request)
    if token is None:
        raise APIError(
            401,
            "Missing API key: send 'Authorization: Bearer <key>' (the OpenAI SDK does this with api_key=...).",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = token.encode()
    ok = False
    for key in keys:  # no early exit: every key is compared
        ok |= hmac.compare_digest(given, key)
    if not ok:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
