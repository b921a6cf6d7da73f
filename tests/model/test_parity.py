"""Parity with the reference: sentence-transformers' ``encode`` on the same folder.

The tiny Qwen3 fixture (real tokenizer, seeded random weights, last-token pooling) and the
real all-MiniLM-L6-v2 (mean pooling), float32 on CPU, with and without the "query" prompt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qembed import Embedder

LONG_EN = " ".join(
    [
        "Retrieval-augmented generation combines a search engine with a language model so that answers cite sources."
    ]
    * 12
)
TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog near the river bank.",
    "chinese": "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "mixed": "Qwen3 的 embedding 模型支持 100 多种语言, including English and 中文.",
    "code": "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "one_token": "a",
    "short": "Hi",
    "long": LONG_EN,  # ~230 tokens: very different from "a" in one padded batch
}
MIN_COS = 0.99999


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def st_tiny(tiny_model_dir: Path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("sentence_transformers")
    # The tiny config says bfloat16 (as the real one does): force float32 for the reference.
    return st.SentenceTransformer(str(tiny_model_dir), device="cpu", model_kwargs={"dtype": torch.float32})


@pytest.fixture(scope="module")
def st_minilm(minilm_dir: Path):
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(minilm_dir), device="cpu")


def _assert_parity(ours: np.ndarray, ref: np.ndarray, names: list[str]) -> None:
    cos = _cos(ours, ref)
    bad = {n: float(c) for n, c in zip(names, cos, strict=True) if c < MIN_COS}
    assert not bad, f"cosine below {MIN_COS}: {bad}"


def _assert_distinct(vectors: np.ndarray) -> None:
    """Parity must not be trivially true: different texts give clearly different vectors."""
    sims = _cos(vectors[:, None, :], vectors[None, :, :])
    off = sims[~np.eye(len(vectors), dtype=bool)]
    assert off.max() < 0.95, f"vectors of different texts are near-identical (max cos {off.max():.4f})"


@pytest.mark.parametrize("prompt_name", [None, "query"])
def test_tiny_qwen3_matches_sentence_transformers(
    tiny_embedder: Embedder, st_tiny, prompt_name: str | None
) -> None:
    names, texts = list(TEXTS), list(TEXTS.values())
    ref = st_tiny.encode(texts, prompt_name=prompt_name, batch_size=len(texts), convert_to_numpy=True)
    ours = tiny_embedder.encode(texts, prompt_name=prompt_name)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 64)
    _assert_parity(ours, ref, names)
    _assert_distinct(ours)
    # Each text alone (no padding at all) too.
    for name, text in TEXTS.items():
        alone = tiny_embedder.encode(text, prompt_name=prompt_name)
        assert _cos(alone, ref[names.index(name)]) >= MIN_COS, name


def test_tiny_query_prompt_changes_the_vector(tiny_embedder: Embedder) -> None:
    plain = tiny_embedder.encode(TEXTS["english"])
    query = tiny_embedder.encode(TEXTS["english"], prompt_name="query")
    assert _cos(plain, query) < 0.99


def test_tiny_instruction_matches_sentence_transformers_prompt(tiny_embedder: Embedder, st_tiny) -> None:
    instruction = "Given a web search query, retrieve relevant passages that answer the query"
    texts = [TEXTS["english"], TEXTS["chinese"]]
    ref = st_tiny.encode(texts, prompt=f"Instruct: {instruction}\nQuery:")
    _assert_parity(tiny_embedder.encode(texts, instruction=instruction), ref, ["english", "chinese"])
    _assert_parity(tiny_embedder.encode(texts, task="retrieval"), ref, ["english", "chinese"])


def test_minilm_matches_sentence_transformers(minilm_embedder: Embedder, st_minilm) -> None:
    assert minilm_embedder.info.pooling == "mean" and minilm_embedder.dimension == 384
    names, texts = list(TEXTS), list(TEXTS.values())
    ref = st_minilm.encode(texts, batch_size=len(texts), convert_to_numpy=True)
    ours = minilm_embedder.encode(texts)
    _assert_parity(ours, ref, names)
    _assert_distinct(ours)
    for name, text in TEXTS.items():
        assert _cos(minilm_embedder.encode(text), ref[names.index(name)]) >= MIN_COS, name


def test_minilm_facts(minilm_embedder: Embedder) -> None:
    info = minilm_embedder.info
    assert info.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert info.max_tokens == 256 and info.normalize and not info.supports_mrl
    assert minilm_embedder.spec.padding_side == "right"
