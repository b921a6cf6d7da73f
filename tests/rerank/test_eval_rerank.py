"""``qembed eval retrieval --rerank``: the retriever's metrics and the reranked run's in one report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from qembed.eval import metrics
from qembed.eval.datasets import RetrievalData, load_beir
from qembed.eval.rerank import rerank_run
from qembed.eval.tasks import RETRIEVAL_CUTOFFS, evaluate_retrieval
from tests.eval.conftest import FakeTarget


def _beir(root: Path, n_docs: int = 12, n_queries: int = 3) -> Path:
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i in range(n_docs):
            f.write(
                json.dumps({"_id": f"d{i}", "title": "", "text": f"document {i} about topic {i % 4}"}) + "\n"
            )
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for q in range(n_queries):
            f.write(json.dumps({"_id": f"q{q}", "text": f"what about topic {q % 4}?"}) + "\n")
    with open(root / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in range(n_queries):
            for i in range(n_docs):
                if i % 4 == q % 4:
                    f.write(f"q{q}\td{i}\t1\n")
    return root


class OracleReranker:
    """Scores 1 for the documents the judgements call relevant, 0 otherwise."""

    def __init__(self, data: RetrievalData) -> None:
        self.relevant = {
            (data.queries[q], data.corpus[d])
            for q, docs in data.qrels.items()
            for d, g in docs.items()
            if g > 0
        }
        self.pairs = 0

    def score(self, pairs: Any, *, raw: bool = False) -> np.ndarray:
        self.pairs += len(pairs)
        return np.array([1.0 if tuple(p) in self.relevant else 0.0 for p in pairs], dtype=np.float32)


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    return _beir(tmp_path / "beir")


def test_oracle_reranker_lifts_ndcg_to_100_and_both_runs_are_reported(beir: Path) -> None:
    data = load_beir(beir)
    oracle = OracleReranker(data)
    result = evaluate_retrieval(FakeTarget(), data, rerank=oracle, rerank_depth=12, rerank_name="oracle")
    assert oracle.pairs == 3 * 12  # every query's whole top-12 re-scored
    assert result.scores["reranked_ndcg@10"] == pytest.approx(100.0)
    assert result.scores["reranked_mrr@10"] == pytest.approx(100.0)
    assert result.scores["ndcg@10"] < 100.0  # random vectors: the retriever's run is not perfect
    assert result.main_metric == "ndcg@10"
    assert {f"reranked_{k}" for k in ("ndcg@10", "mrr@10", "p@1", "recall@10")} <= set(result.scores)
    assert any(n.startswith("reranked the top 12 of each query with oracle: ndcg@10") for n in result.notes)
    plain = evaluate_retrieval(FakeTarget(), data)
    assert plain.scores["ndcg@10"] == result.scores["ndcg@10"]
    assert not any(k.startswith("reranked_") for k in plain.scores)


def test_depth_bounds_what_is_rescored() -> None:
    run = {"q": ["a", "b", "c", "d"]}
    scores = {"a": 0.0, "b": 5.0, "c": 9.0, "d": 100.0}

    class ByDoc:
        def score(self, pairs: Any, *, raw: bool = False) -> np.ndarray:
            return np.array([scores[d] for _, d in pairs])

    out = rerank_run(ByDoc(), run, {"q": "query"}, {k: k for k in "abcd"}, depth=3)
    assert out == {"q": ["c", "b", "a", "d"]}  # d is below the depth: not re-scored, stays last
    empty = rerank_run(ByDoc(), run, {"q": "query"}, {"a": "a", "b": "", "c": "c", "d": "d"}, depth=4)
    assert empty == {"q": ["d", "c", "a", "b"]}  # a document without text goes to the end of the head


@pytest.mark.integration
def test_tiny_reranker_reorders_the_run(beir: Path, tiny_reranker: Any) -> None:
    data = load_beir(beir)
    result = evaluate_retrieval(FakeTarget(), data, rerank=tiny_reranker, rerank_depth=5)
    # the expected run, by hand: the retriever's order (rank by the fake vectors) re-sorted by the model
    plain = evaluate_retrieval(FakeTarget(), data)
    assert plain.scores["ndcg@10"] == result.scores["ndcg@10"]
    target = FakeTarget()
    from qembed.eval.prompts import Prompting

    q = target.embed([data.queries[k] for k in data.queries], Prompting("retrieval"), "query")
    d = target.embed([data.corpus[k] for k in data.corpus], Prompting("retrieval"), "document")
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)  # cosine, as eval's top-k ranks
    docs = list(data.corpus)
    expected = {}
    for qid, row in zip(data.queries, q, strict=True):
        order = [docs[j] for j in np.argsort(-(d @ row), kind="stable")]
        head = order[:5]
        s = tiny_reranker.score([(data.queries[qid], data.corpus[x]) for x in head], raw=True)
        expected[qid] = [head[i] for i in sorted(range(5), key=lambda i: (-s[i], i))] + order[5:]
    want = metrics.retrieval_metrics(expected, data.qrels, **RETRIEVAL_CUTOFFS).metrics
    assert result.scores["reranked_ndcg@10"] == pytest.approx(100 * want["ndcg@10"], abs=1e-9)
    assert result.scores["reranked_mrr@10"] == pytest.approx(100 * want["mrr@10"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.integration
def test_cli_reports_before_and_after(
    beir: Path, tiny_model_dir: Path, reranker_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qembed.cli.eval import eval_group

    monkeypatch.delenv("QEMBED_RERANK_MODEL", raising=False)
    args = ["retrieval", str(beir), "--model", str(tiny_model_dir), "--no-cache", "--json", "-"]
    res = CliRunner().invoke(
        eval_group, [*args, "--rerank", "--rerank-model", str(reranker_dir), "--rerank-depth", "6"]
    )
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert {"ndcg@10", "mrr@10", "reranked_ndcg@10", "reranked_mrr@10"} <= set(payload["scores"])
    assert any("reranked the top 6 of each query with Qwen3-Reranker-tiny" in n for n in payload["notes"])


def test_cli_rerank_flags_without_a_reranker(
    beir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both mistakes fail before any model loads (the embedder named does not even exist)."""
    from qembed.cli.eval import eval_group

    monkeypatch.delenv("QEMBED_RERANK_MODEL", raising=False)
    args = ["retrieval", str(beir), "--model", str(tmp_path / "no-such-model"), "--no-cache"]
    missing = CliRunner().invoke(eval_group, [*args, "--rerank"])
    assert missing.exit_code == 2 and "No reranker named" in missing.output
    orphan = CliRunner().invoke(eval_group, [*args, "--rerank-model", "some/reranker"])
    assert orphan.exit_code == 2 and "need --rerank" in orphan.output
