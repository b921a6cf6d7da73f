"""BEIR-style evaluation of a *built index*: what users get from ``qembed search``.

``qembed eval retrieval`` scores a model on whole documents; this scores the whole search
stack (chunking, store, BM25, fusion) on the same folders and with the same metric code
(``qembed.eval.metrics``, trec_eval rules). Chunks are ranked, then collapsed to their
documents in rank order (a document ranks where its best chunk ranks), which is how a
passage index is scored against document-level judgements.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qembed.search.documents import Chunk
from qembed.search.ingest import RecordFields

# How a BEIR corpus.jsonl maps to records: its ids become the documents' paths.
BEIR_FIELDS = RecordFields(text_field="text", id_field="_id", title_field="title")


@dataclass
class IndexEvaluation:
    mode: str
    metrics: dict[str, float]
    n_queries: int
    seconds: float

    def line(self) -> str:
        return f"{self.mode:>6}: nDCG@10 {100 * self.metrics['ndcg@10']:.2f}  recall@100 {100 * self.metrics.get('recall@100', float('nan')):.2f}  ({self.n_queries} queries, {self.seconds:.1f} s)"


def rank_documents(
    index: Any, query: str, *, mode: str, depth: int, doc_key: Callable[[Chunk], str]
) -> list[str]:
    """Documents in the order of their best chunk among the top ``depth`` chunks."""
    hits = index.search(query, k=depth, mode=mode)
    return list(dict.fromkeys(doc_key(h.chunk) for h in hits))


def evaluate_index(
    index: Any,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    mode: str = "dense",
    depth: int = 200,
    doc_key: Callable[[Chunk], str] = lambda c: c.path,
) -> IndexEvaluation:
    """nDCG@10 (and friends) of ``index.search`` over the judged queries."""
    from qembed.eval.metrics import retrieval_metrics

    start = time.perf_counter()
    run = {
        qid: rank_documents(index, text, mode=mode, depth=depth, doc_key=doc_key)
        for qid, text in queries.items()
        if qid in qrels
    }
    scores = retrieval_metrics(run, qrels)
    return IndexEvaluation(mode, scores.metrics, scores.n_scored, time.perf_counter() - start)


def evaluate_beir(
    index: Any, folder: str | Path, *, modes: tuple[str, ...] = ("dense", "hybrid"), split: str | None = None
) -> list[IndexEvaluation]:
    """Score an index built from ``folder/corpus.jsonl`` (with ``BEIR_FIELDS``) on its queries."""
    from qembed.eval.datasets import load_beir

    data = load_beir(folder, split=split)
    return [evaluate_index(index, data.queries, data.qrels, mode=m) for m in modes]
