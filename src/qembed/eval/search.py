"""Exact top-k inner-product search for retrieval evaluation.

Evaluation must not add approximation error of its own, so the search is exhaustive:
numpy matrix products over blocks of queries and documents (memory stays bounded by the
block sizes), or faiss's exact ``IndexFlatIP`` for large corpora when faiss is installed.

Ties: the numpy search (``qembed.common.topk`` per block of documents, then over the
blocks' winners) ranks equal scores by corpus order (lower index first), every time,
on every machine, so that duplicate documents cannot make two runs disagree. faiss does not
promise an order for ties at the cut-off; ``auto`` therefore uses it only when the product
of query and corpus sizes is large enough for speed to matter.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from qembed.common.topk import topk

SearchBackend = Literal["auto", "numpy", "faiss"]
FAISS_ABOVE = 2_000_000_000  # queries x documents above which `auto` picks faiss


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _numpy_topk(
    queries: np.ndarray, docs: np.ndarray, k: int, query_block: int, doc_block: int
) -> tuple[np.ndarray, np.ndarray]:
    n_q, n_d = queries.shape[0], docs.shape[0]
    k = min(k, n_d)
    out_idx = np.empty((n_q, k), dtype=np.int64)
    out_val = np.empty((n_q, k), dtype=np.float32)
    for q0 in range(0, n_q, query_block):
        qb = queries[q0 : q0 + query_block]
        best_idx: np.ndarray | None = None
        best_val: np.ndarray | None = None
        for d0 in range(0, n_d, doc_block):
            idx, val = topk(qb @ docs[d0 : d0 + doc_block].T, k)
            idx = idx + d0
            if best_idx is None:
                best_idx, best_val = idx, val
                continue
            # Earlier blocks first: equal scores already sit in index order, so the
            # position order topk breaks ties by is the corpus order.
            cand_idx = np.concatenate([best_idx, idx], axis=1)
            cand_val = np.concatenate([best_val, val], axis=1)
            order, best_val = topk(cand_val, k)
            best_idx = np.take_along_axis(cand_idx, order, axis=1)
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
        raise ValueError(
            f"queries {queries.shape} and documents {docs.shape} must be 2-D with the same width."
        )
    if k < 1 or docs.shape[0] == 0:
        raise ValueError("need k >= 1 and at least one document.")
    if backend == "faiss" and not faiss_available():
        raise ValueError("faiss is not installed: pip install faiss-cpu, or use the numpy search.")
    use_faiss = backend == "faiss" or (
        backend == "auto" and queries.shape[0] * docs.shape[0] > FAISS_ABOVE and faiss_available()
    )
    if use_faiss:
        return _faiss_topk(queries, docs, k)
    return _numpy_topk(queries, docs, k, query_block, doc_block)
