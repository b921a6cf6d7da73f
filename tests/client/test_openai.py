"""The one OpenAI-compatible client (``qembed.client``): URL forms, answers checked, errors
that say what went wrong, retries only when asked for; and the ``TextEncoder`` protocol
both the client and the in-process encoder implement.

The server is a scripted loopback HTTP server in a thread of the test process: each
request takes the next scripted answer (status, body, headers), and every request is
recorded (path, body, Authorization header)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from qembed.client import (
    ClientError,
    HttpEncoder,
    OpenAIClient,
    base_url,
    embeddings_url,
    models_url,
    parse_embeddings,
    server_root,
)
from qembed.embedding.protocol import Encoded, InProcessEncoder, TextEncoder
from qembed.errors import InputError


# -- the URL forms -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://h:8080", "http://h:8080/v1"),
        ("http://h:8080/", "http://h:8080/v1"),
        ("http://h:8080/v1", "http://h:8080/v1"),
        ("http://h:8080/v1/", "http://h:8080/v1"),
        ("http://h:8080/v1/embeddings", "http://h:8080/v1"),
        ("http://h:8080/v1/embeddings/", "http://h:8080/v1"),
        ("  https://api.example.com/v1/embeddings ", "https://api.example.com/v1"),
        ("https://gw.example.com/openai", "https://gw.example.com/openai/v1"),  # a path prefix is kept
        ("https://gw.example.com/openai/v1", "https://gw.example.com/openai/v1"),
        ("http://h:8080/embeddings", "http://h:8080"),  # the route named as is: taken as given
    ],
)
def test_base_url_forms(endpoint: str, expected: str) -> None:
    assert base_url(endpoint) == expected
    assert embeddings_url(endpoint) == expected + "/embeddings"
    assert models_url(endpoint) == expected + "/models"


def test_server_root_and_bad_schemes() -> None:
    assert server_root("http://h:1/v1/embeddings") == "http://h:1"
    assert server_root("http://h:1") == "http://h:1"
    assert server_root("http://h:1/embeddings") == "http://h:1"
    for bad in ("h:1", "ftp://h:1/v1", ""):
        with pytest.raises(InputError, match="http:// or https://") as info:
            base_url(bad)
        assert info.value.param == "endpoint"
        assert isinstance(info.value, ValueError)


# -- a scripted loopback server ---------------------------------------------------------------
class Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers: list[tuple[int, Any, dict[str, str]]] = []  # next answers, in order; then the default
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def script(self, *answers: tuple[int, Any] | tuple[int, Any, dict[str, str]]) -> None:
        with self.lock:
            self.answers = [(a[0], a[1], a[2] if len(a) > 2 else {}) for a in answers]  # type: ignore[misc]
            self.requests = []


def _vectors_body(n: int, dim: int = 3, *, tokens: int | None = 7, reverse: bool = False) -> dict[str, Any]:
    rows = [{"object": "embedding", "index": i, "embedding": [float(i + 1)] * dim} for i in range(n)]
    body: dict[str, Any] = {"object": "list", "data": rows[::-1] if reverse else rows, "model": "m"}
    if tokens is not None:
        body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return body


class _Handler(BaseHTTPRequestHandler):
    server: Scripted

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with self.server.lock:
            self.server.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "body": body,
                    "auth": self.headers.get("authorization"),
                }
            )
            scripted = self.server.answers.pop(0) if self.server.answers else None
        if scripted is None:
            if self.path.endswith("/models"):
                scripted = (
                    200,
                    {"object": "list", "data": [{"id": "served-model", "owned_by": "someone"}]},
                    {},
                )
            else:
                scripted = (200, _vectors_body(len(body["input"]) if body else 0), {})
        status, payload, headers = scripted
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header(
            "Content-Type", "application/json" if not isinstance(payload, bytes) else "text/plain"
        )
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = _answer
    do_POST = _answer


@pytest.fixture(scope="module")
def server() -> Iterator[Scripted]:
    srv = Scripted()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def _dead_url() -> str:
    from qembed.bench.procs import free_port

    return f"http://127.0.0.1:{free_port()}"


# -- embeddings ------------------------------------------------------------------------------
def test_embed_sends_model_input_and_fields_and_checks_the_answer(server: Scripted) -> None:
    server.script((200, _vectors_body(2, reverse=True)))
    with OpenAIClient(server.url + "/v1/", model="m", api_key="k3y", encoding_format="float") as client:
        encoded = client.embed(["a", "b"], input_type="query", dimensions=None)
    (request,) = server.requests
    assert request["path"] == "/v1/embeddings" and request["auth"] == "Bearer k3y"
    assert request["body"] == {
        "model": "m",
        "input": ["a", "b"],
        "encoding_format": "float",
        "input_type": "query",
    }  # None fields not sent
    assert encoded.vectors.dtype == np.float32
    np.testing.assert_array_equal(encoded.vectors, [[1.0] * 3, [2.0] * 3])  # put back in index order
    assert encoded.prompt_tokens == 7


def test_base64_answers_are_decoded() -> None:
    row = np.array([0.5, -1.25, 3.0], dtype="<f4")
    body = {"data": [{"index": 0, "embedding": base64.b64encode(row.tobytes()).decode()}]}
    np.testing.assert_array_equal(parse_embeddings(json.dumps(body).encode(), 1).vectors, [row])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not an OpenAI embeddings response"),
        ({"data": [{"index": 0}]}, "not an OpenAI embeddings response"),
        (
            {"data": [{"index": 0, "embedding": [1.0, 2.0]}]},
            "asked for 2 embeddings, got an array of shape (1, 2)",
        ),
        (
            {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}]},
            "not an OpenAI embeddings response",
        ),
        (
            {"data": [{"index": 0, "embedding": [1.0, float("nan")]}, {"index": 1, "embedding": [1.0, 2.0]}]},
            "NaN or infinite",
        ),
        ({"data": [{"index": 0, "embedding": []}, {"index": 1, "embedding": []}]}, "shape (2, 0)"),
    ],
)
def test_answers_that_are_not_embeddings(body: Any, message: str) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ClientError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        parse_embeddings(content, 2)
    assert info.value.status == "invalid-body"


def test_errors_carry_status_and_the_servers_message(server: Scripted) -> None:
    client = OpenAIClient(server.url, model="m")
    server.script(
        (401, {"error": {"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}})
    )
    with pytest.raises(ClientError) as info:
        client.embed(["a"])
    assert info.value.status == 401
    assert info.value.message == f"POST {server.url}/v1/embeddings answered 401: bad key"
    server.script((500, b"upstream exploded"))
    with pytest.raises(ClientError, match="answered 500: upstream exploded"):
        client.embed(["a"])
    server.script((422, {"detail": "input must not be empty"}))
    with pytest.raises(ClientError, match="answered 422: .*input must not be empty"):
        client.embed(["a"])
    client.close()


def test_retries_only_when_asked_and_only_busy_answers(server: Scripted) -> None:
    busy = (503, {"error": {"message": "warming up"}}, {"Retry-After": "0"})
    server.script(busy, (429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}))
    with OpenAIClient(server.url, model="m", retries=2) as client:
        assert client.embed(["a"]).vectors.shape == (1, 3)
        assert len(server.requests) == 3  # two busy answers, then the vectors
        server.script((400, {"error": {"message": "bad input"}}))
        with pytest.raises(ClientError, match="400: bad input"):
            client.embed(["a"])
        assert len(server.requests) == 1  # a wrong request is not retried
    server.script(busy)
    with (
        OpenAIClient(server.url, model="m") as client,
        pytest.raises(ClientError, match="503: warming up") as info,
    ):
        client.embed(["a"])  # retries=0: the default
    assert info.value.status == 503 and len(server.requests) == 1


def test_unreachable_server_says_so() -> None:
    url = _dead_url()
    with OpenAIClient(url, model="m") as client:
        with pytest.raises(ClientError, match=f"POST {url}/v1/embeddings failed") as info:
            client.embed(["a"])
        assert info.value.status == "transport"
        with pytest.raises(ClientError, match=f"cannot reach {url}/v1/models .*is the server up"):
            client.models()
        assert client.get("/info") is None
        assert client.resolve_model() == "m"  # given: never asked


def test_models_served_model_and_resolve(server: Scripted) -> None:
    server.script()
    with OpenAIClient(server.url) as client:
        assert client.served_model()["owned_by"] == "someone"
        assert client.model == "served-model"
    server.script((404, {"error": {"message": "no such route"}}))
    with OpenAIClient(server.url) as client:
        with pytest.raises(ClientError, match=r"/v1/models answered 404: no such route") as info:
            client.served_model()
        assert info.value.status == 404
    server.script((200, {"data": []}))
    with OpenAIClient(server.url) as client, pytest.raises(ClientError, match="lists no model"):
        client.served_model()
    server.script((500, b"down"))
    with OpenAIClient(server.url) as client:
        assert client.resolve_model() == "default"  # the bench's fallback: servers that ignore the name
    with OpenAIClient(_dead_url()) as client:
        assert client.resolve_model() == "default"


# -- measured requests: never raise ------------------------------------------------------------
def test_attempts_record_status_latency_and_tokens(server: Scripted) -> None:
    client = OpenAIClient(server.url, model="m")
    server.script(
        (200, _vectors_body(2, dim=4, tokens=11)),
        (429, {"error": {"message": "slow down"}}),
        (200, _vectors_body(1)),
    )
    ok = client.attempt(["a", "b"])
    assert (ok.status, ok.ok, ok.n_inputs, ok.n_vectors, ok.dimension, ok.prompt_tokens) == (
        200,
        True,
        2,
        2,
        4,
        11,
    )
    assert ok.latency_s > 0 and ok.finished_at > 0
    busy = client.attempt(["a"])
    assert (busy.status_key, busy.ok, busy.error) == ("429", False, "slow down")
    short = client.attempt(["a", "b"])  # one vector for two inputs
    assert short.status == "invalid-body" and not short.ok and "asked for 2 embeddings" in (short.error or "")

    async def run() -> list[Any]:
        server.script((503, {"error": {"message": "not ready"}}))
        async with client.async_http(2) as http:
            return [
                await client.attempt_async(http, ["x"]),
                await client.attempt_async(http, ["x", "y", "z"]),
            ]

    first, second = asyncio.run(run())
    assert (first.status, first.error) == (503, "not ready")
    assert second.ok and second.n_vectors == 3 and second.dimension == 3
    assert all(
        r["body"]["model"] == "m" and "encoding_format" not in r["body"] for r in server.requests
    )  # float: not sent
    client.close()
    dead = OpenAIClient(_dead_url(), model="m")
    failed = dead.attempt(["a"])
    assert failed.status == "transport:ConnectError" and not failed.ok and failed.error
    dead.close()


# -- the TextEncoder protocol -----------------------------------------------------------------
def test_http_encoder_is_a_text_encoder(server: Scripted) -> None:
    server.script()
    client = OpenAIClient(server.url, api_key="s3cret")
    encoder = HttpEncoder(client, batch_size=2)  # asks GET /v1/models for the name
    assert isinstance(encoder, TextEncoder)
    assert encoder.model_id == "served-model" and encoder.dimension is None
    encoded = encoder.encode(["a", "b", "c"], role="query", task="retrieval", dimensions=3)
    assert encoded.vectors.shape == (3, 3) and encoder.dimension == 3
    assert encoded.prompt_tokens == 14  # the two requests' counts added up
    posts = [r for r in server.requests if r["method"] == "POST"]
    assert [r["body"]["input"] for r in posts] == [["a", "b"], ["c"]]
    assert all(
        r["body"]["input_type"] == "query"
        and r["body"]["task"] == "retrieval"
        and r["body"]["dimensions"] == 3
        for r in posts
    )
    assert all(r["auth"] == "Bearer s3cret" for r in server.requests)
    server.script()
    encoder.encode(["d"])  # no role: no input_type
    assert "input_type" not in server.requests[-1]["body"]
    assert encoder.identity() == {"kind": "http", "base_url": server.url + "/v1", "model": "served-model"}
    encoder.close()


class _FakeEmbedder:
    """An Embedder's duck: what InProcessEncoder uses of it."""

    class info:  # noqa: N801
        model_id, dimension, path, backend, dtype = "fake/model", 2, "/nowhere", "torch", "float32"

    class tokenizer:  # noqa: N801
        @staticmethod
        def content_ids(texts: list[str]) -> list[list[int]]:
            return [[0] * len(t.split()) for t in texts]

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def encode_with_usage(self, texts: list[str], **options: Any) -> Any:
        self.calls.append((texts, options))
        return Encoded(np.ones((len(texts), 2), dtype=np.float64), 5)


def test_in_process_encoder_is_a_text_encoder() -> None:
    embedder = _FakeEmbedder()
    encoder = InProcessEncoder(embedder, batch_size=8)
    assert isinstance(encoder, TextEncoder)
    assert (encoder.model_id, encoder.dimension) == ("fake/model", 2)
    encoded = encoder.encode(("a b", "c"), role="document", task="retrieval")
    assert (
        encoded.vectors.dtype == np.float32 and encoded.vectors.shape == (2, 2) and encoded.prompt_tokens == 5
    )
    assert embedder.calls[-1] == (
        ["a b", "c"],
        {"task": "retrieval", "input_type": "document", "batch_size": 8},
    )
    encoder.encode(["x"], batch_size=1)
    assert embedder.calls[-1] == (
        ["x"],
        {"batch_size": 1},
    )  # no role: no input_type; the call's batch size wins
    assert encoder.count_tokens(["a b c", "d"]) == [3, 1] and encoder.count_tokens([]) == []
