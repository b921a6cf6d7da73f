"""Ranking: dense top-k, BM25, and their reciprocal-rank fusion, with filters and a re-rank hook.

Why reciprocal rank fusion for hybrid: cosine similarities and BM25 scores live on
unrelated scales (and BM25's depends on the corpus), so adding them needs per-index
tuning; RRF only uses ranks: score = sum over lists of 1 / (60 + rank), the constant from
Cormack et al. (2009). A chunk that both lists rank well wins; an exact identifier that
only BM25 finds still enters the top k when BM25 ranks it first.

The searcher never embeds: callers pass the query vector, so the same code serves the
Python API (an in-process Embedder) and the HTTP route (the server's batching queue).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from qembed.errors import InputError, InternalError
from qembed.search.bm25 import query_terms
from qembed.search.documents import Chunk
from qembed.search.store.base import Filters, Store

Mode = Literal["dense", "hybrid", "bm25"]
MODES: tuple[str, ...] = ("dense", "hybrid", "bm25")
MAX_K = 1000
RRF_K = 60


@dataclass
class SearchResult:
    rank: int
    score: float  # what the ranking used: cosine (dense), BM25, RRF (hybrid) or the re-ranker's
    chunk: Chunk
    dense_score: float | None = None
    bm25_score: float | None = None
    dense_rank: int | None = None
    bm25_rank: int | None = None
    rerank_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rank": self.rank, "score": self.score}
        out.update(self.chunk.to_dict())
        out["scores"] = {
            "dense": self.dense_score, "bm25": self.bm25_score, "dense_rank": self.dense_rank,
            "bm25_rank": self.bm25_rank, "rerank": self.rerank_score,
        }  # fmt: skip
        return out


# Given the query and candidates (best first), return one score per candidate (higher is better).
Reranker = Callable[[str, list[SearchResult]], Sequence[float]]


def check_request(query: Any, k: Any, mode: Any) -> None:
    if not isinstance(query, str) or not query.strip():
        raise InputError("query is empty; send the text to search for.", param="query")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InputError(f"k must be an integer between 1 and {MAX_K}, not {k!r}.", param="k")
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, not {mode!r}.", param="mode")


class Searcher:
    """Runs one query against a store."""

    def __init__(self, store: Store, *, candidates: int = 50, rrf_k: int = RRF_K) -> None:
        self.store = store
        self.candidates = candidates
        self.rrf_k = rrf_k

    def search(
        self,
        query: str,
        vector: np.ndarray | None,
        *,
        k: int = 10,
        mode: Mode = "dense",
        filters: Filters | None = None,
        rerank: Reranker | None = None,
    ) -> list[SearchResult]:
        """Top k chunks; ``vector`` is the query's embedding (unused in bm25 mode)."""
        check_request(query, k, mode)
        depth = max(k, self.candidates) if rerank is not None else k
        if mode in ("dense", "hybrid") and vector is None:
            raise InputError(f"{mode} search needs the query embedding.", param="query")
        if mode == "dense":
            hits = self.store.dense_search(
                cast(np.ndarray, vector), depth, filters
            )  # not None: checked above
            results = [
                SearchResult(i + 1, h.score, h.chunk, dense_score=h.score, dense_rank=i + 1)
                for i, h in enumerate(hits)
            ]
        elif mode == "bm25":
            hits = self.store.text_search(query_terms(query), depth, filters)
            results = [
                SearchResult(i + 1, h.score, h.chunk, bm25_score=h.score, bm25_rank=i + 1)
                for i, h in enumerate(hits)
            ]
        else:
            results = self._hybrid(query, vector, max(depth, self.candidates, 2 * k), filters)[:depth]
        if rerank is not None and results:
            results = self._rerank(query, results, rerank)
        results = results[:k]
        for i, r in enumerate(results):
            r.rank = i + 1
        return results

    def _hybrid(
        self, query: str, vector: np.ndarray | None, depth: int, filters: Filters | None
    ) -> list[SearchResult]:
        dense = self.store.dense_search(vector, depth, filters)  # type: ignore[arg-type]
        lexical = self.store.text_search(query_terms(query), depth, filters)
        by_id: dict[str, SearchResult] = {}
        for i, h in enumerate(dense):
            r = by_id.setdefault(h.chunk.chunk_id, SearchResult(0, 0.0, h.chunk))
            r.dense_score, r.dense_rank = h.score, i + 1
            r.score += 1.0 / (self.rrf_k + i + 1)
        for i, h in enumerate(lexical):
            r = by_id.setdefault(h.chunk.chunk_id, SearchResult(0, 0.0, h.chunk))
            r.bm25_score, r.bm25_rank = h.score, i + 1
            r.score += 1.0 / (self.rrf_k + i + 1)
        # Ties (same fused score) go to the better dense rank, then the better BM25 rank.
        return sorted(
            by_id.values(), key=lambda r: (-r.score, r.dense_rank or depth + 1, r.bm25_rank or depth + 1)
        )

    @staticmethod
    def _rerank(query: str, results: list[SearchResult], rerank: Reranker) -> list[SearchResult]:
        scores = list(rerank(query, results))
        if len(scores) != len(results):
            raise InternalError(f"the re-ranker returned {len(scores)} scores for {len(results)} candidates")
        for r, s in zip(results, scores, strict=True):
            r.rerank_score = float(s)
            r.score = float(s)
        return sorted(results, key=lambda r: -r.score)
