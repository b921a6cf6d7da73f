"""Evaluation metrics in plain numpy, with the tie handling of the reference tools.

Why our own instead of scipy/sklearn/pytrec_eval: they are not dependencies of qembed, and
each metric here is a few lines whose tie rules we can state and test:

- correlations (Spearman) use average ranks for ties, as ``scipy.stats.spearmanr``;
- ROC AUC counts a tied positive/negative pair as half a win (Mann-Whitney U), as
  ``sklearn.metrics.roc_auc_score``;
- average precision steps only at distinct scores, so tied items enter the
  precision-recall curve together, as ``sklearn.metrics.average_precision_score``;
- best-threshold accuracy/F1 only put thresholds between distinct scores (a threshold
  cannot split tied items);
- retrieval metrics follow trec_eval / pytrec_eval as used by BEIR and MTEB: linear gain
  for graded nDCG, a document is relevant when its grade is >= 1, Recall and MAP divide by
  all relevant documents of the query. Queries without any relevant document cannot be
  scored (their ideal DCG and recall are undefined); they are left out of the means and
  counted, instead of silently scoring 0 for every model.

All functions take raw scores/labels and return plain floats in [0, 1] (the task layer
multiplies by 100 for display, the MTEB convention).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


def _vector(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return array


def _pair(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, names: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector(a, names[0]), _vector(b, names[1])
    if x.shape != y.shape:
        raise ValueError(f"{names[0]} and {names[1]} differ in length ({x.size} vs {y.size}).")
    if x.size < 2:
        raise ValueError(f"need at least 2 values, got {x.size}.")
    return x, y


def rankdata(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the average of the ranks they span (scipy's 'average')."""
    x = _vector(values, "values")
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Start of each run of equal values, in sorted order.
    starts = np.concatenate(([True], sorted_x[1:] != sorted_x[:-1]))
    run_id = np.cumsum(starts) - 1
    run_start = np.flatnonzero(starts)
    run_end = np.concatenate((run_start[1:], [x.size]))  # exclusive
    avg_rank = (run_start + run_end + 1) / 2.0  # mean of (start+1 .. end)
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = avg_rank[run_id]
    return ranks


def pearson(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation; NaN when one side is constant (correlation is undefined)."""
    x, y = _pair(a, b, ("a", "b"))
    x = x - x.mean()
    y = y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float("nan") if denom == 0 else float(x @ y) / denom


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation = Pearson of average ranks (correct with ties)."""
    x, y = _pair(a, b, ("a", "b"))
    return pearson(rankdata(x), rankdata(y))


def _binary(labels: Sequence[float] | np.ndarray) -> np.ndarray:
    y = _vector(labels, "labels")
    if not np.all((y == 0) | (y == 1)):
        bad = sorted(set(y[(y != 0) & (y != 1)].tolist()))[:5]
        raise ValueError(f"labels must be 0 or 1, found {bad}.")
    return y.astype(bool)


def _both_classes(y: np.ndarray) -> None:
    if y.all() or not y.any():
        raise ValueError("labels must contain both classes (some 0 and some 1).")


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray) -> float:
    """Probability that a random positive outscores a random negative; ties count 1/2."""
    s, _ = _pair(scores, labels, ("scores", "labels"))
    y = _binary(labels)
    _both_classes(y)
    ranks = rankdata(s)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _distinct_cumulative(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Descending distinct score values and cumulative (tp, fp) counted down to each of them."""
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], y[order]
    tp = np.cumsum(t)
    fp = np.cumsum(~t)
    last_of_run = np.concatenate((s[1:] != s[:-1], [True]))
    return s[last_of_run], tp[last_of_run].astype(np.float64), fp[last_of_run].astype(np.float64)


def average_precision(scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray) -> float:
    """Area under the step precision-recall curve, thresholds at distinct scores only."""
    s, _ = _pair(scores, labels, ("scores", "labels"))
    y = _binary(labels)
    if not y.any():
        raise ValueError("average precision needs at least one positive label.")
    _, tp, fp = _distinct_cumulative(s, y)
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    recall_steps = np.diff(np.concatenate(([0.0], recall)))
    return float((recall_steps * precision).sum())


@dataclass(frozen=True)
class ThresholdScore:
    """A score reached by predicting 1 for ``similarity >= threshold``."""

    value: float
    threshold: float
    precision: float = float("nan")
    recall: float = float("nan")


def best_accuracy(
    scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray
) -> ThresholdScore:
    """Best accuracy over thresholds that never split tied scores.

    Candidate cuts: predict 1 for everything scoring at or above each distinct value (or for
    nothing). The threshold returned is the midpoint to the next lower distinct value, so
    that it separates the two groups on new data too.
    """
    s, _ = _pair(scores, labels, ("scores", "labels"))
    y = _binary(labels)
    values, tp, fp = _distinct_cumulative(s, y)
    n_pos, n = float(y.sum()), float(y.size)
    # Cut k predicts 1 for the first k distinct groups; cut 0 predicts nothing.
    tp_all = np.concatenate(([0.0], tp))
    fp_all = np.concatenate(([0.0], fp))
    tn_all = (n - n_pos) - fp_all
    accuracy = (tp_all + tn_all) / n
    k = int(np.argmax(accuracy))
    return ThresholdScore(float(accuracy[k]), _cut_threshold(values, k))


def _cut_threshold(values: np.ndarray, k: int) -> float:
    """Threshold of cut k (predict 1 for the k highest distinct values)."""
    if k == 0:
        return float(np.nextafter(values[0], np.inf))  # nothing reaches it
    if k == values.size:
        return float(values[-1])
    return float((values[k - 1] + values[k]) / 2.0)


def best_f1(scores: Sequence[float] | np.ndarray, labels: Sequence[float] | np.ndarray) -> ThresholdScore:
    """Best F1 of the positive class over tie-respecting thresholds (with its precision/recall)."""
    s, _ = _pair(scores, labels, ("scores", "labels"))
    y = _binary(labels)
    if not y.any():
        raise ValueError("F1 needs at least one positive label.")
    values, tp, fp = _distinct_cumulative(s, y)
    n_pos = float(y.sum())
    f1 = 2 * tp / (tp + fp + n_pos)
    k = int(np.argmax(f1))
    precision = tp[k] / (tp[k] + fp[k])
    recall = tp[k] / n_pos
    return ThresholdScore(float(f1[k]), _cut_threshold(values, k + 1), float(precision), float(recall))


# -- retrieval ------------------------------------------------------------------------------

Qrels = Mapping[str, Mapping[str, int]]  # query id -> doc id -> grade
Run = Mapping[str, Sequence[str]]  # query id -> ranked doc ids (best first)


def dcg(gains: Sequence[float] | np.ndarray, k: int) -> float:
    """Discounted cumulative gain with linear gain (trec_eval's ndcg_cut): sum g_i / log2(i + 1)."""
    g = np.asarray(gains, dtype=np.float64)[:k]
    return float((g / np.log2(np.arange(2, g.size + 2))).sum())


def ndcg_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    """Graded nDCG@k of one ranking; ideal ranking built from every judged document."""
    ideal = sorted((max(g, 0) for g in grades.values()), reverse=True)
    idcg = dcg(ideal, k)
    if idcg == 0:
        raise ValueError("nDCG is undefined for a query without relevant documents.")
    return dcg([max(grades.get(d, 0), 0) for d in ranked[:k]], k) / idcg


def _relevant(grades: Mapping[str, int]) -> set[str]:
    return {d for d, g in grades.items() if g >= 1}


def mrr_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    relevant = _relevant(grades)
    for i, d in enumerate(ranked[:k]):
        if d in relevant:
            return 1.0 / (i + 1)
    return 0.0


def precision_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    """Relevant documents in the top k divided by k (k, not the list length: trec_eval's P_k)."""
    relevant = _relevant(grades)
    return sum(d in relevant for d in ranked[:k]) / k


def recall_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    relevant = _relevant(grades)
    if not relevant:
        raise ValueError("recall is undefined for a query without relevant documents.")
    return sum(d in relevant for d in ranked[:k]) / len(relevant)


def average_precision_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    """AP@k as trec_eval's map_cut: precision at each relevant hit in the top k, over ALL relevant."""
    relevant = _relevant(grades)
    if not relevant:
        raise ValueError("average precision is undefined for a query without relevant documents.")
    hits, total = 0, 0.0
    for i, d in enumerate(ranked[:k]):
        if d in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / len(relevant)


@dataclass
class RetrievalScores:
    """Means over the scored queries, plus which queries could not be scored."""

    metrics: dict[str, float]
    n_scored: int
    unscored: list[str] = field(default_factory=list)  # queries with no relevant document
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)


def retrieval_metrics(
    run: Run,
    qrels: Qrels,
    *,
    ndcg: Sequence[int] = (10,),
    mrr: Sequence[int] = (10,),
    precision: Sequence[int] = (1,),
    recall: Sequence[int] = (10, 100),
    map_: Sequence[int] = (100,),
) -> RetrievalScores:
    """Mean metrics over queries that have at least one relevant document.

    A query in ``qrels`` that is missing from ``run`` counts as an empty ranking (all zeros),
    so a search that drops queries cannot look better.
    """
    per_query: dict[str, dict[str, float]] = {}
    unscored: list[str] = []
    for qid, grades in qrels.items():
        if not _relevant(grades):
            unscored.append(qid)
            continue
        ranked = list(run.get(qid, ()))
        scores: dict[str, float] = {}
        for k in ndcg:
            scores[f"ndcg@{k}"] = ndcg_at_k(ranked, grades, k)
        for k in mrr:
            scores[f"mrr@{k}"] = mrr_at_k(ranked, grades, k)
        for k in precision:
            scores[f"p@{k}"] = precision_at_k(ranked, grades, k)
        for k in recall:
            scores[f"recall@{k}"] = recall_at_k(ranked, grades, k)
        for k in map_:
            scores[f"map@{k}"] = average_precision_at_k(ranked, grades, k)
        per_query[qid] = scores
    if not per_query:
        raise ValueError("no query has a relevant document (grade >= 1); nothing to evaluate.")
    names = next(iter(per_query.values())).keys()
    means = {name: float(np.mean([s[name] for s in per_query.values()])) for name in names}
    return RetrievalScores(means, len(per_query), unscored, per_query)
