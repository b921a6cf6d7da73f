"""Exact top-k inner-product search for retrieval evaluation.

Evaluation must not add approximation error of its own, so the search is exhaustive:
numpy matrix products over blocks of queries and documents (memory stays bounded by the
block sizes), or faiss's exact ``IndexFlatIP`` for large corpora when faiss is installed.

Ties: the numpy search ranks equal scores by corpus order (lower index first), every time,
on every machine, so that duplicate documents cannot make two runs disagree. faiss does not
promise an order for ties at the cut-off; ``auto`` therefore uses it only when the product
of query and corpus sizes is large enough for speed to matter.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

SearchBackend = Literal["auto", "numpy", "faiss"]
FAISS_ABOVE = 2_000_000_000  # queries x documents above which `auto` picks faiss


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _block_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k of each row: (indices, scores), by score descending then index ascending."""
    rows, n = scores.shape
    k = min(k, n)
    if k == n:
        order = np.argsort(-scores, axis=1, kind="stable")
        return order, np.take_along_axis(scores, order, axis=1)
    kth = np.partition(scores, n - k, axis=1)[:, n - k]  # the k-th largest value of each row
    mask = scores >= kth[:, None]
    counts = mask.sum(axis=1)
    idx = np.empty((rows, k), dtype=np.int64)
    exact = counts == k  # no tie straddles the cut-off: the selected set is already right
    if exact.any():
        cols = np.nonzero(mask[exact])[1].reshape(-1, k)  # ascending index within each row
        vals = np.take_along_axis(scores[exact], cols, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        idx[exact] = np.take_along_axis(cols, order, axis=1)
    tied = np.flatnonzero(~exact)
    if tied.size:
        idx[tied] = np.argsort(-scores[tied], axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(scores, idx, axis=1)


def _numpy_topk(queries: np.ndarray, docs: np.ndarray, k: int, query_block: int, doc_block: int) -> tuple[np.ndarray, np.ndarray]:
    n_q, n_d = queries.shape[0], docs.shape[0]
    k = min(k, n_d)
    out_idx = np.empty((n_q, k), dtype=np.int64)
    out_val = np.empty((n_q, k), dtype=np.float32)
    for q0 in range(0, n_q, query_block):
        qb = queries[q0 : q0 + query_block]
        best_idx: np.ndarray | None = None
        best_val: np.ndarray | None = None
        for d0 in range(0, n_d, doc_block):
            idx, val = _block_topk(qb @ docs[d0 : d0 + doc_block].T, k)
            idx = idx + d0
            if best_idx is None:
                best_idx, best_val = idx, val
                continue
            # Earlier blocks first: a stable sort keeps their (lower) indices ahead on ties.
            cand_idx = np.concatenate([best_idx, idx], axis=1)
            cand_val = np.concatenate([best_val, val], axis=1)
            order = np.argsort(-cand_val, axis=1, kind="stable")[:, :k]
            best_idx = np.take_along_axis(cand_idx, order, axis=1)
            best_val = np.take_along_axis(cand_val, order, axis=1)
        assert best_idx is not None and best_val is not None
        out_idx[q0 : q0 + len(qb)] = best_idx
        out_val[q0 : q0 + len(qb)] = best_val
    return out_idx, out_val


def _faiss_topk(queries: np.ndarray, docs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(np.ascontiguousarray(docs, dtype=np.float32))
    val, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, docs.shape[0]))
    return idx.astype(np.int64), val


def top_k(
    queries: np.ndarray,
    docs: np.ndarray,
    k: int,
    *,
    backend: SearchBackend = "auto",
    query_block: int = 256,
    doc_block: int = 65_536,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best documents per query by inner product (cosine for
    normalized vectors): two [n_queries, min(k, n_docs)] arrays, best first."""
    queries = np.asarray(queries, dtype=np.float32)
    docs = np.asarray(docs, dtype=np.float32)
    if queries.ndim != 2 or docs.ndim != 2 or queries.shape[1] != docs.shape[1]:
        raise ValueError(f"queries {queries.shape} and documents {docs.shape} must be 2-D with the same width.")
    if k < 1 or docs.shape[0] == 0:
        raise ValueError("need k >= 1 and at least one document.")
    if backend == "faiss" and not faiss_available():
        raise ValueError("faiss is not installed: pip install faiss-cpu, or use the numpy search.")
    use_faiss = backend == "faiss" or (backend == "auto" and queries.shape[0] * docs.shape[0] > FAISS_ABOVE and faiss_available())
    if use_faiss:
        return _faiss_topk(queries, docs, k)
    return _numpy_topk(queries, docs, k, query_block, doc_block)
