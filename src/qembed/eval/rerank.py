"""Second-stage reranking of a retrieval run: the top ``depth`` documents of each query re-scored
by a reranker (``qembed.rerank.Reranker``: Qwen3-Reranker or a cross-encoder), the rest kept in
the retriever's order below them. ``qembed eval retrieval --rerank`` reports the metrics of both
runs in one report, so the gain (or loss) of the second stage is read off one table.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

Run = dict[str, list[str]]
# Pairs per reranker call: a progress step, and a bound on the rows tokenized at once.
CHUNK = 256


class PairScoring(Protocol):
    """What reranking a run needs: ``qembed.rerank.Reranker.score``."""

    def score(self, pairs: Any, *, raw: bool = False) -> np.ndarray: ...


def rerank_run(
    reranker: PairScoring,
    run: Run,
    queries: dict[str, str],
    corpus: dict[str, str],
    *,
    depth: int,
    progress: Any = None,
    label: str = "rerank",
) -> Run:
    """``run`` with each query's first ``depth`` documents re-ordered by the reranker's score
    (ties keep the retriever's order). Documents without text cannot be scored: they go to the
    end of the re-scored head, never to an error that loses the whole evaluation."""
    pairs: list[tuple[str, str]] = []
    where: list[tuple[str, int]] = []
    for qid, docs in run.items():
        for position, doc in enumerate(docs[:depth]):
            text = corpus.get(doc, "")
            if text.strip():
                pairs.append((queries[qid], text))
                where.append((qid, position))
    task = progress.add_task(label, total=len(pairs)) if progress is not None else None
    scores = np.empty(len(pairs), dtype=np.float64)
    for start in range(0, len(pairs), CHUNK):
        scores[start : start + CHUNK] = reranker.score(pairs[start : start + CHUNK], raw=True)
        if progress is not None:
            progress.advance(task, len(pairs[start : start + CHUNK]))
    by_query: dict[str, dict[int, float]] = {}
    for (qid, position), score in zip(where, scores, strict=True):
        by_query.setdefault(qid, {})[position] = float(score)
    out: Run = {}
    for qid, docs in run.items():
        got = by_query.get(qid, {})
        head = sorted(range(min(depth, len(docs))), key=lambda p: (-got.get(p, -np.inf), p))
        out[qid] = [docs[p] for p in head] + docs[depth:]
    return out
