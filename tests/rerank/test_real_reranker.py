"""Real-weights acceptance: the Qwen3-Reranker model card's example ranks as published.

Skipped unless QEMBED_REAL_RERANKER_DIR names a Qwen3-Reranker folder (e.g. one fetched with
``qembed download Qwen/Qwen3-Reranker-0.6B --dir DIR``): CI has no network and no weights.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("QEMBED_REAL_RERANKER_DIR"), reason="QEMBED_REAL_RERANKER_DIR is not set"
    ),
]

QUERIES = ["What is the capital of China?", "Explain gravity"]
DOCUMENTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects and "
    "is responsible for the movement of planets around the sun.",
]


def test_model_card_example_ranks_each_querys_document_first() -> None:
    from qembed import Reranker

    rr = Reranker(
        os.environ["QEMBED_REAL_RERANKER_DIR"], device="cpu", dtype="float32", kind="qwen3-reranker"
    )
    for i, query in enumerate(QUERIES):
        ranked = rr.rank(query, DOCUMENTS)
        assert ranked[0].index == i, (query, ranked)
        assert ranked[0].score > 0.5 > ranked[1].score, (
            ranked
        )  # the card's pairs relevant, the swapped ones not
    # the card's own batch (query i with document i, padded together) agrees with one pair at a time
    together = rr.score(list(zip(QUERIES, DOCUMENTS, strict=True)))
    alone = np.array([rr.score([(q, d)])[0] for q, d in zip(QUERIES, DOCUMENTS, strict=True)])
    np.testing.assert_allclose(together, alone, atol=1e-5)
