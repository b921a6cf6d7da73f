"""16 concurrent clients with mixed-length inputs against a real server: each gets exactly
its own vectors, in order, and the model really ran windows of several requests together.

Batching is made deterministic by holding the model worker (``queue.pause()``) until
all 16 requests are queued -- no sleeps, no timing luck."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from qembed import Embedder, Settings
from qembed.server.app import create_app
from tests.server.conftest import LiveServer, wait_for

CLIENTS = 16


def request_texts(k: int) -> list[str]:
    """Mixed lengths: short, medium, and (for some clients) longer than the 64-token window."""
    texts = [f"client {k} short", f"client {k} " + "medium text " * (3 + k)]
    if k % 3 == 0:
        texts.append(f"client {k} long " + "chunked words " * 60)  # several windows
    return texts


@pytest.fixture(scope="module")
def short_server(tiny_model_dir, short_embedder: Embedder):
    with LiveServer(
        create_app(Settings(model=str(tiny_model_dir), max_batch_tokens=2048), short_embedder)
    ) as server:
        yield server


def test_concurrent_clients_share_batches_and_get_their_own_vectors(
    short_server, short_embedder: Embedder
) -> None:
    queue = short_server.app.state.service.queue
    before = short_server.metrics()
    batches_before = before[("qembed_batch_inputs_count", ())]
    queue.pause()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [
                pool.submit(
                    httpx.post,
                    short_server.url + "/v1/embeddings",
                    json={"input": request_texts(k)},
                    timeout=60,
                )
                for k in range(CLIENTS)
            ]
            wait_for(lambda: queue.queued_requests == CLIENTS, what=f"{CLIENTS} requests queued")
            queue.resume()
            responses = [f.result() for f in futures]
    finally:
        queue.resume()

    windows = 0
    for k, response in enumerate(responses):
        assert response.status_code == 200, response.text
        texts = request_texts(k)
        data = response.json()["data"]
        assert [d["index"] for d in data] == list(range(len(texts)))
        got = np.array([d["embedding"] for d in data], dtype=np.float32)
        alone = short_embedder.encode(texts)  # the same request, embedded on its own
        cos = np.sum(got * alone, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(alone, axis=1))
        assert np.all(cos >= 0.99999), (k, cos)
        windows += len(short_embedder.prepare(texts).windows)

    after = short_server.metrics()
    batches = after[("qembed_batch_inputs_count", ())] - batches_before
    inputs_in_batches = after[("qembed_batch_inputs_sum", ())] - before[("qembed_batch_inputs_sum", ())]
    assert inputs_in_batches == windows
    assert batches < CLIENTS, f"{windows} windows of {CLIENTS} requests ran in {batches} batches"
    assert inputs_in_batches / batches > 1
    # At least one batch held more than one window (the histogram's le=1 bucket missed some).
    le1 = (
        after[("qembed_batch_inputs_bucket", (("le", "1.0"),))]
        - before[("qembed_batch_inputs_bucket", (("le", "1.0"),))]
    )
    assert le1 < batches
