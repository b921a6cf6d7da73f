"""API keys on the computing routes; health, readiness and metrics stay open; CORS only on request."""

from __future__ import annotations

import pytest

from tests.server.test_errors import assert_error

PROTECTED = [
    ("post", "/v1/embeddings"),
    ("post", "/embeddings"),
    ("post", "/embed"),
    ("post", "/tokenize"),
    ("get", "/v1/models"),
    ("get", "/models"),
]


@pytest.fixture
def keyed(make_client):
    return make_client(api_key=["key-one-123", "key-two-456"])


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_missing_and_wrong_keys_are_401(keyed, method: str, path: str) -> None:
    kwargs = {"json": {"input": "x"}} if method == "post" else {}
    error = assert_error(getattr(keyed, method)(path, **kwargs), 401, "API key", code="invalid_api_key")
    assert error["type"] == "invalid_request_error"
    for header in ("Bearer wrong", "Bearer key-one-12", "Basic key-one-123", "key-one-123", "Bearer "):
        r = getattr(keyed, method)(path, headers={"Authorization": header}, **kwargs)
        assert r.status_code == 401, header
    for key in ("key-one-123", "key-two-456"):
        r = getattr(keyed, method)(path, headers={"Authorization": f"Bearer {key}"}, **kwargs)
        assert r.status_code == 200, (key, r.text)


def test_open_routes_need_no_key(keyed) -> None:
    for path in ("/health", "/ready", "/metrics", "/info", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path
    # A bad key on an open route does not matter either.
    assert keyed.get("/health", headers={"Authorization": "Bearer nope"}).status_code == 200


def test_without_keys_any_key_is_accepted(tiny_client) -> None:
    for header in ({}, {"Authorization": "Bearer EMPTY"}, {"Authorization": "Bearer anything"}):
        assert tiny_client.post("/v1/embeddings", json={"input": "x"}, headers=header).status_code == 200


def test_api_key_from_env_comma_separated(monkeypatch) -> None:
    from qembed import Settings

    monkeypatch.setenv("QEMBED_API_KEY", "alpha, beta")
    settings = Settings()
    assert [k.get_secret_value() for k in settings.api_key] == ["alpha", "beta"]
    assert "alpha" not in str(settings.masked())


def test_cors_only_when_asked(tiny_client, make_client) -> None:
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    assert (
        "access-control-allow-origin" not in tiny_client.options("/v1/embeddings", headers=preflight).headers
    )
    assert (
        "access-control-allow-origin"
        not in tiny_client.post(
            "/v1/embeddings", json={"input": "x"}, headers={"Origin": "https://app.example"}
        ).headers
    )
    cors = make_client(cors_allow_origin=["https://app.example"])
    r = cors.options("/v1/embeddings", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    r = cors.post("/v1/embeddings", json={"input": "x"}, headers={"Origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    r = cors.options("/v1/embeddings", headers={**preflight, "Origin": "https://evil.example"})
    assert r.headers.get("access-control-allow-origin") != "https://evil.example"
