"""``qembed eval zh-report``: the article's three experiments in one table.

Unit tests of the K8s metrics and slicing on hand-made vectors (they can fail: each metric
has a case where it must be 0 and one where it must be 1), the CLI on a small slice of the
real data with the real multilingual-e5-small (< 60 s), and the full sets under -m slow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qembed import Embedder
from qembed.cli.eval import parse_endpoint
from qembed.errors import InputError
from qembed.eval.datasets import RetrievalData
from qembed.eval.k8s_queries import ARTICLE_QUERY, TOPICS
from qembed.eval.zh_report import (
    ARTICLE_CLAIMS,
    k8s_metrics,
    load_report_data,
    parse_slice,
    run_report,
    write_report,
)

QEMBED = Path(sys.executable).with_name("qembed")


def _toy() -> tuple[RetrievalData, dict[str, str], dict[str, tuple[str, str]]]:
    corpus = {"en:a": "A", "zh:a": "甲", "en:b": "B", "zh:b": "乙"}
    queries = {"a-zh": "甲?", "b-en": "B?"}
    qrels = {"a-zh": {"en:a": 1, "zh:a": 1}, "b-en": {"en:b": 1, "zh:b": 1}}
    pages = {d: (d.split(":")[1], d.split(":")[0]) for d in corpus}
    return RetrievalData("toy", corpus, queries, qrels), {"a-zh": "zh", "b-en": "en"}, pages


def test_k8s_metrics_on_known_rankings() -> None:
    data, langs, pages = _toy()
    d = np.eye(4, dtype=np.float32)  # en:a, zh:a, en:b, zh:b
    # a-zh ranks zh:a, en:a first (both languages at 1 and 2); b-en ranks zh:a, en:a, then en:b (first relevant at 3)
    q = np.array([[0.9, 1.0, 0.0, 0.0], [0.5, 0.9, 0.3, 0.1]], dtype=np.float32)
    m = k8s_metrics(q, d, data, langs, pages)
    assert m["k8s_p@1"] == pytest.approx(0.5)
    assert m["k8s_mrr@10"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["k8s_hit@3"] == pytest.approx(1.0)
    assert m["k8s_mean_first_rank"] == pytest.approx((1 + 3) / 2)
    assert m["k8s_xl_recall@10_zh"] == pytest.approx(1.0)
    assert m["k8s_xl_recall@10_en"] == pytest.approx(1.0)  # top 10 of 4 docs holds everything
    assert (m["k8s_questions"], m["k8s_documents"]) == (2, 4)


def test_cross_lingual_recall_needs_both_languages_of_one_page() -> None:
    data, langs, pages = _toy()
    # only two documents: the zh query finds its zh page but the en page is missing
    keep = ["zh:a", "en:b"]
    small = RetrievalData(
        "toy", {k: data.corpus[k] for k in keep}, {"a-zh": "甲?"}, {"a-zh": {"en:a": 1, "zh:a": 1}}
    )
    m = k8s_metrics(
        np.array([[1.0, 0.0]], dtype=np.float32), np.eye(2, dtype=np.float32), small, langs, pages
    )
    assert m["k8s_p@1"] == 1.0 and m["k8s_xl_recall@10_zh"] == 0.0 and m["k8s_xl_recall@10_en"] is None


def test_slices_and_endpoint_syntax() -> None:
    assert parse_slice(None, None) == (0, None)
    assert parse_slice(5, None) == (0, 5)
    assert parse_slice(None, "10:20") == (10, 20)
    assert parse_slice(None, "10:") == (10, None)
    for bad in ("20:10", "x", "3"):
        with pytest.raises(InputError):
            parse_slice(None, bad)
    with pytest.raises(InputError):
        parse_slice(3, "0:3")
    assert parse_endpoint("http://h:1,model=m,family=e5,mode=server,name=N") == {
        "url": "http://h:1",
        "model": "m",
        "family": "e5",
        "mode": "server",
        "name": "N",
    }
    with pytest.raises(InputError):
        parse_endpoint("http://h:1,colour=red")
    with pytest.raises(InputError):
        parse_endpoint("http://h:1,family=t5")


def test_the_query_set() -> None:
    assert TOPICS[0][1] == ARTICLE_QUERY == "如何解决Kubernetes Pod一直处于Pending状态？"
    assert len({t[0] for t in TOPICS}) == len(TOPICS) >= 40
    for _, zh, en, pages in TOPICS:
        assert any("\u4e00" <= c <= "\u9fff" for c in zh) and en.isascii() and pages


def test_data_loads_and_slices(shared_data: Path) -> None:
    full = load_report_data(shared_data)
    assert (len(full.sts), len(full.k8s.queries), len(full.code_pairs), len(full.code_retrieval.queries)) == (
        1361,
        80,
        604,
        500,
    )
    assert len(full.k8s.corpus) == 668 and len(full.code_retrieval.corpus) == 6267
    part = load_report_data(shared_data, slice_="2:6", doc_chars=100)
    assert len(part.sts) == 4 and list(part.k8s.queries) == [
        "configmap-zh",
        "configmap-en",
        "secret-zh",
        "secret-en",
    ]
    relevant = {d for q in part.k8s.qrels.values() for d in q}
    assert (
        relevant <= set(part.k8s.corpus) and len(part.k8s.corpus) == len(relevant) + 2 * 4 * 4
    )  # + 16 page pairs
    assert all(len(t) <= 100 + 1 + 200 for t in part.k8s.corpus.values())
    assert {d for q in part.code_retrieval.qrels.values() for d in q} <= set(part.code_retrieval.corpus)


def test_report_on_a_slice_with_the_real_e5(e5_embedder: Embedder, shared_data: Path, tmp_path: Path) -> None:
    data = load_report_data(shared_data, limit=4, doc_chars=300)
    report = run_report([e5_embedder], data, latency_queries=3, meta={"command": "test", "machine": "test"})
    paths = write_report(report, tmp_path / "out")
    (row,) = report.targets
    assert row.error is None and row.kind == "in-process"
    assert row.prompts["sts"] == {"both sides": "'query: '"} and row.prompts["k8s"] == {
        "query": "'query: '",
        "document": "'passage: '",
    }
    for key in ("sts_spearman", "k8s_p@1", "k8s_ndcg@10", "code_separation", "cosqa_ndcg@10"):
        assert -1.0 <= row.scores[key] <= 1.0, key
    assert row.performance["single_query_p50_ms"] > 0 and row.performance["memory_mib"] > 100
    saved = json.loads(paths["json"].read_text())
    assert (
        saved["article_claims"]["rows"] == list(ARTICLE_CLAIMS)
        and "NOT measured" in saved["article_claims"]["note"]
    )
    md = paths["markdown"].read_text()
    assert "article's claim: Qwen3-Embedding-0.6B | the article's claim, not measured here | 0.8140" in md
    assert md.index("| measured |") < md.index(
        "article's claim: Qwen3"
    )  # our rows first, claims after, labelled
    assert paths["plot"].stat().st_size > 10_000


def test_cli_writes_a_fresh_folder_and_reports_a_dead_endpoint(
    e5_small_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    from qembed.cli.eval import eval_group

    runner = CliRunner()
    with runner.isolated_filesystem(temp_dir=tmp_path):
        result = runner.invoke(
            eval_group,
            [
                "zh-report",
                "--model",
                str(e5_small_dir),
                "--endpoint",
                "http://127.0.0.1:9,name=dead",
                "--data",
                str(shared_data),
                "--limit",
                "2",
                "--doc-chars",
                "200",
                "--latency-queries",
                "2",
                "--no-cache",
                "--machine",
                "test box",
            ],
        )
        folders = list(Path(".").glob("qembed-zh-report-*"))
        assert result.exit_code == 1, result.output  # one target failed, the other still ran
        assert len(folders) == 1 and (folders[0] / "report.md").is_file()
        report = json.loads((folders[0] / "report.json").read_text())
    assert [t["error"] is None for t in report["targets"]] == [True, False]
    assert "dead" in report["targets"][1]["name"] and report["meta"]["machine"] == "test box"


@pytest.mark.e2e
@pytest.mark.slow
def test_full_sets_in_process(e5_small_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "full"
    done = subprocess.run(
        [
            str(QEMBED),
            "eval",
            "zh-report",
            "--model",
            str(e5_small_dir),
            "--data",
            str(shared_data),
            "--no-cache",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads((out / "report.json").read_text())["targets"]
    assert row["scores"]["sts_spearman"] == pytest.approx(
        0.7737, abs=0.003
    )  # measured with qembed eval sts (= sentence-transformers)
    assert row["scores"]["k8s_questions"] == 80 and row["scores"]["k8s_documents"] == 668
