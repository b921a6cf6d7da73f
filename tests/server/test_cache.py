"""The server answers repeated inputs from the embedding cache (--cache-size): identical
vectors and usage, hits and misses counted on /metrics, errors still name the caller's index."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qembed import Embedder
from tests.server.conftest import metric_samples


def _counter(text: str, name: str) -> float:
    samples = metric_samples(text)
    return sum(v for (n, _), v in samples.items() if n == name)


def test_repeated_inputs_come_from_the_cache(tiny_model_dir: Path, make_client) -> None:
    cached = Embedder(str(tiny_model_dir), device="cpu", cache_size=100)
    client = make_client(embedder=cached)
    body = {"input": ["alpha beta", "gamma delta epsilon"]}
    first = client.post("/v1/embeddings", json=body)
    assert first.status_code == 200, first.text
    assert _counter(client.get("/metrics").text, "qembed_cache_misses_total") == 2
    mixed = client.post(
        "/v1/embeddings", json={"input": ["gamma delta epsilon", "new text here", "alpha beta"]}
    )
    assert mixed.status_code == 200, mixed.text
    metrics = client.get("/metrics").text
    assert _counter(metrics, "qembed_cache_hits_total") == 2
    assert _counter(metrics, "qembed_cache_misses_total") == 3
    a = np.array([d["embedding"] for d in first.json()["data"]])
    b = np.array([d["embedding"] for d in mixed.json()["data"]])
    assert np.array_equal(a[1], b[0]) and np.array_equal(a[0], b[2])
    reference = Embedder(str(tiny_model_dir), device="cpu").encode(["new text here"])[0]
    assert float(np.dot(b[1], reference)) >= 0.99999
    assert first.json()["usage"]["prompt_tokens"] == sum(
        len(x) for x in cached.tokenize(["alpha beta", "gamma delta epsilon"])
    )


def test_errors_name_the_callers_index_with_the_cache(tiny_model_dir: Path, make_client) -> None:
    cached = Embedder(str(tiny_model_dir), device="cpu", cache_size=100)
    client = make_client(embedder=cached)
    assert client.post("/v1/embeddings", json={"input": ["seen before"]}).status_code == 200
    r = client.post("/v1/embeddings", json={"input": ["seen before", ""]})
    assert r.status_code == 400
    assert "input[1]" in r.json()["error"]["message"]


def test_an_error_about_a_missing_input_names_the_callers_index(tiny_model_dir: Path, make_client) -> None:
    """The error comes from preparing the inputs the cache did not have (a subset): its
    message still uses the request's numbering."""
    cached = Embedder(str(tiny_model_dir), device="cpu", cache_size=100, max_tokens=32)
    client = make_client(embedder=cached)
    assert client.post("/v1/embeddings", json={"input": ["seen before", "also seen"]}).status_code == 200
    r = client.post(
        "/v1/embeddings", json={"input": ["seen before", "also seen", "word " * 100], "long_text": "error"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith("input[2] has ")
