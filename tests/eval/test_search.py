"""Exact top-k: same answer as a full sort, ties by corpus order, across document blocks."""

from __future__ import annotations

import numpy as np
import pytest

from qembed.eval.search import faiss_available, top_k


def _reference(q: np.ndarray, d: np.ndarray, k: int) -> np.ndarray:
    scores = q @ d.T
    # score descending, then index ascending
    return np.array([np.lexsort((np.arange(d.shape[0]), -row))[:k] for row in scores])


def test_matches_full_sort_across_blocks() -> None:
    rng = np.random.default_rng(1)
    q = rng.standard_normal((37, 16)).astype(np.float32)
    d = rng.standard_normal((503, 16)).astype(np.float32)
    expected = _reference(q, d, 20)
    idx, val = top_k(q, d, 20, backend="numpy", query_block=8, doc_block=64)
    assert np.array_equal(idx, expected)
    assert np.allclose(val, np.take_along_axis(q @ d.T, expected, axis=1), atol=1e-5)
    assert np.all(np.diff(val, axis=1) <= 0)


def test_ties_are_broken_by_corpus_order_even_across_blocks() -> None:
    # Documents 1, 4 and 6 are identical and best; 0, 2, 3, 5 share the second score.
    d = np.array([[0.6, 0.8], [1, 0], [0.6, 0.8], [0.6, 0.8], [1, 0], [0.6, 0.8], [1, 0]], dtype=np.float32)
    q = np.array([[1, 0]], dtype=np.float32)
    for block in (2, 3, 100):
        idx, _ = top_k(q, d, 5, backend="numpy", doc_block=block)
        assert idx[0].tolist() == [1, 4, 6, 0, 2], block


def test_k_larger_than_corpus_and_bad_shapes() -> None:
    d = np.eye(3, dtype=np.float32)
    idx, val = top_k(d, d, 10, backend="numpy")
    assert idx.shape == (3, 3)
    assert idx[:, 0].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="same width"):
        top_k(np.ones((2, 4)), d, 2)


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
def test_faiss_agrees_with_numpy_without_ties() -> None:
    rng = np.random.default_rng(2)
    q = rng.standard_normal((20, 32)).astype(np.float32)
    d = rng.standard_normal((400, 32)).astype(np.float32)
    a, _ = top_k(q, d, 10, backend="numpy")
    b, _ = top_k(q, d, 10, backend="faiss")
    assert np.array_equal(a, b)
