"""Acceptance on real data with the real MiniLM: Kubernetes pages, dense and hybrid search,
persistence across processes, and the CLI output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from qembed.search.store import Filters

from .conftest import TARGET

TARGET_PATH = TARGET.removeprefix("docs/")


def _pages(results) -> list[str]:
    return list(dict.fromkeys(r.chunk.path for r in results))


def test_built_index_reports_what_it_did(k8s_index) -> None:
    idx, report, _, _ = k8s_index
    assert report.documents_added == 61 and report.documents_removed == 0
    stats = idx.stats()
    assert stats.documents == 61 and stats.chunks == report.chunks_written >= 61
    assert stats.dimension == 384
    meta = idx.store.get_meta()
    assert meta["model"] == "minilm" and meta["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_pending_pod_query_finds_the_debug_pods_page(k8s_index) -> None:
    idx, _, _, _ = k8s_index
    for mode in ("dense", "hybrid"):
        results = idx.search("my pod stays pending", k=3, mode=mode)
        assert TARGET_PATH in [r.chunk.path for r in results], (mode, _pages(results))
    best = idx.search("my pod stays pending", k=1)[0]
    assert best.chunk.path == TARGET_PATH
    assert best.chunk.heading[-1] == "My pod stays pending"
    assert best.chunk.title == "Debug Pods"
    assert best.chunk.line_start > 1 and best.chunk.line_end >= best.chunk.line_start


def test_hybrid_finds_an_exact_flag(k8s_index) -> None:
    """``--image-service-endpoint`` appears in one page of the set (concepts/architecture/cri.md):
    BM25 ranks that page first, and hybrid (RRF of dense and BM25) keeps it in its top 3
    whatever dense does with a flag name."""
    idx, _, _, _ = k8s_index
    query, page = "--image-service-endpoint", "concepts/architecture/cri.md"
    lexical = idx.search(query, k=3, mode="bm25")
    assert lexical[0].chunk.path == page and "--image-service-endpoint" in lexical[0].chunk.text, _pages(
        lexical
    )
    hybrid = idx.search(query, k=3, mode="hybrid")
    assert page in _pages(hybrid), _pages(hybrid)
    hit = next(r for r in hybrid if r.chunk.path == page)
    assert hit.bm25_rank == 1 and "--image-service-endpoint" in hit.chunk.text
    # the fused score is the RRF of the two ranks the result reports
    rrf = sum(
        1.0 / (idx.searcher.rrf_k + rank) for rank in (hit.dense_rank, hit.bm25_rank) if rank is not None
    )
    assert hit.score == pytest.approx(rrf)


def test_filters(k8s_index) -> None:
    idx, _, _, _ = k8s_index
    results = idx.search("my pod stays pending", k=5, path_prefix="concepts/")
    assert results and all(r.chunk.path.startswith("concepts/") for r in results)
    assert idx.search("my pod stays pending", k=5, language="python") == []
    assert all(r.chunk.file_type == "md" for r in idx.search("pods", k=5, filters=Filters(file_type="md")))


def test_rerank_hook_reorders_candidates(k8s_index) -> None:
    """The re-ranker sees the whole candidate pool (best first), and the answer is the pool
    sorted by its scores (stable: ties keep the pool's order), cut to k and re-numbered."""
    idx, _, _, _ = k8s_index
    query, depth = "network policy", idx.searcher.candidates
    pool = [r.chunk.chunk_id for r in idx.search(query, k=depth)]
    plain = idx.search(query, k=5)
    assert [r.chunk.chunk_id for r in plain] == pool[:5]
    is_task = {r.chunk.chunk_id: r.chunk.path.startswith("tasks/") for r in idx.search(query, k=depth)}
    # what makes the test mean something: the plain top 5 is not already all tasks/ pages,
    # and the pool holds at least 5 of them
    assert not all(is_task[c] for c in pool[:5]) and sum(is_task.values()) >= 5, pool

    seen: list[tuple[str, list[str]]] = []

    def prefer_tasks(q, candidates):
        seen.append((q, [c.chunk.chunk_id for c in candidates]))
        return [1.0 if c.chunk.path.startswith("tasks/") else 0.0 for c in candidates]

    reranked = idx.search(query, k=5, rerank=prefer_tasks)
    assert seen == [(query, pool)]
    expected = ([c for c in pool if is_task[c]] + [c for c in pool if not is_task[c]])[:5]
    assert [r.chunk.chunk_id for r in reranked] == expected
    assert [r.rank for r in reranked] == [1, 2, 3, 4, 5]
    assert all(
        r.score == r.rerank_score == 1.0 and r.dense_rank == pool.index(r.chunk.chunk_id) + 1
        for r in reranked
    )

    # order comes from the re-ranker's scores alone: scoring by pool position reverses the pool
    backwards = idx.search(query, k=5, rerank=lambda q, cands: [float(i) for i in range(len(cands))])
    assert [r.chunk.chunk_id for r in backwards] == pool[::-1][:5]
    assert [r.rerank_score for r in backwards] == [float(len(pool) - 1 - i) for i in range(5)]


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qembed.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ},
    )


@pytest.mark.e2e
def test_index_survives_a_process_restart_and_cli_matches_api(k8s_index) -> None:
    """A new process (the CLI) opens the index from disk, loads the model it was built with,
    and returns what the in-process API returns."""
    idx, _, data, _ = k8s_index
    out = _cli(
        "search",
        "my pod stays pending",
        "--index",
        "k8s",
        "--data-dir",
        str(data),
        "-k",
        "5",
        "--mode",
        "hybrid",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    expected = idx.search("my pod stays pending", k=5, mode="hybrid")
    assert [g["id"] for g in got] == [r.chunk.chunk_id for r in expected]
    assert [g["score"] for g in got] == pytest.approx([r.score for r in expected], abs=1e-6)
    assert got[0]["path"] == TARGET_PATH and got[0]["lines"][0] >= 1

    rich = _cli("search", "my pod stays pending", "--index", "k8s", "--data-dir", str(data), "-k", "2")
    assert rich.returncode == 0, rich.stderr
    assert f"{TARGET_PATH}:" in rich.stdout and "My pod stays pending" in rich.stdout


@pytest.mark.e2e
def test_cli_errors_are_one_line(tmp_path) -> None:
    out = _cli("search", "q", "--index", "absent", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "no index 'absent'" in out.stderr and "Traceback" not in out.stderr
    out = _cli(
        "index", str(tmp_path / "missing"), "--index", "x", "--data-dir", str(tmp_path), "--model", "minilm"
    )
    assert out.returncode == 2 and "no such file or folder" in out.stderr
