"""/metrics parses with prometheus_client's own parser and counts exactly what was sent."""

from __future__ import annotations

from qembed import Embedder
from tests.server.conftest import metric_samples


def test_metrics_count_what_was_sent(make_client, tiny_embedder: Embedder) -> None:
    client = make_client()  # a fresh app: its own registry starts at zero
    bodies = [["one"], ["two", "three"], ["four", "five", "six"]]
    for texts in bodies:
        assert client.post("/v1/embeddings", json={"input": texts}).status_code == 200
    assert client.post("/embed", json={"input": "seven"}).status_code == 200
    assert client.post("/v1/embeddings", json={"input": ""}).status_code == 400
    assert client.post("/v1/embeddings", json={"input": "x", "model": "nope"}).status_code == 404
    assert client.get("/missing").status_code == 404

    s = metric_samples(client.get("/metrics").text)

    def requests(route: str, status: str) -> float:
        return s.get(("qembed_requests_total", (("route", route), ("status", status))), 0.0)

    assert requests("/v1/embeddings", "200") == 3
    assert requests("/embed", "200") == 1
    assert requests("/v1/embeddings", "400") == 1
    assert requests("/v1/embeddings", "404") == 1
    assert requests("unmatched", "404") == 1
    assert s[("qembed_request_duration_seconds_count", (("route", "/v1/embeddings"),))] == 5
    assert s[("qembed_inputs_total", ())] == 7
    texts = [t for b in bodies for t in b] + ["seven"]
    assert s[("qembed_prompt_tokens_total", ())] == sum(len(ids) for ids in tiny_embedder.tokenize(texts))
    assert s[("qembed_errors_total", (("kind", "invalid_input"),))] == 1
    assert s[("qembed_errors_total", (("kind", "model_not_found"),))] == 1
    assert s[("qembed_errors_total", (("kind", "not_found"),))] == 1
    # Batches: the warm-up plus at least one per successful request; windows = inputs + warm-up rows.
    warmup_rows = len(client.app.state.service.warmup_windows())
    assert s[("qembed_batch_inputs_sum", ())] == 7 + warmup_rows
    assert s[("qembed_batch_inputs_count", ())] >= 2
    assert s[("qembed_model_tokens_total", ())] == s[("qembed_batch_tokens_sum", ())] > 0
    assert s[("qembed_batch_padded_tokens_sum", ())] >= s[("qembed_batch_tokens_sum", ())]
    # Nothing waits now; the model has a measured throughput; the app is ready.
    assert s[("qembed_queue_inputs", ())] == 0 and s[("qembed_queue_tokens", ())] == 0
    assert s[("qembed_tokens_per_second", ())] > 0
    assert s[("qembed_ready", ())] == 1
    # Which model answers these series: one qembed_model_info sample, its labels from /info.
    info = client.get("/info").json()
    [(labels, value)] = [(dict(k[1]), v) for k, v in s.items() if k[0] == "qembed_model_info"]
    assert value == 1
    assert labels == {
        "model": info["model"],
        "model_id": tiny_embedder.info.model_id,
        "role": "embedder",
        "backend": tiny_embedder.info.backend,
        "dtype": tiny_embedder.info.dtype,
        "dimension": str(tiny_embedder.info.dimension),
        "quantization": "none",
    }
    # The /metrics request itself is in flight while it renders.
    assert s[("qembed_requests_in_flight", ())] == 1


def test_request_id_is_echoed(tiny_client) -> None:
    r = tiny_client.post("/v1/embeddings", json={"input": "x"}, headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(tiny_client.get("/health").headers["x-request-id"]) == 16


def test_health_fails_when_the_model_worker_is_gone(make_client) -> None:
    client = make_client()
    assert client.get("/health").json() == {"status": "ok"}
    assert client.app.state.service.worker.stop(10)
    r = client.get("/health")
    assert r.status_code == 503 and r.json()["error"]["code"] == "worker_stopped"
