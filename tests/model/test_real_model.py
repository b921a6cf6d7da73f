"""Real-weights acceptance: the Qwen3-Embedding-0.6B model card example.

Skipped unless QEMBED_REAL_MODEL_DIR points at a real Qwen3-Embedding-0.6B folder (e.g. one
written by `qembed download qwen3-0.6b --dir DIR` on a connected machine).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from qembed import Embedder, similarity

REAL = os.environ.get("QEMBED_REAL_MODEL_DIR")
pytestmark = pytest.mark.skipif(
    not REAL, reason="set QEMBED_REAL_MODEL_DIR to a real Qwen3-Embedding-0.6B folder"
)

TASK = "Given a web search query, retrieve relevant passages that answer the query"
QUERIES = ["What is the capital of China?", "Explain gravity"]
DOCUMENTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects and is "
    "responsible for the movement of planets around the sun.",
]
EXPECTED = np.array([[0.7646, 0.1414], [0.1355, 0.6000]])


@pytest.fixture(scope="module")
def real() -> Embedder:
    return Embedder(str(Path(REAL).expanduser()), device="cpu", dtype="float32")


def test_model_card_example(real: Embedder) -> None:
    assert real.dimension == 1024 and real.info.max_tokens == 8192
    queries = real.encode(QUERIES, instruction=TASK)
    documents = real.encode(DOCUMENTS)
    np.testing.assert_allclose(similarity(queries, documents), EXPECTED, atol=0.002)
    # The task preset and the model's own "query" prompt are the same thing.
    np.testing.assert_allclose(real.encode(QUERIES, task="retrieval"), queries, atol=1e-6)
    np.testing.assert_allclose(real.encode(QUERIES, prompt_name="query"), queries, atol=1e-6)
    np.testing.assert_allclose(
        real.encode(DOCUMENTS, task="retrieval", input_type="document"), documents, atol=1e-6
    )


def test_model_card_example_with_mrl(real: Embedder) -> None:
    queries = real.encode(QUERIES, instruction=TASK, dimensions=256)
    documents = real.encode(DOCUMENTS, dimensions=256)
    scores = similarity(queries, documents)
    assert scores.shape == (2, 2) and scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]


def test_real_model_parity_with_sentence_transformers(real: Embedder) -> None:
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(
        str(Path(REAL).expanduser()), device="cpu", model_kwargs={"dtype": torch.float32}
    )
    texts = QUERIES + DOCUMENTS + ["北京是中国的首都。", "a"]
    for prompt_name in (None, "query"):
        ours = real.encode(texts, prompt_name=prompt_name)
        theirs = ref.encode(texts, prompt_name=prompt_name)
        cos = (ours * theirs).sum(1) / np.linalg.norm(theirs, axis=1)
        assert cos.min() >= 0.99999, (prompt_name, cos)
