"""A client that goes away stops costing model time; one request cannot buy unbounded model
time (--max-request-tokens); priority is read from the body or the header."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from qembed.server.app import create_app
from tests.server.conftest import LiveServer, settings_for, wait_for


def test_a_disconnected_clients_windows_are_not_computed(tiny_model_dir: Path, tiny_embedder) -> None:
    app = create_app(settings_for(tiny_model_dir), tiny_embedder)
    with LiveServer(app) as server:
        queue = app.state.service.queue
        before = server.metrics()
        tokens_before = before[("qembed_model_tokens_total", ())]
        queue.pause()  # the model takes nothing: the request waits in the queue
        texts = [f"text number {i} waits for the model" for i in range(5)]
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                server.url + "/v1/embeddings", json={"input": texts}, timeout=httpx.Timeout(5.0, read=0.5)
            )
        wait_for(lambda: queue.cancelled_requests == 1, what="the cancellation")
        assert queue.dropped_windows == 5 and queue.queued_windows == 0
        queue.resume()
        ok = httpx.post(server.url + "/v1/embeddings", json={"input": "after"}, timeout=30)
        assert ok.status_code == 200
        after = server.metrics()
        assert after[("qembed_cancelled_requests", ())] == 1 and after[("qembed_dropped_windows", ())] == 5
        assert after[("qembed_requests_total", (("route", "/v1/embeddings"), ("status", "499")))] == 1
        assert after[("qembed_errors_total", (("kind", "client_closed_request"),))] == 1
        # only "after" ran: the abandoned texts never reached the model
        assert after[("qembed_model_tokens_total", ())] - tokens_before == len(
            tiny_embedder.tokenize(["after"])[0]
        )


def test_a_request_over_the_token_cap_is_413(make_client) -> None:
    client = make_client(max_request_tokens=40)
    r = client.post("/v1/embeddings", json={"input": ["word " * 30, "word " * 30]})
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert (
        error["code"] == "request_too_large"
        and "--max-request-tokens" in error["message"]
        and error["param"] == "input"
    )
    assert client.post("/v1/embeddings", json={"input": "short"}).status_code == 200


def test_priority_in_body_or_header(tiny_client) -> None:
    assert tiny_client.post("/v1/embeddings", json={"input": "x", "priority": "bulk"}).status_code == 200
    assert (
        tiny_client.post(
            "/v1/embeddings", json={"input": "x"}, headers={"X-Qembed-Priority": "bulk"}
        ).status_code
        == 200
    )
    bad = tiny_client.post("/v1/embeddings", json={"input": "x", "priority": "urgent"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "priority"
