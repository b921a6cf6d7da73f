"""Every metric on small cases whose answers are worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qembed.eval import metrics as m


def test_rankdata_averages_ties() -> None:
    assert m.rankdata([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert m.rankdata([5, 5, 5]).tolist() == [2.0, 2.0, 2.0]


def test_pearson_by_hand() -> None:
    # x - mean = (-1, 0, 1); y - mean = (-7/3, -1/3, 8/3); cov = 5, var_x = 2, var_y = 114/9
    assert m.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(15 / math.sqrt(228))
    assert math.isnan(m.pearson([1, 1, 1], [1, 2, 3]))  # constant side: undefined, not 0


def test_spearman_with_ties_by_hand() -> None:
    # ranks a = (1, 2.5, 2.5, 4), b = (1, 2, 3, 4): cov = 4.5, var_a = 4.5, var_b = 5 -> sqrt(0.9)
    assert m.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))
    assert m.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)


def test_roc_auc_ties_count_half() -> None:
    # positives 0.9, 0.5; negatives 0.5, 0.1: wins 1 + 1 + 0.5 (tie) + 1 over 4 pairs
    assert m.roc_auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert m.roc_auc([0.2, 0.2], [1, 0]) == pytest.approx(0.5)


def test_average_precision_ties_enter_together() -> None:
    # >= 0.9: 0 of 1 relevant (P=0, R=0); >= 0.8: 1 of 3 (P=1/3, R=1) -> AP = 1/3 whatever the tie order
    assert m.average_precision([0.9, 0.8, 0.8], [0, 1, 0]) == pytest.approx(1 / 3)
    assert m.average_precision([0.9, 0.8, 0.8], [0, 0, 1]) == pytest.approx(1 / 3)
    # no ties: relevant at ranks 1 and 3 -> (1 + 2/3) / 2
    assert m.average_precision([0.9, 0.8, 0.7, 0.3], [1, 0, 1, 0]) == pytest.approx(5 / 6)


def test_best_accuracy_never_splits_a_tie() -> None:
    # cuts: none -> 2/3 (both negatives right); >= 0.8 -> 1 TP, 1 FP, 1 TN = 2/3; all -> 1/3.
    # Splitting the tie at 0.8 would claim 3/3.
    best = m.best_accuracy([0.8, 0.8, 0.5], [1, 0, 0])
    assert best.value == pytest.approx(2 / 3)
    assert best.threshold > 0.8  # "predict nothing" (the first best cut)


def test_best_accuracy_threshold_by_hand() -> None:
    # cuts: none .25, >=.9 .5, >=.8 .75, >=.7 .5, all .75 -> first best: >= 0.8, threshold (0.8 + 0.7) / 2
    best = m.best_accuracy([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1])
    assert best.value == pytest.approx(0.75)
    assert best.threshold == pytest.approx(0.75)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert ((scores >= best.threshold) == np.array([1, 1, 0, 1])).mean() == pytest.approx(best.value)


def test_best_f1_by_hand() -> None:
    # F1 = 2TP / (TP + FP + P): >=.9 2/3, >=.8 1/2, >=.7 4/5, all 2/3 -> 0.8 at threshold 0.65
    best = m.best_f1([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    assert best.value == pytest.approx(0.8)
    assert best.threshold == pytest.approx(0.65)
    assert best.precision == pytest.approx(2 / 3)
    assert best.recall == pytest.approx(1.0)


def test_binary_metrics_reject_bad_labels() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        m.roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="both classes"):
        m.roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        m.spearman([0.1, float("nan")], [1, 2])


GRADES = {"a": 3, "b": 1, "c": 2}


def test_ndcg_graded_by_hand() -> None:
    ranking = ["b", "x", "a", "c"]
    # DCG = 1/log2(2) + 0 + 3/log2(4) + 2/log2(5); ideal (3, 2, 1) = 3 + 2/log2(3) + 1/log2(4)
    dcg = 1 + 3 / 2 + 2 / math.log2(5)
    idcg = 3 + 2 / math.log2(3) + 1 / 2
    assert m.ndcg_at_k(ranking, GRADES, 10) == pytest.approx(dcg / idcg)
    # cut at 2: DCG = 1, ideal = 3 + 2/log2(3)
    assert m.ndcg_at_k(ranking, GRADES, 2) == pytest.approx(1 / (3 + 2 / math.log2(3)))
    assert m.ndcg_at_k(["a", "c", "b"], GRADES, 10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="without relevant"):
        m.ndcg_at_k(["a"], {"a": 0}, 10)


def test_rank_metrics_by_hand() -> None:
    grades = {"a": 1, "b": 1, "c": 0}  # c judged non-relevant
    ranking = ["c", "a", "d"]
    assert m.mrr_at_k(ranking, grades, 10) == pytest.approx(1 / 2)
    assert m.mrr_at_k(ranking, grades, 1) == 0.0
    assert m.precision_at_k(ranking, grades, 1) == 0.0
    assert m.precision_at_k(ranking, grades, 3) == pytest.approx(1 / 3)
    assert m.precision_at_k(ranking, grades, 10) == pytest.approx(1 / 10)  # divides by k, as trec_eval
    assert m.recall_at_k(ranking, grades, 3) == pytest.approx(1 / 2)
    assert m.recall_at_k(ranking, grades, 1) == 0.0
    # a at rank 2: precision 1/2, over all 2 relevant documents
    assert m.average_precision_at_k(ranking, grades, 3) == pytest.approx(1 / 4)
    # both found at ranks 1 and 3: (1 + 2/3) / 2; cut at 1: only the first counts -> 1/2
    assert m.average_precision_at_k(["a", "x", "b"], grades, 10) == pytest.approx(5 / 6)
    assert m.average_precision_at_k(["a", "x", "b"], grades, 1) == pytest.approx(1 / 2)


def test_retrieval_means_skip_queries_without_relevant_documents() -> None:
    qrels = {"q1": {"a": 2}, "q2": {"b": 0}, "q3": {"c": 1}}
    run = {"q1": ["a", "b"], "q2": ["b"]}  # q3 missing from the run: scores 0, not skipped
    scores = m.retrieval_metrics(run, qrels, ndcg=(10,), mrr=(10,), precision=(1,), recall=(10,), map_=(10,))
    assert scores.unscored == ["q2"]
    assert scores.n_scored == 2
    assert scores.metrics == {"ndcg@10": 0.5, "mrr@10": 0.5, "p@1": 0.5, "recall@10": 0.5, "map@10": 0.5}
    with pytest.raises(ValueError, match="no query"):
        m.retrieval_metrics(run, {"q2": {"b": 0}})


def test_cross_check_with_scipy_and_sklearn() -> None:
    stats = pytest.importorskip("scipy.stats")
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 300).astype(float)  # many ties
    other = scores + rng.integers(-2, 3, 300)
    labels = (other > 2).astype(int)
    assert m.spearman(scores, other) == pytest.approx(stats.spearmanr(scores, other).statistic)
    assert m.pearson(scores, other) == pytest.approx(stats.pearsonr(scores, other).statistic)
    assert m.roc_auc(scores, labels) == pytest.approx(skm.roc_auc_score(labels, scores))
    assert m.average_precision(scores, labels) == pytest.approx(skm.average_precision_score(labels, scores))
    best = m.best_f1(scores, labels)
    assert best.value == pytest.approx(skm.f1_score(labels, scores >= best.threshold))
    best_acc = m.best_accuracy(scores, labels)
    assert best_acc.value == pytest.approx(skm.accuracy_score(labels, scores >= best_acc.threshold))
    grades = {f"d{i}": int(g) for i, g in enumerate(rng.integers(0, 4, 20))}
    ranking = [f"d{i}" for i in rng.permutation(20)]
    gains = [grades[d] for d in ranking]
    assert m.ndcg_at_k(ranking, grades, 10) == pytest.approx(
        skm.ndcg_score([gains], [list(range(20, 0, -1))], k=10)
    )
