"""TEI's and vLLM's truncation fields work on qembed's routes (mapped onto long_text,
truncation_side and a per-call window); contradicting qembed's own field is a 400."""

from __future__ import annotations

import numpy as np

LONG = " ".join(f"word{i}" for i in range(300))


def _vectors(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    body = response.json()
    rows = body if isinstance(body, list) else [d["embedding"] for d in body["data"]]
    return np.array(rows, dtype=np.float32)


def test_tei_truncate_fields_on_embed(make_client, short_embedder) -> None:
    client = make_client(embedder=short_embedder)
    tei = _vectors(
        client.post("/embed", json={"inputs": [LONG], "truncate": True, "truncation_direction": "Left"})
    )
    want = short_embedder.encode([LONG], long_text="truncate", truncation_side="left")
    assert float(tei[0] @ want[0]) >= 0.99999
    refused = client.post("/embed", json={"inputs": [LONG], "truncate": False})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded"


def test_vllm_truncate_prompt_tokens(tiny_client, tiny_embedder) -> None:
    got = _vectors(tiny_client.post("/v1/embeddings", json={"input": [LONG], "truncate_prompt_tokens": 16}))
    want = tiny_embedder.encode([LONG], long_text="truncate", truncation_side="left", max_tokens=16)
    assert float(got[0] @ want[0]) >= 0.99999
    whole = tiny_embedder.encode([LONG])
    assert float(got[0] @ whole[0]) < 0.999  # really cut to 16 tokens
    assert len(tiny_embedder.prepare([LONG], max_tokens=16).windows[0].ids) == 16


def test_a_peer_field_contradicting_qembeds_is_400(tiny_client) -> None:
    r = tiny_client.post("/v1/embeddings", json={"input": "x", "truncate": True, "long_text": "chunk"})
    assert r.status_code == 400 and "contradicts long_text" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "truncate"
