"""The one exact top-k: score descending, then index ascending, whatever the ties."""

from __future__ import annotations

import numpy as np
import pytest

from qembed.common.topk import topk


def reference(scores: np.ndarray, k: int) -> np.ndarray:
    """Full stable sort: the order topk must reproduce."""
    key = np.where(np.isnan(scores), -np.inf, scores)
    return np.argsort(-key, axis=-1, kind="stable")[..., :k]


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7, 8, 50])
def test_matches_a_full_stable_sort_with_heavy_ties(k: int) -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(64, 8)).astype(
        np.float32
    )  # four values over 8 columns: ties everywhere
    idx, val = topk(scores, k)
    assert idx.shape == (64, min(k, 8)) and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, reference(scores, k))
    np.testing.assert_array_equal(val, np.take_along_axis(scores, idx, axis=1))


def test_ties_at_the_cut_off_keep_the_lowest_indices() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1, 0.5], dtype=np.float32)
    idx, val = topk(scores, 3)
    assert idx.tolist() == [1, 0, 2]
    assert val.tolist() == [pytest.approx(0.9), 0.5, 0.5]


def test_one_row_and_many_rows_agree() -> None:
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((5, 100)).astype(np.float32)
    idx, _ = topk(scores, 10)
    for row in range(5):
        assert topk(scores[row], 10)[0].tolist() == idx[row].tolist()


def test_float16_scores_keep_their_dtype_and_order() -> None:
    rng = np.random.default_rng(2)
    scores = (rng.integers(0, 20, 1000) / 20).astype(np.float16)
    idx, val = topk(scores, 37)
    assert val.dtype == np.float16
    assert idx.tolist() == reference(scores, 37).tolist()


def test_masked_and_nan_scores_rank_last() -> None:
    scores = np.array([np.nan, -np.inf, 0.2, np.nan, 0.3, -np.inf])
    idx, val = topk(scores, 6)
    assert idx[:2].tolist() == [4, 2]
    assert idx[2:].tolist() == [0, 1, 3, 5]  # NaN counts as -inf: by index
    assert topk(scores, 3)[0].tolist() == [4, 2, 0]


def test_edge_sizes() -> None:
    idx, val = topk(np.array([1.0, 2.0]), 0)
    assert idx.shape == (0,) and val.shape == (0,)
    assert topk(np.array([1.0, 2.0]), 10)[0].tolist() == [1, 0]
    assert topk(np.zeros((0, 4)), 2)[0].shape == (0, 2)
    with pytest.raises(ValueError):
        topk(np.zeros((2, 2, 2)), 1)


def test_eval_search_and_store_use_it() -> None:
    """The retrieval evaluation and the vector store rank ties the same way."""
    from qembed.eval.search import top_k
    from qembed.search.store.flat import _best

    docs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    assert top_k(q, docs, 2, backend="numpy", doc_block=1)[0].tolist() == [[0, 2]]
    rows = np.array([10, 11, 12, 13])
    assert _best(rows, docs @ q[0], 2)[0].tolist() == [10, 12]
    dead = np.array([-np.inf, 0.0, -np.inf, -np.inf])
    assert _best(rows, dead, 3)[0].tolist() == [11]  # masked rows never come back
