"""The one exact top-k over scores: by score descending, then index ascending.

The tie order is part of the contract: equal scores (duplicate documents, float16 scores,
masked rows) always rank by position, on every machine and every run, so two evaluations
of the same vectors cannot disagree and a search returns the same hits each time.

O(n) per row plus a sort of the k selected: ``np.partition`` finds each row's k-th best
score, everything above it is taken, and of the scores equal to it the lowest indices fill
the remaining places. NaN ranks as -inf (below every number, tied with -inf by index).
"""

from __future__ import annotations

import numpy as np


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) of the ``min(k, n)`` best entries, best first.

    ``scores`` is 1-D (one row: two 1-D results) or 2-D [rows, n] (each row on its own:
    two [rows, min(k, n)] results). Indices are int64; scores keep their dtype.
    """
    scores = np.asarray(scores)
    if scores.ndim == 1:
        idx, val = topk(scores[None, :], k)
        return idx[0], val[0]
    if scores.ndim != 2:
        raise ValueError(f"scores must be 1-D or 2-D, not {scores.shape}.")
    rows, n = scores.shape
    k = max(0, min(int(k), n))
    if k == 0:
        return np.empty((rows, 0), dtype=np.int64), scores[:, :0]
    key = scores
    if np.issubdtype(scores.dtype, np.floating):
        nan = np.isnan(scores)
        if nan.any():
            key = np.where(nan, -np.inf, scores)
    if k == n:
        order = np.argsort(-key, axis=1, kind="stable")
        return order, np.take_along_axis(scores, order, axis=1)
    kth = np.partition(key, n - k, axis=1)[:, n - k : n - k + 1]  # each row's k-th best
    mask = key >= kth
    tied = np.flatnonzero(mask.sum(axis=1) != k)  # rows where ties straddle the cut-off
    if tied.size:
        above = key[tied] > kth[tied]
        at = key[tied] == kth[tied]
        room = k - above.sum(axis=1, keepdims=True)  # places left for the ties: lowest indices first
        mask[tied] = above | (at & (np.cumsum(at, axis=1) <= room))
    cols = np.nonzero(mask)[1].reshape(rows, k)  # ascending index within each row
    order = np.argsort(-np.take_along_axis(key, cols, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(cols, order, axis=1)
    return idx, np.take_along_axis(scores, idx, axis=1)
