"""Task presets on the HTTP routes pick the served model's prompt family (here the real
multilingual-e5-small): /v1/embeddings and /tokenize pass task/input_type through, /info says
which family the server applies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from qembed import Embedder
from qembed.server.app import create_app
from tests.server.conftest import ready_client, settings_for

TEXT = "如何解决Kubernetes Pod一直处于Pending状态？"


@pytest.fixture(scope="module")
def e5_client(e5_small_dir: Path, e5_embedder: Embedder) -> Iterator[TestClient]:
    client = ready_client(create_app(settings_for(e5_small_dir), e5_embedder))
    try:
        yield client
    finally:
        client.__exit__(None, None, None)


def _tokens(client: TestClient, **body: object) -> list[int]:
    response = client.post("/tokenize", json={"input": TEXT, **body})
    assert response.status_code == 200, response.text
    return response.json()["data"][0]["tokens"]


def test_info_names_the_family(e5_client: TestClient) -> None:
    assert e5_client.get("/info").json()["prompt_family"] == "e5"


@pytest.mark.parametrize(
    ("task", "input_type", "prefix"),
    [
        ("retrieval", "query", "query: "),
        ("retrieval", "document", "passage: "),
        ("sts", "document", "query: "),
        ("sts", "query", "query: "),
    ],
)
def test_routes_apply_the_e5_prompt(
    e5_client: TestClient, e5_embedder: Embedder, task: str, input_type: str, prefix: str
) -> None:
    reference = e5_embedder.tokenizer.tokenizer(prefix + TEXT)["input_ids"]
    assert _tokens(e5_client, task=task, input_type=input_type) == reference
    body = {"input": [TEXT], "task": task, "input_type": input_type}
    served = np.asarray(
        e5_client.post("/v1/embeddings", json=body).json()["data"][0]["embedding"], dtype=np.float32
    )
    local = e5_embedder.encode([prefix + TEXT])[0]
    assert float(served @ local) > 0.99999
