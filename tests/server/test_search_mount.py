"""`qembed serve --index NAME` mounts the search routes behind the same API key, and they
embed through the server's queue (their batches show up in the server's metrics)."""

from __future__ import annotations

from tests.server.conftest import metric_samples
from tests.server.test_errors import assert_error


def test_index_routes_are_mounted_with_auth(make_client, tmp_path) -> None:
    client = make_client(index="notes", data_dir=str(tmp_path), api_key=["secret-key"])
    auth = {"Authorization": "Bearer secret-key"}
    assert_error(client.post("/v1/search", json={"query": "x"}), 401, "API key")

    def windows_run() -> float:
        return metric_samples(client.get("/metrics").text)[("qembed_batch_inputs_sum", ())]

    m0 = windows_run()
    docs = [
        {"id": "a", "text": "Beijing is the capital of China."},
        {"id": "b", "text": "Gravity pulls things down."},
    ]
    r = client.post("/v1/index", json={"documents": docs}, headers=auth)
    assert r.status_code == 200, r.text
    m1 = windows_run()
    r = client.post("/v1/search", json={"query": "capital of China", "k": 2}, headers=auth)
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2
    # Documents and the query were embedded by the server's model worker.
    assert m1 > m0 and windows_run() > m1
    # Their validation errors have the OpenAI shape too.
    assert_error(client.post("/v1/search", json={"query": ""}, headers=auth), 400, "query")


def test_no_index_no_search_routes(tiny_client) -> None:
    assert tiny_client.post("/v1/search", json={"query": "x"}).status_code == 404
