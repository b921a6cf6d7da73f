"""Request size and load limits: big client batches work, too many inputs 413, full queue
429 with Retry-After, payload limit 413 (declared and streamed)."""

from __future__ import annotations

import threading

import numpy as np

from qembed import Embedder
from tests.server.conftest import wait_for
from tests.server.test_errors import assert_error


def test_1000_inputs_in_one_request(tiny_client, tiny_embedder: Embedder) -> None:
    texts = [f"input number {i} " + "x" * (i % 37) for i in range(1000)]
    r = tiny_client.post("/v1/embeddings", json={"input": texts})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(1000))
    got = np.array([d["embedding"] for d in data], dtype=np.float32)
    np.testing.assert_allclose(got, tiny_embedder.encode(texts), atol=1e-5)


def test_client_batch_limit(tiny_client, make_client, tiny_embedder) -> None:
    error = assert_error(
        tiny_client.post("/v1/embeddings", json={"input": ["x"] * 2049}),
        413,
        "2049",
        "2048",
        "--max-client-batch-size",
        code="too_many_inputs",
    )
    assert error["param"] == "input"
    assert tiny_client.post("/v1/embeddings", json={"input": ["x"] * 2048}).status_code == 200
    small = make_client(max_client_batch_size=3)
    assert_error(small.post("/embed", json={"input": ["a", "b", "c", "d"]}), 413, "limit is 3")
    # One list of token ids is one input, however long (the model's own ids: foreign ones are refused).
    ids = tiny_embedder.tokenizer.content_ids(["one two three four five six seven"])[0]
    assert len(ids) > 3 and small.post("/embed", json={"input": ids}).status_code == 200


def _post_in_thread(client, body: dict) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(client.post("/v1/embeddings", json=body)))
    thread.start()
    return thread, out


def test_too_many_concurrent_requests_is_429_with_retry_after(make_client) -> None:
    client = make_client(max_concurrent_requests=1)
    queue = client.app.state.service.queue
    queue.pause()  # hold the model so the first request stays in flight
    try:
        thread, first = _post_in_thread(client, {"input": "first"})
        wait_for(lambda: queue.queued_requests == 1, what="first request queued")
        r = client.post("/v1/embeddings", json={"input": "second"})
        assert_error(r, 429, "--max-concurrent-requests", code="queue_full")
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_error"
    finally:
        queue.resume()
    thread.join(30)
    assert first[0].status_code == 200
    assert client.post("/v1/embeddings", json={"input": "third"}).status_code == 200


def test_full_token_queue_is_429(make_client) -> None:
    client = make_client(max_queued_tokens=40)
    queue = client.app.state.service.queue
    queue.pause()
    try:
        thread, first = _post_in_thread(client, {"input": "word " * 30})
        wait_for(lambda: queue.queued_tokens > 0, what="tokens queued")
        r = client.post("/v1/embeddings", json={"input": "word " * 20})
        assert_error(r, 429, "--max-queued-tokens", "tokens waiting", code="queue_full")
        assert "retry-after" in r.headers
    finally:
        queue.resume()
    thread.join(30)
    assert first[0].status_code == 200


def test_payload_limit(make_client) -> None:
    client = make_client(payload_limit=2048)
    body = b'{"input": "' + b"x" * 3000 + b'"}'
    assert_error(
        client.post("/v1/embeddings", content=body),
        413,
        f"{len(body)} bytes",
        "--payload-limit",
        code="payload_too_large",
    )

    def chunks():  # no Content-Length: the limit is counted on the bytes received
        yield b'{"input": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    r = client.post("/v1/embeddings", content=chunks())
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "more than 2048", code="payload_too_large")

    # Under the limit, the streamed body is served.
    def small():
        yield b'{"input": '
        yield b'"hello"}'

    assert client.post("/v1/embeddings", content=small()).status_code == 200
