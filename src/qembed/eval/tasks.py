"""The four evaluations: STS, pair classification, retrieval, code search.

Each takes a target and loaded data, embeds what it needs through ``encode_texts`` (cache,
progress), and returns a ``TaskResult``. Scores are x100 (the MTEB convention) except raw
cosines and thresholds, whose names say so.

Instructions follow ``qembed.model.instructions.TASKS``: STS uses ``sts`` and pair
classification ``pair_classification`` on both sides; retrieval instructs queries only
(``retrieval``), code search likewise (``code_retrieval``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qembed.eval import metrics
from qembed.eval.cache import VectorCache
from qembed.eval.datasets import PairData, RetrievalData
from qembed.eval.encode import EncodeCounts, encode_texts
from qembed.eval.prompts import Prompting
from qembed.eval.rerank import PairScoring, rerank_run
from qembed.eval.search import SearchBackend, top_k
from qembed.eval.targets import Target

DEFAULT_PRESETS = {
    "sts": "sts",
    "pairs": "pair_classification",
    "retrieval": "retrieval",
    "code": "code_retrieval",
}
MAIN_METRIC = {"sts": "spearman", "pairs": "ap", "retrieval": "ndcg@10", "code": "roc_auc"}
RETRIEVAL_CUTOFFS: dict[str, tuple[int, ...]] = {
    "ndcg": (10,),
    "mrr": (10,),
    "precision": (1,),
    "recall": (10, 100),
    "map_": (100,),
}


@dataclass
class TaskResult:
    """One target on one data set."""

    task: str
    dataset: str
    target: str
    main_metric: str
    scores: dict[str, float]
    size: int  # pairs, or scored queries
    seconds: float
    counts: EncodeCounts
    prompts: dict[str, str]  # side -> what it received
    notes: list[str] = field(default_factory=list)

    @property
    def main_score(self) -> float:
        return self.scores[self.main_metric]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["main_score"] = self.main_score
        return out


def _x100(value: float) -> float:
    return float(value) * 100.0


def _pair_cosines(
    target: Target,
    data: PairData,
    prompting: Prompting,
    symmetric: bool,
    cache: VectorCache | None,
    progress: Any,
) -> tuple[np.ndarray, EncodeCounts, dict[str, str]]:
    """Cosine of each pair. Symmetric tasks embed the distinct sentences of both sides once,
    as queries (MTEB encodes both sides of STS the same way)."""
    if symmetric:
        vectors, counts = encode_texts(
            target,
            data.left + data.right,
            prompting,
            "query",
            cache=cache,
            progress=progress,
            label="sentences",
        )
        a, b = vectors[: len(data)], vectors[len(data) :]
        prompts = {"both sides": target.prompt_description(prompting, "query")}
    else:
        a, counts = encode_texts(
            target, data.left, prompting, "query", cache=cache, progress=progress, label="queries"
        )
        b, doc_counts = encode_texts(
            target, data.right, prompting, "document", cache=cache, progress=progress, label="documents"
        )
        counts.add(doc_counts)
        prompts = {
            "query": target.prompt_description(prompting, "query"),
            "document": target.prompt_description(prompting, "document"),
        }
    return np.einsum("ij,ij->i", a, b).astype(np.float64), counts, prompts


def evaluate_sts(
    target: Target,
    data: PairData,
    *,
    prompting: Prompting | None = None,
    cache: VectorCache | None = None,
    progress: Any = None,
) -> TaskResult:
    """Cosine Spearman (main) and Pearson against graded gold scores."""
    t0 = time.perf_counter()
    prompting = prompting or Prompting(DEFAULT_PRESETS["sts"])
    cos, counts, prompts = _pair_cosines(target, data, prompting, prompting.symmetric, cache, progress)
    scores = {
        "spearman": _x100(metrics.spearman(cos, data.scores)),
        "pearson": _x100(metrics.pearson(cos, data.scores)),
    }
    notes = []
    if set(np.unique(data.scores)) <= {0.0, 1.0}:
        notes.append(
            "gold scores are 0/1 labels: Spearman then measures label separation (C-MTEB scores ATEC/BQ/LCQMC this way)"
        )
    return TaskResult(
        "sts",
        data.name,
        target.name,
        MAIN_METRIC["sts"],
        scores,
        len(data),
        time.perf_counter() - t0,
        counts,
        prompts,
        notes,
    )


def evaluate_pairs(
    target: Target,
    data: PairData,
    *,
    prompting: Prompting | None = None,
    cache: VectorCache | None = None,
    progress: Any = None,
) -> TaskResult:
    """Average precision of cosine (MTEB's PairClassification main score), best accuracy and F1."""
    data.require_binary()
    t0 = time.perf_counter()
    prompting = prompting or Prompting(DEFAULT_PRESETS["pairs"])
    cos, counts, prompts = _pair_cosines(target, data, prompting, prompting.symmetric, cache, progress)
    acc = metrics.best_accuracy(cos, data.scores)
    f1 = metrics.best_f1(cos, data.scores)
    scores = {
        "ap": _x100(metrics.average_precision(cos, data.scores)),
        "accuracy": _x100(acc.value),
        "accuracy_threshold_cos": acc.threshold,
        "f1": _x100(f1.value),
        "f1_precision": _x100(f1.precision),
        "f1_recall": _x100(f1.recall),
        "f1_threshold_cos": f1.threshold,
    }
    return TaskResult(
        "pairs",
        data.name,
        target.name,
        MAIN_METRIC["pairs"],
        scores,
        len(data),
        time.perf_counter() - t0,
        counts,
        prompts,
    )


def evaluate_code(
    target: Target,
    data: PairData,
    *,
    prompting: Prompting | None = None,
    cache: VectorCache | None = None,
    progress: Any = None,
) -> TaskResult:
    """Query <-> code pairs with 0/1 labels: how well cosine separates matches (ROC AUC, main)."""
    data.require_binary()
    t0 = time.perf_counter()
    prompting = prompting or Prompting(DEFAULT_PRESETS["code"])
    cos, counts, prompts = _pair_cosines(target, data, prompting, False, cache, progress)
    match = data.scores == 1
    mean_match, mean_other = float(cos[match].mean()), float(cos[~match].mean())
    scores = {
        "roc_auc": _x100(metrics.roc_auc(cos, data.scores)),
        "mean_cos_match": mean_match,
        "mean_cos_nonmatch": mean_other,
        "cos_gap": mean_match - mean_other,
    }
    return TaskResult(
        "code",
        data.name,
        target.name,
        MAIN_METRIC["code"],
        scores,
        len(data),
        time.perf_counter() - t0,
        counts,
        prompts,
    )


def evaluate_retrieval(
    target: Target,
    data: RetrievalData,
    *,
    prompting: Prompting | None = None,
    cache: VectorCache | None = None,
    progress: Any = None,
    search: SearchBackend = "auto",
    rerank: PairScoring | None = None,
    rerank_depth: int = 50,
    rerank_name: str = "reranker",
) -> TaskResult:
    """nDCG@10 (main), MRR@10, P@1, Recall@10/100, MAP@100 over an exact top-100 search.

    ``rerank``: the top ``rerank_depth`` of each query re-scored by this reranker; the same
    metrics of that run are added as ``reranked_<metric>`` (the main metric stays the retriever's)."""
    t0 = time.perf_counter()
    prompting = prompting or Prompting(DEFAULT_PRESETS["retrieval"])
    query_ids, doc_ids = list(data.queries), list(data.corpus)
    q, counts = encode_texts(
        target,
        [data.queries[i] for i in query_ids],
        prompting,
        "query",
        cache=cache,
        progress=progress,
        label="queries",
    )
    d, doc_counts = encode_texts(
        target,
        [data.corpus[i] for i in doc_ids],
        prompting,
        "document",
        cache=cache,
        progress=progress,
        label="corpus",
    )
    counts.add(doc_counts)
    depth = max(max(v) for v in RETRIEVAL_CUTOFFS.values())
    idx, _ = top_k(q, d, depth, backend=search)
    run = {qid: [doc_ids[j] for j in row] for qid, row in zip(query_ids, idx, strict=True)}
    result = metrics.retrieval_metrics(run, data.qrels, **RETRIEVAL_CUTOFFS)
    scores = {name: _x100(value) for name, value in result.metrics.items()}
    notes = list(data.notes)
    if rerank is not None:
        reranked = rerank_run(rerank, run, data.queries, data.corpus, depth=rerank_depth, progress=progress)
        after = metrics.retrieval_metrics(reranked, data.qrels, **RETRIEVAL_CUTOFFS)
        scores.update({f"reranked_{name}": _x100(value) for name, value in after.metrics.items()})
        main = MAIN_METRIC["retrieval"]
        notes.append(
            f"reranked the top {rerank_depth} of each query with {rerank_name}: {main} "
            f"{scores[main]:.2f} -> {scores['reranked_' + main]:.2f}"
        )
    if result.unscored:
        notes.append(f"{len(result.unscored)} query(ies) without a relevant document left out of the means")
    prompts = {
        "query": target.prompt_description(prompting, "query"),
        "document": target.prompt_description(prompting, "document"),
    }
    return TaskResult(
        "retrieval",
        data.name,
        target.name,
        MAIN_METRIC["retrieval"],
        scores,
        result.n_scored,
        time.perf_counter() - t0,
        counts,
        prompts,
        notes,
    )
